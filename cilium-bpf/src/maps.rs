// SPDX-License-Identifier: Apache-2.0

//! Typed access to the datapath's pinned maps, for the agent and for `cilium-dbg`.
//!
//! Every map is pinned at `<bpf-root>/tc/globals/<name>`; [`Maps::open`] opens them all from
//! their pins (no program needs to be loaded by the caller), with the key and value types
//! of [`crate::types`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap, Map, MapData, MapError, PerCpuHashMap, RingBuf};

use crate::DatapathError;
use crate::events::{DecodeError, Event};
use crate::types::*;

/// Names of the maps, as pinned.
pub mod names {
    /// Local endpoints.
    pub const LXC: &str = "cilium_lxc";
    /// Local endpoints by interface index (not an upstream map; written with `cilium_lxc`).
    pub const LXC_IFINDEX: &str = "cilium_lxc_ifindex";
    /// Prefix to identity.
    pub const IPCACHE: &str = "cilium_ipcache_v2";
    /// Per-CPU counters.
    pub const METRICS: &str = "cilium_metrics";
    /// Event ring buffer.
    pub const EVENTS: &str = "cilium_events";
    /// Services.
    pub const LB4_SERVICES: &str = "cilium_lb4_services_v2";
    /// Backends.
    pub const LB4_BACKENDS: &str = "cilium_lb4_backends_v3";
    /// Reverse NAT.
    pub const LB4_REVERSE_NAT: &str = "cilium_lb4_reverse_nat";
    /// Maglev lookup tables (hash of maps).
    pub const LB4_MAGLEV: &str = "cilium_lb4_maglev";
    /// TCP conntrack.
    pub const CT4_TCP: &str = "cilium_ct4_global";
    /// Non-TCP conntrack.
    pub const CT4_ANY: &str = "cilium_ct_any4_global";
    /// BPF masquerade NAT.
    pub const SNAT4: &str = "cilium_snat_v4_external";
    /// Policy: endpoint id -> the endpoint's policy LPM trie (hash of maps).
    pub const POLICY: &str = "cilium_policy_v2";
    /// What each policy entry allowed (packets, bytes per CPU).
    pub const POLICY_STATS: &str = "cilium_policystats";
    /// Socket LB reverse translations.
    pub const LB4_REVERSE_SK: &str = "cilium_lb4_reverse_sk";
    /// Session affinity by client.
    pub const LB4_AFFINITY: &str = "cilium_lb4_affinity";
    /// Backends affinity may use.
    pub const LB_AFFINITY_MATCH: &str = "cilium_lb_affinity_match";
    /// The agent's policy revision (one `u32`, bumped on every policy map change; not an
    /// upstream map).
    pub const POLICY_REV: &str = "cilium_policy_rev";
    /// Every pinned map.
    pub const ALL: [&str; 17] = [
        POLICY_REV,
        LXC_IFINDEX,
        LB4_AFFINITY,
        LB_AFFINITY_MATCH,
        POLICY,
        LB4_REVERSE_SK,
        LXC,
        IPCACHE,
        METRICS,
        EVENTS,
        LB4_SERVICES,
        LB4_BACKENDS,
        LB4_REVERSE_NAT,
        LB4_MAGLEV,
        CT4_TCP,
        CT4_ANY,
        SNAT4,
    ];
}

/// The directory maps are pinned in: `<bpf-root>/tc/globals`.
pub fn globals_dir(bpf_root: &Path) -> PathBuf {
    bpf_root.join("tc").join("globals")
}

fn open_map(bpf_root: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let path = globals_dir(bpf_root).join(name);
    let err = |source| DatapathError::Map {
        op: "open pinned",
        map: name,
        source: Box::new(source),
    };
    let data = MapData::from_pin(&path).map_err(err)?;
    Map::from_map_data(data).map_err(err)
}

/// A hash map of the datapath with its Rust key and value types.
#[derive(Debug)]
pub struct BpfHashMap<K: aya::Pod, V: aya::Pod> {
    name: &'static str,
    map: HashMap<MapData, K, V>,
}

