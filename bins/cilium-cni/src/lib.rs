// SPDX-License-Identifier: Apache-2.0

//! The cilium-rs CNI plugin, as a library: the CNI protocol (spec 1.1.0, results and errors
//! for 0.3.0 through 1.1.0) and the naming Cilium uses for a pod's host-side veth.
//!
//! The binary reads `CNI_*` variables and the netconf from stdin and prints a result or an
//! error JSON on stdout, exactly as the spec writes them:
//!
//! ```
//! use cilium_cni::spec::{CniEnv, Command, NetConf, code};
//!
//! let env = CniEnv::from_vars(|k| match k {
//!     "CNI_COMMAND" => Some("ADD".into()),
//!     "CNI_CONTAINERID" => Some("abc123".into()),
//!     "CNI_NETNS" => Some("/var/run/netns/pod".into()),
//!     "CNI_IFNAME" => Some("eth0".into()),
//!     "CNI_ARGS" => Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=curl-pod".into()),
//!     _ => None,
//! }).unwrap();
//! assert_eq!(env.command, Command::Add);
//! assert_eq!(env.pod(), Some(("default", "curl-pod")));
//! assert_eq!(cilium_cni::host_veth_name("abc123", "eth0"), "lxcc69fce2d2430");
//!
//! let conf = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni"}"#).unwrap();
//! assert_eq!(conf.negotiate().unwrap(), "0.3.1");
//! let err = NetConf::parse(b"{").unwrap_err();
//! assert_eq!(err.code, code::DECODE);
//! ```
#![forbid(unsafe_code)]

pub mod plugin;
pub mod runtime;
pub mod spec;

use sha2::{Digest, Sha256};

/// The host-side veth of a pod's interface as Cilium names it: `lxc` and the first 12 hex
/// digits of sha256(`<container id>:<ifname>`) (15 bytes, the kernel's limit).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}:{ifname}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("lxc{hex}")
}

#[cfg(test)]
mod tests;
