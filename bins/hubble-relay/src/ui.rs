// SPDX-License-Identifier: Apache-2.0

//! The Hubble UI: one page (`GET /`, [`PAGE`]) with a service map of a namespace and a
//! live flow table, fed by a JSON API on the relay:
//!
//! - `GET /api/flows?namespace=NS&last=N`: the newest `N` flows (default 1000, at most
//!   10000) from or to pods of `NS` across the cluster, oldest first, as `hubble observe
//!   -o json` writes them (`{"flows": [...], "unavailable_nodes": [...]}`);
//! - `GET /api/status`: the relay's `ServerStatus` as JSON.
//!
//! The page draws one box per workload (an identity: its `app` label, or the pod name
//! without a ReplicaSet suffix, with the pods behind it listed), one line per pair of
//! workloads that exchanged flows, red when any of them was dropped, and refreshes every
//! two seconds. The map's elements carry `data-` attributes (workload names, box
//! geometry, whether an edge saw drops) so tests can check what a browser drew.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cilium_hubble::observer::from_proto;
use cilium_hubble::proto::flow::FlowFilter;
use cilium_hubble::proto::observer::get_flows_response::ResponseTypes;
use cilium_hubble::proto::observer::observer_server::Observer;
use cilium_hubble::proto::observer::{GetFlowsRequest, ServerStatusRequest};
use cilium_hubble::relay::Relay;
use serde::Deserialize;
use serde_json::{Value, json};

/// The page (HTML, CSS and script in one file).
pub const PAGE: &str = include_str!("ui/index.html");

/// The fill of a workload's box on the map (tests look for it in screenshots).
pub const WORKLOAD_FILL: [u8; 3] = [0xd6, 0xe9, 0xff];
/// The colour of an edge that saw drops.
pub const DROPPED_EDGE: [u8; 3] = [0xe5, 0x39, 0x35];

/// The most flows one `/api/flows` answer holds.
pub const MAX_FLOWS: u64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowsQuery {
    namespace: Option<String>,
    last: Option<u64>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn flows(
    State(relay): State<Arc<Relay>>,
    query: Result<Query<FlowsQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{e} (query parameters: namespace=NAME, last=NUMBER)"),
            );
        }
    };
    let last = q.last.unwrap_or(1000);
    if last == 0 || last > MAX_FLOWS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("last={last}: between 1 and {MAX_FLOWS}"),
        );
    }
    let mut req = GetFlowsRequest {
        number: last,
        ..GetFlowsRequest::default()
    };
    if let Some(ns) = q.namespace.filter(|n| !n.is_empty()) {
        if ns.contains('/') {
            return error(StatusCode::BAD_REQUEST, &format!("namespace={ns}: no '/'"));
        }
        let pods = vec![format!("{ns}/")];
        req.whitelist = vec![
            FlowFilter {
                source_pod: pods.clone(),
                ..FlowFilter::default()
            },
            FlowFilter {
                destination_pod: pods,
                ..FlowFilter::default()
            },
        ];
    }
    match relay.collect(req).await {
        Ok(items) => {
            let mut flows = Vec::new();
            let mut unavailable = Vec::new();
            for item in items {
                match item.response_types {
                    Some(ResponseTypes::Flow(f)) => flows.push(from_proto(f)),
                    Some(ResponseTypes::NodeStatus(n)) => unavailable.extend(n.node_names),
                    _ => {}
                }
            }
            Json(json!({ "flows": flows, "unavailable_nodes": unavailable })).into_response()
        }
        Err(s) => error(StatusCode::BAD_GATEWAY, s.message()),
    }
}

async fn status(State(relay): State<Arc<Relay>>) -> Response {
    match relay
        .server_status(tonic_request(ServerStatusRequest {}))
        .await
    {
        Ok(s) => {
            let s = s.into_inner();
            let v: Value = json!({
                "num_flows": s.num_flows,
                "max_flows": s.max_flows,
                "seen_flows": s.seen_flows,
                "num_connected_nodes": s.num_connected_nodes,
                "num_unavailable_nodes": s.num_unavailable_nodes,
                "unavailable_nodes": s.unavailable_nodes,
                "version": s.version,
            });
            Json(v).into_response()
        }
        Err(s) => error(StatusCode::BAD_GATEWAY, s.message()),
    }
}

fn tonic_request<T>(message: T) -> cilium_hubble::tonic::Request<T> {
    cilium_hubble::tonic::Request::new(message)
}

/// The UI's routes over a relay.
pub fn router(relay: Arc<Relay>) -> axum::Router {
    axum::Router::new()
        .route("/", get(page))
        .route("/api/flows", get(flows))
        .route("/api/status", get(status))
        .with_state(relay)
}
