// SPDX-License-Identifier: Apache-2.0

//! Maglev tables from arbitrary backends, weights (0 and all-zero included) and sizes: never
//! panics, never loops forever, and every table it builds is full of given backend ids.
#![no_main]

use cilium_lb::maglev::{Maglev, MaglevBackend, MaglevConfig, TABLE_SIZES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    // Small tables keep runs fast; the size check itself sees arbitrary values.
    let m = TABLE_SIZES[usize::from(size) % 3];
    let _ = MaglevConfig::new(u32::from(size) * 7, "JLfvgnHc2kaSUFaI");
    let mut backends = Vec::new();
    for (i, chunk) in rest.chunks(4).enumerate().take(64) {
        let weight = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        let name: String = chunk
            .iter()
            .skip(2)
            .map(|b| char::from(b'a' + b % 26))
            .collect();
        backends.push(MaglevBackend::new(name, weight, i as u32));
    }
    let config = MaglevConfig::new(m, "JLfvgnHc2kaSUFaI").expect("valid");
    if let Ok(table) = Maglev::new(config).lookup_table(&backends) {
        assert_eq!(table.len(), m as usize);
        assert!(table.iter().all(|id| (*id as usize) < backends.len()));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<cilium_lb::maglev::MaglevSeed>();
    }
});
