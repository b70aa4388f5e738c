// SPDX-License-Identifier: Apache-2.0

//! The cilium-rs agent, as a library so tests and the lab can run it in-process.
//!
//! [`Agent::start`] brings the node up ([`node::Node`]: the embedded store, IPAM, identities,
//! policy, the datapath and the endpoints of the last run) and [`router`] serves Cilium's
//! REST API (basePath `/v1`) on a unix socket, mode 0660: `/healthz`, `/config`,
//! `/endpoint[/{id}]`, `/ipam[/{ip}]`, `/identity[/{id}]`, `/service[/{id}]`, `/policy`,
//! `/map[/{name}]`, `/pod/{ns}/{name}`, `/ip`, `/cluster/nodes`, `/metrics/` and
//! `/openapi.json`. A bad request gets a 4xx with a
//! JSON error and changes nothing. [`client::Client`] is the API's client.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use cilium_agent::{Agent, StartOptions, serve};
//! use cilium_core::config::{AgentConfig, ConfigSources};
//!
//! let config = AgentConfig::from_sources(&ConfigSources::default()).unwrap();
//! let agent = Agent::start(config, StartOptions { datapath: true }).await?;
//! serve(agent, "/var/run/cilium/cilium.sock".as_ref()).await.map_err(|e| e.to_string())
//! # }
//! ```
#![forbid(unsafe_code)]

mod api;
pub mod client;
pub mod cluster;
pub mod cni_config;
pub mod endpoint;
pub mod hubble;
pub mod k8s;
pub mod metrics;
pub mod node;
mod openapi;
pub mod service;

use std::collections::BTreeMap;

use cilium_hubble::observer::{FlowSource, Listen, ObserverService};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use axum::{Json, Router};
use cilium_core::NumericIdentity;
use cilium_core::config::{AgentConfig, LbAlgorithm, PolicyEnforcement, RoutingMode};
use serde_json::{Value, json};

pub use metrics::Metrics;
pub use node::{ApiError, Node, StartOptions};

/// The agent's version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared agent state behind the API.
#[derive(Debug)]
pub struct Agent {
    config: RwLock<AgentConfig>,
    started: Instant,
    node: Option<Arc<Node>>,
    metrics: Arc<Metrics>,
    hubble: Option<Arc<hubble::Observer>>,
}

/// The TLS of Hubble's TCP listener (`hubble-listen-address`), as Cilium's agent has it:
/// required unless `hubble-disable-tls`, with client certificates verified when
/// `hubble-tls-client-ca-files` names CAs. Plain text is logged as a warning.
fn hubble_tls(config: &AgentConfig) -> Result<Option<cilium_hubble::tls::ServerTlsConfig>, String> {
    let address = &config.hubble_listen_address;
    if config.hubble_disable_tls {
        eprintln!(
            "level=warning subsys=hubble msg=\"Hubble server will be exposing its API insecurely on this address\" address={address} hint=\"hubble-disable-tls=false with hubble-tls-cert-file and hubble-tls-key-file\""
        );
        return Ok(None);
    }
    if config.hubble_tls_cert_file.as_os_str().is_empty()
        || config.hubble_tls_key_file.as_os_str().is_empty()
    {
        return Err(format!(
            "hubble-listen-address {address} serves over TLS: hubble-tls-cert-file and hubble-tls-key-file are required (or hubble-disable-tls=true for plain text)"
        ));
    }
    if config.hubble_tls_client_ca_files.is_empty() {
        eprintln!(
            "level=warning subsys=hubble msg=\"Hubble server accepts clients without a certificate (no hubble-tls-client-ca-files)\" address={address}"
        );
    }
    cilium_hubble::tls::ServerTls {
        cert_file: config.hubble_tls_cert_file.clone(),
        key_file: config.hubble_tls_key_file.clone(),
        client_ca_files: config.hubble_tls_client_ca_files.clone(),
    }
    .config()
    .map(Some)
    .map_err(|e| format!("hubble-listen-address {address}: {e}"))
}

