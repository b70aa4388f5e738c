// SPDX-License-Identifier: Apache-2.0

//! Service load balancing as Cilium does it, as a library.
//!
//! - [`maglev`]: Maglev consistent hashing that builds the same lookup tables as Cilium
//!   (same seed split, MurmurHash3, backend hash strings, weighted fill), without Cilium's
//!   `N x M` permutation table.
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

pub use error::LbError;