impl<K: aya::Pod, V: aya::Pod> BpfHashMap<K, V> {
    /// Opens a pinned map, checking its key and value sizes.
    pub fn open(bpf_root: &Path, name: &'static str) -> Result<Self, DatapathError> {
        let map =
            HashMap::try_from(open_map(bpf_root, name)?).map_err(|source| DatapathError::Map {
                op: "open pinned",
                map: name,
                source: Box::new(source),
            })?;
        Ok(BpfHashMap { name, map })
    }

    /// The map's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn err(&self, op: &'static str) -> impl FnOnce(MapError) -> DatapathError + '_ {
        move |source| DatapathError::Map {
            op,
            map: self.name,
            source: Box::new(source),
        }
    }

    /// Inserts or replaces an entry.
    pub fn insert(&mut self, key: &K, value: &V) -> Result<(), DatapathError> {
        let name = self.name;
        self.map
            .insert(key, value, 0)
            .map_err(|source| DatapathError::Map {
                op: "insert",
                map: name,
                source: Box::new(source),
            })
    }

    /// The entry for a key.
    pub fn get(&self, key: &K) -> Result<Option<V>, DatapathError> {
        match self.map.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(self.err("lookup")(e)),
        }
    }

    /// Removes an entry; false if it was not there.
    pub fn remove(&mut self, key: &K) -> Result<bool, DatapathError> {
        let name = self.name;
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(DatapathError::Map {
                op: "delete",
                map: name,
                source: Box::new(source),
            }),
        }
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(K, V)>, DatapathError> {
        self.map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err("iterate"))
    }
}

/// `cilium_lb4_services_v2`.
pub type Lb4ServicesMap = BpfHashMap<Lb4Key, Lb4Service>;
/// `cilium_lb4_backends_v3`.
pub type Lb4BackendsMap = BpfHashMap<u32, Lb4Backend>;
/// `cilium_lb4_reverse_nat`.
pub type Lb4ReverseNatMap = BpfHashMap<u16, Lb4ReverseNat>;
/// `cilium_ct4_global` and `cilium_ct_any4_global`.
pub type Ct4Map = BpfHashMap<Ipv4CtTuple, CtEntry>;
/// `cilium_snat_v4_external`.
pub type Snat4Map = BpfHashMap<Ipv4CtTuple, Ipv4NatEntry>;
/// `cilium_lb_affinity_match`.
pub type LbAffinityMatchMap = BpfHashMap<LbAffinityMatch, u8>;
/// `cilium_lb4_affinity`.
pub type Lb4AffinityMap = BpfHashMap<Lb4AffinityKey, LbAffinityVal>;

/// Interface indexes `cilium_lxc_ifindex` has a slot for (the datapath's `LXC_IFINDEX_MAX`).
pub const LXC_IFINDEX_MAX: u32 = 65536;

/// `cilium_lxc`, local endpoints by IP, and beside it `cilium_lxc_ifindex`, the same
/// endpoints by interface index, which the programs read first (an array index instead of
/// a hash lookup; they check the address and fall back to `cilium_lxc`). Every change goes
/// through here so the two agree: an endpoint is added to `cilium_lxc` first and removed from
/// it last.
pub struct EndpointMap {
    lxc: BpfHashMap<EndpointKey, EndpointInfo>,
    by_ifindex: aya::maps::Array<MapData, LxcIfindexEntry>,
}

impl std::fmt::Debug for EndpointMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMap")
            .field("lxc", &self.lxc)
            .finish_non_exhaustive()
    }
}

