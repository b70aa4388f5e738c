// SPDX-License-Identifier: Apache-2.0

//! Baselines and helpers for the cilium-rs benchmarks.
//!
//! Each benchmark group measures this project's implementation next to a baseline in the
//! same run (bench ids `baseline` and `ours`); `cargo xtask bench` prints the ratios.
#![forbid(unsafe_code)]

use std::future::Future;
use std::task::{Context, Poll, Waker};

/// The straightforward allocator Kubernetes and Cilium use for service and pod IPs: a flat
/// bitmap, a random start, and a bit-by-bit linear scan that wraps around.
#[derive(Debug, Clone)]
pub struct RandomScanBitmap {
    words: Vec<u64>,
    len: u32,
    used: u32,
    rng: u64,
}

impl RandomScanBitmap {
    /// An empty bitmap of `len` ids.
    pub fn new(len: u32) -> Self {
        RandomScanBitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            used: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: a cheap stand-in for the Go runtime's rand.Intn.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn is_set(&self, i: u32) -> bool {
        self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Marks `i` used; false if it already was.
    pub fn take(&mut self, i: u32) -> bool {
        if self.is_set(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.used += 1;
        true
    }

    /// Marks `i` free; false if it already was.
    pub fn put(&mut self, i: u32) -> bool {
        if !self.is_set(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.used -= 1;
        true
    }

    /// Random start, linear scan.
    pub fn allocate_next(&mut self) -> Option<u32> {
        if self.used == self.len {
            return None;
        }
        let start = (self.next_random() % u64::from(self.len)) as u32;
        for step in 0..self.len {
            let at = (start + step) % self.len;
            if !self.is_set(at) {
                self.take(at);
                return Some(at);
            }
        }
        None
    }
}

/// Polls a future that is ready at once (the in-memory identity backend's) to completion.
///
/// # Panics
/// If the future is not ready on its first poll.
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future was expected to be ready at once"),
    }
}

/// A deterministic pseudo-random sequence for picking which ids to leave free.
pub fn scatter(n: u32, seed: u64) -> impl Iterator<Item = u32> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % u64::from(n)) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_a_correct_allocator() {
        let mut b = RandomScanBitmap::new(100);
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = b.allocate_next() {
            assert!(i < 100 && seen.insert(i));
        }
        assert_eq!(seen.len(), 100);
        assert!(b.put(7));
        assert_eq!(b.allocate_next(), Some(7));
    }
}

/// Cilium's Maglev table computation as upstream writes it (the reference for the
/// benchmarks): the whole `N x M` permutation table is materialised first, then filled.
/// `hashes` must be sorted; returns backend indexes.
pub fn maglev_reference(hashes: &[String], weights: &[u16], m: u32, seed: u32) -> Vec<u32> {
    let m64 = u64::from(m);
    let n = hashes.len();
    let mut perm = vec![0u64; n * m as usize];
    for (i, h) in hashes.iter().enumerate() {
        let (offset, skip) = cilium_lb::maglev::offset_and_skip(h, m, seed);
        let row = &mut perm[i * m as usize..(i + 1) * m as usize];
        row[0] = u64::from(offset) % m64;
        for j in 1..m as usize {
            row[j] = (row[j - 1] + u64::from(skip)) % m64;
        }
    }
    let weight_sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut counter: Vec<f64> = weights.iter().map(|&w| f64::from(w) / n as f64).collect();
    let weights_used = weight_sum / n as u64 > 1;
    let mut next = vec![0usize; n];
    let mut entry = vec![u32::MAX; m as usize];
    for slot in 0..m64 {
        let mut i = (slot % n as u64) as usize;
        loop {
            if weights_used {
                if (slot + 1) * u64::from(weights[i]) < counter[i] as u64 {
                    i = (i + 1) % n;
                    continue;
                }
                counter[i] += weight_sum as f64;
            }
            let mut c = perm[i * m as usize + next[i]];
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = perm[i * m as usize + next[i]];
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            break;
        }
    }
    entry
}

#[cfg(test)]
mod reference_tests {
    use cilium_lb::maglev::{DEFAULT_HASH_SEED, Maglev, MaglevBackend, MaglevConfig};

    /// The benchmark's reference and the library agree (so the ratio compares equals).
    #[test]
    fn reference_matches_library() {
        for (n, weighted) in [(7u32, false), (13, true)] {
            let mut set: Vec<MaglevBackend> = (0..n)
                .map(|i| {
                    MaglevBackend::new(
                        format!("b{i}"),
                        if weighted { (i * 7 % 50) as u16 } else { 100 },
                        i,
                    )
                })
                .collect();
            set.sort_by(|a, b| a.hash.cmp(&b.hash));
            let cfg = MaglevConfig::new(1021, DEFAULT_HASH_SEED).unwrap();
            let ours = Maglev::new(cfg).lookup_table(&set).unwrap();
            let hashes: Vec<String> = set.iter().map(|b| b.hash.clone()).collect();
            let weights: Vec<u16> = set.iter().map(|b| b.weight).collect();
            let reference: Vec<u32> =
                super::maglev_reference(&hashes, &weights, 1021, cfg.seed().murmur)
                    .into_iter()
                    .map(|i| set[i as usize].id)
                    .collect();
            assert_eq!(ours, reference);
        }
    }
}
