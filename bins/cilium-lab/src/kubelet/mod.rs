// SPDX-License-Identifier: Apache-2.0

//! The lab's kubelet: one per node, on the real Kubernetes API.

pub mod server;
