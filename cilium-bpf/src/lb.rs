// SPDX-License-Identifier: Apache-2.0

//! Writes cilium-lb's service updates into the datapath's maps.
//!
//! [`ServiceWriter::apply`] takes the [`MapOp`]s of `cilium_lb::manager::LbManager` in the
//! order it returns them (backends, rev-NAT entries and Maglev tables before the slots
//! that use them, masters after slots, deletions last), converts them to the kernel
//! layouts (network byte order where Cilium uses it) and writes them. A Maglev table goes
//! into a new inner map that replaces the old one through a single update of the outer
//! map, so a service never has a half-written table.

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{Array, HashOfMaps, MapData};
use cilium_lb::manager::{MapOp, RestoredMaps};
use cilium_lb::maps as lbm;

use crate::DatapathError;
use crate::error::map_err;
use crate::maps::{
    BpfHashMap, Lb4BackendsMap, Lb4ReverseNatMap, Lb4ServicesMap, LbAffinityMatchMap, globals_dir,
    names,
};
use crate::types;

/// The Maglev table size the datapath is compiled for (`LB_MAGLEV_LUT_SIZE`).
pub const MAGLEV_LUT_SIZE: usize = 16381;

/// The value of an inner Maglev map: the whole lookup table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MaglevTable(pub [u32; MAGLEV_LUT_SIZE]);
const _: () = assert!(size_of::<MaglevTable>() == 4 * MAGLEV_LUT_SIZE);
// SAFETY: a `repr(C)` array of `u32`: no padding, every bit pattern valid.
unsafe impl aya::Pod for MaglevTable {}

impl std::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaglevTable([{} entries])", self.0.len())
    }
}

/// Converts cilium-lb's service key to the kernel's.
pub fn service_key(k: &lbm::Lb4Key) -> types::Lb4Key {
    types::Lb4Key {
        address: k.address.octets(),
        dport: k.dport.to_be(),
        backend_slot: k.backend_slot,
        proto: k.proto,
        scope: k.scope,
        pad: [0; 2],
    }
}

/// Converts cilium-lb's service entry to the kernel's (`rev_nat_index` in network order).
pub fn service_value(v: &lbm::Lb4Service) -> types::Lb4Service {
    types::Lb4Service {
        backend_id: v.backend_id,
        count: v.count,
        rev_nat_index: v.rev_nat_index.to_be(),
        flags: v.flags,
        flags2: v.flags2,
        qcount: v.qcount,
    }
}

/// Converts cilium-lb's backend entry to the kernel's.
pub fn backend_value(v: &lbm::Lb4Backend) -> types::Lb4Backend {
    types::Lb4Backend {
        address: v.address.octets(),
        port: v.port.to_be(),
        proto: v.proto,
        flags: v.flags,
        cluster_id: v.cluster_id,
        zone: v.zone,
        pad: 0,
    }
}

/// Converts a rev-NAT entry to the kernel's.
pub fn rev_nat_value(v: &lbm::Lb4RevNat) -> types::Lb4ReverseNat {
    types::Lb4ReverseNat {
        address: v.address.octets(),
        port: v.port.to_be(),
    }
}

/// The kernel's service entry back in cilium-lb's terms (for restore after a restart).
pub fn service_from_kernel(
    k: &types::Lb4Key,
    v: &types::Lb4Service,
) -> (lbm::Lb4Key, lbm::Lb4Service) {
    (
        lbm::Lb4Key {
            address: Ipv4Addr::from(k.address),
            dport: u16::from_be(k.dport),
            backend_slot: k.backend_slot,
            proto: k.proto,
            scope: k.scope,
        },
        lbm::Lb4Service {
            backend_id: v.backend_id,
            count: v.count,
            rev_nat_index: u16::from_be(v.rev_nat_index),
            flags: v.flags,
            flags2: v.flags2,
            qcount: v.qcount,
        },
    )
}

/// The kernel's backend entry back in cilium-lb's terms.
pub fn backend_from_kernel(v: &types::Lb4Backend) -> lbm::Lb4Backend {
    lbm::Lb4Backend {
        address: Ipv4Addr::from(v.address),
        port: u16::from_be(v.port),
        proto: v.proto,
        flags: v.flags,
        cluster_id: v.cluster_id,
        zone: v.zone,
    }
}

fn affinity_key(backend_id: u32, rev_nat_index: u16) -> types::LbAffinityMatch {
    types::LbAffinityMatch {
        backend_id,
        rev_nat_id: rev_nat_index.to_be(),
        pad: 0,
    }
}

/// Writes service updates into the pinned load-balancing maps.
pub struct ServiceWriter {
    services: Lb4ServicesMap,
    backends: Lb4BackendsMap,
    rev_nat: Lb4ReverseNatMap,
    affinity_match: LbAffinityMatchMap,
    maglev: HashOfMaps<MapData, u16, Array<MapData, MaglevTable>>,
}

impl std::fmt::Debug for ServiceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWriter").finish_non_exhaustive()
    }
}

