//! The global registry of named caches: bounded, weakly held (a cache leaves it when its last
//! handle is dropped), and what the guard reads for its report, `/metrics`, leak attribution,
//! pressure shrinking and expiry maintenance.

use super::{CacheStats, EvictionCause};
use crate::exposition::{Families, Family, Kind, Labels};
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

/// The most caches registered at once; further named caches work but are not registered.
pub const REGISTRY_CAPACITY: usize = 256;
/// Longest registered name, in bytes.
const NAME_MAX: usize = 100;
/// Expired entries reclaimed per shard by one [`maintain_all`] (bounds the sampler's tick).
const MAINTAIN_BUDGET: usize = 16_384;

/// What the registry needs from a cache, whatever its key and value types.
pub(crate) trait Registered: Send + Sync {
    fn report(&self) -> CacheReport;
    fn shrink(&self, fraction: f64) -> CacheShrink;
    fn maintain(&self, budget: usize);
}

/// A cache that lives outside this crate (for example the Python caches of leakguard-py) and
/// takes part in the registry like [`LruCache`](super::LruCache) and
/// [`TtlCache`](super::TtlCache): it appears in [`report`] and in `/metrics`
/// (`leakguard_cache_*{cache="…"}`), is shrunk by [`shrink_all`] under memory pressure and
/// maintained by [`maintain_all`] on the guard's tick. Register it with [`register_external`].
///
/// The guard calls these methods from its own thread, and other callers may hold locks of
/// their own: an implementation must not wait for long (give up and do nothing rather than
/// block on a lock a caller could hold), must not call back into the registry, and must not
/// panic. The name it puts in [`CacheReport::name`] and [`CacheShrink::name`] is replaced by
/// the registered one.
///
/// ```
/// use leakguard::cache::{self, CacheKind, CacheReport, CacheShrink, CapacityUnit, ExternalCache};
/// use std::sync::Arc;
///
/// struct Fixed;
/// impl ExternalCache for Fixed {
///     fn report(&self) -> CacheReport {
///         CacheReport {
///             name: String::new(),
///             kind: CacheKind::Lru,
///             entries: 3,
///             weight: 3,
///             capacity: 10,
///             capacity_unit: CapacityUnit::Entries,
///             weight_bytes: 300,
///             weight_bytes_estimated: true,
///             hits: 0,
///             misses: 0,
///             hit_ratio: None,
///             inserts: 3,
///             evictions: Default::default(),
///             ttl_seconds: None,
///             time_to_idle_seconds: None,
///             listener_panics: 0,
///         }
///     }
///     fn shrink(&self, _fraction: f64) -> CacheShrink {
///         CacheShrink { name: String::new(), entries_evicted: 0, weight_evicted: 0, bytes_evicted: 0 }
///     }
/// }
///
/// let fixed: Arc<dyn ExternalCache> = Arc::new(Fixed);
/// let registration = cache::register_external("doc-external", Arc::downgrade(&fixed)).unwrap();
/// assert_eq!(registration.name(), "doc-external");
/// let r = cache::report().into_iter().find(|r| r.name == "doc-external").unwrap();
/// assert_eq!(r.entries, 3);
/// drop(registration);
/// assert!(cache::report().iter().all(|r| r.name != "doc-external"));
/// ```
pub trait ExternalCache: Send + Sync {
    /// The cache's state now.
    fn report(&self) -> CacheReport;
    /// Evicts down to `fraction` (0 to 1) of the current weight, counting the evictions as
    /// [`EvictionCause::Pressure`](super::EvictionCause::Pressure); returns what went.
    fn shrink(&self, fraction: f64) -> CacheShrink;
    /// Reclaims expired entries, looking at no more than about `budget` of them. The default
    /// does nothing.
    fn maintain(&self, budget: usize) {
        let _ = budget;
    }
}

/// Keeps a cache registered by [`register_external`]; dropping it unregisters the cache.
#[derive(Debug)]
pub struct Registration {
    id: u64,
    name: String,
}