impl EndpointMap {
    /// Opens both pinned maps.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        let lxc = BpfHashMap::open(bpf_root, names::LXC)?;
        let by_ifindex = aya::maps::Array::try_from(open_map(bpf_root, names::LXC_IFINDEX)?)
            .map_err(|source| DatapathError::Map {
                op: "open pinned",
                map: names::LXC_IFINDEX,
                source: Box::new(source),
            })?;
        Ok(EndpointMap { lxc, by_ifindex })
    }

    fn read_slot(&self, ifindex: u32) -> Result<LxcIfindexEntry, DatapathError> {
        self.by_ifindex
            .get(&ifindex, 0)
            .map_err(|source| DatapathError::Map {
                op: "lookup",
                map: names::LXC_IFINDEX,
                source: Box::new(source),
            })
    }

    fn set_slot(&mut self, ifindex: u32, entry: &LxcIfindexEntry) -> Result<(), DatapathError> {
        self.by_ifindex
            .set(ifindex, entry, 0)
            .map_err(|source| DatapathError::Map {
                op: "update",
                map: names::LXC_IFINDEX,
                source: Box::new(source),
            })
    }

    /// Clears the slot of `ifindex` if it holds the endpoint `ip`.
    fn clear_slot(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), DatapathError> {
        if ifindex == 0 || ifindex >= LXC_IFINDEX_MAX {
            return Ok(());
        }
        if self.read_slot(ifindex)?.ip4 == ip.octets() {
            self.set_slot(ifindex, &LxcIfindexEntry::default())?;
        }
        Ok(())
    }

    /// Records a local IPv4 endpoint. An endpoint of a pod (not the host's, which has no
    /// interface of its own) also takes its interface's slot in `cilium_lxc_ifindex`; an
    /// endpoint that moved to another interface leaves its old slot.
    pub fn upsert_ipv4(&mut self, ip: Ipv4Addr, info: &EndpointInfo) -> Result<(), DatapathError> {
        let old = self.get_ipv4(ip)?;
        self.lxc.insert(&EndpointKey::ipv4(ip), info)?;
        if let Some(old) = old.filter(|o| o.ifindex != info.ifindex) {
            self.clear_slot(old.ifindex, ip)?;
        }
        if info.flags & ENDPOINT_F_HOST == 0 && info.ifindex != 0 && info.ifindex < LXC_IFINDEX_MAX
        {
            let entry = LxcIfindexEntry {
                ip4: ip.octets(),
                pad: 0,
                info: *info,
            };
            self.set_slot(info.ifindex, &entry)?;
        }
        Ok(())
    }

    /// The endpoint with this IPv4 address.
    pub fn get_ipv4(&self, ip: Ipv4Addr) -> Result<Option<EndpointInfo>, DatapathError> {
        self.lxc.get(&EndpointKey::ipv4(ip))
    }

    /// Forgets a local IPv4 endpoint (its interface's slot first).
    pub fn remove_ipv4(&mut self, ip: Ipv4Addr) -> Result<bool, DatapathError> {
        if let Some(old) = self.get_ipv4(ip)? {
            self.clear_slot(old.ifindex, ip)?;
        }
        self.lxc.remove(&EndpointKey::ipv4(ip))
    }

    /// Every entry of `cilium_lxc`.
    pub fn entries(&self) -> Result<Vec<(EndpointKey, EndpointInfo)>, DatapathError> {
        self.lxc.entries()
    }

    /// Clears every slot of `cilium_lxc_ifindex` that does not hold what `cilium_lxc` says
    /// (an endpoint gone from it, or now behind another interface): what a writer that
    /// stopped halfway leaves. Returns how many were cleared.
    pub fn prune_slots(&mut self) -> Result<usize, DatapathError> {
        let mut cleared = 0;
        for ifindex in 1..LXC_IFINDEX_MAX {
            let Some((ip, _)) = self.by_ifindex(ifindex)? else {
                continue;
            };
            let current = self.get_ipv4(ip)?;
            if current.is_none_or(|c| c.ifindex != ifindex || c.flags & ENDPOINT_F_HOST != 0) {
                self.set_slot(ifindex, &LxcIfindexEntry::default())?;
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    /// The endpoint in the slot of `ifindex` in `cilium_lxc_ifindex`, with its address.
    pub fn by_ifindex(
        &self,
        ifindex: u32,
    ) -> Result<Option<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        if ifindex >= LXC_IFINDEX_MAX {
            return Ok(None);
        }
        let e = self.read_slot(ifindex)?;
        Ok((e.ip4 != [0; 4]).then(|| (Ipv4Addr::from(e.ip4), e.info)))
    }
}

/// `cilium_ipcache_v2`: prefixes to identities (longest prefix match).
#[derive(Debug)]
pub struct IpcacheMap {
    map: LpmTrie<MapData, IpcacheKey, RemoteEndpointInfo>,
}

impl IpcacheMap {
    /// Opens the pinned map.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        let map = LpmTrie::try_from(open_map(bpf_root, names::IPCACHE)?).map_err(|source| {
            DatapathError::Map {
                op: "open pinned",
                map: names::IPCACHE,
                source: Box::new(source),
            }
        })?;
        Ok(IpcacheMap { map })
    }

    fn key(ip: Ipv4Addr, prefix_len: u8) -> LpmKey<IpcacheKey> {
        let (len, data) = IpcacheKey::ipv4(ip, prefix_len);
        LpmKey::new(len, data)
    }

    /// Maps `ip/prefix_len` to an identity.
    pub fn upsert_ipv4(
        &mut self,
        ip: Ipv4Addr,
        prefix_len: u8,
        info: &RemoteEndpointInfo,
    ) -> Result<(), DatapathError> {
        if prefix_len > 32 {
            return Err(DatapathError::InvalidValue {
                map: names::IPCACHE,
                reason: format!("prefix length {prefix_len} > 32"),
            });
        }
        self.map
            .insert(&Self::key(ip, prefix_len), info, 0)
            .map_err(|source| DatapathError::Map {
                op: "insert",
                map: names::IPCACHE,
                source: Box::new(source),
            })
    }

    /// Longest-prefix match for an address, as the datapath looks it up.
    pub fn lookup_ipv4(&self, ip: Ipv4Addr) -> Result<Option<RemoteEndpointInfo>, DatapathError> {
        match self.map.get(&Self::key(ip, 32), 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DatapathError::Map {
                op: "lookup",
                map: names::IPCACHE,
                source: Box::new(source),
            }),
        }
    }

    /// Removes the entry for exactly `ip/prefix_len`.
    pub fn remove_ipv4(&mut self, ip: Ipv4Addr, prefix_len: u8) -> Result<bool, DatapathError> {
        match self.map.remove(&Self::key(ip, prefix_len)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(source) => Err(DatapathError::Map {
                op: "delete",
                map: names::IPCACHE,
                source: Box::new(source),
            }),
        }
    }

    /// Every entry as (address, prefix length, value), IPv4 only.
    pub fn entries(&self) -> Result<Vec<(Ipv4Addr, u8, RemoteEndpointInfo)>, DatapathError> {
        let mut out = Vec::new();
        for item in self.map.iter() {
            let (k, v) = item.map_err(|source| DatapathError::Map {
                op: "iterate",
                map: names::IPCACHE,
                source: Box::new(source),
            })?;
            let data = k.data();
            if data.family == FAMILY_IPV4 {
                let ip = Ipv4Addr::new(data.ip[0], data.ip[1], data.ip[2], data.ip[3]);
                let len = k.prefix_len().saturating_sub(IPCACHE_STATIC_PREFIX_BITS) as u8;
                out.push((ip, len, v));
            }
        }
        Ok(out)
    }
}

