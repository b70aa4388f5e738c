// SPDX-License-Identifier: Apache-2.0

//! Runnable examples of the cilium-rs crates; run one with
//! `cargo run -p cilium-examples --example <name>`:
//!
//! - `ipam`: carve the seed's cluster pool (172.20.0.0/16, /24 per node) for three nodes and
//!   hand out pod IPs on each;
//! - `identity`: allocate identities for the seed's curl-pod and webpod labels;
//! - `seed`: both together, printed as `cilium-dbg endpoint list` prints endpoints;
//! - `maglev`: the Maglev command-line contract (`--input FILE`, JSON in, table out; see
//!   [`maglev_json`]);
//! - `maglev_disruption`: how slots are shared, and what moves when a backend goes;
//! - `preflight`: the kernel preflight report (`-o json` for JSON), as
//!   `cilium-dbg preflight` will print it.
#![forbid(unsafe_code)]

use cilium_lb::maglev::{Maglev, MaglevBackend, MaglevConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaglevInput {
    seed: String,
    table_size: u32,
    backends: Vec<MaglevBackend>,
}

/// The `maglev` example's contract: `{"seed", "table_size", "backends": [{"hash",
/// "weight", "id"}]}` in, `{"table": [ids]}` out, or a message saying what is wrong.
pub fn maglev_json(input: &str) -> Result<String, String> {
    let input: MaglevInput =
        serde_json::from_str(input).map_err(|e| format!("invalid input: {e}"))?;
    let config = MaglevConfig::new(input.table_size, &input.seed).map_err(|e| e.to_string())?;
    let table = Maglev::new(config)
        .lookup_table(&input.backends)
        .map_err(|e| e.to_string())?;
    let ids: Vec<String> = table.iter().map(u32::to_string).collect();
    Ok(format!("{{\"table\":[{}]}}", ids.join(",")))
}

#[cfg(test)]
mod tests {
    use super::maglev_json;

    #[test]
    fn maglev_contract() {
        let out = maglev_json(
            r#"{"seed":"JLfvgnHc2kaSUFaI","table_size":251,"backends":[
                {"hash":"[0.0.0.1:1/TCP,State:active]","weight":2,"id":0},
                {"hash":"[0.0.0.3:3/TCP,State:active]","weight":13,"id":1},
                {"hash":"[0.0.0.4:4/TCP,State:active]","weight":111,"id":2},
                {"hash":"[0.0.0.5:5/TCP,State:active]","weight":10,"id":3}]}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let table = v["table"].as_array().unwrap();
        assert_eq!(table.len(), 251);
        // The start of Cilium's pinned table: 2(5),3(1),2(3),1(1),2(2),0(1).
        let head: Vec<u64> = table[..13].iter().map(|x| x.as_u64().unwrap()).collect();
        assert_eq!(head, [2, 2, 2, 2, 2, 3, 2, 2, 2, 1, 2, 2, 0]);
    }

    #[test]
    fn maglev_contract_errors() {
        let seed = "JLfvgnHc2kaSUFaI";
        let one = r#"[{"hash":"a","weight":1,"id":1}]"#;
        for (input, want) in [
            (
                format!(r#"{{"seed":"xx","table_size":251,"backends":{one}}}"#),
                "hash seed",
            ),
            (
                format!(r#"{{"seed":"{seed}","table_size":250,"backends":{one}}}"#),
                "table size",
            ),
            (
                format!(r#"{{"seed":"{seed}","table_size":251,"backends":[]}}"#),
                "no backends",
            ),
            (
                format!(
                    r#"{{"seed":"{seed}","table_size":251,"backends":[{{"hash":"a","weight":1,"id":1}},{{"hash":"a","weight":1,"id":2}}]}}"#
                ),
                "twice",
            ),
            (
                format!(r#"{{"seed":"{seed}","table_size":251}}"#),
                "missing field",
            ),
            ("not json".to_owned(), "invalid input"),
        ] {
            let err = maglev_json(&input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
