//! Internal invariants of the shards under random operations, and the metric families.

use super::*;
use crate::ManualClock;
use crate::exposition::render;

/// xorshift64*: deterministic operation sequences without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn validate<K: Hash + Eq, V: Clone>(inner: &Inner<K, V>) {
    for shard in inner.shards.iter() {
        shard.0.read().validate(&inner.hasher);
    }
}

fn run_random_ops(cache: &LruCache<u64, u64>, clock: &ManualClock, seed: u64, ops: usize) {
    let mut rng = Rng(seed | 1);
    for i in 0..ops {
        let key = rng.below(300);
        match rng.below(100) {
            0..=39 => cache.insert(key, i as u64),
            40..=79 => {
                cache.get(&key);
            }
            80..=87 => {
                cache.remove(&key);
            }
            88..=91 => {
                cache.get_or_insert_with(key, || 7);
            }
            92..=95 => clock.advance(Duration::from_millis(rng.below(400))),
            96 => cache.maintain(),
            97 => {
                cache.shrink(0.5);
            }
            98 if rng.below(20) == 0 => cache.clear(),
            _ => {
                cache.contains_key(&key);
            }
        }
        validate(&cache.inner);
        assert!(cache.weight() <= cache.capacity());
    }
}

#[test]
fn shard_invariants_hold_under_random_operations() {
    for seed in 1..=6 {
        let clock = ManualClock::new(0.0);
        let plain = LruCache::builder(100).shards(2).build();
        run_random_ops(&plain, &clock, seed, 20_000);
        let weighted = LruCache::builder(400)
            .weigher(|k: &u64, _: &u64| k % 13)
            .shards(2)
            .build();
        run_random_ops(&weighted, &clock, seed, 20_000);
        let expiring = LruCache::builder(150)
            .ttl(Duration::from_secs(5))
            .time_to_idle(Duration::from_secs(2))
            .clock(Arc::new(clock.clone()))
            .build();
        run_random_ops(&expiring, &clock, seed, 20_000);
    }
}

#[test]
fn shards_are_512_bytes_apart_whatever_the_entry_types() {
    // The shard of a hash is found by a shift; a field that pushed a shard past 512 bytes
    // would double the stride (and waste half of it).
    assert_eq!(std::mem::size_of::<ShardLock<u64, u64>>(), 512);
    assert_eq!(std::mem::size_of::<ShardLock<String, Vec<u8>>>(), 512);
    assert_eq!(std::mem::size_of::<ShardLock<(), ()>>(), 512);
}

#[test]
fn hits_and_misses_are_counted_across_shards_and_threads() {
    let cache: LruCache<u64, u64> = LruCache::builder(10_000).shards(8).build();
    for k in 0..1_000 {
        cache.insert(k, k);
    }
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let cache = &cache;
            s.spawn(move || {
                for k in 0..2_000u64 {
                    assert_eq!(cache.get(&k).is_some(), k < 1_000, "thread {t} key {k}");
                }
            });
        }
    });
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (4_000, 4_000));
}

#[test]
fn storage_shrinks_after_most_entries_leave() {
    let cache = LruCache::builder(100_000).shards(1).build();
    for i in 0..100_000u64 {
        cache.insert(i, i);
    }
    let full = cache.inner.shards[0].0.read().overhead_bytes();
    for i in 0..99_000u64 {
        cache.remove(&i);
    }
    validate(&cache.inner);
    let after = cache.inner.shards[0].0.read().overhead_bytes();
    assert!(after * 10 < full, "overhead {after} after vs {full} full");
}

