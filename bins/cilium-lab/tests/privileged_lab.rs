// SPDX-License-Identifier: Apache-2.0

//! The seed scenario end to end, through the cilium-lab binary and the pinned kubectl as a
//! user runs them: `up` (three nodes, the Kubernetes control plane, the operator, a
//! kubelet and an agent per node), `kubectl apply` of the seed's manifest verbatim, then
//! the checks of the multi-node issue: three CiliumNodes with distinct /24s of
//! 172.20.0.0/16, every pod inside its node's CIDR, one identity for both webpod replicas
//! and another for curl-pod (>= 256), host (1) and health (4) identities listed, `kubectl
//! exec curl-pod -- curl webpod` 20 times reaching both replicas, a policy that denies
//! curl-pod -> webpod and its removal, and `down` leaving no namespace, mount, process or
//! file behind. Needs root; the lab uses its own directory and prefix, and is taken down
//! on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cilium_bpf::testing::is_root_or_skip;
use serde_json::Value;

/// One lab at a time (they are heavy on a 2-core machine).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Guard {
    lab: cilium_lab::lab::Lab,
}

impl Guard {
    fn new(tag: &str) -> Guard {
        Guard {
            lab: cilium_lab::lab::Lab::for_test(
                tag,
                std::path::Path::new(env!("CARGO_BIN_EXE_cilium-lab")),
            ),
        }
    }

    /// `up` and the seed's manifest.
    fn seed(&self) {
        self.seed_with(&[]);
    }

    /// `up` with more arguments, and the seed's manifest.
    fn seed_with(&self, up: &[&str]) {
        let mut args = vec!["up"];
        args.extend(up);
        let (ok, out) = lab_cmd(self, &args);
        assert!(ok, "up: {out}");
        let manifest = self.lab.dir.join("seed.yaml");
        std::fs::write(&manifest, cilium_lab::manifest::SEED).expect("manifest");
        let (ok, out) = lab_cmd(self, &["apply", "-f", manifest.to_str().expect("utf-8")]);
        assert!(ok, "apply: {out}");
        let (ok, out) = lab_cmd(
            self,
            &[
                "kubectl",
                "wait",
                "--for=condition=Ready",
                "pod",
                "--all",
                "--timeout=120s",
            ],
        );
        assert!(ok, "the seed's pods Ready: {out}");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.lab.dir.exists() {
            let _ = self.lab.down();
        }
    }
}

/// A finished command's success and its output (stdout, then stderr).
fn outcome(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn lab_cmd(guard: &Guard, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cilium-lab"))
        .args(args)
        .env("CILIUM_LAB_DIR", &guard.lab.dir)
        .env("CILIUM_LAB_PREFIX", &guard.lab.prefix)
        .output()
        .expect("run cilium-lab");
    outcome(&out)
}

fn json_items(guard: &Guard, kind: &str) -> Vec<Value> {
    json_items_in(guard, kind, "default")
}

fn json_items_in(guard: &Guard, kind: &str, namespace: &str) -> Vec<Value> {
    let (ok, out) = lab_cmd(guard, &["get", kind, "-n", namespace, "-o", "json"]);
    assert!(ok, "get {kind}: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{kind}: {e}: {out}"));
    v["items"].as_array().cloned().unwrap_or_default()
}

/// `curl webpod` from curl-pod; the Hostname line, if it answered.
fn curl_webpod(guard: &Guard) -> Option<String> {
    let (ok, out) = lab_cmd(
        guard,
        &[
            "exec",
            "curl-pod",
            "--",
            "curl",
            "-s",
            "--max-time",
            "3",
            "webpod",
        ],
    );
    if !ok {
        return None;
    }
    out.lines()
        .find_map(|l| l.strip_prefix("Hostname: "))
        .map(str::to_owned)
}

/// A command that serves until stopped, in the background (killed by pid on drop), and the
/// first line it printed.
struct Background {
    child: std::process::Child,
    line: String,
}

impl Background {
    fn start(mut cmd: Command) -> Background {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the first line");
        Background { child, line }
    }

