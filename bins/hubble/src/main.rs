// SPDX-License-Identifier: Apache-2.0

//! `hubble`: the flows a cilium-rs node observed, through the Observer API (Hubble's
//! protobufs) on the agent's Hubble socket.
//!
//! - `hubble observe` with Hubble's flags: `--last N`, `--first N`, `--follow`,
//!   `--since`/`--until`, `--pod`, `--from-pod`, `--to-pod`, `--namespace`, `--label`,
//!   `--from-label`, `--to-label`, `--ip`, `--from-ip`, `--to-ip`, `--port`, `--from-port`,
//!   `--to-port`, `--verdict`, `--type`, `--protocol`, `--not`, `-o compact|json|table`.
//!   Directional flags (`--from-*`, `--to-*`) and the rest are ANDed in one filter; a
//!   bidirectional one (`--pod`, `--ip`, `--label`, `--port`, `--namespace`) makes two
//!   filters, the source side or the destination side, as Hubble does. `--not` puts the
//!   next filter flag into the denylist, as Hubble's does.
//! - `hubble status`, `hubble list nodes`.
//! - `--server unix://PATH|HOST:PORT|tls://HOST:PORT`; over TLS with Hubble's flags
//!   (`--tls`, `--tls-ca-cert-files`, `--tls-client-cert-file`, `--tls-client-key-file`,
//!   `--tls-server-name`).

use std::process::ExitCode;

use cilium_hubble::flow::Flow;
use cilium_hubble::observer::{connect_with, from_proto};
use cilium_hubble::proto::flow::{EventTypeFilter, FlowFilter};
use cilium_hubble::proto::observer::get_flows_response::ResponseTypes;
use cilium_hubble::proto::observer::{GetFlowsRequest, GetNodesRequest, ServerStatusRequest};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "hubble", about = "Observe the flows of cilium-rs nodes")]
struct Cli {
    /// The Hubble server or relay: `unix://PATH` or `HOST:PORT`.
    #[arg(
        long,
        global = true,
        default_value = "unix:///var/run/cilium/hubble.sock"
    )]
    server: String,
    /// Connect to the server over TLS (also implied by a `tls://` server).
    #[arg(long, global = true)]
    tls: bool,
    /// The CAs that sign the server's certificate (repeatable or comma-separated).
    #[arg(long, global = true, value_delimiter = ',')]
    tls_ca_cert_files: Vec<std::path::PathBuf>,
    /// A client certificate, for servers that verify their clients (mutual TLS).
    #[arg(long, global = true)]
    tls_client_cert_file: Option<std::path::PathBuf>,
    /// Its private key.
    #[arg(long, global = true)]
    tls_client_key_file: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry, when it is not the host of
    /// `--server` (a node's: `<node>.<cluster>.hubble-grpc.cilium.io`).
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

