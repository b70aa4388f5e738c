// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-policy.

/// What can be wrong with a policy. A rejected input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A document could not be parsed (bad YAML/JSON, unknown or mistyped field).
    #[error("document {document}: {path}: {message}")]
    Parse {
        /// Index of the document in the input (0-based).
        document: usize,
        /// Path of the offending field (`spec.ingress[0].fromEndpoints`).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value Cilium would reject (path relative to the document).
    #[error("{path}: {reason}")]
    Invalid {
        /// Path of the offending field.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// As `Invalid`, within a multi-document input.
    #[error("document {document}: {path}: {reason}")]
    InvalidDocument {
        /// Index of the document.
        document: usize,
        /// Path of the offending field.
        path: String,
        /// What is wrong.
        reason: String,
    },
}
