// SPDX-License-Identifier: Apache-2.0

//! What the agent's integration tests share: a temporary directory, one request over the
//! API socket, and an in-process dry-mode agent.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A directory of the test, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `<tmp>/crs-agent-<tag>-<pid>`.
    pub(crate) fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("crs-agent-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP/1.1 request over the socket; returns (status, JSON body).
pub(crate) fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"));
    (status, json)
}

/// Waits (10 s at most) until the socket accepts connections.
pub(crate) fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "the API socket never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An agent with node state but no datapath (no root needed), on `dir`: node `node-a`,
/// 192.168.10.100, pods in 172.20.0.0/24.
pub(crate) fn dry_agent(dir: &Path) -> (cilium_agent::BackgroundApi, PathBuf) {
    dry_agent_with(dir, &[])
}

/// [`dry_agent`] with more flags (later ones win).
pub(crate) fn dry_agent_with(
    dir: &Path,
    flags: &[(&str, &str)],
) -> (cilium_agent::BackgroundApi, PathBuf) {
    let api = cilium_agent::BackgroundApi::start_dry(dir, flags).expect("start the agent");
    let socket = api.socket().to_path_buf();
    (api, socket)
}
