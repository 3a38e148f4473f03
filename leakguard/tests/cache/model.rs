//! Property tests: random operation sequences against a model (a `HashMap` of what must be in
//! the cache). The eviction policy is approximate LRU (S3-FIFO), so the model does not predict
//! *which* entry is evicted; it checks instead that every entry leaving the cache is reported
//! to the listener with its exact key, value and a cause that fits (`Capacity` only when the
//! cache was over capacity, `Expired` only after the deadline, `Replaced` only for the key
//! being inserted, …), and that everything else is exact: each `get` returns the model's value,
//! `len` and `weight` match, the capacity is never exceeded, expiry happens exactly at the
//! deadline (`ManualClock`), and the statistics add up.
#![allow(clippy::unwrap_used)]

use leakguard::ManualClock;
use leakguard::cache::{EvictionCause, LruCache};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Get(u8),
    Remove(u8),
    GetOrInsert(u8),
    Contains(u8),
    Advance(u16),
    Maintain,
    Shrink(u8),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => any::<u8>().prop_map(|k| Op::Insert(k % 48)),
        30 => any::<u8>().prop_map(|k| Op::Get(k % 48)),
        6 => any::<u8>().prop_map(|k| Op::Remove(k % 48)),
        8 => any::<u8>().prop_map(|k| Op::GetOrInsert(k % 48)),
        5 => any::<u8>().prop_map(|k| Op::Contains(k % 48)),
        8 => (0u16..3000).prop_map(Op::Advance),
        3 => Just(Op::Maintain),
        2 => (0u8..=100).prop_map(Op::Shrink),
        1 => Just(Op::Clear),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Config {
    capacity: u64,
    weighted: bool,
    ttl_ms: Option<u64>,
    tti_ms: Option<u64>,
    shards: usize,
}

fn config() -> impl Strategy<Value = Config> {
    (
        1u64..40,
        any::<bool>(),
        prop::option::of(500u64..5000),
        prop::option::of(300u64..3000),
        prop_oneof![Just(1usize), Just(2), Just(4)],
    )
        .prop_map(|(capacity, weighted, ttl_ms, tti_ms, shards)| Config {
            capacity: if weighted { capacity * 3 } else { capacity },
            weighted,
            ttl_ms,
            tti_ms,
            shards,
        })
}

/// Weight of an entry in weighted configurations: 1 to 4, from the key.
fn weight_of(key: u8) -> u64 {
    u64::from(key % 4) + 1
}

#[derive(Debug, Clone, Copy)]
struct ModelEntry {
    value: u64,
    inserted_ms: u64,
    accessed_ms: u64,
}

struct Model {
    cfg: Config,
    now_ms: u64,
    map: HashMap<u8, ModelEntry>,
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: HashMap<EvictionCause, u64>,
}

impl Model {
    fn deadline(&self, e: &ModelEntry) -> u64 {
        let ttl = self.cfg.ttl_ms.map_or(u64::MAX, |t| e.inserted_ms + t);
        let tti = self.cfg.tti_ms.map_or(u64::MAX, |t| e.accessed_ms + t);
        ttl.min(tti)
    }
    fn live(&self, key: u8) -> Option<ModelEntry> {
        self.map
            .get(&key)
            .copied()
            .filter(|e| self.now_ms < self.deadline(e))
    }
    fn expired(&self, key: u8) -> bool {
        self.map
            .get(&key)
            .is_some_and(|e| self.now_ms >= self.deadline(e))
    }
    fn weight(&self) -> u64 {
        self.map
            .keys()
            .map(|&k| if self.cfg.weighted { weight_of(k) } else { 1 })
            .sum()
    }
}

type Log = Arc<Mutex<Vec<(u8, u64, EvictionCause)>>>;

