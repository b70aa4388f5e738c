// SPDX-License-Identifier: Apache-2.0

//! Rust mirrors of the datapath's map keys, values and events (`bpf/lib/common.h`).
//!
//! Every type is `#[repr(C)]` with its padding spelled out as fields, so every byte is a
//! field byte; its size is asserted at compile time, and a test compares sizes and field
//! offsets against the BTF of the compiled objects. Fields marked "network byte order" hold
//! the bytes as the packet carries them: use the constructors and accessors.

use std::net::Ipv4Addr;

/// Implements `aya::Pod` for a map key/value type, and asserts its size.
macro_rules! pod {
    ($t:ty, $size:expr) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        // SAFETY: `$t` is `#[repr(C)]`, made only of integers and integer arrays, with every
        // padding byte declared as a field (the size assertion above fails otherwise), so
        // it has no uninitialised bytes and every bit pattern is a valid value.
        unsafe impl aya::Pod for $t {}
    };
}

/// `endpoint_key`: the key of `cilium_lxc` (20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    /// The address: IPv4 in the first 4 bytes (network byte order), or IPv6.
    pub ip: [u8; 16],
    /// 1 for IPv4, 2 for IPv6.
    pub family: u8,
    /// Reserved (Cilium's `key`, 0).
    pub key: u8,
    /// Cluster id.
    pub cluster_id: u16,
}
pod!(EndpointKey, 20);

/// Address family code of IPv4 in map keys.
pub const FAMILY_IPV4: u8 = 1;
/// Address family code of IPv6 in map keys.
pub const FAMILY_IPV6: u8 = 2;

fn ip4_bytes16(ip: Ipv4Addr) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&ip.octets());
    b
}

impl EndpointKey {
    /// The key of a local IPv4 endpoint.
    pub fn ipv4(ip: Ipv4Addr) -> Self {
        EndpointKey {
            ip: ip4_bytes16(ip),
            family: FAMILY_IPV4,
            key: 0,
            cluster_id: 0,
        }
    }

    /// The IPv4 address, if this is an IPv4 key.
    pub fn ipv4_addr(&self) -> Option<Ipv4Addr> {
        (self.family == FAMILY_IPV4)
            .then(|| Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
    }
}

/// `endpoint_info`: the value of `cilium_lxc` (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EndpointInfo {
    /// Interface index of the endpoint's host-side veth.
    pub ifindex: u32,
    /// Unused.
    pub unused: u16,
    /// Endpoint id.
    pub lxc_id: u16,
    /// `ENDPOINT_F_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
    /// The pod's MAC (6 bytes in memory order, see [`mac_to_u64`]).
    pub mac: u64,
    /// The host-side veth's MAC (the pod's gateway MAC).
    pub node_mac: u64,
    /// The endpoint's security identity.
    pub sec_id: u32,
    /// Parent interface (unused for veth).
    pub parent_ifindex: u32,
    /// Padding.
    pub pad2: [u32; 2],
}
pod!(EndpointInfo, 48);

/// `lxc_ifindex_entry`: the value of `cilium_lxc_ifindex` (56 bytes, indexed by the
/// endpoint's interface index): the endpoint's address and its `cilium_lxc` entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LxcIfindexEntry {
    /// The endpoint's IPv4 address (network byte order); all zero: no endpoint.
    pub ip4: [u8; 4],
    /// Padding.
    pub pad: u32,
    /// The endpoint's `cilium_lxc` value.
    pub info: EndpointInfo,
}
pod!(LxcIfindexEntry, 56);

/// `endpoint_info.flags`: the endpoint is the host.
pub const ENDPOINT_F_HOST: u32 = 1;
/// `endpoint_info.flags`: the endpoint lives in the host network namespace.
pub const ENDPOINT_F_ATHOSTNS: u32 = 2;

