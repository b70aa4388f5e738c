// SPDX-License-Identifier: Apache-2.0

//! The IPv4 load-balancing map entries the datapath reads, with Cilium's names and fields.
//!
//! Values here are logical and in host byte order; cilium-bpf lays them out as the kernel
//! maps hold them (`dport`, addresses and `rev_nat_index` in network byte order).
//!
//! | map | key | value |
//! |---|---|---|
//! | `cilium_lb4_services_v2` | [`Lb4Key`] `{address, dport, backend_slot, proto, scope}` | [`Lb4Service`] |
//! | `cilium_lb4_backends_v3` | backend id (`u32`) | [`Lb4Backend`] |
//! | `cilium_lb4_reverse_nat` | rev-NAT index (`u16`) | [`Lb4RevNat`] |
//! | `cilium_lb4_maglev` | rev-NAT index (`u16`) | the service's lookup table (M backend ids) |
//!
//! A service has a *master* entry (slot 0) holding the number of selectable slots, and one
//! entry per backend slot (1..) holding a backend id. Slots are ordered active, then
//! terminating, then quarantined; maintenance backends get none.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// `lb4_key`: one entry of `cilium_lb4_services_v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lb4Key {
    /// Frontend address.
    pub address: Ipv4Addr,
    /// Frontend port.
    pub dport: u16,
    /// 0 for the master entry, 1.. for backend slots.
    pub backend_slot: u16,
    /// IP protocol number (0 = any).
    pub proto: u8,
    /// [`SCOPE_EXTERNAL`] or [`SCOPE_INTERNAL`].
    pub scope: u8,
}

/// Lookup scope of traffic from outside the cluster (and the only one most services have).
pub const SCOPE_EXTERNAL: u8 = 0;
/// Lookup scope of traffic from inside, for services with two scopes.
pub const SCOPE_INTERNAL: u8 = 1;

/// `lb4_service`: the value of a `cilium_lb4_services_v2` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lb4Service {
    /// Slot entries: the backend id. Master entry: the affinity timeout in seconds (low 24
    /// bits) and, with per-service algorithms, the algorithm in the top 8 bits.
    pub backend_id: u32,
    /// Master entry: the slots new flows are spread over (1..=count).
    pub count: u16,
    /// The service's rev-NAT index (its service id).
    pub rev_nat_index: u16,
    /// `SVC_FLAG_*` bits (low byte of Cilium's `ServiceFlags`).
    pub flags: u8,
    /// `SVC_FLAG_*` bits (high byte).
    pub flags2: u8,
    /// Master entry: slots after `count` that take no new flows (terminating while some
    /// backend is active, and quarantined).
    pub qcount: u16,
}

/// `lb4_backend`: the value of a `cilium_lb4_backends_v3` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lb4Backend {
    /// Backend address.
    pub address: Ipv4Addr,
    /// Backend port.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The backend's state code (`BE_STATE_*`).
    pub flags: u8,
    /// The backend's cluster.
    pub cluster_id: u16,
    /// Topology zone.
    pub zone: u8,
}

/// The value of a `cilium_lb4_reverse_nat` entry: the frontend replies are rewritten to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lb4RevNat {
    /// Frontend address.
    pub address: Ipv4Addr,
    /// Frontend port.
    pub port: u16,
}

/// Service flags (Cilium's `ServiceFlags`: `flags` is the low byte, `flags2` the high).
pub mod flags {
    /// `flags`: frontend is an external IP.
    pub const EXTERNAL_IP: u8 = 1 << 0;
    /// `flags`: frontend is a NodePort.
    pub const NODEPORT: u8 = 1 << 1;
    /// `flags`: externalTrafficPolicy=Local.
    pub const EXT_LOCAL_SCOPE: u8 = 1 << 2;
    /// `flags`: frontend is a HostPort.
    pub const HOSTPORT: u8 = 1 << 3;
    /// `flags`: ClientIP session affinity.
    pub const AFFINITY: u8 = 1 << 4;
    /// `flags`: frontend is a LoadBalancer address.
    pub const LOADBALANCER: u8 = 1 << 5;
    /// `flags`: reachable from outside (not a ClusterIP-only or wildcard entry).
    pub const ROUTABLE: u8 = 1 << 6;
    /// `flags`: loadBalancerSourceRanges are checked.
    pub const SOURCE_RANGE: u8 = 1 << 7;
    /// `flags2`: local redirect policy.
    pub const LOCALREDIRECT: u8 = 1 << 0;
    /// `flags2`: NAT46/64.
    pub const NAT_46X64: u8 = 1 << 1;
    /// `flags2`: redirected to an L7 load balancer.
    pub const L7_LOADBALANCER: u8 = 1 << 2;
    /// `flags2`: HostPort on a loopback address.
    pub const LOOPBACK: u8 = 1 << 3;
    /// `flags2`: internalTrafficPolicy=Local.
    pub const INT_LOCAL_SCOPE: u8 = 1 << 4;
    /// `flags2`: the service has an external and an internal scope entry.
    pub const TWO_SCOPES: u8 = 1 << 5;
    /// `flags2` of a slot entry: the slot's backend is quarantined.
    pub const QUARANTINED: u8 = 1 << 6;
    /// `flags2`: DSR forwarding.
    pub const FWD_MODE_DSR: u8 = 1 << 7;
}

/// Service flags as Cilium prints them (`ServiceFlags.String()`): the frontend type, then
/// the set attributes, e.g. `ClusterIP, non-routable` or `NodePort, Local, two-scopes`.
///
/// ```
/// use cilium_lb::maps::{describe_flags, flags};
/// assert_eq!(describe_flags(0, 0), "ClusterIP, non-routable");
/// assert_eq!(describe_flags(flags::NODEPORT | flags::ROUTABLE | flags::EXT_LOCAL_SCOPE, flags::TWO_SCOPES), "NodePort, Local, two-scopes");
/// ```
pub fn describe_flags(f: u8, f2: u8) -> String {
    let kind = if f2 & flags::LOCALREDIRECT != 0 {
        "LocalRedirect"
    } else if f & flags::EXTERNAL_IP != 0 {
        "ExternalIPs"
    } else if f & flags::NODEPORT != 0 {
        "NodePort"
    } else if f & flags::LOADBALANCER != 0 {
        "LoadBalancer"
    } else if f & flags::HOSTPORT != 0 {
        "HostPort"
    } else {
        "ClusterIP"
    };
    let mut out = vec![kind];
    let attrs: [(bool, &str); 10] = [
        (f & flags::EXT_LOCAL_SCOPE != 0, "Local"),
        (f2 & flags::INT_LOCAL_SCOPE != 0, "InternalLocal"),
        (f2 & flags::TWO_SCOPES != 0, "two-scopes"),
        (f & flags::AFFINITY != 0, "sessionAffinity"),
        (f & flags::ROUTABLE == 0, "non-routable"),
        (f & flags::SOURCE_RANGE != 0, "check source-range"),
        (f2 & flags::NAT_46X64 != 0, "46x64"),
        (f2 & flags::L7_LOADBALANCER != 0, "l7-load-balancer"),
        (f2 & flags::LOOPBACK != 0, "loopback"),
        (f2 & flags::FWD_MODE_DSR != 0, "dsr"),
    ];
    out.extend(attrs.iter().filter(|(set, _)| *set).map(|(_, name)| *name));
    out.join(", ")
}
