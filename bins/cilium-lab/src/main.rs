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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Wide,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the nodes, start etcd, the operator and the agents.
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
    },
    /// Create the objects of a manifest (Deployment, Pod, Service, CiliumNetworkPolicy...).
    Apply {
        /// The manifest (`-`: stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace of objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Delete the objects of a manifest.
    Delete {
        /// The manifest (`-`: stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace of objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Run a command in a pod's network namespace (`-- CMD ARGS...`).
    Exec {
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The pod.
        pod: String,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// List objects: nodes, pods, svc, ciliumnodes, ciliumendpoints, ciliumidentities.
    Get {
        /// The kind.
        kind: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// wide or json.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Output>,
    },
    /// Run cilium-dbg against a node's agent (`-- ARGS...`).
    Dbg {
        /// The node.
        node: String,
        /// cilium-dbg's arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the hubble CLI against the lab's hubble-relay, or one node's Hubble server
    /// (`-- observe --last 20 ...`).
    Hubble {
        /// Ask this node's Hubble server instead of the relay.
        #[arg(long)]
        node: Option<String>,
        /// hubble's arguments.
        #[arg(last = true)]
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
    /// Node faults: kill or start a node's agent, remove a node.
    Node {
        /// `kill-agent` (SIGKILL, as a crash), `start-agent`, or `delete`.
        #[arg(value_parser = ["kill-agent", "start-agent", "delete"])]
        action: String,
        /// The node.
        node: String,
    },
    /// Stop (SIGKILL) or start the lab's etcd.
    Etcd {
        /// `stop` or `start`.
        #[arg(value_parser = ["stop", "start"])]
        action: String,
    },
    /// Stop and remove everything the lab made.
    Down,
    /// The seed scenario end to end: up, the seed's manifest, `curl webpod`, the views,
    /// down.
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

fn read_manifest(file: &PathBuf) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map_err(|e| e.to_string())?;
        Ok(t)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))
    }
}

fn run(cli: Cli) -> Result<i32, String> {
    let lab = Lab::from_env()?;
    match cli.command {
        Cmd::Up {
            nodes,
            routing,
            config,
        } => {
            let state = lab.up(&UpOptions {
                nodes,
                agent_config: agent_config(config.as_ref())?,
                tunnel: matches!(routing, Routing::Tunnel),
            })?;
            println!(
                "lab up in {} ({} nodes):",
                lab.dir.display(),
                state.nodes.len()
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
                "  etcd {} and cilium-operator on k8s-ctr",
                cilium_lab::lab::ETCD_ADDR
            );
            Ok(0)
        }
        Cmd::Apply { file, namespace } => {
            let text = read_manifest(&file)?;
            lab.apply(&text, &namespace, &mut std::io::stdout())?;
            Ok(0)
        }
        Cmd::Delete { file, namespace } => {
            let text = read_manifest(&file)?;
            lab.delete(&text, &namespace, &mut std::io::stdout())?;
            Ok(0)
        }
        Cmd::Exec {
            namespace,
            pod,
            command,
        } => lab.exec(&namespace, &pod, &command),
        Cmd::Get {
            kind,
            namespace,
            all_namespaces,
            output,
        } => {
            let kind = cilium_lab::get::kind_of(&kind).ok_or_else(|| {
                format!("the server doesn't have a resource type {kind:?} (nodes, pods, svc, ciliumnodes, ciliumendpoints, ciliumidentities)")
            })?;
            let state = lab.require()?;
            let ns = (!all_namespaces).then_some(namespace.as_str());
            let items = cilium_lab::get::objects(&state, kind, ns)?;
            print!(
                "{}",
                cilium_lab::get::render(
                    &state,
                    kind,
                    &items,
                    matches!(output, Some(Output::Wide)),
                    matches!(output, Some(Output::Json))
                )
            );
            Ok(0)
        }
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
                "kill-agent" => lab.kill_agent(&mut state, &node)?,
                "start-agent" => {
                    let i = state.node_index(&node)?;
                    lab.start_agent(&mut state, i)?;
                    lab.wait_agent(&state.nodes[i])?;
                }
                _ => lab.remove_node(&mut state, &node)?,
            }
            println!("node/{node} {action} done");
            Ok(0)
        }
        Cmd::Etcd { action } => {
            let mut state = lab.require()?;
            if action == "stop" {
                lab.stop_etcd(&mut state)?;
            } else {
                lab.start_etcd(&mut state)?;
            }
            println!("etcd {action} done");
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
    }
}