impl Agent {
    /// An agent that serves only its configuration and health (no node state): for tools
    /// and tests of the API layer.
    pub fn new(config: AgentConfig) -> Arc<Self> {
        Arc::new(Agent {
            config: RwLock::new(config),
            started: Instant::now(),
            node: None,
            hubble: None,
            metrics: Arc::new(Metrics::new(None)),
        })
    }

    /// Starts an agent: the node's state, and the datapath when `options.datapath`.
    pub async fn start(config: AgentConfig, options: StartOptions) -> Result<Arc<Self>, String> {
        let metrics = Arc::new(Metrics::new(
            options.datapath.then(|| config.bpf_root.clone()),
        ));
        let node = Node::start(&config, options, metrics.clone()).await?;
        // The cluster: from the Kubernetes API when there is one (the node is announced by
        // its CiliumNode, its endpoints by CiliumEndpoints), else from the cluster store.
        if let Some(api) = node.k8s_client() {
            tokio::spawn(cluster::run_k8s(node.clone(), config.clone(), api));
            tokio::spawn(node.clone().sync_cilium_endpoints());
        } else if config.kvstore == "etcd" {
            tokio::spawn(cluster::run(node.clone(), config.clone()));
        }
        let hubble = if config.enable_hubble && options.datapath {
            let observer = Arc::new(
                hubble::Observer::new(&node.name, config.hubble_event_buffer_capacity)
                    .map_err(|e| e.to_string())?,
            );
            tokio::spawn(hubble::run(
                node.clone(),
                observer.clone(),
                metrics.clone(),
                config.bpf_root.clone(),
            ));
            let mut listens = vec![(Listen::Unix(config.hubble_socket_path.clone()), None)];
            if !config.hubble_listen_address.is_empty() {
                let listen = config
                    .hubble_listen_address
                    .parse::<Listen>()
                    .map_err(|e| format!("hubble-listen-address: {e}"))?;
                listens.push((listen, hubble_tls(&config)?));
            }
            for (listen, tls) in listens {
                let service = ObserverService::new(observer.clone());
                tokio::spawn(async move {
                    let served = match listen.bind().await {
                        Ok(l) => cilium_hubble::observer::serve(service, l, tls).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        eprintln!(
                            "level=error subsys=hubble msg=\"serving the Observer API failed\" address={listen} error=\"{e}\""
                        );
                    }
                });
            }
            Some(observer)
        } else {
            None
        };
        Ok(Arc::new(Agent {
            config: RwLock::new(config),
            started: Instant::now(),
            node: Some(node),
            metrics,
            hubble,
        }))
    }

    /// The node, for agents made by [`Agent::start`].
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// The Hubble observer (with `enable-hubble` and a datapath).
    pub fn hubble(&self) -> Option<&Arc<hubble::Observer>> {
        self.hubble.as_ref()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The current configuration (runtime options included).
    pub fn config(&self) -> AgentConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A JSON error response.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    // Cilium's `Error` model is a string: the body is the message as a JSON string.
    (status, Json(Value::String(msg.into()))).into_response()
}

/// JSON numbers without a fraction as integers (`327.0` is `327`): they are JSON Schema's
/// integers, and serde reads integers only from integer literals.
pub(crate) fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Where `input` gave an array for what `parsed` (the input read into its type and written
/// back) has as an object: serde reads a struct from an array of its fields in order
/// (`["10.0.0.1", 80]` for `{"ip": "10.0.0.1", "port": 80}`), which the API's documents
/// do not allow. Returns the field's path (`.` for the whole body).
pub(crate) fn array_for_object(input: &Value, parsed: &Value) -> Option<String> {
    array_at(input, parsed).map(|p| match p.strip_prefix('.') {
        Some(p) => p.to_owned(),
        None if p.is_empty() => ".".to_owned(),
        None => p,
    })
}

fn array_at(input: &Value, parsed: &Value) -> Option<String> {
    match (input, parsed) {
        (Value::Array(_), Value::Object(_)) => Some(String::new()),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| array_at(x, y).map(|p| format!("[{i}]{p}"))),
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, x)| {
            let y = b.get(k)?;
            array_at(x, y).map(|p| format!(".{k}{p}"))
        }),
        _ => None,
    }
}

