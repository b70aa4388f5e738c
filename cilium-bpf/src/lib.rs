// SPDX-License-Identifier: Apache-2.0

//! The cilium-rs datapath: eBPF programs moving pod traffic, and the Rust side that loads
//! them, fills their maps and reads their events.
//!
//! - [`objects`]: the compiled BPF objects (from `bpf/*.c`; built by clang-19 when present,
//!   otherwise the committed `bpf/prebuilt/` objects).
//! - [`types`]: `#[repr(C)]` mirrors of every map key, value and event, with Cilium's
//!   layouts (checked against the objects' BTF by a test).
//! - [`loader`]: [`Datapath::load`] loads the programs once per node with its maps pinned
//!   under `<bpf-root>/tc/globals/`; [`Datapath::attach_endpoint`] attaches them to an
//!   endpoint's veth as pinned TCX links that survive restarts.
//! - [`maps`]: typed access to the pinned maps ([`maps::Maps::open`]), for the agent and
//!   for `cilium-dbg`.
//! - [`events`]: the `cilium_events` record format and its decoder.
//! - [`preflight`]: kernel version, configuration, mounts, real probes, and the seed's table
//!   of advanced features with what this machine offers.
//!
//! This is the only crate of the workspace with `unsafe` code: the `aya::Pod` impls of
//! [`types`], each with its SAFETY argument.
//!
//! ```
//! use cilium_bpf::types::{EndpointKey, EndpointInfo};
//! let key = EndpointKey::ipv4("172.20.1.10".parse().unwrap());
//! assert_eq!(key.ipv4_addr().unwrap().to_string(), "172.20.1.10");
//! assert_eq!(std::mem::size_of::<EndpointInfo>(), 48);
//! ```

pub mod conntrack;
pub mod dump;
mod error;
pub mod events;
pub mod lb;
pub mod link;
pub mod loader;
pub mod maps;
pub mod policy;
pub mod preflight;
pub mod testing;
pub mod types;

pub use error::DatapathError;
pub use loader::{Attached, Datapath, DatapathConfig, SocketLb, TestRunOutcome, load_object};

/// The compiled BPF objects, embedded in the crate.
pub mod objects {
    /// Programs on an endpoint's veth (`from_container`, `to_container`) and every map.
    pub static BPF_LXC: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_lxc.o"));
    /// Programs on the node's device (`from_netdev`, `to_netdev`): NodePort, masquerade.
    pub static BPF_HOST: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_host.o"));
    /// Socket LB on a cgroup v2 subtree (`cgroup/connect4`, `sendmsg4`, `recvmsg4`,
    /// `getpeername4`).
    pub static BPF_SOCK: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_sock.o"));
    /// Never loaded: one global of each ABI type, for layout checks.
    pub static TYPES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/types.o"));
    /// A program that only returns TC_ACT_OK: the benchmarks' baseline.
    pub static BPF_BENCH: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_bench.o"));
    /// Whether these objects were compiled from `bpf/` in this build (clang-19 found), as
    /// opposed to copied from `bpf/prebuilt/`.
    pub const FRESH: bool = cfg!(bpf_fresh);
    /// Names of the objects, as files in `bpf/prebuilt/` (`<name>.o`).
    pub const NAMES: [&str; 5] = ["bpf_lxc", "bpf_host", "bpf_sock", "types", "bpf_bench"];

    /// An object's bytes by name.
    pub fn by_name(name: &str) -> Option<&'static [u8]> {
        match name {
            "bpf_lxc" => Some(BPF_LXC),
            "bpf_host" => Some(BPF_HOST),
            "bpf_sock" => Some(BPF_SOCK),
            "types" => Some(TYPES),
            "bpf_bench" => Some(BPF_BENCH),
            _ => None,
        }
    }
}
