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

    /// One request with a JSON body (or none); a non-2xx answer is an error carrying the
    /// agent's message. Blocks (runs its own small runtime): for programs that are not
    /// async, such as `cilium-dbg` and `cilium-cni`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.call_raw(method, path, bytes.into_bytes())
    }

    /// As [`Client::call`], with a raw body (a YAML policy, for instance).
    pub fn call_raw(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError(format!("starting the client: {e}")))?;
        runtime.block_on(self.call_async(method, path, body))
    }

    /// A request whose answer is text (`/metrics/`); a non-2xx answer is an error.
    pub fn call_text(&self, method: &str, path: &str) -> Result<String, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError(format!("starting the client: {e}")))?;
        let (status, body) = runtime.block_on(self.request(method, path, Vec::new()))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status >= 300 {
            return Err(ClientError(format!("[{status} {path}] {text}")));
        }
        Ok(text)
    }

    /// The request, from async code; the answer's JSON.
    pub async fn call_async(
        &self,
        method: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let (status, body) = self.request(method, path, bytes).await?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status >= 300 {
            // Cilium's Error model: a JSON string (an object with `message` also read).
            let msg = json
                .as_str()
                .or_else(|| json["message"].as_str())
                .unwrap_or("no message");
            return Err(ClientError(format!("[{status} {path}] {msg}")));
        }
        Ok(json)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
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
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}
