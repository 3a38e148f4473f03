//! Expiry with an injected `ManualClock` (no sleeping): exact deadlines for time to live and
//! time to idle, and memory actually freed: expired values are dropped by `maintain()`, by a
//! read that finds them, and by writes, without waiting for the entry to be overwritten.
#![allow(clippy::unwrap_used)]

use leakguard::ManualClock;
use leakguard::cache::{self, EvictionCause, LruCache, TtlCache};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A value that counts its drops.
#[derive(Debug)]
struct Tracked(Arc<AtomicUsize>);

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked(self.0.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn ttl_cache<V: Clone + Send + Sync + 'static>(
    capacity: u64,
    ttl: Duration,
) -> (TtlCache<u64, V>, ManualClock) {
    let clock = ManualClock::new(1_700_000_000.0);
    let cache = TtlCache::builder(capacity, ttl)
        .clock(Arc::new(clock.clone()))
        .build();
    (cache, clock)
}

#[test]
fn ttl_entry_expires_exactly_at_its_deadline() {
    let (cache, clock) = ttl_cache(100, Duration::from_secs(30));
    cache.insert(1, "one");
    clock.advance(Duration::from_secs(30) - Duration::from_nanos(1));
    assert_eq!(cache.get(&1), Some("one"));
    assert!(cache.contains_key(&1));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.get(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(
        cache.remove(&1),
        None,
        "an expired entry cannot be removed explicitly"
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[test]
fn replacing_a_value_restarts_its_time_to_live() {
    let (cache, clock) = ttl_cache(100, Duration::from_secs(10));
    cache.insert(1, 1);
    clock.advance(Duration::from_secs(8));
    cache.insert(1, 2);
    clock.advance(Duration::from_secs(8));
    assert_eq!(cache.get(&1), Some(2));
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.get(&1), None);
}

#[test]
fn reads_extend_time_to_idle_but_not_time_to_live() {
    let clock = ManualClock::new(0.0);
    let cache = LruCache::builder(100)
        .ttl(Duration::from_secs(60))
        .time_to_idle(Duration::from_secs(20))
        .clock(Arc::new(clock.clone()))
        .build();
    cache.insert("k", 1);
    cache.insert("idle", 2);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(19));
        assert_eq!(
            cache.get("k"),
            Some(1),
            "read within the idle time keeps it"
        );
    }
    // 60 s: the time to live ends it despite the reads.
    clock.advance(Duration::from_secs(3));
    assert_eq!(cache.get("k"), None);
    assert_eq!(cache.get("idle"), None, "never read: idle since 0 s");
}

#[test]
fn contains_key_does_not_reset_idle_time() {
    let clock = ManualClock::new(0.0);
    let cache = LruCache::builder(10)
        .time_to_idle(Duration::from_secs(5))
        .clock(Arc::new(clock.clone()))
        .build();
    cache.insert(1, 1);
    clock.advance(Duration::from_secs(4));
    assert!(cache.contains_key(&1));
    clock.advance(Duration::from_secs(1));
    assert!(!cache.contains_key(&1));
}

#[test]
fn maintain_drops_expired_values_and_reports_them() {
    let drops = Arc::new(AtomicUsize::new(0));
    let expired = Arc::new(Mutex::new(0usize));
    let seen = expired.clone();
    let clock = ManualClock::new(0.0);
    let cache = TtlCache::builder(10_000, Duration::from_secs(60))
        .clock(Arc::new(clock.clone()))
        .eviction_listener(move |_: &u64, _: &Tracked, cause| {
            assert_eq!(cause, EvictionCause::Expired);
            *seen.lock().unwrap() += 1;
        })
        .build();
    for k in 0..1_000 {
        cache.insert(k, Tracked(drops.clone()));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    clock.advance(Duration::from_secs(61));
    assert_eq!(cache.len(), 1_000, "held until reclaimed");
    cache.maintain();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1_000,
        "every expired value was dropped"
    );
    assert_eq!(*expired.lock().unwrap(), 1_000);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.weight(), 0);
    assert_eq!(cache.stats().evictions.expired, 1_000);
}

