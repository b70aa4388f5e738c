// SPDX-License-Identifier: Apache-2.0

//! Label filter rules (`--label`) and prefix files: never panic, and a filter that builds
//! can be applied.
#![no_main]

use cilium_core::{LabelFilter, LabelSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rules, labels) = text.split_once('\n').unwrap_or((text, "k8s:app=x;"));
    if let Ok(filter) = LabelFilter::with_user_prefixes(rules.split(',')) {
        if let Ok(set) = labels.parse::<LabelSet>() {
            let (kept, info) = filter.filter(&set);
            assert_eq!(kept.len() + info.len(), set.len());
        }
    }
    let _ = LabelFilter::from_prefix_file(text, [""; 0]);
});
