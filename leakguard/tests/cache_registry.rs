//! The global registry of named caches: bounded, gone when the cache is dropped, and what the
//! guard reads (report, per-cache bytes, pressure shrinking). One test binary of its own, with
//! the tests serialized, because the registry is process-wide.
#![allow(clippy::unwrap_used)]

use leakguard::cache::{self, CacheKind, CapacityUnit, EvictionCause, LruCache, TtlCache};
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn names() -> Vec<String> {
    cache::report().into_iter().map(|r| r.name).collect()
}

#[test]
fn registry_is_bounded_and_counts_rejections() {
    let _s = serial();
    let already = names().len();
    let rejected_before = cache::rejected_registrations();
    let caches: Vec<LruCache<u32, u32>> = (0..cache::REGISTRY_CAPACITY + 10)
        .map(|i| LruCache::builder(10).name(format!("bounded-{i}")).build())
        .collect();
    let registered = caches.iter().filter(|c| c.name().is_some()).count();
    assert_eq!(registered, cache::REGISTRY_CAPACITY - already);
    assert_eq!(names().len(), cache::REGISTRY_CAPACITY);
    assert_eq!(
        cache::rejected_registrations() - rejected_before,
        (cache::REGISTRY_CAPACITY + 10 - registered) as u64
    );
    // Unregistered caches still work.
    let last = caches.last().unwrap();
    last.insert(1, 1);
    assert_eq!(last.get(&1), Some(1));
    drop(caches);
    assert_eq!(names().len(), already, "dropped caches leave the registry");
    // And room is available again.
    let again: LruCache<u32, u32> = LruCache::builder(1).name("bounded-again").build();
    assert_eq!(again.name(), Some("bounded-again"));
}

#[test]
fn a_cache_leaves_the_registry_when_its_last_handle_drops() {
    let _s = serial();
    let cache: TtlCache<u32, u32> = TtlCache::builder(10, Duration::from_secs(1))
        .name("vanishing")
        .build();
    let clone = cache.clone();
    assert!(names().contains(&"vanishing".to_owned()));
    drop(cache);
    assert!(
        names().contains(&"vanishing".to_owned()),
        "a clone keeps it"
    );
    drop(clone);
    assert!(!names().contains(&"vanishing".to_owned()));
}

#[test]
fn duplicate_names_get_suffixes_and_long_names_are_cut() {
    let _s = serial();
    let a: LruCache<u8, u8> = LruCache::builder(1).name("dup").build();
    let b: LruCache<u8, u8> = LruCache::builder(1).name("dup").build();
    let c: LruCache<u8, u8> = LruCache::builder(1).name("dup").build();
    assert_eq!(
        (a.name(), b.name(), c.name()),
        (Some("dup"), Some("dup-2"), Some("dup-3"))
    );
    let long: LruCache<u8, u8> = LruCache::builder(1).name("é".repeat(80)).build();
    let name = long.name().unwrap();
    assert!(
        name.len() <= 100 && name.chars().all(|c| c == 'é'),
        "{name}"
    );
}

#[test]
fn report_and_weight_by_cache_show_contents() {
    let _s = serial();
    let users: LruCache<u64, String> = LruCache::builder(1_000).name("report-users").build();
    let blobs: TtlCache<u64, Vec<u8>> = TtlCache::builder(1 << 20, Duration::from_secs(60))
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .name("report-blobs")
        .build();
    for k in 0..10 {
        users.insert(k, format!("user {k}"));
        blobs.insert(k, vec![0; 1_000]);
    }
    users.get(&1);
    users.get(&99);
    let reports = cache::report();
    let u = reports.iter().find(|r| r.name == "report-users").unwrap();
    assert_eq!(
        (u.kind, u.entries, u.weight, u.capacity),
        (CacheKind::Lru, 10, 10, 1_000)
    );
    assert_eq!(u.capacity_unit, CapacityUnit::Entries);
    assert_eq!((u.hits, u.misses, u.hit_ratio), (1, 1, Some(0.5)));
    assert!(u.weight_bytes_estimated);
    assert!(
        u.weight_bytes >= 10 * 32,
        "shallow size of 10 (u64, String)"
    );
    let b = reports.iter().find(|r| r.name == "report-blobs").unwrap();
    assert_eq!(
        (b.kind, b.weight, b.weight_bytes),
        (CacheKind::Ttl, 10_000, 10_000)
    );
    assert_eq!(b.capacity_unit, CapacityUnit::Weight);
    assert!(!b.weight_bytes_estimated);
    assert_eq!(b.ttl_seconds, Some(60.0));
    assert_eq!(b.hit_ratio, None);
    let json = serde_json::to_value(b).unwrap();
    assert_eq!(json["kind"], "ttl");
    assert_eq!(json["capacity_unit"], "weight");
    assert_eq!(json["evictions"]["pressure"], 0);
    let by_cache = cache::weight_by_cache();
    assert!(by_cache.contains(&("report-blobs".to_owned(), 10_000)));
}

#[test]
fn shrink_all_evicts_with_cause_pressure_and_reports_per_cache() {
    let _s = serial();
    let a: LruCache<u64, u64> = LruCache::builder(10_000).name("shrink-a").build();
    let b: LruCache<u64, Vec<u8>> = LruCache::builder(1 << 20)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .name("shrink-b")
        .build();
    let unnamed: LruCache<u64, u64> = LruCache::new(100);
    for k in 0..1_000 {
        a.insert(k, k);
    }
    for k in 0..100 {
        b.insert(k, vec![0; 100]);
        unnamed.insert(k, k);
    }
    let outcome = cache::shrink_all(0.5);
    let sa = outcome
        .caches
        .iter()
        .find(|s| s.name == "shrink-a")
        .unwrap();
    let sb = outcome
        .caches
        .iter()
        .find(|s| s.name == "shrink-b")
        .unwrap();
    assert!(a.len() <= 500 && sa.entries_evicted == 1_000 - a.len() as u64);
    assert!(b.weight() <= 5_000 && sb.bytes_evicted == 10_000 - b.weight());
    assert!(outcome.entries_evicted >= sa.entries_evicted + sb.entries_evicted);
    assert_eq!(
        a.stats().evictions.get(EvictionCause::Pressure),
        sa.entries_evicted
    );
    assert_eq!(unnamed.len(), 100, "only registered caches are shrunk");
}
