// SPDX-License-Identifier: Apache-2.0

//! `kvstore-opt etcd.config=<file>` contents (Cilium's etcd client configuration: endpoints
//! and the TLS files): never a panic; a configuration accepted has endpoints, all TLS or
//! all plain, TLS with its CA, and a certificate with its key.
#![no_main]

use cilium_core::config::EtcdConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = EtcdConfig::from_yaml(text) else {
        return;
    };
    assert!(!config.endpoints.is_empty());
    let https = config
        .endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    assert!(https == 0 || https == config.endpoints.len());
    assert_eq!(config.tls(), https > 0);
    assert_eq!(config.cert_file.is_some(), config.key_file.is_some());
});
