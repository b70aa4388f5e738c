// SPDX-License-Identifier: Apache-2.0

//! The operator side of cluster-pool IPAM: carving per-node pod CIDRs out of the cluster
//! CIDRs (`cluster-pool-ipv4-cidr`, `cluster-pool-ipv4-mask-size` and their IPv6 twins).

use std::collections::HashMap;
use std::sync::Arc;

use cilium_core::IdPool;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{Family, IpamError, addr_to_u128, u128_to_addr};

/// The largest number of node-mask bits beyond a cluster CIDR's prefix (as Kubernetes'
/// cidrset): `/8` split into `/24`s gives 65,536 node CIDRs.
pub const MAX_NODE_BITS: u8 = 16;

/// Default IPv4 node mask size (`cluster-pool-ipv4-mask-size`).
pub const DEFAULT_IPV4_MASK_SIZE: u8 = 24;
/// Default IPv6 node mask size (`cluster-pool-ipv6-mask-size`).
pub const DEFAULT_IPV6_MASK_SIZE: u8 = 120;

/// The cluster pool's configuration, as the operator's flags give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClusterPoolConfig {
    /// `cluster-pool-ipv4-cidr`: IPv4 cluster CIDRs, used in order.
    #[serde(default, rename = "cluster-pool-ipv4-cidr")]
    pub ipv4_cidrs: Vec<Ipv4Net>,
    /// `cluster-pool-ipv4-mask-size`: prefix length of each node's IPv4 CIDR.
    #[serde(default = "default_v4_mask", rename = "cluster-pool-ipv4-mask-size")]
    pub ipv4_mask_size: u8,
    /// `cluster-pool-ipv6-cidr`: IPv6 cluster CIDRs, used in order.
    #[serde(default, rename = "cluster-pool-ipv6-cidr")]
    pub ipv6_cidrs: Vec<Ipv6Net>,
    /// `cluster-pool-ipv6-mask-size`: prefix length of each node's IPv6 CIDR.
    #[serde(default = "default_v6_mask", rename = "cluster-pool-ipv6-mask-size")]
    pub ipv6_mask_size: u8,
}

fn default_v4_mask() -> u8 {
    DEFAULT_IPV4_MASK_SIZE
}
fn default_v6_mask() -> u8 {
    DEFAULT_IPV6_MASK_SIZE
}

impl Default for ClusterPoolConfig {
    fn default() -> Self {
        ClusterPoolConfig {
            ipv4_cidrs: Vec::new(),
            ipv4_mask_size: DEFAULT_IPV4_MASK_SIZE,
            ipv6_cidrs: Vec::new(),
            ipv6_mask_size: DEFAULT_IPV6_MASK_SIZE,
        }
    }
}

impl ClusterPoolConfig {
    /// An IPv4-only pool: `cidrs` is a comma- or space-separated list as the flag takes it.
    ///
    /// ```
    /// use cilium_ipam::ClusterPoolConfig;
    /// let cfg = ClusterPoolConfig::ipv4("172.20.0.0/16", 24).unwrap();
    /// assert_eq!(cfg.ipv4_cidrs[0].to_string(), "172.20.0.0/16");
    /// assert!(ClusterPoolConfig::ipv4("172.20.0.0/33", 24).is_err());
    /// assert!(ClusterPoolConfig::ipv4("fd00::/104", 24).is_err());
    /// ```
    pub fn ipv4(cidrs: &str, mask_size: u8) -> Result<Self, IpamError> {
        Ok(ClusterPoolConfig {
            ipv4_cidrs: parse_list(cidrs)?,
            ipv4_mask_size: mask_size,
            ..Self::default()
        })
    }

    /// Adds IPv6 cluster CIDRs (comma- or space-separated) and their node mask size.
    pub fn with_ipv6(mut self, cidrs: &str, mask_size: u8) -> Result<Self, IpamError> {
        self.ipv6_cidrs = parse_list(cidrs)?;
        self.ipv6_mask_size = mask_size;
        Ok(self)
    }
}

