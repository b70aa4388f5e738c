// SPDX-License-Identifier: Apache-2.0

//! From services to map updates: ids, entries, Maglev tables and ordered diffs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use cilium_core::IdPool;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use crate::LbError;
use crate::maglev::{L4Proto, Maglev, MaglevBackend, MaglevConfig};
use crate::maps::{
    Lb4Backend, Lb4Key, Lb4RevNat, Lb4Service, SCOPE_EXTERNAL, SCOPE_INTERNAL, flags,
};
use crate::service::{
    Backend, BackendState, L3n4Addr, LbAlgorithm, Service, ServiceType, TrafficPolicy,
};

/// Node-wide load-balancing settings (Cilium's agent flags).
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// `bpf-lb-algorithm`: the algorithm of services that do not ask for one.
    pub algorithm: LbAlgorithm,
    /// `bpf-lb-algorithm-annotation`: write per-service algorithms into master entries.
    pub algorithm_annotation: bool,
    /// `bpf-lb-external-clusterip`: ClusterIPs are reachable from outside (and get Maglev
    /// tables under `maglev`).
    pub external_clusterip: bool,
    /// `bpf-lb-maglev-table-size` and `bpf-lb-maglev-hash-seed`.
    pub maglev: MaglevConfig,
    /// This node's name, for `Local` traffic policies.
    pub node_name: String,
    /// Largest backend id (ids are `1..=max_backends`; `bpf-lb-map-max`).
    pub max_backends: u32,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            algorithm: LbAlgorithm::Random,
            algorithm_annotation: false,
            external_clusterip: false,
            maglev: MaglevConfig::default(),
            node_name: String::new(),
            max_backends: 65535,
        }
    }
}

/// One change to the datapath's maps. [`LbManager`] returns them in an order that never
/// lets a packet see a missing backend: backends, rev-NAT entries and Maglev tables first,
/// then slot entries, then master entries, then deletions (master before slots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Write a `cilium_lb4_backends_v3` entry.
    UpsertBackend {
        /// Backend id.
        id: u32,
        /// Entry.
        value: Lb4Backend,
    },
    /// Write a `cilium_lb4_reverse_nat` entry.
    UpsertRevNat {
        /// Rev-NAT index (the service id).
        index: u16,
        /// Entry.
        value: Lb4RevNat,
    },
    /// Install a service's Maglev table in `cilium_lb4_maglev`.
    UpsertMaglev {
        /// Rev-NAT index (the service id).
        index: u16,
        /// M backend ids.
        table: Arc<[u32]>,
    },
    /// Write a `cilium_lb4_services_v2` entry.
    UpsertService {
        /// Key.
        key: Lb4Key,
        /// Entry.
        value: Lb4Service,
    },
    /// Allow session affinity to keep pointing clients of a service at a backend
    /// (`cilium_lb_affinity_match`; written for active backends only).
    UpsertAffinityMatch {
        /// Backend id.
        backend_id: u32,
        /// Rev-NAT index of the service.
        rev_nat_index: u16,
    },
    /// Stop session affinity from using a backend for a service.
    DeleteAffinityMatch {
        /// Backend id.
        backend_id: u32,
        /// Rev-NAT index of the service.
        rev_nat_index: u16,
    },
    /// Remove a `cilium_lb4_services_v2` entry.
    DeleteService {
        /// Key.
        key: Lb4Key,
    },
    /// Remove a service's Maglev table.
    DeleteMaglev {
        /// Rev-NAT index.
        index: u16,
    },
    /// Remove a `cilium_lb4_reverse_nat` entry.
    DeleteRevNat {
        /// Rev-NAT index.
        index: u16,
    },
    /// Remove a `cilium_lb4_backends_v3` entry.
    DeleteBackend {
        /// Backend id.
        id: u32,
    },
}

