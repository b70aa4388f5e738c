// SPDX-License-Identifier: Apache-2.0

//! Datapath events: the record format of `cilium_events` and its decoder.
//!
//! Each ring buffer record is one [`crate::types::RawEvent`] (version 1, 56 bytes, host byte
//! order except addresses and ports):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | type: 1 drop, 4 trace, 5 policy verdict (Cilium's `CILIUM_NOTIFY_*`) |
//! | 1 | 1 | subtype: the drop reason, the trace observation point, or the verdict (1 allowed, 2 denied; +4 when the destination's ingress policy decided) |
//! | 2 | 2 | source: endpoint id of the emitting endpoint |
//! | 4 | 4 | skb hash |
//! | 8 | 4 | packet length |
//! | 12 | 2 | version (1) |
//! | 14 | 2 | EtherType: 0 for an IPv4 packet, else the EtherType of a frame the datapath did not parse (its addresses, ports and protocol are then 0) |
//! | 16 | 4, 4 | source identity, destination identity |
//! | 24 | 2, 2 | source endpoint id, destination endpoint id |
//! | 28 | 4 | ifindex of the program's interface |
//! | 32 | 4, 4 | source, destination IPv4 address (network order) |
//! | 40 | 2, 2 | source, destination port (network order; ICMP: echo id) |
//! | 44 | 1, 1, 1, 1 | IP protocol, TCP flags, ICMP type, reply |
//! | 48 | 8 | `bpf_ktime_get_ns()` |

use std::fmt;
use std::net::Ipv4Addr;

use crate::types::RawEvent;

/// The clock events are stamped with (`bpf_ktime_get_ns`: CLOCK_MONOTONIC), in ns.
pub fn monotonic_ns() -> u64 {
    // SAFETY: `timespec` is a plain C struct for which all-zero bytes are valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where a forwarded packet was seen (Cilium's `TRACE_*` observation points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObservationPoint {
    /// Delivered to a local endpoint (Hubble's `to-endpoint`).
    ToEndpoint,
    /// To the L7 proxy.
    ToProxy,
    /// To the host.
    ToHost,
    /// Handed to the node's stack.
    ToStack,
    /// Into the overlay.
    ToOverlay,
    /// Leaving a local endpoint.
    FromEndpoint,
    /// From the proxy.
    FromProxy,
    /// From the host.
    FromHost,
    /// From the stack.
    FromStack,
    /// From the overlay.
    FromOverlay,
    /// From the network.
    FromNetwork,
    /// To the network.
    ToNetwork,
    /// A code this decoder does not know.
    Unknown(u8),
}

impl ObservationPoint {
    /// From the datapath's code.
    pub fn from_code(code: u8) -> Self {
        use ObservationPoint::*;
        match code {
            0 => ToEndpoint,
            1 => ToProxy,
            2 => ToHost,
            3 => ToStack,
            4 => ToOverlay,
            5 => FromEndpoint,
            6 => FromProxy,
            7 => FromHost,
            8 => FromStack,
            9 => FromOverlay,
            10 => FromNetwork,
            11 => ToNetwork,
            other => Unknown(other),
        }
    }

    /// Hubble's name (`to-endpoint`, `to-stack`, ...).
    pub fn name(self) -> &'static str {
        use ObservationPoint::*;
        match self {
            ToEndpoint => "to-endpoint",
            ToProxy => "to-proxy",
            ToHost => "to-host",
            ToStack => "to-stack",
            ToOverlay => "to-overlay",
            FromEndpoint => "from-endpoint",
            FromProxy => "from-proxy",
            FromHost => "from-host",
            FromStack => "from-stack",
            FromOverlay => "from-overlay",
            FromNetwork => "from-network",
            ToNetwork => "to-network",
            Unknown(_) => "unknown",
        }
    }
}

/// Cilium's drop reason codes used by this datapath, with their descriptions.
pub mod drop_reason {
    /// Source IP is not the endpoint's (spoofing).
    pub const INVALID_SOURCE_IP: u8 = 132;
    /// Policy denied.
    pub const POLICY_DENIED: u8 = 133;
    /// Invalid packet.
    pub const INVALID_PACKET: u8 = 134;
    /// Conntrack: invalid header.
    pub const CT_INVALID_HEADER: u8 = 135;
    /// Unsupported L3 protocol (a frame that is not IPv4).
    pub const UNKNOWN_L3: u8 = 139;
    /// Unknown L4 protocol.
    pub const UNKNOWN_L4: u8 = 142;
    /// Service has no backend.
    pub const NO_SERVICE: u8 = 158;
    /// Denied by a deny policy.
    pub const POLICY_DENY: u8 = 181;
    /// Not a packet drop: the `cilium_metrics` key (direction 0) under which the datapath
    /// counts events it could not queue because `cilium_events` was full.
    pub const EVENTS_LOST: u8 = 255;

