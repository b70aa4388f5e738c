// SPDX-License-Identifier: Apache-2.0

//! The underlay the multi-node tests share: a lab namespace with a bridge
//! (192.168.10.1/24), node namespaces wired to it (192.168.10.101, .102, ...) each with a
//! private bpffs and state directory, the agents and other daemons they start, and pods'
//! namespaces; all of it removed on drop, even on panic (processes killed by pid, the
//! agents' logs printed when the test failed).

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cilium_bpf::testing::run;
use serde_json::Value;

/// Implements `Deref`/`DerefMut` to the `base: Underlay` field of a test's lab type.
macro_rules! deref_to_underlay {
    ($lab:ty) => {
        impl std::ops::Deref for $lab {
            type Target = common::Underlay;
            fn deref(&self) -> &common::Underlay {
                &self.base
            }
        }

        impl std::ops::DerefMut for $lab {
            fn deref_mut(&mut self) -> &mut common::Underlay {
                &mut self.base
            }
        }
    };
}

/// A binary built next to cilium-cni (the agent, the operator, cilium-dbg).
pub fn sibling(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_cilium-cni")).with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// One node: its namespace, address, bpffs, state directory and agent.
#[derive(Debug)]
pub struct NodeNs {
    /// `k8s-w1`, ...
    pub name: &'static str,
    /// The network namespace.
    pub ns: String,
    /// The node's address on the underlay.
    pub ip: Ipv4Addr,
    /// Its private BPF file system.
    pub bpffs: PathBuf,
    /// The agent's state directory (socket and log too).
    pub state: PathBuf,
    /// The agent, when running.
    pub agent: Option<Child>,
}

impl NodeNs {
    /// The agent's API socket.
    pub fn socket(&self) -> PathBuf {
        self.state.join("cilium.sock")
    }

    /// One agent API call.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        cilium_agent::client::Client::new(&self.socket().to_string_lossy())
            .call(method, path, body)
            .map_err(|e| e.0)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("agent.log")).unwrap_or_default()
    }
}

