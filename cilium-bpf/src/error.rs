// SPDX-License-Identifier: Apache-2.0

//! The error type of cilium-bpf.

use std::path::PathBuf;

/// What can go wrong loading, attaching or using the datapath. Each variant names the
/// object, map, program, interface or path involved; kernel errors keep their source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatapathError {
    /// The BPF object could not be loaded (maps created, relocations applied).
    #[error("loading BPF object {object}")]
    LoadObject {
        /// Object name.
        object: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The verifier rejected a program; `verifier_log` is its full output.
    #[error("the verifier rejected program {program} of {object}:\n{verifier_log}")]
    Verifier {
        /// Object name.
        object: &'static str,
        /// Program name.
        program: &'static str,
        /// The verifier's log.
        verifier_log: String,
    },
    /// Another failure around a program (load, attach, link handling).
    #[error("{action} program {program} of {object}")]
    Program {
        /// What was being done ("loading", "attaching to lxc12ab", ...).
        action: String,
        /// Object name.
        object: &'static str,
        /// Program name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A link could not be pinned, opened or unpinned.
    #[error("{action} link {path}")]
    Link {
        /// What was being done.
        action: &'static str,
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object lacks a program or map the crate expects.
    #[error("BPF object {object} has no {kind} {name}")]
    Missing {
        /// Object name.
        object: &'static str,
        /// "program" or "map".
        kind: &'static str,
        /// The name looked for.
        name: &'static str,
    },
    /// A map operation failed.
    #[error("{op} on map {map}")]
    Map {
        /// The operation ("insert", "lookup", "open pinned", ...).
        op: &'static str,
        /// The map's name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A file system operation failed (bpffs directories, pins).
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Socket LB's cgroup is not a cgroup v2 directory.
    #[error("{path} is not a cgroup v2 directory (socket LB attaches to one)")]
    NotCgroup2 {
        /// The path.
        path: PathBuf,
    },
    /// The bpf root is not on a BPF file system, so nothing could be pinned there.
    #[error("{path} is not on a BPF file system (mount -t bpf bpf {path})")]
    NotBpffs {
        /// The path.
        path: PathBuf,
    },
    /// Listing the programs attached to a device failed.
    #[error("listing the tcx programs of {ifname}")]
    Query {
        /// The device.
        ifname: String,
        /// aya's error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A value cannot be represented in a map (say, an IPv6 address in an IPv4 map).
    #[error("invalid value for map {map}: {reason}")]
    InvalidValue {
        /// The map.
        map: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Wraps an aya map error with the operation and the map's name.
pub(crate) fn map_err(
    op: &'static str,
    map: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map {
        op,
        map,
        source: Box::new(source),
    }
}