/// Parses a comma- or whitespace-separated list of CIDRs of one family. The address must be
/// the network address (`10.0.0.1/8` is rejected, as Cilium rejects it).
pub fn parse_list<N>(text: &str) -> Result<Vec<N>, IpamError>
where
    N: std::str::FromStr + Into<IpNet> + Copy,
{
    let mut out = Vec::new();
    for item in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let net: N = item.parse().map_err(|_| IpamError::InvalidCidr {
            input: item.to_owned(),
            reason: "not a CIDR of the expected address family".to_owned(),
        })?;
        let any: IpNet = net.into();
        if any.network() != any.addr() {
            return Err(IpamError::InvalidCidr {
                input: item.to_owned(),
                reason: format!("host bits set; did you mean {}?", any.trunc()),
            });
        }
        out.push(net);
    }
    Ok(out)
}

/// The pod CIDRs of one node: one per configured family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeCidrs {
    /// The node's IPv4 pod CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Net>,
    /// The node's IPv6 pod CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Net>,
}

impl NodeCidrs {
    /// The CIDRs as a list, IPv4 first (the shape of `CiliumNode.spec.ipam.podCIDRs`).
    pub fn to_vec(&self) -> Vec<IpNet> {
        let mut v = Vec::new();
        if let Some(n) = self.ipv4 {
            v.push(IpNet::V4(n));
        }
        if let Some(n) = self.ipv6 {
            v.push(IpNet::V6(n));
        }
        v
    }

