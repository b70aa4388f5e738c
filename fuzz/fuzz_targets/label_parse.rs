// SPDX-License-Identifier: Apache-2.0

//! Labels and label sets: parsing never panics, and what parses prints back to itself.
#![no_main]

use cilium_core::{Label, LabelSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(label) = text.parse::<Label>() {
        assert_eq!(label.to_string().parse::<Label>().as_ref(), Ok(&label));
    }
    if let Ok(set) = text.parse::<LabelSet>() {
        assert_eq!(set.to_string().parse::<LabelSet>().as_ref(), Ok(&set));
    }
    let _ = serde_json::from_str::<LabelSet>(text);
});
