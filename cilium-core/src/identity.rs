// SPDX-License-Identifier: Apache-2.0

//! Numeric security identities and their bit layout.
//!
//! A [`NumericIdentity`] is a `u32` laid out as Cilium lays it out (a cross-node contract):
//!
//! | bits   | meaning |
//! |--------|---------|
//! | 0-15   | the identity within its cluster |
//! | 16-23  | the cluster id (0-255) for global identities |
//! | 24-31  | the scope: `0` global, `0x01` local (CIDR, FQDN), `0x02` remote-node |
//!
//! Identities 1-10 are reserved (host, world, ...), 256-65535 is the range cluster 0
//! allocates from, and local identities are `n | 1 << 24` with `n` in `1..=0xFF_FFFF`.
//!
//! ```
//! use cilium_core::NumericIdentity;
//! assert_eq!(NumericIdentity::HOST.to_string(), "host");
//! assert_eq!("world".parse::<NumericIdentity>().unwrap(), NumericIdentity::WORLD);
//! assert_eq!(NumericIdentity::new(19327).to_string(), "19327");
//! let (min, max) = NumericIdentity::global_range(0);
//! assert_eq!((min.get(), max.get()), (256, 65535));
//! assert!(NumericIdentity::new((1 << 24) | 5).is_local());
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A numeric security identity (see the module docs for the bit layout).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NumericIdentity(u32);

/// The scope of an identity, from its top byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityScope {
    /// Allocated cluster-wide (reserved identities are global too).
    Global,
    /// Node-local: CIDR, FQDN and CIDR-group identities (`1 << 24` set).
    Local,
    /// Per-node remote-node identities (`2 << 24`).
    RemoteNode,
    /// Any other top byte: not a scope Cilium defines.
    Unknown(u8),
}

/// Reserved identities: (number, name, label key under `reserved:`).
const RESERVED: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "host"),
    (2, "world"),
    (3, "unmanaged"),
    (4, "health"),
    (5, "init"),
    (6, "remote-node"),
    (7, "kube-apiserver"),
    (8, "ingress"),
    (9, "world-ipv4"),
    (10, "world-ipv6"),
];

impl NumericIdentity {
    /// No identity known.
    pub const UNKNOWN: Self = Self(0);
    /// The local host (`reserved:host`).
    pub const HOST: Self = Self(1);
    /// Anything outside the cluster (`reserved:world`).
    pub const WORLD: Self = Self(2);
    /// Endpoints not managed by Cilium (`reserved:unmanaged`).
    pub const UNMANAGED: Self = Self(3);
    /// The health-check endpoint (`reserved:health`).
    pub const HEALTH: Self = Self(4);
    /// Endpoints whose identity is not yet resolved (`reserved:init`).
    pub const INIT: Self = Self(5);
    /// Other nodes of the cluster (`reserved:remote-node`).
    pub const REMOTE_NODE: Self = Self(6);
    /// The Kubernetes API server (`reserved:kube-apiserver`).
    pub const KUBE_APISERVER: Self = Self(7);
    /// The ingress proxy (`reserved:ingress`).
    pub const INGRESS: Self = Self(8);
    /// IPv4 world in dual-stack clusters (`reserved:world-ipv4`).
    pub const WORLD_IPV4: Self = Self(9);
    /// IPv6 world in dual-stack clusters (`reserved:world-ipv6`).
    pub const WORLD_IPV6: Self = Self(10);

    /// The first identity cluster 0 allocates (below it: reserved and well-known ids).
    pub const MINIMAL_ALLOCATION: u32 = 256;
    /// Shift of the cluster id within an identity.
    pub const CLUSTER_ID_SHIFT: u32 = 16;
    /// The highest cluster id.
    pub const MAX_CLUSTER_ID: u8 = 255;
    /// Flag of node-local identities (scope byte `0x01`).
    pub const LOCAL_IDENTITY_FLAG: u32 = 1 << 24;
    /// Scope byte of per-node remote-node identities.
    pub const REMOTE_NODE_SCOPE: u32 = 2 << 24;
    /// Mask of the scope byte.
    pub const SCOPE_MASK: u32 = 0xFF00_0000;
    /// The largest local identity index (local ids are `n | LOCAL_IDENTITY_FLAG`, n >= 1).
    pub const MAX_LOCAL_INDEX: u32 = 0x00FF_FFFF;

    /// Wraps a raw number.
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// A local identity from its index (`1..=0xFF_FFFF`).
    pub const fn local(index: u32) -> Option<Self> {
        if index == 0 || index > Self::MAX_LOCAL_INDEX {
            None
        } else {
            Some(Self(index | Self::LOCAL_IDENTITY_FLAG))
        }
    }