fn enabled(b: bool) -> &'static str {
    if b { "Enabled" } else { "Disabled" }
}

fn enforcement_name(p: PolicyEnforcement) -> &'static str {
    match p {
        PolicyEnforcement::Default => "default",
        PolicyEnforcement::Always => "always",
        PolicyEnforcement::Never => "never",
    }
}

async fn healthz(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let config = agent.config();
    let node = match agent.node() {
        Some(n) => api::node_status(n).await,
        None => Value::Null,
    };
    let kvstore = match (agent.node(), config.kvstore.as_str()) {
        (_, "") => json!({"state": "Ok", "msg": "Embedded"}),
        (Some(n), _) => {
            // A read with a short deadline tells whether etcd answers now.
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                cilium_core::kvstore::KvStore::get(&**n.store(), "cilium/.heartbeat"),
            )
            .await;
            let endpoints = config.etcd_endpoints().unwrap_or_default().join(",");
            match probe {
                Ok(Ok(_)) => json!({"state": "Ok", "msg": format!("etcd: {endpoints}: connected")}),
                Ok(Err(e)) => json!({"state": "Failure", "msg": format!("etcd: {endpoints}: {e}")}),
                Err(_) => {
                    json!({"state": "Failure", "msg": format!("etcd: {endpoints}: no answer within 1s")})
                }
            }
        }
        (None, other) => json!({"state": "Ok", "msg": other}),
    };
    let kubernetes = match agent.node().and_then(|n| n.k8s_client()) {
        None => json!({"state": "Disabled"}),
        // The apiserver's version with a short deadline, as Cilium's status shows it.
        Some(client) => match tokio::time::timeout(
            std::time::Duration::from_secs(1),
            client.apiserver_version(),
        )
        .await
        {
            Ok(Ok(v)) => json!({"state": "Ok", "msg": format!(
                "{}.{} ({}) [{}]",
                v.major,
                v.minor.trim_end_matches('+'),
                v.git_version,
                v.platform
            )}),
            Ok(Err(e)) => json!({"state": "Failure", "msg": e.to_string()}),
            Err(_) => json!({"state": "Failure", "msg": "the apiserver did not answer within 1s"}),
        },
    };
    Json(json!({
        "node-state": node,
        "cilium": {"state": "Ok", "msg": format!("cilium-rs {VERSION}")},
        "kvstore": kvstore,
        "kubernetes": kubernetes,
        "kube-proxy-replacement": kube_proxy_replacement(
            &config,
            agent.node().and_then(|n| n.socket_lb_cgroup()).is_some(),
        ),
        "routing": {
            "inter-host-routing-mode": match config.routing_mode {
                RoutingMode::Tunnel => "Tunnel",
                RoutingMode::Native => "Native",
            },
            "intra-host-routing-mode": if config.enable_endpoint_routes { "BPF" } else { "Legacy" },
            "tunnel-protocol": config.tunnel_protocol,
        },
        "masquerading": {
            "enabled": config.enable_ipv4_masquerade,
            "enabledProtocols": {"ipv4": config.enable_ipv4_masquerade},
            "mode": if config.enable_bpf_masquerade { "BPF" } else { "iptables" },
            "snat-exclusion-cidr-v4": config.ipv4_native_routing_cidr.map(|c| c.to_string()).unwrap_or_default(),
        },
        "identity-range": {
            "min-identity": NumericIdentity::global_range(config.cluster_id).0.get(),
            "max-identity": NumericIdentity::global_range(config.cluster_id).1.get(),
        },
        // Cilium's IPAMStatus: the node's pool as `node-state` shows it, with its summary.
        "ipam": ipam_status(&node),
        "hubble": match agent.hubble() {
            Some(o) => {
                let (held, cap, seen) = o.status();
                json!({"state": "Ok", "msg": format!(
                    "Current/Max Flows: {held}/{cap}, Flows seen: {seen}, Monitor aggregation: {}",
                    config.monitor_aggregation.name()
                )})
            }
            None => json!({"state": "Disabled"}),
        },
        // The datapath's conntrack lifetimes are seconds of bpf_ktime_get_coarse_ns().
        "clock-source": {"mode": "ktime"},
        "uptime-seconds": agent.started.elapsed().as_secs(),
    }))
}

