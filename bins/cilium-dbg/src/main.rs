// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg`: the per-node debug CLI. The `bpf` commands read the pinned maps directly
//! (as Cilium's do); the commands that talk to the agent come with the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cilium_bpf::maps::Maps;
use cilium_dbg::{
    LbView, agent, cleanup, ct_list, ipcache_list, lb_list, nat_list, rows_json, table,
};

#[derive(Debug, Parser)]
#[command(
    name = "cilium-dbg",
    about = "CLI for the local cilium-rs agent and datapath"
)]
struct Cli {
    /// BPF file system root the datapath pins under (`<bpf-root>/tc/globals`).
    #[arg(
        long,
        global = true,
        env = "CILIUM_BPF_ROOT",
        default_value = "/sys/fs/bpf"
    )]
    bpf_root: PathBuf,
    /// The agent's API socket (`$CILIUM_SOCK`, as upstream's client reads it).
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "CILIUM_SOCK",
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
        #[arg(long, conflicts_with = "verbose")]
        brief: bool,
        /// Everything: allocated addresses with their owners, endpoints, restore.
        #[arg(long)]
        verbose: bool,
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
    /// Remove the state cilium-rs's agent installed on this node: the programs on its
    /// devices, its routes and links, its BPF pins and its state directory. Lists what it
    /// will remove and asks first (--force: do not ask). Refused while the agent runs.
    Cleanup {
        /// Skip confirmation.
        #[arg(short, long)]
        force: bool,
        /// Remove all cilium state (also when neither this nor --bpf-state is given).
        #[arg(long, env = "CLEAN_CILIUM_STATE", value_parser = clap::builder::FalseyValueParser::new())]
        all_state: bool,
        /// Remove BPF state only: programs on devices and BPF pins.
        #[arg(long, env = "CLEAN_CILIUM_BPF_STATE", value_parser = clap::builder::FalseyValueParser::new())]
        bpf_state: bool,
        /// The agent's state directory.
        #[arg(long, env = "CILIUM_STATE_DIR", default_value = "/var/run/cilium")]
        state_dir: PathBuf,
    },
    /// Endpoints of this node.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCmd,
    },
    /// Services (load-balancing frontends and their backends).
    Service {
        #[command(subcommand)]
        command: ServiceCmd,
    },
    /// Security identities.
    Identity {
        #[command(subcommand)]
        command: IdentityCmd,
    },
    /// IPs and their identities.
    Ip {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Cluster nodes.
    Node {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Network policies.
    Policy {
        #[command(subcommand)]
        command: PolicyTop,
    },
    /// The agent's metrics.
    Metrics {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// The datapath's maps, through the agent.
    Map {
        #[command(subcommand)]
        command: MapCmd,
    },
    /// Direct access to the datapath's BPF maps.
    Bpf {
        #[command(subcommand)]
        command: Bpf,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCmd {
    /// List the endpoints.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// One endpoint, as JSON (`<id>`, `container-id:<id>`, `pod-name:<ns>:<pod>`).
    Get {
        /// The endpoint.
        id: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCmd {
    /// List the services.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// One service, as JSON.
    Get {
        /// Service id.
        id: u16,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Delete a service.
    Delete {
        /// Service id.
        id: u16,
    },
}

#[derive(Debug, Subcommand)]
enum MapCmd {
    /// List the maps with their entry counts.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// One map's entries.
    Get {
        /// The map's name, e.g. `cilium_lxc`.
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum IdentityCmd {
    /// List the identities.
    List {
        /// Only the identities of this node's endpoints, with their endpoint counts.
        #[arg(long)]
        endpoints: bool,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyTop {
    /// Print the imported policy documents.
    Get {
        #[command(flatten)]
        out: OutputArg,
    },
    /// Import policy documents from a YAML or JSON file (`-`: stdin).
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Delete policies: an origin prefix `<kind>/<namespace>/<name>`, or `--all`.
    Delete {
        /// The origin prefix.
        origin: Option<String>,
        /// Delete every policy.
        #[arg(long, conflicts_with = "origin")]
        all: bool,
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
    /// Maglev lookup tables.
    Maglev {
        #[command(subcommand)]
        command: MaglevCmd,
    },
}

#[derive(Debug, Subcommand)]
enum MaglevCmd {
    /// Every service's table.
    List {
        #[command(flatten)]
        out: OutputArg,
    },
    /// One service's table.
    Get {
        /// Service id.
        id: u16,
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
        Top::Cleanup {
            force,
            all_state,
            bpf_state,
            state_dir,
        } => {
            let config = cleanup::CleanupConfig {
                bpf_root: cli.bpf_root.clone(),
                state_dir,
                socket: api.socket().to_path_buf(),
                scope: cleanup::Scope::from_flags(all_state, bpf_state),
            };
            let mut input = std::io::stdin().lock();
            let mut out = std::io::stdout().lock();
            cleanup::run(&config, force, &mut input, &mut out)?;
            return Ok(String::new());
        }
        Top::Status {
            brief,
            verbose,
            out,
        } => {
            let health = api.call("GET", "/healthz", None).map_err(|e| e.0)?;
            if verbose && out.output.is_none() {
                return Ok(cilium_dbg::client::status_lines(&health)
                    .into_iter()
                    .chain(cilium_dbg::client::verbose_lines(&health))
                    .map(|l| format!("{l}\n"))
                    .collect());
            }
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
        Top::Endpoint { command } => {
            return match command {
                EndpointCmd::List { out } => list_or_json(
                    &api,
                    "/endpoint",
                    &out,
                    &agent::ENDPOINT_HEADER,
                    agent::endpoint_rows,
                ),
                EndpointCmd::Get { id, .. } => {
                    let ep = api
                        .call("GET", &format!("/endpoint/{id}"), None)
                        .map_err(|e| e.0)?;
                    Ok(format!("{:#}\n", serde_json::json!([ep])))
                }
            };
        }
        Top::Service { command } => {
            return match command {
                ServiceCmd::List { out } => list_or_json(
                    &api,
                    "/service",
                    &out,
                    &agent::SERVICE_HEADER,
                    agent::service_rows,
                ),
                ServiceCmd::Get { id, .. } => {
                    let svc = api
                        .call("GET", &format!("/service/{id}"), None)
                        .map_err(|e| e.0)?;
                    Ok(format!("{svc:#}\n"))
                }
                ServiceCmd::Delete { id } => {
                    api.call("DELETE", &format!("/service/{id}"), None)
                        .map_err(|e| e.0)?;
                    Ok(format!("Service {id} deleted\n"))
                }
            };
        }
        Top::Map { command } => {
            return match command {
                MapCmd::List { out } => {
                    let list = api.call("GET", "/map", None).map_err(|e| e.0)?;
                    Ok(match out.output {
                        Some(Output::Json) => format!("{list:#}\n"),
                        None => agent::grid(
                            &["Name", "Num entries", "Num errors", "Cache enabled"],
                            &agent::map_rows(&list),
                        ),
                    })
                }
                MapCmd::Get { name, out } => {
                    let map = api
                        .call("GET", &format!("/map/{name}"), None)
                        .map_err(|e| e.0)?;
                    let rows = agent::map_entry_rows(&map);
                    Ok(match out.output {
                        Some(Output::Json) => format!("{map:#}\n"),
                        None if rows.is_empty() => "No entries found.\n".to_owned(),
                        None => agent::grid(&["Key", "Value", "State", "Error"], &rows),
                    })
                }
            };
        }
        Top::Identity {
            command: IdentityCmd::List { endpoints, out },
        } => {
            let list = api.call("GET", "/identity", None).map_err(|e| e.0)?;
            let eps = if endpoints {
                Some(api.call("GET", "/endpoint", None).map_err(|e| e.0)?)
            } else {
                None
            };
            // With -o json, Cilium's identity models as the agent answers (upstream's
            // cilium-dbg prints what it decoded, not the table).
            if matches!(out.output, Some(Output::Json)) {
                return Ok(format!("{list:#}\n"));
            }
            let rows = agent::identity_rows(&list, eps.as_ref());
            let header: &[&str] = if endpoints {
                &["ID", "LABELS", "REFCOUNT"]
            } else {
                &["ID", "LABELS"]
            };
            return Ok(grid_or_json(header, &rows, &out));
        }
        Top::Ip {
            command: ListOnly::List { out },
        } => {
            let list = api.call("GET", "/ip", None).map_err(|e| e.0)?;
            if matches!(out.output, Some(Output::Json)) {
                return Ok(format!("{list:#}\n"));
            }
            return Ok(grid_or_json(
                &["IP", "IDENTITY", "SOURCE"],
                &agent::ip_rows(&list),
                &out,
            ));
        }
        Top::Node {
            command: ListOnly::List { out },
        } => {
            let nodes = api.call("GET", "/cluster/nodes", None).map_err(|e| e.0)?;
            if matches!(out.output, Some(Output::Json)) {
                return Ok(format!("{nodes:#}\n"));
            }
            return Ok(grid_or_json(
                &[
                    "Name",
                    "IPv4 Address",
                    "Endpoint CIDR",
                    "IPv6 Address",
                    "Endpoint CIDR",
                    "Source",
                ],
                &agent::node_rows(&nodes),
                &out,
            ));
        }
        Top::Policy { command } => {
            return match command {
                PolicyTop::Get { .. } => {
                    let p = api.call("GET", "/policy", None).map_err(|e| e.0)?;
                    // The rules come as one JSON text (Cilium's Policy model), printed
                    // as upstream prints them, with the revision after.
                    Ok(format!(
                        "{}\nRevision: {}\n",
                        p["policy"].as_str().unwrap_or("[]"),
                        p["revision"]
                    ))
                }
                PolicyTop::Import { file } => {
                    let text = if file.as_os_str() == "-" {
                        let mut t = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                            .map_err(|e| format!("reading stdin: {e}"))?;
                        t
                    } else {
                        std::fs::read_to_string(&file)
                            .map_err(|e| format!("reading {}: {e}", file.display()))?
                    };
                    let r = api
                        .call_raw("PUT", "/policy", text.into_bytes())
                        .map_err(|e| e.0)?;
                    Ok(format!(
                        "Imported {} ({} endpoints updated)\n",
                        strings_of(&r["imported"]).join(", "),
                        r["endpoints-updated"]
                    ))
                }
                PolicyTop::Delete { origin, all } => {
                    let query = match (origin, all) {
                        (Some(o), _) => format!("origin={o}"),
                        (None, true) => "all=true".to_owned(),
                        (None, false) => {
                            return Err("give an origin prefix or --all".to_owned());
                        }
                    };
                    let r = api
                        .call("DELETE", &format!("/policy?{query}"), None)
                        .map_err(|e| e.0)?;
                    Ok(format!(
                        "Deleted {} policies\n",
                        r["deleted"].as_array().map_or(0, Vec::len)
                    ))
                }
            };
        }
        Top::Metrics {
            command: ListOnly::List { out },
        } => {
            let text = metrics_text(&api)?;
            return Ok(grid_or_json(
                &["Metric", "Labels", "Value"],
                &agent::metric_rows(&text),
                &out,
            ));
        }
        Top::Version => {
            return Ok(format!("Client: cilium-rs {}\n", env!("CARGO_PKG_VERSION")));
        }
        Top::Bpf {
            command: Bpf::Lb {
                command: LbCmd::Maglev { command },
            },
        } => {
            let writer = cilium_bpf::lb::ServiceWriter::open(&cli.bpf_root).map_err(|e| {
                format!(
                    "cannot open the datapath maps under {}: {e}",
                    cli.bpf_root.display()
                )
            })?;
            let mut tables = writer.maglev_tables().map_err(|e| e.to_string())?;
            let out = match command {
                MaglevCmd::List { out } => out,
                MaglevCmd::Get { id, out } => {
                    tables.retain(|(i, _)| *i == id);
                    if tables.is_empty() {
                        return Err(format!("service {id} has no Maglev table"));
                    }
                    out
                }
            };
            return Ok(match out.output {
                Some(Output::Json) => format!(
                    "{:#}\n",
                    serde_json::Value::Object(
                        tables
                            .iter()
                            .map(|(id, t)| (format!("[{id}]/v4"), serde_json::json!(t)))
                            .collect()
                    )
                ),
                None if tables.is_empty() => "No entries found.\n".to_owned(),
                None => agent::grid(&["SVC ID", "LOOKUP TABLE"], &agent::maglev_rows(&tables)),
            });
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
            command: LbCmd::Maglev { .. },
        } => unreachable!("handled above"),
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
            command:
                PolicyCmd::Get {
                    endpoint,
                    numeric,
                    out,
                },
        } => {
            let entries = cilium_bpf::policy::read_endpoint_policy(&cli.bpf_root, endpoint)
                .map_err(err)?
                .unwrap_or_default();
            let stats = cilium_bpf::policy::read_policy_stats(&cli.bpf_root, endpoint, &entries)
                .map_err(err)?;
            match out.output {
                Some(Output::Json) => format!(
                    "{:#}\n",
                    serde_json::json!(
                        entries
                            .iter()
                            .zip(&stats)
                            .map(|(e, s)| serde_json::json!({
                                "policy": if e.deny { "Deny" } else { "Allow" },
                                "direction": if e.egress { "Egress" } else { "Ingress" },
                                "identity": e.identity,
                                "port_proto": e.port_proto(),
                                "prefix": e.prefixlen.saturating_sub(
                                    cilium_bpf::policy::STATIC_PREFIX_BITS),
                                "packets": s.map(|(p, _)| p),
                                "bytes": s.map(|(_, b)| b),
                            }))
                            .collect::<Vec<_>>()
                    )
                ),
                None if entries.is_empty() => {
                    "Policy stats empty. Perhaps the policy enforcement is disabled?\n".to_owned()
                }
                None => cilium_dbg::policy_table(&entries, &stats, numeric),
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

fn strings_of(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

fn grid_or_json(header: &[&str], rows: &[Vec<Vec<String>>], out: &OutputArg) -> String {
    match out.output {
        Some(Output::Json) => format!("{:#}\n", agent::grid_json(header, rows)),
        None => agent::grid(header, rows),
    }
}

/// A list from the agent: its JSON with `-o json`, else a grid of `rows(list)`.
fn list_or_json(
    api: &cilium_dbg::client::Client,
    path: &str,
    out: &OutputArg,
    header: &[&str],
    rows: fn(&serde_json::Value) -> Vec<Vec<Vec<String>>>,
) -> Result<String, String> {
    let list = api.call("GET", path, None).map_err(|e| e.0)?;
    Ok(match out.output {
        Some(Output::Json) => format!("{list:#}\n"),
        None => agent::grid(header, &rows(&list)),
    })
}

/// The metrics text: the API returns it as text, not JSON.
fn metrics_text(api: &cilium_dbg::client::Client) -> Result<String, String> {
    api.call_text("GET", "/metrics/").map_err(|e| e.0)
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
