// SPDX-License-Identifier: Apache-2.0

//! Hubble's `Flow` (the fields of `flow.proto` this datapath fills), built from a
//! datapath event and what the agent knows about the endpoints and identities involved.
//! It serialises as `hubble observe -o json` prints flows (the protobuf field names:
//! `drop_reason_desc`, `IP.ipVersion`, `l4.TCP.source_port`, `source.pod_name`, `Type`,
//! `node_name`, `event_type.sub_type`, `traffic_direction`, `is_reply`, `Summary`...).

use std::net::Ipv4Addr;

use cilium_bpf::events::{Event, EventKind, ObservationPoint, drop_reason};
use serde::{Deserialize, Serialize};

/// Hubble's verdicts (`flow.Verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Unknown.
    VerdictUnknown,
    /// Forwarded.
    Forwarded,
    /// Dropped.
    Dropped,
    /// Error.
    Error,
    /// Audit.
    Audit,
    /// Redirected.
    Redirected,
    /// Traced.
    Traced,
    /// Translated.
    Translated,
}

impl Verdict {
    /// Hubble's number for it.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Hubble's name for it (`FORWARDED`), as the JSON writes it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::VerdictUnknown => "VERDICT_UNKNOWN",
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
            Verdict::Error => "ERROR",
            Verdict::Audit => "AUDIT",
            Verdict::Redirected => "REDIRECTED",
            Verdict::Traced => "TRACED",
            Verdict::Translated => "TRANSLATED",
        }
    }
}

/// `flow.TrafficDirection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficDirection {
    /// Unknown.
    TrafficDirectionUnknown,
    /// Into an endpoint.
    Ingress,
    /// Out of an endpoint.
    Egress,
}

/// The addresses (`flow.IP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    /// Source.
    pub source: Ipv4Addr,
    /// Destination.
    pub destination: Ipv4Addr,
    /// `IPv4`.
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

/// TCP flags (`flow.TCPFlags`), the ones set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct TcpFlags {
    /// FIN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fin: bool,
    /// SYN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syn: bool,
    /// RST.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rst: bool,
    /// PSH.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub psh: bool,
    /// ACK.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
    /// URG.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urg: bool,
}

impl TcpFlags {
    /// From the TCP header's flag byte.
    pub fn from_byte(b: u8) -> Self {
        TcpFlags {
            fin: b & 0x01 != 0,
            syn: b & 0x02 != 0,
            rst: b & 0x04 != 0,
            psh: b & 0x08 != 0,
            ack: b & 0x10 != 0,
            urg: b & 0x20 != 0,
        }
    }

    /// Hubble's summary: `SYN`, `SYN, ACK`, `ACK, FIN`, ...
    pub fn summary(self) -> String {
        let names = [
            (self.syn, "SYN"),
            (self.fin, "FIN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
            (self.urg, "URG"),
        ];
        names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Layer 4 (`flow.Layer4`): one of TCP, UDP, ICMPv4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer4 {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp {
        /// Source port.
        #[serde(rename = "source_port")]
        source_port: u16,
        /// Destination port.
        #[serde(rename = "destination_port")]
        destination_port: u16,
        /// Flags.
        flags: TcpFlags,
    },
    /// UDP.
    #[serde(rename = "UDP")]
    Udp {
        /// Source port.
        #[serde(rename = "source_port")]
        source_port: u16,
        /// Destination port.
        #[serde(rename = "destination_port")]
        destination_port: u16,
    },
    /// ICMPv4.
    #[serde(rename = "ICMPv4")]
    Icmp4 {
        /// The ICMP type.
        #[serde(rename = "type")]
        icmp_type: u8,
    },
}

impl Layer4 {
    /// Hubble's protocol name.
    pub fn protocol(&self) -> &'static str {
        match self {
            Layer4::Tcp { .. } => "tcp",
            Layer4::Udp { .. } => "udp",
            Layer4::Icmp4 { .. } => "icmp",
        }
    }

    /// The (source, destination) ports, if the protocol has them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Layer4::Tcp {
                source_port,
                destination_port,
                ..
            }
            | Layer4::Udp {
                source_port,
                destination_port,
            } => Some((source_port, destination_port)),
            Layer4::Icmp4 { .. } => None,
        }
    }
}