    /// The description Cilium prints for a reason.
    pub fn describe(code: u8) -> &'static str {
        match code {
            INVALID_SOURCE_IP => "Invalid source ip",
            POLICY_DENIED => "Policy denied",
            INVALID_PACKET => "Invalid packet",
            CT_INVALID_HEADER => "CT: Truncated or invalid header",
            UNKNOWN_L3 => "Unsupported L3 protocol",
            UNKNOWN_L4 => "Unknown L4 protocol",
            NO_SERVICE => "Service backend not found",
            POLICY_DENY => "Policy denied by denylist",
            _ => "Unknown drop reason",
        }
    }
}

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A dropped packet, with Cilium's reason code.
    Drop {
        /// The reason code (see [`drop_reason`]).
        reason: u8,
    },
    /// A forwarded packet at an observation point.
    Trace {
        /// Where it was seen.
        point: ObservationPoint,
    },
    /// A policy decision on a new flow.
    PolicyVerdict {
        /// Whether the policy allowed it.
        allowed: bool,
        /// Whether the destination's ingress policy decided (else the source's egress
        /// policy).
        ingress: bool,
    },
}

/// A decoded datapath event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Drop, trace or verdict.
    pub kind: EventKind,
    /// Endpoint id of the emitting endpoint (0: none).
    pub source: u16,
    /// Packet length.
    pub len: u32,
    /// Source identity (0: unknown).
    pub src_identity: u32,
    /// Destination identity (0: unknown).
    pub dst_identity: u32,
    /// Source endpoint id (0: not a local endpoint).
    pub src_endpoint: u16,
    /// Destination endpoint id (0: not a local endpoint).
    pub dst_endpoint: u16,
    /// Interface the program ran on.
    pub ifindex: u32,
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// Source port (ICMP: echo id).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    /// TCP flags (SYN 0x02, ACK 0x10, ...).
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// Whether conntrack saw it as a reply.
    pub is_reply: bool,
    /// Monotonic timestamp, ns.
    pub ktime_ns: u64,
    /// The EtherType of a frame that is not IPv4 (the datapath parsed no addresses: they
    /// are 0.0.0.0); None for an IPv4 packet.
    pub ethertype: Option<u16>,
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record is shorter than an event.
    #[error("event record of {len} bytes, expected at least {expected}")]
    Short {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// A format version this decoder does not know.
    #[error("event format version {version} is not supported (expected 1)")]
    Version {
        /// The version.
        version: u16,
    },
    /// An event type this decoder does not know.
    #[error("unknown event type {event_type}")]
    Type {
        /// The type.
        event_type: u8,
    },
}

impl Event {
    /// Decodes one ring buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let expected = size_of::<RawEvent>();
        if bytes.len() < expected {
            return Err(DecodeError::Short {
                len: bytes.len(),
                expected,
            });
        }
        let u16_at = |o: usize| u16::from_ne_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let be16_at = |o: usize| u16::from_be_bytes([bytes[o], bytes[o + 1]]);
        let ip_at = |o: usize| Ipv4Addr::new(bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]);
        let version = u16_at(12);
        if version != 1 {
            return Err(DecodeError::Version { version });
        }
        let kind = match bytes[0] {
            1 => EventKind::Drop { reason: bytes[1] },
            4 => EventKind::Trace {
                point: ObservationPoint::from_code(bytes[1]),
            },
            5 => EventKind::PolicyVerdict {
                allowed: bytes[1] & 3 == 1,
                ingress: bytes[1] & 4 != 0,
            },
            t => return Err(DecodeError::Type { event_type: t }),
        };
        let mut ktime = [0u8; 8];
        ktime.copy_from_slice(&bytes[48..56]);
        Ok(Event {
            kind,
            source: u16_at(2),
            len: u32_at(8),
            src_identity: u32_at(16),
            dst_identity: u32_at(20),
            src_endpoint: u16_at(24),
            dst_endpoint: u16_at(26),
            ifindex: u32_at(28),
            saddr: ip_at(32),
            daddr: ip_at(36),
            sport: be16_at(40),
            dport: be16_at(42),
            proto: bytes[44],
            tcp_flags: bytes[45],
            icmp_type: bytes[46],
            is_reply: bytes[47] != 0,
            ktime_ns: u64::from_ne_bytes(ktime),
            ethertype: Some(u16_at(14)).filter(|t| *t != 0),
        })
    }
}

/// An EtherType as `0x86dd (IPv6)` (the name when it is a common one).
pub fn ethertype_name(t: u16) -> String {
    let name = match t {
        0x0800 => " (IPv4)",
        0x0806 => " (ARP)",
        0x86dd => " (IPv6)",
        0x8100 => " (802.1Q)",
        0x88cc => " (LLDP)",
        _ => "",
    };
    format!("{t:#06x}{name}")
}