/// Cilium's `IPAMStatus` from the node state's `ipam`: its pools' lines joined as
/// `status` (what `cilium-dbg status` prints after `IPAM:`).
fn ipam_status(node: &Value) -> Value {
    let Some(mut ipam) = node.get("ipam").cloned() else {
        return Value::Null;
    };
    let summary = ipam["ipv4"]
        .as_array()
        .map(|pools| {
            pools
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    ipam["status"] = Value::String(summary);
    ipam
}

/// Cilium's `KubeProxyReplacement` status: the mode, and the features this datapath has
/// with the configuration (`cilium-dbg status --verbose` prints them).
/// Cilium's `KubeProxyReplacement` status; `socket_lb`: socket LB is attached.
fn kube_proxy_replacement(config: &AgentConfig, socket_lb: bool) -> Value {
    let on = config.kube_proxy_replacement;
    let (algorithm, lut) = match config.bpf_lb_algorithm {
        LbAlgorithm::Random => ("Random", 0),
        LbAlgorithm::Maglev => ("Maglev", config.bpf_lb_maglev_table_size),
    };
    json!({
        "mode": if on { "True" } else { "False" },
        "devices": [],
        "deviceList": [],
        "features": {
            // NodePorts in Cilium's default node-port-range, SNAT to the backends.
            "nodePort": {
                "enabled": on, "algorithm": algorithm, "lutSize": lut, "mode": "SNAT",
                "acceleration": "Disabled", "portMin": 30000, "portMax": 32767,
            },
            "sessionAffinity": {"enabled": on},
            "hostPort": {"enabled": false},
            "externalIPs": {"enabled": on},
            "socketLB": {"enabled": socket_lb},
            "socketLBTracing": {"enabled": false},
            "nat46X64": {"enabled": false},
            "gracefulTermination": {"enabled": false},
            "annotations": [],
        },
    })
}

fn config_json(config: &AgentConfig) -> Value {
    let map: BTreeMap<String, String> = config.effective().into_iter().collect();
    json!({
        "spec": {
            "options": {
                "Debug": enabled(config.debug),
                "MonitorAggregationLevel": config.monitor_aggregation.name(),
            },
            "policy-enforcement": enforcement_name(config.enable_policy),
        },
        "status": {
            "daemonConfigurationMap": map,
            "policy-enforcement": enforcement_name(config.enable_policy),
            // Cilium's DaemonConfigurationStatus: what is in force (`cilium-dbg config`
            // prints `realized`), the keys fixed at start, and how the agent reaches
            // Kubernetes.
            "realized": {
                "options": {
                    "Debug": enabled(config.debug),
                    "MonitorAggregationLevel": config.monitor_aggregation.name(),
                },
                "policy-enforcement": enforcement_name(config.enable_policy),
            },
            "immutable": {},
            "ipam-mode": config.ipam,
            "masquerade": config.enable_ipv4_masquerade,
            "k8s-configuration": config.k8s_kubeconfig_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "k8s-endpoint": config.k8s_api_server,
        },
    })
}

async fn get_config(State(agent): State<Arc<Agent>>) -> Json<Value> {
    let mut config = config_json(&agent.config());
    // Cilium's NodeAddressing: IPv4 only (upstream's cilium-dbg reads it to pick the
    // conntrack and NAT maps it dumps), with the router and the pod CIDR once the node runs.
    let mut ipv4 = json!({"enabled": true});
    if let Some(node) = agent.node() {
        ipv4["ip"] = Value::String(node.router.to_string());
        ipv4["alloc-range"] = Value::String(node.cidr.to_string());
    }
    config["status"]["addressing"] = json!({"ipv4": ipv4, "ipv6": {"enabled": false}});
    Json(config)
}

/// `PATCH /v1/config`: `{"options": {"Debug": "Enabled"}, "policy-enforcement": "always"}`.
/// Every field is checked before anything changes.
async fn patch_config(State(agent): State<Arc<Agent>>, body: axum::body::Bytes) -> Response {
    let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let mut next = agent.config();
    for (key, value) in &patch {
        match key.as_str() {
            "options" => {
                let Some(options) = value.as_object() else {
                    return error(StatusCode::BAD_REQUEST, "options must be an object");
                };
                for (name, v) in options {
                    // Upstream's cilium-dbg sends every option back with the one it
                    // changes: the level unchanged is no change.
                    if name == "MonitorAggregationLevel"
                        && v.as_str() == Some(next.monitor_aggregation.name())
                    {
                        continue;
                    }
                    if name == "MonitorAggregationLevel" {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "MonitorAggregationLevel is fixed when the datapath loads: set \
                             monitor-aggregation and restart the agent",
                        );
                    }
                    let on = match v.as_str() {
                        Some("Enabled" | "true") => true,
                        Some("Disabled" | "false") => false,
                        _ => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!("option {name}: expected Enabled or Disabled, got {v}"),
                            );
                        }
                    };
                    match name.as_str() {
                        "Debug" => next.debug = on,
                        other => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!("unknown or read-only option {other:?}"),
                            );
                        }
                    }
                }
            }
            "policy-enforcement" => {
                next.enable_policy = match value.as_str() {
                    Some("default") => PolicyEnforcement::Default,
                    Some("always") => PolicyEnforcement::Always,
                    Some("never") => PolicyEnforcement::Never,
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "policy-enforcement: expected default, always or never, got {value}"
                            ),
                        );
                    }
                };
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{other:?} cannot be changed at run time"),
                );
            }
        }
    }
    if let Some(node) = agent.node()
        && let Err(e) = node.set_enforcement(next.enable_policy).await
    {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e.message);
    }
    *agent.config.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
    Json(config_json(&next)).into_response()
}