impl MapOp {
    fn phase(&self) -> u8 {
        match self {
            MapOp::UpsertBackend { .. } => 0,
            MapOp::UpsertRevNat { .. } => 1,
            MapOp::UpsertMaglev { .. } | MapOp::UpsertAffinityMatch { .. } => 2,
            MapOp::UpsertService { key, .. } if key.backend_slot != 0 => 3,
            MapOp::UpsertService { .. } => 4,
            MapOp::DeleteService { key } if key.backend_slot == 0 => 5,
            MapOp::DeleteService { .. } => 6,
            MapOp::DeleteMaglev { .. } | MapOp::DeleteAffinityMatch { .. } => 7,
            MapOp::DeleteRevNat { .. } => 8,
            MapOp::DeleteBackend { .. } => 9,
        }
    }
}

/// A backend's identity across services: its address and cluster.
type BackendKey = (L3n4Addr, u16);

#[derive(Debug, Clone)]
struct BackendEntry {
    id: u32,
    /// Services (frontends) using the backend, restored ones included.
    refs: u32,
    /// How many services see the backend in each state (by state code). The map entry holds
    /// one state: the most available one any service gives (active first).
    states: [u32; 4],
    /// What the map holds (meaningless until `written`).
    value: Lb4Backend,
    /// The latest view of the backend's fields (its state aside).
    base: Lb4Backend,
    /// Whether the map holds an entry for it.
    written: bool,
}

impl BackendEntry {
    /// The state the backend map entry carries.
    fn effective_flags(&self) -> u8 {
        match self.states.iter().position(|&n| n > 0) {
            Some(code) => code as u8,
            // Only restored users, whose states are unknown: keep what the map holds.
            None => self.value.flags,
        }
    }
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    id: u16,
    /// `None` for entries restored from the maps and not yet claimed by a service.
    service: Option<Service>,
    entries: BTreeMap<Lb4Key, Lb4Service>,
    backends: Vec<BackendKey>,
    maglev: Option<Arc<[u32]>>,
    rev_nat: Lb4RevNat,
    /// Backend ids session affinity may use (active backends of an affinity service).
    affinity: Vec<u32>,
}

/// What the maps hold, as read back at start (for [`LbManager::restore`]).
#[derive(Debug, Clone, Default)]
pub struct RestoredMaps {
    /// `cilium_lb4_services_v2` entries.
    pub services: Vec<(Lb4Key, Lb4Service)>,
    /// `cilium_lb4_backends_v3` entries.
    pub backends: Vec<(u32, Lb4Backend)>,
    /// `cilium_lb4_reverse_nat` entries.
    pub rev_nat: Vec<(u16, Lb4RevNat)>,
    /// `cilium_lb4_maglev` tables.
    pub maglev: Vec<(u16, Vec<u32>)>,
    /// `cilium_lb_affinity_match` entries: (backend id, rev-NAT index).
    pub affinity_match: Vec<(u32, u16)>,
}

/// Turns the desired services into the minimal ordered map updates, allocating service
/// (rev-NAT) and backend ids node-locally and keeping them stable across changes and
/// restarts.
///
/// ```
/// use cilium_lb::manager::{LbConfig, LbManager, MapOp};
/// use cilium_lb::service::{Backend, Service, ServiceType};
///
/// let mut lb = LbManager::new(LbConfig::default());
/// let svc = Service::new("default/webpod", "10.96.0.10:80/TCP".parse().unwrap(), ServiceType::ClusterIP)
///     .with_backend(Backend::new("172.20.1.10:80/TCP".parse().unwrap()))
///     .with_backend(Backend::new("172.20.2.10:80/TCP".parse().unwrap()));
/// let ops = lb.upsert(&svc).unwrap();
/// // 2 backends, 1 rev-NAT entry, 2 slots, 1 master entry.
/// assert_eq!(ops.len(), 6);
/// assert!(matches!(ops[0], MapOp::UpsertBackend { .. }));
/// // Nothing changed, nothing to do.
/// assert!(lb.upsert(&svc).unwrap().is_empty());
/// ```
#[derive(Debug)]
pub struct LbManager {
    config: LbConfig,
    maglev: Maglev,
    services: HashMap<L3n4Addr, ServiceEntry>,
    service_ids: IdPool,
    backends: HashMap<BackendKey, BackendEntry>,
    backend_ids: IdPool,
    /// Restored backends no service uses yet (deleted by the next full `apply`).
    orphan_backends: HashSet<BackendKey>,
    /// Backends whose entry may need rewriting at the end of the current batch.
    dirty: HashSet<BackendKey>,
}

