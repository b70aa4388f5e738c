// SPDX-License-Identifier: Apache-2.0

//! Cluster pool configuration (CIDR lists and mask sizes): never panics; a pool that builds
//! hands out distinct CIDRs inside its cluster CIDRs.
#![no_main]

use cilium_ipam::{ClusterPool, ClusterPoolConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (masks, rest) = data.split_at(2);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (v4, v6) = text.split_once('|').unwrap_or((text, ""));
    let Ok(mut cfg) = ClusterPoolConfig::ipv4(v4, masks[0]) else {
        return;
    };
    if !v6.is_empty() {
        let Ok(with) = cfg.clone().with_ipv6(v6, masks[1]) else {
            return;
        };
        cfg = with;
    }
    let _ = serde_json::from_str::<ClusterPoolConfig>(text);
    let Ok(mut pool) = ClusterPool::new(&cfg) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..64 {
        match pool.allocate(&format!("n{i}")) {
            Ok(c) => {
                for net in c.to_vec() {
                    assert!(seen.insert(net), "{net} handed out twice");
                }
            }
            Err(_) => break,
        }
    }
});
