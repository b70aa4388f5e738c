// SPDX-License-Identifier: Apache-2.0

//! The agent's Kubernetes sources (`cluster::kubernetes`, what `cluster::run_k8s` feeds
//! its consumers with) against the upstream control plane: CiliumNodes as node
//! registrations, CiliumEndpoints as ipcache entries, CiliumIdentities, Cilium's and
//! Kubernetes' network policies as documents the policy engine takes under the origin the
//! consumer gives them, malformed objects `Invalid`; a Service and the EndpointSlices of
//! its pods (the endpointslice controller's, and one written by hand) as the store's
//! Endpoints, a pod that stops being ready leaving it. No root: nothing touches a
//! datapath. Needs the binaries of `cargo xtask kube-build` (built when missing).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cilium_agent::cluster::kubernetes;
use cilium_core::LabelSet;
use cilium_core::cluster::{Change, IpIdentityPair, NodeAddress, NodeRegistration, Watcher};
use cilium_k8s::convert::policy_origin;
use cilium_k8s::testing::ControlPlane;
use serde_json::{Value, json};

/// Takes `watcher`'s changes until `done` holds for its objects (bounded).
async fn until<T: Debug, W: Watcher<T>>(
    watcher: &mut W,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, T>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(watcher.objects()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watcher.next_change()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!(
                "timed out waiting for {what}; the objects: {:#?}",
                watcher.objects()
            ),
        }
    }
}

/// The next change of `watcher` (bounded).
async fn next<T, W: Watcher<T>>(watcher: &mut W) -> Change<T> {
    tokio::time::timeout(Duration::from_secs(60), watcher.next_change())
        .await
        .expect("a change within a minute")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Deletes `what` (kubectl's arguments) and checks that the watcher's next change is the
/// deletion of `key`, last seen as `last`.
async fn deleted<T: Debug + PartialEq, W: Watcher<T>>(
    cp: &ControlPlane,
    watcher: &mut W,
    what: &[&str],
    key: &str,
    last: T,
) {
    cp.kubectl(&[&["delete"], what].concat()).unwrap();
    assert_eq!(
        next(watcher).await,
        Change::Delete {
            key: key.into(),
            last
        }
    );
}

/// A merge patch of one object.
fn patch(cp: &ControlPlane, object: &[&str], json: &str) {
    let args = [&["patch"], object, &["--type=merge", "-p", json]].concat();
    cp.kubectl(&args).unwrap();
}

fn apply(cp: &ControlPlane, yaml: &str) {
    cp.kubectl_input(&["apply", "-f", "-"], Some(yaml))
        .unwrap_or_else(|e| panic!("kubectl apply: {e}\n{yaml}"));
}

async fn control_plane(test: &'static str) -> ControlPlane {
    tokio::task::spawn_blocking(move || ControlPlane::start_for_test(test))
        .await
        .unwrap()
}

fn invalid_keys<T>(changes: &[Change<T>]) -> Vec<&str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Invalid { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect()
}

const NODES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {name: k8s-w1}
spec:
  addresses:
  - {type: InternalIP, ip: 192.168.10.101}
  - {type: CiliumInternalIP, ip: 172.20.1.1}
  ipam: {podCIDRs: [172.20.1.0/24]}
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata: {name: broken}
spec:
  addresses:
  - {type: InternalIP, ip: not-an-address}
"#;

const ENDPOINTS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: curl-pod, namespace: default}
status:
  id: 1234
  identity: {id: 21894, labels: ["k8s:app=curl"]}
  state: ready
  networking:
    node: 192.168.10.101
    addressing: [{ipv4: 172.20.1.87}]
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata: {name: no-identity-yet, namespace: default}
status:
  id: 1235
  state: waiting-for-identity
  networking:
    node: 192.168.10.101
    addressing: [{ipv4: 172.20.1.88}]
"#;

const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow-curl, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: webpod}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: curl}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-world}
spec:
  endpointSelector: {}
  egressDeny:
  - toEntities: [world]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{protocol: TCP, port: 5432}]
"#;

