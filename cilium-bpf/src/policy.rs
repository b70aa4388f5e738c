// SPDX-License-Identifier: Apache-2.0

//! Writes endpoints' resolved policy (cilium-policy's [`EndpointPolicy`]) into
//! `cilium_policy_v2`.
//!
//! Each endpoint gets an inner LPM trie with Cilium's key layout: 40 static bits (peer
//! identity, direction), then 8 protocol bits and 0-16 port bits, so a port range becomes a
//! few prefixes and a wildcard protocol a shorter prefix. The datapath makes two lookups,
//! the peer's and identity 0's (any peer), a deny in either winning. For that to hold with
//! longest-prefix matching, [`lpm_entries`] leaves out every allow that a deny of the same
//! identity covers, writes an allow-all entry for a direction that is not enforced, and
//! (Cilium's `allow-localhost`) lets the host in. An endpoint's map is built whole and
//! swapped in with one update of the outer map, so a packet never meets a half-written
//! policy.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashOfMaps, MapData};
use cilium_core::NumericIdentity;
use cilium_policy::{Direction, EndpointPolicy, PolicyDiff, PolicyEngine, PortRange, Verdict};

use crate::DatapathError;
use crate::error::map_err;
use crate::maps::{globals_dir, names};
use crate::types::{PolicyEntry, PolicyStatsKey, PolicyStatsValue};

/// Size of an endpoint's policy map (`POLICY_MAP_SIZE`).
pub const POLICY_MAP_SIZE: u32 = 16384;
/// Prefix bits always matched: identity (32) and direction (8).
pub const STATIC_PREFIX_BITS: u32 = 40;
/// `policy_entry.flags` bit 0: deny.
pub const POLICY_F_DENY: u8 = 1;

/// Protocols a wildcard-protocol rule with ports stands for (LPM keys put the protocol
/// before the port, so "any protocol, port 80" is written once per protocol, as Cilium
/// does).
const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// One prefix of the key space after the identity and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Block {
    /// None: any protocol (and any port).
    proto: Option<u8>,
    /// First port of the prefix.
    port: u16,
    /// Port prefix length, 0-16.
    plen: u8,
}

impl Block {
    fn contains(&self, other: &Block) -> bool {
        match (self.proto, other.proto) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => {
                a == b && self.plen <= other.plen && {
                    let shift = 16 - u32::from(self.plen);
                    (u32::from(other.port) >> shift) == (u32::from(self.port) >> shift)
                }
            }
        }
    }

    fn prefixlen(&self) -> u32 {
        match self.proto {
            None => STATIC_PREFIX_BITS,
            Some(_) => STATIC_PREFIX_BITS + 8 + u32::from(self.plen),
        }
    }
}

