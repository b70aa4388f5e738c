// SPDX-License-Identifier: Apache-2.0

//! Conntrack garbage collection from user space (the agent schedules it, as Cilium's
//! `ct-gc` does): entries whose lifetime has passed are deleted.
//!
//! Lifetimes are seconds of the kernel's monotonic clock (`bpf_ktime_get_ns() / 1e9`), the
//! same clock as [`monotonic_seconds`].

use crate::DatapathError;
use crate::maps::Ct4Map;

/// The monotonic clock the datapath stamps conntrack entries with, in seconds.
pub fn monotonic_seconds() -> u32 {
    // SAFETY: `timespec` is a plain C struct for which all-zero bytes are valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u32
}

/// What one GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Entries deleted.
    pub deleted: usize,
    /// Entries kept.
    pub alive: usize,
}

/// Deletes every entry of `map` whose lifetime is before `now` (seconds, see
/// [`monotonic_seconds`]).
pub fn gc(map: &mut Ct4Map, now: u32) -> Result<GcStats, DatapathError> {
    let mut stats = GcStats::default();
    for (key, entry) in map.entries()? {
        if entry.lifetime < now {
            if map.remove(&key)? {
                stats.deleted += 1;
            }
        } else {
            stats.alive += 1;
        }
    }
    Ok(stats)
}