impl Registration {
    /// The name the cache got: the one asked for, truncated to 100 bytes, with `-2`, `-3`, …
    /// appended when another registered cache already has it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        unregister(self.id);
    }
}

/// Registers a cache implemented outside this crate under `name` (see [`ExternalCache`]).
///
/// The registry holds it weakly: it leaves the registry when the returned [`Registration`] is
/// dropped, and is skipped once the last strong reference to it is gone. Returns `None` when
/// [`REGISTRY_CAPACITY`] caches are registered already (counted in
/// [`rejected_registrations`]); the cache works on, unregistered.
pub fn register_external(name: &str, cache: Weak<dyn ExternalCache>) -> Option<Registration> {
    register_held(name, Held::External(cache)).map(|(id, name)| Registration { id, name })
}

/// How the registry holds a cache.
enum Held {
    Core(Weak<dyn Registered>),
    External(Weak<dyn ExternalCache>),
}

/// A registered cache, alive while it is used.
enum Live {
    Core(Arc<dyn Registered>),
    External(String, Arc<dyn ExternalCache>),
}

impl Live {
    fn report(&self) -> CacheReport {
        match self {
            Live::Core(c) => c.report(),
            Live::External(name, c) => CacheReport {
                name: name.clone(),
                ..c.report()
            },
        }
    }

    fn shrink(&self, fraction: f64) -> CacheShrink {
        match self {
            Live::Core(c) => c.shrink(fraction),
            Live::External(name, c) => CacheShrink {
                name: name.clone(),
                ..c.shrink(fraction)
            },
        }
    }

    fn maintain(&self, budget: usize) {
        match self {
            Live::Core(c) => c.maintain(budget),
            Live::External(_, c) => c.maintain(budget),
        }
    }
}

struct Entry {
    id: u64,
    name: String,
    cache: Held,
}

struct Registry {
    entries: Vec<Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REJECTED: AtomicU64 = AtomicU64::new(0);

fn truncate(name: &str) -> &str {
    if name.len() <= NAME_MAX {
        return name;
    }
    let mut end = NAME_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Registers a cache; returns its id and the name it got, or `None` when the registry is full.
pub(super) fn register(name: &str, cache: Weak<dyn Registered>) -> Option<(u64, String)> {
    register_held(name, Held::Core(cache))
}

fn register_held(name: &str, cache: Held) -> Option<(u64, String)> {
    static FORK_SAFE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    crate::fork::install(crate::fork::Source::Caches, fork_locks, &FORK_SAFE);
    let mut reg = REGISTRY.lock();
    if reg.entries.len() >= REGISTRY_CAPACITY {
        drop(reg);
        REJECTED.fetch_add(1, Relaxed);
        return None;
    }
    let base = truncate(name);
    let mut unique = base.to_owned();
    let mut n = 2;
    while reg.entries.iter().any(|e| e.name == unique) {
        unique = format!("{base}-{n}");
        n += 1;
    }
    let id = NEXT_ID.fetch_add(1, Relaxed);
    reg.entries.push(Entry {
        id,
        name: unique.clone(),
        cache,
    });
    Some((id, unique))
}

/// The registry's lock, taken around a fork (see [`crate::fork`]).
fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&REGISTRY);
}

/// Held (shared) while the registry calls into caches ([`report`], [`shrink_all`],
/// [`maintain_all`]): taken exclusively before a fork, so that no fork happens while the
/// guard's thread is inside a cache, holding a lock of the cache's own (an [`ExternalCache`]'s
/// lock, which a fork does not take). Fair: a fork waiting for it holds back new calls.
static CALLS: parking_lot::RwLock<()> = parking_lot::RwLock::new(());

fn calls_fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&CALLS);
}

/// Runs `f` on the live registered caches inside the [`CALLS`] section.
fn with_live<R>(f: impl FnOnce(&[Live]) -> R) -> R {
    static FORK_SAFE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    crate::fork::install(
        crate::fork::Source::CacheCalls,
        calls_fork_locks,
        &FORK_SAFE,
    );
    let _calls = CALLS.read();
    let live = live();
    let r = f(&live);
    // Dropped inside the section: the last handle of a cache may be one of these.
    drop(live);
    r
}

