// SPDX-License-Identifier: Apache-2.0

//! The error every node operation behind the API returns.

/// An API failure: an HTTP status and a message. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            message: m.into(),
        }
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        ApiError {
            status: 409,
            message: m.into(),
        }
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: m.into(),
        }
    }
    /// 503.
    pub fn unavailable(m: impl Into<String>) -> Self {
        ApiError {
            status: 503,
            message: m.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

/// A 500 naming what failed, for `map_err`.
pub(super) fn internal<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> ApiError {
    move |e| ApiError::internal(format!("{what}: {e}"))
}
