// SPDX-License-Identifier: Apache-2.0

//! The REST API over a real unix socket: the in-process server, and the binary as a user
//! starts it (config errors, effective config, socket mode, graceful stop on SIGTERM).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_core::config::{AgentConfig, ConfigSources};

mod common;

use common::{TempDir, dry_agent, request, wait_for};

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
        // A new frontend cannot pick its id: there is no service 77 to update.
        (
            "/v1/service/77",
            &WEBPOD.replace("10.96.0.10", "10.96.0.12"),
            404,
        ),
        // The existing frontend under an id no service has.
        ("/v1/service/78", WEBPOD, 404),
        // Another frontend under the service's id: a service's frontend does not change.
        (
            format!("/v1/service/{id}").as_str(),
            &WEBPOD.replace("10.96.0.10", "10.96.0.13"),
            409,
        ),
        // A struct as an array of its fields (serde's reading) is no frontend.
        (
            "/v1/service/0",
            r#"{"frontend-address": ["10.96.0.14", 80]}"#,
            400,
        ),
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

/// What the document declares, the handlers enforce: requests it refuses get a 4xx with a
/// JSON error and change nothing; requests it allows are not refused for what JSON Schema
/// calls valid (integral floats, a clusterwide policy).
#[test]
fn refused_requests_get_json_errors_and_change_nothing() {
    let dir = TempDir::new("refused");
    let (_api, socket) = dry_agent(&dir.0);
    let state = |socket: &Path| {
        [
            "/v1/service",
            "/v1/policy",
            "/v1/endpoint",
            "/v1/identity",
            "/v1/config",
        ]
        .map(|p| request(socket, "GET", p, "").1)
    };
    let before = state(&socket);
    let policy = |kind: &str, extra: &str| {
        format!(
            r#"{{"apiVersion": "{}", "kind": "{kind}", "metadata": {{"name": "p"{extra}}}, "spec": {{"endpointSelector": {{}}, "egress": [{{"toPorts": [{{"ports": [{{"port": "80", "protocol": "TCP"}}]}}]}}]}}}}"#,
            if kind == "NetworkPolicy" {
                "networking.k8s.io/v1"
            } else {
                "cilium.io/v2"
            }
        )
    };
    let endpoint =
        r#"{"addressing": {"ipv4": "172.20.0.9"}, "container-id": "c1", "interface-name": "lxc1"}"#;
    for (method, path, body, want) in [
        // axum's own rejections are JSON too.
        ("POST", "/v1/healthz", "", 405),
        ("DELETE", "/v1/map", "", 405),
        ("GET", "/v1/identity/4294967296", "", 400),
        ("GET", "/v1/identity/x", "", 400),
        ("GET", "/v1/endpoint/pod-name:nodelimiter", "", 400),
        ("GET", "/v1/map/nope", "", 404),
        ("DELETE", "/v1/ipam/00.1.2.3", "", 400),
        ("POST", "/v1/ipam?owner=", "", 400),
        ("POST", "/v1/ipam?owner=a&family=ipv6", "", 400),
        // Pods: Kubernetes names, objects where Kubernetes has objects, valid labels.
        ("PUT", "/v1/pod/default/Web", "{}", 400),
        ("PUT", "/v1/pod/default/-web", "{}", 400),
        ("PUT", "/v1/pod/a.b/web", "{}", 400),
        ("PUT", "/v1/pod/default/web", r#"{"metadata": "x"}"#, 400),
        ("PUT", "/v1/pod/default/web", r#"{"spec": []}"#, 400),
        (
            "PUT",
            "/v1/pod/default/web",
            r#"{"spec": {"serviceAccountName": "a;b"}}"#,
            400,
        ),
        (
            "PUT",
            "/v1/pod/default/web",
            r#"{"metadata": {"labels": {"a=b": "c"}}}"#,
            400,
        ),
        // Endpoints: the request is checked before the missing datapath is reported.
        (
            "PUT",
            "/v1/endpoint/0",
            r#"{"addressing": ["172.20.0.9"]}"#,
            400,
        ),
        ("PUT", "/v1/endpoint/0", &endpoint.replace("c1", ""), 400),
        (
            "PUT",
            "/v1/endpoint/0",
            &endpoint.replace("}", r#", "mac": "0a:0b:0c:0d:0e:f"}"#),
            400,
        ),
        (
            "PUT",
            "/v1/endpoint/0",
            &endpoint.replace("}", r#", "labels": [":a=b"]}"#),
            400,
        ),
        ("PUT", "/v1/endpoint/7", endpoint, 400),
        // Policies: names, sections policyTypes leave out, structs as arrays.
        (
            "PUT",
            "/v1/policy",
            &policy("CiliumNetworkPolicy", r#", "namespace": "a/b""#),
            400,
        ),
        (
            "PUT",
            "/v1/policy",
            &policy("CiliumNetworkPolicy", "").replace(r#""name": "p""#, r#""name": """#),
            400,
        ),
        (
            "PUT",
            "/v1/policy",
            &policy("CiliumNetworkPolicy", "")
                .replace(r#"{"port": "80", "protocol": "TCP"}"#, r#"["80", "TCP"]"#),
            400,
        ),
        (
            "PUT",
            "/v1/policy",
            r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"}, "spec": {"policyTypes": ["Ingress"], "egress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}}"#,
            400,
        ),
        ("DELETE", "/v1/policy", "", 400),
        ("DELETE", "/v1/policy?origin=", "", 400),
        ("DELETE", "/v1/policy?all=maybe", "", 400),
        // Services: trafficPolicy is checked even when extTrafficPolicy is given.
        (
            "PUT",
            "/v1/service/0",
            &WEBPOD.replace(
                r#""type": "ClusterIP""#,
                r#""type": "ClusterIP", "trafficPolicy": "Nearby", "extTrafficPolicy": "Local""#,
            ),
            400,
        ),
    ] {
        let (code, err) = request(&socket, method, path, body);
        assert_eq!(code, want, "{method} {path} {body}: {err}");
        assert!(
            err.as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: not a JSON error: {err}"
        );
    }
    assert_eq!(state(&socket), before, "refused requests changed nothing");

    // What the document allows is not refused: integral floats are integers, a
    // clusterwide policy has a store key, an endpoint request is well-formed (and this
    // agent has no datapath), a known map is there to show only with one.
    let (code, svc) = request(
        &socket,
        "PUT",
        "/v1/service/0",
        &WEBPOD.replace(r#""port": 80,"#, r#""port": 80.0,"#),
    );
    assert_eq!(code, 201, "{svc}");
    assert_eq!(svc["spec"]["frontend-address"]["port"], 80);
    let (code, imported) = request(
        &socket,
        "PUT",
        "/v1/policy",
        &policy("CiliumClusterwideNetworkPolicy", ""),
    );
    assert_eq!(code, 200, "{imported}");
    assert_eq!(
        imported["imported"],
        serde_json::json!(["CiliumClusterwideNetworkPolicy//p"])
    );
    let (code, deleted) = request(
        &socket,
        "DELETE",
        "/v1/policy?origin=CiliumClusterwideNetworkPolicy/",
        "",
    );
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(
        deleted["deleted"],
        serde_json::json!(["CiliumClusterwideNetworkPolicy//p"])
    );
    let (code, err) = request(&socket, "PUT", "/v1/endpoint/0", endpoint);
    assert_eq!(code, 503, "{err}");
    let (code, err) = request(&socket, "GET", "/v1/map/cilium_lxc", "");
    assert_eq!(code, 503, "{err}");
    let (code, _) = request(
        &socket,
        "PUT",
        "/v1/pod/default/web-1.a",
        r#"{"metadata": {"labels": {"app": "web"}}, "spec": {"serviceAccountName": "web"}}"#,
    );
    assert_eq!(code, 200);
}