/// One side of a flow (`flow.Endpoint`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id on its node (0: not a local endpoint).
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero16")]
    pub id: u16,
    /// Security identity (0, unknown, is not written, as protobuf's JSON mapping does).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub identity: u32,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Labels (`source:key=value`), shared by every flow of the identity.
    #[serde(default, skip_serializing_if = "no_labels")]
    pub labels: std::sync::Arc<[String]>,
    /// Pod name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
}

/// A Kubernetes Service one side of a flow is the frontend of (`flow.Service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

fn is_zero8(v: &u8) -> bool {
    *v == 0
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

fn is_zero16(v: &u16) -> bool {
    *v == 0
}

fn no_labels(v: &std::sync::Arc<[String]>) -> bool {
    v.is_empty()
}

/// A flow's time: nanoseconds since the Unix epoch, kept as a number until it is printed
/// (RFC 3339 in UTC in JSON, as Hubble writes it: protobuf's JSON mapping of a Timestamp,
/// with 0, 3, 6 or 9 fractional digits, as few as the value needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTime(pub u128);

impl FlowTime {
    /// Nanoseconds since the Unix epoch.
    pub fn unix_ns(self) -> u128 {
        self.0
    }

    /// As Hubble's compact output prints it: `Nov 27 03:10:14.123`.
    pub fn compact(self) -> String {
        compact_time(&rfc3339(self.0))
    }
}

/// Cilium's `PolicyMatchType` of a verdict on addresses and ports.
pub const POLICY_MATCH_L3_L4: u32 = 2;

/// The name Hubble prints for a `PolicyMatchType` (`policy-verdict:L3-L4`).
pub fn policy_match_name(t: u32) -> &'static str {
    match t {
        1 => "L3-Only",
        POLICY_MATCH_L3_L4 => "L3-L4",
        3 => "L4-Only",
        4 => "all",
        5 => "L3-Proto",
        6 => "Proto-Only",
        _ => "none",
    }
}

impl std::fmt::Display for FlowTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = rfc3339(self.0);
        // `...SS.nnnnnnnnnZ`: keep the digits protojson keeps.
        let nanos = self.0 % 1_000_000_000;
        let keep = if nanos == 0 {
            0
        } else if nanos.is_multiple_of(1_000_000) {
            3
        } else if nanos.is_multiple_of(1_000) {
            6
        } else {
            9
        };
        let dot = full.len() - 11;
        if keep == 0 {
            write!(f, "{}Z", &full[..dot])
        } else {
            write!(f, "{}Z", &full[..dot + 1 + keep])
        }
    }
}

impl Serialize for FlowTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FlowTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::observer::parse_time(&text)
            .map(FlowTime)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

/// `flow.CiliumEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    /// 1 drop, 4 trace, 5 policy verdict.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Drop reason or observation point (0, as protobuf's JSON mapping does, not written).
    #[serde(default, skip_serializing_if = "is_zero8")]
    pub sub_type: u8,
}

/// A flow, as Hubble reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// When (printed as RFC 3339, UTC, nanoseconds).
    pub time: FlowTime,
    /// The verdict.
    pub verdict: Verdict,
    /// Cilium's drop reason code (drops only; Hubble's deprecated `drop_reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<u8>,
    /// The drop reason's name (drops only), e.g. `POLICY_DENIED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    /// Addresses (None for a frame that is not IPv4: the datapath parsed none).
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ip>,
    /// Layer 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4: Option<Layer4>,
    /// Source.
    pub source: Endpoint,
    /// Destination.
    pub destination: Endpoint,
    /// `L3_L4`.
    #[serde(rename = "Type")]
    pub flow_type: String,
    /// The node that saw it.
    pub node_name: String,
    /// The event behind it.
    pub event_type: EventType,
    /// The Service whose frontend the source is (a reply from a ClusterIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_service: Option<Service>,
    /// The Service whose frontend the destination is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_service: Option<Service>,
    /// Direction relative to the endpoint that emitted the event.
    pub traffic_direction: TrafficDirection,
    /// Where a forwarded packet was seen (`TO_ENDPOINT`, `TO_STACK`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_observation_point: Option<String>,
    /// Whether conntrack saw a reply.
    pub is_reply: bool,
    /// The policy verdict's match (`policy-verdict` events), Cilium's `PolicyMatchType`
    /// number (Hubble's JSON prints the number): 0 none, 2 `L3-L4` (what this datapath's
    /// verdicts match on).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub policy_match_type: u32,
    /// A one-line summary (`TCP Flags: SYN`, `ICMPv4 EchoRequest`).
    #[serde(rename = "Summary")]
    pub summary: String,
}