#[test]
fn rings_give_back_storage_as_entries_move_between_them() {
    // A fill puts every entry in the small ring; evictions then drain it to about a tenth
    // (entries read while there move to the main ring), one eviction per insert, so the
    // small ring is trimmed by the periodic check, not by a mass removal.
    let cache = LruCache::builder(8_192).shards(1).build();
    for i in 0..8_192u64 {
        cache.insert(i, i);
        cache.get(&i);
    }
    let [(small, small_cap), ..] = cache.inner.shards[0].0.read().rings();
    assert_eq!((small, small_cap), (8_192, 8_192));
    for i in 1_000_000..1_020_000u64 {
        cache.insert(i, i);
    }
    validate(&cache.inner);
    let rings = cache.inner.shards[0].0.read().rings();
    for (len, cap) in rings {
        assert!(
            cap <= 64 || cap <= 4 * len,
            "rings (len, capacity): {rings:?}"
        );
    }
    assert!(rings[0].1 < 8_192, "the small ring was trimmed: {rings:?}");
}

#[test]
fn full_cache_overhead_per_entry_is_small() {
    let cache = LruCache::builder(1 << 16).shards(1).build();
    for i in 0..(1u64 << 17) {
        cache.insert(i, i);
        if i % 3 == 0 {
            cache.get(&(i / 2));
        }
    }
    let s = cache.inner.shards[0].0.read();
    let per_entry = s.overhead_bytes() as f64 / s.len() as f64;
    assert!(
        per_entry < 32.0,
        "{per_entry} bytes of overhead per entry: {}",
        s.overhead_breakdown()
    );
}

#[test]
fn metric_families_cover_registered_caches_with_bounded_labels() {
    let cache: LruCache<u32, u32> = LruCache::builder(10).name("unit \"quoted\"").build();
    cache.insert(1, 1);
    cache.get(&1);
    cache.get(&2);
    let weighted: LruCache<u32, Vec<u8>> = LruCache::builder(1 << 20)
        .weigher(|_, v: &Vec<u8>| v.len() as u64)
        .name("unit-bytes")
        .build();
    weighted.insert(1, vec![0; 1000]);
    let fams = families();
    let text = render(&fams);
    assert!(text.contains("leakguard_cache_entries{cache=\"unit \\\"quoted\\\"\"} 1\n"));
    assert!(text.contains("leakguard_cache_hits_total{cache=\"unit \\\"quoted\\\"\"} 1\n"));
    assert!(text.contains("leakguard_cache_misses_total{cache=\"unit \\\"quoted\\\"\"} 1\n"));
    assert!(text.contains("leakguard_cache_capacity_entries{cache=\"unit \\\"quoted\\\"\"} 10\n"));
    assert!(text.contains("leakguard_cache_capacity_bytes{cache=\"unit-bytes\"} 1048576\n"));
    assert!(text.contains("leakguard_cache_weight_bytes{cache=\"unit-bytes\"} 1000\n"));
    assert!(
        text.contains(
            "leakguard_cache_evictions_total{cache=\"unit-bytes\",cause=\"pressure\"} 0\n"
        )
    );
    for f in &fams {
        assert!(f.name.starts_with("leakguard_cache"));
        assert_eq!(
            f.kind == Kind::Counter,
            f.name.ends_with("_total"),
            "{}",
            f.name
        );
    }
}

use crate::exposition::Kind;

#[test]
fn a_weigher_that_uses_its_own_cache_does_not_deadlock_get_or_insert_with() {
    let cell: Arc<std::sync::OnceLock<LruCache<u32, u32>>> = Arc::default();
    let seen = Arc::clone(&cell);
    let cache = LruCache::builder(100)
        .weigher(move |_k: &u32, v: &u32| {
            // The weigher runs outside the shard's lock: touching the cache is fine.
            if let Some(c) = seen.get() {
                let _ = c.len();
                let _ = c.get(&0);
            }
            u64::from(*v)
        })
        .build();
    assert!(cell.set(cache.clone()).is_ok());
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let v = cache.get_or_insert_with(1, || 5);
        let _ = done.send((v, cache.weight()));
    });
    let (value, weight) = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("get_or_insert_with deadlocked on its weigher");
    assert_eq!((value, weight), (5, 5));
}