/// Each policy document of `watcher` parses as one document whose origin is the one the
/// policies consumer gives it (so its rules are applied, not filtered out).
async fn policy_documents<W: Watcher<Value>>(watcher: &mut W, kind: &str, key: &str) {
    until(watcher, kind, |o| o.contains_key(key)).await;
    let doc = &watcher.objects()[key];
    let parsed = cilium_policy::parse(&doc.to_string())
        .unwrap_or_else(|e| panic!("{kind} {key}: {e}\n{doc:#}"));
    assert_eq!(parsed.len(), 1, "{doc:#}");
    assert_eq!(parsed[0].0.origin(), policy_origin(kind, key));
    assert!(!parsed[0].1.is_empty(), "{kind} {key} has rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cilium_objects_become_what_the_cluster_consumers_take() {
    let cp = control_plane("cilium_objects_become_what_the_cluster_consumers_take").await;
    cp.apply_crds().unwrap();
    apply(&cp, NODES);
    apply(&cp, ENDPOINTS);
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();

    // CiliumNodes: listed first, then followed.
    let (mut nodes, initial) = kubernetes::nodes(client.clone(), "c1".into())
        .await
        .unwrap();
    assert_eq!(invalid_keys(&initial), ["broken"]);
    let w1 = NodeRegistration {
        name: "k8s-w1".into(),
        cluster: "c1".into(),
        addresses: vec![
            NodeAddress {
                kind: "InternalIP".into(),
                ip: "192.168.10.101".parse().unwrap(),
            },
            NodeAddress {
                kind: "CiliumInternalIP".into(),
                ip: "172.20.1.1".parse().unwrap(),
            },
        ],
        ipv4_alloc_cidr: Some("172.20.1.0/24".parse().unwrap()),
        ipv4_health_ip: None,
    };
    assert_eq!(
        initial[1],
        Change::Upsert {
            key: "k8s-w1".into(),
            object: w1.clone()
        }
    );
    assert_eq!(nodes.objects().len(), 1);
    // A node registers without a pod CIDR, then the operator writes one.
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: k8s-w2}\nspec:\n  \
         addresses: [{type: InternalIP, ip: 192.168.10.102}]\n",
    );
    let Change::Upsert { key, object } = next(&mut nodes).await else {
        panic!("an upsert")
    };
    assert_eq!(
        (key.as_str(), object.ipv4_alloc_cidr),
        ("k8s-w2", None::<ipnet::Ipv4Net>)
    );
    assert_eq!(
        object.internal_ip(),
        Some("192.168.10.102".parse().unwrap())
    );
    patch(
        &cp,
        &["ciliumnode", "k8s-w2"],
        r#"{"spec":{"ipam":{"podCIDRs":["172.20.2.0/24"]}}}"#,
    );
    until(&mut nodes, "k8s-w2's pod CIDR", |o| {
        o.get("k8s-w2").and_then(|n| n.ipv4_alloc_cidr) == Some("172.20.2.0/24".parse().unwrap())
    })
    .await;
    deleted(&cp, &mut nodes, &["ciliumnode", "k8s-w1"], "k8s-w1", w1).await;

    // CiliumEndpoints: the one without an identity is refused.
    let (mut ceps, initial) = kubernetes::endpoints(client.clone()).await.unwrap();
    assert_eq!(invalid_keys(&initial), ["default/no-identity-yet"]);
    let curl = IpIdentityPair {
        ip: "172.20.1.87".parse().unwrap(),
        host_ip: "192.168.10.101".parse().unwrap(),
        id: 21894,
        key: 0,
        namespace: "default".into(),
        pod: "curl-pod".into(),
        named_ports: Vec::new(),
    };
    assert_eq!(
        ceps.objects().values().collect::<Vec<_>>(),
        [&curl],
        "{initial:?}"
    );
    // It gets its identity; the other one goes.
    patch(
        &cp,
        &["cep", "no-identity-yet"],
        r#"{"status":{"identity":{"id":30000}}}"#,
    );
    let Change::Upsert { object, .. } = next(&mut ceps).await else {
        panic!("an upsert")
    };
    assert_eq!(
        (object.ip.to_string().as_str(), object.id),
        ("172.20.1.88", 30000)
    );
    deleted(
        &cp,
        &mut ceps,
        &["cep", "curl-pod"],
        "default/curl-pod",
        curl,
    )
    .await;

    // CiliumIdentities: number and labels; a name that is no number is refused.
    let (mut ids, _) = kubernetes::identities(client.clone()).await.unwrap();
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: \"21894\"}\n\
         security-labels: {\"k8s:app\": curl, \"k8s:io.kubernetes.pod.namespace\": default}\n",
    );
    let Change::Upsert { object, .. } = next(&mut ids).await else {
        panic!("an upsert")
    };
    let labels =
        LabelSet::parse_list(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]).unwrap();
    assert_eq!(object, (21894, labels));
    apply(
        &cp,
        "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: web}\n\
         security-labels: {\"k8s:app\": web}\n",
    );
    assert!(matches!(next(&mut ids).await, Change::Invalid { key, .. } if key == "web"));

    // Policies of the three kinds, as documents the policy engine takes under the
    // origins the consumer gives them.
    let (mut cnps, _) = kubernetes::cilium_policies(client.clone(), "CiliumNetworkPolicy")
        .await
        .unwrap();
    let (mut ccnps, _) =
        kubernetes::cilium_policies(client.clone(), "CiliumClusterwideNetworkPolicy")
            .await
            .unwrap();
    let (mut knps, _) = kubernetes::network_policies(client.clone()).await.unwrap();
    apply(&cp, POLICIES);
    policy_documents(&mut cnps, "CiliumNetworkPolicy", "default/allow-curl").await;
    policy_documents(&mut ccnps, "CiliumClusterwideNetworkPolicy", "deny-world").await;
    policy_documents(&mut knps, "NetworkPolicy", "default/db").await;
    // Labels are part of the document.
    cp.kubectl(&["label", "cnp", "allow-curl", "team=a"])
        .unwrap();
    until(&mut cnps, "the label", |o| {
        o["default/allow-curl"]["metadata"]["labels"]["team"] == "a"
    })
    .await;
    let db = knps.objects()["default/db"].clone();
    deleted(&cp, &mut knps, &["networkpolicy", "db"], "default/db", db).await;
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: webpod, namespace: default}
spec:
  selector: {app: webpod}
  ports: [{name: http, port: 80, targetPort: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: webpod-by-hand
  namespace: default
  labels: {kubernetes.io/service-name: webpod}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- addresses: [172.20.2.20]
  nodeName: k8s-w2
  conditions: {ready: true}
- addresses: [172.20.2.21]
  nodeName: k8s-w2
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-service
  namespace: default
  labels: {kubernetes.io/service-name: other}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
- addresses: [172.20.3.30]
"#;

/// The addresses (`ip@node`) of a merged Endpoints object, sorted.
fn addresses(endpoints: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = endpoints
        .and_then(|e| e["subsets"].as_array())
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            format!(
                "{}@{}",
                a["ip"].as_str().unwrap_or("?"),
                a["nodeName"].as_str().unwrap_or("-")
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_takes_the_ready_endpoints_of_its_slices() {
    let cp = control_plane("a_service_takes_the_ready_endpoints_of_its_slices").await;
    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    let (mut services, _) = kubernetes::services(client.clone()).await.unwrap();
    let (mut endpoints, _) = kubernetes::service_endpoints(client.clone()).await.unwrap();

    // Two pods of a Deployment bound to k8s-w1 and running, a Service selecting them.
    cp.add_ready_node("k8s-w1", Ipv4Addr::new(192, 168, 10, 101))
        .unwrap();
    let pods = cp.running_deployment(
        "webpod",
        "k8s-w1",
        &[Ipv4Addr::new(172, 20, 1, 10), Ipv4Addr::new(172, 20, 1, 11)],
    );
    apply(&cp, SERVICE);

    // The controller's slice and the one by hand, merged; not-ready endpoints and the
    // other service's slice left out.
    let want = [
        "172.20.1.10@k8s-w1",
        "172.20.1.11@k8s-w1",
        "172.20.2.20@k8s-w2",
    ];
    until(&mut endpoints, "webpod's endpoints", |o| {
        addresses(o.get("default/webpod")) == want
    })
    .await;
    let eps = endpoints.objects()["default/webpod"].clone();
    let subsets = eps["subsets"].as_array().unwrap();
    assert_eq!(subsets.len(), 1, "{eps:#}");
    assert_eq!(
        subsets[0]["ports"],
        json!([{"name": "http", "port": 80, "protocol": "TCP"}])
    );
    until(&mut endpoints, "the other service's endpoints", |o| {
        addresses(o.get("default/other")) == ["172.20.3.30@-"]
    })
    .await;

    // What the load balancer gets: the ClusterIP with the three backends.
    until(&mut services, "the webpod Service", |o| {
        o.contains_key("default/webpod")
    })
    .await;
    let svc = &services.objects()["default/webpod"];
    assert!(svc.get("status").is_none(), "{svc:#}");
    let frontends =
        cilium_agent::k8s::services_from_k8s(svc, Some(&eps), "192.168.10.101".parse().unwrap());
    assert_eq!(frontends.len(), 1, "{frontends:?}");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert_eq!(
        frontends[0].frontend.to_string(),
        format!("{cluster_ip}:80/TCP")
    );
    let mut backends: Vec<String> = frontends[0]
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    backends.sort();
    assert_eq!(
        backends,
        [
            "172.20.1.10:80/TCP",
            "172.20.1.11:80/TCP",
            "172.20.2.20:80/TCP"
        ]
    );

    // A pod stops being ready: the controller marks it, the service loses it.
    cp.set_pod_status(&pods[1], Ipv4Addr::new(172, 20, 1, 11), false)
        .unwrap();
    until(&mut endpoints, "the not-ready pod to leave", |o| {
        addresses(o.get("default/webpod")) == ["172.20.1.10@k8s-w1", "172.20.2.20@k8s-w2"]
    })
    .await;

    // The Service goes: its object is deleted; the slice by hand still names it.
    cp.kubectl(&["delete", "service", "webpod"]).unwrap();
    until(&mut services, "the Service's deletion", |o| {
        !o.contains_key("default/webpod")
    })
    .await;
    cp.kubectl(&["delete", "endpointslice", "webpod-by-hand", "other-service"])
        .unwrap();
    until(&mut endpoints, "the slices' deletion", |o| {
        !o.contains_key("default/other") && !o.contains_key("default/webpod")
    })
    .await;
}
