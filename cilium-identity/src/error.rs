// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-identity.

use cilium_core::NumericIdentity;

/// What can go wrong allocating, releasing or looking up identities. A failed call changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An identity was asked for an empty label set.
    #[error("cannot allocate an identity for an empty label set")]
    EmptyLabels,
    /// Every identity of the range is in use.
    #[error("no more available identities in the range [{min}, {max}]")]
    Exhausted {
        /// First identity of the range.
        min: u32,
        /// Last identity of the range.
        max: u32,
    },
    /// The identity is not held on this node.
    #[error("identity {id} is not held on this node")]
    NotFound {
        /// The identity.
        id: NumericIdentity,
    },
    /// The identity has no users left to release.
    #[error("identity {id} has no users left: released more often than acquired")]
    NotInUse {
        /// The identity.
        id: NumericIdentity,
    },
    /// The backend returned an identity outside this cluster's range.
    #[error("backend returned identity {id}, outside this cluster's range [{min}, {max}]")]
    OutOfRange {
        /// The identity returned.
        id: NumericIdentity,
        /// First identity of the range.
        min: NumericIdentity,
        /// Last identity of the range.
        max: NumericIdentity,
    },
    /// The backend failed (for a networked store: unreachable, timed out, ...).
    #[error("identity backend failed during {operation}: {reason}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The backend's message.
        reason: String,
    },
}