    /// The first `http://` word of the first line (`localhost` as 127.0.0.1, where the
    /// forwarders listen).
    fn url(&self) -> String {
        self.line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {:?}", self.line))
            .replace("localhost", "127.0.0.1")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `cilium` CLI's command on the lab's kubeconfig.
fn cilium_command(guard: &Guard, args: &[&str]) -> Command {
    let cilium = guard.lab.bin_dir.join("cilium");
    assert!(cilium.exists(), "{} (cargo build --bins)", cilium.display());
    let mut cmd = Command::new(cilium);
    cmd.args(args).env("KUBECONFIG", guard.lab.kubeconfig());
    cmd
}

/// A Hubble UI forwarder in the background (`cilium hubble ui`, or `cilium-lab
/// hubble-ui`), for headless Chromium.
struct UiForward {
    _forwarder: Background,
    url: String,
    dir: PathBuf,
}

impl UiForward {
    /// `cilium hubble ui --port-forward 0 --open-browser=false`: through the API's
    /// port-forward to the hubble-ui Service's pod.
    fn start(guard: &Guard) -> UiForward {
        let cmd = cilium_command(
            guard,
            &[
                "hubble",
                "ui",
                "--port-forward",
                "0",
                "--open-browser=false",
            ],
        );
        UiForward::with(guard, cmd)
    }

    /// `cilium-lab hubble-ui --port 0`: straight to the UI's socket on the relay's node.
    fn start_lab(guard: &Guard) -> UiForward {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cilium-lab"));
        cmd.args(["hubble-ui", "--port", "0"])
            .env("CILIUM_LAB_DIR", &guard.lab.dir)
            .env("CILIUM_LAB_PREFIX", &guard.lab.prefix);
        UiForward::with(guard, cmd)
    }

    fn with(guard: &Guard, cmd: Command) -> UiForward {
        let forwarder = Background::start(cmd);
        let url = forwarder.url();
        let dir = guard.lab.dir.with_extension("ui");
        std::fs::create_dir_all(&dir).expect("ui dir");
        UiForward {
            _forwarder: forwarder,
            url,
            dir,
        }
    }

    /// The page's DOM and a screenshot, as headless Chromium renders them.
    fn render(&self) -> (String, hubble_relay::browser::Image) {
        let render = hubble_relay::browser::Render::default();
        let dom = hubble_relay::browser::dump_dom(&self.url, render).expect("dump the DOM");
        let png = self.dir.join("map.png");
        hubble_relay::browser::screenshot(&self.url, render, &png).expect("screenshot");
        (
            dom,
            hubble_relay::browser::Image::open(&png).expect("decode"),
        )
    }
}

impl Drop for UiForward {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn privileged_lab_runs_the_seed() {
    if !is_root_or_skip("privileged_lab_runs_the_seed") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let guard = Guard::new("l");
    let prefix = guard.lab.prefix.clone();
    guard.seed();
    let (ok, out) = lab_cmd(&guard, &["up"]);
    assert!(!ok && out.contains("already up"), "a second up: {out}");

    // Three CiliumNodes, distinct /24s of the pool.
    let pool: ipnet::Ipv4Net = "172.20.0.0/16".parse().unwrap();
    let mut cidr_of: BTreeMap<String, ipnet::Ipv4Net> = BTreeMap::new();
    for n in json_items(&guard, "ciliumnodes") {
        let cidr: ipnet::Ipv4Net = n["spec"]["ipam"]["podCIDRs"][0]
            .as_str()
            .expect("a pod CIDR")
            .parse()
            .expect("CIDR");
        assert!(pool.contains(&cidr) && cidr.prefix_len() == 24, "{cidr}");
        cidr_of.insert(n["metadata"]["name"].as_str().unwrap().to_owned(), cidr);
    }
    assert_eq!(cidr_of.len(), 3);
    assert_eq!(cidr_of.values().collect::<BTreeSet<_>>().len(), 3);

    // Every pod inside its node's CIDR; the replicas on the two workers.
    let pods = json_items(&guard, "pods");
    assert_eq!(pods.len(), 3);
    let curl_ip = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "curl-pod")
        .and_then(|p| p["status"]["podIP"].as_str())
        .expect("curl-pod's IP")
        .to_owned();
    let mut replicas = Vec::new();
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap();
        let ip: std::net::Ipv4Addr = p["status"]["podIP"].as_str().unwrap().parse().unwrap();
        assert!(
            cidr_of[node].contains(&ip),
            "{ip} not in {node}'s {}",
            cidr_of[node]
        );
        let name = p["metadata"]["name"].as_str().unwrap().to_owned();
        if name.starts_with("webpod-") {
            replicas.push((name, node.to_owned()));
        } else {
            assert_eq!((name.as_str(), node), ("curl-pod", "k8s-ctr"));
        }
    }
    assert_eq!(replicas.len(), 2);
    assert_ne!(replicas[0].1, replicas[1].1, "the replicas share a node");

    // Identities.
    let id_of: BTreeMap<String, u64> = json_items(&guard, "ciliumendpoints")
        .iter()
        .map(|e| {
            (
                e["metadata"]["name"].as_str().unwrap().to_owned(),
                e["status"]["identity"]["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(id_of.len(), 3, "{id_of:?}");
    assert_eq!(id_of[&replicas[0].0], id_of[&replicas[1].0]);
    assert_ne!(id_of["curl-pod"], id_of[&replicas[0].0]);
    assert!(id_of.values().all(|id| *id >= 256));
    let (ok, out) = lab_cmd(
        &guard,
        &["dbg", "k8s-ctr", "identity", "list", "-o", "json"],
    );
    assert!(ok, "{out}");
    let ids: Vec<Value> = serde_json::from_str(&out).expect("json");
    // Cilium's identity models: numeric ids.
    let listed: BTreeSet<u64> = ids.iter().filter_map(|i| i["id"].as_u64()).collect();
    assert!(listed.contains(&1) && listed.contains(&4), "{listed:?}");

    // The seed's views, through kubectl: CiliumEndpoints with their columns, and every
    // agent's endpoint list through `kubectl exec` into the DaemonSet's pods.
    let (ok, out) = lab_cmd(&guard, &["kubectl", "get", "ciliumendpoints", "-o", "wide"]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SECURITY",
            "IDENTITY",
            "INGRESS",
            "ENFORCEMENT",
            "EGRESS",
            "ENFORCEMENT",
            "ENDPOINT",
            "STATE",
            "IPV4",
            "IPV6"
        ],
        "{out}"
    );
    assert!(out.contains("curl-pod") && out.contains(&curl_ip), "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "get",
            "pods",
            "-n",
            "kube-system",
            "-l",
            "k8s-app=cilium",
            "-o",
            "name",
        ],
    );
    assert!(ok, "{out}");
    let agents: Vec<&str> = out.lines().collect();
    assert_eq!(agents.len(), 3, "{out}");
    let mut listed_ips = BTreeSet::new();
    for pod in agents.iter().copied() {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "kubectl",
                "exec",
                "-n",
                "kube-system",
                pod,
                "-c",
                "cilium-agent",
                "--",
                "cilium-dbg",
                "endpoint",
                "list",
            ],
        );
        assert!(ok && out.contains("ENDPOINT"), "{pod}: {out}");
        listed_ips.extend(
            pods.iter()
                .filter_map(|p| p["status"]["podIP"].as_str())
                .filter(|ip| out.contains(ip))
                .map(str::to_owned),
        );
    }
    assert_eq!(
        listed_ips.len(),
        3,
        "every pod is some agent's endpoint: {listed_ips:?}"
    );
    // The node's own processes reach services: the agent's container is hostNetwork, so
    // its processes are in the node's cgroup, where socket LB sends a connection to a
    // ClusterIP straight to a backend (the nodes have no route for the service range).
    let (ok, vip) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "get",
            "service",
            "webpod",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert!(ok, "{vip}");
    let in_agent = |args: &[&str]| {
        let mut argv = vec![
            "kubectl",
            "exec",
            "-n",
            "kube-system",
            agents[0],
            "-c",
            "cilium-agent",
            "--",
        ];
        argv.extend(args);
        lab_cmd(&guard, &argv)
    };
    let url = format!("http://{}/", vip.trim());
    let (ok, out) = in_agent(&["curl", "-s", "--max-time", "3", &url]);
    assert!(ok && out.contains("Hostname: webpod-"), "{url}: {out}");
    let (ok, out) = in_agent(&["cilium-dbg", "status", "--verbose"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.trim_start().starts_with("Socket LB:") && l.ends_with("Enabled")),
        "{out}"
    );

    // curl webpod, 20 times: both replicas answer.
    let mut seen = BTreeMap::new();
    for _ in 0..20 {
        let host = curl_webpod(&guard).expect("curl webpod answered");
        *seen.entry(host).or_insert(0) += 1;
    }
    let names: BTreeSet<&String> = seen.keys().collect();
    let want: BTreeSet<&String> = replicas.iter().map(|(n, _)| n).collect();
    assert_eq!(names, want, "{seen:?}");
    // Every pod has its own host name, its processes and exec'd commands alike.
    let (ok, out) = lab_cmd(&guard, &["exec", "curl-pod", "--", "hostname"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "curl-pod");

    // Hubble through the relay: all three nodes connected; curl-pod's flows seen on every
    // node with both ends named (remote pods too), its replies marked as replies, and a
    // server-side filter giving exactly what filtering the whole set gives.
    let (ok, out) = lab_cmd(&guard, &["hubble", "status"]);
    assert!(ok && out.contains("Connected Nodes: 3/3"), "{out}");
    let (ok, out) = lab_cmd(&guard, &["hubble", "list", "nodes"]);
    assert!(ok, "{out}");
    let connected: BTreeSet<&str> = out
        .lines()
        .filter(|l| l.contains("\tConnected\t"))
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(
        connected,
        BTreeSet::from(["k8s-ctr", "k8s-w1", "k8s-w2"]),
        "{out}"
    );
    node_hubble_requires_mutual_tls(&guard);
    let observe = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["hubble", "observe", "--last", "20000", "-o", "json"];
        all.extend(args);
        let (ok, out) = lab_cmd(&guard, &all);
        assert!(ok, "{args:?}: {out}");
        out.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter_map(|v| v.get("flow").cloned())
            .collect()
    };
    let from_curl = observe(&["--from-pod", "default/curl-pod"]);
    let nodes: BTreeSet<&str> = from_curl
        .iter()
        .filter_map(|f| f["node_name"].as_str())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["k8s-ctr", "k8s-w1", "k8s-w2"]));
    assert!(
        from_curl.iter().any(|f| f["node_name"] == "k8s-ctr"
            && f["destination"]["pod_name"]
                .as_str()
                .is_some_and(|p| p.starts_with("webpod-"))
            && f["destination"]["identity"].as_u64() == Some(id_of[&replicas[0].0])),
        "k8s-ctr names the remote webpods"
    );
    let to_curl = observe(&["--to-pod", "default/curl-pod"]);
    assert!(!to_curl.is_empty());
    assert!(
        to_curl.iter().all(|f| f["is_reply"] == true),
        "everything to curl-pod is a reply: {:?}",
        to_curl.iter().find(|f| f["is_reply"] != true)
    );
    // Replies from the ClusterIP name the Service (server-side filter on it, too).
    let from_service = observe(&["--from-service", "default/webpod"]);
    assert!(
        !from_service.is_empty(),
        "replies from the webpod ClusterIP"
    );
    assert!(
        from_service.iter().all(|f| f["source_service"]
            == serde_json::json!({"name": "webpod", "namespace": "default"})
            && f["destination"]["pod_name"] == "curl-pod"),
        "{from_service:?}"
    );
    let everything = observe(&[]);
    let key = |f: &Value| {
        format!(
            "{}|{}|{}",
            f["time"], f["node_name"], f["trace_observation_point"]
        )
    };
    let want: BTreeSet<String> = everything
        .iter()
        .filter(|f| {
            f["source"]["pod_name"] == "curl-pod"
                && f["source"]["namespace"] == "default"
                && f["l4"]["TCP"]["destination_port"] == 80
        })
        .map(key)
        .collect();
    let got: BTreeSet<String> = observe(&[
        "--from-pod",
        "default/curl-pod",
        "--to-port",
        "80",
        "--protocol",
        "tcp",
    ])
    .iter()
    .map(key)
    .collect();
    assert!(!want.is_empty());
    assert_eq!(
        got, want,
        "the relay's filtered flows are exactly the matching ones"
    );

    // The Hubble UI, as a browser draws it through `cilium hubble ui` (the API's
    // port-forward to the kubelet of the relay's node): curl and webpod (both replicas) on
    // the map, joined by a green edge, their boxes painted.
    let ui = UiForward::start(&guard);
    let (dom, image) = ui.render();
    let workloads = hubble_relay::browser::elements(&dom, "<g class=\"workload\"");
    let by_name: BTreeMap<&str, &BTreeMap<String, String>> = workloads
        .iter()
        .map(|w| (w["data-name"].as_str(), w))
        .collect();
    assert_eq!(by_name["curl"]["data-pods"], "curl-pod", "{dom}");
    let web_pods: BTreeSet<&str> = by_name["webpod"]["data-pods"].split(' ').collect();
    assert_eq!(
        web_pods,
        replicas
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<BTreeSet<_>>()
    );
    for name in ["curl", "webpod"] {
        let share = image.share_in_box(
            &by_name[name]["data-page-box"],
            hubble_relay::ui::WORKLOAD_FILL,
        );
        assert!(share > 0.5, "{name}'s box is painted ({share})");
    }
    let edges = hubble_relay::browser::elements(&dom, "<line class=\"edge");
    assert!(
        edges.iter().any(|e| e["data-from"] == "curl"
            && e["data-to"] == "webpod"
            && e["data-dropped"] == "false"),
        "{edges:?}"
    );
    assert_eq!(
        image.count(hubble_relay::ui::DROPPED_EDGE),
        0,
        "no red before the policy"
    );

    // A policy that lets only app=other reach webpod denies curl-pod; removing it restores.
    let policy = guard.lab.dir.join("deny.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: webpod-from-other\nspec:\n  endpointSelector:\n    matchLabels:\n      app: webpod\n  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: other\n",
    )
    .unwrap();
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", policy.to_str().unwrap()]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl_webpod(&guard).is_some() {
        assert!(Instant::now() < deadline, "the policy never took effect");
    }
    // Hubble on each replica's node: curl-pod's connections, forwarded before the policy,
    // dropped with "Policy denied" after it; with identities.
    let mut forwarded = 0;
    let mut denied = 0;
    for (_, node) in &replicas {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "hubble",
                "--node",
                node,
                "observe",
                "--last",
                "500",
                "--from-ip",
                &curl_ip,
                "-o",
                "json",
            ],
        );
        assert!(ok, "{out}");
        for line in out.lines() {
            let f: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let f = &f["flow"];
            assert_eq!(
                f["source"]["identity"].as_u64(),
                Some(id_of["curl-pod"]),
                "{f}"
            );
            if f["verdict"] == "FORWARDED"
                && f["destination"]["pod_name"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("webpod-"))
            {
                forwarded += 1;
            }
            if f["verdict"] == "DROPPED" && f["drop_reason_desc"] == "POLICY_DENIED" {
                assert_eq!(
                    f["destination"]["identity"].as_u64(),
                    Some(id_of[&replicas[0].0]),
                    "{f}"
                );
                denied += 1;
            }
        }
    }
    assert!(
        forwarded > 0 && denied > 0,
        "forwarded {forwarded}, denied {denied}"
    );
    // The compact lines, as `hubble observe` prints them, on whichever node dropped it.
    let compact: String = replicas
        .iter()
        .map(|(_, node)| {
            let args = [
                "hubble",
                "--node",
                node,
                "observe",
                "--last",
                "500",
                "--verdict",
                "DROPPED",
                "--from-ip",
                &curl_ip,
            ];
            lab_cmd(&guard, &args).1
        })
        .collect();
    assert!(compact.contains("Policy denied DROPPED"), "{compact}");
    // The relay has the drops too, and the UI's edge turns red.
    let dropped = observe(&[
        "--drop-reason-desc",
        "POLICY_DENIED",
        "--from-pod",
        "default/curl-pod",
    ]);
    assert!(
        !dropped.is_empty()
            && dropped
                .iter()
                .all(|f| f["verdict"] == "DROPPED" && f["drop_reason_desc"] == "POLICY_DENIED"),
        "{dropped:?}"
    );
    let (dom, image) = ui.render();
    let edges = hubble_relay::browser::elements(&dom, "<line class=\"edge");
    assert!(
        edges.iter().any(|e| e["data-from"] == "curl"
            && e["data-to"] == "webpod"
            && e["data-dropped"] == "true"),
        "{edges:?}"
    );
    assert!(
        image.count(hubble_relay::ui::DROPPED_EDGE) > 100,
        "the edge is red"
    );
    drop(ui);
    // The same map through the lab's own forwarder (the UI's socket on the relay's node).
    let (dom, _) = UiForward::start_lab(&guard).render();
    assert!(
        hubble_relay::browser::elements(&dom, "<line class=\"edge")
            .iter()
            .any(|e| e["data-from"] == "curl" && e["data-to"] == "webpod"),
        "{dom}"
    );
    let (ok, out) = lab_cmd(&guard, &["delete", "-f", policy.to_str().unwrap()]);
    assert!(ok && out.contains("deleted"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl_webpod(&guard).is_none() {
        assert!(
            Instant::now() < deadline,
            "curl never recovered after the policy went"
        );
    }

    // A networking.k8s.io NetworkPolicy, applied and deleted with kubectl: only app=other
    // may reach webpod, then everyone again.
    let netpol = guard.lab.dir.join("netpol.yaml");
    std::fs::write(
        &netpol,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: webpod-from-other\nspec:\n  podSelector:\n    matchLabels:\n      app: webpod\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: other\n",
    )
    .unwrap();
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", netpol.to_str().unwrap()]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl_webpod(&guard).is_some() {
        assert!(
            Instant::now() < deadline,
            "the NetworkPolicy never took effect"
        );
    }
    let (ok, out) = lab_cmd(&guard, &["delete", "-f", netpol.to_str().unwrap()]);
    assert!(ok && out.contains("deleted"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl_webpod(&guard).is_none() {
        assert!(
            Instant::now() < deadline,
            "curl never recovered after the NetworkPolicy went"
        );
    }

    // kubectl scale to 6 and back to 2: the endpoints follow, curl reaches every replica,
    // and no IP or endpoint is left of the ones that went.
    let (ok, out) = lab_cmd(
        &guard,
        &["kubectl", "scale", "deployment", "webpod", "--replicas=6"],
    );
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "rollout",
            "status",
            "deployment/webpod",
            "--timeout=120s",
        ],
    );
    assert!(ok, "{out}");
    let six: BTreeSet<String> = pods_by_name(&guard)
        .into_keys()
        .filter(|n| n.starts_with("webpod-"))
        .collect();
    assert_eq!(six.len(), 6, "{six:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = BTreeSet::new();
    while answered != six {
        assert!(
            Instant::now() < deadline,
            "only {answered:?} of {six:?} answered"
        );
        answered.extend(curl_webpod(&guard));
    }
    let (ok, out) = lab_cmd(
        &guard,
        &["kubectl", "scale", "deployment", "webpod", "--replicas=2"],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = pods_by_name(&guard);
        let ceps: BTreeSet<String> = json_items(&guard, "ciliumendpoints")
            .iter()
            .filter_map(|e| e["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let endpoints: usize = state_endpoints(&guard);
        if pods.len() == 3 && ceps.len() == 3 && endpoints == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after scaling down: pods {:?}, CEPs {ceps:?}, agent endpoints {endpoints}",
            pods.keys().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A deleted replica comes back as a new pod with a new IP.
    let pods = pods_by_name(&guard);
    let (victim, old) = pods
        .iter()
        .find(|(n, _)| n.starts_with("webpod-"))
        .map(|(n, p)| {
            (
                n.clone(),
                p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .expect("a replica");
    let (ok, out) = lab_cmd(&guard, &["kubectl", "delete", "pod", &victim]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "rollout",
            "status",
            "deployment/webpod",
            "--timeout=60s",
        ],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = pods_by_name(&guard);
        let fresh: Vec<(&String, &Value)> = pods
            .iter()
            .filter(|(n, p)| {
                n.starts_with("webpod-") && !six.contains(*n) && p["status"]["podIP"].is_string()
            })
            .collect();
        if pods.len() == 3 && !pods.contains_key(&victim) && fresh.len() == 1 {
            assert_ne!(fresh[0].1["status"]["podIP"], Value::from(old.clone()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new replica: {:?}",
            pods.keys().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The cluster CLI on the lab's kubeconfig: status, config view, config set (the agents
    // restart and come back with the new setting), a value it does not know.
    let (ok, out) = cilium_cmd(&guard, &["status", "--wait", "--wait-duration", "2m"]);
    assert!(ok, "cilium status: {out}");
    for line in [
        "Cilium:             OK",
        "Operator:           OK",
        "Hubble Relay:       OK",
        "DaemonSet              cilium                   Desired: 3, Ready: 3/3, Available: 3/3",
        "Cluster Pods:          3/3 managed by Cilium",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let (ok, out) = cilium_cmd(&guard, &["status", "-o", "json"]);
    assert!(ok, "{out}");
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["ok"], true, "{status}");
    // `cilium hubble port-forward`: the relay's Observer API on a local port, through the
    // API's port-forward (a WebSocket the apiserver passes to the relay node's kubelet);
    // the hubble CLI reads the cluster's flows there, one connection each.
    let forward = Background::start(cilium_command(
        &guard,
        &["hubble", "port-forward", "--port-forward", "0"],
    ));
    let server = forward
        .line
        .trim()
        .strip_prefix("ℹ️  Hubble Relay is available at ")
        .unwrap_or_else(|| panic!("{:?}", forward.line))
        .to_owned();
    let hubble = |args: &[&str]| {
        let out = Command::new(guard.lab.bin_dir.join("hubble"))
            .arg(format!("--server={server}"))
            .args(args)
            .output()
            .expect("run hubble");
        outcome(&out)
    };
    let (ok, out) = hubble(&["status"]);
    assert!(ok && out.contains("Connected Nodes: 3/3"), "{out}");
    assert!(curl_webpod(&guard).is_some(), "curl webpod");
    let (ok, out) = hubble(&[
        "observe",
        "--last",
        "50",
        "--from-pod",
        "default/curl-pod",
        "-o",
        "json",
    ]);
    assert!(ok, "{out}");
    let flows: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter_map(|v| v.get("flow").cloned())
        .collect();
    assert!(
        !flows.is_empty() && flows.iter().all(|f| f["source"]["pod_name"] == "curl-pod"),
        "{out}"
    );
    drop(forward);
    let (ok, out) = cilium_cmd(&guard, &["config", "view"]);
    assert!(ok, "{out}");
    for (key, value) in [
        ("routing-mode", "native"),
        ("kube-proxy-replacement", "true"),
        ("ipv4-native-routing-cidr", "172.20.0.0/16"),
        ("enable-bpf-masquerade", "true"),
        ("debug", "false"),
    ] {
        assert!(
            out.lines().any(|l| l.split_whitespace().eq([key, value])),
            "{key} {value} in {out}"
        );
    }
    let agents_before: Vec<String> = pods_by_name_in(&guard, "kube-system")
        .into_keys()
        .filter(|n| n.starts_with("cilium-") && !n.starts_with("cilium-operator"))
        .collect();
    let (ok, out) = cilium_cmd(&guard, &["config", "set", "debug", "true"]);
    assert!(ok && out.contains("Restarted Cilium pods"), "{out}");
    let (ok, out) = cilium_cmd(&guard, &["status", "--wait", "--wait-duration", "2m"]);
    assert!(ok, "the agents come back: {out}");
    let agents_after: Vec<String> = pods_by_name_in(&guard, "kube-system")
        .into_keys()
        .filter(|n| n.starts_with("cilium-") && !n.starts_with("cilium-operator"))
        .collect();
    assert_eq!(agents_after.len(), 3, "{agents_after:?}");
    assert!(
        agents_after.iter().all(|a| !agents_before.contains(a)),
        "new agent pods: {agents_before:?} -> {agents_after:?}"
    );
    for agent in &agents_after {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "exec",
                "-n",
                "kube-system",
                agent,
                "-c",
                "cilium-agent",
                "--",
                "cilium-dbg",
                "config",
            ],
        );
        assert!(
            ok && out
                .lines()
                .any(|l| l.starts_with("Debug") && l.ends_with("Enabled")),
            "{agent}: {out}"
        );
    }
    assert!(
        curl_webpod(&guard).is_some(),
        "curl webpod after the restart"
    );
    let (ok, out) = cilium_cmd(
        &guard,
        &["config", "set", "debug", "true", "--restart=false"],
    );
    assert!(ok && !out.contains("Restarted"), "{out}");
    let (ok, out) = cilium_cmd(&guard, &["upgrade", "--set", "bpf.masquerad=true"]);
    assert!(
        !ok && out.contains("unknown value \"bpf.masquerad\" (did you mean \"bpf.masquerade\"?)"),
        "{out}"
    );
    let (ok, out) = cilium_cmd(&guard, &["install"]);
    assert!(!ok && out.contains("already installed"), "{out}");
    // A sysdump: the objects, every component's logs, each agent's cilium-dbg output.
    let dump_dir = guard.lab.dir.join("sysdump");
    std::fs::create_dir_all(&dump_dir).unwrap();
    let out = Command::new(guard.lab.bin_dir.join("cilium"))
        .args(["sysdump", "--output-filename", "dump-<ts>"])
        .env("KUBECONFIG", guard.lab.kubeconfig())
        .current_dir(&dump_dir)
        .output()
        .expect("cilium sysdump");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(", 0 errors)"),
        "{text}"
    );
    let tarball = std::fs::read_dir(&dump_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("the tarball");
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for agent in &agents_after {
        for file in [
            format!("cilium-dbg-endpoint-list-{agent}.txt"),
            format!("cilium-dbg-bpf-lb-list-{agent}.txt"),
            format!("logs-{agent}-cilium-agent.log"),
        ] {
            assert!(listing.contains(&file), "{file} in {listing}");
        }
    }
    for file in [
        "ciliumnodes.yaml",
        "ciliumendpoints.yaml",
        "cilium-configmaps.yaml",
    ] {
        assert!(listing.contains(file), "{file} in {listing}");
    }

    // `cilium upgrade` rotates Hubble's certificates as the chart's helm method does: new
    // leaf certificates from the kept CA; the agents and the relay restart onto them and
    // the relay reaches every node again over mutual TLS.
    let server_cert = secret_text(&guard, "hubble-server-certs", "tls.crt");
    let ca_cert = secret_text(&guard, "cilium-ca", "ca.crt");
    let (ok, out) = cilium_cmd(&guard, &["upgrade", "--wait"]);
    assert!(ok, "upgrade: {out}");
    assert_ne!(
        secret_text(&guard, "hubble-server-certs", "tls.crt"),
        server_cert
    );
    assert_eq!(secret_text(&guard, "cilium-ca", "ca.crt"), ca_cert);
    assert_eq!(
        secret_text(&guard, "hubble-server-certs", "ca.crt"),
        ca_cert
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, out) = lab_cmd(&guard, &["hubble", "status"]);
        if ok && out.contains("Connected Nodes: 3/3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay after the rotation: {out}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // down leaves nothing behind.
    let state = guard.lab.require().expect("state");
    let cp = state.control_plane.clone().expect("the control plane");
    let mut pids: Vec<u32> = state
        .nodes
        .iter()
        .map(|n| n.kubelet_pid)
        .chain([state.forward_pid])
        .chain([cp.etcd, cp.apiserver, cp.controller_manager, cp.scheduler])
        .flatten()
        .collect();
    assert_eq!(
        pids.len(),
        8,
        "kubelets, forwarder, control plane: {pids:?}"
    );
    for n in &state.nodes {
        let pods = cilium_lab::kubelet::runtime::RuntimeState::load(&n.kubelet_dir).expect("pods");
        pids.extend(
            pods.pods
                .values()
                .flat_map(|p| p.containers.iter().filter_map(|c| c.pid)),
        );
    }
    // Three agents, two operators (the chart's default), hubble-relay, curl-pod and two
    // replicas.
    assert_eq!(pids.len(), 17, "{pids:?}");
    let (ok, out) = lab_cmd(&guard, &["down"]);
    assert!(ok, "down: {out}");
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!netns.contains(&prefix), "namespaces left: {netns}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&prefix), "mounts left");
    let cgroup = std::path::Path::new("/sys/fs/cgroup/unified").join(&prefix);
    assert!(!cgroup.exists(), "{} left", cgroup.display());
    // Gone, or dead and waiting to be reaped by init.
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "process {pid} left: {}",
                String::from_utf8_lossy(&cmdline)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(!guard.lab.dir.exists());
    let etc = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or(false);
    assert!(!etc, "/etc/netns entries left");
}

/// A child process killed (by its pid) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many endpoints the agents hold, over every node (pods and the health endpoints not
/// counted: those of pods only, by their pod name).
fn state_endpoints(guard: &Guard) -> usize {
    let state = guard.lab.require().expect("state");
    state
        .nodes
        .iter()
        .map(|n| {
            let (ok, out) = lab_cmd(guard, &["dbg", &n.name, "endpoint", "list", "-o", "json"]);
            assert!(ok, "{out}");
            let eps: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
            eps.iter()
                .filter(|e| {
                    e.to_string()
                        .contains("k8s:io.kubernetes.pod.namespace=default")
                })
                .count()
        })
        .sum()
}

/// Waits (up to `secs`) until a node's `cilium-dbg status` says `Kubernetes: <want>`.
fn wait_kubernetes_status(guard: &Guard, node: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, status) = lab_cmd(guard, &["dbg", node, "status"]);
        if status
            .lines()
            .any(|l| l.starts_with("Kubernetes:") && l.contains(want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} never said Kubernetes: {want}: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pods_by_name_in(guard: &Guard, namespace: &str) -> BTreeMap<String, Value> {
    json_items_in(guard, "pods", namespace)
        .into_iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_owned(), p))
        .collect()
}

/// `cilium install --wait` with the lab's (the seed's) Helm values.
fn cilium_install_seed(guard: &Guard) -> (bool, String) {
    let mut install = vec!["install".to_owned()];
    for v in cilium_lab::lab::seed_values(false) {
        install.push("--set".into());
        install.push(v);
    }
    install.extend(["--wait".into(), "--wait-duration".into(), "3m".into()]);
    let args: Vec<&str> = install.iter().map(String::as_str).collect();
    cilium_cmd(guard, &args)
}

/// The `cilium` CLI (built next to cilium-lab) on the lab's kubeconfig: (success, output).
fn cilium_cmd(guard: &Guard, args: &[&str]) -> (bool, String) {
    let out = cilium_command(guard, args).output().expect("run cilium");
    outcome(&out)
}

fn pods_by_name(guard: &Guard) -> BTreeMap<String, Value> {
    pods_by_name_in(guard, "default")
}

#[test]
fn privileged_lab_survives_faults() {
    if !is_root_or_skip("privileged_lab_survives_faults") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let guard = Guard::new("f");
    // Small Hubble rings, so that a bounded flood overruns them; every packet reported
    // (at the chart's `medium` aggregation a ping flood is one flow, reported once per
    // interval).
    let config = guard.lab.dir.with_extension("config.yaml");
    std::fs::write(
        &config,
        "hubble-event-buffer-capacity: \"63\"\nmonitor-aggregation: none\n",
    )
    .unwrap();
    guard.seed_with(&["--config", config.to_str().unwrap()]);
    let _ = std::fs::remove_file(&config);
    // Before the faults webpod answers (within a few tries: CI runs the other labs' tests
    // beside this one, and a first curl once took longer than its 3 s there).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut tries = 1;
    while curl_webpod(&guard).is_none() {
        assert!(
            Instant::now() < deadline,
            "curl webpod before the faults ({tries} tries)"
        );
        tries += 1;
    }
    eprintln!("curl webpod answered on try {tries}");

    // A flood of events beyond the ring's capacity: a follower of k8s-ctr's flows is told
    // it lost events, and Hubble keeps serving.
    let follower = Command::new(env!("CARGO_BIN_EXE_cilium-lab"))
        .args([
            "hubble", "--node", "k8s-ctr", "observe", "--follow", "-o", "json",
        ])
        .env("CILIUM_LAB_DIR", &guard.lab.dir)
        .env("CILIUM_LAB_PREFIX", &guard.lab.prefix)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hubble observe --follow");
    let mut follower = KillOnDrop(follower);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follower.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let web_ip = pods_by_name(&guard)
        .iter()
        .find(|(n, _)| n.starts_with("webpod-"))
        .and_then(|(_, p)| p["status"]["podIP"].as_str().map(str::to_owned))
        .expect("a webpod IP");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "exec", "curl-pod", "--", "ping", "-f", "-q", "-c", "3000", "-w", "15", &web_ip,
        ],
    );
    assert!(ok, "ping flood: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lost = None;
    while lost.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500))
            && line.contains("\"lost_events\"")
        {
            lost = Some(line);
        }
    }
    let lost = lost.expect("the follower was told it lost events");
    let lost: Value = serde_json::from_str(&lost).unwrap();
    assert!(
        lost["lost_events"]["num_events_lost"].as_u64().unwrap() > 0,
        "{lost}"
    );
    drop(follower);
    let (ok, out) = lab_cmd(&guard, &["hubble", "status"]);
    assert!(ok && out.contains("Connected Nodes: 3/3"), "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "hubble", "--node", "k8s-ctr", "observe", "--last", "5", "-o", "json",
        ],
    );
    assert!(
        ok && out.lines().filter(|l| l.contains("\"flow\"")).count() == 5,
        "{out}"
    );

    // The apiserver away for 30 s: forwarding goes on, the agents say so, and resync
    // after.
    let (ok, out) = lab_cmd(&guard, &["apiserver", "stop"]);
    assert!(ok, "{out}");
    wait_kubernetes_status(&guard, "k8s-ctr", "Failure", 20);
    // curl-pod's network namespace, as its kubelet recorded it (kubectl exec needs the
    // apiserver).
    let state = guard.lab.require().expect("state");
    let curl_netns = cilium_lab::kubelet::runtime::RuntimeState::load(&state.nodes[0].kubelet_dir)
        .expect("pods")
        .pods
        .values()
        .find(|p| p.name == "curl-pod")
        .and_then(|p| p.netns.clone())
        .expect("curl-pod's namespace");
    let outage = Instant::now();
    let mut tries = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let out = Command::new("ip")
            .args(["netns", "exec", &curl_netns])
            .args(["curl", "-s", "--max-time", "3", "webpod"])
            .output()
            .expect("curl");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Hostname: webpod-"),
            "curl webpod failed with the apiserver away"
        );
        tries += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(tries >= 20, "{tries}");
    let (ok, out) = lab_cmd(&guard, &["apiserver", "start"]);
    assert!(ok, "{out}");
    wait_kubernetes_status(&guard, "k8s-w1", "Ok", 60);
    // The cluster works again: a new pod on k8s-w1 gets curl-pod's identity and reaches
    // the service.
    let extra = guard.lab.dir.join("curl2.yaml");
    std::fs::write(&extra, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: curl2\n  labels:\n    app: curl\nspec:\n  nodeName: k8s-w1\n  containers:\n  - name: c\n    image: nicolaka/netshoot\n").unwrap();
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", extra.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "wait",
            "--for=condition=Ready",
            "pod/curl2",
            "--timeout=90s",
        ],
    );
    assert!(ok, "{out}");
    let ids: BTreeMap<String, u64> = json_items(&guard, "ciliumendpoints")
        .iter()
        .map(|e| {
            (
                e["metadata"]["name"].as_str().unwrap().to_owned(),
                e["status"]["identity"]["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids["curl2"], ids["curl-pod"], "{ids:?}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "exec",
            "curl2",
            "--",
            "curl",
            "-s",
            "--max-time",
            "3",
            "webpod",
        ],
    );
    assert!(ok && out.contains("Hostname: webpod-"), "{out}");

    // k8s-w1's kubelet is killed, then its agent (nobody restarts it): traffic goes on,
    // the relay reports the node and serves the others. The kubelet comes back: it adopts
    // its pods (same processes, IPs and restart counts) and starts the agent again (one
    // restart), which restores its endpoints with their IPs and identities.
    let w1_pods = || -> BTreeMap<String, (String, String)> {
        pods_by_name(&guard)
            .into_iter()
            .filter(|(_, p)| p["spec"]["nodeName"] == "k8s-w1")
            .map(|(n, p)| {
                (
                    n,
                    (
                        p["status"]["podIP"].to_string(),
                        p["status"]["containerStatuses"][0]["restartCount"].to_string(),
                    ),
                )
            })
            .collect()
    };
    let agent_restarts = || -> u64 {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "kubectl",
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                "k8s-app=cilium",
                "--field-selector=spec.nodeName=k8s-w1",
                "-o",
                "json",
            ],
        );
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(&out).expect("json");
        v["items"][0]["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .expect("restartCount")
    };
    let before_kubelet = w1_pods();
    let before: Vec<Value> = json_items(&guard, "ciliumendpoints")
        .into_iter()
        .filter(|e| e["status"]["networking"]["node"] == "192.168.10.101")
        .collect();
    assert!(!before.is_empty());
    let restarts = agent_restarts();
    let state = guard.lab.require().expect("state");
    let w1 = state.nodes[state.node_index("k8s-w1").unwrap()].clone();
    let workload_pids = || -> BTreeSet<u32> {
        cilium_lab::kubelet::runtime::RuntimeState::load(&w1.kubelet_dir)
            .expect("pods")
            .pods
            .values()
            .filter(|p| p.namespace == "default")
            .flat_map(|p| p.containers.iter().filter_map(|c| c.pid))
            .collect()
    };
    let pids_before = workload_pids();
    assert!(!pids_before.is_empty());
    let (ok, out) = lab_cmd(&guard, &["node", "kill-kubelet", "k8s-w1"]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(&guard, &["node", "kill-agent", "k8s-w1"]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(&guard, &["hubble", "status"]);
    assert!(ok && out.contains("Connected Nodes: 2/3"), "{out}");
    let (ok, out) = lab_cmd(&guard, &["hubble", "observe", "--last", "3"]);
    assert!(ok && out.contains("NODE_UNAVAILABLE: k8s-w1"), "{out}");
    for _ in 0..10 {
        assert!(
            curl_webpod(&guard).is_some(),
            "curl webpod failed with k8s-w1's kubelet and agent down"
        );
    }
    let (ok, out) = lab_cmd(&guard, &["node", "start-kubelet", "k8s-w1"]);
    assert!(ok, "{out}");
    guard
        .lab
        .wait_agent(&w1)
        .expect("the agent of k8s-w1 is back");
    for _ in 0..5 {
        assert!(
            curl_webpod(&guard).is_some(),
            "curl webpod failed after the restart"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent_restarts() != restarts + 1 {
        assert!(
            Instant::now() < deadline,
            "the agent's restart was not reported"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        pids_before,
        workload_pids(),
        "the pods' processes were adopted"
    );
    assert_eq!(
        before_kubelet,
        w1_pods(),
        "same pods, IPs and restart counts"
    );
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "exec",
            "curl2",
            "--",
            "curl",
            "-s",
            "--max-time",
            "3",
            "webpod",
        ],
    );
    assert!(ok && out.contains("Hostname: webpod-"), "{out}");
    let key = |e: &Value| {
        (
            e["metadata"]["name"].to_string(),
            e["status"]["identity"]["id"].to_string(),
            e["status"]["networking"]["addressing"].to_string(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after: Vec<Value> = json_items(&guard, "ciliumendpoints")
            .into_iter()
            .filter(|e| e["status"]["networking"]["node"] == "192.168.10.101")
            .collect();
        let (b, a): (BTreeSet<_>, BTreeSet<_>) = (
            before.iter().map(key).collect(),
            after.iter().map(key).collect(),
        );
        if a == b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints not restored as they were: {b:?} / {a:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // k8s-w2 is removed: its route goes from k8s-ctr, its CiliumNode goes (the operator
    // frees its CIDR), the service keeps only the replica on k8s-w1 until the pod garbage
    // collector deletes the replica that was on k8s-w2 and the Deployment makes a new one
    // on k8s-w1, which then answers too.
    let pods = pods_by_name(&guard);
    let (gone, stays): (Vec<_>, Vec<_>) = pods
        .iter()
        .filter(|(n, _)| n.starts_with("webpod-"))
        .partition(|(_, p)| p["spec"]["nodeName"] == "k8s-w2");
    assert_eq!((gone.len(), stays.len()), (1, 1));
    let w2_cidr = json_items(&guard, "ciliumnodes")
        .into_iter()
        .find(|n| n["metadata"]["name"] == "k8s-w2")
        .and_then(|n| n["spec"]["ipam"]["podCIDRs"][0].as_str().map(str::to_owned))
        .expect("k8s-w2's CIDR");
    let (ok, out) = lab_cmd(&guard, &["node", "delete", "k8s-w2"]);
    assert!(ok, "{out}");
    let ctr_ns = format!("{}-k8s-ctr", guard.lab.prefix);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let route = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", &ctr_ns, "route", "show", &w2_cidr])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        let cilium_nodes: Vec<String> = json_items(&guard, "ciliumnodes")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        let now = pods_by_name(&guard);
        let replicas: BTreeSet<String> = now
            .iter()
            .filter(|(n, p)| n.starts_with("webpod-") && p["status"]["phase"] == "Running")
            .map(|(n, _)| n.clone())
            .collect();
        let answers: BTreeSet<String> = (0..8).filter_map(|_| curl_webpod(&guard)).collect();
        if route.trim().is_empty()
            && !cilium_nodes.contains(&"k8s-w2".to_owned())
            && replicas.len() == 2
            && !replicas.contains(gone[0].0)
            && answers == replicas
        {
            assert!(now.values().all(|p| p["spec"]["nodeName"] != "k8s-w2"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after removing k8s-w2: route {route:?}, CiliumNodes {cilium_nodes:?}, replicas {replicas:?}, answers {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }

    // `cilium uninstall` leaves the nodes as they were before the install: no cilium_*
    // device, no BPF program or pin, no CNI configuration (so the nodes are NotReady);
    // `cilium install` again, and the pods restarted, curl works again.
    let (ok, out) = cilium_cmd(&guard, &["uninstall", "--wait-duration", "2m"]);
    assert!(ok, "uninstall: {out}");
    let state = guard.lab.require().expect("state");
    for n in &state.nodes {
        let links = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", &n.netns, "-br", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(!links.contains("cilium_"), "{}: {links}", n.name);
        let pins: Vec<String> = walk(&n.bpffs);
        assert!(
            pins.iter().all(|p| !p.contains("cilium")),
            "{}: pins left {pins:?}",
            n.name
        );
        let cni = n.root.join("etc/cni/net.d");
        let left: Vec<String> = std::fs::read_dir(&cni)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: CNI files left {left:?}", n.name);
    }
    let (ok, out) = lab_cmd(&guard, &["get", "nodes"]);
    assert!(ok && out.contains("NotReady"), "{out}");
    let (ok, out) = cilium_cmd(&guard, &["status"]);
    assert!(
        !ok && out.contains("daemonsets.apps \"cilium\" not found"),
        "{out}"
    );
    let (ok, out) = cilium_install_seed(&guard);
    assert!(ok, "install again: {out}");
    // The pods made by the old network are made anew (curl-pod, a bare pod, by applying
    // the seed's manifest again).
    let (ok, out) = lab_cmd(
        &guard,
        &["kubectl", "delete", "pod", "--all", "--wait=true"],
    );
    assert!(ok, "{out}");
    let manifest = guard.lab.dir.join("seed.yaml");
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while curl_webpod(&guard).is_none() {
        assert!(Instant::now() < deadline, "curl webpod after the reinstall");
        std::thread::sleep(Duration::from_secs(1));
    }
    let (ok, out) = lab_cmd(&guard, &["down"]);
    assert!(ok, "down: {out}");
}

/// The text of key `key` of Secret `name` in kube-system.
fn secret_text(guard: &Guard, name: &str, key: &str) -> String {
    use base64::Engine as _;
    let (ok, out) = lab_cmd(
        guard,
        &[
            "kubectl",
            "get",
            "secret",
            "-n",
            "kube-system",
            name,
            "-o",
            "json",
        ],
    );
    assert!(ok, "{out}");
    let secret: Value = serde_json::from_str(&out).expect("secret JSON");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("{name} {key}")),
        )
        .expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

/// A node's Hubble server on its TCP port (`hubble-listen-address :4244`, asked from
/// inside the node's namespace): `hubble --tls` with the relay's client certificate (from
/// Secret hubble-relay-client-certs, as `cilium install` made it) and the node's TLS name
/// is served; plain text, no client certificate, or another cluster's server name are
/// refused.
fn node_hubble_requires_mutual_tls(guard: &Guard) {
    let dir = guard.lab.dir.join("hubble-client-tls");
    std::fs::create_dir_all(&dir).unwrap();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let pem = secret_text(guard, "hubble-relay-client-certs", key);
        std::fs::write(dir.join(key), pem).unwrap();
    }
    let state = guard.lab.require().expect("state");
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == "k8s-w1")
        .expect("k8s-w1");
    let path = |f: &str| dir.join(f).display().to_string();
    let hubble = |extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(guard.lab.bin_dir.join("hubble"))
            .args(["--server", "127.0.0.1:4244"])
            .args(extra)
            .arg("status")
            .output()
            .expect("run hubble");
        outcome(&out)
    };
    let ca = path("ca.crt");
    let (cert, key) = (path("tls.crt"), path("tls.key"));
    let name = "k8s-w1.default.hubble-grpc.cilium.io";
    let tls = ["--tls", "--tls-ca-cert-files", &ca, "--tls-server-name"];
    let (ok, out) = hubble(
        &[
            &tls[..],
            &[
                name,
                "--tls-client-cert-file",
                &cert,
                "--tls-client-key-file",
                &key,
            ],
        ]
        .concat(),
    );
    assert!(ok && out.contains("Healthcheck"), "mutual TLS: {out}");
    for (what, args) in [
        ("plain text", vec![]),
        ("no client certificate", [&tls[..], &[name]].concat()),
        (
            "another cluster's name",
            [
                &tls[..],
                &[
                    "k8s-w1.other.hubble-grpc.cilium.io",
                    "--tls-client-cert-file",
                    &cert,
                    "--tls-client-key-file",
                    &key,
                ],
            ]
            .concat(),
        ),
    ] {
        let (ok, out) = hubble(&args);
        assert!(!ok, "{what}: served: {out}");
    }
}

/// Every path under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

/// `iptables-save` in a node's namespace (through `cilium-lab ssh`).
fn node_iptables(guard: &Guard, node: &str) -> String {
    let (ok, out) = lab_cmd(guard, &["ssh", node, "iptables-save"]);
    assert!(ok, "iptables-save on {node}: {out}");
    out
}

/// The seed's migration: a cluster on kube-proxy and a bridge network (10.244.x pods)
/// becomes a Cilium cluster (172.20.x pods) with the seed's steps, each through the lab's
/// and the CLI's commands.
#[test]
fn privileged_lab_migrates_from_kube_proxy() {
    if !is_root_or_skip("privileged_lab_migrates_from_kube_proxy") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let guard = Guard::new("m");
    guard.seed_with(&["--kube-proxy"]);
    let nodes = ["k8s-ctr", "k8s-w1", "k8s-w2"];
    let flannel_pool: ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let cilium_pool: ipnet::Ipv4Net = "172.20.0.0/16".parse().unwrap();
    let pod_ips = |guard: &Guard| -> Vec<std::net::Ipv4Addr> {
        pods_by_name(guard)
            .values()
            .filter_map(|p| p["status"]["podIP"].as_str()?.parse().ok())
            .collect()
    };
    let curl_until = |guard: &Guard, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while curl_webpod(guard).is_none() {
            assert!(Instant::now() < deadline, "curl webpod {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    // Before: kube-proxy's rules on every node, pods on the bridge network.
    curl_until(&guard, "through kube-proxy");
    let ips = pod_ips(&guard);
    assert_eq!(ips.len(), 3, "{ips:?}");
    assert!(ips.iter().all(|ip| flannel_pool.contains(ip)), "{ips:?}");
    // Every node's kube-proxy has synced (the curl above needed only the client's node;
    // a slower node's kube-proxy may still be starting on a loaded machine).
    for n in nodes {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !node_iptables(&guard, n).contains("KUBE-SERVICES") {
            assert!(Instant::now() < deadline, "no KUBE-SERVICES on {n}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // kube-proxy's DaemonSet and ConfigMap go; its rules stay, and so does the service.
    for object in ["ds", "cm"] {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "kubectl",
                "-n",
                "kube-system",
                "delete",
                object,
                "kube-proxy",
            ],
        );
        assert!(ok, "{out}");
    }
    curl_until(&guard, "after kube-proxy's removal");

    // The KUBE and FLANNEL rules, then the bridge, on every node: the old pods lose the
    // service until they are restarted.
    for n in nodes {
        let (ok, out) = lab_cmd(
            &guard,
            &[
                "ssh",
                n,
                "iptables-save | grep -v KUBE | grep -v FLANNEL | iptables-restore",
            ],
        );
        assert!(ok, "{n}: {out}");
        let (ok, out) = lab_cmd(&guard, &["ssh", n, "ip", "link", "del", "cni0"]);
        assert!(ok, "{n}: {out}");
        assert!(!node_iptables(&guard, n).contains("KUBE"), "{n}");
    }
    assert!(
        curl_webpod(&guard).is_none(),
        "no service without kube-proxy"
    );

    // Cilium with the seed's values: the agents' configuration replaces the bridge's.
    let (ok, out) = cilium_install_seed(&guard);
    assert!(ok, "cilium install: {out}");
    let state = guard.lab.require().expect("state");
    for n in &state.nodes {
        let dir = n.root.join("etc/cni/net.d");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["05-cilium.conflist", "10-bridge.conflist.cilium_bak"],
            "{}",
            n.name
        );
    }

    // The pods restarted: Cilium's addresses, and the service again.
    let (ok, out) = lab_cmd(
        &guard,
        &["kubectl", "delete", "pod", "--all", "--wait=true"],
    );
    assert!(ok, "{out}");
    let manifest = guard.lab.dir.join("seed.yaml");
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", manifest.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(
        &guard,
        &[
            "kubectl",
            "wait",
            "--for=condition=Ready",
            "pod",
            "--all",
            "--timeout=120s",
        ],
    );
    assert!(ok, "{out}");
    curl_until(&guard, "through Cilium");
    let ips = pod_ips(&guard);
    assert!(ips.iter().all(|ip| cilium_pool.contains(ip)), "{ips:?}");
    let mut answered = BTreeSet::new();
    for _ in 0..20 {
        answered.extend(curl_webpod(&guard));
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(answered.len(), 2, "both replicas answer: {answered:?}");

    // Kubernetes' podCIDRs (10.244.x) and the CiliumNodes' (172.20.x) differ, as in the
    // seed; no KUBE rule is left anywhere.
    for node in json_items(&guard, "nodes") {
        let cidr: ipnet::Ipv4Net = node["spec"]["podCIDR"].as_str().unwrap().parse().unwrap();
        assert!(flannel_pool.contains(&cidr), "{cidr}");
    }
    for cn in json_items(&guard, "ciliumnodes") {
        let cidr: ipnet::Ipv4Net = cn["spec"]["ipam"]["podCIDRs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(cilium_pool.contains(&cidr), "{cidr}");
    }
    for n in nodes {
        assert!(!node_iptables(&guard, n).contains("KUBE-"), "{n}");
    }
    let (ok, out) = lab_cmd(&guard, &["down"]);
    assert!(ok, "down: {out}");
}

/// `cilium connectivity test` on the lab: every test passes; a deny policy left in place
/// makes it fail, naming the actions that did.
#[test]
fn privileged_lab_connectivity_test() {
    if !is_root_or_skip("privileged_lab_connectivity_test") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let guard = Guard::new("c");
    let (ok, out) = lab_cmd(&guard, &["up"]);
    assert!(ok, "up: {out}");
    let (ok, out) = cilium_cmd(&guard, &["connectivity", "test"]);
    assert!(ok, "connectivity test: {out}");
    assert!(
        out.contains("tests (") && out.contains("actions) successful, 0 tests skipped"),
        "{out}"
    );
    // No scenario is skipped as a known gap: pod-to-remote-nodeport (a NodePort on another
    // node's address, translated by that node's from_netdev) runs and passes.
    assert!(!out.contains("known gap"), "{out}");
    for test in [
        "[no-policies]",
        "[all-ingress-deny]",
        "[client-egress]",
        "[echo-ingress-knp]",
    ] {
        assert!(out.contains(test), "{test} in {out}");
    }
    // A policy left behind that drops every connection to the echo servers.
    let deny = guard.lab.dir.join("deny.yaml");
    std::fs::write(
        &deny,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: deny-echo\n  namespace: cilium-test-1\nspec:\n  endpointSelector:\n    matchLabels:\n      kind: echo\n  ingressDeny:\n  - fromEntities:\n    - all\n",
    )
    .unwrap();
    let (ok, out) = lab_cmd(&guard, &["apply", "-f", deny.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cilium_cmd(&guard, &["connectivity", "test", "--test", "^no-policies/"]);
    assert!(!ok, "a deny policy in place must fail the run: {out}");
    assert!(out.contains("tests failed"), "{out}");
    let (ok, out) = cilium_cmd(&guard, &["connectivity", "test", "--cleanup"]);
    assert!(ok, "{out}");
    let (ok, out) = lab_cmd(&guard, &["down"]);
    assert!(ok, "down: {out}");
}
