// SPDX-License-Identifier: Apache-2.0

//! Two nodes on the real Kubernetes control plane, as the binaries run them: a lab
//! underlay namespace (a bridge, 192.168.10.0/24) running upstream's etcd, kube-apiserver,
//! controller-manager and scheduler on 192.168.10.1 and the operator in Kubernetes mode;
//! two node namespaces with a cilium-agent each on the API (`k8s-kubeconfig-path`,
//! identity-allocation-mode=crd, no cluster store). The test plays the kubelet: it creates
//! Pod objects with kubectl and wires them with the cilium-cni binary. Checks: CiliumNodes
//! with /24s from 172.20.0.0/16, CiliumEndpoints and CiliumIdentities as upstream names and
//! shapes them (`kubectl get ciliumendpoints -o wide`), one identity for one label set on
//! both nodes with the namespace's labels in it, an agent restart re-adopting its
//! CiliumEndpoints, and pod deletion removing the endpoint and its CiliumEndpoint. Needs
//! root; everything is made under a `crs<pid>k` prefix and removed on drop (processes
//! killed by pid).

#[macro_use]
mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::is_root_or_skip;
use cilium_core::kvstore::etcd::EtcdServer;
use cilium_k8s::testing::{ControlPlane, Options};
use common::{Underlay, sibling};
use serde_json::Value;

/// Everything the test made; removed on drop, even on panic (fields in order: the node
/// heartbeats stop, the control plane goes, then the underlay with the agents and the
/// operator).
struct Lab {
    _heartbeat: std::sync::mpsc::Sender<()>,
    cp: Option<ControlPlane>,
    /// The cluster store of identity-allocation-mode=kvstore, when used.
    kvstore: Option<EtcdServer>,
    base: Underlay,
}

/// The identity store's etcd in the lab namespace (the control plane's own is on 2379).
const KVSTORE: &str = "192.168.10.1:12379";

deref_to_underlay!(Lab);

