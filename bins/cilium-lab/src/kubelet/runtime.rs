// SPDX-License-Identifier: Apache-2.0

//! The kubelet's container runtime: a pod is a network namespace wired by cilium-cni (or
//! the node's own, for `hostNetwork`), and each container a process started in it, in its
//! own session (it outlives a kubelet restart), its output in a log file per run.
//!
//! Everything made is written to the node's `pods.json` before it is made, so a kubelet
//! that restarts finds its pods again (adopting the processes still running) and a lab
//! that goes down finds everything to remove.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One run of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// The container's name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The command line it runs.
    pub argv: Vec<String>,
    /// Its environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The process of its current run, if running.
    pub pid: Option<u32>,
    /// How many times it was restarted.
    pub restart_count: u32,
    /// When the current run started (RFC 3339).
    pub started_at: String,
    /// The exit code of the last run that ended (`None` while the first run goes on).
    pub last_exit: Option<i32>,
    /// When the last run ended (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// What its readiness probe last said (`None`: it has none, so running is ready).
    #[serde(default)]
    pub ready: Option<bool>,
}

/// A pod this kubelet runs (or ran: the record outlives the pod until it is cleaned up).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodRecord {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The Pod object's uid.
    pub uid: String,
    /// Its network namespace (`None`: the node's, `hostNetwork`).
    pub netns: Option<String>,
    /// Its address once the CNI ADD succeeded (the node's for `hostNetwork`).
    pub ip: Option<Ipv4Addr>,
    /// When the kubelet started it (RFC 3339).
    pub start_time: String,
    /// The containers, in the pod spec's order.
    pub containers: Vec<ContainerRecord>,
    /// The network configuration (a CNI conflist) its sandbox was made with.
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    /// The result of its CNI ADD (given to DEL as `prevResult`).
    #[serde(default)]
    pub network_result: Option<serde_json::Value>,
    /// The host name its processes see (`spec.hostname` or its name; the node's name for
    /// `hostNetwork`). Empty in records of earlier kubelets: its name then.
    #[serde(default)]
    pub hostname: String,
}

/// The host name Kubernetes gives a pod: `spec.hostname`, else its name, cut to 63
/// characters (without a trailing `-` or `.`).
pub fn pod_hostname(name: &str, spec_hostname: Option<&str>) -> String {
    let h = spec_hostname.filter(|h| !h.is_empty()).unwrap_or(name);
    let cut: String = h.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_owned()
}

/// The node's cgroup: the cgroup v2 directory at `<root>/run/cilium/cgroupv2` (the lab
/// bind-mounts one there for each node; the agent's `cgroup-root` names the same path), if
/// there is one. Its processes are the node's own: socket LB reaches them.
pub fn node_cgroup(host_root: &Path) -> Option<PathBuf> {
    let dir = host_root.join("run/cilium/cgroupv2");
    cilium_bpf::loader::is_cgroup2(&dir)
        .unwrap_or(false)
        .then_some(dir)
}

/// The command line prefix that runs a program as one of a pod's processes: in a UTS
/// namespace of its own with the pod's host name (every pod has its own), in the pod's
/// network namespace (`None`: the node's), and in `cgroup` if given (the node's, for a
/// `hostNetwork` pod: its processes are the node's own). The program and its arguments
/// follow it; the process keeps the pid of the prefix's first program (each one execs the
/// next).
pub fn pod_prefix(hostname: &str, netns: Option<&str>, cgroup: Option<&Path>) -> Vec<String> {
    let mut argv: Vec<String> = ["unshare", "--uts", "--", "sh", "-c"]
        .map(str::to_owned)
        .to_vec();
    match cgroup {
        Some(cg) => argv.extend([
            "echo $$ > \"$1/cgroup.procs\" && hostname -- \"$0\" && shift && exec \"$@\""
                .to_owned(),
            hostname.to_owned(),
            cg.to_string_lossy().into_owned(),
        ]),
        None => argv.extend([
            "hostname -- \"$0\" && exec \"$@\"".to_owned(),
            hostname.to_owned(),
        ]),
    }
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(str::to_owned));
    }
    argv
}

impl PodRecord {
    /// The host name its processes see.
    pub fn hostname(&self) -> &str {
        if self.hostname.is_empty() {
            &self.name
        } else {
            &self.hostname
        }
    }

    /// The CNI container id of the pod's sandbox.
    pub fn container_id(&self) -> String {
        format!("{}-{}", self.namespace, self.uid)
    }
}

