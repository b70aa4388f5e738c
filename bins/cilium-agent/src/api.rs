// SPDX-License-Identifier: Apache-2.0

//! The API handlers that need the node: endpoints, IPAM, identities, pods, policy, IPs,
//! nodes and metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::endpoint::EndpointChangeRequest;
use crate::node::{ApiError, Node};
use crate::service::{ServiceSpec, service_json};
use crate::{Agent, error};

fn fail(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.message)
}

/// The node, or (from the enclosing handler) a 503: this agent has no node state.
macro_rules! node_or_return {
    ($agent:expr) => {
        match $agent.node() {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this agent was started without node state",
                );
            }
        }
    };
}

pub(crate) async fn list_endpoints(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    let mut out = Vec::new();
    for ep in node.endpoints().await {
        let (i, e) = node.enforcement_of(ep.id).await;
        out.push(ep.to_json(i, e));
    }
    Json(Value::Array(out)).into_response()
}

pub(crate) async fn get_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    match node.find_endpoint(&id).await {
        Ok(ep) => {
            let (i, e) = node.enforcement_of(ep.id).await;
            Json(ep.to_json(i, e)).into_response()
        }
        Err(e) => fail(e),
    }
}

pub(crate) async fn put_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let node = node_or_return!(agent);
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("endpoint request: {e}")),
    };
    let req: EndpointChangeRequest = match serde_path_to_error::deserialize(&value) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("endpoint request: {}: {}", e.path(), e.inner()),
            );
        }
    };
    if let Some(path) = serde_json::to_value(&req)
        .ok()
        .and_then(|parsed| crate::array_for_object(&value, &parsed))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("endpoint request: {}: expected an object", path),
        );
    }
    // The CNI asks for id 0 ("any"); a specific id is not supported.
    let wanted = id.strip_prefix("cilium-local:").unwrap_or(&id);
    if wanted != "0" {
        return error(
            StatusCode::BAD_REQUEST,
            format!("endpoint ids are chosen by the agent: use 0, not {id:?}"),
        );
    }
    match node.create_endpoint(req).await {
        Ok((ep, (i, e))) => (StatusCode::CREATED, Json(ep.to_json(i, e))).into_response(),
        Err(e) => fail(e),
    }
}

pub(crate) async fn delete_endpoint(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    if let Some(container) = id.strip_prefix("container-id:") {
        return match node.delete_container(container).await {
            Ok(0) => error(
                StatusCode::NOT_FOUND,
                format!("no endpoint of container {container}"),
            ),
            Ok(n) => Json(json!({"deleted": n})).into_response(),
            Err(e) => fail(e),
        };
    }
    match node.delete_endpoint(&id).await {
        Ok(ep) => Json(json!({"deleted": 1, "id": ep.id})).into_response(),
        Err(e) => fail(e),
    }
}

pub(crate) async fn ipam_allocate(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let node = node_or_return!(agent);
    if let Some(f) = q.get("family")
        && f != "ipv4"
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("family {f:?}: only ipv4 is enabled"),
        );
    }
    let owner = q.get("owner").map(String::as_str).unwrap_or("");
    if owner.is_empty() {
        return error(StatusCode::BAD_REQUEST, "owner is required");
    }
    match node.ipam_allocate(owner).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => fail(e),
    }
}

pub(crate) async fn ipam_release(
    State(agent): State<Arc<Agent>>,
    UrlPath(ip): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    match node.ipam_release(&ip).await {
        Ok(()) => Json(json!({"released": ip})).into_response(),
        Err(e) => fail(e),
    }
}

fn identity_json(id: u32, labels: &[String]) -> Value {
    json!({"id": id, "labels": labels})
}

pub(crate) async fn list_identities(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    match node.identities().await {
        Ok(list) => Json(Value::Array(
            list.iter().map(|(i, l)| identity_json(*i, l)).collect(),
        ))
        .into_response(),
        Err(e) => fail(e),
    }
}

