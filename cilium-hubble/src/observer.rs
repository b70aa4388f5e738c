// SPDX-License-Identifier: Apache-2.0

//! Hubble's Observer gRPC API (`GetFlows`, `GetNodes`, `ServerStatus`) over a node's flow
//! ring, and its client, on a unix socket. The messages are Hubble's (`proto/`, written
//! for this project with Hubble's field numbers), so Hubble's clients can read them.
//!
//! `GetFlows` answers with the newest `number` flows (`first`: the oldest) that pass the
//! allowlist and denylist and fall between `since` and `until`; with `follow` it goes on
//! with every new flow (without `number`, from the request on, or from `since` when
//! given), and reports the flows a slow reader lost as `lost_events` instead of stalling
//! the node (and the events the datapath could not queue, as the agent counts them).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::filter::{FlowFilter, passes};
use crate::flow::{self, Flow, Layer4, TcpFlags, TrafficDirection, Verdict};
use crate::proto;
use crate::ring::Read;

/// Where the server takes its flows from: a node's observer.
pub trait FlowSource: Send + Sync + 'static {
    /// The node's name.
    fn node_name(&self) -> String;
    /// Flows written since position `from` (see [`crate::ring::Ring::read_from`]).
    fn read_from(&self, from: u64) -> Read<Flow>;
    /// (flows held, capacity, flows ever seen).
    fn status(&self) -> (usize, usize, u64);
    /// How long the source has been running.
    fn uptime(&self) -> Duration;
    /// Events the datapath could not queue for the reader since the source started (its
    /// ring buffer was full); followers are told of each increase.
    fn datapath_lost(&self) -> u64 {
        0
    }
}

/// A node's flows in memory, as the Observer API serves them: a ring of the last flows
/// (what a reader of the datapath's events fills) and the count of events the datapath
/// could not queue.
#[derive(Debug)]
pub struct RingSource {
    node: String,
    started: std::time::Instant,
    ring: std::sync::Mutex<crate::ring::Ring<Flow>>,
    /// Events the datapath could not queue since the source started (the reader sets it).
    pub datapath_lost: std::sync::atomic::AtomicU64,
}

