// SPDX-License-Identifier: Apache-2.0

//! The REST API over a real unix socket: the in-process server, and the binary as a user
//! starts it (config errors, effective config, socket mode, graceful stop on SIGTERM).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_core::config::{AgentConfig, ConfigSources};
use serde_json::Value;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
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
fn request(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
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

fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "the API socket never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn api_in_process() {
    let dir = TempDir::new("inproc");
    let socket = dir.0.join("run/cilium.sock");
    let mut sources = ConfigSources::default();
    sources.set_flag("kube-proxy-replacement", "true").unwrap();
    let agent = cilium_agent::Agent::new(AgentConfig::from_sources(&sources).unwrap());
    let _api = cilium_agent::BackgroundApi::start(agent, &socket).expect("serve");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let (code, health) = request(&socket, "GET", "/v1/healthz", "");
    assert_eq!(code, 200);
    assert_eq!(health["cilium"]["state"], "Ok");
    assert_eq!(health["kube-proxy-replacement"]["mode"], "True");
    assert_eq!(health["kvstore"]["msg"], "Embedded");

    let (code, config) = request(&socket, "GET", "/v1/config", "");
    assert_eq!(code, 200);
    assert_eq!(config["spec"]["options"]["Debug"], "Disabled");
    assert_eq!(
        config["status"]["daemonConfigurationMap"]["bpf-lb-algorithm"],
        "random"
    );

    let (code, config) = request(
        &socket,
        "PATCH",
        "/v1/config",
        r#"{"options":{"Debug":"Enabled"},"policy-enforcement":"always"}"#,
    );
    assert_eq!(code, 200, "{config}");
    assert_eq!(config["spec"]["options"]["Debug"], "Enabled");
    assert_eq!(config["status"]["policy-enforcement"], "always");

    // Bad patches: 400 with a message, and nothing changes (even the valid part).
    for bad in [
        r#"{"options":{"Debug":"Enabled"},"policy-enforcement":"sometimes"}"#,
        r#"{"options":{"Debug":"maybe"}}"#,
        r#"{"options":{"Conntrack":"Enabled"}}"#,
        r#"{"routing-mode":"native"}"#,
        "[1,2]",
        "{not json",
    ] {
        let (code, err) = request(&socket, "PATCH", "/v1/config", bad);
        assert_eq!(code, 400, "{bad}: {err}");
        assert!(err.as_str().is_some_and(|m| !m.is_empty()), "{err}");
    }
    let (_, config) = request(
        &socket,
        "PATCH",
        "/v1/config",
        r#"{"options":{"Debug":"Disabled"}}"#,
    );
    assert_eq!(
        config["status"]["policy-enforcement"], "always",
        "unchanged by the bad patches"
    );

    let (code, doc) = request(&socket, "GET", "/v1/openapi.json", "");
    assert_eq!(code, 200);
    assert!(doc["paths"]["/config"]["patch"].is_object());
    let (code, err) = request(&socket, "GET", "/v1/nothing", "");
    assert_eq!(code, 404);
    assert!(err.is_string());
}