fn v4(addr: IpAddr, what: &L3n4Addr) -> Result<std::net::Ipv4Addr, LbError> {
    match addr {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(LbError::UnsupportedFamily {
            address: what.to_string(),
        }),
    }
}

impl LbManager {
    /// An empty manager.
    pub fn new(config: LbConfig) -> Self {
        let maglev = Maglev::new(config.maglev);
        let backend_ids = IdPool::new(config.max_backends);
        LbManager {
            config,
            maglev,
            services: HashMap::default(),
            service_ids: IdPool::new(u32::from(u16::MAX)),
            backends: HashMap::default(),
            backend_ids,
            orphan_backends: HashSet::default(),
            dirty: HashSet::default(),
        }
    }

    /// A manager that starts from what the maps already hold (after an agent restart):
    /// frontends and backends keep their ids, and the next changes are diffs against the
    /// maps' real contents. Entries that no longer fit together (a slot naming an unknown
    /// backend, an id out of range) are an error.
    pub fn restore(config: LbConfig, maps: RestoredMaps) -> Result<Self, LbError> {
        let mut lb = LbManager::new(config);
        let bad = |reason: String| LbError::InvalidRestore { reason };
        let mut by_id: HashMap<u32, BackendKey> = HashMap::default();
        for (id, value) in &maps.backends {
            if *id == 0 || *id > lb.config.max_backends || !lb.backend_ids.take(id - 1) {
                return Err(bad(format!("backend id {id} is out of range or repeated")));
            }
            let proto = L4Proto::from_number(value.proto)
                .ok_or_else(|| bad(format!("backend {id} has protocol {}", value.proto)))?;
            let key = (
                L3n4Addr::new(value.address.into(), value.port, proto),
                value.cluster_id,
            );
            if lb.backends.contains_key(&key) {
                return Err(bad(format!("backend {} appears twice", key.0)));
            }
            by_id.insert(*id, key);
            lb.backends.insert(
                key,
                BackendEntry {
                    id: *id,
                    refs: 0,
                    states: [0; 4],
                    value: *value,
                    base: *value,
                    written: true,
                },
            );
        }
        let rev_nat: HashMap<u16, Lb4RevNat> = maps.rev_nat.iter().copied().collect();
        let maglev: HashMap<u16, Vec<u32>> = maps.maglev.into_iter().collect();
        for (key, value) in &maps.services {
            let proto = L4Proto::from_number(key.proto)
                .ok_or_else(|| bad(format!("service key has protocol {}", key.proto)))?;
            let fe = L3n4Addr::new(key.address.into(), key.dport, proto);
            let id = value.rev_nat_index;
            if id == 0 {
                return Err(bad(format!("service {fe} has rev-NAT index 0")));
            }
            if !lb.services.contains_key(&fe) {
                if !lb.service_ids.take(u32::from(id) - 1) {
                    return Err(bad(format!("service id {id} is used by two frontends")));
                }
                lb.services.insert(
                    fe,
                    ServiceEntry {
                        id,
                        service: None,
                        entries: BTreeMap::new(),
                        backends: Vec::new(),
                        maglev: maglev.get(&id).map(|t| Arc::from(t.as_slice())),
                        affinity: Vec::new(),
                        rev_nat: rev_nat.get(&id).copied().unwrap_or(Lb4RevNat {
                            address: key.address,
                            port: key.dport,
                        }),
                    },
                );
            }
            let entry = lb.services.get_mut(&fe).expect("inserted above");
            if entry.id != id {
                return Err(bad(format!("frontend {fe} has two service ids")));
            }
            entry.entries.insert(*key, *value);
            if key.backend_slot != 0 {
                let bkey = *by_id.get(&value.backend_id).ok_or_else(|| {
                    bad(format!(
                        "slot {} of {fe} names unknown backend {}",
                        key.backend_slot, value.backend_id
                    ))
                })?;
                if !entry.backends.contains(&bkey) {
                    entry.backends.push(bkey);
                }
            }
        }
        for (backend_id, index) in &maps.affinity_match {
            if let Some(entry) = lb.services.values_mut().find(|e| e.id == *index) {
                entry.affinity.push(*backend_id);
                entry.affinity.sort_unstable();
            }
        }
        for entry in lb.services.values() {
            for b in &entry.backends {
                lb.backends.get_mut(b).expect("restored above").refs += 1;
            }
        }
        lb.orphan_backends = lb
            .backends
            .iter()
            .filter(|(_, e)| e.refs == 0)
            .map(|(k, _)| *k)
            .collect();
        Ok(lb)
    }