/// Prints a step, runs it, prints its output.
fn step(title: &str, command: &str, f: impl FnOnce() -> Result<i32, String>) -> Result<(), String> {
    println!("\n### {title}\n$ {command}");
    match f()? {
        0 => Ok(()),
        code => Err(format!("`{command}` exited with {code}")),
    }
}

fn self_cmd(args: &[&str]) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let status = std::process::Command::new(exe)
        .args(args)
        .status()
        .map_err(|e| e.to_string())?;
    Ok(status.code().unwrap_or(1))
}

fn demo(lab: &Lab) -> Result<i32, String> {
    if lab.load()?.is_some() {
        return Err(format!(
            "a lab is already up in {} (cilium-lab down first)",
            lab.dir.display()
        ));
    }
    let result = (|| {
        step(
            "Three nodes, etcd, the operator, one agent each",
            "cilium-lab up",
            || self_cmd(&["up"]),
        )?;
        step("Nodes", "cilium-lab get nodes -o wide", || {
            self_cmd(&["get", "nodes", "-o", "wide"])
        })?;
        step(
            "Pod CIDRs the operator handed out (cluster-pool 172.20.0.0/16, /24 per node)",
            "cilium-lab get ciliumnodes -o json | grep podCIDRs",
            || {
                let state = lab.require()?;
                for n in cilium_lab::get::objects(&state, "ciliumnodes", None)? {
                    println!(
                        "{:<8} podCIDRs {}",
                        n["metadata"]["name"].as_str().unwrap_or_default(),
                        n["spec"]["ipam"]["podCIDRs"]
                    );
                }
                Ok(0)
            },
        )?;
        let manifest = lab.dir.join("seed.yaml");
        std::fs::write(&manifest, cilium_lab::manifest::SEED).map_err(|e| e.to_string())?;
        step(
            "The seed's webpod Deployment, Service and curl-pod",
            "cilium-lab apply -f seed.yaml",
            || self_cmd(&["apply", "-f", &manifest.to_string_lossy()]),
        )?;
        step("Pods", "cilium-lab get pods -o wide", || {
            self_cmd(&["get", "pods", "-o", "wide"])
        })?;
        step("Services", "cilium-lab get svc", || {
            self_cmd(&["get", "svc"])
        })?;
        step(
            "curl webpod, five times (both replicas answer)",
            "cilium-lab exec curl-pod -- curl -s webpod | grep Hostname",
            || {
                for _ in 0..5 {
                    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                    let out = std::process::Command::new(exe)
                        .args([
                            "exec",
                            "curl-pod",
                            "--",
                            "curl",
                            "-s",
                            "--max-time",
                            "5",
                            "webpod",
                        ])
                        .output()
                        .map_err(|e| e.to_string())?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    match text.lines().find(|l| l.starts_with("Hostname:")) {
                        Some(line) => println!("{line}"),
                        None => {
                            return Err(format!(
                                "curl webpod failed: {text}{}",
                                String::from_utf8_lossy(&out.stderr)
                            ));
                        }
                    }
                }
                Ok(0)
            },
        )?;
        step(
            "Endpoints with their identities",
            "cilium-lab get ciliumendpoints",
            || self_cmd(&["get", "ciliumendpoints"]),
        )?;
        step(
            "The agent's view on k8s-ctr",
            "cilium-lab dbg k8s-ctr -- endpoint list",
            || self_cmd(&["dbg", "k8s-ctr", "--", "endpoint", "list"]),
        )?;
        step(
            "The service in the datapath of k8s-ctr",
            "cilium-lab dbg k8s-ctr -- service list",
            || self_cmd(&["dbg", "k8s-ctr", "--", "service", "list"]),
        )?;
        step(
            "Hubble through the relay: the cluster's nodes, then curl-pod's flows on every node",
            "cilium-lab hubble -- list nodes; cilium-lab hubble -- observe --from-pod default/curl-pod --last 12",
            || {
                self_cmd(&["hubble", "--", "list", "nodes"])?;
                self_cmd(&[
                    "hubble",
                    "--",
                    "observe",
                    "--from-pod",
                    "default/curl-pod",
                    "--last",
                    "12",
                ])
            },
        )?;
        if hubble_relay::browser::chromium().is_some() {
            let png = std::env::temp_dir().join("cilium-lab-hubble-ui.png");
            step(
                "The Hubble UI's map of namespace default (headless Chromium; `cilium-lab hubble-ui` serves it on 127.0.0.1:12000)",
                "cilium-lab hubble-ui --screenshot hubble-ui.png",
                || self_cmd(&["hubble-ui", "--screenshot", &png.to_string_lossy()]),
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