impl Cli {
    /// The TLS settings when `--tls` (or a `tls://` server) asks for TLS; TLS flags
    /// without it are an error rather than silently plain text.
    fn tls(&self) -> Result<Option<cilium_hubble::tls::ClientTls>, String> {
        let files = cilium_hubble::tls::ClientTls {
            ca_files: self.tls_ca_cert_files.clone(),
            cert_file: self.tls_client_cert_file.clone(),
            key_file: self.tls_client_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        };
        if self.tls || self.server.starts_with("tls://") {
            // Read now: a missing file is an error before any connection.
            files.config()?;
            Ok(Some(files))
        } else if files != Default::default() {
            Err("--tls-* flags need --tls (or a tls:// server)".into())
        } else {
            Ok(None)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Compact,
    Json,
    Table,
}

#[derive(Debug, Clone, Args)]
struct Observe {
    /// The last N flows (default 20 without --follow).
    #[arg(long)]
    last: Option<u64>,
    /// The first N flows.
    #[arg(long, conflicts_with = "last")]
    first: Option<u64>,
    /// Keep printing new flows.
    #[arg(short, long)]
    follow: bool,
    /// Flows since a time (RFC 3339) or a duration ago (`5m`, `30s`).
    #[arg(long)]
    since: Option<String>,
    /// Flows until a time (RFC 3339) or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// Flows from or to a pod (`[namespace/]name-prefix`).
    #[arg(long)]
    pod: Vec<String>,
    /// Flows from a pod.
    #[arg(long)]
    from_pod: Vec<String>,
    /// Flows to a pod.
    #[arg(long)]
    to_pod: Vec<String>,
    /// Flows from or to a Service's frontend (`[namespace/]name-prefix`).
    #[arg(long)]
    service: Vec<String>,
    /// Flows from a Service's frontend.
    #[arg(long)]
    from_service: Vec<String>,
    /// Flows to a Service's frontend.
    #[arg(long)]
    to_service: Vec<String>,
    /// Flows from or to pods of a namespace.
    #[arg(short = 'n', long)]
    namespace: Vec<String>,
    /// Flows from or to endpoints with a label (`key=value`).
    #[arg(short = 'l', long)]
    label: Vec<String>,
    /// Flows from endpoints with a label.
    #[arg(long)]
    from_label: Vec<String>,
    /// Flows to endpoints with a label.
    #[arg(long)]
    to_label: Vec<String>,
    /// Flows from or to an IP.
    #[arg(long)]
    ip: Vec<String>,
    /// Flows from an IP.
    #[arg(long)]
    from_ip: Vec<String>,
    /// Flows to an IP.
    #[arg(long)]
    to_ip: Vec<String>,
    /// Flows from or to a port.
    #[arg(long)]
    port: Vec<String>,
    /// Flows from a port.
    #[arg(long)]
    from_port: Vec<String>,
    /// Flows to a port.
    #[arg(long)]
    to_port: Vec<String>,
    /// Verdicts: FORWARDED, DROPPED, ...
    #[arg(long)]
    verdict: Vec<String>,
    /// Event types: trace, drop, policy-verdict.
    #[arg(short = 't', long = "type")]
    event_type: Vec<String>,
    /// Protocols: tcp, udp, icmp.
    #[arg(long)]
    protocol: Vec<String>,
    /// Drop reasons by name (`POLICY_DENIED`, ...).
    #[arg(long)]
    drop_reason_desc: Vec<String>,
    /// Puts the next filter flag into the denylist (`--not --verdict DROPPED`), as Hubble's
    /// `--not` does. (Each occurrence is kept, so that its position on the command line is
    /// known: clap reports only the last position of a counted flag.)
    #[arg(long, num_args = 0, default_missing_value = "true", action = clap::ArgAction::Append)]
    not: Vec<bool>,
    /// The filter values `--not` applies to, by flag id and position among the flag's
    /// values (filled from the command line's order, see [`negated`]).
    #[arg(skip)]
    negated: Vec<(&'static str, usize)>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "compact")]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print flows.
    Observe(Box<Observe>),
    /// The server's status.
    Status,
    /// Lists.
    List {
        /// `nodes`.
        #[arg(value_parser = ["nodes"])]
        what: String,
    },
}

fn verdict_number(v: &str) -> Result<i32, String> {
    Ok(match v.to_ascii_uppercase().as_str() {
        "VERDICT_UNKNOWN" => 0,
        "FORWARDED" => 1,
        "DROPPED" => 2,
        "ERROR" => 3,
        "AUDIT" => 4,
        "REDIRECTED" => 5,
        "TRACED" => 6,
        "TRANSLATED" => 7,
        other => {
            return Err(format!(
                "--verdict {other}: expected FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED or TRANSLATED"
            ));
        }
    })
}

fn event_type(t: &str) -> Result<EventTypeFilter, String> {
    let n = match t {
        "drop" => 1,
        "trace" => 4,
        "policy-verdict" => 5,
        other => {
            return Err(format!(
                "--type {other}: expected trace, drop or policy-verdict"
            ));
        }
    };
    Ok(EventTypeFilter {
        r#type: n,
        ..EventTypeFilter::default()
    })
}

/// A time flag: RFC 3339, or a duration ago.
fn time_flag(flag: &str, v: &str) -> Result<prost_types::Timestamp, String> {
    let ns = match cilium_hubble::observer::parse_time(v) {
        Some(ns) => ns,
        None => {
            let ago =
                cilium_core::config::parse_duration(v).map_err(|e| format!("--{flag}: {e}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            now.saturating_sub(u128::from(ago) * 1_000_000_000)
        }
    };
    Ok(cilium_hubble::observer::timestamp(ns))
}

/// The filter flags of `observe`, by clap id: the ones `--not` can apply to.
const FILTER_FLAGS: [&str; 20] = [
    "pod",
    "from_pod",
    "to_pod",
    "service",
    "from_service",
    "to_service",
    "namespace",
    "label",
    "from_label",
    "to_label",
    "ip",
    "from_ip",
    "to_ip",
    "port",
    "from_port",
    "to_port",
    "verdict",
    "event_type",
    "protocol",
    "drop_reason_desc",
];

impl Observe {
    /// A filter flag's values by clap id.
    fn values_mut(&mut self, id: &str) -> Option<&mut Vec<String>> {
        Some(match id {
            "pod" => &mut self.pod,
            "from_pod" => &mut self.from_pod,
            "to_pod" => &mut self.to_pod,
            "service" => &mut self.service,
            "from_service" => &mut self.from_service,
            "to_service" => &mut self.to_service,
            "namespace" => &mut self.namespace,
            "label" => &mut self.label,
            "from_label" => &mut self.from_label,
            "to_label" => &mut self.to_label,
            "ip" => &mut self.ip,
            "from_ip" => &mut self.from_ip,
            "to_ip" => &mut self.to_ip,
            "port" => &mut self.port,
            "from_port" => &mut self.from_port,
            "to_port" => &mut self.to_port,
            "verdict" => &mut self.verdict,
            "event_type" => &mut self.event_type,
            "protocol" => &mut self.protocol,
            "drop_reason_desc" => &mut self.drop_reason_desc,
            _ => return None,
        })
    }

    /// The selection split as Hubble splits it: the values `--not` applies to (the
    /// denylist) and the rest (the allowlist).
    fn split(&self) -> (Observe, Observe) {
        let mut allow = self.clone();
        let mut deny = self.clone();
        for id in FILTER_FLAGS {
            let all = allow.values_mut(id).map(std::mem::take).unwrap_or_default();
            let (mut a, mut d) = (Vec::new(), Vec::new());
            for (i, v) in all.into_iter().enumerate() {
                if self.negated.contains(&(id, i)) {
                    d.push(v);
                } else {
                    a.push(v);
                }
            }
            if let Some(slot) = allow.values_mut(id) {
                *slot = a;
            }
            if let Some(slot) = deny.values_mut(id) {
                *slot = d;
            }
        }
        (allow, deny)
    }
}

/// Which filter values `--not` applies to: each `--not` puts the next filter flag given
/// after it into the denylist; two `--not` in a row are an error, as in Hubble.
fn negated(m: &clap::ArgMatches) -> Result<Vec<(&'static str, usize)>, String> {
    let nots: Vec<usize> = m
        .indices_of("not")
        .map(Iterator::collect)
        .unwrap_or_default();
    // Every filter value's command-line position, in order.
    let mut values: Vec<(usize, &'static str, usize)> = Vec::new();
    for id in FILTER_FLAGS {
        if let Some(idx) = m.indices_of(id) {
            values.extend(idx.enumerate().map(|(n, at)| (at, id, n)));
        }
    }
    values.sort_unstable();
    let mut out = Vec::new();
    for (k, &not) in nots.iter().enumerate() {
        let next = values.iter().find(|(at, _, _)| *at > not);
        let following_not = nots.get(k + 1).copied();
        match next {
            Some(&(at, id, n)) if following_not.is_none_or(|f| at < f) => out.push((id, n)),
            _ if following_not.is_some() => {
                return Err("consecutive --not statements".into());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The request the flags ask for.
fn request(o: &Observe) -> Result<GetFlowsRequest, String> {
    let (allow, deny) = o.split();
    let whitelist = filters(&allow)?;
    let blacklist = filters(&deny)?;
    let (number, first) = match (o.last, o.first) {
        (_, Some(n)) => (n, true),
        (Some(n), None) => (n, false),
        (None, None) if o.follow => (0, false),
        (None, None) => (20, false),
    };
    Ok(GetFlowsRequest {
        number,
        first,
        follow: o.follow,
        whitelist,
        blacklist,
        since: o
            .since
            .as_deref()
            .map(|v| time_flag("since", v))
            .transpose()?,
        until: o
            .until
            .as_deref()
            .map(|v| time_flag("until", v))
            .transpose()?,
    })
}

/// The FlowFilters of one selection: one, or two for a flag that matches either side
/// (`--pod`, `--ip`, `--label`, `--port`, `--service`, `--namespace`), none when empty.
fn filters(o: &Observe) -> Result<Vec<FlowFilter>, String> {
    let mut base = FlowFilter {
        source_pod: o.from_pod.clone(),
        destination_pod: o.to_pod.clone(),
        source_service: o.from_service.clone(),
        destination_service: o.to_service.clone(),
        source_label: o.from_label.clone(),
        destination_label: o.to_label.clone(),
        source_ip: o.from_ip.clone(),
        destination_ip: o.to_ip.clone(),
        source_port: o.from_port.clone(),
        destination_port: o.to_port.clone(),
        protocol: o.protocol.clone(),
        ..FlowFilter::default()
    };
    for v in &o.verdict {
        base.verdict.push(verdict_number(v)?);
    }
    for t in &o.event_type {
        base.event_type.push(event_type(t)?);
    }
    for d in &o.drop_reason_desc {
        let reason = cilium_hubble::proto::flow::DropReason::from_str_name(&d.to_uppercase())
            .filter(|r| *r as i32 != 0)
            .ok_or_else(|| {
                format!("--drop-reason-desc {d}: not a drop reason this datapath reports")
            })?;
        base.drop_reason_desc.push(reason as i32);
    }
    let pods: Vec<String> = o
        .pod
        .iter()
        .cloned()
        .chain(o.namespace.iter().map(|ns| format!("{ns}/")))
        .collect();
    let bidirectional = !(pods.is_empty()
        && o.ip.is_empty()
        && o.label.is_empty()
        && o.port.is_empty()
        && o.service.is_empty());
    let filters = if bidirectional {
        let mut from = base.clone();
        from.source_pod.extend(pods.iter().cloned());
        from.source_ip.extend(o.ip.iter().cloned());
        from.source_label.extend(o.label.iter().cloned());
        from.source_port.extend(o.port.iter().cloned());
        from.source_service.extend(o.service.iter().cloned());
        let mut to = base;
        to.destination_pod.extend(pods);
        to.destination_ip.extend(o.ip.iter().cloned());
        to.destination_label.extend(o.label.iter().cloned());
        to.destination_port.extend(o.port.iter().cloned());
        to.destination_service.extend(o.service.iter().cloned());
        vec![from, to]
    } else if base == FlowFilter::default() {
        Vec::new()
    } else {
        vec![base]
    };
    Ok(filters)
}

fn table_row(f: &Flow) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        f.time.compact(),
        Flow::side_name(&f.source, f.source_service.as_ref(), f.source_ip()),
        Flow::side_name(
            &f.destination,
            f.destination_service.as_ref(),
            f.destination_ip()
        ),
        f.trace_observation_point
            .as_deref()
            .unwrap_or("-")
            .to_lowercase()
            .replace('_', "-"),
        f.verdict.name(),
        f.summary
    )
}

async fn run(cli: Cli) -> Result<(), String> {
    // Bad flags are errors before any connection.
    let req = match &cli.command {
        Cmd::Observe(o) => Some(request(o)?),
        _ => None,
    };
    let tls = cli.tls()?;
    let mut client =
        connect_with(&cli.server, std::time::Duration::from_secs(5), tls.as_ref()).await?;
    match cli.command {
        Cmd::Observe(o) => {
            let req = req.unwrap_or_default();
            let mut stream = client
                .get_flows(req)
                .await
                .map_err(|e| format!("GetFlows: {}", e.message()))?
                .into_inner();
            if matches!(o.output, Output::Table) {
                println!("TIMESTAMP\tSOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY");
            }
            while let Some(item) = stream.message().await.map_err(|e| e.message().to_owned())? {
                match item.response_types {
                    Some(ResponseTypes::Flow(p)) => {
                        let f = from_proto(p);
                        match o.output {
                            Output::Compact => println!("{}", f.compact()),
                            Output::Table => println!("{}", table_row(&f)),
                            Output::Json => println!(
                                "{}",
                                serde_json::json!({"flow": f, "node_name": item.node_name, "time": f.time})
                            ),
                        }
                    }
                    Some(ResponseTypes::LostEvents(l)) => {
                        let source = l.source().as_str_name();
                        if matches!(o.output, Output::Json) {
                            println!(
                                "{}",
                                serde_json::json!({
                                    "lost_events": {"source": source, "num_events_lost": l.num_events_lost},
                                    "node_name": item.node_name,
                                })
                            );
                        } else {
                            eprintln!(
                                "EVENTS LOST: {source} CPU(0) {} (node {})",
                                l.num_events_lost, item.node_name
                            );
                        }
                    }
                    Some(ResponseTypes::NodeStatus(n)) => {
                        eprintln!(
                            "{}: {} {}",
                            n.state_change().as_str_name(),
                            n.node_names.join(", "),
                            n.message
                        );
                    }
                    None => {}
                }
            }
            Ok(())
        }
        Cmd::Status => {
            let s = client
                .server_status(ServerStatusRequest {})
                .await
                .map_err(|e| e.message().to_owned())?
                .into_inner();
            cilium_hubble::observer::check_health(
                &cli.server,
                std::time::Duration::from_secs(5),
                tls.as_ref(),
            )
            .await?;
            println!("Healthcheck (via {}): Ok", cli.server);
            let pct = if s.max_flows == 0 {
                0.0
            } else {
                100.0 * s.num_flows as f64 / s.max_flows as f64
            };
            println!(
                "Current/Max Flows: {}/{} ({pct:.2}%)",
                s.num_flows, s.max_flows
            );
            println!("Flows/s: {:.2}", s.flows_rate);
            let connected = s.num_connected_nodes.unwrap_or(0);
            let unavailable = s.num_unavailable_nodes.unwrap_or(0);
            println!("Connected Nodes: {connected}/{}", connected + unavailable);
            Ok(())
        }
        Cmd::List { .. } => {
            let nodes = client
                .get_nodes(GetNodesRequest {})
                .await
                .map_err(|e| e.message().to_owned())?
                .into_inner();
            println!("NAME\tSTATUS\tAGE\tFLOWS/S\tCURRENT/MAX-FLOWS");
            for n in nodes.nodes {
                let secs = n.uptime_ns / 1_000_000_000;
                let rate = n.seen_flows as f64 / (secs.max(1) as f64);
                println!(
                    "{}\t{}\t{}s\t{rate:.2}\t{}/{}",
                    n.name,
                    if n.state == 1 {
                        "Connected"
                    } else {
                        "Unavailable"
                    },
                    secs,
                    n.num_flows,
                    n.max_flows
                );
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let (Cmd::Observe(o), Some(m)) = (&mut cli.command, matches.subcommand_matches("observe")) {
        match negated(m) {
            Ok(n) => o.negated = n,
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request `hubble observe ARGS` sends.
    fn request_of(args: &[&str]) -> Result<GetFlowsRequest, String> {
        let argv = ["hubble", "observe"].iter().chain(args);
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let Cmd::Observe(o) = &mut cli.command else {
            unreachable!()
        };
        o.negated = negated(matches.subcommand_matches("observe").unwrap())?;
        request(o)
    }

    #[test]
    fn not_denies_the_next_filter_and_the_denied_make_one_filter() {
        let r = request_of(&[
            "--not",
            "--from-pod",
            "default/a",
            "--to-pod",
            "default/b",
            "--not",
            "--verdict",
            "DROPPED",
        ])
        .unwrap();
        assert_eq!(r.whitelist.len(), 1);
        assert_eq!(r.whitelist[0].destination_pod, ["default/b"]);
        assert!(r.whitelist[0].source_pod.is_empty());
        assert_eq!(r.blacklist.len(), 1);
        assert_eq!(r.blacklist[0].source_pod, ["default/a"]);
        assert_eq!(r.blacklist[0].verdict, [2]);
        assert!(r.blacklist[0].destination_pod.is_empty());
        let e = request_of(&["--not", "--not", "--verdict", "DROPPED"]).unwrap_err();
        assert!(e.contains("consecutive --not"), "{e}");
    }
}
