// SPDX-License-Identifier: Apache-2.0

//! The agent side of cluster-pool IPAM: handing out the IPs of the node's pod CIDR(s).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use cilium_core::IdPool;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Family, IpamError, addr_to_u128, u128_to_addr};

/// Cap on the addresses of an IPv6 range (the allocator keeps a bitmap of that size), as in
/// Cilium and Kubernetes.
pub const MAX_IPV6_RANGE: u32 = 1 << 16;

/// Who holds an IP: `<namespace>/<pod>` for pods, or one of the fixed owners.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(Arc<str>);

impl Owner {
    /// The router IP of `cilium_host`.
    pub const ROUTER: &'static str = "router";
    /// The health-check endpoint.
    pub const HEALTH: &'static str = "health";
    /// The ingress (Envoy) IP.
    pub const INGRESS: &'static str = "ingress";
    /// The node's own IP, when it falls inside the pod CIDR.
    pub const NODE_IP: &'static str = "node-ip";

    /// An owner from any non-empty string.
    pub fn new(owner: impl Into<String>) -> Result<Self, IpamError> {
        let s = owner.into();
        if s.is_empty() {
            return Err(IpamError::EmptyOwner);
        }
        Ok(Owner(s.into()))
    }

    /// The owner string of a pod: `<namespace>/<pod>`.
    pub fn pod(namespace: &str, name: &str) -> Self {
        Owner(format!("{namespace}/{name}").into())
    }

    /// The owner as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Owner {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Self, IpamError> {
        Owner::new(s)
    }
}

impl TryFrom<&str> for Owner {
    type Error = IpamError;
    fn try_from(s: &str) -> Result<Self, IpamError> {
        Owner::new(s)
    }
}

impl From<Owner> for String {
    fn from(o: Owner) -> String {
        o.0.to_string()
    }
}

/// The usable IPs of one node CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    family: Family,
    cidr: IpNet,
    /// Integer value of the first usable address (the network address + 1).
    first: u128,
    pool: IdPool,
    owners: HashMap<u32, Owner, foldhash::fast::RandomState>,
}

impl Range {
    fn new(cidr: IpNet) -> Result<Self, IpamError> {
        let cidr = cidr.trunc();
        let family = Family::of(&cidr.addr());
        let host_bits = u32::from(family.bits() - cidr.prefix_len());
        if host_bits < 2 {
            return Err(IpamError::InvalidCidr {
                input: cidr.to_string(),
                reason: "no usable addresses (the prefix must be /30 or shorter for IPv4, /126 for IPv6)".to_owned(),
            });
        }
        let size = match family {
            // Network and broadcast addresses are never handed out.
            Family::V4 => {
                if host_bits >= 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 2
                }
            }
            // The network address is never handed out; the range is capped.
            Family::V6 => {
                let all = if host_bits >= 17 {
                    MAX_IPV6_RANGE
                } else {
                    1u32 << host_bits
                };
                all - 1
            }
        };
        Ok(Range {
            family,
            cidr,
            first: addr_to_u128(cidr.network()) + 1,
            pool: IdPool::new(size),
            owners: HashMap::default(),
        })
    }

    fn index_of(&self, ip: IpAddr) -> Option<u32> {
        if Family::of(&ip) != self.family {
            return None;
        }
        let v = addr_to_u128(ip);
        let idx = v.checked_sub(self.first)?;
        let idx = u32::try_from(idx).ok()?;
        (idx < self.pool.len()).then_some(idx)
    }

    fn ip_at(&self, idx: u32) -> IpAddr {
        u128_to_addr(self.family, self.first + u128::from(idx))
    }

    fn status(&self) -> String {
        format!(
            "{}/{} allocated from {}",
            self.pool.used(),
            self.pool.len(),
            self.cidr
        )
    }
}

