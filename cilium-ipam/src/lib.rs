// SPDX-License-Identifier: Apache-2.0

//! Cluster-pool IPAM as Cilium does it, as a library.
//!
//! Two halves, as in Cilium:
//! - [`ClusterPool`] (operator side) carves each node's pod CIDR out of the cluster CIDRs
//!   (`cluster-pool-ipv4-cidr`, `cluster-pool-ipv4-mask-size`, and IPv6 twins): the same node
//!   asking again gets the same CIDR, CIDRs that nodes already hold are occupied first after
//!   a restart, and a full cluster CIDR moves allocation on to the next one.
//! - [`NodeAllocator`] (agent side) hands out the IPs of the node's CIDR to owners
//!   (`<namespace>/<pod>`, `router`, `health`), never the network or broadcast address, and
//!   persists and restores exactly through [`NodeAllocatorSnapshot`].
//!
//! Both run in O(1) amortised time at any fill (see `cilium_core::IdPool`), and a failed call
//! changes nothing.
//!
//! ```
//! use cilium_ipam::{ClusterPool, ClusterPoolConfig, Family, NodeAllocator, Owner};
//!
//! // The seed's cluster: 172.20.0.0/16, a /24 per node.
//! let mut pool = ClusterPool::new(&ClusterPoolConfig::ipv4("172.20.0.0/16", 24)?)?;
//! let cidrs = pool.allocate("k8s-w1")?;
//! let mut node = NodeAllocator::new(&cidrs.to_vec())?;
//! let ip = node.allocate_next(Family::V4, Owner::pod("default", "webpod-1"))?;
//! assert_eq!(ip.to_string(), "172.20.0.1");
//! assert_eq!(node.status(Family::V4).unwrap(), "1/254 allocated from 172.20.0.0/24");
//! # Ok::<(), cilium_ipam::IpamError>(())
//! ```
#![forbid(unsafe_code)]

mod cluster_pool;
mod error;
mod node;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use cluster_pool::{
    ClusterPool, ClusterPoolConfig, DEFAULT_IPV4_MASK_SIZE, DEFAULT_IPV6_MASK_SIZE, MAX_NODE_BITS,
    NodeCidrs, parse_list,
};
pub use error::IpamError;
pub use node::{MAX_IPV6_RANGE, NodeAllocator, NodeAllocatorSnapshot, Owner, RangeSnapshot};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    #[serde(rename = "ipv4")]
    V4,
    /// IPv6.
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Prints `IPv4` or `IPv6`, as Cilium's status output does.
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub(crate) fn addr_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn u128_to_addr(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}