/// What turns an event's ids into names: the agent answers from its endpoints and the
/// identity cache.
pub trait Resolver {
    /// The endpoint behind a local endpoint id or an IP, with its identity's labels.
    fn endpoint(&self, id: u16, ip: Ipv4Addr, identity: u32) -> Endpoint;
    /// The Service whose frontend `ip:port` is, if any.
    fn service(&self, ip: Ipv4Addr, port: u16) -> Option<Service> {
        let _ = (ip, port);
        None
    }
}

/// A resolver from tables, as a node knows them at one moment: pods by IP (endpoint id,
/// namespace, pod name; id 0 for another node's pod) and identities' labels. An IP
/// without a pod takes the namespace its identity's labels give.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Pods by IP: (endpoint id on this node or 0, namespace, pod name).
    pub pods: std::collections::HashMap<Ipv4Addr, (u16, String, String)>,
    /// Identities' labels (`source:key=value`), shared with the flows that name them.
    pub labels: std::collections::HashMap<u32, std::sync::Arc<[String]>>,
    /// Services by frontend address and port.
    pub services: std::collections::HashMap<(Ipv4Addr, u16), Service>,
}

impl Resolver for Names {
    fn endpoint(&self, id: u16, ip: Ipv4Addr, identity: u32) -> Endpoint {
        let mut ep = Endpoint {
            id,
            identity,
            labels: self.labels.get(&identity).cloned().unwrap_or_default(),
            ..Endpoint::default()
        };
        if let Some((local_id, ns, pod)) = self.pods.get(&ip) {
            if *local_id != 0 {
                ep.id = *local_id;
            }
            ep.namespace.clone_from(ns);
            ep.pod_name.clone_from(pod);
        } else if let Some(ns) = ep
            .labels
            .iter()
            .find_map(|l| l.strip_prefix("k8s:io.kubernetes.pod.namespace="))
        {
            ep.namespace = ns.to_owned();
        }
        ep
    }

    fn service(&self, ip: Ipv4Addr, port: u16) -> Option<Service> {
        self.services.get(&(ip, port)).cloned()
    }
}

/// A resolver that knows only what the event says.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNames;

impl Resolver for NoNames {
    fn endpoint(&self, id: u16, _ip: Ipv4Addr, identity: u32) -> Endpoint {
        Endpoint {
            id,
            identity,
            ..Endpoint::default()
        }
    }
}

pub use cilium_core::rfc3339;

fn drop_name(code: u8) -> String {
    // The protobuf enum's names, so a name survives the trip through the API and filters.
    crate::proto::flow::DropReason::try_from(i32::from(code))
        .unwrap_or(crate::proto::flow::DropReason::Unknown)
        .as_str_name()
        .to_owned()
}

fn point_name(p: ObservationPoint) -> String {
    p.name().replace('-', "_").to_uppercase()
}

