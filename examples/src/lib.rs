// SPDX-License-Identifier: Apache-2.0

//! Runnable examples of the cilium-rs crates; run one with
//! `cargo run -p cilium-examples --example <name>`:
//!
//! - `ipam`: carve the seed's cluster pool (172.20.0.0/16, /24 per node) for three nodes and
//!   hand out pod IPs on each;
//! - `identity`: allocate identities for the seed's curl-pod and webpod labels;
//! - `seed`: both together, printed as `cilium-dbg endpoint list` prints endpoints.
#![forbid(unsafe_code)]
