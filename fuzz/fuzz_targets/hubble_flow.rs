// SPDX-License-Identifier: Apache-2.0

//! Any ring buffer record: decoding never panics, and a decoded event becomes a flow whose
//! JSON reads back the same and whose compact line can be printed.
#![no_main]

use cilium_bpf::events::Event;
use cilium_hubble::flow::{Flow, NoNames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::decode(data) else {
        return;
    };
    let flow = Flow::from_event(&event, u128::from(event.ktime_ns), "node", &NoNames);
    let json = serde_json::to_vec(&flow).expect("serializes");
    let back: Flow = serde_json::from_slice(&json).expect("reads back");
    assert_eq!(back, flow);
    let _ = flow.compact();
});
