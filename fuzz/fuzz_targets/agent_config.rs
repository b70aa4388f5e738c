// SPDX-License-Identifier: Apache-2.0

//! Agent configuration values (`key=value` lines, as flags or config files give them): never
//! a panic, and a configuration that loads prints every key.
#![no_main]

use cilium_core::config::{AgentConfig, ConfigSources, KEYS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = ConfigSources::default();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let _ = sources.set_flag(k, v);
        }
    }
    if let Ok(config) = AgentConfig::from_sources(&sources) {
        assert_eq!(config.effective().len(), KEYS.len());
    }
});