/// Hands out the IPs of a node's pod CIDRs (at most one per family) to owners.
///
/// Allocation is next-fit: it continues after the last IP handed out and wraps, so a
/// released IP is reused as late as possible. Every operation is O(1) amortised at any fill.
///
/// ```
/// use cilium_ipam::{Family, NodeAllocator, Owner};
/// let mut ipam = NodeAllocator::new(&["10.20.1.0/24".parse().unwrap()]).unwrap();
/// let router = ipam.allocate_next(Family::V4, Owner::new(Owner::ROUTER).unwrap()).unwrap();
/// assert_eq!(router.to_string(), "10.20.1.1");
/// let pod = ipam.allocate_next(Family::V4, Owner::pod("default", "curl-pod")).unwrap();
/// assert_eq!(ipam.status(Family::V4).unwrap(), "2/254 allocated from 10.20.1.0/24");
/// ipam.release(pod).unwrap();
/// assert!(ipam.release(pod).is_err()); // not allocated any more
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAllocator {
    v4: Option<Range>,
    v6: Option<Range>,
}

/// The persisted form of a [`NodeAllocator`]: its CIDRs, their search cursors and every
/// allocation with its owner. Restoring it gives an allocator in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAllocatorSnapshot {
    /// One entry per node CIDR.
    pub ranges: Vec<RangeSnapshot>,
}

/// One node CIDR in a [`NodeAllocatorSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSnapshot {
    /// The node CIDR.
    pub cidr: IpNet,
    /// Where the next allocation search starts (an offset into the usable addresses).
    pub cursor: u32,
    /// Allocated IPs and their owners.
    pub allocations: BTreeMap<IpAddr, Owner>,
}

impl NodeAllocator {
    /// An allocator for the node's CIDRs (at most one IPv4 and one IPv6).
    pub fn new(cidrs: &[IpNet]) -> Result<Self, IpamError> {
        let mut out = NodeAllocator { v4: None, v6: None };
        for &cidr in cidrs {
            let range = Range::new(cidr)?;
            let slot = match range.family {
                Family::V4 => &mut out.v4,
                Family::V6 => &mut out.v6,
            };
            if let Some(first) = slot {
                return Err(IpamError::DuplicateFamily {
                    family: range.family,
                    first: first.cidr,
                    second: cidr,
                });
            }
            *slot = Some(range);
        }
        if out.v4.is_none() && out.v6.is_none() {
            return Err(IpamError::NoClusterCidr);
        }
        Ok(out)
    }

