// SPDX-License-Identifier: Apache-2.0

//! The `cilium` binary without a cluster: `install --dry-run` prints the chart's objects
//! as YAML, bad values are one clear error with nothing printed, and no kubeconfig is an
//! error naming where it looked. (The lab's privileged tests drive it against a cluster.)

use std::process::{Command, Output};

fn cilium(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cilium"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run cilium")
}

const SEED: &[&str] = &[
    "k8sServiceHost=192.168.10.100",
    "k8sServicePort=6443",
    "kubeProxyReplacement=true",
    "routingMode=native",
    "autoDirectNodeRoutes=true",
    "ipam.mode=cluster-pool",
    "ipam.operator.clusterPoolIPv4PodCIDRList={172.20.0.0/16}",
    "ipv4NativeRoutingCIDR=172.20.0.0/16",
    "endpointRoutes.enabled=true",
    "installNoConntrackIptablesRules=true",
    "bpf.masquerade=true",
    "ipv6.enabled=false",
];

#[test]
fn a_dry_run_prints_the_charts_objects_for_the_seeds_values() {
    let mut args = vec!["install", "--dry-run", "--version", "1.17.5"];
    for v in SEED {
        args.extend(["--set", v]);
    }
    let out = cilium(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<serde_json::Value> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_norway::from_str(d).expect("a YAML document"))
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("cilium-config");
    assert_eq!(cm["metadata"]["name"], "cilium-config");
    assert_eq!(cm["data"]["routing-mode"], "native");
    assert_eq!(cm["data"]["ipv4-native-routing-cidr"], "172.20.0.0/16");
    assert_eq!(cm["data"]["kube-proxy-replacement"], "true");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let agent = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(agent["image"], "quay.io/cilium/cilium:v1.17.5");
    assert!(
        agent["env"]
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "KUBERNETES_SERVICE_HOST" && e["value"] == "192.168.10.100")
    );
}

#[test]
fn bad_values_are_one_error_and_nothing_is_printed() {
    for (args, want) in [
        (
            vec!["install", "--dry-run", "--set", "bpf.masquerad=true"],
            "unknown value \"bpf.masquerad\" (did you mean \"bpf.masquerade\"?)",
        ),
        (
            vec!["install", "--dry-run", "--set", "debug.enabled=maybe"],
            "debug.enabled",
        ),
        (
            vec!["install", "--dry-run", "--set", "routingMode=native"],
            "ipv4NativeRoutingCIDR",
        ),
    ] {
        let out = cilium(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing printed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let dir = std::env::temp_dir().join(format!("crs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("values.yaml");
    std::fs::write(&file, "debug: [unclosed\n").unwrap();
    let out = cilium(&["install", "--dry-run", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--values") && err.contains("values.yaml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_cluster_the_commands_say_so() {
    let out = cilium(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    let out = cilium(&["config", "set", "debug", "true", "-n", "default"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kube-system only"));
}