impl<K, V> crate::fork::ForkObject for super::Inner<K, V>
where
    K: Send + Sync,
    V: Send + Sync,
{
    /// Every shard's lock, in order (no thread holds two of them).
    fn fork_locks<'a>(&'a self, out: &mut Vec<&'a dyn crate::fork::ForkLock>) {
        out.extend(
            self.shards
                .iter()
                .map(|s| &s.0.lock as &dyn crate::fork::ForkLock),
        );
    }
}

/// Makes a cache's shard locks safe across fork (named or not): before every fork they are
/// taken, after it released in parent and child, so a child can use a cache made in the
/// parent.
pub(super) fn make_fork_safe<K, V>(cache: &Arc<super::Inner<K, V>>)
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let weak: Weak<dyn crate::fork::ForkObject> = Arc::downgrade(cache) as _;
    crate::fork::register(crate::fork::Tier::Cache, weak);
}

pub(super) fn unregister(id: u64) {
    REGISTRY.lock().entries.retain(|e| e.id != id);
}

/// The live registered caches, upgraded under the lock and used after it is released (so a
/// cache dropped meanwhile unregisters without deadlock).
fn live() -> Vec<Live> {
    let reg = REGISTRY.lock();
    reg.entries
        .iter()
        .filter_map(|e| match &e.cache {
            Held::Core(c) => c.upgrade().map(Live::Core),
            Held::External(c) => c.upgrade().map(|c| Live::External(e.name.clone(), c)),
        })
        .collect()
}

/// Which type a cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheKind {
    /// An [`LruCache`](super::LruCache).
    Lru,
    /// A [`TtlCache`](super::TtlCache).
    Ttl,
}

/// What a cache's capacity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityUnit {
    /// Entries (no weigher).
    Entries,
    /// The weigher's unit (by convention bytes).
    Weight,
}

/// Evictions by cause.
///
/// ```
/// use leakguard::cache::{EvictionCause, LruCache};
/// let cache = LruCache::new(10);
/// cache.insert(1, 1);
/// cache.remove(&1);
/// let ev = cache.stats().evictions;
/// assert_eq!(ev.get(EvictionCause::Explicit), 1);
/// assert_eq!(ev.total(), 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EvictionCounts {
    /// To stay within the capacity.
    pub capacity: u64,
    /// Expired.
    pub expired: u64,
    /// Removed or cleared.
    pub explicit: u64,
    /// Replaced by a new value.
    pub replaced: u64,
    /// Shrunk under memory pressure.
    pub pressure: u64,
}

impl EvictionCounts {
    pub(super) fn from_array(a: [u64; EvictionCause::COUNT]) -> Self {
        Self {
            capacity: a[0],
            expired: a[1],
            explicit: a[2],
            replaced: a[3],
            pressure: a[4],
        }
    }

    /// The count for one cause.
    ///
    /// ```
    /// use leakguard::cache::{EvictionCause, EvictionCounts};
    /// let ev = EvictionCounts { expired: 3, ..Default::default() };
    /// assert_eq!(ev.get(EvictionCause::Expired), 3);
    /// ```
    pub fn get(&self, cause: EvictionCause) -> u64 {
        match cause {
            EvictionCause::Capacity => self.capacity,
            EvictionCause::Expired => self.expired,
            EvictionCause::Explicit => self.explicit,
            EvictionCause::Replaced => self.replaced,
            EvictionCause::Pressure => self.pressure,
        }
    }

    /// All causes together.
    ///
    /// ```
    /// use leakguard::cache::EvictionCounts;
    /// let ev = EvictionCounts { capacity: 2, pressure: 1, ..Default::default() };
    /// assert_eq!(ev.total(), 3);
    /// ```
    pub fn total(&self) -> u64 {
        self.capacity + self.expired + self.explicit + self.replaced + self.pressure
    }
}

