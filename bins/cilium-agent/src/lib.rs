// SPDX-License-Identifier: Apache-2.0

//! The cilium-rs agent, as a library so tests and the lab can run it in-process.
//!
//! This is its API layer: Cilium's REST API (basePath `/v1`) on a unix socket, mode 0660.
//! Implemented so far: `GET /v1/healthz` (the status `cilium-dbg status` shows),
//! `GET /v1/config` and `PATCH /v1/config` (runtime options: `Debug`,
//! `PolicyEnforcement`), and `GET /v1/openapi.json` (this API's OpenAPI document). A bad
//! request gets a 4xx with a JSON error and changes nothing.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use cilium_agent::{Agent, serve};
//! use cilium_core::config::{AgentConfig, ConfigSources};
//!
//! let config = AgentConfig::from_sources(&ConfigSources::default()).unwrap();
//! let agent = Agent::new(config);
//! serve(agent, "/var/run/cilium/cilium.sock".as_ref()).await
//! # }
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cilium_core::config::{AgentConfig, PolicyEnforcement};
use serde_json::{Value, json};

/// The agent's version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared agent state behind the API.
#[derive(Debug)]
pub struct Agent {
    config: RwLock<AgentConfig>,
    started: Instant,
}

impl Agent {
    /// An agent with this configuration.
    pub fn new(config: AgentConfig) -> Arc<Self> {
        Arc::new(Agent {
            config: RwLock::new(config),
            started: Instant::now(),
        })
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
    (status, Json(json!({ "message": msg.into() }))).into_response()
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
    Json(json!({
        "cilium": {"state": "Ok", "msg": format!("cilium-rs {VERSION}")},
        "kvstore": {
            "state": "Ok",
            "msg": if config.kvstore.is_empty() { "Embedded".to_owned() } else { config.kvstore.clone() },
        },
        "kube-proxy-replacement": {"mode": if config.kube_proxy_replacement { "True" } else { "False" }},
        "uptime-seconds": agent.started.elapsed().as_secs(),
    }))
}

fn config_json(config: &AgentConfig) -> Value {
    let map: BTreeMap<String, String> = config.effective().into_iter().collect();
    json!({
        "spec": {
            "options": {"Debug": enabled(config.debug)},
            "policy-enforcement": enforcement_name(config.enable_policy),
        },
        "status": {
            "daemonConfigurationMap": map,
            "policy-enforcement": enforcement_name(config.enable_policy),
        },
    })
}

async fn get_config(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(config_json(&agent.config()))
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
    *agent.config.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
    Json(config_json(&next)).into_response()
}

async fn openapi() -> Json<Value> {
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "cilium-rs agent API", "version": VERSION},
        "servers": [{"url": "/v1"}],
        "paths": {
            "/healthz": {"get": {"summary": "Agent status", "responses": {"200": {"description": "StatusResponse"}}}},
            "/config": {
                "get": {"summary": "Agent configuration", "responses": {"200": {"description": "DaemonConfiguration"}}},
                "patch": {
                    "summary": "Change runtime options (Debug, policy-enforcement)",
                    "responses": {"200": {"description": "DaemonConfiguration"}, "400": {"description": "Error"}}
                }
            },
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}}
        }
    }))
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
}

impl Drop for BackgroundApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
