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
    /// An algorithm name is not `random` or `maglev`.
    #[error("invalid load-balancing algorithm {input:?}: expected random or maglev")]
    InvalidAlgorithm {
        /// The text given.
        input: String,
    },
    /// An address is not `ADDR:PORT[/PROTO]`.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The text given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Cilium does not allow this backend state change.
    #[error("backend {backend}: cannot go from {from} to {to}")]
    InvalidStateTransition {
        /// The backend.
        backend: String,
        /// Its state.
        from: crate::service::BackendState,
        /// The state asked for.
        to: crate::service::BackendState,
    },
    /// A service is inconsistent.
    #[error("invalid service {service}: {reason}")]
    InvalidService {
        /// The service's frontend.
        service: String,
        /// What is wrong.
        reason: String,
    },
    /// The maps of this family are not supported yet.
    #[error("{address}: only IPv4 services are translated into map entries so far")]
    UnsupportedFamily {
        /// The frontend.
        address: String,
    },
    /// No id is left.
    #[error("no free {what} id left (ids 1..={max} are all in use)")]
    IdsExhausted {
        /// `service` or `backend`.
        what: &'static str,
        /// The largest id.
        max: u32,
    },
    /// The backend is not known.
    #[error("unknown backend {backend}")]
    UnknownBackend {
        /// The backend.
        backend: String,
    },
    /// Map contents read back at start do not fit together.
    #[error("cannot restore load-balancing state from the maps: {reason}")]
    InvalidRestore {
        /// What does not fit.
        reason: String,
    },
}
