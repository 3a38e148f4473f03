//! A cache's configuration and counters, and what the guard's registry sees of it
//! ([`Shared`]: its report, shrinking under memory pressure, removing expired entries).

use super::structure::{Core, Node};
use super::time::{Time, Timer, monotonic};
use super::{EXPIRED, GUARD_LOCK_WAIT, NIL, PRESSURE, PyLock};
use leakguard::cache::{
    CacheKind, CacheReport, CacheShrink, CapacityUnit, EvictionCause, EvictionCounts, ExternalCache,
};
use pyo3::prelude::*;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bookkeeping bytes per entry for the shallow estimate (node, table slot, and the key and
/// value objects' headers are not counted: they belong to the application).
const ENTRY_BYTES: u64 = (std::mem::size_of::<Option<Node>>() + 8) as u64;

pub(super) struct TtlConfig {
    pub(super) ttl_f: Option<f64>,
    pub(super) ttl_obj: Py<PyAny>,
    pub(super) timer: Py<Timer>,
}

pub(super) struct Config {
    pub(super) maxsize: f64,
    pub(super) maxsize_obj: Py<PyAny>,
    pub(super) getsizeof: Option<Py<PyAny>>,
    pub(super) ttl: Option<TtlConfig>,
    /// The hooks (`GETITEM`, ...) that the instance's class overrides.
    pub(super) hooks: u32,
    /// Sizes so far were all ints: `currsize` is an int.
    pub(super) int_sizes: AtomicU32,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) inserts: AtomicU64,
    /// By cause, in the order of the core's list of causes (`EvictionCause::ALL`).
    evictions: [AtomicU64; EvictionCause::ALL.len()],
    pub(super) entries: AtomicU64,
    pub(super) currsize: AtomicU64,
}

impl Stats {
    /// Counts `n` entries gone for `cause` (only ever called under the cache's lock).
    pub(super) fn evicted(&self, cause: EvictionCause, n: u64) {
        bump(&self.evictions[slot(cause)], n);
    }

    /// The eviction counters as the report gives them.
    pub(super) fn evictions(&self) -> EvictionCounts {
        let count = |cause| self.evictions[slot(cause)].load(Relaxed);
        // Every field must be named here (a struct literal): a cause the core adds shows up
        // as a compile error, and `evictions_by_cause_reach_the_report` ties fields to causes.
        EvictionCounts {
            capacity: count(EvictionCause::Capacity),
            expired: count(EvictionCause::Expired),
            explicit: count(EvictionCause::Explicit),
            replaced: count(EvictionCause::Replaced),
            pressure: count(EvictionCause::Pressure),
        }
    }
}

/// The counter of `cause` in `Stats::evictions`: its position in the core's list.
#[inline]
fn slot(cause: EvictionCause) -> usize {
    // Every cause is in `ALL`; the fallback is never taken.
    EvictionCause::ALL
        .iter()
        .position(|&c| c == cause)
        .unwrap_or(0)
}

/// Adds to a counter only ever written under the cache's lock (a plain load and store).
pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// What a cache object shares with the registry.
pub(crate) struct Shared {
    pub(super) config: OnceLock<Config>,
    pub(super) core: PyLock<Core>,
    pub(super) stats: Stats,
}

impl Shared {
    pub(super) fn publish(&self, core: &Core) {
        self.stats.entries.store(core.len as u64, Relaxed);
        self.stats.currsize.store(core.currsize.to_bits(), Relaxed);
    }