    /// Builds from a `podCIDRs` list; more than one CIDR per family is an error.
    pub fn from_list(list: &[IpNet]) -> Result<Self, IpamError> {
        let mut out = NodeCidrs::default();
        for net in list {
            match *net {
                IpNet::V4(n) => {
                    if let Some(first) = out.ipv4.replace(n) {
                        return Err(IpamError::DuplicateFamily {
                            family: Family::V4,
                            first: first.into(),
                            second: *net,
                        });
                    }
                }
                IpNet::V6(n) => {
                    if let Some(first) = out.ipv6.replace(n) {
                        return Err(IpamError::DuplicateFamily {
                            family: Family::V6,
                            first: first.into(),
                            second: *net,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The node CIDRs of one cluster CIDR.
#[derive(Debug, Clone)]
struct CidrSet {
    cluster: IpNet,
    mask: u8,
    base: u128,
    shift: u32,
    pool: IdPool,
    /// The node holding each node CIDR, by index.
    owners: Vec<Option<Arc<str>>>,
}

impl CidrSet {
    fn new(family: Family, cluster: IpNet, mask: u8) -> Result<Self, IpamError> {
        let bits = family.bits();
        let bad = |reason| IpamError::InvalidMaskSize {
            family,
            mask,
            cidr: cluster,
            reason,
        };
        if mask > bits {
            return Err(bad("longer than the address"));
        }
        if mask < cluster.prefix_len() {
            return Err(bad("shorter than the cluster CIDR's prefix"));
        }
        if mask - cluster.prefix_len() > MAX_NODE_BITS {
            return Err(bad(
                "more than 2^16 node CIDRs per cluster CIDR; use a larger mask size",
            ));
        }
        if bits - mask < 2 {
            return Err(bad("node CIDRs would have no usable addresses"));
        }
        let count = 1u32 << (mask - cluster.prefix_len());
        Ok(CidrSet {
            cluster,
            mask,
            base: addr_to_u128(cluster.network()),
            shift: u32::from(bits - mask),
            pool: IdPool::new(count),
            owners: vec![None; count as usize],
        })
    }

    fn cidr_at(&self, family: Family, idx: u32) -> IpNet {
        // A shift of 128 (an IPv6 node mask of /0) only ever sees index 0.
        let offset = u128::from(idx).checked_shl(self.shift).unwrap_or(0);
        let addr = u128_to_addr(family, self.base + offset);
        IpNet::new(addr, self.mask).expect("mask checked at construction")
    }

    /// The index of `cidr` in this set, if it is one of its node CIDRs.
    fn index_of(&self, cidr: IpNet) -> Option<u32> {
        if cidr.prefix_len() != self.mask || !self.cluster.contains(&cidr) {
            return None;
        }
        let addr = addr_to_u128(cidr.addr());
        if cidr.network() != cidr.addr() {
            return None;
        }
        u32::try_from((addr - self.base).checked_shr(self.shift).unwrap_or(0)).ok()
    }
}

#[derive(Debug, Clone)]
struct FamilyPool {
    family: Family,
    sets: Vec<CidrSet>,
}

impl FamilyPool {
    fn new(family: Family, cidrs: &[IpNet], mask: u8) -> Result<Self, IpamError> {
        for (i, a) in cidrs.iter().enumerate() {
            for b in &cidrs[i + 1..] {
                if a.contains(b) || b.contains(a) {
                    return Err(IpamError::OverlappingCidrs {
                        first: *a,
                        second: *b,
                    });
                }
            }
        }
        let sets = cidrs
            .iter()
            .map(|c| CidrSet::new(family, *c, mask))
            .collect::<Result<_, _>>()?;
        Ok(FamilyPool { family, sets })
    }

    fn capacity(&self) -> u64 {
        self.sets.iter().map(|s| u64::from(s.pool.len())).sum()
    }

    fn used(&self) -> u64 {
        self.sets.iter().map(|s| u64::from(s.pool.used())).sum()
    }

    /// Next-fit in the first cluster CIDR that is not full.
    fn allocate(&mut self, node: &Arc<str>) -> Result<IpNet, IpamError> {
        let family = self.family;
        for set in &mut self.sets {
            if let Some(idx) = set.pool.allocate_next() {
                set.owners[idx as usize] = Some(node.clone());
                return Ok(set.cidr_at(family, idx));
            }
        }
        Err(IpamError::PoolExhausted {
            family,
            capacity: self.capacity(),
        })
    }

    fn locate(&self, cidr: IpNet) -> Option<(usize, u32)> {
        self.sets
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.index_of(cidr).map(|idx| (i, idx)))
    }

    fn release(&mut self, cidr: IpNet) {
        if let Some((set, idx)) = self.locate(cidr) {
            self.sets[set].pool.put(idx);
            self.sets[set].owners[idx as usize] = None;
        }
    }

    fn owner_of(&self, cidr: IpNet) -> Option<&Arc<str>> {
        let (set, idx) = self.locate(cidr)?;
        self.sets[set].owners[idx as usize].as_ref()
    }
}

/// The cluster pool: hands each node one pod CIDR per configured family.
///
/// ```
/// use cilium_ipam::{ClusterPool, ClusterPoolConfig};
/// let mut pool = ClusterPool::new(&ClusterPoolConfig::ipv4("172.20.0.0/16", 24).unwrap()).unwrap();
/// let ctr = pool.allocate("k8s-ctr").unwrap();
/// let w1 = pool.allocate("k8s-w1").unwrap();
/// assert_eq!(ctr.ipv4.unwrap().to_string(), "172.20.0.0/24");
/// assert_eq!(w1.ipv4.unwrap().to_string(), "172.20.1.0/24");
/// assert_eq!(pool.allocate("k8s-ctr").unwrap(), ctr); // same node, same CIDR
/// ```
#[derive(Debug, Clone)]
pub struct ClusterPool {
    v4: Option<FamilyPool>,
    v6: Option<FamilyPool>,
    nodes: HashMap<Arc<str>, NodeCidrs, foldhash::fast::RandomState>,
}

impl ClusterPool {
    /// Checks the configuration and builds an empty pool.
    pub fn new(config: &ClusterPoolConfig) -> Result<Self, IpamError> {
        let v4: Vec<IpNet> = config.ipv4_cidrs.iter().map(|&n| n.into()).collect();
        let v6: Vec<IpNet> = config.ipv6_cidrs.iter().map(|&n| n.into()).collect();
        if v4.is_empty() && v6.is_empty() {
            return Err(IpamError::NoClusterCidr);
        }
        let v4 = (!v4.is_empty())
            .then(|| FamilyPool::new(Family::V4, &v4, config.ipv4_mask_size))
            .transpose()?;
        let v6 = (!v6.is_empty())
            .then(|| FamilyPool::new(Family::V6, &v6, config.ipv6_mask_size))
            .transpose()?;
        // Size the node table for the pool up front (up to 2^16 nodes): carving a large
        // pool then never rehashes.
        let capacity = v4
            .iter()
            .chain(v6.iter())
            .map(FamilyPool::capacity)
            .max()
            .unwrap_or(0)
            .min(1 << 16);
        Ok(ClusterPool {
            v4,
            v6,
            nodes: HashMap::with_capacity_and_hasher(
                usize::try_from(capacity).unwrap_or(0),
                foldhash::fast::RandomState::default(),
            ),
        })
    }

    /// The node's CIDRs: those it holds, or newly allocated ones (one per family). When one
    /// family is exhausted nothing is allocated.
    pub fn allocate(&mut self, node: &str) -> Result<NodeCidrs, IpamError> {
        if node.is_empty() {
            return Err(IpamError::EmptyNodeName);
        }
        let (name, held) = match self.nodes.get_key_value(node) {
            Some((k, v)) => (k.clone(), *v),
            None => (Arc::from(node), NodeCidrs::default()),
        };
        let mut out = held;
        let complete = (self.v4.is_none() || held.ipv4.is_some())
            && (self.v6.is_none() || held.ipv6.is_some());
        if complete && self.nodes.contains_key(node) {
            return Ok(held);
        }
        if out.ipv4.is_none()
            && let Some(p) = &mut self.v4
        {
            match p.allocate(&name)? {
                IpNet::V4(n) => out.ipv4 = Some(n),
                IpNet::V6(_) => unreachable!("IPv4 pool yields IPv4 CIDRs"),
            }
        }
        if out.ipv6.is_none()
            && let Some(p) = &mut self.v6
        {
            match p.allocate(&name) {
                Ok(IpNet::V6(n)) => out.ipv6 = Some(n),
                Ok(IpNet::V4(_)) => unreachable!("IPv6 pool yields IPv6 CIDRs"),
                Err(e) => {
                    // Undo this call's IPv4 allocation: no partial state.
                    if held.ipv4.is_none()
                        && let (Some(p4), Some(n)) = (&mut self.v4, out.ipv4)
                    {
                        p4.release(n.into());
                    }
                    return Err(e);
                }
            }
        }
        self.nodes.insert(name, out);
        Ok(out)
    }

    fn family(&self, net: IpNet) -> Option<&FamilyPool> {
        match net {
            IpNet::V4(_) => self.v4.as_ref(),
            IpNet::V6(_) => self.v6.as_ref(),
        }
    }

    /// Records CIDRs a node already holds (from its CiliumNode record), before any new
    /// allocation after an operator restart. Occupying what the node already holds is a
    /// no-op; a CIDR held by another node, outside the pool, or a second CIDR of a family for
    /// the node is an error, and then nothing is recorded.
    pub fn occupy(&mut self, node: &str, cidrs: &[IpNet]) -> Result<(), IpamError> {
        if node.is_empty() {
            return Err(IpamError::EmptyNodeName);
        }
        let asked = NodeCidrs::from_list(cidrs)?;
        let held = self.nodes.get(node).copied().unwrap_or_default();
        let mut plan = Vec::new();
        for net in asked.to_vec() {
            let pool = match net {
                IpNet::V4(_) => self.v4.as_ref(),
                IpNet::V6(_) => self.v6.as_ref(),
            };
            let (set, idx) = pool
                .and_then(|p| p.locate(net))
                .ok_or(IpamError::CidrNotInPool { cidr: net })?;
            let held_same_family = match net {
                IpNet::V4(_) => held.ipv4.map(IpNet::V4),
                IpNet::V6(_) => held.ipv6.map(IpNet::V6),
            };
            match held_same_family {
                Some(h) if h == net => continue,
                Some(h) => {
                    return Err(IpamError::NodeHoldsOtherCidr {
                        node: node.to_owned(),
                        held: h,
                        asked: net,
                    });
                }
                None => {}
            }
            if let Some(owner) = self.family(net).and_then(|p| p.owner_of(net)) {
                return Err(IpamError::CidrAllocated {
                    cidr: net,
                    owner: owner.to_string(),
                });
            }
            plan.push((net, set, idx));
        }
        let name: Arc<str> = match self.nodes.get_key_value(node) {
            Some((k, _)) => k.clone(),
            None => Arc::from(node),
        };
        let mut out = held;
        for (net, set, idx) in plan {
            let pool = match net {
                IpNet::V4(n) => {
                    out.ipv4 = Some(n);
                    self.v4.as_mut()
                }
                IpNet::V6(n) => {
                    out.ipv6 = Some(n);
                    self.v6.as_mut()
                }
            };
            let set = &mut pool.expect("located above").sets[set];
            let took = set.pool.take(idx);
            debug_assert!(took, "owners and pools agree");
            set.owners[idx as usize] = Some(name.clone());
        }
        self.nodes.insert(name, out);
        Ok(())
    }

    /// Releases a node's CIDRs (node deleted). Returns what it held.
    pub fn release(&mut self, node: &str) -> Option<NodeCidrs> {
        let held = self.nodes.remove(node)?;
        for net in held.to_vec() {
            let pool = match net {
                IpNet::V4(_) => self.v4.as_mut(),
                IpNet::V6(_) => self.v6.as_mut(),
            };
            if let Some(p) = pool {
                p.release(net);
            }
        }
        Some(held)
    }

    /// The CIDRs a node holds.
    pub fn get(&self, node: &str) -> Option<NodeCidrs> {
        self.nodes.get(node).copied()
    }

    /// The node holding a CIDR.
    pub fn owner_of(&self, cidr: IpNet) -> Option<&str> {
        self.family(cidr)?.owner_of(cidr).map(|s| &**s)
    }

    /// Every node and its CIDRs, sorted by node name.
    pub fn nodes(&self) -> Vec<(String, NodeCidrs)> {
        let mut v: Vec<_> = self
            .nodes
            .iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// (used, capacity) node CIDRs of a family; `None` if the family is not configured.
    pub fn usage(&self, family: Family) -> Option<(u64, u64)> {
        let p = match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }?;
        Some((p.used(), p.capacity()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn pool(v4: &str, mask: u8) -> ClusterPool {
        ClusterPool::new(&ClusterPoolConfig::ipv4(v4, mask).unwrap()).unwrap()
    }

    #[test]
    fn seed_three_nodes() {
        let mut p = pool("172.20.0.0/16", 24);
        let got: Vec<_> = ["k8s-ctr", "k8s-w1", "k8s-w2"]
            .iter()
            .map(|n| p.allocate(n).unwrap().ipv4.unwrap().to_string())
            .collect();
        assert_eq!(got, ["172.20.0.0/24", "172.20.1.0/24", "172.20.2.0/24"]);
        assert_eq!(p.usage(Family::V4), Some((3, 256)));
        assert_eq!(p.usage(Family::V6), None);
    }

    #[test]
    fn config_errors() {
        let cfg = |s, m| ClusterPool::new(&ClusterPoolConfig::ipv4(s, m).unwrap());
        assert!(matches!(
            cfg("10.0.0.0/16", 8),
            Err(IpamError::InvalidMaskSize { .. })
        ));
        assert!(matches!(
            cfg("10.0.0.0/8", 28),
            Err(IpamError::InvalidMaskSize { .. })
        ));
        assert!(matches!(
            cfg("10.0.0.0/24", 31),
            Err(IpamError::InvalidMaskSize { .. })
        ));
        assert!(matches!(
            cfg("10.0.0.0/24", 33),
            Err(IpamError::InvalidMaskSize { .. })
        ));
        assert!(matches!(
            cfg("10.0.0.0/8,10.1.0.0/16", 24),
            Err(IpamError::OverlappingCidrs { .. })
        ));
        assert!(matches!(cfg("", 24), Err(IpamError::NoClusterCidr)));
        assert!(ClusterPoolConfig::ipv4("10.0.0.1/8", 24).is_err());
        assert!(cfg("10.0.0.0/8", 24).is_ok());
    }

    #[test]
    fn moves_to_next_cidr_then_exhausts() {
        let mut p = pool("10.0.0.0/23,10.9.0.0/24", 24);
        let a = p.allocate("a").unwrap().ipv4.unwrap();
        let b = p.allocate("b").unwrap().ipv4.unwrap();
        let c = p.allocate("c").unwrap().ipv4.unwrap();
        assert_eq!(
            [a, b, c].map(|n| n.to_string()),
            ["10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/24"]
        );
        let err = p.allocate("d").unwrap_err();
        assert_eq!(
            err,
            IpamError::PoolExhausted {
                family: Family::V4,
                capacity: 3
            }
        );
        assert!(p.get("d").is_none());
        p.release("b").unwrap();
        assert_eq!(p.allocate("d").unwrap().ipv4.unwrap(), b);
    }

    #[test]
    fn occupy_before_allocate() {
        let mut p = pool("172.20.0.0/16", 24);
        let w2: IpNet = "172.20.0.0/24".parse().unwrap();
        p.occupy("k8s-w2", &[w2]).unwrap();
        p.occupy("k8s-w2", &[w2]).unwrap();
        assert_eq!(
            p.allocate("k8s-w2").unwrap().ipv4.unwrap().to_string(),
            "172.20.0.0/24"
        );
        assert_eq!(
            p.allocate("k8s-ctr").unwrap().ipv4.unwrap().to_string(),
            "172.20.1.0/24"
        );
        assert!(matches!(
            p.occupy("other", &[w2]),
            Err(IpamError::CidrAllocated { .. })
        ));
        for bad in ["172.21.0.0/24", "172.20.0.0/25", "172.20.0.128/24"] {
            let net: IpNet = bad.parse().unwrap();
            assert!(p.occupy("x", &[net]).is_err(), "{bad}");
        }
        assert!(matches!(
            p.occupy("k8s-w2", &["172.20.9.0/24".parse().unwrap()]),
            Err(IpamError::NodeHoldsOtherCidr { .. })
        ));
        assert!(p.get("x").is_none());
        assert_eq!(p.owner_of(w2), Some("k8s-w2"));
    }

    #[test]
    fn dual_stack_all_or_nothing() {
        let cfg = ClusterPoolConfig::ipv4("10.0.0.0/24", 25)
            .unwrap()
            .with_ipv6("fd00::/119", 120)
            .unwrap();
        let mut p = ClusterPool::new(&cfg).unwrap();
        let a = p.allocate("a").unwrap();
        assert_eq!(a.ipv6.unwrap().to_string(), "fd00::/120");
        p.allocate("b").unwrap();
        // Take the last v6 CIDR through occupy by a v6-only record, then v4 has room but v6
        // does not: allocation must fail without consuming v4.
        p.release("b");
        p.occupy("v6only", &["fd00::100/120".parse().unwrap()])
            .unwrap();
        assert!(matches!(
            p.allocate("c"),
            Err(IpamError::PoolExhausted {
                family: Family::V6,
                ..
            })
        ));
        assert_eq!(p.usage(Family::V4), Some((1, 2)));
        assert_eq!(p.usage(Family::V6), Some((2, 2)));
    }

    #[test]
    fn whole_address_space_as_one_node_cidr() {
        // Found by the cluster_pool_config fuzz target: a shift by the full width.
        let cfg = ClusterPoolConfig::default().with_ipv6("::/0", 0).unwrap();
        let mut p = ClusterPool::new(&cfg).unwrap();
        let a = p.allocate("a").unwrap().ipv6.unwrap();
        assert_eq!(a.to_string(), "::/0");
        assert_eq!(p.owner_of(a.into()), Some("a"));
        assert!(p.allocate("b").is_err());
        let mut p = pool("0.0.0.0/0", 0);
        assert_eq!(
            p.allocate("a").unwrap().ipv4.unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn carve_all_of_a_slash8() {
        let mut p = pool("10.0.0.0/8", 24);
        let mut seen = HashSet::new();
        for i in 0..65536 {
            let n = p.allocate(&format!("n{i}")).unwrap().ipv4.unwrap();
            assert!(seen.insert(n));
        }
        assert!(p.allocate("one-more").is_err());
    }

    proptest! {
        #[test]
        fn never_twice_always_inside(ops in proptest::collection::vec((0u8..3, 0u8..40), 1..200)) {
            let mut p = pool("10.0.0.0/26,10.1.0.0/27", 29);
            let cluster: Vec<IpNet> = vec!["10.0.0.0/26".parse().unwrap(), "10.1.0.0/27".parse().unwrap()];
            for (op, node) in ops {
                let name = format!("n{node}");
                match op {
                    0 | 1 => { let _ = p.allocate(&name); }
                    _ => { p.release(&name); }
                }
                let mut seen = HashSet::new();
                for (_, c) in p.nodes() {
                    let n = IpNet::V4(c.ipv4.unwrap());
                    prop_assert!(seen.insert(n), "{n} handed out twice");
                    prop_assert!(cluster.iter().any(|cl| cl.contains(&n)));
                    prop_assert_eq!(n.prefix_len(), 29);
                }
                prop_assert_eq!(p.usage(Family::V4).unwrap().0 as usize, seen.len());
            }
        }
    }
}
