// SPDX-License-Identifier: Apache-2.0

//! Persisted node IPAM snapshots: never panic on restore, and a restored allocator
//! snapshots back to the same state.
#![no_main]

use cilium_ipam::{NodeAllocator, NodeAllocatorSnapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = serde_json::from_slice::<NodeAllocatorSnapshot>(data) else {
        return;
    };
    if let Ok(alloc) = NodeAllocator::restore(&snap) {
        let again = NodeAllocator::restore(&alloc.snapshot()).expect("own snapshot restores");
        assert_eq!(again, alloc);
    }
});