async fn openapi(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(openapi::document(&agent.config()))
}

/// Makes every error a JSON error (Cilium's `Error` model, a string): the rejections of
/// axum's extractors and method router (400, 405, 413, ...) are plain text or empty.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        axum::body::Body::from(Value::String(message).to_string()),
    )
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such API path")
}

/// The API's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/healthz", get(healthz))
        .route("/v1/config", get(get_config).patch(patch_config))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/endpoint", get(api::list_endpoints))
        .route(
            "/v1/endpoint/{id}",
            get(api::get_endpoint)
                .put(api::put_endpoint)
                .delete(api::delete_endpoint),
        )
        .route("/v1/ipam", post(api::ipam_allocate))
        .route("/v1/ipam/{ip}", delete(api::ipam_release))
        .route("/v1/identity", get(api::list_identities))
        .route("/v1/identity/{id}", get(api::get_identity))
        .route("/v1/pod/{namespace}/{name}", put(api::put_pod))
        .route(
            "/v1/policy",
            get(api::get_policy)
                .put(api::put_policy)
                .delete(api::delete_policy),
        )
        .route("/v1/service", get(api::list_services))
        .route(
            "/v1/service/{id}",
            get(api::get_service)
                .put(api::put_service)
                .delete(api::delete_service),
        )
        .route("/v1/map", get(api::list_maps))
        .route("/v1/map/{name}", get(api::get_map))
        .route("/v1/ip", get(api::list_ips))
        .route("/v1/cluster/nodes", get(api::cluster_nodes))
        .route("/v1/metrics/", get(api::metrics))
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .with_state(agent)
}

/// The metrics endpoint alone (`GET /metrics`), for `prometheus-serve-addr`.
pub fn metrics_router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics))
        .fallback(not_found)
        .with_state(agent)
}

