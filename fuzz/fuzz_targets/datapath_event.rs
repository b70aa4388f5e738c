// SPDX-License-Identifier: Apache-2.0

//! Ring buffer records from the datapath: decoding never panics, and what decodes prints.
#![no_main]

use cilium_bpf::events::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Event::decode(data) {
        let _ = ev.to_string();
    }
});
