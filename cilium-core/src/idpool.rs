// SPDX-License-Identifier: Apache-2.0

//! A pool of integer ids `[0, len)` with next-fit allocation in O(log64 len).
//!
//! Cilium and Kubernetes allocate from a flat bitmap with a random start and a linear scan,
//! which slows down as the pool fills (tens of microseconds at 99% of a /16). [`IdPool`]
//! keeps a summary level per 64 words, so finding the next free id costs a handful of word
//! operations at any fill: four levels cover 2^24 ids.
//!
//! Allocation is *next-fit*: it continues after the last id handed out and wraps around, so a
//! released id is not handed out again until the rest of the pool has been used (a stale
//! reference to a released IP or identity does not immediately point at a new owner).
//!
//! ```
//! use cilium_core::IdPool;
//! let mut pool = IdPool::new(4);
//! assert_eq!(pool.allocate_next(), Some(0));
//! assert!(pool.take(2));
//! assert_eq!(pool.allocate_next(), Some(1));
//! assert_eq!(pool.allocate_next(), Some(3));
//! assert_eq!(pool.allocate_next(), None);
//! assert!(pool.put(1));
//! assert_eq!(pool.allocate_next(), Some(1));
//! ```

/// A pool of ids `[0, len)`; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPool {
    len: u32,
    free: u32,
    cursor: u32,
    /// `levels[0]` has one bit per id (1 = free). Bit `b` of word `w` of `levels[k + 1]` is
    /// set when word `w * 64 + b` of `levels[k]` is non-zero. The last level has one word.
    levels: Vec<Vec<u64>>,
}

impl IdPool {
    /// A pool of `len` ids, all free.
    pub fn new(len: u32) -> Self {
        let mut levels = Vec::new();
        let mut bits = u64::from(len);
        loop {
            let words = bits.div_ceil(64).max(1) as usize;
            let mut level = vec![u64::MAX; words];
            let tail = bits % 64;
            if tail != 0 {
                level[words - 1] = (1u64 << tail) - 1;
            }
            if bits == 0 {
                level[0] = 0;
            }
            levels.push(level);
            if words == 1 {
                break;
            }
            bits = words as u64;
        }
        IdPool {
            len,
            free: len,
            cursor: 0,
            levels,
        }
    }

    /// Number of ids in the pool.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the pool has no ids at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of free ids.
    pub fn free(&self) -> u32 {
        self.free
    }

    /// Number of ids in use.
    pub fn used(&self) -> u32 {
        self.len - self.free
    }

    /// Where the next search starts.
    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Moves the search start (taken modulo the pool size); used to restore a snapshot.
    pub fn set_cursor(&mut self, cursor: u32) {
        self.cursor = if self.len == 0 { 0 } else { cursor % self.len };
    }

    /// Whether `id` is in the pool and free.
    pub fn is_free(&self, id: u32) -> bool {
        id < self.len && self.levels[0][(id / 64) as usize] & (1u64 << (id % 64)) != 0
    }

    /// Marks `id` as used. Returns false if it was already used or is out of range.
    pub fn take(&mut self, id: u32) -> bool {
        if !self.is_free(id) {
            return false;
        }
        let mut idx = id as usize;
        for level in &mut self.levels {
            let word = &mut level[idx / 64];
            *word &= !(1u64 << (idx % 64));
            if *word != 0 {
                break;
            }
            idx /= 64;
        }
        self.free -= 1;
        true
    }

    /// Marks `id` as free. Returns false if it was already free or is out of range.
    pub fn put(&mut self, id: u32) -> bool {
        if id >= self.len || self.is_free(id) {
            return false;
        }
        let mut idx = id as usize;
        for level in &mut self.levels {
            let word = &mut level[idx / 64];
            let was_empty = *word == 0;
            *word |= 1u64 << (idx % 64);
            if !was_empty {
                break;
            }
            idx /= 64;
        }
        self.free += 1;
        true
    }

    /// The first free id at or after `start`, without wrapping.
    pub fn next_free_from(&self, start: u32) -> Option<u32> {
        if start >= self.len {
            return None;
        }
        self.succ(0, start as usize).map(|i| i as u32)
    }

    /// First set bit at index `>= i` in `levels[level]`.
    fn succ(&self, level: usize, i: usize) -> Option<usize> {
        let words = &self.levels[level];
        let w = i / 64;
        if w >= words.len() {
            return None;
        }
        let masked = words[w] & (u64::MAX << (i % 64));
        if masked != 0 {
            return Some(w * 64 + masked.trailing_zeros() as usize);
        }
        if level + 1 == self.levels.len() {
            return None;
        }
        let next = self.succ(level + 1, w + 1)?;
        Some(next * 64 + words[next].trailing_zeros() as usize)
    }

    /// Takes the next free id after the cursor (wrapping around), or `None` when full.
    pub fn allocate_next(&mut self) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let id = self
            .next_free_from(self.cursor)
            .or_else(|| self.next_free_from(0))?;
        self.take(id);
        self.cursor = if id + 1 >= self.len { 0 } else { id + 1 };
        Some(id)
    }

    /// Iterates over the used ids in increasing order (O(len / 64)).
    pub fn iter_used(&self) -> impl Iterator<Item = u32> + '_ {
        let len = self.len;
        self.levels[0]
            .iter()
            .enumerate()
            .flat_map(move |(w, &word)| {
                let mut used = !word;
                std::iter::from_fn(move || {
                    if used == 0 {
                        return None;
                    }
                    let b = used.trailing_zeros();
                    used &= used - 1;
                    Some(w as u32 * 64 + b)
                })
            })
            .take_while(move |&id| id < len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn sizes() {
        for len in [0, 1, 63, 64, 65, 4095, 4096, 4097, 262_145] {
            let mut p = IdPool::new(len);
            let mut n = 0;
            while let Some(id) = p.allocate_next() {
                assert_eq!(id, n);
                n += 1;
            }
            assert_eq!(n, len);
            assert_eq!(p.free(), 0);
            assert!(!p.take(len));
            assert!(!p.put(len));
        }
    }

    #[test]
    fn wraps_and_skips_used() {
        let mut p = IdPool::new(300);
        for i in 0..300 {
            assert!(p.take(i));
        }
        assert!(p.put(5));
        assert!(p.put(290));
        p.set_cursor(100);
        assert_eq!(p.allocate_next(), Some(290));
        assert_eq!(p.allocate_next(), Some(5));
        assert_eq!(p.allocate_next(), None);
        assert_eq!(p.iter_used().count(), 300);
    }

    proptest! {
        #[test]
        fn matches_a_model(len in 1u32..5000, ops in proptest::collection::vec((0u8..3, any::<u32>()), 0..400)) {
            let mut p = IdPool::new(len);
            let mut used = BTreeSet::new();
            for (op, arg) in ops {
                let id = arg % len;
                match op {
                    0 => prop_assert_eq!(p.take(id), used.insert(id)),
                    1 => prop_assert_eq!(p.put(id), used.remove(&id)),
                    _ => {
                        let start = p.cursor();
                        let expect = used_complement_after(&used, len, start);
                        let got = p.allocate_next();
                        prop_assert_eq!(got, expect);
                        if let Some(g) = got { used.insert(g); }
                    }
                }
                prop_assert_eq!(p.used() as usize, used.len());
                prop_assert_eq!(p.iter_used().collect::<Vec<_>>(), used.iter().copied().collect::<Vec<_>>());
            }
        }
    }

    fn used_complement_after(used: &BTreeSet<u32>, len: u32, start: u32) -> Option<u32> {
        (start..len).chain(0..start).find(|i| !used.contains(i))
    }
}