impl Flow {
    /// The flow of one datapath event: `unix_ns` is the event's time on the wall clock,
    /// `node` the node that saw it, `names` what the agent knows of its endpoints.
    pub fn from_event(ev: &Event, unix_ns: u128, node: &str, names: &dyn Resolver) -> Flow {
        let (verdict, event_kind, sub_type) = match ev.kind {
            EventKind::Drop { reason } => (Verdict::Dropped, 1, reason),
            EventKind::Trace { point } => (
                Verdict::Forwarded,
                4,
                match point {
                    ObservationPoint::Unknown(c) => c,
                    p => (0..=11u8)
                        .find(|c| ObservationPoint::from_code(*c) == p)
                        .unwrap_or(0),
                },
            ),
            EventKind::PolicyVerdict { allowed, .. } => (
                if allowed {
                    Verdict::Forwarded
                } else {
                    Verdict::Dropped
                },
                5,
                u8::from(!allowed) + 1,
            ),
            _ => (Verdict::VerdictUnknown, 0, 0),
        };
        // A frame that is not IPv4 has no layer 4 whatever the event's protocol byte says.
        let proto = if ev.ethertype.is_some() { 0 } else { ev.proto };
        let l4 = match proto {
            6 => Some(Layer4::Tcp {
                source_port: ev.sport,
                destination_port: ev.dport,
                flags: TcpFlags::from_byte(ev.tcp_flags),
            }),
            17 => Some(Layer4::Udp {
                source_port: ev.sport,
                destination_port: ev.dport,
            }),
            1 => Some(Layer4::Icmp4 {
                icmp_type: ev.icmp_type,
            }),
            _ => None,
        };
        let ports = l4.as_ref().and_then(Layer4::ports);
        let direction = if let EventKind::PolicyVerdict { ingress, .. } = ev.kind {
            if ingress {
                TrafficDirection::Ingress
            } else {
                TrafficDirection::Egress
            }
        } else if ev.source != 0 && ev.source == ev.src_endpoint {
            TrafficDirection::Egress
        } else if ev.source != 0 {
            TrafficDirection::Ingress
        } else {
            TrafficDirection::TrafficDirectionUnknown
        };
        let summary = match &l4 {
            Some(Layer4::Tcp { flags, .. }) => format!("TCP Flags: {}", flags.summary()),
            Some(Layer4::Udp { .. }) => "UDP".to_owned(),
            Some(Layer4::Icmp4 { icmp_type }) => match icmp_type {
                8 => "ICMPv4 EchoRequest".to_owned(),
                0 => "ICMPv4 EchoReply".to_owned(),
                t => format!("ICMPv4 type {t}"),
            },
            None => match ev.ethertype {
                Some(t) => format!("EtherType {}", cilium_bpf::events::ethertype_name(t)),
                None => format!("IP protocol {}", ev.proto),
            },
        };
        let (drop_reason, drop_reason_desc) = match ev.kind {
            EventKind::Drop { reason } => (Some(reason), Some(drop_name(reason))),
            EventKind::PolicyVerdict { allowed: false, .. } => (
                Some(drop_reason::POLICY_DENIED),
                Some(drop_name(drop_reason::POLICY_DENIED)),
            ),
            _ => (None, None),
        };
        Flow {
            time: FlowTime(unix_ns),
            verdict,
            drop_reason,
            drop_reason_desc,
            ip: ev.ethertype.is_none().then(|| Ip {
                source: ev.saddr,
                destination: ev.daddr,
                ip_version: "IPv4".into(),
            }),
            l4,
            source: names.endpoint(ev.src_endpoint, ev.saddr, ev.src_identity),
            destination: names.endpoint(ev.dst_endpoint, ev.daddr, ev.dst_identity),
            flow_type: "L3_L4".into(),
            node_name: node.to_owned(),
            source_service: ports.and_then(|(sp, _)| names.service(ev.saddr, sp)),
            destination_service: ports.and_then(|(_, dp)| names.service(ev.daddr, dp)),
            event_type: EventType {
                kind: event_kind,
                sub_type,
            },
            traffic_direction: direction,
            trace_observation_point: match ev.kind {
                EventKind::Trace { point } => Some(point_name(point)),
                _ => None,
            },
            is_reply: ev.is_reply,
            policy_match_type: if matches!(ev.kind, EventKind::PolicyVerdict { .. }) {
                POLICY_MATCH_L3_L4
            } else {
                0
            },
            summary,
        }
    }