    /// The range `[min, max]` from which a cluster allocates its global identities:
    /// `[256, 65535]` for cluster 0, `[c << 16, ((c + 1) << 16) - 1]` otherwise.
    pub const fn global_range(cluster_id: u8) -> (Self, Self) {
        let c = cluster_id as u32;
        let min = if c == 0 {
            Self::MINIMAL_ALLOCATION
        } else {
            c << Self::CLUSTER_ID_SHIFT
        };
        (Self(min), Self(((c + 1) << Self::CLUSTER_ID_SHIFT) - 1))
    }

    /// The scope, from the top byte.
    pub const fn scope(self) -> IdentityScope {
        match self.0 >> 24 {
            0 => IdentityScope::Global,
            1 => IdentityScope::Local,
            2 => IdentityScope::RemoteNode,
            other => IdentityScope::Unknown(other as u8),
        }
    }

    /// Whether this is a node-local (CIDR/FQDN) identity.
    pub const fn is_local(self) -> bool {
        matches!(self.scope(), IdentityScope::Local)
    }

    /// Whether this is one of the reserved identities (1-255, global scope), as Cilium's
    /// `IsReservedIdentity`.
    pub const fn is_reserved(self) -> bool {
        self.0 > 0 && self.0 < Self::MINIMAL_ALLOCATION
    }

    /// The cluster id of a global identity (bits 16-23).
    pub const fn cluster_id(self) -> u8 {
        ((self.0 >> Self::CLUSTER_ID_SHIFT) & 0xFF) as u8
    }

    /// The reserved identity with this name (`host`, `world`, `remote-node`, ...).
    pub fn from_reserved_name(name: &str) -> Option<Self> {
        RESERVED
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| Self(*id))
    }

    /// The name of a reserved identity, if this is one.
    pub fn reserved_name(self) -> Option<&'static str> {
        RESERVED
            .iter()
            .find(|(id, _)| *id == self.0)
            .map(|(_, n)| *n)
    }

    /// All named reserved identities (1-10), in order.
    pub fn reserved() -> impl Iterator<Item = (Self, &'static str)> {
        RESERVED[1..].iter().map(|(id, n)| (Self(*id), *n))
    }
}

/// Prints the name of a reserved identity (`host`), otherwise the number, as Cilium's
/// `NumericIdentity.String()`. Use [`NumericIdentity::get`] for the number alone.
impl fmt::Display for NumericIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reserved_name() {
            Some(n) if self.0 != 0 => f.write_str(n),
            _ => write!(f, "{}", self.0),
        }
    }
}

/// Parses a decimal number or a reserved identity name.
impl FromStr for NumericIdentity {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Self(n));
        }
        Self::from_reserved_name(s).ok_or_else(|| CoreError::InvalidIdentity {
            input: s.to_owned(),
        })
    }
}

impl From<u32> for NumericIdentity {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl From<NumericIdentity> for u32 {
    fn from(v: NumericIdentity) -> Self {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reserved_numbers() {
        let names: Vec<_> = NumericIdentity::reserved()
            .map(|(id, n)| (id.get(), n))
            .collect();
        assert_eq!(names[0], (1, "host"));
        assert_eq!(names[6], (7, "kube-apiserver"));
        assert_eq!(names[9], (10, "world-ipv6"));
        assert_eq!(NumericIdentity::UNKNOWN.to_string(), "0");
        assert!(NumericIdentity::HEALTH.is_reserved());
        assert!(!NumericIdentity::new(256).is_reserved());
        assert!("nope".parse::<NumericIdentity>().is_err());
        assert!("-1".parse::<NumericIdentity>().is_err());
    }

    #[test]
    fn cluster_ranges() {
        let (min, max) = NumericIdentity::global_range(1);
        assert_eq!((min.get(), max.get()), (65536, 131071));
        assert_eq!(min.cluster_id(), 1);
        let (min, max) = NumericIdentity::global_range(255);
        assert_eq!((min.get(), max.get()), (255 << 16, (256 << 16) - 1));
        assert_eq!(max.scope(), IdentityScope::Global);
    }

    #[test]
    fn scopes() {
        assert_eq!(NumericIdentity::local(0), None);
        assert_eq!(NumericIdentity::local(1 << 24), None);
        let l = NumericIdentity::local(7).unwrap();
        assert_eq!(l.get(), 16_777_223);
        assert_eq!(l.scope(), IdentityScope::Local);
        assert_eq!(
            NumericIdentity::new(2 << 24).scope(),
            IdentityScope::RemoteNode
        );
        assert_eq!(
            NumericIdentity::new(9 << 24).scope(),
            IdentityScope::Unknown(9)
        );
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(n in any::<u32>()) {
            let id = NumericIdentity::new(n);
            prop_assert_eq!(id.to_string().parse::<NumericIdentity>().unwrap(), id);
        }

        #[test]
        fn bit_layout(c in any::<u8>(), low in 0u32..65536) {
            let id = NumericIdentity::new((u32::from(c) << 16) | low);
            prop_assert_eq!(id.cluster_id(), c);
            let (min, max) = NumericIdentity::global_range(c);
            prop_assert!(min <= id || c == 0);
            prop_assert!(id <= max);
        }
    }
}
