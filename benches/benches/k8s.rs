// SPDX-License-Identifier: Apache-2.0

//! The agent in Kubernetes mode beside kvstore mode (issue #16).
//!
//! - Pods through the API: each pod is created with kubectl (bound to the node, untimed),
//!   then wired with cilium-cni as a runtime runs it (see `pod_creation`). Timed: the wall
//!   time of ADD (to a ready endpoint: the agent reads the Pod for its labels, one label set
//!   for all, and takes its identity from the CiliumIdentities), and the time from the start
//!   of ADD until a watch on the API sees the pod's CiliumEndpoint in state `ready` (how
//!   other nodes learn of it). 100 pods one after another, after a first one whose times
//!   (a cold start) are shown apart. One agent in a node namespace with `k8s-kubeconfig-path`
//!   (identity-allocation-mode=crd); the upstream control plane in the same namespace on the
//!   node's address, so it shares the node's 2 vCPUs; the operator in Kubernetes mode
//!   giving the node its pod CIDR. Baseline, in the same run: the same ADDs against an agent
//!   in kvstore mode (embedded store, no Kubernetes), as `pod_creation` measures them.
//! - Identity allocation with 1000 identities present: a new label set, a held one again,
//!   and a lookup of a held one. Ours: `cilium_k8s::identity::CrdBackend` (CiliumIdentity
//!   objects) through an apiserver on 127.0.0.1; baseline: `cilium_identity::KvBackend` on
//!   an etcd of the build the apiserver stores its objects in, so the difference is the
//!   API server's layer. For context only (not measured here): Cilium's 0.5 s per
//!   allocation at 60,000 identities on 2 vCPUs (cilium#22984).
//! - Memory: the Kubernetes-mode agent's VmRSS before and after 1000 pods of other nodes
//!   (Pod objects, their CiliumEndpoints with addresses and identities, one CiliumIdentity
//!   per ten pods) and then 1000 Services with an EndpointSlice of two endpoints each, all
//!   made with batched `kubectl create`; KiB per pod and per service (Cilium's agent:
//!   about 10.5 KiB per pod). No baseline.
//!
//! `cargo bench` (`--bench`) runs the full sizes on release binaries (`cargo xtask bench
//! k8s` builds them); `cargo test` runs a small smoke pass on the debug binaries. The
//! identity part needs no root; the others do ("skipped: needs root" otherwise). Everything
//! lives in namespaces and directories named `crsp<pid>…` (the control planes' under them or
//! in `crs-kube-<pid>-…`), removed on drop, even on panic.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, spawn_in_netns};
use cilium_core::LabelSet;
use cilium_core::cluster::Change;
use cilium_core::kvstore::etcd::{EtcdServer, EtcdStore};
use cilium_identity::{IdentityBackend, KvBackend};
use cilium_k8s::identity::CrdBackend;
use cilium_k8s::testing::{ControlPlane, Options};
use cilium_k8s::watch::Informer;
use common::{Lab, NODE_IP, NODE_NAME, cni_add, in_waves, percentile, report};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

/// How much of everything: full under `cargo bench`, a smoke pass under `cargo test`.
struct Sizes {
    pods: usize,
    identities: usize,
    new_identities: usize,
    lookups: usize,
    remote_pods: usize,
    services: usize,
}

