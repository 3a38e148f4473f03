//! Thread safety: `get_or_insert_with` computes once per key under concurrent misses, a
//! panicking computation neither poisons nor deadlocks, and mixed concurrent use keeps the
//! cache within its capacity with statistics that add up.
#![allow(clippy::unwrap_used)]

use leakguard::cache::{LruCache, TtlCache};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Runs `f` on another thread and fails the test instead of hanging if it does not finish.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: did not finish (deadlock?)"))
}

#[test]
fn caches_are_send_sync_and_clones_share_one_cache() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<LruCache<String, Vec<u8>>>();
    assert_send_sync::<TtlCache<u64, Arc<str>>>();
    let a = LruCache::new(10);
    let b = a.clone();
    a.insert(1, 1);
    assert_eq!(b.get(&1), Some(1));
}

#[test]
fn get_or_insert_with_computes_once_per_key_under_concurrent_misses() {
    within("get_or_insert_with", || {
        const THREADS: usize = 8;
        const KEYS: u64 = 200;
        let cache: LruCache<u64, u64> = LruCache::new(10_000);
        let computed: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, computed, barrier) = (cache.clone(), computed.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..KEYS {
                        // Threads walk the keys in different orders, so they collide.
                        let key = (i + t as u64 * 7) % KEYS;
                        let v = cache.get_or_insert_with(key, || {
                            computed[key as usize].fetch_add(1, Ordering::SeqCst);
                            // Widen the window in which others miss the same key.
                            for _ in 0..50 {
                                thread::yield_now();
                            }
                            key * 10
                        });
                        assert_eq!(v, key * 10);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for (key, n) in computed.iter().enumerate() {
            assert_eq!(
                n.load(Ordering::SeqCst),
                1,
                "key {key} computed more than once"
            );
        }
        let s = cache.stats();
        assert_eq!(s.inserts, KEYS);
        assert_eq!(s.hits + s.misses, (THREADS as u64) * KEYS);
    });
}

#[test]
fn a_panicking_init_does_not_poison_or_deadlock_waiters() {
    within("panicking init", || {
        let cache: LruCache<u32, u32> = LruCache::new(100);
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let first = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.get_or_insert_with(1, || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    panic!("init failed");
                })
            })
        };
        started_rx.recv().unwrap();
        let waiter = {
            let cache = cache.clone();
            thread::spawn(move || cache.get_or_insert_with(1, || 2))
        };
        // Let the waiter find the computation in flight (it counts a miss first).
        while cache.stats().misses < 2 {
            thread::yield_now();
        }
        for _ in 0..1_000 {
            thread::yield_now();
        }
        go_tx.send(()).unwrap();
        assert!(first.join().is_err(), "the panic reaches init's caller");
        assert_eq!(waiter.join().unwrap(), 2, "a waiter computes instead");
        assert_eq!(cache.get(&1), Some(2));
        assert_eq!(
            cache.get_or_insert_with(3, || 4),
            4,
            "the cache still works"
        );
    });
}

#[test]
fn an_init_that_reads_its_own_key_does_not_deadlock() {
    within("recursive init", || {
        let cache: LruCache<u32, u32> = LruCache::new(100);
        let inner = cache.clone();
        let v = cache.get_or_insert_with(1, move || inner.get_or_insert_with(1, || 5) + 1);
        assert_eq!(v, 6);
        assert_eq!(cache.get(&1), Some(6));
    });
}

#[test]
fn mixed_concurrent_use_stays_within_capacity_and_counts_add_up() {
    within("mixed use", || {
        const THREADS: u64 = 4;
        const OPS: u64 = 50_000;
        let cache: LruCache<u64, u64> = LruCache::builder(1_000)
            .weigher(|k: &u64, _: &u64| k % 3 + 1)
            .build();
        let gets = Arc::new(AtomicU64::new(0));
        let inserts = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, gets, inserts) = (cache.clone(), gets.clone(), inserts.clone());
                thread::spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..OPS {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = x % 3_000;
                        match x % 10 {
                            0..=5 => {
                                if let Some(v) = cache.get(&key) {
                                    assert_eq!(v % 3_000, key, "a value belongs to its key");
                                }
                                gets.fetch_add(1, Ordering::Relaxed);
                            }
                            6..=8 => {
                                cache.insert(key, key + 3_000 * t);
                                inserts.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                cache.remove(&key);
                            }
                        }
                        assert!(cache.weight() <= 1_000);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = cache.stats();
        assert_eq!(s.hits + s.misses, gets.load(Ordering::Relaxed));
        assert_eq!(s.inserts, inserts.load(Ordering::Relaxed));
        assert_eq!(
            s.inserts - s.evictions.replaced - s.evictions.capacity - s.evictions.explicit,
            cache.len() as u64,
            "every insert is still held or was reported leaving"
        );
        let keys: HashSet<u64> = (0..3_000).filter(|k| cache.contains_key(k)).collect();
        assert_eq!(keys.len(), cache.len());
    });
}