    fn range(&self, family: Family) -> Result<&Range, IpamError> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
        .ok_or(IpamError::FamilyNotConfigured { family })
    }

    fn range_mut(&mut self, family: Family) -> Result<&mut Range, IpamError> {
        match family {
            Family::V4 => self.v4.as_mut(),
            Family::V6 => self.v6.as_mut(),
        }
        .ok_or(IpamError::FamilyNotConfigured { family })
    }

    /// The range holding `ip` and its index there.
    fn locate_mut(&mut self, ip: IpAddr) -> Result<(&mut Range, u32), IpamError> {
        let range = self
            .range_mut(Family::of(&ip))
            .map_err(|_| IpamError::IpNotInRange { ip })?;
        let idx = range.index_of(ip).ok_or(IpamError::IpNotInRange { ip })?;
        Ok((range, idx))
    }

    /// The node CIDR of a family.
    pub fn cidr(&self, family: Family) -> Option<IpNet> {
        self.range(family).ok().map(|r| r.cidr)
    }

    /// Hands the next free IP of the family to `owner`.
    pub fn allocate_next(&mut self, family: Family, owner: Owner) -> Result<IpAddr, IpamError> {
        let range = self.range_mut(family)?;
        let Some(idx) = range.pool.allocate_next() else {
            return Err(IpamError::RangeFull {
                cidr: range.cidr,
                capacity: range.pool.len(),
            });
        };
        range.owners.insert(idx, owner);
        Ok(range.ip_at(idx))
    }

    /// Hands this specific IP to `owner` (for restore, or a requested address).
    pub fn allocate(&mut self, ip: IpAddr, owner: Owner) -> Result<(), IpamError> {
        let (range, idx) = self.locate_mut(ip)?;
        if !range.pool.take(idx) {
            let owner = range.owners.get(&idx).map(Owner::to_string);
            return Err(IpamError::IpAllocated {
                ip,
                owner: owner.unwrap_or_default(),
            });
        }
        range.owners.insert(idx, owner);
        Ok(())
    }

    /// Releases an IP; returns who held it.
    pub fn release(&mut self, ip: IpAddr) -> Result<Owner, IpamError> {
        let (range, idx) = self.locate_mut(ip)?;
        if !range.pool.put(idx) {
            return Err(IpamError::IpNotAllocated { ip });
        }
        Ok(range
            .owners
            .remove(&idx)
            .expect("every taken index has an owner"))
    }

    /// Who holds an IP.
    pub fn owner_of(&self, ip: IpAddr) -> Option<&Owner> {
        let range = self.range(Family::of(&ip)).ok()?;
        range.owners.get(&range.index_of(ip)?)
    }

    /// Every allocated IP with its owner, sorted by IP.
    pub fn list(&self) -> Vec<(IpAddr, Owner)> {
        let mut v: Vec<_> = [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .flat_map(|r| r.owners.iter().map(|(i, o)| (r.ip_at(*i), o.clone())))
            .collect();
        v.sort();
        v
    }

    /// (allocated, usable) IPs of a family.
    pub fn usage(&self, family: Family) -> Option<(u32, u32)> {
        let r = self.range(family).ok()?;
        Some((r.pool.used(), r.pool.len()))
    }

    /// The status line Cilium prints, e.g. `14/254 allocated from 10.20.1.0/24`.
    pub fn status(&self, family: Family) -> Option<String> {
        self.range(family).ok().map(Range::status)
    }

    /// The state to persist.
    pub fn snapshot(&self) -> NodeAllocatorSnapshot {
        let ranges = [&self.v4, &self.v6]
            .into_iter()
            .flatten()
            .map(|r| RangeSnapshot {
                cidr: r.cidr,
                cursor: r.pool.cursor(),
                allocations: r
                    .owners
                    .iter()
                    .map(|(i, o)| (r.ip_at(*i), o.clone()))
                    .collect(),
            })
            .collect();
        NodeAllocatorSnapshot { ranges }
    }

    /// Rebuilds an allocator from a snapshot, checking every entry.
    pub fn restore(snapshot: &NodeAllocatorSnapshot) -> Result<Self, IpamError> {
        let cidrs: Vec<IpNet> = snapshot.ranges.iter().map(|r| r.cidr).collect();
        let mut out = NodeAllocator::new(&cidrs).map_err(|e| IpamError::InvalidSnapshot {
            reason: e.to_string(),
        })?;
        for rs in &snapshot.ranges {
            for (ip, owner) in &rs.allocations {
                let in_this = rs.cidr.contains(ip);
                if !in_this {
                    return Err(IpamError::InvalidSnapshot {
                        reason: format!("{ip} is listed under {} but lies outside it", rs.cidr),
                    });
                }
                out.allocate(*ip, owner.clone())
                    .map_err(|e| IpamError::InvalidSnapshot {
                        reason: e.to_string(),
                    })?;
            }
            let range = out.range_mut(Family::of(&rs.cidr.addr()))?;
            if rs.cursor >= range.pool.len() {
                return Err(IpamError::InvalidSnapshot {
                    reason: format!(
                        "cursor {} is outside the {} usable addresses of {}",
                        rs.cursor,
                        range.pool.len(),
                        rs.cidr
                    ),
                });
            }
            range.pool.set_cursor(rs.cursor);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn excludes_network_and_broadcast() {
        let mut a = NodeAllocator::new(&["10.0.0.0/30".parse().unwrap()]).unwrap();
        let o = || Owner::new("x").unwrap();
        assert_eq!(a.allocate_next(Family::V4, o()).unwrap(), v4("10.0.0.1"));
        assert_eq!(a.allocate_next(Family::V4, o()).unwrap(), v4("10.0.0.2"));
        assert!(matches!(
            a.allocate_next(Family::V4, o()),
            Err(IpamError::RangeFull { capacity: 2, .. })
        ));
        for ip in ["10.0.0.0", "10.0.0.3", "10.0.1.1", "fd00::1"] {
            assert!(matches!(
                a.allocate(v4(ip), o()),
                Err(IpamError::IpNotInRange { .. })
            ));
        }
        assert!(NodeAllocator::new(&["10.0.0.0/31".parse().unwrap()]).is_err());
        assert!(matches!(
            a.allocate_next(Family::V6, o()),
            Err(IpamError::FamilyNotConfigured { .. })
        ));
    }

    #[test]
    fn ipv6_range_capped() {
        let mut a = NodeAllocator::new(&[
            "fd00::/104".parse().unwrap(),
            "10.0.0.0/24".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(a.usage(Family::V6), Some((0, 65535)));
        assert_eq!(
            a.allocate_next(Family::V6, Owner::new("r").unwrap())
                .unwrap(),
            "fd00::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            a.status(Family::V6).unwrap(),
            "1/65535 allocated from fd00::/104"
        );
        let small = NodeAllocator::new(&["fd00::/120".parse().unwrap()]).unwrap();
        assert_eq!(small.usage(Family::V6), Some((0, 255)));
        assert!(
            NodeAllocator::new(&[
                "10.0.0.0/24".parse().unwrap(),
                "10.1.0.0/24".parse().unwrap()
            ])
            .is_err()
        );
    }

    #[test]
    fn taken_and_released_errors() {
        let mut a = NodeAllocator::new(&["10.20.1.0/24".parse().unwrap()]).unwrap();
        a.allocate(v4("10.20.1.7"), Owner::pod("default", "a"))
            .unwrap();
        let err = a
            .allocate(v4("10.20.1.7"), Owner::pod("default", "b"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "IP 10.20.1.7 is already allocated to \"default/a\""
        );
        assert_eq!(a.owner_of(v4("10.20.1.7")).unwrap().as_str(), "default/a");
        assert_eq!(a.release(v4("10.20.1.7")).unwrap().as_str(), "default/a");
        assert!(matches!(
            a.release(v4("10.20.1.7")),
            Err(IpamError::IpNotAllocated { .. })
        ));
        assert!(Owner::new("").is_err());
    }

    #[test]
    fn snapshot_rejects_bad_input() {
        let mut a = NodeAllocator::new(&["10.20.1.0/24".parse().unwrap()]).unwrap();
        a.allocate_next(Family::V4, Owner::new("router").unwrap())
            .unwrap();
        let good = serde_json::to_string(&a.snapshot()).unwrap();
        assert_eq!(
            good,
            r#"{"ranges":[{"cidr":"10.20.1.0/24","cursor":1,"allocations":{"10.20.1.1":"router"}}]}"#
        );
        for bad in [
            good.replace("10.20.1.1", "10.20.2.1"),
            good.replace("10.20.1.1", "10.20.1.255"),
            good.replace("\"cursor\":1", "\"cursor\":254"),
            good.replace("router", ""),
            good.replace("/24", "/31"),
        ] {
            let snap: Result<NodeAllocatorSnapshot, _> = serde_json::from_str(&bad);
            if let Ok(snap) = snap {
                assert!(NodeAllocator::restore(&snap).is_err(), "{bad}");
            }
        }
    }

    proptest! {
        #[test]
        fn allocator_invariants(ops in proptest::collection::vec((0u8..4, 0u32..70), 1..300)) {
            let cidr: IpNet = "10.9.0.0/26".parse().unwrap();
            let mut a = NodeAllocator::new(&[cidr]).unwrap();
            let mut model: HashSet<IpAddr> = HashSet::new();
            for (op, n) in ops {
                match op {
                    0 | 1 => match a.allocate_next(Family::V4, Owner::new(format!("o{n}")).unwrap()) {
                        Ok(ip) => {
                            prop_assert!(cidr.contains(&ip));
                            prop_assert!(ip != cidr.network() && ip != cidr.broadcast());
                            prop_assert!(model.insert(ip), "{ip} handed out twice");
                        }
                        Err(IpamError::RangeFull { .. }) => prop_assert_eq!(model.len(), 62),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    },
                    2 => {
                        let ip = IpAddr::V4(std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 9, 0, 0)) + n));
                        let r = a.release(ip);
                        prop_assert_eq!(r.is_ok(), model.remove(&ip));
                    }
                    _ => {
                        let back = NodeAllocator::restore(&a.snapshot()).unwrap();
                        prop_assert_eq!(&back, &a);
                        let json = serde_json::to_string(&a.snapshot()).unwrap();
                        let snap: NodeAllocatorSnapshot = serde_json::from_str(&json).unwrap();
                        prop_assert_eq!(NodeAllocator::restore(&snap).unwrap(), a.clone());
                    }
                }
                prop_assert_eq!(a.usage(Family::V4).unwrap().0 as usize, model.len());
            }
        }
    }
}