    /// The configuration.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// The service id (rev-NAT index) of a frontend.
    pub fn service_id(&self, frontend: &L3n4Addr) -> Option<u16> {
        self.services.get(frontend).map(|e| e.id)
    }

    /// The backend id of a backend address (cluster 0).
    pub fn backend_id(&self, backend: &L3n4Addr) -> Option<u32> {
        self.backends.get(&(*backend, 0)).map(|e| e.id)
    }

    /// The services, with their ids, sorted by id.
    pub fn services(&self) -> Vec<(u16, &Service)> {
        let mut v: Vec<_> = self
            .services
            .values()
            .filter_map(|e| e.service.as_ref().map(|s| (e.id, s)))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The map entries of a frontend's service (master and slots, every scope).
    pub fn entries(&self, frontend: &L3n4Addr) -> Vec<(Lb4Key, Lb4Service)> {
        self.services
            .get(frontend)
            .map(|e| e.entries.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// The Maglev table of a frontend's service, if it has one.
    pub fn maglev_table(&self, frontend: &L3n4Addr) -> Option<Arc<[u32]>> {
        self.services.get(frontend)?.maglev.clone()
    }

    /// Whether a service gets a Maglev table: it asks for Maglev, or the node uses Maglev
    /// and the service is reachable from outside (NodePort, LoadBalancer, HostPort,
    /// ExternalIPs; ClusterIP with `bpf-lb-external-clusterip`). Never for wildcards.
    pub fn uses_maglev(&self, svc: &Service) -> bool {
        if svc.frontend.port == 0 {
            return false;
        }
        match svc.algorithm {
            Some(a) => a == LbAlgorithm::Maglev,
            None => {
                self.config.algorithm == LbAlgorithm::Maglev
                    && (svc.svc_type.is_external()
                        || (svc.svc_type == ServiceType::ClusterIP
                            && self.config.external_clusterip))
            }
        }
    }

    /// Checks a service and that ids are available for it, changing nothing.
    fn check(&self, svc: &Service) -> Result<(), LbError> {
        svc.validate()?;
        v4(svc.frontend.address, &svc.frontend)?;
        if !self.services.contains_key(&svc.frontend) && self.service_ids.free() == 0 {
            return Err(LbError::IdsExhausted {
                what: "service",
                max: u32::from(u16::MAX),
            });
        }
        let new_backends = svc
            .backends
            .iter()
            .filter(|b| !self.backends.contains_key(&(b.address, b.cluster_id)))
            .count() as u32;
        if self.backend_ids.free() < new_backends {
            return Err(LbError::IdsExhausted {
                what: "backend",
                max: self.config.max_backends,
            });
        }
        Ok(())
    }

    /// Adds or updates one service; returns the map updates, in order. On error nothing
    /// changes.
    pub fn upsert(&mut self, svc: &Service) -> Result<Vec<MapOp>, LbError> {
        self.check(svc)?;
        let mut ops = Vec::new();
        let mut released = Vec::new();
        self.upsert_checked(svc, &mut ops, &mut released);
        self.finish(ops, released)
    }

    /// Removes one service; returns the map updates (nothing if it was not there).
    pub fn delete(&mut self, frontend: &L3n4Addr) -> Vec<MapOp> {
        let mut ops = Vec::new();
        let mut released = Vec::new();
        self.delete_inner(frontend, &mut ops, &mut released);
        self.finish(ops, released)
            .expect("finishing a deletion cannot fail")
    }

    /// Makes the maps hold exactly `desired`: upserts each service, deletes every other
    /// (including entries restored from the maps that no service claims). Returns the
    /// minimal map updates, adds before deletes. On error nothing changes.
    pub fn apply(&mut self, desired: &[Service]) -> Result<Vec<MapOp>, LbError> {
        let mut seen = HashSet::default();
        let mut new_services = 0u32;
        let mut new_backends: HashSet<BackendKey> = HashSet::default();
        for svc in desired {
            if !seen.insert(svc.frontend) {
                return Err(LbError::InvalidService {
                    service: svc.frontend.to_string(),
                    reason: "frontend given twice".to_owned(),
                });
            }
            self.check(svc)?;
            if !self.services.contains_key(&svc.frontend) {
                new_services += 1;
            }
            for b in &svc.backends {
                let k = (b.address, b.cluster_id);
                if !self.backends.contains_key(&k) {
                    new_backends.insert(k);
                }
            }
        }
        if self.service_ids.free() < new_services {
            return Err(LbError::IdsExhausted {
                what: "service",
                max: u32::from(u16::MAX),
            });
        }
        if (self.backend_ids.free() as usize) < new_backends.len() {
            return Err(LbError::IdsExhausted {
                what: "backend",
                max: self.config.max_backends,
            });
        }
        let mut ops = Vec::new();
        let mut released = Vec::new();
        for svc in desired {
            self.upsert_checked(svc, &mut ops, &mut released);
        }
        let gone: Vec<L3n4Addr> = self
            .services
            .keys()
            .filter(|fe| !seen.contains(*fe))
            .copied()
            .collect();
        for fe in gone {
            self.delete_inner(&fe, &mut ops, &mut released);
        }
        for key in std::mem::take(&mut self.orphan_backends) {
            if let Some(e) = self.backends.get(&key)
                && e.refs == 0
            {
                let id = e.id;
                self.backends.remove(&key);
                ops.push(MapOp::DeleteBackend { id });
                released.push(id);
            }
        }
        self.finish(ops, released)
    }

    /// Moves one backend (in every service using it) to a new state, if Cilium allows the
    /// transition; returns the map updates.
    pub fn set_backend_state(
        &mut self,
        backend: &L3n4Addr,
        cluster_id: u16,
        state: BackendState,
    ) -> Result<Vec<MapOp>, LbError> {
        let key = (*backend, cluster_id);
        let entry = self
            .backends
            .get(&key)
            .ok_or_else(|| LbError::UnknownBackend {
                backend: backend.to_string(),
            })?;
        let from = BackendState::from_code(entry.value.flags).unwrap_or_default();
        if !from.can_become(state) {
            return Err(LbError::InvalidStateTransition {
                backend: backend.to_string(),
                from,
                to: state,
            });
        }
        let users: Vec<Service> = self
            .services
            .values()
            .filter_map(|e| e.service.clone())
            .filter(|s| s.backends.iter().any(|b| (b.address, b.cluster_id) == key))
            .map(|mut s| {
                for b in &mut s.backends {
                    if (b.address, b.cluster_id) == key {
                        b.state = state;
                    }
                }
                s
            })
            .collect();
        // The state is the backend's own: every service sees the new one.
        let mut ops = Vec::new();
        let mut released = Vec::new();
        for s in &users {
            self.upsert_checked(s, &mut ops, &mut released);
        }
        if users.is_empty() {
            let e = self.backends.get_mut(&key).expect("checked above");
            e.base.flags = state.code();
            e.value.flags = state.code();
            ops.push(MapOp::UpsertBackend {
                id: e.id,
                value: e.value,
            });
        }
        self.finish(ops, released)
    }

    fn finish(&mut self, mut ops: Vec<MapOp>, released: Vec<u32>) -> Result<Vec<MapOp>, LbError> {
        for key in std::mem::take(&mut self.dirty) {
            let Some(e) = self.backends.get_mut(&key) else {
                continue;
            };
            let mut value = e.base;
            value.flags = e.effective_flags();
            if !e.written || value != e.value {
                e.value = value;
                e.written = true;
                ops.push(MapOp::UpsertBackend { id: e.id, value });
            }
        }
        // Ids are released only now, so no id is reused within one batch of updates.
        for id in released {
            self.backend_ids.put(id - 1);
        }
        ops.sort_by_key(MapOp::phase);
        Ok(ops)
    }

    fn backend_value(b: &Backend) -> Lb4Backend {
        let address = match b.address.address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("checked: IPv4 only"),
        };
        Lb4Backend {
            address,
            port: b.address.port,
            proto: b.address.protocol.number(),
            flags: b.state.code(),
            cluster_id: b.cluster_id,
            zone: b.zone,
        }
    }

    /// Upserts a service that passed `check` (ids are available): cannot fail.
    fn upsert_checked(&mut self, svc: &Service, ops: &mut Vec<MapOp>, released: &mut Vec<u32>) {
        let fe = svc.frontend;
        let address = match fe.address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("checked: IPv4 only"),
        };
        if let Some(o) = self.services.get(&fe)
            && o.service.as_ref() == Some(svc)
        {
            // Same desired state as what the maps hold: nothing to do.
            return;
        }
        let old = self.services.remove(&fe);
        let id = match &old {
            Some(o) => o.id,
            None => {
                let idx = self
                    .service_ids
                    .allocate_next()
                    .expect("checked: a service id is free");
                (idx + 1) as u16
            }
        };

        // Backend ids and entries; their map values are written once per batch, in
        // `finish`, from every service's view.
        let mut keys: Vec<BackendKey> = Vec::new();
        let mut ids: HashMap<BackendKey, u32> = HashMap::default();
        for b in &svc.backends {
            let key = (b.address, b.cluster_id);
            let base = Self::backend_value(b);
            let entry = match self.backends.get_mut(&key) {
                Some(e) => e,
                None => {
                    let idx = self
                        .backend_ids
                        .allocate_next()
                        .expect("checked: backend ids are free");
                    self.backends.entry(key).or_insert(BackendEntry {
                        id: idx + 1,
                        refs: 0,
                        states: [0; 4],
                        value: base,
                        base,
                        written: false,
                    })
                }
            };
            entry.refs += 1;
            entry.states[usize::from(b.state.code())] += 1;
            entry.base = base;
            self.orphan_backends.remove(&key);
            self.dirty.insert(key);
            ids.insert(key, entry.id);
            keys.push(key);
        }
        // This service's previous view of its backends no longer counts.
        if let Some(prev) = old.as_ref().and_then(|o| o.service.as_ref()) {
            self.forget_view(prev);
        }

        // Entries per scope.
        let two_scopes = svc.svc_type != ServiceType::ClusterIP
            && svc.external_traffic_policy != svc.internal_traffic_policy;
        let mut entries = BTreeMap::new();
        let flag_bits = self.flags(svc, two_scopes);
        let mut maglev_backends: Vec<MaglevBackend> = Vec::new();
        let scopes: &[u8] = if two_scopes {
            &[SCOPE_EXTERNAL, SCOPE_INTERNAL]
        } else {
            &[SCOPE_EXTERNAL]
        };
        for &scope in scopes {
            let policy = if scope == SCOPE_INTERNAL || svc.svc_type == ServiceType::ClusterIP {
                svc.internal_traffic_policy
            } else {
                svc.external_traffic_policy
            };
            let eligible = |b: &&Backend| {
                policy == TrafficPolicy::Cluster
                    || b.node_name.as_deref() == Some(self.config.node_name.as_str())
            };
            let group = |state: BackendState| {
                let mut v: Vec<&Backend> = svc
                    .backends
                    .iter()
                    .filter(eligible)
                    .filter(|b| b.state == state)
                    .collect();
                v.sort_by_key(|b| ids[&(b.address, b.cluster_id)]);
                v
            };
            let active = group(BackendState::Active);
            let terminating = group(BackendState::Terminating);
            let quarantined = group(BackendState::Quarantined);
            let (count, qcount) = if active.is_empty() {
                (terminating.len(), quarantined.len())
            } else {
                (active.len(), terminating.len() + quarantined.len())
            };
            let ordered: Vec<&Backend> = active
                .iter()
                .chain(&terminating)
                .chain(&quarantined)
                .copied()
                .collect();
            if scope == SCOPE_EXTERNAL {
                maglev_backends = ordered[..count]
                    .iter()
                    .map(|b| MaglevBackend {
                        hash: b.hash_string(false),
                        weight: b.weight,
                        id: ids[&(b.address, b.cluster_id)],
                    })
                    .collect();
            }
            let key = |slot: u16| Lb4Key {
                address,
                dport: fe.port,
                backend_slot: slot,
                proto: fe.protocol.number(),
                scope,
            };
            let mut master_id = svc.session_affinity_timeout.unwrap_or(0);
            if self.config.algorithm_annotation
                && let Some(a) = svc.algorithm
            {
                master_id |= u32::from(a.code()) << 24;
            }
            entries.insert(
                key(0),
                Lb4Service {
                    backend_id: master_id,
                    count: count as u16,
                    rev_nat_index: id,
                    flags: flag_bits.0,
                    flags2: flag_bits.1,
                    qcount: qcount as u16,
                },
            );
            for (i, b) in ordered.iter().enumerate() {
                let quarantined = b.state == BackendState::Quarantined;
                entries.insert(
                    key(i as u16 + 1),
                    Lb4Service {
                        backend_id: ids[&(b.address, b.cluster_id)],
                        count: 0,
                        rev_nat_index: id,
                        flags: 0,
                        flags2: if quarantined { flags::QUARANTINED } else { 0 },
                        qcount: 0,
                    },
                );
            }
        }

        let rev_nat = Lb4RevNat {
            address,
            port: fe.port,
        };
        let maglev: Option<Arc<[u32]>> = if self.uses_maglev(svc) && !maglev_backends.is_empty() {
            let table = self
                .maglev
                .lookup_table(&maglev_backends)
                .expect("validated: unique backends, at least one");
            Some(Arc::from(table))
        } else {
            None
        };

        // Session affinity may only lead to active backends.
        let mut affinity: Vec<u32> = if svc.session_affinity_timeout.is_some() {
            svc.backends
                .iter()
                .filter(|b| b.state == BackendState::Active)
                .map(|b| ids[&(b.address, b.cluster_id)])
                .collect()
        } else {
            Vec::new()
        };
        affinity.sort_unstable();

        // Diff against what the maps hold.
        let (old_entries, old_backends, old_maglev, old_rev_nat, old_affinity) = match old {
            Some(o) => (o.entries, o.backends, o.maglev, Some(o.rev_nat), o.affinity),
            None => (BTreeMap::new(), Vec::new(), None, None, Vec::new()),
        };
        for b in &affinity {
            if !old_affinity.contains(b) {
                ops.push(MapOp::UpsertAffinityMatch {
                    backend_id: *b,
                    rev_nat_index: id,
                });
            }
        }
        for b in &old_affinity {
            if !affinity.contains(b) {
                ops.push(MapOp::DeleteAffinityMatch {
                    backend_id: *b,
                    rev_nat_index: id,
                });
            }
        }
        if old_rev_nat != Some(rev_nat) {
            ops.push(MapOp::UpsertRevNat {
                index: id,
                value: rev_nat,
            });
        }
        match (&old_maglev, &maglev) {
            (Some(a), Some(b)) if a == b => {}
            (_, Some(t)) => ops.push(MapOp::UpsertMaglev {
                index: id,
                table: t.clone(),
            }),
            (Some(_), None) => ops.push(MapOp::DeleteMaglev { index: id }),
            (None, None) => {}
        }
        for (k, v) in &entries {
            if old_entries.get(k) != Some(v) {
                ops.push(MapOp::UpsertService { key: *k, value: *v });
            }
        }
        for k in old_entries.keys() {
            if !entries.contains_key(k) {
                ops.push(MapOp::DeleteService { key: *k });
            }
        }
        for b in old_backends {
            self.unref_backend(&b, ops, released);
        }
        self.services.insert(
            fe,
            ServiceEntry {
                id,
                service: Some(svc.clone()),
                entries,
                backends: keys,
                maglev,
                rev_nat,
                affinity,
            },
        );
    }

    /// Drops a service's view of its backends' states.
    fn forget_view(&mut self, prev: &Service) {
        for b in &prev.backends {
            let key = (b.address, b.cluster_id);
            if let Some(e) = self.backends.get_mut(&key) {
                let n = &mut e.states[usize::from(b.state.code())];
                *n = n.saturating_sub(1);
                self.dirty.insert(key);
            }
        }
    }

    fn unref_backend(&mut self, key: &BackendKey, ops: &mut Vec<MapOp>, released: &mut Vec<u32>) {
        let Some(e) = self.backends.get_mut(key) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            let (id, written) = (e.id, e.written);
            self.backends.remove(key);
            if written {
                ops.push(MapOp::DeleteBackend { id });
            }
            released.push(id);
        }
    }