/// The prefixes covering `lo..=hi` exactly (largest aligned blocks first).
fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest block aligned at `lo` that stays within `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, (16 - size.trailing_zeros()) as u8));
        lo += size;
    }
    out
}

fn blocks(range: &PortRange) -> Vec<Block> {
    let full = range.lo == 0 && range.hi == u16::MAX;
    if range.proto == 0 && full {
        return vec![Block {
            proto: None,
            port: 0,
            plen: 0,
        }];
    }
    let protos: Vec<u8> = if range.proto == 0 {
        PORT_PROTOCOLS.to_vec()
    } else {
        vec![range.proto]
    };
    let mut out = Vec::new();
    for proto in protos {
        for (port, plen) in port_prefixes(range.lo, range.hi) {
            out.push(Block {
                proto: Some(proto),
                port,
                plen,
            });
        }
    }
    out
}

/// One entry of an endpoint's policy map, in host terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LpmEntry {
    /// Peer identity (0: any).
    pub identity: u32,
    /// Egress (true) or ingress.
    pub egress: bool,
    /// Protocol (0 with `prefixlen` 40: any).
    pub protocol: u8,
    /// First port of the prefix.
    pub port: u16,
    /// LPM prefix length (40, or 48 + port bits).
    pub prefixlen: u32,
    /// Deny entry.
    pub deny: bool,
}

impl LpmEntry {
    /// The kernel key.
    pub fn key(&self) -> LpmKey<[u8; 8]> {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&self.identity.to_ne_bytes());
        data[4] = u8::from(self.egress);
        data[5] = self.protocol;
        data[6..].copy_from_slice(&self.port.to_be_bytes());
        LpmKey::new(self.prefixlen, data)
    }

    /// The kernel value.
    pub fn value(&self) -> PolicyEntry {
        let port_bits = self.prefixlen.saturating_sub(STATIC_PREFIX_BITS + 8) as u8;
        PolicyEntry {
            flags: (port_bits << 3) | if self.deny { POLICY_F_DENY } else { 0 },
            ..PolicyEntry::default()
        }
    }
}

/// The map entries for an endpoint's policy: allow-all for a direction not enforced, the
/// host allowed in when `allow_localhost`, denies, and allows no deny of the same identity
/// covers.
pub fn lpm_entries(policy: &EndpointPolicy, allow_localhost: bool) -> Vec<LpmEntry> {
    let any = Block {
        proto: None,
        port: 0,
        plen: 0,
    };
    // (identity, egress) -> (denies, allows).
    type Slots = BTreeMap<(u32, bool), (Vec<Block>, Vec<Block>)>;
    let mut slots: Slots = BTreeMap::new();
    for (key, verdict) in &policy.entries {
        let slot = slots
            .entry((key.peer.get(), key.direction == Direction::Egress))
            .or_default();
        let list = match verdict {
            Verdict::Deny => &mut slot.0,
            Verdict::Allow => &mut slot.1,
        };
        list.extend(blocks(&key.ports));
    }
    for (egress, enforced) in [
        (false, policy.ingress_enforced),
        (true, policy.egress_enforced),
    ] {
        if !enforced {
            slots.entry((0, egress)).or_default().1.push(any);
        }
    }
    if allow_localhost && policy.ingress_enforced {
        slots
            .entry((NumericIdentity::HOST.get(), false))
            .or_default()
            .1
            .push(any);
    }
    let mut out = std::collections::BTreeSet::new();
    for ((identity, egress), (denies, allows)) in slots {
        let entry = |b: &Block, deny: bool| LpmEntry {
            identity,
            egress,
            protocol: b.proto.unwrap_or(0),
            port: if b.proto.is_some() { b.port } else { 0 },
            prefixlen: b.prefixlen(),
            deny,
        };
        for d in &denies {
            out.insert(entry(d, true));
        }
        for a in &allows {
            if !denies.iter().any(|d| d.contains(a)) {
                out.insert(entry(a, false));
            }
        }
    }
    out.into_iter().collect()
}

pub(crate) type PolicyTrie = LpmTrie<MapData, [u8; 8], PolicyEntry>;

/// Writes endpoints' policy maps into the pinned `cilium_policy_v2`.
pub struct PolicyWriter {
    outer: HashOfMaps<MapData, u32, PolicyTrie>,
    revision: aya::maps::Array<MapData, u32>,
    allow_localhost: bool,
    installed: BTreeMap<u16, Vec<LpmEntry>>,
    bpf_root: std::path::PathBuf,
}

/// Removes a pin; one already gone is fine.
fn unpin(pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(crate::loader::io_err("unpinning", pin)(e))
        }
        _ => Ok(()),
    }
}

/// Where an endpoint's policy map is also pinned: `cilium_policy_v2_<id, 5 digits>` in
/// `tc/globals`, Cilium's name, so that Cilium's tools (`cilium-dbg bpf policy get`) read it.
pub fn endpoint_pin(bpf_root: &Path, endpoint: u16) -> std::path::PathBuf {
    globals_dir(bpf_root).join(format!("{}_{endpoint:05}", names::POLICY))
}

impl std::fmt::Debug for PolicyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWriter")
            .field("allow_localhost", &self.allow_localhost)
            .field("endpoints", &self.installed.len())
            .finish_non_exhaustive()
    }
}

impl PolicyWriter {
    /// Opens the pinned `cilium_policy_v2` under `<bpf_root>/tc/globals`. With
    /// `allow_localhost` (Cilium's default), the host may always reach local endpoints.
    pub fn open(bpf_root: &Path, allow_localhost: bool) -> Result<Self, DatapathError> {
        let path = globals_dir(bpf_root).join(names::POLICY);
        let data = MapData::from_pin(&path).map_err(map_err("open pinned", names::POLICY))?;
        let map =
            aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::POLICY))?;
        let outer = HashOfMaps::try_from(map).map_err(map_err("open pinned", names::POLICY))?;
        let path = globals_dir(bpf_root).join(names::POLICY_REV);
        let data = MapData::from_pin(&path).map_err(map_err("open pinned", names::POLICY_REV))?;
        let revision = aya::maps::Array::try_from(aya::maps::Map::Array(data))
            .map_err(map_err("open pinned", names::POLICY_REV))?;
        Ok(PolicyWriter {
            outer,
            revision,
            allow_localhost,
            installed: BTreeMap::new(),
            bpf_root: bpf_root.to_path_buf(),
        })
    }

    /// The entries last written for an endpoint.
    pub fn entries(&self, endpoint: u16) -> Option<&[LpmEntry]> {
        self.installed.get(&endpoint).map(Vec::as_slice)
    }

    /// Writes an endpoint's whole policy: a new map, filled, then swapped in. Unchanged
    /// policy writes nothing. Fails without changing anything when the policy does not fit.
    pub fn install(&mut self, endpoint: u16, policy: &EndpointPolicy) -> Result<(), DatapathError> {
        let entries = lpm_entries(policy, self.allow_localhost);
        if self.installed.get(&endpoint) == Some(&entries) {
            return Ok(());
        }
        if entries.len() > POLICY_MAP_SIZE as usize {
            return Err(DatapathError::InvalidValue {
                map: names::POLICY,
                reason: format!(
                    "endpoint {endpoint} needs {} entries; the map holds {POLICY_MAP_SIZE}",
                    entries.len()
                ),
            });
        }
        let def = aya_obj::maps::bpf_map_def {
            map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LPM_TRIE as u32,
            key_size: 12,
            value_size: 8,
            max_entries: POLICY_MAP_SIZE,
            map_flags: 1, // BPF_F_NO_PREALLOC, required for LPM tries
            ..Default::default()
        };
        let data = crate::maps::create_inner_map(def, "cilium_policy_ep")
            .map_err(map_err("create inner", names::POLICY))?;
        // Pinned under Cilium's per-endpoint name as well (the previous map's pin, if any,
        // makes way: that map lives on in the outer map until the swap below).
        let pin = endpoint_pin(&self.bpf_root, endpoint);
        unpin(&pin)?;
        data.pin(&pin)
            .map_err(|e| crate::loader::io_err("pinning", &pin)(std::io::Error::other(e)))?;
        let mut inner: PolicyTrie = LpmTrie::try_from(aya::maps::Map::LpmTrie(data))
            .map_err(map_err("create inner", names::POLICY))?;
        for e in &entries {
            inner
                .insert(&e.key(), e.value(), 0)
                .map_err(map_err("fill inner", names::POLICY))?;
        }
        self.outer
            .insert(u32::from(endpoint), &inner, 0)
            .map_err(map_err("insert", names::POLICY))?;
        self.installed.insert(endpoint, entries);
        self.bump()
    }

    /// The policy revision established flows were checked at (`cilium_policy_rev`).
    pub fn revision(&self) -> Result<u32, DatapathError> {
        self.revision
            .get(&0, 0)
            .map_err(map_err("read", names::POLICY_REV))
    }

    /// A new policy revision, after a policy map changed: every established flow is
    /// checked against the maps once more (and stamped again).
    fn bump(&mut self) -> Result<(), DatapathError> {
        let next = self.revision()?.wrapping_add(1);
        self.revision
            .set(0, next, 0)
            .map_err(map_err("write", names::POLICY_REV))
    }

    /// Brings the maps of the endpoints a [`PolicyDiff`] touched up to date with `engine`
    /// (each rebuilt whole and swapped in; untouched endpoints are not written). An
    /// endpoint the engine no longer knows loses its map. Returns how many endpoints were
    /// written.
    pub fn apply(
        &mut self,
        engine: &PolicyEngine,
        diff: &PolicyDiff,
    ) -> Result<usize, DatapathError> {
        let touched: std::collections::BTreeSet<u16> = diff
            .entries
            .iter()
            .map(|c| c.endpoint)
            .chain(diff.enforcement.iter().map(|e| e.endpoint))
            .collect();
        for ep in &touched {
            match engine.policy(*ep) {
                Some(policy) => self.install(*ep, &policy)?,
                None => self.remove(*ep)?,
            }
        }
        Ok(touched.len())
    }

    /// Removes an endpoint's policy map: nothing is enforced on it any more.
    pub fn remove(&mut self, endpoint: u16) -> Result<(), DatapathError> {
        self.installed.remove(&endpoint);
        unpin(&endpoint_pin(&self.bpf_root, endpoint))?;
        match self.outer.remove(&u32::from(endpoint)) {
            Ok(()) => self.bump(),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("delete", names::POLICY)(e)),
        }
    }
}

/// The entries of an endpoint's policy map as the datapath holds them (None: the endpoint
/// has no policy map, so nothing is enforced on it), in key order.
pub fn read_endpoint_policy(
    bpf_root: &Path,
    endpoint: u16,
) -> Result<Option<Vec<LpmEntry>>, DatapathError> {
    let path = globals_dir(bpf_root).join(names::POLICY);
    let data = MapData::from_pin(&path).map_err(map_err("open pinned", names::POLICY))?;
    let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::POLICY))?;
    let outer: HashOfMaps<MapData, u32, PolicyTrie> =
        HashOfMaps::try_from(map).map_err(map_err("open pinned", names::POLICY))?;
    let inner = match outer.get(&u32::from(endpoint), 0) {
        Ok(inner) => inner,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(e) => return Err(map_err("lookup", names::POLICY)(e)),
    };
    let mut out = Vec::new();
    for item in inner.iter() {
        let (key, value) = item.map_err(map_err("read inner", names::POLICY))?;
        let data = key.data();
        out.push(LpmEntry {
            identity: u32::from_ne_bytes([data[0], data[1], data[2], data[3]]),
            egress: data[4] != 0,
            protocol: data[5],
            port: u16::from_be_bytes([data[6], data[7]]),
            prefixlen: key.prefix_len(),
            deny: value.flags & POLICY_F_DENY != 0,
        });
    }
    out.sort();
    Ok(Some(out))
}

/// What each of `entries` (an endpoint's policy entries) allowed, from
/// `cilium_policystats` summed over the CPUs: (packets, bytes), or None where nothing was
/// counted (upstream's `bpf policy get` prints `-`). The datapath counts the packets policy
/// decided: a flow's first, and the first after a policy change (established flows skip
/// the lookups until then).
pub fn read_policy_stats(
    bpf_root: &Path,
    endpoint: u16,
    entries: &[LpmEntry],
) -> Result<Vec<Option<(u64, u64)>>, DatapathError> {
    let path = globals_dir(bpf_root).join(names::POLICY_STATS);
    let data = MapData::from_pin(&path).map_err(map_err("open pinned", names::POLICY_STATS))?;
    let map =
        aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", names::POLICY_STATS))?;
    let stats: aya::maps::PerCpuHashMap<MapData, PolicyStatsKey, PolicyStatsValue> =
        aya::maps::PerCpuHashMap::try_from(map)
            .map_err(map_err("open pinned", names::POLICY_STATS))?;
    entries
        .iter()
        .map(|e| match stats.get(&e.stats_key(endpoint), 0) {
            Ok(values) => Ok(Some(
                values
                    .iter()
                    .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes)),
            )),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("lookup", names::POLICY_STATS)(e)),
        })
        .collect()
}

impl LpmEntry {
    /// Its key in `cilium_policystats` for `endpoint`.
    pub fn stats_key(&self, endpoint: u16) -> PolicyStatsKey {
        PolicyStatsKey {
            endpoint_id: endpoint,
            pad1: 0,
            prefix_len: self.prefixlen.saturating_sub(STATIC_PREFIX_BITS) as u8,
            sec_label: self.identity,
            egress: u8::from(self.egress),
            protocol: self.protocol,
            dport: self.port.to_be(),
        }
    }

    /// `PORT/PROTO` as `cilium-dbg bpf policy get` prints it: `ANY`, `80/TCP`, a range
    /// `8080-8087/TCP`, or `TCP` for every port of one protocol.
    pub fn port_proto(&self) -> String {
        if self.prefixlen <= STATIC_PREFIX_BITS {
            return "ANY".to_owned();
        }
        let proto = match self.protocol {
            6 => "TCP".to_owned(),
            17 => "UDP".to_owned(),
            132 => "SCTP".to_owned(),
            p => p.to_string(),
        };
        let bits = self
            .prefixlen
            .saturating_sub(STATIC_PREFIX_BITS + 8)
            .min(16);
        if bits == 0 {
            return proto;
        }
        let span = (1u32 << (16 - bits)) - 1;
        let lo = u32::from(self.port);
        if span == 0 {
            format!("{lo}/{proto}")
        } else {
            format!("{lo}-{}/{proto}", lo + span)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_policy::PolicyKey;

    #[test]
    fn port_ranges_become_exact_prefixes() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, u16::MAX), vec![(0, 0)]);
        assert_eq!(port_prefixes(80, 81), vec![(80, 15)]);
        assert_eq!(port_prefixes(79, 82), vec![(79, 16), (80, 15), (82, 16)]);
        assert_eq!(port_prefixes(1024, 65535).len(), 6);
        for (lo, hi) in [(1u16, 1000u16), (8000, 8010), (65000, 65535), (0, 0)] {
            let mut covered = 0u32;
            for (p, l) in port_prefixes(lo, hi) {
                let size = 1u32 << (16 - u32::from(l));
                assert_eq!(u32::from(p) % size, 0, "aligned");
                covered += size;
            }
            assert_eq!(covered, u32::from(hi - lo) + 1);
        }
    }

    fn key(dir: Direction, peer: u32, proto: u8, lo: u16, hi: u16) -> PolicyKey {
        PolicyKey {
            direction: dir,
            peer: NumericIdentity::new(peer),
            ports: PortRange { proto, lo, hi },
        }
    }

    #[test]
    fn allows_under_a_deny_of_the_same_identity_are_left_out() {
        let mut p = EndpointPolicy {
            ingress_enforced: true,
            egress_enforced: false,
            entries: BTreeMap::new(),
        };
        p.entries
            .insert(key(Direction::Ingress, 300, 6, 80, 80), Verdict::Allow);
        p.entries
            .insert(key(Direction::Ingress, 300, 6, 0, 1023), Verdict::Deny);
        p.entries
            .insert(key(Direction::Ingress, 301, 6, 80, 80), Verdict::Allow);
        p.entries
            .insert(key(Direction::Ingress, 301, 0, 0, u16::MAX), Verdict::Allow);
        let e = lpm_entries(&p, true);
        let ing = |id: u32| e.iter().filter(move |x| x.identity == id && !x.egress);
        assert!(ing(300).all(|x| x.deny), "{e:?}");
        assert_eq!(ing(301).count(), 2);
        assert!(
            e.iter()
                .any(|x| x.egress && x.identity == 0 && x.prefixlen == 40)
        );
        assert!(e.iter().any(|x| !x.egress && x.identity == 1 && !x.deny));
        let v = e
            .iter()
            .find(|x| x.identity == 301 && x.prefixlen == 64)
            .unwrap();
        assert_eq!(v.value().flags, 16 << 3);
        assert_eq!(v.key().data()[6..], 80u16.to_be_bytes());
    }

    #[test]
    fn port_proto_names() {
        let e = |protocol, port, prefixlen| LpmEntry {
            identity: 0,
            egress: false,
            protocol,
            port,
            prefixlen,
            deny: false,
        };
        assert_eq!(e(0, 0, 40).port_proto(), "ANY");
        assert_eq!(e(6, 0, 48).port_proto(), "TCP");
        assert_eq!(e(6, 80, 64).port_proto(), "80/TCP");
        assert_eq!(e(17, 8080, 61).port_proto(), "8080-8087/UDP");
    }

    #[test]
    fn any_protocol_with_ports_is_written_per_protocol() {
        let mut p = EndpointPolicy {
            ingress_enforced: true,
            egress_enforced: true,
            entries: BTreeMap::new(),
        };
        p.entries
            .insert(key(Direction::Egress, 0, 0, 53, 53), Verdict::Allow);
        let e = lpm_entries(&p, false);
        let protos: Vec<u8> = e.iter().map(|x| x.protocol).collect();
        assert_eq!(protos, vec![6, 17, 132]);
    }
}
