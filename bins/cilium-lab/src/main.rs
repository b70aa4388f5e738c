// SPDX-License-Identifier: Apache-2.0

//! `cilium-lab`: up, apply, exec, get, dbg, down and demo (see `cilium-lab --help`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use cilium_lab::lab::{Lab, UpOptions};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cilium-lab",
    about = "A cilium-rs cluster in network namespaces on this machine (needs root)",
    after_help = "The lab lives in $CILIUM_LAB_DIR (default /tmp/cilium-lab); its namespaces are named $CILIUM_LAB_PREFIX-* (default crsl)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Routing {
    Native,
    Tunnel,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the nodes, start the Kubernetes control plane, the operator, and a kubelet
    /// and an agent per node.
    Up {
        /// Nodes, control plane included.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How pods reach other nodes.
        #[arg(long, value_enum, default_value = "native")]
        routing: Routing,
        /// Agent settings, a YAML map of cilium-config keys (as the ConfigMap holds them).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Leave Cilium out (nodes and control plane only), for `cilium install`.
        #[arg(long)]
        no_cilium: bool,
        /// The seed's cluster before Cilium: kube-proxy (iptables mode) and a bridge
        /// network from each Node's podCIDR, for the migration (implies --no-cilium).
        #[arg(long)]
        kube_proxy: bool,
    },
    /// Run the pinned kubectl with the lab's kubeconfig (`cilium-lab kubectl get pods -A`).
    #[command(disable_help_flag = true)]
    Kubectl {
        /// kubectl's arguments, as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `kubectl apply ARGS` with the lab's kubeconfig.
    #[command(disable_help_flag = true)]
    Apply {
        /// kubectl apply's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `kubectl delete ARGS` with the lab's kubeconfig.
    #[command(disable_help_flag = true)]
    Delete {
        /// kubectl delete's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `kubectl get ARGS` with the lab's kubeconfig.
    #[command(disable_help_flag = true)]
    Get {
        /// kubectl get's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `kubectl exec ARGS` with the lab's kubeconfig (`cilium-lab exec curl-pod -- curl webpod`).
    #[command(disable_help_flag = true)]
    Exec {
        /// kubectl exec's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run cilium-dbg against a node's agent (`cilium-lab dbg k8s-w1 endpoint list`).
    Dbg {
        /// The node.
        node: String,
        /// cilium-dbg's arguments, as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the hubble CLI against the lab's hubble-relay, or one node's Hubble server
    /// (`cilium-lab hubble observe --last 20`).
    Hubble {
        /// Ask this node's Hubble server instead of the relay.
        #[arg(long)]
        node: Option<String>,
        /// hubble's arguments, as they are.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Open the Hubble UI: forwards 127.0.0.1:PORT to it until interrupted, or saves a
    /// screenshot of a namespace's map and flows (headless Chromium) and exits.
    HubbleUi {
        /// The local port.
        #[arg(long, default_value_t = 12000)]
        port: u16,
        /// Save a PNG screenshot here instead of serving.
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// The namespace shown.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Node faults: kill a node's agent (its kubelet starts it again), kill or start its
    /// kubelet, remove the node.
    Node {
        /// `kill-agent` (SIGKILL, as a crash), `kill-kubelet`, `start-kubelet`, or `delete`.
        #[arg(value_parser = ["kill-agent", "kill-kubelet", "start-kubelet", "delete"])]
        action: String,
        /// The node.
        node: String,
    },
    /// Run a command on a node, in its network namespace (`cilium-lab ssh k8s-w1
    /// iptables-save`, as the seed runs commands over ssh on its VMs); a shell without one.
    #[command(disable_help_flag = true)]
    Ssh {
        /// The node.
        node: String,
        /// The command and its arguments (a shell's when one word holds spaces or pipes:
        /// `cilium-lab ssh k8s-w1 'iptables-save | grep -c KUBE'`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop (SIGKILL) or start the lab's kube-apiserver.
    Apiserver {
        /// `stop` or `start`.
        #[arg(value_parser = ["stop", "start"])]
        action: String,
    },
    /// Stop and remove everything the lab made.
    Down,
    /// The seed scenario end to end: up, the seed's kubectl commands, Hubble, down.
    Demo,
    /// (internal) Run a pod's workload.
    #[command(hide = true)]
    Workload {
        /// Which.
        kind: String,
        /// The pod's name.
        #[arg(long)]
        name: String,
        /// The port.
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
    /// (internal) A node's kubelet.
    #[command(hide = true)]
    Kubelet {
        /// The node's name.
        #[arg(long)]
        node: String,
        /// Its InternalIP.
        #[arg(long)]
        ip: std::net::Ipv4Addr,
        /// The control-plane node.
        #[arg(long)]
        control_plane: bool,
        /// The node's kubeconfig.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The kubelet's directory (kubelet.crt, kubelet.key, ca.crt for its API).
        #[arg(long)]
        dir: PathBuf,
        /// Prefix of pods' network namespaces.
        #[arg(long)]
        netns_prefix: String,
        /// The node's network namespace (the CNI plugin runs in it).
        #[arg(long)]
        node_netns: Option<String>,
        /// The node's CNI configuration directory.
        #[arg(long)]
        cni_conf_dir: PathBuf,
        /// Where CNI plugins are looked up (repeatable, in order).
        #[arg(long = "cni-bin-dir")]
        cni_bin_dirs: Vec<PathBuf>,
        /// The node's root directory (`hostPath` volumes are under it).
        #[arg(long)]
        host_root: PathBuf,
        /// Where the upstream Kubernetes programs are (kube-proxy's image runs them).
        #[arg(long)]
        kube_dir: Option<PathBuf>,
        /// The kubelet API's port (0: not served).
        #[arg(long, default_value_t = 10250)]
        port: u16,
    },
    /// (internal) Forward 127.0.0.1 to an address inside a lab namespace.
    #[command(hide = true)]
    Forward {
        /// The namespace.
        #[arg(long)]
        netns: String,
        /// The address there.
        #[arg(long)]
        to: String,
        /// Where the local port is written.
        #[arg(long)]
        port_file: PathBuf,
    },
}

fn agent_config(path: Option<&PathBuf>) -> Result<BTreeMap<String, String>, String> {
    let Some(path) = path else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect())
}

/// Runs kubectl `verb ARGS` with the lab's kubeconfig, in place of this process.
fn kubectl(lab: &Lab, verb: Option<&str>, args: &[String]) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = lab.kubectl()?;
    cmd.args(verb).args(args);
    let err = cmd.exec();
    Err(format!("kubectl: {err}"))
}

fn run(cli: Cli) -> Result<i32, String> {
    let lab = Lab::from_env()?;
    match cli.command {
        Cmd::Up {
            nodes,
            routing,
            config,
            no_cilium,
            kube_proxy,
        } => {
            let started = std::time::Instant::now();
            let state = lab.up(&UpOptions {
                nodes,
                agent_config: agent_config(config.as_ref())?,
                tunnel: matches!(routing, Routing::Tunnel),
                install_cilium: !no_cilium && !kube_proxy,
                kube_proxy,
            })?;
            println!(
                "lab up in {} ({} nodes, {:.0} s):",
                lab.dir.display(),
                state.nodes.len(),
                started.elapsed().as_secs_f64()
            );
            for n in &state.nodes {
                let cidr = n
                    .client()
                    .call("GET", "/healthz", None)
                    .ok()
                    .and_then(|h| h["node-state"]["node"]["cidr"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                println!(
                    "  {:<8} {:<15} pod CIDR {cidr:<16} netns {}",
                    n.name, n.ip, n.netns
                );
            }
            println!(
                "  kube-apiserver {} (etcd, controller-manager, scheduler) on k8s-ctr",
                cilium_lab::lab::API_ADDR
            );
            println!("export KUBECONFIG={}", lab.kubeconfig().display());
            Ok(0)
        }
        Cmd::Kubectl { args } => kubectl(&lab, None, &args),
        Cmd::Apply { args } => kubectl(&lab, Some("apply"), &args),
        Cmd::Delete { args } => kubectl(&lab, Some("delete"), &args),
        Cmd::Get { args } => kubectl(&lab, Some("get"), &args),
        Cmd::Exec { args } => kubectl(&lab, Some("exec"), &args),
        Cmd::Dbg { node, args } => lab.dbg(&node, &args),
        Cmd::Hubble { node, args } => {
            use std::os::unix::process::CommandExt;
            // Replaced by hubble: a signal to this process reaches hubble itself.
            let err = lab.hubble_command(node.as_deref(), &args)?.exec();
            Err(format!("hubble: {err}"))
        }
        Cmd::HubbleUi {
            port,
            screenshot,
            namespace,
        } => {
            let port = lab.forward_ui(if screenshot.is_some() { 0 } else { port })?;
            let url = format!("http://127.0.0.1:{port}/?namespace={namespace}");
            if let Some(png) = screenshot {
                hubble_relay::browser::screenshot(&url, Default::default(), &png)?;
                println!("{}", png.display());
                return Ok(0);
            }
            println!("Hubble UI at {url} (Ctrl-C stops forwarding)");
            loop {
                std::thread::park();
            }
        }
        Cmd::Node { action, node } => {
            let mut state = lab.require()?;
            match action.as_str() {
                "kill-agent" => {
                    lab.kill_agent(&state, &node)?;
                }
                "kill-kubelet" => lab.kill_kubelet(&mut state, &node)?,
                "start-kubelet" => {
                    let i = state.node_index(&node)?;
                    lab.start_kubelet(&mut state, i)?;
                }
                _ => lab.remove_node(&mut state, &node)?,
            }
            println!("node/{node} {action} done");
            Ok(0)
        }
        Cmd::Ssh { node, command } => lab.ssh(&node, &command),
        Cmd::Apiserver { action } => {
            let mut state = lab.require()?;
            if action == "stop" {
                lab.stop_apiserver(&mut state)?;
            } else {
                lab.start_apiserver(&mut state)?;
            }
            println!("kube-apiserver {action} done");
            Ok(0)
        }
        Cmd::Down => {
            for line in lab.down()? {
                println!("{line}");
            }
            Ok(0)
        }
        Cmd::Demo => demo(&lab),
        Cmd::Workload { kind, name, port } => match kind.as_str() {
            "whoami" => cilium_lab::workload::run_whoami(&name, port)
                .map(|()| 0)
                .map_err(|e| format!("whoami on port {port}: {e}")),
            other => Err(format!("unknown workload {other:?}")),
        },
        Cmd::Kubelet {
            node,
            ip,
            control_plane,
            kubeconfig,
            dir,
            netns_prefix,
            node_netns,
            cni_conf_dir,
            cni_bin_dirs,
            host_root,
            kube_dir,
            port,
        } => {
            let cfg = cilium_lab::kubelet::Config {
                node,
                ip,
                control_plane,
                kubeconfig,
                api: (port != 0).then(|| cilium_lab::kubelet::ApiConfig {
                    port,
                    cert: dir.join("kubelet.crt"),
                    key: dir.join("kubelet.key"),
                    client_ca: dir.join("ca.crt"),
                }),
                dir,
                netns_prefix,
                node_netns,
                cni_conf_dir,
                cni_bin_dirs,
                host_root,
                kube_dir,
                workload_program: std::env::current_exe().map_err(|e| e.to_string())?,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move { cilium_lab::kubelet::Kubelet::new(cfg).await?.run().await })?;
            Ok(0)
        }
        Cmd::Forward {
            netns,
            to,
            port_file,
        } => Lab::forward(&netns, &to, &port_file).map(|()| 0),
    }
}

/// Prints a step and its command, runs it through `sh -c` with the lab's KUBECONFIG and
/// kubectl first on PATH (as a user types it), prints its output.
fn step(lab: &Lab, title: &str, command: &str) -> Result<(), String> {
    println!("\n### {title}\n$ {command}");
    let kube_dir = cilium_k8s::testing::kube_dir().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let path = format!(
        "{}:{}:{}",
        kube_dir.display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = std::process::Command::new("sh")
        .args(["-c", command])
        .env("KUBECONFIG", lab.kubeconfig())
        .env("PATH", path)
        .env("CILIUM_LAB_DIR", &lab.dir)
        .env("CILIUM_LAB_PREFIX", &lab.prefix)
        .status()
        .map_err(|e| e.to_string())?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(format!("`{command}` exited with {code:?}")),
    }
}

fn demo(lab: &Lab) -> Result<i32, String> {
    if lab.load()?.is_some() {
        return Err(format!(
            "a lab is already up in {} (cilium-lab down first)",
            lab.dir.display()
        ));
    }
    let started = std::time::Instant::now();
    let result = (|| {
        step(
            lab,
            "Three nodes with a kubelet each and the Kubernetes control plane; no network plugin yet",
            "cilium-lab up --no-cilium",
        )?;
        step(lab, "Nodes", "kubectl get nodes -o wide")?;
        let install: String = cilium_lab::lab::seed_values(false)
            .iter()
            .map(|v| format!(" \\\n  --set '{v}'"))
            .collect();
        step(
            lab,
            "Cilium installed with the seed's Helm values (and hubble-relay, the UI, a quick operator GC)",
            &format!("cilium install{install}"),
        )?;
        step(
            lab,
            "The install's health, as cilium-cli shows it",
            "cilium status --wait --wait-duration 3m",
        )?;
        step(lab, "Its configuration", "cilium config view")?;
        step(
            lab,
            "Cilium's pods: DaemonSet cilium, Deployments cilium-operator and hubble-relay",
            "kubectl get pod -n kube-system -o wide",
        )?;
        step(
            lab,
            "The agent's status, through the kubelet API",
            "kubectl exec -it -n kube-system ds/cilium -c cilium-agent -- cilium-dbg status --verbose",
        )?;
        let seed = format!(
            "cat << EOF | kubectl apply -f -\n{}EOF",
            cilium_lab::manifest::SEED
        );
        step(
            lab,
            "The seed's webpod Deployment, Service and curl-pod",
            &seed,
        )?;
        step(
            lab,
            "Every pod Running",
            "kubectl wait --for=condition=Ready pod --all --timeout=180s",
        )?;
        println!(
            "every pod Running {:.0} s after `cilium-lab up` began",
            started.elapsed().as_secs_f64()
        );
        step(lab, "Pods", "kubectl get pod -o wide")?;
        step(lab, "Services", "kubectl get svc")?;
        step(
            lab,
            "CiliumNodes and the pod CIDRs the operator handed out (cluster-pool 172.20.0.0/16, /24 per node)",
            "kubectl get ciliumnodes; kubectl get ciliumnodes -o json | grep podCIDRs -A2",
        )?;
        step(
            lab,
            "curl webpod from curl-pod, five times (both replicas answer)",
            "for i in 1 2 3 4 5; do kubectl exec -it curl-pod -- curl webpod | grep Hostname; done",
        )?;
        step(
            lab,
            "Endpoints with their identities",
            "kubectl get ciliumendpoints -o wide",
        )?;
        step(
            lab,
            "One agent's endpoints",
            "kubectl exec -it -n kube-system ds/cilium -c cilium-agent -- cilium-dbg endpoint list",
        )?;
        step(
            lab,
            "Every agent's endpoints",
            "for pod in $(kubectl get pods -n kube-system -l k8s-app=cilium -o name); do   echo \"=== $pod ===\";   kubectl exec -n kube-system $pod -c cilium-agent -- cilium-dbg endpoint list; done",
        )?;
        step(
            lab,
            "The service in the datapath of k8s-ctr",
            "cilium-lab dbg k8s-ctr service list",
        )?;
        step(
            lab,
            "Hubble through the relay: the cluster's nodes, then curl-pod's flows on every node",
            "cilium-lab hubble list nodes; cilium-lab hubble observe --from-pod default/curl-pod --last 12",
        )?;
        if hubble_relay::browser::chromium().is_some() {
            let png = std::env::temp_dir().join("cilium-lab-hubble-ui.png");
            step(
                lab,
                "The Hubble UI's map of namespace default (headless Chromium; `cilium-lab hubble-ui` serves it on 127.0.0.1:12000)",
                &format!("cilium-lab hubble-ui --screenshot {}", png.display()),
            )?;
        }
        Ok::<(), String>(())
    })();
    println!("\n### Tear down\n$ cilium-lab down");
    let down = lab.down();
    match (result, down) {
        (Ok(()), Ok(lines)) => {
            println!("{} things removed", lines.len());
            Ok(0)
        }
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