/// One registered cache, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheReport {
    /// The registered name.
    pub name: String,
    /// `lru` or `ttl`.
    pub kind: CacheKind,
    /// Entries held.
    pub entries: u64,
    /// Weight held (entries without a weigher).
    pub weight: u64,
    /// The capacity, in `capacity_unit`.
    pub capacity: u64,
    /// `entries`, or `weight` (the weigher's unit, by convention bytes).
    pub capacity_unit: CapacityUnit,
    /// Bytes held: the weight with a weigher; without one, an estimate from the entries'
    /// shallow size (keys, values and bookkeeping, not what they point to).
    pub weight_bytes: u64,
    /// Whether `weight_bytes` is the shallow estimate.
    pub weight_bytes_estimated: bool,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Hits over lookups; `null` before the first lookup.
    pub hit_ratio: Option<f64>,
    /// Inserts and replacements.
    pub inserts: u64,
    /// Evictions by cause.
    pub evictions: EvictionCounts,
    /// Time to live, seconds.
    pub ttl_seconds: Option<f64>,
    /// Time to idle, seconds.
    pub time_to_idle_seconds: Option<f64>,
    /// Panics caught in the cache's eviction listener.
    pub listener_panics: u64,
}

impl CacheReport {
    /// The counters as [`CacheStats`].
    ///
    /// ```
    /// use leakguard::cache::{self, LruCache};
    /// let c: LruCache<u8, u8> = LruCache::builder(8).name("doc-report-stats").build();
    /// c.insert(1, 1);
    /// let r = cache::report().into_iter().find(|r| r.name == "doc-report-stats").unwrap();
    /// assert_eq!(r.stats().inserts, 1);
    /// ```
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            inserts: self.inserts,
            evictions: self.evictions,
        }
    }
}

/// What one cache gave back when shrunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheShrink {
    /// The cache's registered name (empty for an unregistered cache).
    pub name: String,
    /// Entries evicted.
    pub entries_evicted: u64,
    /// Weight evicted.
    pub weight_evicted: u64,
    /// Bytes evicted (the weight with a weigher, else the shallow estimate).
    pub bytes_evicted: u64,
}

/// What [`shrink_all`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShrinkOutcome {
    /// Per registered cache.
    pub caches: Vec<CacheShrink>,
    /// Entries evicted, all caches.
    pub entries_evicted: u64,
    /// Bytes evicted, all caches (see [`CacheShrink::bytes_evicted`]).
    pub bytes_evicted: u64,
}

/// Every registered cache, sorted by name.
///
/// ```
/// use leakguard::cache::{self, CacheKind, LruCache};
///
/// let c: LruCache<u32, u32> = LruCache::builder(100).name("doc-report").build();
/// c.insert(1, 10);
/// let r = cache::report().into_iter().find(|r| r.name == "doc-report").unwrap();
/// assert_eq!((r.kind, r.entries, r.capacity), (CacheKind::Lru, 1, 100));
/// drop(c);
/// assert!(cache::report().iter().all(|r| r.name != "doc-report"));
/// ```
pub fn report() -> Vec<CacheReport> {
    let mut reports: Vec<CacheReport> = with_live(|live| live.iter().map(|c| c.report()).collect());
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    reports
}

/// Named caches that could not be registered because [`REGISTRY_CAPACITY`] were already.
///
/// ```
/// let _ = leakguard::cache::rejected_registrations();
/// ```
pub fn rejected_registrations() -> u64 {
    REJECTED.load(Relaxed)
}