fn run(cfg: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(0.0);
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let mut b = LruCache::builder(cfg.capacity)
        .shards(cfg.shards)
        .clock(Arc::new(clock.clone()))
        .eviction_listener(move |k: &u8, v: &u64, cause| {
            sink.lock().unwrap().push((*k, *v, cause));
        });
    if cfg.weighted {
        b = b.weigher(|k: &u8, _: &u64| weight_of(*k));
    }
    if let Some(t) = cfg.ttl_ms {
        b = b.ttl(Duration::from_millis(t));
    }
    if let Some(t) = cfg.tti_ms {
        b = b.time_to_idle(Duration::from_millis(t));
    }
    let cache = b.build();
    let mut m = Model {
        cfg,
        now_ms: 0,
        map: HashMap::new(),
        hits: 0,
        misses: 0,
        inserts: 0,
        evictions: HashMap::new(),
    };
    let mut next_value = 1u64;

    for op in ops {
        // The key an insert replaces: (key, old entry).
        let mut replacing: Option<(u8, ModelEntry)> = None;
        let mut over_capacity_allowed = false;
        let mut pressure_allowed = false;
        let mut explicit_allowed = None::<u8>;
        let mut clear = false;
        match op {
            Op::Insert(k) => {
                let v = next_value;
                next_value += 1;
                replacing = m.map.get(&k).map(|e| (k, *e));
                let w = if cfg.weighted { weight_of(k) } else { 1 };
                over_capacity_allowed = m.weight() - replacing.map_or(0, |_| w) + w > 0;
                cache.insert(k, v);
                m.inserts += 1;
                m.map.insert(
                    k,
                    ModelEntry {
                        value: v,
                        inserted_ms: m.now_ms,
                        accessed_ms: m.now_ms,
                    },
                );
            }
            Op::Get(k) => {
                let got = cache.get(&k);
                match m.live(k) {
                    Some(e) => {
                        prop_assert_eq!(got, Some(e.value), "get({}) at {} ms", k, m.now_ms);
                        m.hits += 1;
                        if let Some(e) = m.map.get_mut(&k) {
                            e.accessed_ms = m.now_ms;
                        }
                    }
                    None => {
                        prop_assert_eq!(got, None, "get({}) at {} ms", k, m.now_ms);
                        m.misses += 1;
                    }
                }
            }
            Op::Contains(k) => {
                prop_assert_eq!(cache.contains_key(&k), m.live(k).is_some());
            }
            Op::Remove(k) => {
                let got = cache.remove(&k);
                prop_assert_eq!(got, m.live(k).map(|e| e.value), "remove({})", k);
                explicit_allowed = Some(k);
            }
            Op::GetOrInsert(k) => {
                let v = next_value;
                next_value += 1;
                let got = cache.get_or_insert_with(k, || v);
                match m.live(k) {
                    Some(e) => {
                        prop_assert_eq!(got, e.value);
                        m.hits += 1;
                        if let Some(e) = m.map.get_mut(&k) {
                            e.accessed_ms = m.now_ms;
                        }
                    }
                    None => {
                        prop_assert_eq!(got, v);
                        m.misses += 1;
                        m.inserts += 1;
                        replacing = m.map.get(&k).map(|e| (k, *e));
                        over_capacity_allowed = true;
                        m.map.insert(
                            k,
                            ModelEntry {
                                value: v,
                                inserted_ms: m.now_ms,
                                accessed_ms: m.now_ms,
                            },
                        );
                    }
                }
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(u64::from(ms)));
                m.now_ms += u64::from(ms);
            }
            Op::Maintain => {
                cache.maintain();
                // Everything expired must be gone now.
                let expired: Vec<u8> = m.map.keys().copied().filter(|&k| m.expired(k)).collect();
                for k in &expired {
                    prop_assert!(
                        log.lock()
                            .unwrap()
                            .iter()
                            .any(|(lk, _, c)| lk == k && *c == EvictionCause::Expired),
                        "maintain() left expired key {} in the cache",
                        k
                    );
                }
            }
            Op::Shrink(pct) => {
                let before = cache.weight();
                let s = cache.shrink(f64::from(pct) / 100.0);
                prop_assert!(
                    cache.weight() <= (before as f64 * f64::from(pct) / 100.0).floor() as u64
                );
                prop_assert_eq!(s.weight_evicted, before - cache.weight());
                pressure_allowed = true;
            }
            Op::Clear => {
                cache.clear();
                clear = true;
            }
        }

        // Apply what the cache reported, checking that each report fits the model.
        let events: Vec<_> = std::mem::take(&mut *log.lock().unwrap());
        for (k, v, cause) in events {
            *m.evictions.entry(cause).or_default() += 1;
            if cause == EvictionCause::Replaced
                || (cause == EvictionCause::Expired
                    && replacing.is_some_and(|(rk, old)| rk == k && old.value == v))
            {
                let Some((rk, old)) = replacing.take() else {
                    return Err(TestCaseError::fail(format!("unexpected {cause:?} for {k}")));
                };
                prop_assert_eq!(
                    (rk, old.value),
                    (k, v),
                    "{:?} reports the replaced value",
                    cause
                );
                if cause == EvictionCause::Expired {
                    prop_assert!(
                        m.now_ms >= m.deadline(&old),
                        "replaced entry reported expired early"
                    );
                }
                continue;
            }
            let e = m.map.get(&k).copied();
            prop_assert_eq!(
                e.map(|e| e.value),
                Some(v),
                "{:?} reports key {} with a value the model does not hold",
                cause,
                k
            );
            match cause {
                EvictionCause::Capacity => {
                    prop_assert!(over_capacity_allowed, "capacity eviction outside an insert")
                }
                EvictionCause::Expired => prop_assert!(
                    m.expired(k),
                    "key {} reported expired before its deadline",
                    k
                ),
                EvictionCause::Explicit => prop_assert!(
                    clear || explicit_allowed == Some(k),
                    "explicit removal of {} not asked for",
                    k
                ),
                EvictionCause::Pressure => prop_assert!(pressure_allowed),
                other => return Err(TestCaseError::fail(format!("unexpected cause {other:?}"))),
            }
            m.map.remove(&k);
        }
        if let Some((k, old)) = replacing {
            // A replaced entry must have been reported (unless an identical key had none).
            prop_assert!(
                false,
                "replacing {} (value {}) was not reported",
                k,
                old.value
            );
        }

        // The cache now holds exactly the model's entries.
        prop_assert_eq!(cache.len(), m.map.len(), "len after {:?}", op);
        prop_assert_eq!(cache.weight(), m.weight(), "weight after {:?}", op);
        prop_assert!(cache.weight() <= cfg.capacity, "capacity exceeded");
        for k in 0..48u8 {
            prop_assert_eq!(
                cache.contains_key(&k),
                m.live(k).is_some(),
                "contains({}) after {:?}",
                k,
                op
            );
        }
        let stats = cache.stats();
        prop_assert_eq!(
            (stats.hits, stats.misses, stats.inserts),
            (m.hits, m.misses, m.inserts)
        );
        for cause in EvictionCause::ALL {
            prop_assert_eq!(
                stats.evictions.get(cause),
                m.evictions.get(&cause).copied().unwrap_or(0),
                "{:?}",
                cause
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn cache_matches_model_for_random_operations(cfg in config(), ops in prop::collection::vec(op(), 1..300)) {
        run(cfg, ops)?;
    }
}

#[test]
fn capacity_eviction_prefers_one_hit_entries_over_reused_ones() {
    // Approximate LRU: entries read again survive a stream of entries read once.
    let cache = LruCache::builder(100).shards(1).build();
    for k in 0..100u32 {
        cache.insert(k, k);
    }
    for _ in 0..3 {
        for k in 0..50u32 {
            assert_eq!(cache.get(&k), Some(k));
        }
    }
    for k in 1_000..1_500u32 {
        cache.insert(k, k);
    }
    let kept = (0..50u32).filter(|k| cache.contains_key(k)).count();
    assert!(
        kept >= 45,
        "only {kept} of 50 reused entries survived a scan of 500"
    );
    assert_eq!(cache.len(), 100);
}