    /// How Hubble names one side of a flow: `namespace/pod`, else `namespace/service` when
    /// it is a Service's frontend, else its IP (`?` when the flow has no IP layer).
    pub fn side_name(ep: &Endpoint, svc: Option<&Service>, ip: Option<Ipv4Addr>) -> String {
        match svc {
            _ if !ep.pod_name.is_empty() => format!("{}/{}", ep.namespace, ep.pod_name),
            Some(s) => format!("{}/{}", s.namespace, s.name),
            None => ip.map_or_else(|| "?".to_owned(), |ip| ip.to_string()),
        }
    }

    /// The source address, if the flow has an IP layer.
    pub fn source_ip(&self) -> Option<Ipv4Addr> {
        self.ip.as_ref().map(|ip| ip.source)
    }

    /// The destination address, if the flow has an IP layer.
    pub fn destination_ip(&self) -> Option<Ipv4Addr> {
        self.ip.as_ref().map(|ip| ip.destination)
    }

    fn side(
        ep: &Endpoint,
        svc: Option<&Service>,
        ip: Option<Ipv4Addr>,
        port: Option<u16>,
    ) -> String {
        let base = Flow::side_name(ep, svc, ip);
        match port {
            Some(p) => format!("{base}:{p}"),
            None => base,
        }
    }

    /// Hubble's compact line:
    /// `Nov 27 03:10:14.123: default/curl-pod:43210 (ID:257) -> default/webpod-x:80 (ID:256) to-endpoint FORWARDED (TCP Flags: SYN)`.
    pub fn compact(&self) -> String {
        let ports = self.l4.as_ref().and_then(Layer4::ports);
        // A frame without an IP header names neither side (as Hubble prints it), even when
        // the endpoint that sent it is known.
        let (src, dst) = if self.ip.is_none() {
            (String::new(), String::new())
        } else {
            (
                Flow::side(
                    &self.source,
                    self.source_service.as_ref(),
                    self.source_ip(),
                    ports.map(|p| p.0),
                ),
                Flow::side(
                    &self.destination,
                    self.destination_service.as_ref(),
                    self.destination_ip(),
                    ports.map(|p| p.1),
                ),
            )
        };
        let what = match self.event_type.kind {
            1 => self.drop_reason.map_or_else(
                || "drop".to_owned(),
                |r| drop_reason::describe(r).to_owned(),
            ),
            5 => format!(
                "policy-verdict:{} {}",
                policy_match_name(self.policy_match_type),
                match self.traffic_direction {
                    TrafficDirection::Ingress => "INGRESS",
                    TrafficDirection::Egress => "EGRESS",
                    TrafficDirection::TrafficDirectionUnknown => "UNKNOWN",
                }
            ),
            _ => self.trace_observation_point.as_deref().map_or_else(
                || "trace".to_owned(),
                |p| p.to_lowercase().replace('_', "-"),
            ),
        };
        let verdict = match (self.event_type.kind, self.verdict) {
            (5, Verdict::Forwarded) => "ALLOWED",
            (5, Verdict::Dropped) => "DENIED",
            (_, Verdict::Forwarded) => "FORWARDED",
            (_, Verdict::Dropped) => "DROPPED",
            _ => "UNKNOWN",
        };
        // Reserved identities by name, others by number; a reply is printed from the
        // side that answers, with the arrow flipped (as Hubble prints them).
        let id = |i: u32| {
            cilium_core::NumericIdentity::new(i)
                .reserved_name()
                .map_or_else(|| format!("(ID:{i})"), |n| format!("({n})"))
        };
        let (src_id, dst_id) = (id(self.source.identity), id(self.destination.identity));
        let (left, left_id, arrow, right, right_id) = if self.is_reply {
            (dst, dst_id, "<-", src, src_id)
        } else {
            (src, src_id, "->", dst, dst_id)
        };
        format!(
            "{}: {left} {left_id} {arrow} {right} {right_id} {what} {verdict} ({})",
            self.time.compact(),
            self.summary
        )
    }
}

/// `2026-11-27T03:10:14.123456789Z` as Hubble's compact output prints it:
/// `Nov 27 03:10:14.123`.
pub fn compact_time(rfc: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("???");
    let day = rfc.get(8..10).unwrap_or("??");
    let clock = rfc.get(11..23).unwrap_or("");
    format!("{month} {day} {clock}")
}
