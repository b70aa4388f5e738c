// SPDX-License-Identifier: Apache-2.0

//! What the benches that run the agent share (`pod_creation`, `k8s`): a node namespace
//! (its address 192.168.10.101/24 on `eth0`, one end of a veth pair, as a node has it on a
//! device) with a private bpffs and state directory, the cilium-agent and other daemons
//! started in it, pods' namespaces, CNI ADD run as a container runtime runs it, and the
//! statistics. All of it is named `crsp<pid><tag>…` and removed on drop, even on panic
//! (processes killed by pid, the agent's log shown when the bench failed).

#![allow(dead_code, reason = "each bench uses its part")]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::{run, spawn_in_netns};
use serde_json::Value;

/// The node's address.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 101);
/// The node's name (`k8s-node-name`).
pub(crate) const NODE_NAME: &str = "bench";

/// One node's namespace, directories and processes; see the module documentation.
pub(crate) struct Lab {
    /// `crsp<pid><tag>`, the prefix of every name made.
    pub(crate) prefix: String,
    /// The node's network namespace.
    pub(crate) node: String,
    bpffs: PathBuf,
    /// The agent's state directory; the logs and the control plane's files go here too.
    pub(crate) state: PathBuf,
    namespaces: Vec<String>,
    agent: Option<Child>,
    daemons: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.agent.take().into_iter().chain(self.daemons.drain(..)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(self.state.join("agent.log")).unwrap_or_default();
        if std::thread::panicking() && !log.is_empty() {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- agent log (last 30 lines) ---");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
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
    /// The node namespace, bpffs and state directory of a lab named by `tag`.
    pub(crate) fn new(tag: &str) -> Lab {
        let prefix = format!("crsp{}{tag}", std::process::id());
        let tmp = std::env::temp_dir();
        let mut lab = Lab {
            node: format!("{prefix}-node"),
            bpffs: tmp.join(format!("{prefix}-bpffs")),
            state: tmp.join(format!("{prefix}-state")),
            prefix,
            namespaces: Vec::new(),
            agent: None,
            daemons: Vec::new(),
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
        run(&[
            "ip",
            "-n",
            &node,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ]);
        let addr = format!("{NODE_IP}/24");
        run(&["ip", "-n", &node, "addr", "add", &addr, "dev", "eth0"]);
        run(&["ip", "-n", &node, "link", "set", "eth0-peer", "up"]);
        run(&["ip", "-n", &node, "link", "set", "eth0", "up"]);
        lab
    }

    /// A namespace, deleted on drop.
    pub(crate) fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
    }

    /// The agent's API socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.state.join("cilium.sock")
    }

    /// Runs `program` in the node namespace, its standard error in `<state>/<log>`.
    fn exec(&self, program: &Path, args: &[String], log: &str) -> Child {
        let log = std::fs::File::create(self.state.join(log)).expect("log");
        Command::new("ip")
            .args(["netns", "exec", &self.node])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
    }

    /// Starts a daemon in the node namespace (its log `<state>/<log>`), killed on drop.
    pub(crate) fn spawn(&mut self, program: &Path, args: &[String], log: &str) {
        let child = self.exec(program, args, log);
        self.daemons.push(child);
    }

    /// Starts the agent with `args` after the node's own, and waits until its node is up
    /// (its pod CIDR known, its datapath loaded).
    pub(crate) fn start_agent(&mut self, bins: &Path, args: &[String]) {
        let mut all = vec![
            format!("--bpf-root={}", self.bpffs.display()),
            format!("--state-dir={}", self.state.display()),
            format!("--socket-path={}", self.socket().display()),
            format!("--ipv4-node={NODE_IP}"),
            format!("--k8s-node-name={NODE_NAME}"),
        ];
        all.extend_from_slice(args);
        self.agent = Some(self.exec(&bins.join("cilium-agent"), &all, "agent.log"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = self.client().call("GET", "/healthz", None);
            if health.is_ok_and(|h| h["node-state"]["node"]["cidr"].is_string()) {
                return;
            }
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("the agent exited with {status}");
            }
            assert!(Instant::now() < deadline, "the agent's node never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client of the agent's API.
    pub(crate) fn client(&self) -> cilium_agent::client::Client {
        cilium_agent::client::Client::new(&self.socket().to_string_lossy())
    }

    /// One agent API call that must succeed.
    pub(crate) fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.client()
            .call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {}", e.0))
    }

    /// The agent's resident set in KiB (`ip netns exec` execs it: the child is the agent).
    pub(crate) fn agent_rss_kib(&self) -> u64 {
        let pid = self.agent.as_ref().expect("agent").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Pod `i`'s namespace.
    pub(crate) fn pod_ns(&self, i: usize) -> String {
        format!("{}-p{i}", self.prefix)
    }

    /// Makes the namespaces of pods `0..count`.
    pub(crate) fn add_pod_namespaces(&mut self, count: usize) {
        for i in 0..count {
            let ns = self.pod_ns(i);
            self.add_netns(&ns);
        }
    }
}

/// The name of pod `i` (namespace `default`) in the CNI call.
pub(crate) fn pod_name(i: usize) -> String {
    format!("pod-{i}")
}

/// One CNI ADD for pod `i`, run from a thread inside the node namespace (so the plugin
/// starts there, as under a runtime on that node); returns its wall time.
pub(crate) fn cni_add(lab: &Lab, bins: &Path, i: usize) -> std::thread::JoinHandle<Duration> {
    let cni = bins.join("cilium-cni");
    let netns = format!("/run/netns/{}", lab.pod_ns(i));
    let netconf = format!(
        r#"{{"cniVersion":"1.0.0","name":"cilium","type":"cilium-cni","agent-socket":"{}"}}"#,
        lab.socket().display()
    );
    spawn_in_netns(&lab.node, move || {
        let start = Instant::now();
        let container = format!("bench{i:05}");
        let pod = pod_name(i);
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
        assert!(out.success, "ADD {pod}: {} {}", out.output, out.stderr);
        took
    })
}

/// Runs `count` jobs `width` at a time (width 1: one after another); returns each one's time.
pub(crate) fn in_waves(
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

/// The `p`th percentile of `times`, in milliseconds.
pub(crate) fn percentile(times: &[Duration], p: usize) -> f64 {
    let mut v: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Milliseconds as text, in µs below one.
pub(crate) fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:7.1} µs", v * 1e3)
    } else {
        format!("{v:7.2} ms")
    }
}

/// Prints p50 and p99 of `ours` beside `base` (ratio = baseline / ours: above 1, ours is
/// faster).
pub(crate) fn report(bench: &str, what: &str, base: &[Duration], ours: &[Duration]) {
    for p in [50, 99] {
        let (b, o) = (percentile(base, p), percentile(ours, p));
        println!(
            "{bench} {what:<14} p{p}: baseline {}   ours {}   ratio {:.2}x",
            ms(b),
            ms(o),
            b / o
        );
    }
}

/// Where the binaries are: `$CRS_BIN_DIR`, else the profile directory this bench runs from
/// (it runs from `<target>/<profile>/deps/`, wherever CARGO_TARGET_DIR puts the target
/// directory). `None`, after printing why, when one of `needed` is not built.
pub(crate) fn bins_dir(bench: &str, full: bool, needed: &[&str]) -> Option<PathBuf> {
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
    for b in needed {
        if !bins.join(b).exists() {
            println!(
                "{bench}: skipped: {} is not built (cargo xtask bench builds it)",
                bins.join(b).display()
            );
            return None;
        }
    }
    Some(bins)
}
