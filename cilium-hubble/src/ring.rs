// SPDX-License-Identifier: Apache-2.0

//! The ring of recent flows a node keeps: capacity 2^n - 1 (Hubble's default 4095), the
//! oldest overwritten, every flow numbered so a follower knows what it missed. Writing
//! never waits for readers; readers that fall behind are told how many flows they lost.

use std::collections::VecDeque;

/// A bounded ring of items, numbered from 0 in the order they were written.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    capacity: usize,
    items: VecDeque<T>,
    /// The number of the oldest item held.
    first: u64,
}

/// Why a capacity is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCapacity(pub usize);

impl std::fmt::Display for BadCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ring capacity {} is not one less than a power of two (1, 3, 7, ..., 4095, ..., 65535)",
            self.0
        )
    }
}

impl std::error::Error for BadCapacity {}

/// What a reader gets: the items from its position, and how many it lost (overwritten
/// before it read them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    /// Items, oldest first.
    pub items: Vec<T>,
    /// Items between the reader's position and the oldest one held.
    pub lost: u64,
    /// The position to read from next time.
    pub next: u64,
}

impl<T: Clone> Ring<T> {
    /// A ring of `capacity` items: 2^n - 1, as Hubble's `hubble-event-buffer-capacity`.
    pub fn new(capacity: usize) -> Result<Self, BadCapacity> {
        if capacity == 0 || capacity == usize::MAX || !(capacity + 1).is_power_of_two() {
            return Err(BadCapacity(capacity));
        }
        Ok(Ring {
            capacity,
            items: VecDeque::with_capacity(capacity.min(1 << 16)),
            first: 0,
        })
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many items it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items were ever written.
    pub fn written(&self) -> u64 {
        self.first + self.items.len() as u64
    }

    /// Adds an item, overwriting the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.first += 1;
        }
        self.items.push_back(item);
    }

    /// The last `n` items, oldest first.
    pub fn last(&self, n: usize) -> Vec<T> {
        let skip = self.items.len().saturating_sub(n);
        self.items.iter().skip(skip).cloned().collect()
    }

    /// Every item held, oldest first.
    pub fn all(&self) -> Vec<T> {
        self.items.iter().cloned().collect()
    }

    /// The items written since position `from` (a follower's cursor), with what it lost.
    pub fn read_from(&self, from: u64) -> Read<T> {
        let lost = self.first.saturating_sub(from);
        let start = from.max(self.first);
        let skip = (start - self.first) as usize;
        Read {
            items: self.items.iter().skip(skip).cloned().collect(),
            lost,
            next: self.written(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn capacities_are_powers_of_two_minus_one() {
        assert!(Ring::<u8>::new(4095).is_ok());
        assert!(Ring::<u8>::new(1).is_ok());
        for bad in [0, 2, 4096, 1000] {
            assert_eq!(Ring::<u8>::new(bad).unwrap_err(), BadCapacity(bad));
        }
    }

    proptest! {
        /// After any number of writes the ring holds the newest `capacity` items in order,
        /// and a follower at any position gets exactly what it missed, or is told how many
        /// it lost.
        #[test]
        fn a_ring_keeps_the_newest_and_counts_the_lost(n in 0usize..200, cap_bits in 1u32..6, from in 0u64..220) {
            let cap = (1usize << cap_bits) - 1;
            let mut ring = Ring::new(cap).unwrap();
            for i in 0..n as u64 {
                ring.push(i);
            }
            let held: Vec<u64> = ring.all();
            let want: Vec<u64> = (n.saturating_sub(cap) as u64..n as u64).collect();
            prop_assert_eq!(&held, &want);
            prop_assert_eq!(ring.last(3), want.iter().rev().take(3).rev().copied().collect::<Vec<_>>());
            let r = ring.read_from(from);
            let first = n.saturating_sub(cap) as u64;
            prop_assert_eq!(r.lost, first.saturating_sub(from));
            prop_assert_eq!(r.next, n as u64);
            let expect: Vec<u64> = (from.max(first)..n as u64).collect();
            prop_assert_eq!(r.items, expect);
        }
    }
}