impl Lab {
    /// The lab; with `kvstore`, also an etcd for identity-allocation-mode=kvstore.
    fn new(kvstore: bool) -> Lab {
        let mut base = Underlay::new(if kvstore { 'v' } else { 'k' }, &["k8s-w1", "k8s-w2"]);
        let lan = base.lan.clone();
        let kvstore = kvstore.then(|| {
            let wrapper = vec!["ip".to_owned(), "netns".into(), "exec".into(), lan.clone()];
            EtcdServer::start(
                &base.dir.join("kvstore"),
                KVSTORE.parse().expect("addr"),
                "192.168.10.1:12380".parse().expect("addr"),
                &wrapper,
            )
            .expect("start etcd in the lab")
        });
        let cp = ControlPlane::start(&Options {
            netns: Some(lan.clone()),
            address: "192.168.10.1".parse().expect("addr"),
            dir: Some(base.dir.join("control-plane")),
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        base.spawn_in_lan(
            &sibling("cilium-operator"),
            &[
                format!("--k8s-kubeconfig-path={}", cp.kubeconfig().display()),
                "--cluster-pool-ipv4-cidr=172.20.0.0/16".into(),
                "--cluster-pool-ipv4-mask-size=24".into(),
                "--operator-id=operator-k8s-ctr".into(),
            ],
            "operator.log",
        );
        // The nodes as their kubelets register them, kept Ready by renewing their Leases
        // in kube-node-lease (the node lifecycle controller reads those as heartbeats).
        for n in &base.nodes {
            cp.add_ready_node(n.name, n.ip)
                .unwrap_or_else(|e| panic!("node {}: {e}", n.name));
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let kubectl = cp.kubectl_path();
        let kubeconfig = cp.kubeconfig();
        let names: Vec<&'static str> = base.nodes.iter().map(|n| n.name).collect();
        std::thread::spawn(move || {
            loop {
                for name in &names {
                    let ns = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_nanos();
                    let now = format!("{}.000000Z", &cilium_core::rfc3339(ns)[..19]);
                    let lease = format!(
                        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, \
                         namespace: kube-node-lease}}\nspec: {{holderIdentity: {name}, \
                         leaseDurationSeconds: 40, renewTime: \"{now}\"}}\n"
                    );
                    if let Ok(mut child) = Command::new("ip")
                        .args(["netns", "exec", &lan])
                        .arg(&kubectl)
                        .arg(format!("--kubeconfig={}", kubeconfig.display()))
                        .args(["apply", "-f", "-"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                    {
                        if let Some(mut input) = child.stdin.take() {
                            use std::io::Write;
                            let _ = input.write_all(lease.as_bytes());
                        }
                        let _ = child.wait();
                    }
                }
                match stopped.recv_timeout(Duration::from_secs(5)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        });
        Lab {
            _heartbeat: stop,
            cp: Some(cp),
            kvstore,
            base,
        }
    }

    fn apply(&self, yaml: &str) {
        self.cp()
            .kubectl_input(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("control plane")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.cp()
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    fn start_agent(&mut self, i: usize) {
        let kubeconfig = self.cp().kubeconfig();
        let mut args = vec![
            format!("--k8s-kubeconfig-path={}", kubeconfig.display()),
            "--ipv4-native-routing-cidr=172.20.0.0/16".into(),
            "--routing-mode=native".into(),
            "--auto-direct-node-routes=true".into(),
        ];
        if self.kvstore.is_some() {
            args.extend([
                "--identity-allocation-mode=kvstore".into(),
                "--kvstore=etcd".into(),
                format!("--kvstore-opt=etcd.address={KVSTORE}"),
            ]);
        } else {
            args.push("--identity-allocation-mode=crd".into());
        }
        self.base.start_agent(i, &args);
    }

    /// Creates the Pod object bound to node `i` (as the scheduler would), then wires it
    /// with cilium-cni as the node's kubelet would; returns its IP.
    fn add_pod(&mut self, i: usize, pod: &str, app: &str) -> Ipv4Addr {
        self.create_pod_object(i, pod, app);
        let ip = self.add_pod_netns(i, pod);
        // As the kubelet: the pod runs and is ready, with its IP.
        self.cp()
            .set_pod_status(pod, ip, true)
            .unwrap_or_else(|e| panic!("status of {pod}: {e}"));
        ip
    }

    /// The Pod object, bound to node `i` as the scheduler would bind it.
    fn create_pod_object(&self, i: usize, pod: &str, app: &str) {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: {}, containers: [{{name: c, image: nicolaka/netshoot}}]}}\n",
            self.nodes[i].name
        );
        // The default ServiceAccount appears shortly after the control plane starts.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = self
            .cp()
            .kubectl_input(&["apply", "-f", "-"], Some(&manifest))
        {
            assert!(Instant::now() < deadline, "creating pod {pod}: {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `kubectl get` of one object as JSON, once `ready` accepts it (up to 30 s).
    fn object_when(&self, args: &[&str], ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = args.to_vec();
            all.extend(["-o", "json"]);
            if let Ok(text) = self.cp().kubectl(&all)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && ready(&v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl get {args:?} never ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether pod `from` reaches `to:port`, waiting up to 15 s for that to be `want`.
fn reaches(lab: &Lab, from: &str, to: Ipv4Addr, port: u16, want: bool) -> bool {
    lab.reaches_within(from, to, port, want, 15)
}

/// A pod's CiliumEndpoint once it is ready.
fn cep(lab: &Lab, pod: &str) -> Value {
    lab.object_when(&["get", "ciliumendpoint", "-n", "default", pod], |v| {
        v["status"]["state"] == "ready"
    })
}

#[test]
fn privileged_two_nodes_on_kubernetes() {
    if !is_root_or_skip("privileged_two_nodes_on_kubernetes") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(false);
    lab.start_agent(0);
    lab.start_agent(1);
    lab.wait_agent(0);
    lab.wait_agent(1);

    // CiliumNodes with the operator's /24s, the same the agents use.
    let pool: ipnet::Ipv4Net = "172.20.0.0/16".parse().unwrap();
    let mut cidrs = Vec::new();
    for n in &lab.nodes {
        let cn = lab.object_when(&["get", "ciliumnode", n.name], |v| {
            v["spec"]["ipam"]["podCIDRs"][0].is_string()
        });
        let cidr: ipnet::Ipv4Net = cn["spec"]["ipam"]["podCIDRs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pool.contains(&cidr) && cidr.prefix_len() == 24, "{cidr}");
        assert_eq!(
            cn["spec"]["addresses"][0],
            serde_json::json!({"type": "InternalIP", "ip": n.ip.to_string()})
        );
        let health = n.api("GET", "/healthz", None).expect("healthz");
        assert_eq!(
            health["node-state"]["node"]["cidr"],
            cidr.to_string(),
            "{health}"
        );
        cidrs.push(cidr);
    }
    assert_ne!(cidrs[0], cidrs[1]);

    // Pods through the API and the CNI.
    let web_a = lab.add_pod(0, "webpod-a", "webpod");
    let web_b = lab.add_pod(1, "webpod-b", "webpod");
    let curl = lab.add_pod(0, "curl-pod", "curl");
    assert!(cidrs[0].contains(&web_a) && cidrs[0].contains(&curl));
    assert!(cidrs[1].contains(&web_b));

    // CiliumEndpoints as upstream shapes them.
    let (a, b, c) = (
        cep(&lab, "webpod-a"),
        cep(&lab, "webpod-b"),
        cep(&lab, "curl-pod"),
    );
    assert_eq!(
        a["status"]["networking"]["addressing"][0]["ipv4"],
        web_a.to_string()
    );
    assert_eq!(a["status"]["networking"]["node"], "192.168.10.101");
    assert_eq!(b["status"]["networking"]["node"], "192.168.10.102");
    assert_eq!(a["metadata"]["ownerReferences"][0]["kind"], "Pod");
    let id = |v: &Value| v["status"]["identity"]["id"].as_u64().expect("identity");
    assert_eq!(id(&a), id(&b), "one label set, one number on both nodes");
    assert_ne!(id(&a), id(&c));
    assert!(id(&a) >= 256);
    let table = lab.kubectl(&["get", "ciliumendpoints", "-o", "wide"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|s| !s.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SECURITY IDENTITY",
            "INGRESS ENFORCEMENT",
            "EGRESS ENFORCEMENT",
            "ENDPOINT STATE",
            "IPV4",
            "IPV6"
        ],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("webpod-a "))
        .expect(&table);
    assert!(
        row.contains(&id(&a).to_string())
            && row.contains("ready")
            && row.contains(&web_a.to_string()),
        "{row}"
    );

    // The identity object: the pod's labels and its namespace's.
    let ident = lab.object_when(&["get", "ciliumidentity", &id(&a).to_string()], |_| true);
    let labels = &ident["security-labels"];
    assert_eq!(labels["k8s:app"], "webpod");
    assert_eq!(labels["k8s:io.kubernetes.pod.namespace"], "default");
    assert_eq!(
        labels["k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"],
        "default"
    );
    assert_eq!(labels["k8s:io.cilium.k8s.policy.serviceaccount"], "default");
    assert_eq!(ident["metadata"]["labels"]["app"], "webpod");
    let ep = lab.nodes[0]
        .api("GET", "/endpoint/pod-name:default:webpod-a", None)
        .expect("endpoint");
    assert_eq!(ep["status"]["identity"]["id"].as_u64(), Some(id(&a)));

    // Two agents racing for one new label set: one number, one CiliumIdentity.
    for (i, pod) in [(0, "race-a"), (1, "race-b")] {
        lab.create_pod_object(i, pod, "race");
        let ns = lab.pod_ns(pod);
        lab.add_netns(&ns);
    }
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| lab.cni(0, "ADD", "race-a"));
        let b = s.spawn(|| lab.cni(1, "ADD", "race-b"));
        (a.join().expect("ADD race-a"), b.join().expect("ADD race-b"))
    });
    assert!(
        ra.success && rb.success,
        "{} {} / {} {}",
        ra.output,
        ra.stderr,
        rb.output,
        rb.stderr
    );
    let race_id = id(&cep(&lab, "race-a"));
    assert_eq!(id(&cep(&lab, "race-b")), race_id);
    let all: Value =
        serde_json::from_str(&lab.kubectl(&["get", "ciliumidentities", "-o", "json"])).unwrap();
    let racing: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["security-labels"]["k8s:app"] == "race")
        .collect();
    assert_eq!(racing.len(), 1, "{racing:?}");
    assert_eq!(racing[0]["metadata"]["name"], race_id.to_string());

    // An agent restart: its endpoints come back with their identities, their
    // CiliumEndpoints are kept (re-adopted), nothing else appears.
    lab.stop_agent(0);
    lab.start_agent(0);
    lab.wait_agent(0);
    std::thread::sleep(Duration::from_secs(2));
    let after = cep(&lab, "webpod-a");
    assert_eq!(id(&after), id(&a));
    assert_eq!(
        after["metadata"]["uid"], a["metadata"]["uid"],
        "re-created, not adopted"
    );
    let names = lab.kubectl(&["get", "ciliumendpoints", "-o", "name"]);
    assert_eq!(names.lines().count(), 5, "{names}");
    // One deleted behind the agent's back comes back (the sync writes all every 10 s).
    lab.kubectl(&["delete", "ciliumendpoint", "curl-pod"]);
    let back = cep(&lab, "curl-pod");
    assert_eq!(id(&back), id(&c));

    // Traffic across nodes: routes to the other node's pod CIDR from its CiliumNode, its
    // pods' identities from their CiliumEndpoints.
    let other = lab.add_pod(1, "other", "other");
    let served_a = cilium_bpf::testing::tcp_echo_server(&lab.pod_ns("webpod-a"), web_a, 8080);
    let served_b = cilium_bpf::testing::tcp_echo_server(&lab.pod_ns("webpod-b"), web_b, 8080);
    assert!(
        reaches(&lab, "curl-pod", web_b, 8080, true),
        "curl-pod (w1) -> webpod-b (w2)"
    );
    assert!(
        reaches(&lab, "other", web_a, 8080, true),
        "other (w2) -> webpod-a (w1)"
    );

    // A ClusterIP Service from kubectl: the endpointslice controller's slice reaches both
    // agents, and curl-pod reaches both replicas through it.
    lab.cp()
        .kubectl_input(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: Service\nmetadata: {name: webpod, namespace: default}\n\
                 spec: {selector: {app: webpod}, ports: [{port: 80, targetPort: 8080}]}\n",
            ),
        )
        .unwrap();
    let cluster_ip: Ipv4Addr = lab
        .kubectl(&["get", "svc", "webpod", "-o", "jsonpath={.spec.clusterIP}"])
        .parse()
        .expect("a ClusterIP");
    assert!(cluster_ip.octets()[..2] == [10, 96], "{cluster_ip}");
    let (before_a, before_b) = (
        served_a.load(std::sync::atomic::Ordering::SeqCst),
        served_b.load(std::sync::atomic::Ordering::SeqCst),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = cilium_bpf::testing::tcp_echo_reaches(&lab.pod_ns("curl-pod"), cluster_ip, 80);
        let a = served_a.load(std::sync::atomic::Ordering::SeqCst) > before_a;
        let b = served_b.load(std::sync::atomic::Ordering::SeqCst) > before_b;
        if a && b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ClusterIP did not reach both replicas (a: {a}, b: {b}): {}",
            lab.nodes[0]
                .api("GET", "/service", None)
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A NetworkPolicy from kubectl, enforced on both nodes: only curl-pod reaches webpods.
    lab.apply(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: default}\n\
         spec:\n  podSelector: {matchLabels: {app: webpod}}\n  policyTypes: [Ingress]\n  ingress:\n  \
         - from: [{podSelector: {matchLabels: {app: curl}}}]\n    ports: [{port: 8080, protocol: TCP}]\n",
    );
    assert!(
        !reaches(&lab, "other", web_a, 8080, false),
        "other (w2) -> webpod-a (w1) still allowed"
    );
    assert!(
        reaches(&lab, "curl-pod", web_b, 8080, true),
        "curl-pod (w1) -> webpod-b (w2) denied"
    );
    lab.kubectl(&["delete", "networkpolicy", "web"]);
    // A CiliumNetworkPolicy the other way round: only `other` reaches webpods.
    lab.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: webpod}}\n  ingress:\n  \
         - fromEndpoints: [{matchLabels: {app: other}}]\n",
    );
    assert!(
        !reaches(&lab, "curl-pod", web_b, 8080, false),
        "curl-pod (w1) -> webpod-b (w2) still allowed"
    );
    assert!(
        reaches(&lab, "other", web_a, 8080, true),
        "other (w2) -> webpod-a (w1) denied"
    );
    let valid = |name: &str| {
        lab.object_when(&["get", "cnp", name], |v| {
            v["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Valid"))
        })["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Valid").cloned())
            .unwrap_or_default()
    };
    assert_eq!(valid("web")["status"], "True");
    lab.kubectl(&["delete", "ciliumnetworkpolicy", "web"]);
    // A policy the API accepts but Cilium cannot apply: reported on the object (the VALID
    // column), nothing of it applied (webpods would be default-deny otherwise).
    lab.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: bad, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: webpod}}\n  ingress:\n  \
         - fromCIDR: [not-a-cidr]\n",
    );
    let bad = valid("bad");
    assert_eq!(bad["status"], "False", "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not-a-cidr"),
        "{bad}"
    );
    let table = lab.kubectl(&["get", "cnp", "bad"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("False")),
        "{table}"
    );
    assert!(
        cilium_bpf::testing::tcp_echo_reaches(&lab.pod_ns("curl-pod"), web_b, 8080),
        "the invalid policy was applied in part"
    );
    lab.kubectl(&["delete", "ciliumnetworkpolicy", "bad"]);
    assert!(
        reaches(&lab, "curl-pod", web_b, 8080, true),
        "the policy's deletion did not apply"
    );
    let _ = other;

    // The apiserver away for 30 s: forwarding goes on, status says so; back, the watches
    // resume and a policy applied then is enforced.
    let k8s_state = |lab: &Lab| {
        lab.nodes[0].api("GET", "/healthz", None).expect("healthz")["kubernetes"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(k8s_state(&lab), "Ok");
    lab.cp.as_mut().expect("control plane").stop_apiserver();
    let away = Instant::now();
    let mut checks = 0;
    while away.elapsed() < Duration::from_secs(30) {
        assert!(
            cilium_bpf::testing::tcp_echo_reaches(&lab.pod_ns("curl-pod"), web_b, 8080),
            "forwarding stopped {:?} after the apiserver went away",
            away.elapsed()
        );
        checks += 1;
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(checks >= 5);
    assert_eq!(k8s_state(&lab), "Failure");
    let status = Command::new(sibling("cilium-dbg"))
        .args([
            "-H",
            &format!("unix://{}", lab.nodes[0].socket().display()),
            "status",
        ])
        .output()
        .expect("cilium-dbg");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Kubernetes:") && l.contains("Failure")),
        "{text}"
    );
    lab.cp
        .as_mut()
        .expect("control plane")
        .start_apiserver()
        .unwrap_or_else(|e| panic!("{e}"));
    lab.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: after, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: webpod}}\n  ingress:\n  \
         - fromEndpoints: [{matchLabels: {app: nobody}}]\n",
    );
    // Watches resume after kube-runtime's backoff (at most 30 s).
    assert!(
        !lab.reaches_within("curl-pod", web_b, 8080, false, 60),
        "a policy applied after the apiserver came back is not enforced"
    );
    lab.kubectl(&["delete", "ciliumnetworkpolicy", "after"]);
    assert!(reaches(&lab, "curl-pod", web_b, 8080, true));
    assert_eq!(k8s_state(&lab), "Ok");

    // Deleting a pod (CNI DEL, then the object) removes its endpoint and CiliumEndpoint
    // and frees its IP.
    let out = lab.cni(1, "DEL", "webpod-b");
    assert!(out.success, "DEL: {} {}", out.output, out.stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab
        .kubectl(&["get", "ciliumendpoints", "-o", "name"])
        .contains("webpod-b")
    {
        assert!(
            Instant::now() < deadline,
            "webpod-b's CiliumEndpoint stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        lab.nodes[1]
            .api("GET", "/endpoint/pod-name:default:webpod-b", None)
            .is_err()
    );
    let health = lab.nodes[1].api("GET", "/healthz", None).expect("healthz");
    let allocations = &health["node-state"]["ipam"]["allocations"];
    assert!(allocations.is_object(), "{health}");
    assert!(
        allocations.get(web_b.to_string()).is_none(),
        "{allocations}"
    );
    lab.kubectl(&["delete", "pod", "webpod-b", "--wait=false"]);
}

/// One lab at a time (both use the lab addresses).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// identity-allocation-mode=kvstore under Kubernetes, as Cilium's kvstore mode: the
/// identities in etcd (the same number on both nodes, no CiliumIdentity objects), the rest
/// from the API, and a policy across nodes still knowing the remote pods' identities.
#[test]
fn privileged_kubernetes_with_kvstore_identities() {
    if !is_root_or_skip("privileged_kubernetes_with_kvstore_identities") {
        return;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "etcd is not installed");
        eprintln!("privileged_kubernetes_with_kvstore_identities: skipped: etcd not installed");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(true);
    lab.start_agent(0);
    lab.start_agent(1);
    lab.wait_agent(0);
    lab.wait_agent(1);
    let web_a = lab.add_pod(0, "webpod-a", "webpod");
    let web_b = lab.add_pod(1, "webpod-b", "webpod");
    lab.add_pod(0, "curl-pod", "curl");
    lab.add_pod(1, "other", "other");
    let id = |v: &Value| v["status"]["identity"]["id"].as_u64().expect("identity");
    let (a, b) = (cep(&lab, "webpod-a"), cep(&lab, "webpod-b"));
    assert_eq!(id(&a), id(&b), "one label set, one number on both nodes");
    let ids = lab.kubectl(&["get", "ciliumidentities", "-o", "name"]);
    assert!(
        ids.trim().is_empty(),
        "CiliumIdentities in kvstore mode: {ids}"
    );
    let log = lab.nodes[0].log();
    assert!(log.contains("identity-allocation-mode=kvstore"), "{log}");
    cilium_bpf::testing::tcp_echo_server(&lab.pod_ns("webpod-a"), web_a, 8080);
    cilium_bpf::testing::tcp_echo_server(&lab.pod_ns("webpod-b"), web_b, 8080);
    assert!(
        reaches(&lab, "curl-pod", web_b, 8080, true),
        "curl-pod (w1) -> webpod-b (w2)"
    );
    lab.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web, namespace: default}\n\
         spec:\n  endpointSelector: {matchLabels: {app: webpod}}\n  ingress:\n  \
         - fromEndpoints: [{matchLabels: {app: curl}}]\n",
    );
    assert!(
        !reaches(&lab, "other", web_a, 8080, false),
        "other (w2) -> webpod-a (w1) still allowed"
    );
    assert!(
        reaches(&lab, "curl-pod", web_b, 8080, true),
        "curl-pod (w1) -> webpod-b (w2) denied: the remote identity's labels are unknown"
    );
}
