// SPDX-License-Identifier: Apache-2.0

//! Upstream's `cilium-dbg` (Cilium's, built from the module pinned in `upstream/go.mod` by
//! `cargo xtask upstream-build`) against this project's agent API: it decodes every answer
//! with Cilium's own models (go-openapi), so a field of the wrong type or a missing object
//! its printers dereference shows here, as an error or a crash. The agent runs in process
//! with node state and no datapath (no root). What upstream prints must say what this
//! project's `cilium-dbg` says.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod support;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `binary -H unix://socket args`; returns (success, stdout, stderr).
fn run(binary: &Path, socket: &Path, args: &[&str]) -> (bool, String, String) {
    let host = format!("unix://{}", socket.display());
    let mut all = vec!["-H", host.as_str()];
    all.extend_from_slice(args);
    support::run_binary(binary, &all)
}

/// Upstream's output of a command that must succeed (a Go panic or an error fails).
fn theirs(binary: &Path, socket: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(binary, socket, args);
    assert!(
        ok && !err.contains("panic"),
        "upstream {args:?}: {err}\n{out}"
    );
    out
}

/// The words of the line starting with `label` (tabwriter's spacing removed).
fn line_of(out: &str, label: &str) -> String {
    out.lines()
        .find(|l| l.trim_start().starts_with(label))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
}

/// `v` without the members Go's `omitempty` leaves out (false, 0, "", null): upstream
/// re-encodes what it decoded, so only those may differ.
fn without_zeros(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| {
                    !matches!(x, Value::Null | Value::Bool(false))
                        && x.as_f64() != Some(0.0)
                        && x.as_str() != Some("")
                })
                .map(|(k, x)| (k.clone(), without_zeros(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_zeros).collect()),
        other => other.clone(),
    }
}