/// Packs a MAC address the way `mac_t` holds it: the 6 bytes first in memory.
pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    u64::from_ne_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// Unpacks a `mac_t`.
pub fn u64_to_mac(v: u64) -> [u8; 6] {
    let b = v.to_ne_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// `ipcache_key` after its LPM prefix length (20 bytes; the kernel key is 24 with the
/// prefix length in front, which aya's `lpm_trie::Key` adds).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpcacheKey {
    /// Cluster id.
    pub cluster_id: u16,
    /// Padding.
    pub pad1: u8,
    /// 1 for IPv4, 2 for IPv6.
    pub family: u8,
    /// The address (IPv4 in the first 4 bytes, network byte order).
    pub ip: [u8; 16],
}
pod!(IpcacheKey, 20);

/// Prefix bits of an ipcache key before the address (cluster id, padding, family).
pub const IPCACHE_STATIC_PREFIX_BITS: u32 = 32;

impl IpcacheKey {
    /// The key of an IPv4 prefix, with the prefix length the trie needs
    /// (`32 + prefix_len`).
    pub fn ipv4(ip: Ipv4Addr, prefix_len: u8) -> (u32, Self) {
        (
            IPCACHE_STATIC_PREFIX_BITS + u32::from(prefix_len.min(32)),
            IpcacheKey {
                cluster_id: 0,
                pad1: 0,
                family: FAMILY_IPV4,
                ip: ip4_bytes16(ip),
            },
        )
    }
}

/// `remote_endpoint_info`: the value of `cilium_ipcache_v2` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RemoteEndpointInfo {
    /// The prefix's security identity.
    pub sec_identity: u32,
    /// The node to tunnel to (IPv4 in the first 4 bytes), when tunnelling.
    pub tunnel_endpoint: [u8; 16],
    /// Padding.
    pub pad: u16,
    /// IPsec key index.
    pub key: u8,
    /// Flags: skip_tunnel 1, has_tunnel_ep 2, ipv6_tunnel_ep 4, remote_cluster 8.
    pub flags: u8,
}
pod!(RemoteEndpointInfo, 24);

/// `metrics_key`: the key of `cilium_metrics` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MetricsKey {
    /// Drop reason, or 0 for forwarded packets.
    pub reason: u8,
    /// 1 ingress, 2 egress, 3 service.
    pub dir: u8,
    /// Source line (unused: 0).
    pub line: u16,
    /// Source file (unused: 0).
    pub file: u8,
    /// Padding.
    pub reserved: [u8; 3],
}
pod!(MetricsKey, 8);

/// `metrics_value`: one CPU's counters (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MetricsValue {
    /// Packets.
    pub count: u64,
    /// Bytes.
    pub bytes: u64,
}
pod!(MetricsValue, 16);

/// `lb4_key`: the key of `cilium_lb4_services_v2` (12 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4Key {
    /// Frontend address (network byte order).
    pub address: [u8; 4],
    /// Frontend port (network byte order).
    pub dport: u16,
    /// 0: master entry; 1..: backend slots.
    pub backend_slot: u16,
    /// IP protocol (0: any).
    pub proto: u8,
    /// 0 external, 1 internal.
    pub scope: u8,
    /// Padding.
    pub pad: [u8; 2],
}
pod!(Lb4Key, 12);

/// `lb4_service`: the value of `cilium_lb4_services_v2` (12 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4Service {
    /// Slot: backend id. Master: affinity timeout and algorithm.
    pub backend_id: u32,
    /// Master: selectable slots.
    pub count: u16,
    /// Rev-NAT index (network byte order).
    pub rev_nat_index: u16,
    /// `SVC_FLAG_*` (low byte).
    pub flags: u8,
    /// `SVC_FLAG_*` (high byte).
    pub flags2: u8,
    /// Master: slots after `count`.
    pub qcount: u16,
}
pod!(Lb4Service, 12);

/// `lb4_backend`: the value of `cilium_lb4_backends_v3` (12 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4Backend {
    /// Backend address (network byte order).
    pub address: [u8; 4],
    /// Backend port (network byte order).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Backend state.
    pub flags: u8,
    /// Cluster id.
    pub cluster_id: u16,
    /// Zone.
    pub zone: u8,
    /// Padding.
    pub pad: u8,
}
pod!(Lb4Backend, 12);