pub(crate) async fn get_identity(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    let Ok(n) = id.parse::<u32>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an identity"),
        );
    };
    match node.identities().await {
        Ok(list) => match list.iter().find(|(i, _)| *i == n) {
            Some((i, l)) => Json(identity_json(*i, l)).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("identity {n} not found")),
        },
        Err(e) => fail(e),
    }
}

pub(crate) async fn put_pod(
    State(agent): State<Arc<Agent>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let node = node_or_return!(agent);
    let pod: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON Pod object",
            );
        }
    };
    match node.put_pod(&ns, &name, &pod).await {
        Ok(()) => Json(pod).into_response(),
        Err(e) => fail(e),
    }
}

pub(crate) async fn get_policy(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    match node.policies().await {
        // Cilium's Policy model: the rules as one JSON text, and the revision.
        Ok(list) => match serde_json::to_string_pretty(&list) {
            Ok(text) => Json(json!({"policy": text, "revision": list.len()})).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(e) => fail(e),
    }
}

pub(crate) async fn put_policy(
    State(agent): State<Arc<Agent>>,
    body: axum::body::Bytes,
) -> Response {
    let node = node_or_return!(agent);
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the policy is not UTF-8");
    };
    match node.import_policy(text).await {
        Ok((origins, endpoints)) => {
            Json(json!({"imported": origins, "endpoints-updated": endpoints})).into_response()
        }
        Err(e) => fail(e),
    }
}

pub(crate) async fn delete_policy(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let node = node_or_return!(agent);
    let all = match q.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("all: expected true or false, got {other:?}"),
            );
        }
    };
    let prefix = match q.get("origin").map(String::as_str) {
        Some("") => return error(StatusCode::BAD_REQUEST, "origin is empty"),
        Some(p) => p,
        None if all => "",
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "give origin=<kind>/<namespace>/<name> (a prefix) or all=true",
            );
        }
    };
    match node.delete_policy(prefix).await {
        Ok(deleted) => Json(json!({"deleted": deleted})).into_response(),
        Err(e) => fail(e),
    }
}

/// The service id of a path, or (from the enclosing handler) a 400.
macro_rules! service_id_or_return {
    ($id:expr) => {
        match $id.parse::<u16>() {
            Ok(id) => id,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{:?} is not a service id (0-65535)", $id),
                );
            }
        }
    };
}

pub(crate) async fn list_services(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    Json(Value::Array(
        node.services()
            .await
            .iter()
            .map(|(id, svc)| service_json(*id, svc))
            .collect(),
    ))
    .into_response()
}

pub(crate) async fn get_service(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    let id = service_id_or_return!(id);
    match node.services().await.iter().find(|(i, _)| *i == id) {
        Some((i, svc)) => Json(service_json(*i, svc)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("service {id} not found")),
    }
}

pub(crate) async fn put_service(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let node = node_or_return!(agent);
    let id = service_id_or_return!(id);
    let spec = match ServiceSpec::parse(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if spec.id != 0 && spec.id != u32::from(id) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the body's id {} is not the path's {id}", spec.id),
        );
    }
    match node.upsert_service(u32::from(id), &spec).await {
        Ok((id, created)) => {
            let svc = node.services().await.into_iter().find(|(i, _)| *i == id);
            let body = svc.map_or(json!({"id": id}), |(i, s)| service_json(i, &s));
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(body)).into_response()
        }
        Err(e) => fail(e),
    }
}

pub(crate) async fn delete_service(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    let id = service_id_or_return!(id);
    match node.delete_service(id).await {
        Ok(svc) => {
            Json(json!({"deleted": id, "frontend": svc.frontend.to_string()})).into_response()
        }
        Err(e) => fail(e),
    }
}

/// The BPF root of an agent whose datapath is loaded, or (from the enclosing handler) a 503.
macro_rules! bpf_root_or_return {
    ($agent:expr, $node:expr) => {{
        if !$node.has_datapath().await {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this agent runs without a datapath: no maps to show",
            );
        }
        $agent.config().bpf_root
    }};
}

/// Map entries as Cilium's `BPFMapEntry` list (all in sync: this agent writes the maps
/// directly, there is no pending action).
fn cache_json(rows: Vec<(String, String)>) -> Value {
    rows.into_iter()
        .map(|(key, value)| json!({"key": key, "value": value, "desired-action": "sync", "last-error": ""}))
        .collect()
}