/// Everything the kubelet of a node made, as saved in `<dir>/pods.json`, by pod uid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuntimeState {
    /// The pods by uid.
    pub pods: BTreeMap<String, PodRecord>,
}

impl RuntimeState {
    /// Reads the state of a kubelet directory (empty when there is none).
    pub fn load(dir: &Path) -> Result<RuntimeState, String> {
        let file = dir.join("pods.json");
        match std::fs::read(&file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RuntimeState::default()),
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    }

    /// Saves it (temp file, rename).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let tmp = dir.join(".pods.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("pods.json")).map_err(|e| e.to_string())
    }
}

/// Runs a command, returning its output or an error with its stderr.
pub(crate) fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Creates a pod's network namespace (loopback up); one left by an earlier attempt is
/// used as it is.
pub fn create_netns(name: &str) -> Result<(), String> {
    if !netns_exists(name) {
        run(&["ip", "netns", "add", name])?;
    }
    run(&["ip", "-n", name, "link", "set", "lo", "up"]).map(|_| ())
}

/// Deletes a network namespace (gone already is fine) and its `/etc/netns` directory.
pub fn delete_netns(name: &str) {
    if netns_exists(name) {
        let _ = run(&["ip", "netns", "del", name]);
    }
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// Whether `pid` is alive and runs `argv0`'s program (its command line's first word has
/// the same file name: a recycled pid running something else is not ours); a zombie
/// counts as gone.
pub fn alive(pid: u32, argv0: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    if state.is_empty() || state == "Z" || state == "X" {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = |p: &Path| p.file_name().map(|f| f.to_os_string());
    let running = Path::new(std::ffi::OsStr::from_bytes(first));
    name(running).is_some() && name(running) == name(Path::new(argv0))
}

/// Sends `signal` (`TERM`, `KILL`) to a process and its process group (the lab starts
/// every process in its own session, so the group is everything it started).
pub fn signal(pid: u32, signal: &str) {
    for target in [format!("-{pid}"), pid.to_string()] {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .stderr(Stdio::null())
            .status();
    }
}

/// Stops a container's process: SIGTERM, then SIGKILL after `grace`.
pub fn stop_process(pid: u32, argv0: &str, grace: Duration, child: Option<&mut Child>) {
    let mut child = child;
    let gone = |child: &mut Option<&mut Child>| match child {
        Some(c) => !matches!(c.try_wait(), Ok(None)),
        None => !alive(pid, argv0),
    };
    if gone(&mut child) {
        return;
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone(&mut child) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(&mut child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log file of run `restart` of a container.
pub fn log_file(dir: &Path, uid: &str, container: &str, restart: u32) -> PathBuf {
    dir.join("logs")
        .join(uid)
        .join(container)
        .join(format!("{restart}.log"))
}

/// Starts `argv` as a process of a pod (see [`pod_prefix`]) in its own session, with
/// `env`, its output appended to `log`.
pub fn start_process(
    hostname: &str,
    netns: Option<&str>,
    cgroup: Option<&Path>,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, String> {
    let (program, args) = argv.split_first().ok_or("the container has no command")?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new("setsid");
    cmd.args(pod_prefix(hostname, netns, cgroup));
    // The container's environment only, not the kubelet's.
    cmd.arg(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))
}

/// Runs an exec probe's command as a process of the pod (see [`pod_prefix`]) with the
/// container's environment: whether it exited 0 within `timeout` (killed after).
pub fn probe(
    hostname: &str,
    netns: Option<&str>,
    cgroup: Option<&Path>,
    command: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> bool {
    if command.is_empty() {
        return false;
    }
    let prefix = pod_prefix(hostname, netns, cgroup);
    let child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(command)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Writes a pod's `/etc/netns/<netns>/hosts` (what `ip netns exec` shows as /etc/hosts):
/// itself, and every Service as NAME (same namespace), NAME.NS, NAME.NS.svc and
/// NAME.NS.svc.cluster.local, as cluster DNS would answer. `services` holds
/// (namespace, name, ClusterIP).
pub fn write_hosts(
    netns: &str,
    pod: &str,
    pod_namespace: &str,
    ip: Option<Ipv4Addr>,
    services: &[(String, String, String)],
) -> Result<(), String> {
    let text = hosts_text(pod, pod_namespace, ip, services);
    let dir = Path::new("/etc/netns").join(netns);
    let file = dir.join("hosts");
    if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Rewritten in place: `ip netns exec` bind-mounts this very file over /etc/hosts of
    // the processes it starts, so a new file (a rename) would not reach them.
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))
}

/// The text of a pod's hosts file (see [`write_hosts`]).
pub fn hosts_text(
    pod: &str,
    pod_namespace: &str,
    ip: Option<Ipv4Addr>,
    services: &[(String, String, String)],
) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n");
    if let Some(ip) = ip {
        text.push_str(&format!("{ip}\t{pod}\n"));
    }
    for (ns, name, cluster_ip) in services {
        let short = if ns == pod_namespace {
            format!("{name} ")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{cluster_ip}\t{short}{name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_their_kubernetes_host_names() {
        assert_eq!(pod_hostname("webpod-7d9", None), "webpod-7d9");
        assert_eq!(pod_hostname("p", Some("db-0")), "db-0");
        assert_eq!(pod_hostname("p", Some("")), "p");
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(pod_hostname(&long, None), "a".repeat(62));
        let argv = pod_prefix("webpod-7d9", Some("crsl-pod-u1"), None);
        assert_eq!(argv[..3], ["unshare", "--uts", "--"]);
        assert_eq!(argv[6], "webpod-7d9");
        assert_eq!(argv[7..], ["ip", "netns", "exec", "crsl-pod-u1"]);
        assert_eq!(pod_prefix("k8s-w1", None, None).len(), 7);
        // A hostNetwork pod's process joins the node's cgroup before it becomes the program.
        let cg = Path::new("/sys/fs/cgroup/unified/crsl/k8s-w1");
        let argv = pod_prefix("k8s-w1", None, Some(cg));
        assert!(
            argv[5].starts_with("echo $$ > \"$1/cgroup.procs\" && "),
            "{argv:?}"
        );
        assert!(argv[5].ends_with("&& shift && exec \"$@\""), "{argv:?}");
        assert_eq!(argv[6..], ["k8s-w1", "/sys/fs/cgroup/unified/crsl/k8s-w1"]);
    }

    #[test]
    fn hosts_name_services_as_cluster_dns_would() {
        let services = vec![
            (
                "default".to_owned(),
                "webpod".to_owned(),
                "10.96.0.10".to_owned(),
            ),
            (
                "kube-system".to_owned(),
                "hubble-relay".to_owned(),
                "10.96.0.11".to_owned(),
            ),
        ];
        let text = hosts_text(
            "curl-pod",
            "default",
            Some(Ipv4Addr::new(172, 20, 0, 5)),
            &services,
        );
        assert!(text.contains("172.20.0.5\tcurl-pod\n"));
        assert!(text.contains(
            "10.96.0.10\twebpod webpod.default webpod.default.svc webpod.default.svc.cluster.local\n"
        ));
        // Another namespace's Service: only by its qualified names.
        assert!(text.contains("10.96.0.11\thubble-relay.kube-system "));
        assert!(!text.contains("\thubble-relay "));
    }

    #[test]
    fn state_round_trips_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("crs-kubelet-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(RuntimeState::load(&dir).expect("load").pods.is_empty());
        let mut s = RuntimeState::default();
        s.pods.insert(
            "u1".into(),
            PodRecord {
                namespace: "default".into(),
                name: "p".into(),
                uid: "u1".into(),
                netns: Some("crsl-p-default-p".into()),
                ip: Some(Ipv4Addr::new(172, 20, 1, 2)),
                start_time: "2026-01-01T00:00:00Z".into(),
                containers: vec![],
                network: Some(
                    serde_json::json!({"name": "cilium", "plugins": [{"type": "cilium-cni"}]}),
                ),
                network_result: Some(serde_json::json!({"ips": [{"address": "172.20.1.2/32"}]})),
                hostname: "p".into(),
            },
        );
        s.save(&dir).expect("save");
        assert_eq!(RuntimeState::load(&dir).expect("load").pods, s.pods);
        std::fs::write(dir.join("pods.json"), b"{not json").expect("write");
        assert!(RuntimeState::load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_or_foreign_pid_is_not_alive() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        // Until it has exec'd, the child runs this test's program.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !alive(child.id(), "sleep") {
            assert!(Instant::now() < deadline, "sleep never showed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(child.id(), "whoami"));
        assert!(
            !alive(child.id(), "slee"),
            "a prefix of the name is not the name"
        );
        assert!(alive(child.id(), "/usr/bin/sleep"), "the file name counts");
        let _ = child.kill();
        let _ = child.wait();
        assert!(!alive(child.id(), "sleep"));
    }
}