/// `lb4_reverse_nat`: the value of `cilium_lb4_reverse_nat` (6 bytes: packed in C, as
/// Cilium's; Cilium's own decoder refuses any other size).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4ReverseNat {
    /// Frontend address (network byte order).
    pub address: [u8; 4],
    /// Frontend port (network byte order).
    pub port: u16,
}
pod!(Lb4ReverseNat, 6);

/// `ipv4_ct_tuple`: the key of the conntrack and NAT maps (14 bytes, packed in C).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ipv4CtTuple {
    /// Destination address (network byte order).
    pub daddr: [u8; 4],
    /// Source address (network byte order).
    pub saddr: [u8; 4],
    /// Destination port (network byte order).
    pub dport: u16,
    /// Source port (network byte order).
    pub sport: u16,
    /// IP protocol.
    pub nexthdr: u8,
    /// `TUPLE_F_*`: OUT 0, IN 1, RELATED 2, SERVICE 4.
    pub flags: u8,
}
pod!(Ipv4CtTuple, 14);

/// `ct_entry`: the value of the conntrack maps (56 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtEntry {
    /// The policy revision (`cilium_policy_rev` + 1) at which the flow last passed policy;
    /// 0: not yet (this project's use of upstream's unused `reserved0`).
    pub policy_rev: u32,
    /// The interface of the flow's source endpoint, where its replies are delivered (0: the
    /// source is not a local endpoint); upstream's unused `reserved0`, as `policy_rev`.
    pub reply_ifindex: u32,
    /// Backend of a service connection.
    pub backend_id: u64,
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
    /// Expiry, in seconds of the monotonic clock.
    pub lifetime: u32,
    /// rx_closing, tx_closing, ... bit fields.
    pub flags: u16,
    /// Rev-NAT index of a service connection.
    pub rev_nat_index: u16,
    /// The interface of the flow's destination endpoint, where its packets are delivered
    /// (0: not a local endpoint, or an index of 65536 or more).
    pub ifindex: u16,
    /// TCP flags seen leaving.
    pub tx_flags_seen: u8,
    /// TCP flags seen arriving.
    pub rx_flags_seen: u8,
    /// Source identity.
    pub src_sec_id: u32,
    /// Last report time (leaving).
    pub last_tx_report: u32,
    /// Last report time (arriving).
    pub last_rx_report: u32,
}
pod!(CtEntry, 56);

/// `ipv4_nat_entry`: the value of `cilium_snat_v4_external` (40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ipv4NatEntry {
    /// Creation time.
    pub created: u64,
    /// Whether a conntrack entry is needed.
    pub needs_ct: u64,
    /// Padding.
    pub pad1: u64,
    /// Padding.
    pub pad2: u64,
    /// Translated address (network byte order).
    pub to_addr: [u8; 4],
    /// Translated port (network byte order).
    pub to_port: u16,
    /// Padding.
    pub pad3: u16,
}
pod!(Ipv4NatEntry, 40);

/// `policy_key`: the key of an endpoint's policy map (12 bytes, LPM).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyKey {
    /// LPM prefix length: 40 static bits, then protocol and port bits.
    pub prefixlen: u32,
    /// Peer identity (0: any).
    pub sec_label: u32,
    /// 0 ingress, 1 egress.
    pub egress: u8,
    /// IP protocol (0: any).
    pub protocol: u8,
    /// Port (network byte order).
    pub dport: u16,
}
pod!(PolicyKey, 12);

/// `policy_entry`: the value of an endpoint's policy map (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyEntry {
    /// L7 proxy port (network byte order).
    pub proxy_port: u16,
    /// Bit 0: deny; bits 3-7: port prefix length.
    pub flags: u8,
    /// Authentication type.
    pub auth_type: u8,
    /// Proxy port priority.
    pub proxy_port_priority: u8,
    /// Padding.
    pub pad1: u8,
    /// Padding.
    pub pad2: u16,
}
pod!(PolicyEntry, 8);