/// Asks every registered cache to shrink to `fraction` (0 to 1) of its current weight,
/// evicting with cause [`EvictionCause::Pressure`]; what the guard does at the critical
/// threshold before it considers a restart.
///
/// ```no_run
/// // Not run as a doctest: it shrinks every registered cache in the process.
/// use leakguard::cache::{self, LruCache};
///
/// let c: LruCache<u32, u32> = LruCache::builder(100).name("doc-shrink").build();
/// for i in 0..10 { c.insert(i, i); }
/// let outcome = cache::shrink_all(0.5);
/// let mine = outcome.caches.iter().find(|s| s.name == "doc-shrink").unwrap();
/// assert_eq!(mine.entries_evicted, 5);
/// assert_eq!(c.stats().evictions.pressure, 5);
/// ```
pub fn shrink_all(fraction: f64) -> ShrinkOutcome {
    let mut outcome = ShrinkOutcome::default();
    with_live(|live| {
        for cache in live {
            let s = cache.shrink(fraction);
            outcome.entries_evicted += s.entries_evicted;
            outcome.bytes_evicted += s.bytes_evicted;
            outcome.caches.push(s);
        }
    });
    outcome.caches.sort_by(|a, b| a.name.cmp(&b.name));
    outcome
}

/// Reclaims expired entries in every registered cache (bounded work per cache and shard);
/// the guard's sampler calls it on every tick.
///
/// ```
/// leakguard::cache::maintain_all();
/// ```
pub fn maintain_all() {
    with_live(|live| {
        for cache in live {
            cache.maintain(MAINTAIN_BUDGET);
        }
    });
}

/// Bytes held per registered cache (see [`CacheReport::weight_bytes`]), for attributing
/// memory growth to caches.
///
/// ```
/// use leakguard::cache::{self, LruCache};
/// let c: LruCache<u64, u64> = LruCache::builder(100).name("doc-weight").build();
/// c.insert(1, 1);
/// let (_, bytes) = cache::weight_by_cache().into_iter().find(|(n, _)| n == "doc-weight").unwrap();
/// assert!(bytes >= 16);
/// ```
pub fn weight_by_cache() -> Vec<(String, u64)> {
    report()
        .into_iter()
        .map(|r| (r.name, r.weight_bytes))
        .collect()
}

fn series(
    reports: &[CacheReport],
    value: impl Fn(&CacheReport) -> Option<f64>,
) -> Vec<(Labels, f64)> {
    reports
        .iter()
        .filter_map(|r| value(r).map(|v| (vec![("cache", r.name.clone())], v)))
        .collect()
}

