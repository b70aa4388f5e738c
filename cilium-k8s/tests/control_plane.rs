// SPDX-License-Identifier: Apache-2.0

//! The upstream control plane of `cilium_k8s::testing` with Cilium's CRDs: kubectl prints
//! upstream's columns, the API enforces the schemas, the controllers and the scheduler do
//! their part, and the apiserver comes back after a stop with everything it held.
//! Needs the binaries of `cargo xtask kube-build` (built when missing). No root: everything
//! is on 127.0.0.1.

use std::net::Ipv4Addr;

use cilium_k8s::crds;
use cilium_k8s::testing::ControlPlane;

/// The column names of a kubectl table's header line.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One line per webpod pod: `fields` (a jsonpath template of one item).
fn webpods(cp: &ControlPlane, fields: &str) -> Option<String> {
    let template = format!("jsonpath={{range .items[*]}}{fields}{{\"\\n\"}}{{end}}");
    cp.kubectl(&["get", "pods", "-l", "app=webpod", "-o", &template])
        .ok()
}

fn apply(cp: &ControlPlane, yaml: &str) -> Result<String, String> {
    cp.kubectl_input(&["apply", "-f", "-"], Some(yaml))
        .map_err(|e| e.to_string())
}

const ENDPOINT: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: curl-pod
  namespace: default
