// SPDX-License-Identifier: Apache-2.0

//! The cluster CLI of cilium-rs, `cilium`, as a library: what upstream's cilium-cli does
//! against a cluster through its kubeconfig. [`values`] turns Helm values (`--set`,
//! `--values`) into the `cilium-config` ConfigMap the way Cilium's chart does.
//!
//! ```
//! let mut values = cilium_cli::values::Values::new();
//! values.set("debug.enabled=true,routingMode=native,ipv4NativeRoutingCIDR=10.0.0.0/8").unwrap();
//! let settings = values.resolve().unwrap();
//! assert_eq!(settings.config_map()["debug"], "true");
//! ```

pub mod cluster;
pub mod commands;
pub mod connectivity;
pub mod install;
pub mod portforward;
pub mod status;
pub mod sysdump;
pub mod values;
