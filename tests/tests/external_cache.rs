//! A cache implemented outside the core (as leakguard-py's Python caches are), registered with
//! `register_external`: the guard's process-wide `shrink_all` and `maintain_all` reach it. In
//! its own test binary because both act on every registered cache of the process.
#![allow(clippy::unwrap_used)]

use leakguard::cache::{
    self, CacheKind, CacheReport, CacheShrink, CapacityUnit, EvictionCounts, ExternalCache,
};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Holds `entries` entries of 64 bytes each and remembers what it was asked.
#[derive(Default)]
struct Probe {
    entries: AtomicU64,
    shrinks: Mutex<Vec<f64>>,
    maintained: AtomicU64,
}

impl ExternalCache for Probe {
    fn report(&self) -> CacheReport {
        let entries = self.entries.load(Relaxed);
        CacheReport {
            name: String::new(),
            kind: CacheKind::Lru,
            entries,
            weight: entries,
            capacity: 1000,
            capacity_unit: CapacityUnit::Entries,
            weight_bytes: entries * 64,
            weight_bytes_estimated: true,
            hits: 0,
            misses: 0,
            hit_ratio: None,
            inserts: entries,
            evictions: EvictionCounts::default(),
            ttl_seconds: None,
            time_to_idle_seconds: None,
            listener_panics: 0,
        }
    }

    fn shrink(&self, fraction: f64) -> CacheShrink {
        self.shrinks.lock().unwrap().push(fraction);
        let before = self.entries.load(Relaxed);
        let after = (before as f64 * fraction) as u64;
        self.entries.store(after, Relaxed);
        CacheShrink {
            name: String::new(),
            entries_evicted: before - after,
            weight_evicted: before - after,
            bytes_evicted: (before - after) * 64,
        }
    }

    fn maintain(&self, _budget: usize) {
        self.maintained.fetch_add(1, Relaxed);
    }
}

#[test]
fn shrink_all_and_maintain_all_reach_external_caches() {
    let probe = Arc::new(Probe::default());
    probe.entries.store(100, Relaxed);
    let as_dyn: Arc<dyn ExternalCache> = probe.clone();
    let registration = cache::register_external("external", Arc::downgrade(&as_dyn)).unwrap();

    let outcome = cache::shrink_all(0.25);
    assert_eq!(outcome.caches.len(), 1, "{outcome:?}");
    assert_eq!(outcome.caches[0].name, "external");
    assert_eq!(outcome.entries_evicted, 75);
    assert_eq!(outcome.bytes_evicted, 75 * 64);
    assert_eq!(*probe.shrinks.lock().unwrap(), vec![0.25]);
    let report = cache::report();
    assert_eq!(
        (report[0].name.as_str(), report[0].entries),
        ("external", 25)
    );

    cache::maintain_all();
    assert_eq!(probe.maintained.load(Relaxed), 1);

    drop(registration);
    assert!(cache::shrink_all(0.5).caches.is_empty());
    cache::maintain_all();
    assert_eq!(probe.maintained.load(Relaxed), 1);
    assert_eq!(*probe.shrinks.lock().unwrap(), vec![0.25]);
}
