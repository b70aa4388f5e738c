// SPDX-License-Identifier: Apache-2.0

//! Services as JSON: parsing never panics, and a service that validates translates into
//! map updates, again and again, without panicking.
#![no_main]

use cilium_lb::manager::{LbConfig, LbManager};
use cilium_lb::service::{L3n4Addr, Service};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<L3n4Addr>();
    let Ok(services) = serde_json::from_str::<Vec<Service>>(text) else {
        return;
    };
    let config = LbConfig {
        algorithm: cilium_lb::service::LbAlgorithm::Maglev,
        maglev: cilium_lb::maglev::MaglevConfig::new(251, "JLfvgnHc2kaSUFaI").expect("valid"),
        ..LbConfig::default()
    };
    let mut lb = LbManager::new(config);
    if lb.apply(&services).is_ok() {
        assert!(lb.apply(&services).expect("same input again").is_empty());
    }
    for s in &services {
        let _ = lb.upsert(s);
    }
});