#[test]
fn the_binary_checks_config_and_stops_on_sigterm() {
    let dir = TempDir::new("bin");
    let bin = env!("CARGO_BIN_EXE_cilium-agent");
    let out = Command::new(bin)
        .args(["--bpf-lb-maglev-table-size=1000"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bpf-lb-maglev-table-size") && err.contains("flag"),
        "{err}"
    );
    let out = Command::new(bin)
        .args(["--no-such-key", "1"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --no-such-key"));

    let config_dir = dir.0.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("bpf-lb-algorithm"), "maglev").unwrap();
    let socket = dir.0.join("cilium.sock");
    // Dry mode: no datapath, no cilium_host, no sysctls. This test runs in the test
    // process's own network namespace (the root one in CI), which must not change.
    let mut child = Command::new(bin)
        .arg("--config-dir")
        .arg(&config_dir)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--state-dir={}", dir.0.join("state").display()))
        .args([
            "--dry-mode=true",
            "--ipv4-node=192.0.2.1",
            "--ipv4-range=10.200.0.0/24",
            "--bpf-root=/nonexistent-crs-bpf-root",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    wait_for(&socket);
    let (code, config) = request(&socket, "GET", "/v1/config", "");
    assert_eq!(code, 200);
    assert_eq!(
        config["status"]["daemonConfigurationMap"]["bpf-lb-algorithm"],
        "maglev"
    );
    // Stop the agent we started, by its pid.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // Nothing of a datapath was made here.
    let host = Command::new("ip")
        .args(["link", "show", "cilium_host"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(!host, "the dry-mode agent created cilium_host");
    assert!(!Path::new("/nonexistent-crs-bpf-root").exists());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("bpf-lb-algorithm") && l.ends_with("maglev")),
        "{stdout}"
    );
}

/// An agent with node state but no datapath (no root needed), on `dir`.
fn dry_agent(dir: &Path) -> (cilium_agent::BackgroundApi, PathBuf) {
    let socket = dir.join("run/cilium.sock");
    let mut sources = ConfigSources::default();
    for (k, v) in [
        ("state-dir", dir.join("state").to_str().unwrap()),
        ("socket-path", socket.to_str().unwrap()),
        ("bpf-root", dir.join("no-bpffs").to_str().unwrap()),
        ("k8s-node-name", "node-a"),
        ("ipv4-node", "192.168.10.100"),
        ("ipv4-range", "172.20.0.0/24"),
    ] {
        sources.set_flag(k, v).unwrap();
    }
    let config = AgentConfig::from_sources(&sources).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = rt
        .block_on(cilium_agent::Agent::start(
            config,
            cilium_agent::StartOptions { datapath: false },
        ))
        .expect("start the agent");
    drop(rt);
    let api = cilium_agent::BackgroundApi::start(agent, &socket).expect("serve");
    (api, socket)
}

const WEBPOD: &str = r#"{"frontend-address": {"ip": "10.96.0.10", "port": 80, "protocol": "TCP"},
    "backend-addresses": [{"ip": "172.20.0.10", "port": 8080}, {"ip": "172.20.0.11", "port": 8080}],
    "flags": {"type": "ClusterIP", "name": "webpod", "namespace": "default"}}"#;

#[test]
fn services_through_the_api_persist_and_bad_ones_change_nothing() {
    let dir = TempDir::new("svc");
    let (api, socket) = dry_agent(&dir.0);
    let (code, svc) = request(&socket, "PUT", "/v1/service/0", WEBPOD);
    assert_eq!(code, 201, "{svc}");
    let id = svc["spec"]["id"].as_u64().expect("an id");
    assert!(id > 0);
    assert_eq!(svc["spec"]["flags"]["name"], "webpod");
    assert_eq!(
        svc["status"]["realized"]["backend-addresses"][1]["ip"],
        "172.20.0.11"
    );

    // The same frontend again, with its id and one backend fewer: an update.
    let update = WEBPOD.replace(r#", {"ip": "172.20.0.11", "port": 8080}"#, "");
    let (code, svc) = request(&socket, "PUT", &format!("/v1/service/{id}"), &update);
    assert_eq!(code, 200, "{svc}");
    assert_eq!(svc["spec"]["id"].as_u64(), Some(id));
    assert_eq!(
        svc["spec"]["backend-addresses"].as_array().map(Vec::len),
        Some(1)
    );

    let (_, before) = request(&socket, "GET", "/v1/service", "");
    for (path, body, want) in [
        ("/v1/service/0", "{not json", 400),
        (
            "/v1/service/0",
            r#"{"frontend-address": {"ip": "10.96.0.11"}, "flags": {"type": "Nope"}}"#,
            400,
        ),
        // A new frontend cannot pick its id.
        (
            "/v1/service/77",
            &WEBPOD.replace("10.96.0.10", "10.96.0.12"),
            400,
        ),
        // The existing frontend under another id.
        ("/v1/service/78", WEBPOD, 400),
        ("/v1/service/x", WEBPOD, 400),
        (
            "/v1/service/0",
            &WEBPOD.replace("10.96.0.10", "fd00::10"),
            400,
        ),
        (
            "/v1/service/0",
            r#"{"frontend-address": {"ip": "fd00::10", "port": 80}, "backend-addresses": [{"ip": "fd00::20", "port": 80}]}"#,
            400,
        ),
    ] {
        let (code, err) = request(&socket, "PUT", path, body);
        assert_eq!(code, want, "{path} {body}: {err}");
        assert!(err.as_str().is_some_and(|m| !m.is_empty()), "{err}");
    }
    let (_, after) = request(&socket, "GET", "/v1/service", "");
    assert_eq!(before, after, "bad requests changed nothing");
    assert_eq!(request(&socket, "DELETE", "/v1/service/999", "").0, 404);

    // A restart brings the services back from the store.
    drop(api);
    let (api, socket) = dry_agent(&dir.0);
    let (code, list) = request(&socket, "GET", "/v1/service", "");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["spec"]["frontend-address"]["ip"], "10.96.0.10");
    let (_, health) = request(&socket, "GET", "/v1/healthz", "");
    assert_eq!(health["node-state"]["restore"]["services"], 1, "{health}");
    let id = list[0]["spec"]["id"].as_u64().unwrap();
    let (code, one) = request(&socket, "GET", &format!("/v1/service/{id}"), "");
    assert_eq!(code, 200);
    assert_eq!(one, list[0]);
    assert_eq!(
        request(&socket, "DELETE", &format!("/v1/service/{id}"), "").0,
        200
    );
    assert_eq!(
        request(&socket, "GET", &format!("/v1/service/{id}"), "").0,
        404
    );
    drop(api);
    let (_api, socket) = dry_agent(&dir.0);
    let (_, list) = request(&socket, "GET", "/v1/service", "");
    assert_eq!(list, serde_json::json!([]), "the deletion was stored");
}