/// One line, in the spirit of `cilium-dbg monitor`:
/// `-> endpoint 12 flow 172.20.0.10:0 -> 172.20.0.11:0 ICMP identity 256->257 to-endpoint`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            1 => "ICMP",
            6 => "TCP",
            17 => "UDP",
            _ => "IP",
        };
        match self.kind {
            EventKind::Drop { reason } if self.ethertype.is_some() => write!(
                f,
                "xx drop ({}) on ifindex {} ethertype {}",
                drop_reason::describe(reason),
                self.ifindex,
                ethertype_name(self.ethertype.unwrap_or_default())
            ),
            EventKind::Drop { reason } => write!(
                f,
                "xx drop ({}) flow {}:{} -> {}:{} {proto} identity {}->{}",
                drop_reason::describe(reason),
                self.saddr,
                self.sport,
                self.daddr,
                self.dport,
                self.src_identity,
                self.dst_identity
            ),
            EventKind::Trace { point } => write!(
                f,
                "-> {} endpoint {} flow {}:{} -> {}:{} {proto} identity {}->{}",
                point.name(),
                self.source,
                self.saddr,
                self.sport,
                self.daddr,
                self.dport,
                self.src_identity,
                self.dst_identity
            ),
            EventKind::PolicyVerdict { allowed, ingress } => write!(
                f,
                "policy-verdict {} {} flow {}:{} -> {}:{} {proto}",
                if ingress { "INGRESS" } else { "EGRESS" },
                if allowed { "ALLOWED" } else { "DENIED" },
                self.saddr,
                self.sport,
                self.daddr,
                self.dport
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Vec<u8> {
        let ev = RawEvent {
            event_type: 4,
            subtype: 0,
            source: 12,
            hash: 7,
            len_orig: 98,
            version: 1,
            ethertype: 0,
            src_label: 256,
            dst_label: 257,
            src_id: 12,
            dst_id: 13,
            ifindex: 5,
            saddr: [172, 20, 0, 10],
            daddr: [172, 20, 0, 11],
            sport: 4321u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            tcp_flags: 0x02,
            icmp_type: 0,
            reply: 0,
            ktime: 99,
        };
        // Serialise field by field as the kernel lays the struct out.
        let mut b = Vec::new();
        b.extend([ev.event_type, ev.subtype]);
        b.extend(ev.source.to_ne_bytes());
        b.extend(ev.hash.to_ne_bytes());
        b.extend(ev.len_orig.to_ne_bytes());
        b.extend(ev.version.to_ne_bytes());
        b.extend(ev.ethertype.to_ne_bytes());
        b.extend(ev.src_label.to_ne_bytes());
        b.extend(ev.dst_label.to_ne_bytes());
        b.extend(ev.src_id.to_ne_bytes());
        b.extend(ev.dst_id.to_ne_bytes());
        b.extend(ev.ifindex.to_ne_bytes());
        b.extend(ev.saddr);
        b.extend(ev.daddr);
        b.extend(ev.sport.to_ne_bytes());
        b.extend(ev.dport.to_ne_bytes());
        b.extend([ev.proto, ev.tcp_flags, ev.icmp_type, ev.reply]);
        b.extend(ev.ktime.to_ne_bytes());
        assert_eq!(b.len(), 56);
        b
    }

    #[test]
    fn decodes_a_trace() {
        let ev = Event::decode(&raw()).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Trace {
                point: ObservationPoint::ToEndpoint
            }
        );
        assert_eq!((ev.src_identity, ev.dst_identity), (256, 257));
        assert_eq!((ev.sport, ev.dport), (4321, 80));
        assert_eq!(ev.saddr, Ipv4Addr::new(172, 20, 0, 10));
        assert_eq!(
            ev.to_string(),
            "-> to-endpoint endpoint 12 flow 172.20.0.10:4321 -> 172.20.0.11:80 TCP identity 256->257"
        );
    }

    #[test]
    fn a_frame_that_is_not_ipv4_keeps_its_ethertype() {
        let mut b = raw();
        assert_eq!(Event::decode(&b).unwrap().ethertype, None);
        // A drop (Unsupported L3) of an IPv6 frame: no addresses.
        b[0] = 1;
        b[1] = drop_reason::UNKNOWN_L3;
        b[14..16].copy_from_slice(&0x86ddu16.to_ne_bytes());
        b[32..40].fill(0);
        let ev = Event::decode(&b).unwrap();
        assert_eq!(ev.ethertype, Some(0x86dd));
        assert_eq!(
            ev.to_string(),
            "xx drop (Unsupported L3 protocol) on ifindex 5 ethertype 0x86dd (IPv6)"
        );
    }

    #[test]
    fn rejects_bad_records() {
        let mut b = raw();
        assert!(matches!(
            Event::decode(&b[..10]),
            Err(DecodeError::Short { .. })
        ));
        b[12] = 9;
        assert!(matches!(
            Event::decode(&b),
            Err(DecodeError::Version { .. })
        ));
        let mut b = raw();
        b[0] = 77;
        assert!(matches!(Event::decode(&b), Err(DecodeError::Type { .. })));
        let mut drop = raw();
        drop[0] = 1;
        drop[1] = drop_reason::INVALID_SOURCE_IP;
        let ev = Event::decode(&drop).unwrap();
        assert!(ev.to_string().starts_with("xx drop (Invalid source ip)"));
    }
}