impl RingSource {
    /// The flows of node `node`, keeping `capacity` of them (2^n - 1).
    pub fn new(node: &str, capacity: usize) -> Result<Self, crate::ring::BadCapacity> {
        Ok(RingSource {
            node: node.to_owned(),
            started: std::time::Instant::now(),
            ring: std::sync::Mutex::new(crate::ring::Ring::new(capacity)?),
            datapath_lost: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, crate::ring::Ring<Flow>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a flow (the oldest goes when the ring is full).
    pub fn push(&self, flow: Flow) {
        self.ring().push(flow);
    }

    /// Adds flows at once: a reader sees all of them or none.
    pub fn push_all(&self, flows: impl IntoIterator<Item = Flow>) {
        let mut ring = self.ring();
        for f in flows {
            ring.push(f);
        }
    }
}

impl FlowSource for RingSource {
    fn node_name(&self) -> String {
        self.node.clone()
    }
    fn read_from(&self, from: u64) -> Read<Flow> {
        self.ring().read_from(from)
    }
    fn status(&self) -> (usize, usize, u64) {
        let r = self.ring();
        (r.len(), r.capacity(), r.written())
    }
    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
    fn datapath_lost(&self) -> u64 {
        self.datapath_lost
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time (`2026-11-27T03:10:14Z`, with up
/// to 9 fractional digits, `Z` or a numeric offset); `None` for another form or a field out
/// of range.
pub fn parse_time(rfc: &str) -> Option<u128> {
    // `YYYY-MM-DDTHH:MM:SS`, then an optional fraction of 1 to 9 digits, then `Z` or a
    // numeric offset `+HH:MM` / `-HH:MM` (RFC 3339; `t` and `z` accepted as it allows).
    let b = rfc.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = rfc.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hh, mm, ss) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &rfc[19..];
    let mut ns: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        ns = frac[..n].parse::<i64>().ok()? * 10_i64.pow(9 - n as u32);
        rest = &frac[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let part = |a: &u8, c: &u8| -> Option<i64> {
                (a.is_ascii_digit() && c.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(c - b'0'))
            };
            let (oh, om) = (part(h1, h2)?, part(m1, m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    u128::try_from(secs)
        .ok()
        .map(|s| s * 1_000_000_000 + ns as u128)
}

/// A protobuf timestamp of nanoseconds since the Unix epoch.
pub fn timestamp(ns: u128) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

/// Nanoseconds since the Unix epoch of a protobuf timestamp (0 before the epoch).
pub fn timestamp_ns(t: &prost_types::Timestamp) -> u128 {
    u128::try_from(t.seconds).unwrap_or(0) * 1_000_000_000 + u128::try_from(t.nanos).unwrap_or(0)
}

const POINTS: [(&str, i32); 12] = [
    ("TO_PROXY", 1),
    ("TO_HOST", 2),
    ("TO_STACK", 3),
    ("TO_OVERLAY", 4),
    ("TO_ENDPOINT", 101),
    ("FROM_ENDPOINT", 5),
    ("FROM_PROXY", 6),
    ("FROM_HOST", 7),
    ("FROM_STACK", 8),
    ("FROM_OVERLAY", 9),
    ("FROM_NETWORK", 10),
    ("TO_NETWORK", 11),
];

const VERDICTS: [Verdict; 8] = [
    Verdict::VerdictUnknown,
    Verdict::Forwarded,
    Verdict::Dropped,
    Verdict::Error,
    Verdict::Audit,
    Verdict::Redirected,
    Verdict::Traced,
    Verdict::Translated,
];

fn direction_number(d: TrafficDirection) -> i32 {
    match d {
        TrafficDirection::TrafficDirectionUnknown => 0,
        TrafficDirection::Ingress => 1,
        TrafficDirection::Egress => 2,
    }
}

fn direction_of(n: i32) -> TrafficDirection {
    match n {
        1 => TrafficDirection::Ingress,
        2 => TrafficDirection::Egress,
        _ => TrafficDirection::TrafficDirectionUnknown,
    }
}

fn endpoint_to(ep: &flow::Endpoint) -> proto::flow::Endpoint {
    proto::flow::Endpoint {
        id: u32::from(ep.id),
        identity: ep.identity,
        namespace: ep.namespace.clone(),
        labels: ep.labels.to_vec(),
        pod_name: ep.pod_name.clone(),
        workloads: Vec::new(),
    }
}

fn endpoint_from(ep: Option<proto::flow::Endpoint>) -> flow::Endpoint {
    let ep = ep.unwrap_or_default();
    flow::Endpoint {
        id: u16::try_from(ep.id).unwrap_or(0),
        identity: ep.identity,
        namespace: ep.namespace,
        labels: ep.labels.into(),
        pod_name: ep.pod_name,
    }
}

fn service_to(s: &flow::Service) -> proto::flow::Service {
    proto::flow::Service {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
    }
}

fn service_from(s: proto::flow::Service) -> flow::Service {
    flow::Service {
        name: s.name,
        namespace: s.namespace,
    }
}

/// A flow in Hubble's protobuf form.
pub fn to_proto(f: &Flow) -> proto::flow::Flow {
    use proto::flow::layer4::Protocol;
    let l4 = f.l4.as_ref().map(|l| proto::flow::Layer4 {
        protocol: Some(match *l {
            Layer4::Tcp {
                source_port,
                destination_port,
                flags,
            } => Protocol::Tcp(proto::flow::Tcp {
                source_port: u32::from(source_port),
                destination_port: u32::from(destination_port),
                flags: Some(proto::flow::TcpFlags {
                    fin: flags.fin,
                    syn: flags.syn,
                    rst: flags.rst,
                    psh: flags.psh,
                    ack: flags.ack,
                    urg: flags.urg,
                    ..proto::flow::TcpFlags::default()
                }),
            }),
            Layer4::Udp {
                source_port,
                destination_port,
            } => Protocol::Udp(proto::flow::Udp {
                source_port: u32::from(source_port),
                destination_port: u32::from(destination_port),
            }),
            Layer4::Icmp4 { icmp_type } => Protocol::IcmPv4(proto::flow::IcmPv4 {
                r#type: u32::from(icmp_type),
                code: 0,
            }),
        }),
    });
    proto::flow::Flow {
        time: Some(timestamp(f.time.unix_ns())),
        uuid: String::new(),
        verdict: i32::from(f.verdict.number()),
        drop_reason: f.drop_reason.map_or(0, u32::from),
        ip: f.ip.as_ref().map(|ip| proto::flow::Ip {
            source: ip.source.to_string(),
            destination: ip.destination.to_string(),
            ip_version: 1,
            encrypted: false,
        }),
        l4,
        source: Some(endpoint_to(&f.source)),
        destination: Some(endpoint_to(&f.destination)),
        r#type: 1,
        node_name: f.node_name.clone(),
        source_service: f.source_service.as_ref().map(service_to),
        destination_service: f.destination_service.as_ref().map(service_to),
        event_type: Some(proto::flow::CiliumEventType {
            r#type: i32::from(f.event_type.kind),
            sub_type: i32::from(f.event_type.sub_type),
        }),
        traffic_direction: direction_number(f.traffic_direction),
        // Cilium's policy match types: 2 is L3-L4.
        policy_match_type: f.policy_match_type,
        trace_observation_point: f
            .trace_observation_point
            .as_deref()
            .and_then(|p| POINTS.iter().find(|(n, _)| *n == p))
            .map_or(0, |(_, v)| *v),
        drop_reason_desc: f.drop_reason.map_or(0, i32::from),
        is_reply: Some(f.is_reply),
        summary: f.summary.clone(),
    }
}

/// A flow from Hubble's protobuf form (what a client prints).
pub fn from_proto(p: proto::flow::Flow) -> Flow {
    use proto::flow::layer4::Protocol;
    let addr = |s: &str| s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let event = p.event_type.unwrap_or_default();
    let port = |v: u32| u16::try_from(v).unwrap_or(0);
    Flow {
        time: flow::FlowTime(p.time.as_ref().map_or(0, timestamp_ns)),
        verdict: usize::try_from(p.verdict)
            .ok()
            .and_then(|i| VERDICTS.get(i).copied())
            .unwrap_or(Verdict::VerdictUnknown),
        drop_reason: (p.drop_reason != 0).then(|| u8::try_from(p.drop_reason).unwrap_or(0)),
        drop_reason_desc: proto::flow::DropReason::try_from(p.drop_reason_desc)
            .ok()
            .filter(|d| *d != proto::flow::DropReason::Unknown)
            .map(|d| d.as_str_name().to_owned()),
        ip: p.ip.map(|ip| flow::Ip {
            source: addr(&ip.source),
            destination: addr(&ip.destination),
            ip_version: "IPv4".into(),
        }),
        l4: p.l4.and_then(|l| l.protocol).map(|proto| match proto {
            Protocol::Tcp(t) => {
                let f = t.flags.unwrap_or_default();
                Layer4::Tcp {
                    source_port: port(t.source_port),
                    destination_port: port(t.destination_port),
                    flags: TcpFlags {
                        fin: f.fin,
                        syn: f.syn,
                        rst: f.rst,
                        psh: f.psh,
                        ack: f.ack,
                        urg: f.urg,
                    },
                }
            }
            Protocol::Udp(u) => Layer4::Udp {
                source_port: port(u.source_port),
                destination_port: port(u.destination_port),
            },
            Protocol::IcmPv4(i) => Layer4::Icmp4 {
                icmp_type: u8::try_from(i.r#type).unwrap_or(0),
            },
        }),
        source: endpoint_from(p.source),
        destination: endpoint_from(p.destination),
        flow_type: "L3_L4".into(),
        node_name: p.node_name,
        source_service: p.source_service.map(service_from),
        destination_service: p.destination_service.map(service_from),
        event_type: flow::EventType {
            kind: u8::try_from(event.r#type).unwrap_or(0),
            sub_type: u8::try_from(event.sub_type).unwrap_or(0),
        },
        traffic_direction: direction_of(p.traffic_direction),
        trace_observation_point: POINTS
            .iter()
            .find(|(_, v)| *v == p.trace_observation_point)
            .map(|(n, _)| (*n).to_owned()),
        is_reply: p.is_reply.unwrap_or(false),
        policy_match_type: p.policy_match_type,
        summary: p.summary,
    }
}

/// A Hubble filter in this server's terms; fields it cannot evaluate are refused by name.
pub fn filter_from(p: &proto::flow::FlowFilter) -> Result<FlowFilter, Status> {
    let unsupported = [
        ("uuid", p.uuid.is_empty()),
        ("source_fqdn", p.source_fqdn.is_empty()),
        ("destination_fqdn", p.destination_fqdn.is_empty()),
        ("http_status_code", p.http_status_code.is_empty()),
        ("dns_query", p.dns_query.is_empty()),
        ("http_method", p.http_method.is_empty()),
        ("http_path", p.http_path.is_empty()),
        ("ip_version", p.ip_version.is_empty()),
        ("tcp_flags", p.tcp_flags.is_empty()),
        ("source_workload", p.source_workload.is_empty()),
        ("destination_workload", p.destination_workload.is_empty()),
        ("trace_id", p.trace_id.is_empty()),
        ("http_url", p.http_url.is_empty()),
        ("http_header", p.http_header.is_empty()),
        ("source_ip_xlated", p.source_ip_xlated.is_empty()),
        ("interface", p.interface.is_empty()),
        ("node_labels", p.node_labels.is_empty()),
        ("source_cluster_name", p.source_cluster_name.is_empty()),
        (
            "destination_cluster_name",
            p.destination_cluster_name.is_empty(),
        ),
        ("ip_trace_id", p.ip_trace_id.is_empty()),
        ("encrypted", p.encrypted.is_empty()),
        (
            "experimental.cel_expression",
            p.experimental
                .as_ref()
                .is_none_or(|e| e.cel_expression.is_empty()),
        ),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, empty)| !empty) {
        return Err(Status::unimplemented(format!(
            "flow filter field {name} is not supported by this server"
        )));
    }
    let ips = |v: &[String], what: &str| {
        v.iter()
            .map(|s| {
                s.parse::<Ipv4Addr>().map_err(|_| {
                    Status::invalid_argument(format!("{what} {s:?}: an IPv4 address is expected"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |v: &[String], what: &str| {
        v.iter()
            .map(|s| {
                s.parse::<u16>().map_err(|_| {
                    Status::invalid_argument(format!("{what} {s:?}: a port number is expected"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut event_type = Vec::new();
    for e in &p.event_type {
        if e.match_sub_type {
            return Err(Status::unimplemented(
                "event type filters on sub_type are not supported",
            ));
        }
        event_type
            .push(u8::try_from(e.r#type).map_err(|_| Status::invalid_argument("event type"))?);
    }
    Ok(FlowFilter {
        source_ip: ips(&p.source_ip, "source_ip")?,
        destination_ip: ips(&p.destination_ip, "destination_ip")?,
        source_pod: p.source_pod.clone(),
        destination_pod: p.destination_pod.clone(),
        source_service: p.source_service.clone(),
        destination_service: p.destination_service.clone(),
        source_label: p.source_label.clone(),
        destination_label: p.destination_label.clone(),
        source_identity: p.source_identity.clone(),
        destination_identity: p.destination_identity.clone(),
        verdict: p
            .verdict
            .iter()
            .map(|v| {
                usize::try_from(*v)
                    .ok()
                    .and_then(|i| VERDICTS.get(i).copied())
                    .ok_or_else(|| Status::invalid_argument(format!("verdict {v}")))
            })
            .collect::<Result<_, _>>()?,
        event_type,
        protocol: p.protocol.clone(),
        source_port: ports(&p.source_port, "source_port")?,
        destination_port: ports(&p.destination_port, "destination_port")?,
        reply: p.reply.clone(),
        node_name: p.node_name.clone(),
        traffic_direction: p
            .traffic_direction
            .iter()
            .map(|d| direction_of(*d))
            .collect(),
        drop_reason_desc: p
            .drop_reason_desc
            .iter()
            .map(|d| {
                proto::flow::DropReason::try_from(*d)
                    .map(|r| r.as_str_name().to_owned())
                    .map_err(|_| Status::invalid_argument(format!("drop_reason_desc {d}")))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// The Observer service over a flow source.
#[derive(Debug)]
pub struct ObserverService<S> {
    source: Arc<S>,
}

impl<S> ObserverService<S> {
    /// A service answering from `source`.
    pub fn new(source: Arc<S>) -> Self {
        ObserverService { source }
    }
}

fn response(
    node: &str,
    item: proto::observer::get_flows_response::ResponseTypes,
    time: u128,
) -> proto::observer::GetFlowsResponse {
    proto::observer::GetFlowsResponse {
        response_types: Some(item),
        node_name: node.to_owned(),
        time: Some(timestamp(time)),
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

type FlowStream =
    Pin<Box<dyn Stream<Item = Result<proto::observer::GetFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: FlowSource> proto::observer::observer_server::Observer for ObserverService<S> {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<proto::observer::GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        let allow = req
            .whitelist
            .iter()
            .map(filter_from)
            .collect::<Result<Vec<_>, _>>()?;
        let deny = req
            .blacklist
            .iter()
            .map(filter_from)
            .collect::<Result<Vec<_>, _>>()?;
        let since = req.since.as_ref().map(timestamp_ns);
        let until = req.until.as_ref().map(timestamp_ns);
        let wanted = move |f: &Flow| {
            let t = f.time.unix_ns();
            passes(f, &allow, &deny) && since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
        };
        let source = self.source.clone();
        let node = source.node_name();
        // Following without a number starts from now, unless `since` asks for the past:
        // then the ring is not copied at all.
        let (matching, next) = if req.follow && req.number == 0 && since.is_none() {
            (Vec::new(), source.status().2)
        } else {
            let first = source.read_from(0);
            let mut matching: Vec<Flow> = first.items.into_iter().filter(|f| wanted(f)).collect();
            let n = usize::try_from(req.number).unwrap_or(usize::MAX);
            if req.number > 0 && req.first {
                matching.truncate(n);
            } else if req.number > 0 {
                let skip = matching.len().saturating_sub(n);
                matching.drain(..skip);
            }
            (matching, first.next)
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let follow = req.follow;
        let mut cursor = next;
        tokio::spawn(async move {
            use proto::observer::get_flows_response::ResponseTypes;
            for f in matching {
                let t = f.time.unix_ns();
                if tx
                    .send(Ok(response(&node, ResponseTypes::Flow(to_proto(&f)), t)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let mut datapath_lost = source.datapath_lost();
            while follow && !tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let read = source.read_from(cursor);
                cursor = read.next;
                let now_lost = source.datapath_lost();
                let losses = [
                    (
                        proto::flow::LostEventSource::PerfEventRingBuffer,
                        now_lost.saturating_sub(datapath_lost),
                    ),
                    (proto::flow::LostEventSource::HubbleRingBuffer, read.lost),
                ];
                datapath_lost = now_lost;
                for (from, count) in losses {
                    if count == 0 {
                        continue;
                    }
                    let lost = proto::flow::LostEvent {
                        source: from as i32,
                        num_events_lost: count,
                        cpu: None,
                    };
                    if tx
                        .send(Ok(response(
                            &node,
                            ResponseTypes::LostEvents(lost),
                            now_ns(),
                        )))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                for f in read.items.into_iter().filter(|f| wanted(f)) {
                    let t = f.time.unix_ns();
                    if tx
                        .send(Ok(response(&node, ResponseTypes::Flow(to_proto(&f)), t)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_nodes(
        &self,
        _request: Request<proto::observer::GetNodesRequest>,
    ) -> Result<Response<proto::observer::GetNodesResponse>, Status> {
        let (held, cap, seen) = self.source.status();
        Ok(Response::new(proto::observer::GetNodesResponse {
            nodes: vec![proto::observer::Node {
                name: self.source.node_name(),
                version: concat!("cilium-rs ", env!("CARGO_PKG_VERSION")).to_owned(),
                address: String::new(),
                state: proto::relay::NodeState::NodeConnected as i32,
                tls: None,
                uptime_ns: self.source.uptime().as_nanos() as u64,
                num_flows: held as u64,
                max_flows: cap as u64,
                seen_flows: seen,
            }],
        }))
    }

    async fn server_status(
        &self,
        _request: Request<proto::observer::ServerStatusRequest>,
    ) -> Result<Response<proto::observer::ServerStatusResponse>, Status> {
        let (held, cap, seen) = self.source.status();
        let uptime = self.source.uptime();
        Ok(Response::new(proto::observer::ServerStatusResponse {
            num_flows: held as u64,
            max_flows: cap as u64,
            seen_flows: seen,
            uptime_ns: uptime.as_nanos() as u64,
            num_connected_nodes: Some(1),
            num_unavailable_nodes: Some(0),
            unavailable_nodes: Vec::new(),
            version: concat!("cilium-rs ", env!("CARGO_PKG_VERSION")).to_owned(),
            flows_rate: seen as f64 / uptime.as_secs_f64().max(1.0),
        }))
    }
}

/// Where an Observer API server listens: `unix://PATH`, or `[HOST]:PORT` (`:4244` is every
/// address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket (a stale socket file is replaced).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{s:?}: a socket path is expected after unix://"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        let full = if s.starts_with(':') {
            format!("0.0.0.0{s}")
        } else {
            s.to_owned()
        };
        full.parse().map(Listen::Tcp).map_err(|_| {
            format!("{s:?}: unix://PATH, HOST:PORT or :PORT is expected (HOST an IP address)")
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix://{}", p.display()),
            Listen::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A bound listener of the Observer API.
#[derive(Debug)]
pub enum Listener {
    /// On a unix socket.
    Unix(tokio::net::UnixListener),
    /// On TCP.
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// The address bound (a TCP port 0 resolved to the port the kernel chose).
    pub fn address(&self) -> std::io::Result<Listen> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Listen::Tcp),
            Listener::Unix(l) => l
                .local_addr()?
                .as_pathname()
                .map(|p| Listen::Unix(p.to_owned()))
                .ok_or_else(|| std::io::Error::other("an unnamed unix socket")),
        }
    }
}

impl Listen {
    /// Binds the address (making the socket's directory and replacing a stale socket).
    pub async fn bind(&self) -> std::io::Result<Listener> {
        match self {
            Listen::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                tokio::net::UnixListener::bind(path).map(Listener::Unix)
            }
            Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr).await.map(Listener::Tcp),
        }
    }
}

/// The name under which the health service (`grpc.health.v1.Health`) reports the
/// Observer API as serving.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Serves an Observer implementation ([`ObserverService`] for a node, the relay for a
/// cluster) on a bound listener until the task is dropped; over TCP with `tls` when given
/// (see [`crate::tls::ServerTls`]: with client CAs, a client without a certificate they
/// signed is refused during the handshake). A unix socket is always plain: its file's
/// permissions guard it.
pub async fn serve<T>(
    service: T,
    listener: Listener,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> std::io::Result<()>
where
    T: proto::observer::observer_server::Observer,
{
    // Hubble's CLI asks the standard health service about `hubble.server.Observer`
    // before `hubble status`.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let (Some(tls), Listener::Tcp(_)) = (tls, &listener) {
        builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
    }
    let router = builder.add_service(health).add_service(
        proto::observer::observer_server::ObserverServer::new(service),
    );
    match listener {
        Listener::Unix(l) => {
            router
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l))
                .await
        }
        Listener::Tcp(l) => {
            router
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
        }
    }
    .map_err(std::io::Error::other)
}

/// An Observer API client.
pub type Client = proto::observer::observer_client::ObserverClient<tonic::transport::Channel>;

/// Connects to an Observer API server: `unix://PATH`, or `HOST:PORT` (optionally with
/// `tcp://` or `http://` in front), giving up after `timeout`.
pub async fn connect(server: &str, timeout: Duration) -> Result<Client, String> {
    channel(server, timeout, None).await.map(Client::new)
}

/// [`connect`] over TLS when `tls` is given (`HOST:PORT`, optionally with `tls://` or
/// `https://` in front).
pub async fn connect_with(
    server: &str,
    timeout: Duration,
    tls: Option<&crate::tls::ClientTls>,
) -> Result<Client, String> {
    channel(server, timeout, tls).await.map(Client::new)
}

/// The health of an Observer API server as its health service reports it
/// ([`HEALTH_SERVICE`]): `Ok` when serving.
pub async fn check_health(
    server: &str,
    timeout: Duration,
    tls: Option<&crate::tls::ClientTls>,
) -> Result<(), String> {
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(server, timeout, tls).await?);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: HEALTH_SERVICE.to_owned(),
        })
        .await
        .map_err(|e| format!("health check of {server}: {}", e.message()))?
        .into_inner();
    match answer.status() {
        tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
        other => Err(format!("health check of {server}: {}", other.as_str_name())),
    }
}

/// A gRPC channel to `server` (the forms of [`connect`]), over TLS when `tls` is given.
pub async fn channel(
    server: &str,
    timeout: Duration,
    tls: Option<&crate::tls::ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    let fail =
        |e: &dyn std::fmt::Display| format!("cannot connect to the Hubble server {server}: {e}");
    let channel = if let Some(tls) = tls {
        if server.starts_with("unix://") {
            return Err(format!(
                "{server}: TLS is for TCP servers; a unix socket is always plain"
            ));
        }
        let addr = ["tls://", "https://", "tcp://"]
            .iter()
            .find_map(|p| server.strip_prefix(p))
            .unwrap_or(server);
        tonic::transport::Endpoint::try_from(format!("https://{addr}"))
            .map_err(|e| fail(&e))?
            .tls_config(tls.config()?)
            .map_err(|e| fail(&e))?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| fail(&tls_cause(&e)))?
    } else if let Some(path) = server.strip_prefix("unix://") {
        let path: PathBuf = PathBuf::from(path);
        tonic::transport::Endpoint::try_from("http://hubble.local")
            .map_err(|e| fail(&e))?
            .connect_timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            }))
            .await
            .map_err(|e| fail(&e))?
    } else {
        let addr = server
            .strip_prefix("tcp://")
            .or_else(|| server.strip_prefix("http://"))
            .unwrap_or(server);
        tonic::transport::Endpoint::try_from(format!("http://{addr}"))
            .map_err(|e| fail(&e))?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| fail(&e))?
    };
    Ok(channel)
}

/// A transport error with its sources: tonic's own text ("transport error") hides the TLS
/// alert or the certificate problem beneath it.
fn tls_cause(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
