// SPDX-License-Identifier: Apache-2.0

//! Prints how a Maglev table shares its slots among backends, and what moves when one
//! backend is removed.
//!
//! `cargo run --release -p cilium-examples --example maglev_disruption -- [N] [M]`
//! (defaults: 10 backends, M = 16381).

use std::collections::BTreeMap;

use cilium_lb::maglev::{
    DEFAULT_BACKEND_WEIGHT, DEFAULT_HASH_SEED, L4Proto, Maglev, MaglevBackend, MaglevConfig,
    backend_hash_string,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(Ok(10), |a| a.parse())?;
    let m: u32 = args.next().map_or(Ok(16381), |a| a.parse())?;
    let mut maglev = Maglev::new(MaglevConfig::new(m, DEFAULT_HASH_SEED)?);
    let backends: Vec<MaglevBackend> = (1..=n)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(172, 20, (i / 250) as u8, (i % 250) as u8 + 1);
            let hash = backend_hash_string(ip.into(), 0, 80, L4Proto::Tcp, false);
            MaglevBackend::new(hash, DEFAULT_BACKEND_WEIGHT, i)
        })
        .collect();
    let before = maglev.lookup_table(&backends)?;
    let mut share: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &before {
        *share.entry(*id).or_default() += 1;
    }
    println!(
        "M = {m}, N = {n}: slots per backend (ideal {:.1})",
        f64::from(m) / f64::from(n)
    );
    for b in &backends {
        println!("  id {:>4}  {:<34} {:>6}", b.id, b.hash, share[&b.id]);
    }
    let removed = &backends[0];
    let after = maglev.lookup_table(&backends[1..])?;
    let (mut reassigned, mut moved) = (0, 0);
    for (b, a) in before.iter().zip(&after) {
        if *b == removed.id {
            reassigned += 1;
        } else if a != b {
            moved += 1;
        }
    }
    println!(
        "removing id {}: its {reassigned} slots go to survivors; {moved} other slots move ({:.2}% of the table)",
        removed.id,
        100.0 * f64::from(moved) / f64::from(m)
    );
    Ok(())
}