impl ServiceWriter {
    /// Opens the pinned maps under `<bpf_root>/tc/globals`.
    pub fn open(bpf_root: &Path) -> Result<Self, DatapathError> {
        let path = globals_dir(bpf_root).join(names::LB4_MAGLEV);
        let data = MapData::from_pin(&path).map_err(map_err("open pinned", names::LB4_MAGLEV))?;
        let map = aya::maps::Map::from_map_data(data)
            .map_err(map_err("open pinned", names::LB4_MAGLEV))?;
        let maglev =
            HashOfMaps::try_from(map).map_err(map_err("open pinned", names::LB4_MAGLEV))?;
        Ok(ServiceWriter {
            services: BpfHashMap::open(bpf_root, names::LB4_SERVICES)?,
            backends: BpfHashMap::open(bpf_root, names::LB4_BACKENDS)?,
            rev_nat: BpfHashMap::open(bpf_root, names::LB4_REVERSE_NAT)?,
            affinity_match: BpfHashMap::open(bpf_root, names::LB_AFFINITY_MATCH)?,
            maglev,
        })
    }

    /// Applies updates in order; stops at the first failure (the ops before it stay
    /// applied, and each op is idempotent, so applying the same list again converges).
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), DatapathError> {
        for op in ops {
            match op {
                MapOp::UpsertBackend { id, value } => {
                    self.backends.insert(id, &backend_value(value))?;
                }
                MapOp::UpsertRevNat { index, value } => {
                    self.rev_nat.insert(&index.to_be(), &rev_nat_value(value))?;
                }
                MapOp::UpsertMaglev { index, table } => self.install_maglev(*index, table)?,
                MapOp::UpsertService { key, value } => {
                    self.services
                        .insert(&service_key(key), &service_value(value))?;
                }
                MapOp::DeleteService { key } => {
                    self.services.remove(&service_key(key))?;
                }
                MapOp::DeleteMaglev { index } => match self.maglev.remove(&index.to_be()) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err("delete", names::LB4_MAGLEV)(e)),
                },
                MapOp::DeleteRevNat { index } => {
                    self.rev_nat.remove(&index.to_be())?;
                }
                MapOp::UpsertAffinityMatch {
                    backend_id,
                    rev_nat_index,
                } => {
                    let key = affinity_key(*backend_id, *rev_nat_index);
                    self.affinity_match.insert(&key, &1)?;
                }
                MapOp::DeleteAffinityMatch {
                    backend_id,
                    rev_nat_index,
                } => {
                    let key = affinity_key(*backend_id, *rev_nat_index);
                    self.affinity_match.remove(&key)?;
                }
                MapOp::DeleteBackend { id } => {
                    self.backends.remove(id)?;
                }
            }
        }
        Ok(())
    }

    /// The Maglev tables the maps hold, by rev-NAT index (ascending).
    pub fn maglev_tables(&self) -> Result<Vec<(u16, Vec<u32>)>, DatapathError> {
        let mut out = Vec::new();
        for key in self.maglev.keys() {
            let key = key.map_err(map_err("iterate", names::LB4_MAGLEV))?;
            let inner = match self.maglev.get(&key, 0) {
                Ok(inner) => inner,
                // Deleted between the key walk and the lookup.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_err("lookup", names::LB4_MAGLEV)(e)),
            };
            let table: Box<MaglevTable> = Box::new(
                inner
                    .get(&0, 0)
                    .map_err(map_err("read inner", names::LB4_MAGLEV))?,
            );
            out.push((u16::from_be(key), table.0.to_vec()));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Everything the load-balancing maps hold, in cilium-lb's terms: what
    /// `LbManager::restore` takes after an agent restart.
    pub fn read_back(&self) -> Result<RestoredMaps, DatapathError> {
        Ok(RestoredMaps {
            services: self
                .services
                .entries()?
                .iter()
                .map(|(k, v)| service_from_kernel(k, v))
                .collect(),
            backends: self
                .backends
                .entries()?
                .iter()
                .map(|(id, v)| (*id, backend_from_kernel(v)))
                .collect(),
            rev_nat: self
                .rev_nat
                .entries()?
                .iter()
                .map(|(id, v)| {
                    (
                        u16::from_be(*id),
                        lbm::Lb4RevNat {
                            address: Ipv4Addr::from(v.address),
                            port: u16::from_be(v.port),
                        },
                    )
                })
                .collect(),
            maglev: self.maglev_tables()?,
            affinity_match: self
                .affinity_match
                .entries()?
                .iter()
                .map(|(k, _)| (k.backend_id, u16::from_be(k.rev_nat_id)))
                .collect(),
        })
    }

    fn install_maglev(&mut self, index: u16, table: &[u32]) -> Result<(), DatapathError> {
        if table.len() != MAGLEV_LUT_SIZE {
            return Err(DatapathError::InvalidValue {
                map: names::LB4_MAGLEV,
                reason: format!(
                    "table of {} entries; the datapath is built for {MAGLEV_LUT_SIZE}",
                    table.len()
                ),
            });
        }
        let def = aya_obj::maps::bpf_map_def {
            map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
            key_size: 4,
            value_size: (4 * MAGLEV_LUT_SIZE) as u32,
            max_entries: 1,
            ..Default::default()
        };
        let data = crate::maps::create_inner_map(def, "cilium_maglev_inner")
            .map_err(map_err("create inner", names::LB4_MAGLEV))?;
        let mut inner: Array<MapData, MaglevTable> =
            Array::try_from(aya::maps::Map::Array(data))
                .map_err(map_err("create inner", names::LB4_MAGLEV))?;
        let mut value = Box::new(MaglevTable([0; MAGLEV_LUT_SIZE]));
        value.0.copy_from_slice(table);
        inner
            .set(0, value.as_ref(), 0)
            .map_err(map_err("fill inner", names::LB4_MAGLEV))?;
        // One update of the outer map swaps the whole table in.
        self.maglev
            .insert(index.to_be(), &inner, 0)
            .map_err(map_err("insert", names::LB4_MAGLEV))
    }
}
