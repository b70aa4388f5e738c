// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-lb.

/// What can go wrong building tables or translating services. A failed call changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LbError {
    /// The Maglev seed is not base64 of 12 bytes.
    #[error("invalid Maglev hash seed {seed:?}: {reason}")]
    InvalidSeed {
        /// The seed given.
        seed: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The Maglev table size is not one Cilium accepts.
    #[error(
        "invalid Maglev table size {size}: must be one of 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071"
    )]
    InvalidTableSize {
        /// The size given.
        size: u32,
    },
    /// A Maglev table was asked for no backends.
    #[error("no backends to build a Maglev table from")]
    NoBackends,
    /// Two backends have the same hash string.
    #[error("backend {hash:?} is given twice")]
    DuplicateBackend {
        /// The repeated hash string.
        hash: String,
    },
    /// A protocol name is not TCP, UDP, SCTP or ANY.
    #[error("invalid protocol {input:?}: expected TCP, UDP, SCTP or ANY")]
    InvalidProtocol {
        /// The text given.
        input: String,
    },
}