    /// Removes up to `budget` entries that expired by now (monotonic timers only: the
    /// guard's thread cannot call a Python timer). Returns what it removed, to be dropped
    /// after the lock.
    pub(super) fn reclaim(&self, budget: usize) -> Vec<Node> {
        let Some(cfg) = self.config.get() else {
            return Vec::new();
        };
        let Some(ttl) = &cfg.ttl else {
            return Vec::new();
        };
        // SAFETY-free check of the timer's kind: `monotonic` never changes; while a
        // `with cache.timer` block freezes the time, leave expiry to the cache's own calls.
        let timer = ttl.timer.get();
        if !timer.monotonic || timer.nesting.load(Relaxed) > 0 {
            return Vec::new();
        }
        let Some(mut core) = self.core.lock_for(Duration::ZERO) else {
            return Vec::new();
        };
        let now = monotonic();
        let mut out = Vec::new();
        while out.len() < budget {
            let head = core.ord.head;
            if head == NIL {
                break;
            }
            match core.node(head).expires {
                Some(Time::F(e)) if now >= e => out.push(core.remove(head)),
                _ => break,
            }
        }
        self.stats.evicted(EXPIRED, out.len() as u64);
        self.publish(&core);
        out
    }
}

impl ExternalCache for Shared {
    fn report(&self) -> CacheReport {
        let cfg = self.config.get();
        let s = &self.stats;
        let entries = s.entries.load(Relaxed);
        let currsize = f64::from_bits(s.currsize.load(Relaxed));
        let sized = cfg.is_some_and(|c| c.getsizeof.is_some());
        let (hits, misses) = (s.hits.load(Relaxed), s.misses.load(Relaxed));
        let lookups = hits + misses;
        CacheReport {
            name: String::new(),
            kind: if cfg.is_some_and(|c| c.ttl.is_some()) {
                CacheKind::Ttl
            } else {
                CacheKind::Lru
            },
            entries,
            weight: if sized { currsize as u64 } else { entries },
            capacity: cfg.map_or(0, |c| c.maxsize as u64),
            capacity_unit: if sized {
                CapacityUnit::Weight
            } else {
                CapacityUnit::Entries
            },
            weight_bytes: if sized {
                currsize as u64
            } else {
                entries.saturating_mul(ENTRY_BYTES)
            },
            weight_bytes_estimated: !sized,
            hits,
            misses,
            hit_ratio: (lookups > 0).then(|| hits as f64 / lookups as f64),
            inserts: s.inserts.load(Relaxed),
            evictions: s.evictions(),
            ttl_seconds: cfg.and_then(|c| c.ttl.as_ref()).and_then(|t| t.ttl_f),
            time_to_idle_seconds: None,
            listener_panics: 0,
        }
    }

    fn shrink(&self, fraction: f64) -> CacheShrink {
        let fraction = if fraction.is_nan() {
            1.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let sized = self.config.get().is_some_and(|c| c.getsizeof.is_some());
        let mut evicted = Vec::new();
        if let Some(mut core) = self.core.lock_for(GUARD_LOCK_WAIT) {
            let target = core.currsize * fraction;
            while core.len > 0 && core.currsize > target {
                let head = core.lru.head;
                evicted.push(core.remove(head));
            }
            self.stats.evicted(PRESSURE, evicted.len() as u64);
            self.publish(&core);
        }
        let entries = evicted.len() as u64;
        let weight: f64 = evicted.iter().map(|n| n.size).sum();
        // Dropped after the lock: without the GIL (the guard's thread) pyo3 defers the
        // decrements to the next thread that enters Python through it.
        drop(evicted);
        CacheShrink {
            name: String::new(),
            entries_evicted: entries,
            weight_evicted: weight as u64,
            bytes_evicted: if sized {
                weight as u64
            } else {
                entries.saturating_mul(ENTRY_BYTES)
            },
        }
    }

    fn maintain(&self, budget: usize) {
        drop(self.reclaim(budget));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn evictions_by_cause_reach_the_report() {
        let stats = Stats::default();
        for (n, cause) in (1..).zip(EvictionCause::ALL) {
            stats.evicted(cause, n);
        }
        let counts = stats.evictions();
        for (n, cause) in (1..).zip(EvictionCause::ALL) {
            assert_eq!(counts.get(cause), n, "{cause}");
        }
        assert_eq!(
            counts.total(),
            (1..=EvictionCause::ALL.len() as u64).sum::<u64>()
        );
    }
}