/// Serves the API on a unix socket (a stale socket file is replaced; mode 0660) until the
/// task is dropped or the listener fails.
pub async fn serve(agent: Arc<Agent>, socket: &Path) -> std::io::Result<()> {
    let listener = bind(socket)?;
    axum::serve(listener, router(agent)).await
}

/// Binds the API socket: creates the directory, removes a stale socket, sets mode 0660.
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The API served from a runtime of its own, for embedding an agent in a process that is
/// not async (tests, the lab). Serving stops when it is dropped.
#[derive(Debug)]
pub struct BackgroundApi {
    runtime: Option<tokio::runtime::Runtime>,
    socket: std::path::PathBuf,
}

impl BackgroundApi {
    /// Binds `socket`, serves `agent` on one worker thread, and returns once the socket
    /// accepts connections.
    pub fn start(agent: Arc<Agent>, socket: &Path) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            bind(socket)?
        };
        runtime.spawn(async move { axum::serve(listener, router(agent)).await });
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("the API socket never accepted"));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(BackgroundApi {
            runtime: Some(runtime),
            socket: socket.to_owned(),
        })
    }

    /// The socket it serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A dry-mode agent (node state, no datapath: no root needed) with its state under
    /// `dir`, as node `node-a` (192.168.10.100, pods from 172.20.0.0/24), the `flags`
    /// (Cilium's keys) on top, serving `<dir>/run/cilium.sock`: what tests and tools run
    /// the API against.
    pub fn start_dry(dir: &Path, flags: &[(&str, &str)]) -> Result<Self, String> {
        let socket = dir.join("run/cilium.sock");
        let mut sources = cilium_core::config::ConfigSources::default();
        let state = dir.join("state").display().to_string();
        let bpf_root = dir.join("no-bpffs").display().to_string();
        let socket_path = socket.display().to_string();
        let defaults = [
            ("state-dir", state.as_str()),
            ("socket-path", socket_path.as_str()),
            ("bpf-root", bpf_root.as_str()),
            ("k8s-node-name", "node-a"),
            ("ipv4-node", "192.168.10.100"),
            ("ipv4-range", "172.20.0.0/24"),
        ];
        for (k, v) in defaults.iter().chain(flags) {
            sources.set_flag(k, v).map_err(|e| e.to_string())?;
        }
        let config = AgentConfig::from_sources(&sources).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let agent = rt.block_on(Agent::start(config, StartOptions { datapath: false }))?;
        drop(rt);
        Self::start(agent, &socket).map_err(|e| format!("{}: {e}", socket.display()))
    }
}

impl Drop for BackgroundApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use cilium_core::config::{AgentConfig, ConfigSources};

    fn config(flags: &[(&str, &str)]) -> AgentConfig {
        let mut sources = ConfigSources::default();
        for (k, v) in flags {
            sources.set_flag(k, v).unwrap();
        }
        AgentConfig::from_sources(&sources).unwrap()
    }

    /// Hubble's TCP listener is TLS unless `hubble-disable-tls`: without its files it
    /// does not start, with unreadable ones the file is named.
    #[test]
    fn hubble_tcp_needs_tls_files_or_an_explicit_plain_text() {
        let listen = ("hubble-listen-address", ":4244");
        let e = super::hubble_tls(&config(&[listen])).unwrap_err();
        assert!(
            e.contains("hubble-tls-cert-file and hubble-tls-key-file are required"),
            "{e}"
        );
        assert!(
            super::hubble_tls(&config(&[listen, ("hubble-disable-tls", "true")]))
                .unwrap()
                .is_none()
        );
        let e = super::hubble_tls(&config(&[
            listen,
            ("hubble-tls-cert-file", "/nonexistent/server.crt"),
            ("hubble-tls-key-file", "/nonexistent/server.key"),
        ]))
        .unwrap_err();
        assert!(e.contains("/nonexistent/server.crt"), "{e}");
        assert_eq!(
            config(&[(
                "hubble-tls-client-ca-files",
                "/a/ca.crt,/b/ca.crt /c/ca.crt"
            )])
            .hubble_tls_client_ca_files
            .len(),
            3
        );
    }
}
