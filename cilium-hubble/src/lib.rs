// SPDX-License-Identifier: Apache-2.0

//! Hubble for cilium-rs: what a node knows of the traffic its datapath handled. Datapath
//! events (drops, traces, policy verdicts) become [`flow::Flow`]s with Hubble's fields
//! and JSON, kept in a bounded [`ring::Ring`] (2^n - 1 flows, the oldest overwritten,
//! readers told what they lost), selected with Hubble's [`filter::FlowFilter`]s, and
//! printed as `hubble observe` prints them ([`flow::Flow::compact`]).
//!
//! ```
//! use cilium_hubble::filter::{FlowFilter, passes};
//! use cilium_hubble::flow::{Flow, NoNames, Verdict};
//! use cilium_hubble::ring::Ring;
//! # let event = cilium_hubble::example_event();
//! let flow = Flow::from_event(&event, 1_795_000_000_000_000_000, "k8s-w1", &NoNames);
//! assert_eq!(flow.verdict, Verdict::Forwarded);
//! let mut ring = Ring::new(4095).unwrap();
//! ring.push(flow.clone());
//! let tcp = FlowFilter { protocol: vec!["tcp".into()], ..FlowFilter::default() };
//! assert!(passes(&flow, &[tcp], &[]));
//! assert!(flow.compact().contains("to-endpoint FORWARDED (TCP Flags: SYN)"));
//! ```
#![forbid(unsafe_code)]

pub mod filter;
pub mod flow;
pub mod observer;
pub mod relay;
pub mod tls;

/// The gRPC crate the API is built on (its `Request`, `Status`, `Streaming`).
pub use tonic;
pub mod ring;

/// Hubble's protobuf messages and the Observer service, generated from `proto/`.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_qualifications,
    rust_2018_idioms,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    /// Package `flow`.
    pub mod flow {
        tonic::include_proto!("flow");
    }
    /// Package `relay`.
    pub mod relay {
        tonic::include_proto!("relay");
    }
    /// Package `observer`.
    pub mod observer {
        tonic::include_proto!("observer");
    }
}

/// A trace event of a TCP SYN from 172.20.0.10:43210 to 172.20.1.10:80 delivered to a
/// local endpoint (for examples and tests).
pub fn example_event() -> cilium_bpf::events::Event {
    cilium_bpf::events::Event {
        kind: cilium_bpf::events::EventKind::Trace {
            point: cilium_bpf::events::ObservationPoint::ToEndpoint,
        },
        source: 12,
        len: 74,
        src_identity: 257,
        dst_identity: 256,
        src_endpoint: 0,
        dst_endpoint: 12,
        ifindex: 7,
        saddr: std::net::Ipv4Addr::new(172, 20, 0, 10),
        daddr: std::net::Ipv4Addr::new(172, 20, 1, 10),
        sport: 43210,
        dport: 80,
        proto: 6,
        tcp_flags: 0x02,
        icmp_type: 0,
        is_reply: false,
        ktime_ns: 1,
        ethertype: None,
    }
}

#[cfg(test)]
mod tests;
