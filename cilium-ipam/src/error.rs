// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-ipam.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::Family;

/// What can go wrong when carving CIDRs or handing out IPs. A failed call changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// A CIDR or IP string did not parse.
    #[error("invalid CIDR {input:?}: {reason}")]
    InvalidCidr {
        /// The text given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The per-node mask size does not fit the cluster CIDR.
    #[error("invalid {family} node mask size /{mask} for cluster CIDR {cidr}: {reason}")]
    InvalidMaskSize {
        /// Address family.
        family: Family,
        /// The mask size asked for.
        mask: u8,
        /// The cluster CIDR it was checked against.
        cidr: IpNet,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Two cluster CIDRs overlap.
    #[error("cluster CIDRs {first} and {second} overlap")]
    OverlappingCidrs {
        /// One CIDR.
        first: IpNet,
        /// The other.
        second: IpNet,
    },
    /// Nothing was configured.
    #[error("no cluster CIDR configured")]
    NoClusterCidr,
    /// Every cluster CIDR of the family is fully allocated ("allocator full" in Cilium).
    #[error("{family} cluster pool exhausted: all {capacity} node CIDRs are allocated")]
    PoolExhausted {
        /// Address family.
        family: Family,
        /// Number of node CIDRs the pool holds.
        capacity: u64,
    },
    /// A CIDR is already held by another node.
    #[error("CIDR {cidr} is already allocated to node {owner:?}")]
    CidrAllocated {
        /// The CIDR asked for.
        cidr: IpNet,
        /// The node holding it.
        owner: String,
    },
    /// A node already holds a different CIDR of the same family.
    #[error("node {node:?} already holds {held}, cannot also occupy {asked}")]
    NodeHoldsOtherCidr {
        /// The node.
        node: String,
        /// The CIDR it holds.
        held: IpNet,
        /// The CIDR asked for.
        asked: IpNet,
    },
    /// A CIDR is not one of the pool's node CIDRs (outside every cluster CIDR, or wrong size
    /// or alignment).
    #[error("CIDR {cidr} is not a node CIDR of the cluster pool")]
    CidrNotInPool {
        /// The CIDR.
        cidr: IpNet,
    },
    /// A node name is empty.
    #[error("empty node name")]
    EmptyNodeName,
    /// The node allocator got two CIDRs of one family.
    #[error("more than one {family} CIDR given to a node allocator ({first}, {second})")]
    DuplicateFamily {
        /// Address family.
        family: Family,
        /// The first CIDR.
        first: IpNet,
        /// The second.
        second: IpNet,
    },
    /// The node allocator has no CIDR of this family.
    #[error("no {family} CIDR on this node")]
    FamilyNotConfigured {
        /// Address family.
        family: Family,
    },
    /// Every usable IP of the node CIDR is allocated.
    #[error("range full: all {capacity} IPs of {cidr} are allocated")]
    RangeFull {
        /// The node CIDR.
        cidr: IpNet,
        /// Number of usable IPs.
        capacity: u32,
    },
    /// The IP is not a usable address of any node CIDR (outside, network or broadcast).
    #[error("IP {ip} is not a usable address of this node's CIDRs")]
    IpNotInRange {
        /// The IP.
        ip: IpAddr,
    },
    /// The IP is already allocated.
    #[error("IP {ip} is already allocated to {owner:?}")]
    IpAllocated {
        /// The IP.
        ip: IpAddr,
        /// Its owner.
        owner: String,
    },
    /// The IP is not allocated, so it cannot be released.
    #[error("IP {ip} is not allocated")]
    IpNotAllocated {
        /// The IP.
        ip: IpAddr,
    },
    /// An owner string is empty.
    #[error("empty owner")]
    EmptyOwner,
    /// A snapshot is inconsistent (the message says where).
    #[error("invalid snapshot: {reason}")]
    InvalidSnapshot {
        /// What is wrong.
        reason: String,
    },
}
