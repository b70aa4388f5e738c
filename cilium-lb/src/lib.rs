// SPDX-License-Identifier: Apache-2.0

//! Service load balancing as Cilium does it, as a library.
//!
//! - [`maglev`]: Maglev consistent hashing that builds the same lookup tables as Cilium
//!   (same seed split, MurmurHash3, backend hash strings, weighted fill), without Cilium's
//!   `N x M` permutation table.
//! - [`service`]: the service model (frontend, type, backends and their states, session
//!   affinity, algorithm, traffic policies) and random selection (`rand % count + 1`).
//! - [`maps`]: the `cilium_lb4_*` map entries with Cilium's fields and flags.
//! - [`manager`]: [`LbManager`](manager::LbManager) turns services into the minimal,
//!   ordered map updates (adds before deletes), allocating service (rev-NAT) and backend ids
//!   node-locally and restoring them from the maps after a restart.
//!
//! ```
//! use cilium_lb::maglev::{backend_hash_string, L4Proto, Maglev, MaglevBackend, MaglevConfig};
//!
//! let mut maglev = Maglev::new(MaglevConfig::default()); // M = 16381, Cilium's seed
//! let backends: Vec<_> = ["172.20.1.10", "172.20.2.10"]
//!     .iter()
//!     .zip(1u32..)
//!     .map(|(ip, id)| {
//!         let hash = backend_hash_string(ip.parse().unwrap(), 0, 80, L4Proto::Tcp, false);
//!         MaglevBackend::new(hash, 100, id)
//!     })
//!     .collect();
//! let table = maglev.lookup_table(&backends).unwrap();
//! assert_eq!(table.len(), 16381);
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod maglev;
pub mod manager;
pub mod maps;
pub mod service;

pub use error::LbError;

#[cfg(test)]
mod manager_tests;