/// `policy_stats_key`: the key of `cilium_policystats` (12 bytes): an endpoint's policy
/// entry, as its policy map key has it (port-and-protocol prefix length instead of the LPM
/// prefix).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyStatsKey {
    /// The endpoint's id.
    pub endpoint_id: u16,
    /// Padding.
    pub pad1: u8,
    /// The entry's protocol + port prefix length (0-24).
    pub prefix_len: u8,
    /// The peer identity (0: any).
    pub sec_label: u32,
    /// 1 for egress.
    pub egress: u8,
    /// IP protocol (0: any).
    pub protocol: u8,
    /// Destination port (network byte order).
    pub dport: u16,
}
pod!(PolicyStatsKey, 12);

/// `policy_stats_value`: one CPU's counts in `cilium_policystats` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PolicyStatsValue {
    /// Packets the entry allowed.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}
pod!(PolicyStatsValue, 16);

/// `datapath_event`: one record of `cilium_events` (56 bytes, version 1). Decoded by
/// [`crate::events::Event::decode`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawEvent {
    /// `CILIUM_NOTIFY_*`: drop 1, trace 4, policy verdict 5.
    pub event_type: u8,
    /// Drop: reason. Trace: observation point.
    pub subtype: u8,
    /// Endpoint id of the emitting program's endpoint.
    pub source: u16,
    /// skb hash.
    pub hash: u32,
    /// Packet length.
    pub len_orig: u32,
    /// Format version (1).
    pub version: u16,
    /// 0 for an IPv4 packet (the addresses and ports below are parsed); else the EtherType
    /// of a frame the datapath does not parse (host byte order).
    pub ethertype: u16,
    /// Source identity.
    pub src_label: u32,
    /// Destination identity.
    pub dst_label: u32,
    /// Source endpoint id.
    pub src_id: u16,
    /// Destination endpoint id.
    pub dst_id: u16,
    /// Interface the program runs on.
    pub ifindex: u32,
    /// Source address (network byte order).
    pub saddr: [u8; 4],
    /// Destination address (network byte order).
    pub daddr: [u8; 4],
    /// Source port (network byte order); ICMP echo id.
    pub sport: u16,
    /// Destination port (network byte order).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// 1 for replies.
    pub reply: u8,
    /// Monotonic time, ns.
    pub ktime: u64,
}
pod!(RawEvent, 56);

/// `lb4_reverse_sk_key`: the key of `cilium_lb4_reverse_sk` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4ReverseSkKey {
    /// Socket cookie.
    pub cookie: u64,
    /// Backend address (network byte order).
    pub address: [u8; 4],
    /// Backend port (network byte order).
    pub port: u16,
    /// Padding.
    pub pad: u16,
}
pod!(Lb4ReverseSkKey, 16);

/// `lb4_reverse_sk`: the value of `cilium_lb4_reverse_sk` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4ReverseSk {
    /// Frontend address (network byte order).
    pub address: [u8; 4],
    /// Frontend port (network byte order).
    pub port: u16,
    /// Rev-NAT index (network byte order).
    pub rev_nat_index: u16,
}
pod!(Lb4ReverseSk, 8);

/// `lb4_affinity_key`: the key of `cilium_lb4_affinity` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lb4AffinityKey {
    /// Client IPv4 (network order, first 4 bytes) or a netns cookie.
    pub client_id: u64,
    /// Rev-NAT index (network byte order).
    pub rev_nat_id: u16,
    /// 1 when `client_id` is a netns cookie.
    pub netns_cookie: u8,
    /// Padding.
    pub pad1: u8,
    /// Padding.
    pub pad2: u32,
}
pod!(Lb4AffinityKey, 16);

/// `lb_affinity_val`: the value of `cilium_lb4_affinity` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LbAffinityVal {
    /// Last use, seconds of the monotonic clock.
    pub last_used: u64,
    /// The backend.
    pub backend_id: u32,
    /// Padding.
    pub pad: u32,
}
pod!(LbAffinityVal, 16);

/// `lb_affinity_match`: the key of `cilium_lb_affinity_match` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LbAffinityMatch {
    /// The backend.
    pub backend_id: u32,
    /// Rev-NAT index (network byte order).
    pub rev_nat_id: u16,
    /// Padding.
    pub pad: u16,
}
pod!(LbAffinityMatch, 8);