#[test]
fn maintain_finds_idle_entries_behind_recently_read_ones() {
    // Reads move time-to-idle deadlines without reordering the expiry queue; maintain()
    // must still reclaim every expired entry, not stop at the first live one.
    let drops = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new(0.0);
    let cache = LruCache::builder(1_000)
        .time_to_idle(Duration::from_secs(10))
        .clock(Arc::new(clock.clone()))
        .shards(1)
        .build();
    for k in 0..100u64 {
        cache.insert(k, Tracked(drops.clone()));
        clock.advance(Duration::from_millis(10));
    }
    for _ in 0..30 {
        clock.advance(Duration::from_secs(1));
        for k in (0..100u64).step_by(2) {
            assert!(cache.get(&k).is_some());
        }
    }
    // Odd keys have been idle for 30 s; even ones were read a moment ago.
    let before = drops.load(Ordering::SeqCst);
    cache.maintain();
    let dropped_by_maintain = drops.load(Ordering::SeqCst) - before;
    // The clones returned by get() were dropped already; maintain() drops the 50 odd ones.
    assert_eq!(dropped_by_maintain, 50);
    assert_eq!(cache.len(), 50);
    assert!((0..100u64).step_by(2).all(|k| cache.contains_key(&k)));
}

#[test]
fn a_read_that_finds_an_expired_entry_frees_it() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (cache, clock) = ttl_cache(100, Duration::from_secs(1));
    cache.insert(1, Tracked(drops.clone()));
    clock.advance(Duration::from_secs(1));
    assert!(cache.get(&1).is_none());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the expired value was dropped by the read"
    );
    assert_eq!(cache.len(), 0);
}

#[test]
fn writes_reclaim_expired_entries_without_maintain() {
    let drops = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new(0.0);
    let cache = TtlCache::builder(100_000, Duration::from_secs(5))
        .clock(Arc::new(clock.clone()))
        .shards(1)
        .build();
    for k in 0..1_000u64 {
        cache.insert(k, Tracked(drops.clone()));
    }
    clock.advance(Duration::from_secs(5));
    // Each write reclaims a bounded number of expired entries on its way.
    for k in 1_000..1_400u64 {
        cache.insert(k, Tracked(drops.clone()));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1_000);
    assert_eq!(cache.len(), 400);
}

#[test]
fn maintain_all_reclaims_registered_caches() {
    let drops = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new(0.0);
    let cache = TtlCache::builder(1_000, Duration::from_secs(5))
        .name("expiry-maintain-all")
        .clock(Arc::new(clock.clone()))
        .build();
    for k in 0..500u64 {
        cache.insert(k, Tracked(drops.clone()));
    }
    clock.advance(Duration::from_secs(6));
    cache::maintain_all();
    assert_eq!(drops.load(Ordering::SeqCst), 500);
    assert_eq!(cache.len(), 0);
}

#[test]
fn clear_drops_every_value() {
    let drops = Arc::new(AtomicUsize::new(0));
    let cache = LruCache::new(100);
    for k in 0..50u64 {
        cache.insert(k, Tracked(drops.clone()));
    }
    cache.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 50);
    assert!(cache.is_empty());
    cache.insert(1, Tracked(drops.clone()));
    assert_eq!(cache.len(), 1, "usable after clear");
}

#[test]
fn dropping_the_cache_drops_every_value() {
    let drops = Arc::new(AtomicUsize::new(0));
    let cache = LruCache::new(100);
    let handle = cache.clone();
    for k in 0..50u64 {
        cache.insert(k, Tracked(drops.clone()));
    }
    drop(cache);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "a clone still holds the cache"
    );
    drop(handle);
    assert_eq!(drops.load(Ordering::SeqCst), 50);
}