pub(crate) async fn list_maps(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    let root = bpf_root_or_return!(agent, node);
    // Each map with its entries as Cilium's `cache` (its BPFMap model: what `cilium-dbg map
    // list` counts; the ring buffer has none), beside this project's summary fields.
    let listed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for summary in cilium_bpf::dump::summaries(&root)? {
            let mut m = json!(summary);
            if summary.entries.is_some() {
                let rows = cilium_bpf::dump::map_entries(&root, &summary.name)?;
                m["cache"] = cache_json(rows);
            }
            out.push(m);
        }
        Ok::<_, cilium_bpf::DatapathError>(out)
    })
    .await;
    match listed {
        Ok(Ok(maps)) => Json(json!({ "maps": maps })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) async fn get_map(
    State(agent): State<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let node = node_or_return!(agent);
    // An unknown name is unknown with or without a datapath.
    if let Err(e) = cilium_bpf::dump::known_map(&name) {
        return error(StatusCode::NOT_FOUND, e.to_string());
    }
    let root = bpf_root_or_return!(agent, node);
    let path = cilium_bpf::maps::globals_dir(&root).join(&name);
    match tokio::task::spawn_blocking(move || cilium_bpf::dump::map_entries(&root, &name)).await {
        Ok(Ok(rows)) => Json(json!({
            "path": path.display().to_string(),
            "cache": cache_json(rows),
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) async fn list_ips(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    let mut out = vec![
        json!({"cidr": format!("{}/32", node.router), "identity": 1, "source": "custom-resource"}),
    ];
    out.push(json!({"cidr": format!("{}/32", node.ipv4), "identity": 1, "source": "local"}));
    for ep in node.endpoints().await {
        out.push(json!({
            "cidr": format!("{}/32", ep.ipv4),
            "identity": ep.identity,
            "source": "custom-resource",
            "metadata": {"namespace": ep.k8s_namespace, "name": ep.k8s_pod_name},
        }));
    }
    Json(Value::Array(out)).into_response()
}

pub(crate) async fn cluster_nodes(State(agent): State<Arc<Agent>>) -> Response {
    let node = node_or_return!(agent);
    let mut nodes = vec![json!({
        "name": node.name,
        "primary-address": {"ipv4": {"ip": node.ipv4.to_string(), "enabled": true}},
        "ipv4-alloc-cidr": node.cidr.to_string(),
        "ipv4-router": node.router.to_string(),
        "source": "local",
    })];
    let others = node
        .cluster_nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for (name, reg) in others {
        nodes.push(json!({
            "name": name,
            "primary-address": {"ipv4": {"ip": reg.internal_ip().map(|i| i.to_string()), "enabled": true}},
            "ipv4-alloc-cidr": reg.ipv4_alloc_cidr.map(|c| c.to_string()),
            "source": "kvstore",
        }));
    }
    Json(json!({"self": node.name, "nodes": nodes})).into_response()
}

pub(crate) async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        agent.metrics().render(),
    )
        .into_response()
}

/// The node part of `GET /v1/healthz`.
pub(crate) async fn node_status(node: &Node) -> Value {
    let (line, allocations) = node.ipam_status().await;
    let endpoints = node.endpoints().await;
    let restore = node
        .restore
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json!({
        "ipam": {"ipv4": [line], "allocations": allocations.into_iter().collect::<BTreeMap<_, _>>()},
        "node": {"name": node.name, "ipv4": node.ipv4.to_string(), "cidr": node.cidr.to_string(), "router": node.router.to_string()},
        "datapath": node.has_datapath().await,
        "endpoints": {
            "total": endpoints.len(),
            "ready": endpoints.iter().filter(|e| e.state == crate::endpoint::EndpointState::Ready).count(),
        },
        "restore": {
            "restored": restore.restored.len(),
            "removed": restore.removed.len(),
            "replayed-deletes": restore.replayed_deletes,
            "services": restore.services,
        },
    })
}
