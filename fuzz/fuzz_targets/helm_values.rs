// SPDX-License-Identifier: Apache-2.0

//! Helm values for `cilium install`: lines `--set=EXPR` and `--set-string=EXPR` are applied
//! as flags, every other line is part of one `--values` YAML document merged first (as Helm
//! merges files before flags). Never a panic; the tree stays a map; values that resolve give
//! a ConfigMap whose every key the agent's parser accepts (or `extraConfig` put there).
#![no_main]

use cilium_cli::values::Values;
use cilium_core::config::{AgentConfig, ConfigSources, KEYS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut yaml = String::new();
    let mut flags = Vec::new();
    for line in text.lines() {
        if let Some(expr) = line.strip_prefix("--set=") {
            flags.push((false, expr));
        } else if let Some(expr) = line.strip_prefix("--set-string=") {
            flags.push((true, expr));
        } else {
            yaml.push_str(line);
            yaml.push('\n');
        }
    }
    let mut values = Values::new();
    let _ = values.merge_yaml(&yaml);
    for (strings, expr) in flags {
        let _ = if strings {
            values.set_string(expr)
        } else {
            values.set(expr)
        };
    }
    assert!(values.tree().is_object());
    let Ok(settings) = values.resolve() else {
        return;
    };
    let data = settings.config_map();
    let mut sources = ConfigSources::default();
    for (k, v) in &data {
        if KEYS.iter().any(|(key, _, _)| key == k) {
            sources.set_flag(k, v).unwrap();
        } else {
            // Only extraConfig writes keys the agent does not read.
            assert!(settings.extra_config.contains_key(k), "{k}");
        }
    }
    AgentConfig::from_sources(&sources).unwrap();
});