/// Metric reason of forwarded packets (drops count under their drop reason).
pub const REASON_FORWARDED: u8 = 0;
/// Metric direction: into the endpoint.
pub const DIR_INGRESS: u8 = 1;
/// Metric direction: out of the endpoint.
pub const DIR_EGRESS: u8 = 2;

/// `cilium_metrics`: per-CPU counters, summed.
pub struct MetricsMap {
    map: PerCpuHashMap<MapData, MetricsKey, MetricsValue>,
}

impl std::fmt::Debug for MetricsMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsMap")
            .field("map", &names::METRICS)
            .finish()
    }
}

impl MetricsMap {
    /// Opens the pinned map.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        let map =
            PerCpuHashMap::try_from(open_map(bpf_root, names::METRICS)?).map_err(|source| {
                DatapathError::Map {
                    op: "open pinned",
                    map: names::METRICS,
                    source: Box::new(source),
                }
            })?;
        Ok(MetricsMap { map })
    }

    /// Every counter, summed over CPUs.
    pub fn totals(&self) -> Result<BTreeMap<MetricsKey, MetricsValue>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in self.map.iter() {
            let (k, per_cpu) = item.map_err(|source| DatapathError::Map {
                op: "iterate",
                map: names::METRICS,
                source: Box::new(source),
            })?;
            let total = per_cpu
                .iter()
                .fold(MetricsValue::default(), |a, v| MetricsValue {
                    count: a.count + v.count,
                    bytes: a.bytes + v.bytes,
                });
            out.insert(k, total);
        }
        Ok(out)
    }

    /// The packets counted for a reason (0: forwarded) and direction (1 ingress, 2 egress).
    pub fn count(&self, reason: u8, dir: u8) -> Result<u64, DatapathError> {
        let key = MetricsKey {
            reason,
            dir,
            ..MetricsKey::default()
        };
        Ok(self.totals()?.get(&key).map_or(0, |v| v.count))
    }
}

