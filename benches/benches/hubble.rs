// SPDX-License-Identifier: Apache-2.0

//! Hubble's per-flow costs, for 1000 ring buffer records of a busy node (TCP, UDP and
//! ICMP traces, drops and policy verdicts between 100 pods):
//!
//! - `hubble_decode_1k`: `ours` decodes each 56-byte record, names both ends (endpoint
//!   and identity lookups, label sets shared) and pushes the flow into a 4095-flow ring, as
//!   the agent's reader does; `baseline` only copies the records out of the buffer, the
//!   floor any reader pays. Events per second = 1000 / (time of `ours`).
//! - `hubble_encode_1k`: `ours` turns the flows into Hubble's protobuf and encodes them,
//!   as `GetFlows` sends them; `baseline` writes them as JSON lines (`hubble observe -o
//!   json`), the other way a flow leaves a node.

use std::hint::black_box;
use std::net::Ipv4Addr;

use cilium_bpf::events::Event;
use cilium_hubble::flow::{Flow, Names};
use cilium_hubble::ring::Ring;
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;

/// A record as the datapath lays it out (`struct datapath_event`, 56 bytes).
fn record(i: u32) -> [u8; 56] {
    let mut b = [0u8; 56];
    let (kind, sub) = match i % 10 {
        0 => (1, 133),   // drop: policy denied
        1 => (5, 1 | 4), // policy verdict: allowed, ingress
        2 | 3 => (4, 3), // trace: to-stack
        _ => (4, 0),     // trace: to-endpoint
    };
    b[0] = kind;
    b[1] = sub;
    b[2..4].copy_from_slice(&((i % 100) as u16 + 1).to_ne_bytes());
    b[8..12].copy_from_slice(&74u32.to_ne_bytes());
    b[12..14].copy_from_slice(&1u16.to_ne_bytes());
    b[16..20].copy_from_slice(&(256 + i % 20).to_ne_bytes());
    b[20..24].copy_from_slice(&(256 + (i + 7) % 20).to_ne_bytes());
    b[24..26].copy_from_slice(&((i % 100) as u16 + 1).to_ne_bytes());
    b[26..28].copy_from_slice(&(((i + 13) % 100) as u16 + 1).to_ne_bytes());
    b[28..32].copy_from_slice(&7u32.to_ne_bytes());
    b[32..36].copy_from_slice(&[172, 20, 0, (i % 100) as u8 + 1]);
    b[36..40].copy_from_slice(&[172, 20, 0, ((i + 13) % 100) as u8 + 1]);
    let proto = match i % 7 {
        0 => 17,
        1 => 1,
        _ => 6,
    };
    b[40..42].copy_from_slice(&(40000 + (i % 20000) as u16).to_be_bytes());
    b[42..44].copy_from_slice(&80u16.to_be_bytes());
    b[44] = proto;
    b[45] = if proto == 6 { 0x12 } else { 0 };
    b[46] = if proto == 1 { 8 } else { 0 };
    b[47] = u8::from(i % 2 == 1);
    b[48..56].copy_from_slice(&(1_000_000 + u64::from(i)).to_ne_bytes());
    b
}

/// The node's names: 100 pods, 20 identities with 4 labels each.
fn names() -> Names {
    Names {
        pods: (1..=100u8)
            .map(|i| {
                (
                    Ipv4Addr::new(172, 20, 0, i),
                    (
                        u16::from(i),
                        "default".to_owned(),
                        format!("app-{}-7b9c6d5f4d-x{i:04}", i % 20),
                    ),
                )
            })
            .collect(),
        labels: (0..20u32)
            .map(|i| {
                (
                    256 + i,
                    vec![
                        format!("k8s:app=app-{i}"),
                        "k8s:io.kubernetes.pod.namespace=default".to_owned(),
                        "k8s:io.cilium.k8s.policy.cluster=default".to_owned(),
                        "k8s:io.cilium.k8s.policy.serviceaccount=default".to_owned(),
                    ]
                    .into(),
                )
            })
            .collect(),
        ..Names::default()
    }
}

fn decode(c: &mut Criterion) {
    let buffer: Vec<u8> = (0..1000).flat_map(record).collect();
    let names = names();
    let mut ring: Ring<Flow> = Ring::new(4095).expect("capacity");
    let mut g = c.benchmark_group("hubble_decode_1k");
    g.bench_function("baseline", |b| {
        let mut out: Vec<[u8; 56]> = Vec::with_capacity(1000);
        b.iter(|| {
            out.clear();
            for chunk in black_box(&buffer).chunks_exact(56) {
                let mut r = [0u8; 56];
                r.copy_from_slice(chunk);
                out.push(r);
            }
            black_box(out.len())
        });
    });
    g.bench_function("ours", |b| {
        b.iter(|| {
            for chunk in black_box(&buffer).chunks_exact(56) {
                let ev = Event::decode(chunk).expect("valid record");
                let t = 1_795_749_000_000_000_000 + u128::from(ev.ktime_ns);
                ring.push(Flow::from_event(&ev, t, "k8s-w1", &names));
            }
            black_box(ring.written())
        });
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let names = names();
    let flows: Vec<Flow> = (0..1000)
        .map(|i| {
            let ev = Event::decode(&record(i)).expect("valid record");
            Flow::from_event(&ev, 1_795_749_000_000_000_000, "k8s-w1", &names)
        })
        .collect();
    let mut g = c.benchmark_group("hubble_encode_1k");
    g.bench_function("baseline", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for f in black_box(&flows) {
                serde_json::to_writer(&mut out, f).expect("json");
                out.push(b'\n');
            }
            black_box(out.len())
        });
    });
    g.bench_function("ours", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for f in black_box(&flows) {
                cilium_hubble::observer::to_proto(f)
                    .encode_length_delimited(&mut out)
                    .expect("room");
            }
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