/// The lab's namespaces, nodes, daemons and directory; see the module documentation.
#[derive(Debug)]
pub struct Underlay {
    /// The prefix of every name made (`crs<pid><tag>`).
    pub prefix: String,
    /// The lab namespace (bridge, control plane).
    pub lan: String,
    /// The nodes.
    pub nodes: Vec<NodeNs>,
    /// Every namespace made, deleted in reverse order.
    pub namespaces: Vec<String>,
    /// Daemons other than the agents (the operator), killed on drop.
    pub daemons: Vec<Child>,
    /// The lab's directory (removed on drop).
    pub dir: PathBuf,
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut a) = n.agent.take() {
                let _ = a.kill();
                let _ = a.wait();
            }
        }
        for mut d in self.daemons.drain(..) {
            let _ = d.kill();
            let _ = d.wait();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = n.log();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- {} agent log (last 30 lines) ---", n.name);
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for n in &self.nodes {
            let _ = Command::new("umount").arg(&n.bpffs).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Underlay {
    /// The lab namespace with its bridge and `names.len()` nodes wired to it.
    pub fn new(tag: char, names: &[&'static str]) -> Underlay {
        let prefix = format!("crs{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-lab"));
        std::fs::create_dir_all(&dir).expect("lab dir");
        let mut lab = Underlay {
            lan: format!("{prefix}-lan"),
            prefix,
            nodes: Vec::new(),
            namespaces: Vec::new(),
            daemons: Vec::new(),
            dir,
        };
        let lan = lab.lan.clone();
        lab.add_netns(&lan);
        run(&["ip", "-n", &lan, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &lan,
            "addr",
            "add",
            "192.168.10.1/24",
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().copied().enumerate() {
            let ns = format!("{}-{name}", lab.prefix);
            lab.add_netns(&ns);
            let ip = Ipv4Addr::new(192, 168, 10, 101 + i as u8);
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &lan,
            ]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            run(&[
                "ip", "-n", &lan, "link", "set", &port, "master", "br0", "up",
            ]);
            let bpffs = lab.dir.join(format!("{name}-bpffs"));
            let state = lab.dir.join(format!("{name}-state"));
            std::fs::create_dir_all(&bpffs).expect("bpffs dir");
            std::fs::create_dir_all(&state).expect("state dir");
            run(&["mount", "-t", "bpf", "bpf", bpffs.to_str().expect("utf-8")]);
            lab.nodes.push(NodeNs {
                name,
                ns,
                ip,
                bpffs,
                state,
                agent: None,
            });
        }
        lab
    }

    /// A namespace, removed on drop.
    pub fn add_netns(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_owned());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// Starts a daemon in the lab namespace, its standard error in `<dir>/<log>`.
    pub fn spawn_in_lan(&mut self, program: &Path, args: &[String], log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lan])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        self.daemons.push(child);
    }

    /// Starts node `i`'s agent with its own directories and `args`.
    pub fn start_agent(&mut self, i: usize, args: &[String]) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.state.join("agent.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &n.ns])
            .arg(sibling("cilium-agent"))
            .arg(format!("--bpf-root={}", n.bpffs.display()))
            .arg(format!("--state-dir={}", n.state.display()))
            .arg(format!("--socket-path={}", n.socket().display()))
            .arg(format!("--k8s-node-name={}", n.name))
            .arg(format!("--ipv4-node={}", n.ip))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        n.agent = Some(child);
    }

    /// Kills node `i`'s agent.
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(mut a) = self.nodes[i].agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    /// Waits (up to 90 s) until node `i`'s agent serves its API.
    pub fn wait_agent(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let n = &mut self.nodes[i];
            if n.api("GET", "/healthz", None).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = n.agent.as_mut().map(Child::try_wait) {
                panic!("agent {} exited with {status}: {}", n.name, n.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent {} never served: {}",
                n.name,
                n.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A pod's namespace name.
    pub fn pod_ns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }

    /// Runs cilium-cni `command` for pod `pod` (namespace `default`, its own network
    /// namespace) on node `i`, as a container runtime does.
    pub fn cni(&self, i: usize, command: &str, pod: &str) -> cilium_cni::runtime::Outcome {
        let n = &self.nodes[i];
        let netconf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "cilium", "type": "cilium-cni", "agent-socket": n.socket(),
        })
        .to_string();
        let netns = format!("/run/netns/{}", self.pod_ns(pod));
        cilium_cni::runtime::invoke(
            Path::new(env!("CARGO_BIN_EXE_cilium-cni")),
            &["ip", "netns", "exec", &n.ns],
            &cilium_cni::runtime::Invocation {
                command,
                container_id: &format!("ctr-{pod}"),
                netns: &netns,
                ifname: "eth0",
                pod: ("default", pod),
                netconf: &netconf,
            },
        )
        .expect("run cilium-cni")
    }

    /// Makes pod `pod`'s namespace and wires it on node `i` (CNI ADD); returns its IP.
    pub fn add_pod_netns(&mut self, i: usize, pod: &str) -> Ipv4Addr {
        let ns = self.pod_ns(pod);
        self.add_netns(&ns);
        let out = self.cni(i, "ADD", pod);
        assert!(
            out.success,
            "ADD {pod}: {} {}\n{}",
            out.output,
            out.stderr,
            self.nodes[i].log()
        );
        cilium_cni::runtime::result_ipv4(&out.output).expect("an IPv4 result")
    }

    /// Whether a TCP connection from pod `from` to `to:port` gets its echo back, waiting
    /// up to `secs` seconds for that to be `want` (routes, identities and policies arrive
    /// through watches).
    pub fn reaches_within(
        &self,
        from: &str,
        to: Ipv4Addr,
        port: u16,
        want: bool,
        secs: u64,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = cilium_bpf::testing::tcp_echo_reaches(&self.pod_ns(from), to, port);
            if got == want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
