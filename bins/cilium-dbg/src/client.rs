// SPDX-License-Identifier: Apache-2.0

//! A client of the agent's REST API on its unix socket (hyper, HTTP/1.1).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The default agent socket.
pub const DEFAULT_SOCKET: &str = "/var/run/cilium/cilium.sock";

/// A failed API call, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The agent's API at a socket path (`-H unix:///path` or a plain path).
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for `host` (`unix:///var/run/cilium/cilium.sock` or a path).
    pub fn new(host: &str) -> Self {
        Client {
            socket: PathBuf::from(host.strip_prefix("unix://").unwrap_or(host)),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request; a non-2xx answer is an error carrying the agent's message.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError(format!("starting the client: {e}")))?;
        runtime.block_on(self.call_async(method, path, body))
    }

    async fn call_async(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                ClientError(format!(
                    "cannot reach the cilium agent at {}: {e}. Is the agent running?",
                    self.socket.display()
                ))
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError(format!("talking to the agent: {e}")))?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("/v1{path}"))
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError(format!("building the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError(format!("talking to the agent: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError(format!("reading the answer: {e}")))?
            .to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = json["message"].as_str().unwrap_or("no message");
            return Err(ClientError(format!("[{} {path}] {msg}", status.as_u16())));
        }
        Ok(json)
    }
}

/// `status` lines from `GET /healthz` (the fields the agent reports).
pub fn status_lines(health: &Value) -> Vec<String> {
    let state = |v: &Value| {
        format!(
            "{}   {}",
            v["state"].as_str().unwrap_or("Failure"),
            v["msg"].as_str().unwrap_or("")
        )
        .trim_end()
        .to_owned()
    };
    let rows = [
        ("KVStore:", state(&health["kvstore"])),
        ("Kubernetes:", "Disabled".to_owned()),
        (
            "KubeProxyReplacement:",
            health["kube-proxy-replacement"]["mode"]
                .as_str()
                .unwrap_or("False")
                .to_owned(),
        ),
        ("Cilium:", state(&health["cilium"])),
    ];
    rows.iter().map(|(k, v)| format!("{k:<24}{v}")).collect()
}

/// `config` lines from `GET /config`: the runtime options as Cilium lists them.
pub fn config_lines(config: &Value) -> Vec<String> {
    let mut out = vec!["##### Read-write configurations #####".to_owned()];
    if let Some(options) = config["spec"]["options"].as_object() {
        for (k, v) in options {
            out.push(format!("{k:<34}: {}", v.as_str().unwrap_or_default()));
        }
    }
    out.push(format!(
        "{:<34}: {}",
        "PolicyEnforcement",
        config["status"]["policy-enforcement"]
            .as_str()
            .unwrap_or_default()
    ));
    out
}

/// The PATCH body for `config KEY=VALUE...` (`Debug=Enabled`, `PolicyEnforcement=always`).
pub fn config_patch(assignments: &[String]) -> Result<Value, ClientError> {
    let mut options = serde_json::Map::new();
    let mut patch = serde_json::Map::new();
    for a in assignments {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| ClientError(format!("{a:?} is not KEY=VALUE")))?;
        if k.eq_ignore_ascii_case("PolicyEnforcement") {
            patch.insert(
                "policy-enforcement".into(),
                Value::String(v.to_ascii_lowercase()),
            );
        } else {
            let value = match v.to_ascii_lowercase().as_str() {
                "enabled" | "true" | "enable" => "Enabled",
                "disabled" | "false" | "disable" => "Disabled",
                _ => {
                    return Err(ClientError(format!(
                        "{k}: expected Enabled or Disabled, got {v:?}"
                    )));
                }
            };
            options.insert(k.to_owned(), Value::String(value.into()));
        }
    }
    if !options.is_empty() {
        patch.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(patch))
}
