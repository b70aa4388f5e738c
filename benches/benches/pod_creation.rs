// SPDX-License-Identifier: Apache-2.0

//! Pod creation as a container runtime feels it, and the agent's memory.
//!
//! - `ours`: the cilium-cni binary, run the way a runtime runs it (CNI environment, netconf
//!   on stdin, a pod netns that already exists), against a cilium-agent in a node namespace
//!   with its datapath loaded. The wall time of ADD is the time to a ready endpoint: the
//!   plugin returns after `PUT /v1/endpoint` answers, which happens once the endpoint is
//!   ready. 100 pods one after another, then 100 more 20 at a time.
//! - `baseline`: the same pod plumbing as a shell-script CNI does it with iproute2 (veth
//!   into the pod, address, routes, links up: seven `ip` runs), no agent, no identity, no
//!   datapath. Same counts, same concurrency.
//! - The agent's resident memory (VmRSS) when empty, with 100 and 200 endpoints, and after
//!   1000 services of two backends each (through `PUT /v1/service`).
//!
//! `cargo bench` (`--bench`) runs the full sizes on release binaries (`cargo xtask bench`
//! builds them); `cargo test` runs a small smoke pass on the debug binaries so the bench
//! itself is tested. Binaries come from `$CRS_BIN_DIR`, else the profile directory this
//! bench runs from (`target/release` as a bench, `target/debug` as a test). Needs root;
//! prints "skipped: ..." otherwise. Everything lives in namespaces, a bpffs and a state dir
//! named `crsp<pid>…`, removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run, spawn_in_netns};