status:
  id: 1234
  identity:
    id: 21894
    labels: ["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]
  state: ready
  networking:
    node: 192.168.10.100
    addressing:
    - ipv4: 172.20.0.87
  policy:
    ingress: {enforcing: false, state: non-enforcing}
    egress: {enforcing: true, state: enforcing}
"#;

#[test]
fn control_plane_runs_upstreams_components_with_ciliums_crds() {
    let mut cp =
        ControlPlane::start_for_test("control_plane_runs_upstreams_components_with_ciliums_crds");
    let version = cp.kubectl(&["version", "-o", "json"]).unwrap();
    assert!(version.contains("\"gitVersion\": \"v1.37"), "{version}");

    // The CRDs register and become established.
    apply(&cp, &crds::all_yaml()).unwrap();
    cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "ciliumnodes.cilium.io",
        "ciliumendpoints.cilium.io",
        "ciliumidentities.cilium.io",
        "ciliumnetworkpolicies.cilium.io",
        "ciliumclusterwidenetworkpolicies.cilium.io",
    ])
    .unwrap();

    // CiliumEndpoint: the seed's `kubectl get ciliumendpoints -o wide` header.
    apply(&cp, ENDPOINT).unwrap();
    let wide = cp
        .kubectl(&["get", "ciliumendpoints", "-o", "wide"])
        .unwrap();
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "SECURITY IDENTITY",
            "INGRESS ENFORCEMENT",
            "EGRESS ENFORCEMENT",
            "ENDPOINT STATE",
            "IPV4",
            "IPV6"
        ],
        "{wide}"
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "curl-pod",
            "21894",
            "non-enforcing",
            "enforcing",
            "ready",
            "172.20.0.87"
        ],
        "{wide}"
    );
    let narrow = cp.kubectl(&["get", "cep"]).unwrap();
    assert_eq!(
        header(&narrow),
        [
            "NAME",
            "SECURITY IDENTITY",
            "ENDPOINT STATE",
            "IPV4",
            "IPV6"
        ]
    );
    // The schema is enforced: an unknown state is refused and changes nothing.
    let bad = ENDPOINT.replace("state: ready", "state: sleeping");
    let err = apply(&cp, &bad).unwrap_err();
    assert!(
        err.contains("status.state") && err.contains("Unsupported value"),
        "{err}"
    );
    let state = cp
        .kubectl(&["get", "cep", "curl-pod", "-o", "jsonpath={.status.state}"])
        .unwrap();
    assert_eq!(state, "ready");

    // CiliumNode, CiliumIdentity and the policies: upstream's columns and short names.
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: k8s-w1}\nspec:\n  \
         addresses:\n  - {type: InternalIP, ip: 192.168.10.101}\n  - {type: CiliumInternalIP, \
         ip: 172.20.1.1}\n  ipam: {podCIDRs: [172.20.1.0/24]}\n",
    )
    .unwrap();
    let nodes = cp.kubectl(&["get", "cn"]).unwrap();
    assert_eq!(
        header(&nodes),
        ["NAME", "CILIUMINTERNALIP", "INTERNALIP", "AGE"]
    );
    assert!(
        nodes.contains("172.20.1.1") && nodes.contains("192.168.10.101"),
        "{nodes}"
    );
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata:\n  name: \"21894\"\n  \
         labels: {io.kubernetes.pod.namespace: default, app: curl}\nsecurity-labels:\n  \
         k8s:app: curl\n  k8s:io.kubernetes.pod.namespace: default\n",
    )
    .unwrap();
    let ids = cp.kubectl(&["get", "ciliumid"]).unwrap();
    assert_eq!(header(&ids), ["NAME", "NAMESPACE", "AGE"]);
    assert!(ids.lines().nth(1).unwrap().starts_with("21894"), "{ids}");
    assert!(ids.contains("default"), "{ids}");
    let err = apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: \"7\"}\n",
    )
    .unwrap_err();
    assert!(err.contains("security-labels"), "{err}");
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-curl, \
         namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: webpod}}\n  \
         ingress:\n  - fromEndpoints: [{matchLabels: {app: curl}}]\n    toPorts:\n    - \
         ports: [{port: \"80\", protocol: TCP}]\n      rules: {http: [{method: GET}]}\n",
    )
    .unwrap();
    assert_eq!(
        header(&cp.kubectl(&["get", "cnp"]).unwrap()),
        ["NAME", "AGE", "VALID"]
    );
    // Layer-7 rules are kept as given, not pruned.
    let http = cp
        .kubectl(&[
            "get",
            "cnp",
            "allow-curl",
            "-o",
            "jsonpath={.spec.ingress[0].toPorts[0].rules.http[0].method}",
        ])
        .unwrap();
    assert_eq!(http, "GET");
    let err = apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: \
         empty}\n",
    )
    .unwrap_err();
    assert!(err.contains("spec or specs must be provided"), "{err}");
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: \
         deny-world}\nspec:\n  endpointSelector: {}\n  egressDeny:\n  - toEntities: [world]\n",
    )
    .unwrap();
    assert_eq!(
        header(&cp.kubectl(&["get", "ccnp"]).unwrap()),
        ["NAME", "VALID"]
    );

    // The controllers and the scheduler: a Ready node loses its not-ready taint (node
    // lifecycle controller), a Deployment becomes pods bound to it, a Service gets a
    // ClusterIP from the seed's range and an EndpointSlice of the ready pods.
    cp.add_ready_node("k8s-w1", Ipv4Addr::new(192, 168, 10, 101))
        .unwrap();
    cp.running_deployment(
        "webpod",
        "k8s-w1",
        &[Ipv4Addr::new(172, 20, 1, 10), Ipv4Addr::new(172, 20, 1, 11)],
    );
    cp.kubectl(&["expose", "deployment", "webpod", "--port=80"])
        .unwrap();
    let ip = cp
        .kubectl(&["get", "svc", "webpod", "-o", "jsonpath={.spec.clusterIP}"])
        .unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");
    cp.eventually("an EndpointSlice with both pods", || {
        let out = cp
            .kubectl(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=webpod",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[0]}",
            ])
            .ok()?;
        let mut addrs: Vec<&str> = out.split_whitespace().collect();
        addrs.sort_unstable();
        (addrs == ["172.20.1.10", "172.20.1.11"]).then_some(())
    });

    // The apiserver away and back: what it held is still there.
    cp.stop_apiserver();
    assert!(cp.kubectl(&["get", "cep"]).is_err());
    cp.start_apiserver().unwrap();
    let state = cp
        .kubectl(&["get", "cep", "curl-pod", "-o", "jsonpath={.status.state}"])
        .unwrap();
    assert_eq!(state, "ready");

    // Deleting the Deployment: the garbage collector removes its ReplicaSet and deletes its
    // pods (bound pods then wait, terminating, for their node's kubelet to confirm).
    cp.kubectl(&["delete", "deployment", "webpod"]).unwrap();
    cp.eventually("the ReplicaSet collected and its pods terminating", || {
        let rs = cp
            .kubectl(&["get", "rs", "-l", "app=webpod", "-o", "name"])
            .ok()?;
        let pods = webpods(&cp, "{.metadata.name}={.metadata.deletionTimestamp}")?;
        let terminating = pods.lines().all(|l| !l.ends_with('='));
        (rs.trim().is_empty() && terminating).then_some(())
    });
}
