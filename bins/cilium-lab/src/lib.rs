// SPDX-License-Identifier: Apache-2.0

//! `cilium-lab`, as a library: a whole cilium-rs cluster on one machine, in network
//! namespaces, as the seed builds it in VMs. The control-plane node `k8s-ctr` and workers
//! `k8s-w1`, `k8s-w2`... sit on an underlay bridge (192.168.10.0/24, the seed's
//! addresses). The upstream Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, built from its Go module) and the operator run
//! on `k8s-ctr`, Cilium is installed as `cilium install` does it; every node runs this crate's kubelet ([`kubelet`]: pods as network
//! namespaces wired by cilium-cni, built-in workloads, the kubelet API for `kubectl exec`
//! and `kubectl logs`) and an agent (native routing, auto-direct-node-routes, endpoint
//! routes, kube-proxy replacement, BPF masquerade, cluster-pool IPAM on 172.20.0.0/16).
//! Users drive it with the pinned kubectl and `<lab dir>/kubeconfig`.
//!
//! ```no_run
//! use cilium_lab::lab::{Lab, UpOptions};
//!
//! let lab = Lab::from_env().unwrap();
//! let state = lab.up(&UpOptions { nodes: 3, agent_config: Default::default(), tunnel: false, install_cilium: true, kube_proxy: false }).unwrap();
//! let mut apply = lab.kubectl().unwrap();
//! apply.args(["apply", "-f", "seed.yaml"]).status().unwrap();
//! println!("{}", lab.kubectl_output(&["get", "pods", "-o", "wide"]).unwrap());
//! lab.down().unwrap();
//! # drop(state);
//! ```
#![forbid(unsafe_code)]

pub mod kubelet;
pub mod lab;
pub mod manifest;
pub mod workload;