/// Everything the bench made; removed on drop, even on panic.
struct Lab {
    prefix: String,
    node: String,
    bpffs: PathBuf,
    state: PathBuf,
    namespaces: Vec<String>,
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("crsp{}", std::process::id());
        let tmp = std::env::temp_dir();
        let mut lab = Lab {
            node: format!("{prefix}-node"),
            bpffs: tmp.join(format!("{prefix}-bpffs")),
            state: tmp.join(format!("{prefix}-state")),
            prefix,
            namespaces: Vec::new(),
            agent: None,
        };
        std::fs::create_dir_all(&lab.bpffs).expect("bpffs dir");
        std::fs::create_dir_all(&lab.state).expect("state dir");
        run(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            lab.bpffs.to_str().expect("utf-8"),
        ]);
        let node = lab.node.clone();
        lab.add_netns(&node);
        run(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        lab
    }

    fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
    }

    fn socket(&self) -> PathBuf {
        self.state.join("cilium.sock")
    }

    fn start_agent(&mut self, bins: &Path) {
        let log = std::fs::File::create(self.state.join("agent.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.node])
            .arg(bins.join("cilium-agent"))
            .arg(format!("--bpf-root={}", self.bpffs.display()))
            .arg(format!("--state-dir={}", self.state.display()))
            .arg(format!("--socket-path={}", self.socket().display()))
            .args([
                "--ipv4-node=192.168.10.101",
                "--ipv4-range=172.20.0.0/16",
                "--k8s-node-name=bench",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        self.agent = Some(child);
        let client = cilium_agent::client::Client::new(&self.socket().to_string_lossy());
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.call("GET", "/healthz", None).is_err() {
            assert!(Instant::now() < deadline, "the agent never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's resident set in KiB (`ip netns exec` execs it: the child is the agent).
    fn agent_rss_kib(&self) -> u64 {
        let pid = self.agent.as_ref().expect("agent").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    fn pod_ns(&self, i: usize) -> String {
        format!("{}-p{i}", self.prefix)
    }
}

/// One CNI ADD, run from a thread inside the node namespace (so the plugin starts there,
/// as under a runtime on that node); returns its wall time.
fn cni_add(lab: &Lab, bins: &Path, i: usize) -> std::thread::JoinHandle<Duration> {
    let cni = bins.join("cilium-cni");
    let netns = format!("/run/netns/{}", lab.pod_ns(i));
    let netconf = format!(
        r#"{{"cniVersion":"1.0.0","name":"cilium","type":"cilium-cni","agent-socket":"{}"}}"#,
        lab.socket().display()
    );
    spawn_in_netns(&lab.node, move || {
        let start = Instant::now();
        let container = format!("bench{i:05}");
        let pod = format!("pod-{i}");
        let out = cilium_cni::runtime::invoke(
            &cni,
            &[],
            &cilium_cni::runtime::Invocation {
                command: "ADD",
                container_id: &container,
                netns: &netns,
                ifname: "eth0",
                pod: ("default", &pod),
                netconf: &netconf,
            },
        )
        .expect("run cilium-cni");
        let took = start.elapsed();
        assert!(out.success, "ADD pod-{i}: {} {}", out.output, out.stderr);
        took
    })
}

/// The baseline: a shell-script CNI's plumbing for pod `i` (addresses in 10.99.0.0/16).
fn plumb(lab: &Lab, i: usize) -> std::thread::JoinHandle<Duration> {
    let node = lab.node.clone();
    let pod = lab.pod_ns(i);
    std::thread::spawn(move || {
        let host = format!("bl{i}");
        let ip = format!("10.99.{}.{}", i / 250, 1 + i % 250);
        let start = Instant::now();
        for args in [
            vec![
                "-n", &node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ],
            vec![
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ],
            vec!["-n", &pod, "link", "set", "eth0", "up"],
            vec![
                "-n",
                &pod,
                "route",
                "add",
                "10.99.255.254/32",
                "dev",
                "eth0",
            ],
            vec![
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                "10.99.255.254",
                "dev",
                "eth0",
            ],
            vec!["-n", &node, "link", "set", &host, "up"],
            vec![
                "-n",
                &node,
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                &host,
            ],
        ] {
            let mut all = vec!["ip"];
            all.extend(args.iter().map(|s| &**s));
            run(&all);
        }
        start.elapsed()
    })
}

/// Runs `count` jobs `width` at a time (width 1: one after another); returns each one's time.
fn in_waves(
    first: usize,
    count: usize,
    width: usize,
    job: impl Fn(usize) -> std::thread::JoinHandle<Duration>,
) -> Vec<Duration> {
    let mut times = Vec::new();
    for wave in (first..first + count).collect::<Vec<_>>().chunks(width) {
        let handles: Vec<_> = wave.iter().map(|i| job(*i)).collect();
        times.extend(handles.into_iter().map(|h| h.join().expect("job")));
    }
    times
}

fn percentile(times: &[Duration], p: usize) -> f64 {
    let mut v: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn report(what: &str, base: &[Duration], ours: &[Duration]) {
    for p in [50, 99] {
        let (b, o) = (percentile(base, p), percentile(ours, p));
        println!(
            "pod_creation {what:<14} p{p}: baseline {b:8.2} ms   ours {o:8.2} ms   ratio {:.2}x",
            b / o
        );
    }
}

fn service_spec(i: usize, pods: usize) -> serde_json::Value {
    let vip = std::net::Ipv4Addr::from(0x0a60_0000u32 + 1 + i as u32);
    let backend =
        |n: usize| serde_json::json!({"ip": format!("172.20.0.{}", 2 + n % 200), "port": 8080});
    serde_json::json!({
        "frontend-address": {"ip": vip.to_string(), "port": 80, "protocol": "TCP"},
        "backend-addresses": [backend(i % pods), backend((i + 1) % pods)],
        "flags": {"type": "ClusterIP", "name": format!("svc-{i}"), "namespace": "default"},
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("pod_creation: benchmark");
        return;
    }
    if !is_root_or_skip("pod_creation") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (pods, width, services) = if full { (100, 20, 1000) } else { (4, 2, 10) };
    // This bench runs from <target>/<profile>/deps/, the binaries are in <target>/<profile>/
    // (wherever CARGO_TARGET_DIR puts the target directory).
    let bins = std::env::var_os("CRS_BIN_DIR").map_or_else(
        || {
            std::env::current_exe()
                .ok()
                .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../target")
                        .join(if full { "release" } else { "debug" })
                })
        },
        PathBuf::from,
    );
    for b in ["cilium-agent", "cilium-cni"] {
        if !bins.join(b).exists() {
            println!(
                "pod_creation: skipped: {} is not built (cargo xtask bench builds it)",
                bins.join(b).display()
            );
            return;
        }
    }
    let mut lab = Lab::new();
    for i in 0..4 * pods {
        let ns = lab.pod_ns(i);
        lab.add_netns(&ns);
    }
    lab.start_agent(&bins);
    let rss_empty = lab.agent_rss_kib();

    let ours_seq = in_waves(0, pods, 1, |i| cni_add(&lab, &bins, i));
    let rss_pods = lab.agent_rss_kib();
    let ours_par = in_waves(pods, pods, width, |i| cni_add(&lab, &bins, i));
    let rss_more = lab.agent_rss_kib();
    let base_seq = in_waves(2 * pods, pods, 1, |i| plumb(&lab, i));
    let base_par = in_waves(3 * pods, pods, width, |i| plumb(&lab, i));

    let client = cilium_agent::client::Client::new(&lab.socket().to_string_lossy());
    let eps = client.call("GET", "/endpoint", None).expect("endpoints");
    let ready = eps.as_array().map_or(0, |a| {
        a.iter().filter(|e| e["status"]["state"] == "ready").count()
    });
    assert_eq!(ready, 2 * pods, "every ADD left a ready endpoint");
    let start = Instant::now();
    for i in 0..services {
        client
            .call("PUT", "/service/0", Some(&service_spec(i, 2 * pods)))
            .expect("create a service");
    }
    let programming = start.elapsed();
    let rss_services = lab.agent_rss_kib();
    let listed = client.call("GET", "/service", None).expect("services");
    assert_eq!(listed.as_array().map(Vec::len), Some(services));

    println!(
        "pod_creation: {pods} pods one after another, then {pods} {width} at a time ({} binaries)",
        if full { "release" } else { "debug" }
    );
    report("sequential", &base_seq, &ours_seq);
    report(&format!("{width} at a time"), &base_par, &ours_par);
    println!(
        "pod_creation agent RSS: empty {:.1} MiB; {pods} endpoints {:.1} MiB; {} endpoints {:.1} MiB ({:.1} KiB per endpoint); +{services} services {:.1} MiB ({:.2} KiB per service)",
        rss_empty as f64 / 1024.0,
        rss_pods as f64 / 1024.0,
        2 * pods,
        rss_more as f64 / 1024.0,
        rss_more.saturating_sub(rss_empty) as f64 / (2 * pods) as f64,
        rss_services as f64 / 1024.0,
        rss_services.saturating_sub(rss_more) as f64 / services as f64,
    );
    println!(
        "pod_creation services: {services} PUT /v1/service in {:.1} ms ({:.2} ms each)",
        programming.as_secs_f64() * 1e3,
        programming.as_secs_f64() * 1e3 / services as f64
    );
}