/// The `leakguard_cache_*` metric families: one series per registered cache (at most
/// [`REGISTRY_CAPACITY`], so label cardinality is bounded).
pub(crate) fn families() -> Vec<Family> {
    let reports = report();
    let n = |v: u64| v as f64;
    let mut out = Families::default();
    out.add(
        "leakguard_cache_entries",
        "Entries held by the cache.",
        Kind::Gauge,
        series(&reports, |r| Some(n(r.entries))),
    );
    out.add(
        "leakguard_cache_weight_bytes",
        "Bytes held by the cache: its weigher's total, or a shallow estimate without one.",
        Kind::Gauge,
        series(&reports, |r| Some(n(r.weight_bytes))),
    );
    out.add(
        "leakguard_cache_capacity_entries",
        "Capacity of a cache bounded by entries.",
        Kind::Gauge,
        series(&reports, |r| {
            (r.capacity_unit == CapacityUnit::Entries).then(|| n(r.capacity))
        }),
    );
    out.add(
        "leakguard_cache_capacity_bytes",
        "Capacity of a cache bounded by weight (its weigher's unit, by convention bytes).",
        Kind::Gauge,
        series(&reports, |r| {
            (r.capacity_unit == CapacityUnit::Weight).then(|| n(r.capacity))
        }),
    );
    out.add(
        "leakguard_cache_hits_total",
        "Cache lookups that found a live entry.",
        Kind::Counter,
        series(&reports, |r| Some(n(r.hits))),
    );
    out.add(
        "leakguard_cache_misses_total",
        "Cache lookups that found nothing or an expired entry.",
        Kind::Counter,
        series(&reports, |r| Some(n(r.misses))),
    );
    out.add(
        "leakguard_cache_inserts_total",
        "Cache inserts and replacements.",
        Kind::Counter,
        series(&reports, |r| Some(n(r.inserts))),
    );
    out.add(
        "leakguard_cache_evictions_total",
        "Entries that left the cache, by cause.",
        Kind::Counter,
        reports
            .iter()
            .flat_map(|r| {
                EvictionCause::ALL.into_iter().map(|c| {
                    (
                        vec![("cache", r.name.clone()), ("cause", c.as_str().to_owned())],
                        n(r.evictions.get(c)),
                    )
                })
            })
            .collect(),
    );
    out.add(
        "leakguard_cache_registrations_rejected_total",
        "Named caches not registered because the registry was full.",
        Kind::Counter,
        vec![(Vec::new(), n(rejected_registrations()))],
    );
    out.into_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod external_tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// An external cache that remembers what the registry asked of it.
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
                name: "ignored".into(),
                kind: CacheKind::Ttl,
                entries,
                weight: entries,
                capacity: 100,
                capacity_unit: CapacityUnit::Entries,
                weight_bytes: entries * 64,
                weight_bytes_estimated: true,
                hits: 7,
                misses: 1,
                hit_ratio: Some(7.0 / 8.0),
                inserts: entries,
                evictions: EvictionCounts::default(),
                ttl_seconds: Some(30.0),
                time_to_idle_seconds: None,
                listener_panics: 0,
            }
        }

        fn shrink(&self, fraction: f64) -> CacheShrink {
            self.shrinks.lock().push(fraction);
            let before = self.entries.load(Relaxed);
            let after = (before as f64 * fraction) as u64;
            self.entries.store(after, Relaxed);
            CacheShrink {
                name: "ignored".into(),
                entries_evicted: before - after,
                weight_evicted: before - after,
                bytes_evicted: (before - after) * 64,
            }
        }

        fn maintain(&self, budget: usize) {
            assert_eq!(budget, MAINTAIN_BUDGET);
            self.maintained.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn external_caches_are_reported_and_unregistered() {
        let probe = Arc::new(Probe::default());
        probe.entries.store(10, Relaxed);
        let weak: Weak<dyn ExternalCache> =
            Arc::downgrade(&(probe.clone() as Arc<dyn ExternalCache>));
        let reg = register_external("ext-probe", weak.clone()).unwrap();
        let twin = register_external("ext-probe", weak).unwrap();
        assert_eq!(reg.name(), "ext-probe");
        assert_eq!(twin.name(), "ext-probe-2");

        let mine: Vec<CacheReport> = report()
            .into_iter()
            .filter(|r| r.name.starts_with("ext-probe"))
            .collect();
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0].name, "ext-probe");
        assert_eq!((mine[0].kind, mine[0].entries), (CacheKind::Ttl, 10));
        drop(twin);

        let text = crate::exposition::render(&families());
        assert!(
            text.contains("leakguard_cache_entries{cache=\"ext-probe\"} 10"),
            "{text}"
        );
        assert!(!text.contains("ext-probe-2"), "{text}");

        // shrink_all and maintain_all reach every cache in the process: they are tested in
        // their own process (leakguard-tests, tests/external_cache.rs).
        assert_eq!(
            Live::External("x".into(), probe.clone()).shrink(0.5).name,
            "x"
        );
        assert_eq!(probe.entries.load(Relaxed), 5);
        Live::External("x".into(), probe.clone()).maintain(MAINTAIN_BUDGET);
        assert_eq!(probe.maintained.load(Relaxed), 1);

        drop(reg);
        assert!(report().iter().all(|r| !r.name.starts_with("ext-probe")));
    }

    #[test]
    fn an_external_cache_dropped_while_registered_is_skipped() {
        let probe: Arc<dyn ExternalCache> = Arc::new(Probe::default());
        let reg = register_external("ext-gone", Arc::downgrade(&probe)).unwrap();
        assert!(report().iter().any(|r| r.name == "ext-gone"));
        let weak = Arc::downgrade(&probe);
        drop(probe);
        // A report running on another test's thread may hold the probe for a moment after
        // this drop (it upgrades every registered cache); the probe is gone once it lets go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the probe outlived its owner"
            );
            std::thread::yield_now();
        }
        assert!(report().iter().all(|r| r.name != "ext-gone"));
        drop(reg);
    }
}
