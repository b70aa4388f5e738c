// SPDX-License-Identifier: Apache-2.0

//! `cilium-lab`, as a library: a whole cilium-rs cluster on one machine, in network
//! namespaces, as the seed builds it in VMs. The control-plane node `k8s-ctr` and workers
//! `k8s-w1`, `k8s-w2`... sit on an underlay bridge (192.168.10.0/24, the seed's addresses);
//! etcd and the operator run on `k8s-ctr`; every node runs an agent (kvstore=etcd, native
//! routing, auto-direct-node-routes, endpoint routes, kube-proxy replacement, BPF
//! masquerade, cluster-pool IPAM on 172.20.0.0/16). Manifests become pods (created with
//! cilium-cni as a runtime does, running built-in workloads), Services (ClusterIPs from
//! 10.96.0.0/16, names resolvable in pods) and policies.
//!
//! ```no_run
//! use cilium_lab::lab::{Lab, UpOptions};
//!
//! let lab = Lab::from_env().unwrap();
//! let state = lab.up(&UpOptions { nodes: 3, agent_config: Default::default(), tunnel: false }).unwrap();
//! lab.apply(cilium_lab::manifest::SEED, "default", &mut std::io::stdout()).unwrap();
//! lab.exec("default", "curl-pod", &["curl".into(), "-s".into(), "webpod".into()]).unwrap();
//! lab.down().unwrap();
//! # drop(state);
//! ```
#![forbid(unsafe_code)]

pub mod get;
pub mod kubelet;
pub mod lab;
pub mod manifest;
pub mod workload;
