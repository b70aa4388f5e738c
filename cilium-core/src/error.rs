// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-core.

/// Everything that can go wrong in cilium-core: all of it is bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A label string could not be parsed or holds a forbidden character.
    #[error("invalid label {input:?}: {reason}")]
    InvalidLabel {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two labels of one label set have the same key.
    #[error("label key {key:?} appears twice in {input:?}")]
    DuplicateLabelKey {
        /// The repeated key.
        key: String,
        /// The whole label set text.
        input: String,
    },
    /// A label prefix (label filter rule) could not be parsed.
    #[error("invalid label prefix {input:?}: {reason}")]
    InvalidLabelPrefix {
        /// The rule as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label prefix file has an unsupported version.
    #[error("unsupported label prefix file version {version} (only 1 is supported)")]
    UnsupportedPrefixFileVersion {
        /// The version in the file.
        version: u64,
    },
    /// A numeric identity could not be parsed.
    #[error("invalid numeric identity {input:?}: expected a number or a reserved identity name")]
    InvalidIdentity {
        /// The text that was given.
        input: String,
    },
    /// An id pool was asked for an id outside its range.
    #[error("id {id} is outside the pool [0, {len})")]
    IdOutOfRange {
        /// The id asked for.
        id: u32,
        /// The number of ids in the pool.
        len: u32,
    },
}
