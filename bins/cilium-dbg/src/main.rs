// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg`: the per-node debug CLI. The `bpf` commands read the pinned maps directly
//! (as Cilium's do); the commands that talk to the agent come with the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cilium_bpf::maps::Maps;
use cilium_dbg::{LbView, ct_list, ipcache_list, lb_list, nat_list, rows_json, table};

#[derive(Debug, Parser)]
#[command(
    name = "cilium-dbg",
    about = "CLI for the local cilium-rs agent and datapath"
)]
struct Cli {
    /// BPF file system root the datapath pins under (`<bpf-root>/tc/globals`).
    #[arg(long, global = true, default_value = "/sys/fs/bpf")]
    bpf_root: PathBuf,
    /// The agent's API socket.
    #[arg(
        short = 'H',
        long,
        global = true,
        default_value = "unix:///var/run/cilium/cilium.sock"
    )]
    host: String,
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// The agent's status.
    Status {
        /// Only `OK`, or the error.
        #[arg(long)]
        brief: bool,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show the runtime options, or set them (`Debug=Enabled`, `PolicyEnforcement=always`).
    Config {
        /// `KEY=VALUE` assignments.
        assignments: Vec<String>,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Check the kernel for what the datapath needs (exit 1 when it cannot run here).
    Preflight {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Print the client version.
    Version,
    /// Direct access to the datapath's BPF maps.
    Bpf {
        #[command(subcommand)]
        command: Bpf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Json,
}

#[derive(Debug, Args)]
struct OutputArg {
    /// json output.
    #[arg(short, long)]
    output: Option<Output>,
}

#[derive(Debug, Subcommand)]
enum Bpf {
    /// Load-balancing maps.
    Lb {
        #[command(subcommand)]
        command: LbCmd,
    },
    /// The prefix -> identity cache.
    Ipcache {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Connection tracking.
    Ct {
        #[command(subcommand)]
        command: CtCmd,
    },
    /// BPF masquerade translations.
    Nat {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Endpoint policy maps.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Show an endpoint's policy map.
    Get {
        /// Endpoint id.
        endpoint: u16,
        /// Numeric identities (the only form without the agent).
        #[arg(short = 'n', long)]
        numeric: bool,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum LbCmd {
    /// List services, frontends, backends or reverse NAT entries.
    List {
        /// Raw frontend entries.
        #[arg(long, conflicts_with_all = ["backends", "revnat"])]
        frontends: bool,
        /// Backends.
        #[arg(long, conflicts_with = "revnat")]
        backends: bool,
        /// Reverse NAT entries.
        #[arg(long)]
        revnat: bool,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum ListOnly {
    /// List the entries.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum CtCmd {
    /// List the entries of a conntrack table.
    List {
        /// Which table (`global`).
        #[arg(value_parser = ["global"])]
        table: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

fn run(cli: Cli) -> Result<String, String> {
    let api = cilium_dbg::client::Client::new(&cli.host);
    let command = match cli.command {
        Top::Status { brief, out } => {
            let health = api.call("GET", "/healthz", None).map_err(|e| e.0)?;
            return Ok(match (brief, out.output) {
                (_, Some(Output::Json)) => format!("{health:#}\n"),
                (true, None) if health["cilium"]["state"] == "Ok" => "OK\n".to_owned(),
                (true, None) => {
                    return Err(format!(
                        "cilium: {}",
                        health["cilium"]["msg"].as_str().unwrap_or("not ready")
                    ));
                }
                (false, None) => cilium_dbg::client::status_lines(&health)
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect(),
            });
        }
        Top::Config { assignments, out } => {
            let config = if assignments.is_empty() {
                api.call("GET", "/config", None)
            } else {
                let patch = cilium_dbg::client::config_patch(&assignments).map_err(|e| e.0)?;
                api.call("PATCH", "/config", Some(&patch))
            }
            .map_err(|e| e.0)?;
            return Ok(match out.output {
                Some(Output::Json) => format!("{config:#}\n"),
                None => cilium_dbg::client::config_lines(&config)
                    .iter()
                    .map(|l| format!("{l}\n"))
                    .collect(),
            });
        }
        Top::Preflight { out } => {
            let report = cilium_bpf::preflight::Preflight::run();
            let text = match out.output {
                Some(Output::Json) => format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                ),
                None => report.to_string(),
            };
            if !report.datapath_ready() {
                print!("{text}");
                return Err("the datapath cannot run on this kernel (see above)".to_owned());
            }
            return Ok(text);
        }
        Top::Version => {
            return Ok(format!("Client: cilium-rs {}\n", env!("CARGO_PKG_VERSION")));
        }
        Top::Bpf { command } => command,
    };
    let maps = Maps::open(&cli.bpf_root).map_err(|e| {
        format!(
            "cannot open the datapath maps under {}: {e}",
            cli.bpf_root.display()
        )
    })?;
    let err = |e: cilium_bpf::DatapathError| e.to_string();
    Ok(match command {
        Bpf::Lb {
            command:
                LbCmd::List {
                    frontends,
                    backends,
                    revnat,
                    out,
                },
        } => {
            let view = match (frontends, backends, revnat) {
                (true, _, _) => LbView::Frontends,
                (_, true, _) => LbView::Backends,
                (_, _, true) => LbView::RevNat,
                _ => LbView::Services,
            };
            let (header, rows) = lb_list(&maps, view).map_err(err)?;
            match out.output {
                Some(Output::Json) => format!("{:#}\n", rows_json(&rows)),
                None => table(&header, &rows),
            }
        }
        Bpf::Ipcache {
            command: ListOnly::List { out },
        } => {
            let rows = ipcache_list(&maps).map_err(err)?;
            match out.output {
                Some(Output::Json) => format!("{:#}\n", rows_json(&rows)),
                None if rows.is_empty() => {
                    eprintln!("No entries found.");
                    String::new()
                }
                None => table(&["IP PREFIX/ADDRESS", "IDENTITY"], &rows),
            }
        }
        Bpf::Ct {
            command: CtCmd::List { out, .. },
        } => lines(&ct_list(&maps).map_err(err)?, &out),
        Bpf::Policy {
            command: PolicyCmd::Get { endpoint, out, .. },
        } => {
            let entries = cilium_bpf::policy::read_endpoint_policy(&cli.bpf_root, endpoint)
                .map_err(err)?
                .unwrap_or_default();
            match out.output {
                Some(Output::Json) => format!(
                    "{:#}\n",
                    serde_json::json!(
                        entries
                            .iter()
                            .map(|e| serde_json::json!({
                                "policy": if e.deny { "Deny" } else { "Allow" },
                                "direction": if e.egress { "Egress" } else { "Ingress" },
                                "identity": e.identity,
                                "port_proto": e.port_proto(),
                                "prefix": e.prefixlen,
                            }))
                            .collect::<Vec<_>>()
                    )
                ),
                None if entries.is_empty() => {
                    "Policy stats empty. Perhaps the policy enforcement is disabled?\n".to_owned()
                }
                None => cilium_dbg::policy_table(&entries),
            }
        }
        Bpf::Nat {
            command: ListOnly::List { out },
        } => lines(
            &nat_list(&maps, u64::from(cilium_bpf::conntrack::monotonic_seconds())).map_err(err)?,
            &out,
        ),
    })
}

fn lines(lines: &[String], out: &OutputArg) -> String {
    match out.output {
        Some(Output::Json) => format!("{:#}\n", serde_json::json!(lines)),
        None => lines.iter().map(|l| format!("{l}\n")).collect(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