    fn delete_inner(&mut self, fe: &L3n4Addr, ops: &mut Vec<MapOp>, released: &mut Vec<u32>) {
        let Some(old) = self.services.remove(fe) else {
            return;
        };
        for k in old.entries.keys() {
            ops.push(MapOp::DeleteService { key: *k });
        }
        if old.maglev.is_some() {
            ops.push(MapOp::DeleteMaglev { index: old.id });
        }
        for b in &old.affinity {
            ops.push(MapOp::DeleteAffinityMatch {
                backend_id: *b,
                rev_nat_index: old.id,
            });
        }
        ops.push(MapOp::DeleteRevNat { index: old.id });
        if let Some(prev) = &old.service {
            self.forget_view(prev);
        }
        for b in &old.backends {
            self.unref_backend(b, ops, released);
        }
        self.service_ids.put(u32::from(old.id) - 1);
    }

    /// Cilium's `SVC_FLAG_*` bits for a service: (flags, flags2).
    fn flags(&self, svc: &Service, two_scopes: bool) -> (u8, u8) {
        let mut f = 0u8;
        let mut f2 = 0u8;
        match svc.svc_type {
            ServiceType::ExternalIPs => f |= flags::EXTERNAL_IP,
            ServiceType::NodePort => f |= flags::NODEPORT,
            ServiceType::LoadBalancer => f |= flags::LOADBALANCER,
            ServiceType::HostPort => f |= flags::HOSTPORT,
            ServiceType::LocalRedirect => f2 |= flags::LOCALREDIRECT,
            ServiceType::ClusterIP => {}
        }
        if svc.svc_type != ServiceType::ClusterIP
            && svc.external_traffic_policy == TrafficPolicy::Local
        {
            f |= flags::EXT_LOCAL_SCOPE;
        }
        if svc.internal_traffic_policy == TrafficPolicy::Local {
            f2 |= flags::INT_LOCAL_SCOPE;
        }
        if svc.session_affinity_timeout.is_some() {
            f |= flags::AFFINITY;
        }
        let routable = svc.svc_type != ServiceType::LocalRedirect
            && (svc.svc_type != ServiceType::ClusterIP || self.config.external_clusterip)
            && !svc.frontend.address.is_unspecified();
        if routable {
            f |= flags::ROUTABLE;
        }
        if two_scopes {
            f2 |= flags::TWO_SCOPES;
        }
        (f, f2)
    }
}