#[test]
fn upstream_cilium_dbg_reads_the_agent_api() {
    let Some(upstream) = cilium_k8s::testing::upstream_client("cilium-dbg") else {
        return;
    };
    let dir =
        TempDir(std::env::temp_dir().join(format!("crs-dbg-upstream-{}", std::process::id())));
    let api = cilium_agent::BackgroundApi::start_dry(
        &dir.0,
        &[
            ("kube-proxy-replacement", "true"),
            ("bpf-lb-algorithm", "maglev"),
            ("routing-mode", "native"),
            ("ipv4-native-routing-cidr", "172.20.0.0/16"),
            ("enable-bpf-masquerade", "true"),
        ],
    )
    .expect("start the agent");
    let socket = api.socket().to_path_buf();

    let client = cilium_agent::client::Client::new(&socket.to_string_lossy());
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_cilium-dbg"));

    // status: the brief form, the summary and the verbose details Cilium's printer
    // dereferences (kube-proxy replacement's features, routing, masquerading).
    assert_eq!(theirs(&upstream, &socket, &["status", "--brief"]), "OK\n");
    let status = theirs(&upstream, &socket, &["status"]);
    assert_eq!(line_of(&status, "KVStore:"), "KVStore: Ok Embedded");
    assert_eq!(
        line_of(&status, "KubeProxyReplacement:"),
        "KubeProxyReplacement: True"
    );
    assert!(line_of(&status, "Cilium:").starts_with("Cilium: Ok cilium-rs"));
    assert_eq!(
        line_of(&status, "IPAM:"),
        "IPAM: 1/254 allocated from 172.20.0.0/24"
    );
    let verbose = theirs(&upstream, &socket, &["status", "--verbose"]);
    for (label, want) in [
        ("Routing:", "Routing: Network: Native Host: Legacy"),
        (
            "Global Identity Range:",
            "Global Identity Range: min 256, max 65535",
        ),
        (
            "Backend Selection:",
            "Backend Selection: Maglev (Table Size: 16381)",
        ),
        ("Session Affinity:", "Session Affinity: Enabled"),
        ("- NodePort:", "- NodePort: Enabled (Range: 30000-32767)"),
        ("172.20.0.1", "172.20.0.1 (router)"),
    ] {
        assert_eq!(line_of(&verbose, label), want, "{verbose}");
    }
    assert!(
        line_of(&verbose, "Masquerading:").starts_with("Masquerading: BPF"),
        "{verbose}"
    );
    let theirs_json: Value =
        serde_json::from_str(&theirs(&upstream, &socket, &["status", "-o", "json"])).unwrap();
    let (_, ours_out, _) = run(&ours, &socket, &["status", "-o", "json"]);
    let ours_json: Value = serde_json::from_str(&ours_out).unwrap();
    for key in [
        "cilium",
        "kvstore",
        "kube-proxy-replacement",
        "routing",
        "masquerading",
        "identity-range",
    ] {
        assert_eq!(
            without_zeros(&theirs_json[key]),
            without_zeros(&ours_json[key]),
            "{key}"
        );
    }

    // identities: the reserved ones, as ours lists them.
    let list: Value = serde_json::from_str(&theirs(
        &upstream,
        &socket,
        &["identity", "list", "-o", "json"],
    ))
    .unwrap();
    let ids = |v: &Value| -> Vec<u64> {
        let mut ids: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    let (_, ours_out, _) = run(&ours, &socket, &["identity", "list", "-o", "json"]);
    let ours_list: Value = serde_json::from_str(&ours_out).unwrap();
    assert_eq!(ids(&list), ids(&ours_list));
    assert!(ids(&list).contains(&1) && ids(&list).contains(&2));
    let host = theirs(&upstream, &socket, &["identity", "get", "1"]);
    assert!(host.contains("reserved:host"), "{host}");

    // services: one written through the API, listed and read back by upstream.
    client
        .call_raw(
            "PUT",
            "/service/0",
            br#"{"frontend-address": {"ip": "10.96.0.10", "port": 80, "protocol": "TCP"},
                "backend-addresses": [{"ip": "172.20.0.10", "port": 8080}],
                "flags": {"type": "ClusterIP", "name": "webpod", "namespace": "default"}}"#
                .to_vec(),
        )
        .expect("create a service");
    let services = theirs(&upstream, &socket, &["service", "list"]);
    assert_eq!(
        line_of(&services, "1 "),
        "1 10.96.0.10:80/TCP ClusterIP 1 => 172.20.0.10:8080/TCP (active)"
    );
    let svc: Value = serde_json::from_str(&theirs(
        &upstream,
        &socket,
        &["service", "list", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(svc[0]["spec"]["id"], 1);
    assert_eq!(svc[0]["spec"]["flags"]["name"], "webpod");
    assert_eq!(svc[0]["spec"]["backend-addresses"][0]["port"], 8080);

    // policy: the imported rule as Cilium's Policy model carries it (one JSON text).
    client
        .call_raw(
            "PUT",
            "/policy",
            b"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web-from-curl\n  namespace: default\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: curl\n"
                .to_vec(),
        )
        .expect("import a policy");
    let policy = theirs(&upstream, &socket, &["policy", "get"]);
    assert!(policy.contains("web-from-curl"), "{policy}");
    assert!(policy.trim_end().ends_with("Revision: 1"), "{policy}");
    let (_, ours_policy, _) = run(&ours, &socket, &["policy", "get"]);
    assert_eq!(policy, ours_policy);

    // config: read, changed through upstream's PATCH, read again by both.
    let config = theirs(&upstream, &socket, &["config"]);
    assert_eq!(line_of(&config, "Debug"), "Debug : Disabled");
    theirs(&upstream, &socket, &["config", "Debug=Enabled"]);
    let config = theirs(&upstream, &socket, &["config"]);
    assert_eq!(line_of(&config, "Debug"), "Debug : Enabled");
    let (_, ours_config, _) = run(&ours, &socket, &["config"]);
    assert_eq!(line_of(&ours_config, "Debug"), "Debug : Enabled");
    let all = theirs(&upstream, &socket, &["config", "-a"]);
    assert_eq!(
        line_of(&all, "bpf-lb-algorithm"),
        "bpf-lb-algorithm : maglev"
    );

    // endpoints (none without a datapath) and the ipcache's local entries.
    let endpoints = theirs(&upstream, &socket, &["endpoint", "list"]);
    assert!(endpoints.starts_with("ENDPOINT"), "{endpoints}");
    let ips = theirs(&upstream, &socket, &["ip", "list"]);
    assert_eq!(
        line_of(&ips, "172.20.0.1/32"),
        "172.20.0.1/32 reserved:host"
    );

    // An id that does not exist is upstream's 404, not a decoding failure.
    let (ok, _, err) = run(&upstream, &socket, &["endpoint", "get", "4242"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}
