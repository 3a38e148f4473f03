//! The eviction listener sees every entry that leaves, with the right cause; weights bound
//! the cache; a misbehaving listener does not hurt the cache or its caller.
#![allow(clippy::unwrap_used)]

use leakguard::ManualClock;
use leakguard::cache::{EvictionCause, LruCache};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log<K, V> = Arc<Mutex<Vec<(K, V, EvictionCause)>>>;

fn logged<K, V>() -> (
    Log<K, V>,
    impl Fn(&K, &V, EvictionCause) + Send + Sync + 'static,
)
where
    K: Clone + Send + 'static,
    V: Clone + Send + 'static,
{
    let log: Log<K, V> = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (log, move |k: &K, v: &V, c| {
        sink.lock().unwrap().push((k.clone(), v.clone(), c))
    })
}

#[test]
fn listener_receives_each_cause() {
    let clock = ManualClock::new(0.0);
    let (log, listener) = logged::<u32, &'static str>();
    let cache = LruCache::builder(2)
        .ttl(Duration::from_secs(10))
        .clock(Arc::new(clock.clone()))
        .eviction_listener(listener)
        .build();
    cache.insert(1, "a");
    cache.insert(1, "b"); // Replaced
    assert_eq!(cache.remove(&1), Some("b")); // Explicit
    cache.insert(2, "c");
    cache.insert(3, "d");
    cache.insert(4, "e"); // Capacity: one of 2, 3
    clock.advance(Duration::from_secs(10));
    cache.maintain(); // Expired: the two left
    cache.insert(5, "f");
    cache.insert(6, "g");
    cache.shrink(0.0); // Pressure
    cache.insert(7, "h");
    cache.clear(); // Explicit
    let log = log.lock().unwrap().clone();
    let causes: Vec<EvictionCause> = log.iter().map(|e| e.2).collect();
    use EvictionCause::*;
    assert_eq!(
        causes,
        [
            Replaced, Explicit, Capacity, Expired, Expired, Pressure, Pressure, Explicit
        ]
    );
    assert_eq!(log[0], (1, "a", Replaced));
    assert_eq!(log[1], (1, "b", Explicit));
    assert!(matches!(log[2], (2, "c", Capacity) | (3, "d", Capacity)));
    assert_eq!(log[7], (7, "h", Explicit));
    let ev = cache.stats().evictions;
    assert_eq!(
        (
            ev.capacity,
            ev.expired,
            ev.explicit,
            ev.replaced,
            ev.pressure
        ),
        (1, 2, 2, 1, 2)
    );
}

#[test]
fn weigher_bounds_total_weight() {
    let (log, listener) = logged::<u32, String>();
    let cache = LruCache::builder(100)
        .weigher(|_: &u32, v: &String| v.len() as u64)
        .eviction_listener(listener)
        .build();
    for k in 0..100u32 {
        cache.insert(k, "x".repeat((k % 7 + 1) as usize));
        assert!(cache.weight() <= 100, "weight {} > 100", cache.weight());
    }
    let held: u64 = (0..100u32)
        .filter_map(|k| cache.get(&k))
        .map(|v| v.len() as u64)
        .sum();
    assert_eq!(held, cache.weight());
    assert!(cache.weight() > 50, "the cache is used: {}", cache.weight());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|e| e.2 == EvictionCause::Capacity)
    );
}

#[test]
fn an_entry_heavier_than_the_capacity_is_not_admitted() {
    let (log, listener) = logged::<u32, Vec<u8>>();
    let cache = LruCache::builder(1_000)
        .weigher(|_: &u32, v: &Vec<u8>| v.len() as u64)
        .shards(1)
        .eviction_listener(listener)
        .build();
    cache.insert(1, vec![0; 10]);
    cache.insert(1, vec![0; 5_000]);
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.weight(), 0);
    let log = log.lock().unwrap();
    assert_eq!(log[0].2, EvictionCause::Replaced);
    assert_eq!(log[0].1.len(), 10);
    assert_eq!(log[1].2, EvictionCause::Capacity);
    assert_eq!(log[1].1.len(), 5_000);
}