impl Sizes {
    fn new(full: bool) -> Sizes {
        if full {
            Sizes {
                pods: 100,
                identities: 1000,
                new_identities: 100,
                lookups: 1000,
                remote_pods: 1000,
                services: 1000,
            }
        } else {
            Sizes {
                pods: 3,
                identities: 20,
                new_identities: 5,
                lookups: 20,
                remote_pods: 20,
                services: 20,
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ---- identities ----

fn bench_labels(i: usize) -> LabelSet {
    let items = [
        format!("k8s:app=bench-{i}"),
        "k8s:io.kubernetes.pod.namespace=bench".to_owned(),
    ];
    LabelSet::parse_list(&items).expect("labels")
}

/// The times of each operation on one backend.
struct IdentityTimes {
    fill: Duration,
    new: Vec<Duration>,
    held: Vec<Duration>,
    lookup: Vec<Duration>,
}

async fn exercise(backend: &impl IdentityBackend, sizes: &Sizes) -> IdentityTimes {
    let start = Instant::now();
    for i in 0..sizes.identities {
        backend.allocate(&bench_labels(i)).await.expect("allocate");
    }
    let fill = start.elapsed();
    let fresh: Vec<LabelSet> = (sizes.identities..sizes.identities + sizes.new_identities)
        .map(bench_labels)
        .collect();
    let held: Vec<LabelSet> = (0..sizes.lookups)
        .map(|k| bench_labels(k * 7919 % sizes.identities))
        .collect();
    let mut times = IdentityTimes {
        fill,
        new: Vec::new(),
        held: Vec::new(),
        lookup: Vec::new(),
    };
    for labels in &fresh {
        let start = Instant::now();
        backend.allocate(labels).await.expect("allocate");
        times.new.push(start.elapsed());
    }
    for labels in &held {
        let start = Instant::now();
        backend.allocate(labels).await.expect("allocate");
        times.held.push(start.elapsed());
    }
    for labels in &held {
        let start = Instant::now();
        let found = backend.lookup(labels).await.expect("lookup");
        times.lookup.push(start.elapsed());
        assert!(found.is_some(), "a held label set has an identity");
    }
    times
}

/// An etcd of the apiserver's build on 127.0.0.1 (free ports), its data removed on drop.
struct Etcd {
    server: EtcdServer,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Etcd {
    fn start() -> Etcd {
        let kube = cilium_k8s::testing::kube_dir().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("crsp{}i-etcd", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let server =
            EtcdServer::start_binary(&kube.join("etcd"), &dir.join("data"), free(), free(), &[])
                .unwrap_or_else(|e| {
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!("{e}")
                });
        Etcd { server, dir }
    }
}

fn identities(sizes: &Sizes) {
    let cp = ControlPlane::start_for_test("k8s identities");
    cp.apply_crds().unwrap_or_else(|e| panic!("{e}"));
    let etcd = Etcd::start();
    let (kv, crd) = runtime().block_on(async {
        let store = EtcdStore::connect(
            std::slice::from_ref(&etcd.server.endpoint),
            Duration::from_secs(30),
        )
        .await
        .expect("connect to etcd");
        let kv = exercise(&KvBackend::new(store, NODE_NAME, 256, 65535), sizes).await;
        let client = cilium_k8s::client(&cp.kubeconfig())
            .await
            .expect("a client");
        let backend = CrdBackend::start(client, 0).await.expect("the crd backend");
        let crd = exercise(&backend, sizes).await;
        (kv, crd)
    });
    println!(
        "k8s identities: {} present, then {} new label sets, {} allocations and lookups of held ones \
         (baseline: kvstore mode, KvBackend on etcd; ours: crd mode, CiliumIdentity objects through the apiserver)",
        sizes.identities, sizes.new_identities, sizes.lookups
    );
    let each = |t: Duration| t.as_secs_f64() * 1e3 / sizes.identities as f64;
    println!(
        "k8s identity fill: {} allocations: baseline {:.1} s ({:.2} ms each)   ours {:.1} s ({:.2} ms each)",
        sizes.identities,
        kv.fill.as_secs_f64(),
        each(kv.fill),
        crd.fill.as_secs_f64(),
        each(crd.fill)
    );
    report("k8s", "identity new", &kv.new, &crd.new);
    report("k8s", "identity held", &kv.held, &crd.held);
    report("k8s", "identity lookup", &kv.lookup, &crd.lookup);
    println!(
        "k8s identity: for context only, Cilium allocates in about 0.5 s at 60k identities on 2 vCPUs (cilium#22984)"
    );
}

// ---- pods through the API ----

/// A Pod object of namespace `default`, bound to `node`.
fn pod_object(name: &str, node: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "bench"}]},
    })
}

/// Creates `items` with one `kubectl create` (a List).
fn create_all(cp: &ControlPlane, items: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    cp.kubectl_input(&["create", "-f", "-"], Some(&list))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Everything of the Kubernetes-mode node; dropped in field order: the watch stops, the
/// control plane goes, then the lab with the agent and the operator.
struct K8sNode {
    watch: Option<CepWatch>,
    cp: ControlPlane,
    lab: Lab,
}

impl K8sNode {
    fn start(bins: &Path, pods: usize) -> K8sNode {
        let mut lab = Lab::new("k");
        lab.add_pod_namespaces(pods);
        let cp = ControlPlane::start(&Options {
            netns: Some(lab.node.clone()),
            address: NODE_IP,
            dir: Some(lab.state.join("control-plane")),
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        cp.add_ready_node(NODE_NAME, NODE_IP)
            .unwrap_or_else(|e| panic!("{e}"));
        let kubeconfig = format!("--k8s-kubeconfig-path={}", cp.kubeconfig().display());
        lab.spawn(
            &bins.join("cilium-operator"),
            &[
                kubeconfig.clone(),
                "--cluster-pool-ipv4-cidr=172.20.0.0/16".into(),
                "--cluster-pool-ipv4-mask-size=24".into(),
                "--operator-id=bench-operator".into(),
            ],
            "operator.log",
        );
        lab.start_agent(bins, &[kubeconfig, "--identity-allocation-mode=crd".into()]);
        let watch = Some(CepWatch::start(&lab.node, cp.kubeconfig()));
        K8sNode { watch, cp, lab }
    }

    /// Pods `0..pods` one after another: each created with kubectl, then ADD; returns the
    /// times of ADD and of the CiliumEndpoint seen ready, from the start of ADD.
    fn add_pods(&self, bins: &Path, pods: usize) -> (Vec<Duration>, Vec<Duration>) {
        let watch = self.watch.as_ref().expect("watch");
        let (mut add, mut cep) = (Vec::new(), Vec::new());
        for i in 0..pods {
            let name = common::pod_name(i);
            let object = pod_object(&name, NODE_NAME, "bench").to_string();
            self.cp
                .kubectl_input(&["create", "-f", "-"], Some(&object))
                .unwrap_or_else(|e| panic!("{e}"));
            let start = Instant::now();
            add.push(cni_add(&self.lab, bins, i).join().expect("ADD"));
            cep.push(watch.wait(&format!("default/{name}")) - start);
        }
        (add, cep)
    }

    /// Waits (up to 5 minutes) until the agent's answer to `GET path` passes `done`.
    fn wait_agent(&self, what: &str, path: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done(&self.lab.api("GET", path, None)) {
            assert!(Instant::now() < deadline, "the agent never had {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The agent's VmRSS once it has settled.
    fn settled_rss_kib(&self) -> u64 {
        std::thread::sleep(Duration::from_secs(2));
        self.lab.agent_rss_kib()
    }
}

/// Remote pod `i`'s address.
fn remote_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 21, (i / 250) as u8, (1 + i % 250) as u8)
}

/// `count` pods of ten other nodes: Pod objects, CiliumEndpoints (ready, with address and
/// identity), and a CiliumIdentity per ten pods.
fn remote_pods(count: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for g in 0..count.div_ceil(10) {
        let app = format!("remote-{g}");
        items.push(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
            "metadata": {"name": (60_000 + g).to_string(),
                         "labels": {"app": app, "io.kubernetes.pod.namespace": "default"}},
            "security-labels": {"k8s:app": app, "k8s:io.kubernetes.pod.namespace": "default"},
        }));
    }
    for i in 0..count {
        let (name, app) = (format!("remote-{i}"), format!("remote-{}", i / 10));
        let node = format!("remote-node-{}", i % 10);
        items.push(pod_object(&name, &node, &app));
        items.push(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
            "metadata": {"name": name, "namespace": "default"},
            "status": {
                "id": 1 + i,
                "identity": {"id": 60_000 + i / 10, "labels": [
                    format!("k8s:app={app}"), "k8s:io.kubernetes.pod.namespace=default"]},
                "state": "ready",
                "networking": {"addressing": [{"ipv4": remote_ip(i).to_string()}],
                               "node": format!("192.168.20.{}", 1 + i % 10)},
                "encryption": {},
                "external-identifiers": {"k8s-namespace": "default", "k8s-pod-name": name,
                                         "pod-name": format!("default/{name}")},
            },
        }));
    }
    items
}

/// `count` ClusterIP Services without selector, each with an EndpointSlice of two of the
/// remote pods.
fn services(count: usize, pods: usize) -> Vec<Value> {
    let mut items = Vec::new();
    for i in 0..count {
        let name = format!("svc-{i}");
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }));
        let endpoint = |n: usize| {
            json!({"addresses": [remote_ip(n % pods).to_string()], "conditions": {"ready": true},
                   "nodeName": format!("remote-node-{}", n % 10)})
        };
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-bench"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [endpoint(2 * i), endpoint(2 * i + 1)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }));
    }
    items
}

