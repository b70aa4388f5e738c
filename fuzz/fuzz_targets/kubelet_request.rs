// SPDX-License-Identifier: Apache-2.0

//! The lab kubelet's API: any request path and query (the apiserver passes a client's
//! through) decodes into exec, log or port-forward options, or a clear error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let _ = cilium_lab::kubelet::server::check_request(path, query);
});