#[test]
fn zero_weight_counts_as_one() {
    let cache = LruCache::builder(3)
        .weigher(|_: &u32, _: &u32| 0)
        .shards(1)
        .build();
    for k in 0..10 {
        cache.insert(k, k);
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.weight(), 3);
}

#[test]
fn zero_capacity_cache_admits_nothing() {
    let cache = LruCache::new(0);
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().evictions.capacity, 1);
}

#[test]
fn shrink_evicts_to_the_fraction_with_cause_pressure() {
    let (log, listener) = logged::<u32, u32>();
    let cache = LruCache::builder(1_000).eviction_listener(listener).build();
    for k in 0..800 {
        cache.insert(k, k);
    }
    // The capacity is split over shards and the hasher is seeded per process, so a shard
    // that drew more than its share of keys may already have evicted a few.
    let before = cache.len() as u64;
    assert!(before > 700, "{before}");
    log.lock().unwrap().clear();
    let s = cache.shrink(0.25);
    assert!(cache.len() <= 200);
    assert_eq!(s.entries_evicted, before - cache.len() as u64);
    assert_eq!(s.weight_evicted, s.entries_evicted);
    assert!(s.bytes_evicted >= s.entries_evicted * 8, "shallow estimate");
    {
        let log = log.lock().unwrap();
        assert_eq!(log.len() as u64, s.entries_evicted);
        assert!(log.iter().all(|e| e.2 == EvictionCause::Pressure));
    }
    assert_eq!(cache.stats().evictions.pressure, s.entries_evicted);
    // Bad fractions are clamped, not a panic.
    assert_eq!(cache.shrink(f64::NAN).entries_evicted, 0);
    assert_eq!(cache.shrink(7.0).entries_evicted, 0);
    cache.shrink(-1.0);
    assert!(cache.is_empty());
}

#[test]
fn a_panicking_listener_is_contained() {
    let cache = LruCache::builder(1)
        .name("listener-panics")
        .eviction_listener(|_: &u32, _: &u32, _| panic!("listener bug"))
        .build();
    cache.insert(1, 1);
    cache.insert(2, 2); // evicts 1: the listener panics
    assert_eq!(cache.get(&2), Some(2));
    assert_eq!(cache.remove(&2), Some(2));
    let r = leakguard::cache::report();
    let mine = r.iter().find(|r| r.name == "listener-panics").unwrap();
    assert_eq!(mine.listener_panics, 2, "one eviction, one removal");
}

#[test]
fn the_listener_may_use_the_cache() {
    let slot: Arc<Mutex<Option<LruCache<u32, u32>>>> = Arc::new(Mutex::new(None));
    let inner = slot.clone();
    let cache = LruCache::builder(1)
        .eviction_listener(move |k: &u32, v: &u32, _| {
            if let Some(c) = inner.lock().unwrap().as_ref() {
                // Runs after the cache's lock is released: no deadlock.
                let _ = c.get(k);
                let _ = c.len();
                c.stats();
                let _ = v;
            }
        })
        .build();
    *slot.lock().unwrap() = Some(cache.clone());
    for k in 0..10 {
        cache.insert(k, k);
    }
    assert_eq!(cache.len(), 1);
    slot.lock().unwrap().take();
}

#[test]
fn debug_shows_the_shape_not_the_contents() {
    let cache: LruCache<u32, &str> = LruCache::builder(10).name("listener-debug").build();
    cache.insert(1, "secret");
    let text = format!("{cache:?}");
    assert!(text.contains("listener-debug"), "{text}");
    assert!(text.contains("len: 1"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    let builder = LruCache::<u32, u32>::builder(5).ttl(Duration::from_secs(1));
    assert!(format!("{builder:?}").contains("ttl: Some(1s)"));
}