/// The agent's RSS before and after the remote pods, then after the services.
fn memory(node: &K8sNode, sizes: &Sizes) -> [u64; 3] {
    let before = node.settled_rss_kib();
    create_all(&node.cp, &remote_pods(sizes.remote_pods));
    let count = sizes.remote_pods;
    node.wait_agent(
        "the remote pods in its ipcache",
        "/map/cilium_ipcache_v2",
        |v| {
            let rows = v["cache"].as_array().map_or(&[][..], Vec::as_slice);
            let remote = rows
                .iter()
                .filter(|r| r["key"].as_str().is_some_and(|k| k.starts_with("172.21.")));
            remote.count() == count
        },
    );
    let with_pods = node.settled_rss_kib();
    create_all(&node.cp, &services(sizes.services, sizes.remote_pods));
    let count = sizes.services;
    node.wait_agent("the services with their backends", "/service", |v| {
        let listed = v.as_array().map_or(&[][..], Vec::as_slice);
        let two = listed.iter().filter(|s| {
            s["spec"]["backend-addresses"]
                .as_array()
                .is_some_and(|b| b.len() == 2)
        });
        two.count() == count
    });
    [before, with_pods, node.settled_rss_kib()]
}

// ---- the CiliumEndpoint watch ----

type Seen = Arc<(Mutex<HashMap<String, Instant>>, Condvar)>;