/// `cilium_events`: the ring buffer reader.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("map", &names::EVENTS)
            .finish()
    }
}

impl EventReader {
    /// Opens the pinned ring buffer. One reader should consume it at a time.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        let ring = RingBuf::try_from(open_map(bpf_root, names::EVENTS)?).map_err(|source| {
            DatapathError::Map {
                op: "open pinned",
                map: names::EVENTS,
                source: Box::new(source),
            }
        })?;
        Ok(EventReader { ring })
    }

    /// Decodes every record available now (never blocks).
    pub fn drain(&mut self) -> Vec<Result<Event, DecodeError>> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(Event::decode(&item));
        }
        out
    }
}

impl std::os::fd::AsFd for EventReader {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

/// Every map of the datapath, opened from its pin.
#[derive(Debug)]
pub struct Maps {
    /// `cilium_lxc` and `cilium_lxc_ifindex`.
    pub endpoints: EndpointMap,
    /// `cilium_ipcache_v2`.
    pub ipcache: IpcacheMap,
    /// `cilium_metrics`.
    pub metrics: MetricsMap,
    /// `cilium_lb4_services_v2`.
    pub lb4_services: Lb4ServicesMap,
    /// `cilium_lb4_backends_v3`.
    pub lb4_backends: Lb4BackendsMap,
    /// `cilium_lb4_reverse_nat`.
    pub lb4_reverse_nat: Lb4ReverseNatMap,
    /// `cilium_ct4_global`.
    pub ct4_tcp: Ct4Map,
    /// `cilium_ct_any4_global`.
    pub ct4_any: Ct4Map,
    /// `cilium_snat_v4_external`.
    pub snat4: Snat4Map,
}

impl Maps {
    /// Opens every map pinned under `<bpf_root>/tc/globals`.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        Ok(Maps {
            endpoints: EndpointMap::open(bpf_root)?,
            ipcache: IpcacheMap::open(bpf_root)?,
            metrics: MetricsMap::open(bpf_root)?,
            lb4_services: BpfHashMap::open(bpf_root, names::LB4_SERVICES)?,
            lb4_backends: BpfHashMap::open(bpf_root, names::LB4_BACKENDS)?,
            lb4_reverse_nat: BpfHashMap::open(bpf_root, names::LB4_REVERSE_NAT)?,
            ct4_tcp: BpfHashMap::open(bpf_root, names::CT4_TCP)?,
            ct4_any: BpfHashMap::open(bpf_root, names::CT4_ANY)?,
            snat4: BpfHashMap::open(bpf_root, names::SNAT4)?,
        })
    }
}

/// Creates an unpinned map from a definition: the inner maps of map-in-map outers (a Maglev
/// table, an endpoint's policy), filled and then inserted into their outer map.
pub(crate) fn create_inner_map(
    def: aya_obj::maps::bpf_map_def,
    name: &str,
) -> Result<MapData, MapError> {
    let obj = aya_obj::Map::Legacy(aya_obj::maps::LegacyMap {
        def,
        inner_def: None,
        section_index: 0,
        section_kind: aya_obj::EbpfSectionKind::Maps,
        symbol_index: None,
        data: Vec::new(),
    });
    MapData::create(obj, name, None)
}