/// When a watch on the API first saw each CiliumEndpoint in state `ready`, by
/// `namespace/name`. The watch runs on a thread in the node namespace (where the apiserver
/// is) until this is dropped.
struct CepWatch {
    seen: Seen,
    stop: Arc<AtomicBool>,
}

impl Drop for CepWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn cep_state(cep: &DynamicObject) -> Result<String, String> {
    Ok(cep.data["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn record(seen: &Seen, change: Change<String>) {
    if let Change::Upsert { key, object } = change
        && object == "ready"
    {
        let (map, changed) = &**seen;
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(Instant::now);
        changed.notify_all();
    }
}

impl CepWatch {
    fn start(netns: &str, kubeconfig: PathBuf) -> CepWatch {
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (started, ready) = std::sync::mpsc::channel();
        let (seen_by_watch, stopped) = (seen.clone(), stop.clone());
        spawn_in_netns(netns, move || {
            runtime().block_on(async move {
                let client = cilium_k8s::client(&kubeconfig).await.expect("a client");
                let gvk = GroupVersionKind::gvk(
                    cilium_k8s::crds::GROUP,
                    cilium_k8s::crds::VERSION,
                    "CiliumEndpoint",
                );
                let api = Api::<DynamicObject>::all_with(client, &ApiResource::from_gvk(&gvk));
                let (mut informer, initial) =
                    Informer::start_with(api, Default::default(), cep_state)
                        .await
                        .expect("watching CiliumEndpoints");
                for change in initial {
                    record(&seen_by_watch, change);
                }
                let _ = started.send(());
                while !stopped.load(Ordering::SeqCst) {
                    let next = tokio::time::timeout(Duration::from_millis(100), informer.next());
                    if let Ok(Ok(change)) = next.await {
                        record(&seen_by_watch, change);
                    }
                }
            });
        });
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("the CiliumEndpoint watch started");
        CepWatch { seen, stop }
    }

    /// When CiliumEndpoint `key` was first seen ready (waits up to a minute).
    fn wait(&self, key: &str) -> Instant {
        let (map, changed) = &*self.seen;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(at) = seen.get(key) {
                return *at;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("CiliumEndpoint {key} never seen ready"));
            seen = changed
                .wait_timeout(seen, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

// ---- main ----

fn ready_endpoints(lab: &Lab) -> usize {
    let eps = lab.api("GET", "/endpoint", None);
    eps.as_array().map_or(0, |a| {
        a.iter().filter(|e| e["status"]["state"] == "ready").count()
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("k8s: benchmark");
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::new(full);
    let started = Instant::now();
    identities(&sizes);
    if !is_root_or_skip("k8s pods and memory") {
        return;
    }
    let needed = ["cilium-agent", "cilium-cni", "cilium-operator"];
    let Some(bins) = common::bins_dir("k8s", full, &needed) else {
        return;
    };
    // Pod 0 is each agent's first: its cold start (the apiserver's first write of a
    // CiliumEndpoint has taken close to a second) is shown apart, not in the percentiles.
    let pods = sizes.pods;
    let all = pods + 1;

    let kv_all = {
        let mut lab = Lab::new("v");
        lab.add_pod_namespaces(all);
        lab.start_agent(&bins, &["--ipv4-range=172.20.0.0/16".to_owned()]);
        let times = in_waves(0, all, 1, |i| cni_add(&lab, &bins, i));
        assert_eq!(
            ready_endpoints(&lab),
            all,
            "every ADD left a ready endpoint"
        );
        times
    };

    let mut node = K8sNode::start(&bins, all);
    let (add_all, cep_all) = node.add_pods(&bins, all);
    assert_eq!(ready_endpoints(&node.lab), all);
    node.watch = None;
    let rss = memory(&node, &sizes);

    let (kvstore, add, cep) = (&kv_all[1..], &add_all[1..], &cep_all[1..]);
    println!(
        "k8s: {pods} pods one after another, after a first one ({} binaries; baseline: kvstore \
         mode, embedded store; ours: Kubernetes mode, control plane and operator on the node)",
        if full { "release" } else { "debug" }
    );
    report("k8s", "ADD", kvstore, add);
    report("k8s", "CEP ready", kvstore, cep);
    for p in [50, 99] {
        let base = percentile(kvstore, p);
        println!(
            "k8s k8s/kvstore p{p}: ADD {:.2}x, CiliumEndpoint ready {:.2}x",
            percentile(add, p) / base,
            percentile(cep, p) / base
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "k8s first pod: ADD kvstore {:.0} ms; ADD k8s {:.0} ms; CEP ready {:.0} ms",
        ms(kv_all[0]),
        ms(add_all[0]),
        ms(cep_all[0])
    );
    let slowest = |times: &[Duration]| {
        let mut by_time: Vec<(f64, usize)> = times.iter().map(|d| ms(*d)).zip(1..).collect();
        by_time.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = (by_time.iter().take(3))
            .map(|(v, i)| format!("{v:.0} (pod {i})"))
            .collect();
        top.join(", ")
    };
    println!(
        "k8s slowest three (ms): ADD kvstore {}; ADD k8s {}; CEP ready {}",
        slowest(kvstore),
        slowest(add),
        slowest(cep)
    );
    let per = |from: u64, to: u64, n: usize| to.saturating_sub(from) as f64 / n as f64;
    println!(
        "k8s agent RSS: {all} endpoints {:.1} MiB; + {} remote pods {:.1} MiB ({:.2} KiB per pod); \
         + {} services {:.1} MiB ({:.2} KiB per service)",
        rss[0] as f64 / 1024.0,
        sizes.remote_pods,
        rss[1] as f64 / 1024.0,
        per(rss[0], rss[1], sizes.remote_pods),
        sizes.services,
        rss[2] as f64 / 1024.0,
        per(rss[1], rss[2], sizes.services),
    );
    println!("k8s: done in {:.0} s", started.elapsed().as_secs_f64());
}
