//! Bounded caches that report themselves and give memory back.
//!
//! An unbounded cache is the most common leak; the fix is "max size and TTL". [`LruCache`] and
//! [`TtlCache`] are that fix, observable and pressure-aware:
//!
//! - bounded by entries, or by weight with a [`weigher`](CacheBuilder::weigher) (by convention
//!   bytes), optionally with a time to live and a time to idle;
//! - thread-safe (`&self` methods, `Send + Sync`), cheap to clone (clones share the cache);
//! - named caches register in a bounded global registry, so the guard's report and `/metrics`
//!   show entries, weight, capacity, hit ratio and evictions per cache
//!   (`leakguard_cache_*{cache="…"}`), and the guard can ask them all to shrink under memory
//!   pressure before it considers a restart;
//! - expired entries are reclaimed by bounded work on each write, by reads that find them, and
//!   by [`maintain`](LruCache::maintain) (the guard's sampler calls [`maintain_all`] every
//!   tick), so their memory is actually freed.
//!
//! ```
//! use leakguard::cache::{EvictionCause, LruCache};
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let evicted = Arc::new(AtomicU64::new(0));
//! let seen = evicted.clone();
//! let users: LruCache<u64, String> = LruCache::builder(10_000)
//!     .name("users")
//!     .eviction_listener(move |_key, _value, cause| {
//!         if cause == EvictionCause::Capacity {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         }
//!     })
//!     .build();
//! users.insert(7, "ada".to_owned());
//! assert_eq!(users.get(&7).as_deref(), Some("ada"));
//! let name = users.get_or_insert_with(8, || "grace".to_owned());
//! assert_eq!(name, "grace");
//! assert_eq!(users.stats().hits, 1);
//! ```
//!
//! # Eviction policy
//!
//! Approximate LRU, S3-FIFO (Yang et al., SOSP 2023): new entries enter a small FIFO queue
//! (1% of the capacity); entries read while there move to the main queue, the others are
//! evicted and remembered in a ghost filter so that, if they come back soon, they go straight
//! to the main queue. The main queue is a CLOCK: an entry read since it was last considered
//! gets another round (up to three). So recently and frequently used entries stay, one-hit
//! wonders and scans leave first: on skewed (Zipf) workloads the hit ratio is at least that of
//! a strict LRU, usually higher, and a read needs only a shared lock plus one relaxed atomic.
//! It is not a strict LRU: the entry evicted is not always the least recently used one.
//!
//! # Sharding
//!
//! A cache is split by key hash into a power-of-two number of shards (4× the CPUs, fewer for
//! small capacities so that each shard holds at least 64), each behind its own
//! `parking_lot::RwLock`, with the capacity divided exactly among them. So a single entry can
//! weigh at most `capacity / shards`; heavier ones are not admitted (the listener sees them
//! with cause [`EvictionCause::Capacity`]). Use [`shards`](CacheBuilder::shards) when entries
//! are large compared with the capacity.

mod registry;
mod ring;
mod shard;

pub(crate) use self::registry::families;
pub use self::registry::{
    CacheKind, CacheReport, CacheShrink, CapacityUnit, EvictionCounts, ExternalCache,
    REGISTRY_CAPACITY, Registration, ShrinkOutcome, maintain_all, register_external,
    rejected_registrations, report, shrink_all, weight_by_cache,
};

use self::registry::Registered;
use self::shard::{Evicted, Lookup, Params, Pending, Shard, Slot, hash_of};
use crate::clock::{Clock, SystemClock};
use hashbrown::DefaultHashBuilder;
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Why an entry left a cache; the eviction listener receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EvictionCause {
    /// Evicted to stay within the capacity (or not admitted: heavier than a shard's capacity).
    Capacity,
    /// Its time to live or time to idle ran out.
    Expired,
    /// Removed by [`remove`](LruCache::remove) or [`clear`](LruCache::clear).
    Explicit,
    /// Its value was replaced by an insert for the same key (the listener sees the old value).
    Replaced,
    /// Evicted because the guard asked the caches to shrink under memory pressure
    /// ([`shrink_all`], [`LruCache::shrink`]).
    Pressure,
}

impl EvictionCause {
    pub(crate) const COUNT: usize = 5;
    /// Every cause, in the order of [`EvictionCounts`].
    pub const ALL: [EvictionCause; 5] = [
        EvictionCause::Capacity,
        EvictionCause::Expired,
        EvictionCause::Explicit,
        EvictionCause::Replaced,
        EvictionCause::Pressure,
    ];

    /// The cause's name as it appears in the report and in `/metrics`.
    ///
    /// ```
    /// use leakguard::cache::EvictionCause;
    /// assert_eq!(EvictionCause::Pressure.as_str(), "pressure");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Capacity => "capacity",
            EvictionCause::Expired => "expired",
            EvictionCause::Explicit => "explicit",
            EvictionCause::Replaced => "replaced",
            EvictionCause::Pressure => "pressure",
        }
    }
}

impl fmt::Display for EvictionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache's counters since it was built.
///
/// ```
/// use leakguard::cache::LruCache;
///
/// let cache = LruCache::new(10);
/// cache.insert(1, "one");
/// cache.get(&1);
/// cache.get(&2);
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 1, 1));
/// assert_eq!(stats.hit_ratio(), Some(0.5));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Lookups that found a live entry (`get`, and `get_or_insert_with` without computing).
    pub hits: u64,
    /// Lookups that found nothing, or an expired entry.
    pub misses: u64,
    /// Inserts and replacements (including those of `get_or_insert_with`).
    pub inserts: u64,
    /// Entries that left the cache, by cause.
    pub evictions: EvictionCounts,
}

impl CacheStats {
    /// Hits over lookups; `None` before the first lookup.
    ///
    /// ```
    /// use leakguard::cache::CacheStats;
    /// assert_eq!(CacheStats::default().hit_ratio(), None);
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;
type Listener<K, V> = Arc<dyn Fn(&K, &V, EvictionCause) + Send + Sync>;

/// Builds an [`LruCache`] or a [`TtlCache`]; made by [`LruCache::builder`] and
/// [`TtlCache::builder`].
///
/// ```
/// use leakguard::cache::LruCache;
/// use std::time::Duration;
///
/// let pages: LruCache<String, Vec<u8>> = LruCache::builder(64 << 20) // 64 MiB
///     .weigher(|key: &String, page: &Vec<u8>| (key.len() + page.len()) as u64)
///     .time_to_idle(Duration::from_secs(600))
///     .name("pages")
///     .build();
/// pages.insert("/".to_owned(), vec![0; 1024]);
/// assert_eq!(pages.weight(), 1025);
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheBuilder<K, V, C> {
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    name: Option<String>,
    listener: Option<Listener<K, V>>,
    clock: Option<Arc<dyn Clock>>,
    shards: Option<usize>,
    _target: PhantomData<fn() -> C>,
}

impl<K, V, C> fmt::Debug for CacheBuilder<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("capacity", &self.capacity)
            .field("weighted", &self.weigher.is_some())
            .field("ttl", &self.ttl)
            .field("time_to_idle", &self.tti)
            .field("name", &self.name)
            .field("eviction_listener", &self.listener.is_some())
            .field("clock", &self.clock)
            .field("shards", &self.shards)
            .finish()
    }
}

impl<K, V, C> CacheBuilder<K, V, C> {
    fn new(capacity: u64) -> Self {
        Self {
            capacity,
            weigher: None,
            ttl: None,
            tti: None,
            name: None,
            listener: None,
            clock: None,
            shards: None,
            _target: PhantomData,
        }
    }

    /// The capacity: a number of entries, or with a [`weigher`](Self::weigher) a total weight.
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u32, u32> = LruCache::builder(10).capacity(1_000).build();
    /// assert_eq!(cache.capacity(), 1_000);
    /// ```
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Bounds the cache by weight: `weigher(key, value)` is the weight of an entry (by
    /// convention its size in bytes; it is what the report shows as the cache's bytes). It is
    /// called once per insert, outside the cache's locks, and must be cheap and deterministic.
    /// A weight of 0 counts as 1.
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u32, String> = LruCache::builder(10)
    ///     .weigher(|_, v: &String| v.len() as u64)
    ///     .shards(1)
    ///     .build();
    /// cache.insert(1, "four".to_owned());
    /// cache.insert(2, "four".to_owned());
    /// cache.insert(3, "four".to_owned()); // 12 > 10: something is evicted
    /// assert!(cache.weight() <= 10);
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Time to live: an entry expires this long after it was inserted (or last replaced).
    ///
    /// ```
    /// use leakguard::ManualClock;
    /// use leakguard::cache::LruCache;
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let clock = ManualClock::new(0.0);
    /// let cache = LruCache::builder(10)
    ///     .ttl(Duration::from_secs(60))
    ///     .clock(Arc::new(clock.clone()))
    ///     .build();
    /// cache.insert(1, "one");
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(cache.get(&1), None);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Time to idle: an entry expires this long after it was last read or written.
    ///
    /// ```
    /// use leakguard::ManualClock;
    /// use leakguard::cache::LruCache;
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let clock = ManualClock::new(0.0);
    /// let cache = LruCache::builder(10)
    ///     .time_to_idle(Duration::from_secs(10))
    ///     .clock(Arc::new(clock.clone()))
    ///     .build();
    /// cache.insert(1, "one");
    /// clock.advance(Duration::from_secs(9));
    /// assert_eq!(cache.get(&1), Some("one")); // read: idle time starts again
    /// clock.advance(Duration::from_secs(9));
    /// assert_eq!(cache.get(&1), Some("one"));
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(cache.get(&1), None);
    /// ```
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// Names the cache and registers it, so that the guard's report and `/metrics` show it.
    /// Names longer than 100 bytes are cut; a name already in use gets a suffix (`-2`, `-3`, …);
    /// at most [`REGISTRY_CAPACITY`] caches are registered at once (later ones work but are
    /// not shown, and are counted by [`rejected_registrations`]).
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u32, u32> = LruCache::builder(10).name("sessions").build();
    /// assert_eq!(cache.name(), Some("sessions"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Called with each entry that leaves the cache and why, after the cache's lock is
    /// released (so it may use the cache). A panic in the listener is caught and counted.
    ///
    /// ```
    /// use leakguard::cache::{EvictionCause, LruCache};
    /// use std::sync::{Arc, Mutex};
    ///
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let sink = log.clone();
    /// let cache = LruCache::builder(10)
    ///     .eviction_listener(move |k: &u32, v: &&str, cause| {
    ///         sink.lock().unwrap().push((*k, *v, cause));
    ///     })
    ///     .build();
    /// cache.insert(1, "one");
    /// cache.insert(1, "uno");
    /// assert_eq!(log.lock().unwrap()[0], (1, "one", EvictionCause::Replaced));
    /// ```
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(&K, &V, EvictionCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// The clock that times expiry (default: the system's monotonic clock); tests pass a
    /// [`ManualClock`](crate::ManualClock).
    ///
    /// ```
    /// use leakguard::ManualClock;
    /// use leakguard::cache::TtlCache;
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let clock = ManualClock::new(0.0);
    /// let cache = TtlCache::builder(10, Duration::from_secs(5))
    ///     .clock(Arc::new(clock.clone()))
    ///     .build();
    /// cache.insert("k", 1);
    /// clock.advance(Duration::from_secs(4));
    /// assert_eq!(cache.get("k"), Some(1));
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The number of shards (rounded up to a power of two, at most 1024). Default: 4× the
    /// CPUs, halved until each shard has a capacity of at least 64. One shard makes the
    /// capacity exact for a single entry at the cost of concurrency.
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u32, u32> = LruCache::builder(1_000_000).shards(3).build();
    /// assert_eq!(cache.shards(), 4);
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn default_shards(capacity: u64) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cpus * 4).next_power_of_two().min(64);
    while shards > 1 && capacity / (shards as u64) < 64 {
        shards /= 2;
    }
    shards
}

impl<K, V, C> CacheBuilder<K, V, C>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn build_inner(self, kind: CacheKind) -> Arc<Inner<K, V>> {
        let shards = match self.shards {
            Some(n) => n.clamp(1, 1024).next_power_of_two(),
            None => default_shards(self.capacity),
        };
        let base = self.capacity / shards as u64;
        let extra = self.capacity % shards as u64;
        let params = Params {
            ttl: self.ttl.map(nanos),
            tti: self.tti.map(nanos),
            weighted: self.weigher.is_some(),
            entries_hint: usize::try_from(base + u64::from(extra > 0)).unwrap_or(usize::MAX),
        };
        let shard_vec: Vec<ShardLock<K, V>> = (0..shards as u64)
            .map(|i| {
                Padded(ShardCell {
                    lookups: [AtomicU64::new(0), AtomicU64::new(0)],
                    table_at: [AtomicUsize::new(0), AtomicUsize::new(0)],
                    lock: RwLock::new(Shard::new(base + u64::from(i < extra))),
                })
            })
            .collect();
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let name = self.name;
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner<K, V>>| {
            let registration = name.as_deref().and_then(|n| {
                let weak: std::sync::Weak<dyn Registered> = weak.clone();
                registry::register(n, weak)
            });
            Inner {
                shards: shard_vec.into_boxed_slice(),
                mask: shards - 1,
                hasher: DefaultHashBuilder::default(),
                params,
                expires: params.ttl.is_some() || params.tti.is_some(),
                plain: !params.weighted && params.ttl.is_none() && params.tti.is_none(),
                capacity: self.capacity,
                weigher: self.weigher,
                listener: self.listener,
                clock,
                kind,
                registration,
                listener_panics: AtomicU64::new(0),
            }
        });
        registry::make_fork_safe(&inner);
        inner
    }
}

impl<K, V> CacheBuilder<K, V, LruCache<K, V>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Builds the cache (and registers it if it has a name).
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u64, u64> = LruCache::builder(100).build();
    /// assert!(cache.is_empty());
    /// ```
    pub fn build(self) -> LruCache<K, V> {
        LruCache {
            inner: self.build_inner(CacheKind::Lru),
        }
    }
}

impl<K, V> CacheBuilder<K, V, TtlCache<K, V>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Builds the cache (and registers it if it has a name).
    ///
    /// ```
    /// use leakguard::cache::TtlCache;
    /// use std::time::Duration;
    /// let cache: TtlCache<u64, u64> = TtlCache::builder(100, Duration::from_secs(30)).build();
    /// assert_eq!(cache.ttl(), Some(Duration::from_secs(30)));
    /// ```
    pub fn build(self) -> TtlCache<K, V> {
        TtlCache {
            inner: self.build_inner(CacheKind::Ttl),
        }
    }
}

/// Keeps each shard on cache lines of its own, 512 bytes apart: a shard with its lock and
/// counters takes about 380 bytes (the same for every `K` and `V`: entries live on the heap),
/// and a power-of-two stride makes finding the shard of a hash a single shift, on every
/// operation (the 384-byte stride it replaces took an instruction more).
#[repr(align(512))]
struct Padded<T>(T);

/// A shard behind its lock, and the shard's hit and miss counters.
///
/// The counters sit just before the lock word, on the same cache line: a read writes that
/// line anyway (taking and releasing the read lock are atomic writes to it), so counting there
/// touches no other line and costs one relaxed add on a line the core already holds. The
/// shard's index table is on another line, which reads only read.
///
/// The price is paid when threads read the same shard at the same time: the contended line
/// then takes three atomic writes per read instead of two. Per-thread counter stripes avoid
/// that, but cost about ten instructions per read (a thread-local look-up with its first-use
/// check, the stripe's address, and the registers to hold it): this layout is the cheaper
/// one on one thread (the stripes were not kept, and are not in BENCHMARKS.md).
#[repr(C)]
struct ShardCell<K, V> {
    /// Hits (`[0]`) and misses (`[1]`) of the reads of this shard.
    lookups: [AtomicU64; 2],
    /// Where the shard's index table is (its control bytes, and its bucket mask), as the last
    /// writer left it ([`Shard::table_at`]): an operation prefetches its key's lines of the
    /// table from here before it takes the lock ([`shard::prefetch_table`]). Read with
    /// relaxed loads of a line the operation touches anyway; a stale value is harmless.
    table_at: [AtomicUsize; 2],
    lock: RwLock<Shard<K, V>>,
}

impl<K, V> ShardCell<K, V> {
    #[inline]
    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Shard<K, V>> {
        self.lock.read()
    }

    #[inline]
    fn write(&self) -> ShardWrite<'_, K, V> {
        ShardWrite {
            guard: self.lock.write(),
            table_at: &self.table_at,
        }
    }

    #[inline]
    fn try_write(&self) -> Option<ShardWrite<'_, K, V>> {
        self.lock.try_write().map(|guard| ShardWrite {
            guard,
            table_at: &self.table_at,
        })
    }

    /// Prefetches the lines of the index table that a look-up of `hash` reads first; called
    /// before taking the lock.
    #[inline(always)]
    fn prefetch(&self, hash: u64) {
        shard::prefetch_table(
            self.table_at[0].load(Relaxed),
            self.table_at[1].load(Relaxed),
            hash,
        );
    }

    /// Counts a read of this shard: a hit or a miss.
    #[inline]
    fn count(&self, hit: bool) {
        self.lookups[usize::from(!hit)].fetch_add(1, Relaxed);
    }
}

/// The write lock of a shard; publishes where the index table is when released.
struct ShardWrite<'a, K, V> {
    guard: parking_lot::RwLockWriteGuard<'a, Shard<K, V>>,
    table_at: &'a [AtomicUsize; 2],
}

impl<K, V> std::ops::Deref for ShardWrite<'_, K, V> {
    type Target = Shard<K, V>;
    #[inline]
    fn deref(&self) -> &Shard<K, V> {
        &self.guard
    }
}

impl<K, V> std::ops::DerefMut for ShardWrite<'_, K, V> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Shard<K, V> {
        &mut self.guard
    }
}

impl<K, V> Drop for ShardWrite<'_, K, V> {
    #[inline]
    fn drop(&mut self) {
        let (ctrl, mask) = self.guard.table_at();
        self.table_at[0].store(ctrl, Relaxed);
        self.table_at[1].store(mask, Relaxed);
    }
}

type ShardLock<K, V> = Padded<ShardCell<K, V>>;

/// State of a `get_or_insert_with` computation, shared with the threads waiting for it.
pub(crate) struct Waiter<V> {
    state: Mutex<WaitState<V>>,
    ready: Condvar,
}

enum WaitState<V> {
    Computing,
    Ready(V),
    Failed,
}

impl<V: Clone> Waiter<V> {
    fn new() -> Self {
        Self {
            state: Mutex::new(WaitState::Computing),
            ready: Condvar::new(),
        }
    }
    /// The computed value, or `None` if the computation panicked.
    fn wait(&self) -> Option<V> {
        let mut state = self.state.lock();
        loop {
            match &*state {
                WaitState::Computing => self.ready.wait(&mut state),
                WaitState::Ready(v) => return Some(v.clone()),
                WaitState::Failed => return None,
            }
        }
    }
    fn finish(&self, outcome: WaitState<V>) {
        *self.state.lock() = outcome;
        self.ready.notify_all();
    }
}

/// Withdraws a computation whose `init` panicked, so that waiting threads retry.
struct ComputeGuard<'a, K: Hash + Eq, V: Clone> {
    inner: &'a Inner<K, V>,
    shard: usize,
    waiter: Arc<Waiter<V>>,
    armed: bool,
}

impl<K: Hash + Eq, V: Clone> Drop for ComputeGuard<'_, K, V> {
    fn drop(&mut self) {
        if self.armed {
            let withdrawn = {
                let mut s = self.inner.shards[self.shard].0.write();
                let pos = s
                    .pending
                    .iter()
                    .position(|p| Arc::ptr_eq(&p.waiter, &self.waiter));
                pos.map(|pos| s.pending.swap_remove(pos))
            };
            drop(withdrawn);
            self.waiter.finish(WaitState::Failed);
        }
    }
}

/// What a cache shares between its handles (and with the registry, weakly).
pub(crate) struct Inner<K, V> {
    shards: Box<[ShardLock<K, V>]>,
    mask: usize,
    hasher: DefaultHashBuilder,
    params: Params,
    /// `params` has a ttl or a tti: reads need the time.
    expires: bool,
    /// Neither a weigher nor expiry: inserts take the constant-parameter path.
    plain: bool,
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    clock: Arc<dyn Clock>,
    kind: CacheKind,
    registration: Option<(u64, String)>,
    listener_panics: AtomicU64,
}

impl<K, V> Drop for Inner<K, V> {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.registration {
            registry::unregister(*id);
        }
    }
}

/// Estimated bookkeeping bytes per entry, for the shallow size of unweighted caches.
const ENTRY_OVERHEAD: u64 = 24;

impl<K, V> Inner<K, V>
where
    K: Hash + Eq,
    V: Clone,
{
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) as usize) & self.mask
    }

    #[inline]
    fn now(&self) -> Option<u64> {
        if self.expires {
            Some(nanos(self.clock.monotonic()))
        } else {
            None
        }
    }

    fn weigh(&self, key: &K, value: &V) -> u64 {
        match &self.weigher {
            Some(w) => w(key, value).max(1),
            None => 1,
        }
    }

    /// Hands what left the cache to the listener, or drops it; called after the lock is
    /// released. Inline: without a listener it is a drop of what is usually one entry.
    #[inline]
    fn dispatch(&self, evicted: Evicted<K, V>) {
        if evicted.is_empty() {
            return;
        }
        match &self.listener {
            Some(listener) => self.notify(listener, evicted),
            None => drop(evicted),
        }
    }

    #[inline(never)]
    fn notify(&self, listener: &Listener<K, V>, evicted: Evicted<K, V>) {
        for (k, v, cause) in evicted.into_iter() {
            if catch_unwind(AssertUnwindSafe(|| listener(&k, &v, cause))).is_err() {
                self.listener_panics.fetch_add(1, Relaxed);
            }
        }
    }

    /// An insert. Caches without a weigher and without expiry (the common kind) take a path
    /// of their own, compiled with their parameters as constants: every entry weighs 1, there
    /// is no clock, no expiry ring and no weight table to look at.
    #[inline]
    fn insert(&self, key: K, value: V) {
        if !self.plain {
            return self.insert_general(key, value);
        }
        let plain = Params {
            ttl: None,
            tti: None,
            weighted: false,
            entries_hint: self.params.entries_hint,
        };
        self.insert_with(key, value, 1, None, &plain)
    }

    #[inline(never)]
    fn insert_general(&self, key: K, value: V) {
        let weight = self.weigh(&key, &value);
        let now = self.now();
        self.insert_with(key, value, weight, now, &self.params)
    }

    #[inline(always)]
    fn insert_with(&self, key: K, value: V, weight: u64, now: Option<u64>, p: &Params) {
        let hash = hash_of(&self.hasher, &key);
        let mut out = Evicted::new();
        let cell = &self.shards[self.shard_of(hash)].0;
        cell.prefetch(hash);
        cell.write()
            .insert(hash, key, value, weight, now, p, &mut out);
        self.dispatch(out);
    }

    /// A read. Caches without expiry take the short path: no clock, no deadline, one
    /// hashbrown probe under the read lock and the count beside the lock word.
    #[inline]
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.expires {
            return self.get_timed(key);
        }
        let hash = hash_of(&self.hasher, key);
        let cell = &self.shards[self.shard_of(hash)].0;
        cell.prefetch(hash);
        let shard = cell.read();
        let found = shard.get(hash, key);
        cell.count(found.is_some());
        drop(shard);
        found
    }

    /// A read of a cache that expires: an entry found expired counts as a miss and is
    /// reclaimed at once if the shard's write lock is free.
    #[inline(never)]
    fn get_timed<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(&self.hasher, key);
        let si = self.shard_of(hash);
        let cell = &self.shards[si].0;
        let now = self.now();
        cell.prefetch(hash);
        let shard = cell.read();
        let found = shard.get_timed(hash, key, now, &self.params);
        cell.count(matches!(found, Lookup::Hit(_)));
        drop(shard);
        match found {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss => None,
            Lookup::Expired => {
                if let Some(now) = now {
                    self.reclaim_read_expired(si, hash, key, now);
                }
                None
            }
        }
    }

    /// A read found its entry expired: reclaim it now if nobody else holds the shard's lock;
    /// otherwise the next write will. Out of line, so the read path stays small.
    #[cold]
    #[inline(never)]
    fn reclaim_read_expired<Q>(&self, si: usize, hash: u64, key: &Q, now: u64)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        if let Some(mut s) = self.shards[si].0.try_write() {
            let mut out = Evicted::new();
            s.remove(hash, key, Some(now), &self.params, &mut out);
            s.reclaim_expired(now, 8, &self.params, &mut out);
            drop(s);
            self.dispatch(out);
        }
    }

    fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(&self.hasher, key);
        let now = self.now();
        self.shards[self.shard_of(hash)]
            .0
            .read()
            .contains(hash, key, now, &self.params)
    }

    fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(&self.hasher, key);
        let now = self.now();
        let mut out = Evicted::new();
        let removed = self.shards[self.shard_of(hash)].0.write().remove(
            hash,
            key,
            now,
            &self.params,
            &mut out,
        );
        let mut result = None;
        for (k, v, cause) in out.into_iter() {
            if let Some(listener) = &self.listener
                && catch_unwind(AssertUnwindSafe(|| listener(&k, &v, cause))).is_err()
            {
                self.listener_panics.fetch_add(1, Relaxed);
            }
            if removed && cause == EvictionCause::Explicit {
                result = Some(v);
            }
        }
        result
    }

    fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, init: F) -> V {
        let hash = hash_of(&self.hasher, &key);
        let si = self.shard_of(hash);
        loop {
            let now = self.now();
            let found = {
                let cell = &self.shards[si].0;
                let shard = cell.read();
                let found = shard.get_timed(hash, &key, now, &self.params);
                cell.count(matches!(found, Lookup::Hit(_)));
                found
            };
            if let Lookup::Hit(v) = found {
                return v;
            }
            let me = std::thread::current().id();
            let waiter = {
                let mut s = self.shards[si].0.write();
                if let Some(v) = s.peek_value(hash, &key, now, &self.params) {
                    return v;
                }
                let found = s
                    .pending
                    .iter()
                    .find(|p| p.hash == hash && *p.key == key)
                    .map(|p| (p.owner == me, p.waiter.clone()));
                match found {
                    // `init` itself asked for its own key: compute without waiting for itself.
                    Some((true, _)) => None,
                    Some((false, waiter)) => Some(waiter),
                    None => {
                        let waiter = Arc::new(Waiter::new());
                        s.pending.push(Pending {
                            hash,
                            key: Arc::new(key),
                            owner: me,
                            waiter: waiter.clone(),
                        });
                        drop(s);
                        return self.compute(si, hash, waiter, init);
                    }
                }
            };
            match waiter {
                None => {
                    let v = init();
                    self.insert(key, v.clone());
                    return v;
                }
                Some(waiter) => {
                    if let Some(v) = waiter.wait() {
                        return v;
                    }
                    // The computing thread's `init` panicked: try again (maybe computing).
                }
            }
        }
    }

    fn compute<F: FnOnce() -> V>(
        &self,
        si: usize,
        hash: u64,
        waiter: Arc<Waiter<V>>,
        init: F,
    ) -> V {
        let mut guard = ComputeGuard {
            inner: self,
            shard: si,
            waiter: waiter.clone(),
            armed: true,
        };
        let value = init();
        let now = self.now();
        // The weigher runs outside the shard's lock, like everywhere else: it may use the cache.
        let weight = match &self.weigher {
            None => 1,
            Some(_) => {
                let key = self.shards[si]
                    .0
                    .read()
                    .pending
                    .iter()
                    .find(|p| Arc::ptr_eq(&p.waiter, &waiter))
                    .map(|p| Arc::clone(&p.key));
                key.map_or(1, |key| self.weigh(&key, &value))
            }
        };
        let mut out = Evicted::new();
        {
            let mut s = self.shards[si].0.write();
            let pos = s
                .pending
                .iter()
                .position(|p| Arc::ptr_eq(&p.waiter, &waiter));
            if let Some(pos) = pos {
                let pending = s.pending.swap_remove(pos);
                // Only this thread ever clones a pending key, and its clone is gone.
                if let Ok(key) = Arc::try_unwrap(pending.key) {
                    s.insert(
                        hash,
                        key,
                        value.clone(),
                        weight,
                        now,
                        &self.params,
                        &mut out,
                    );
                }
            }
        }
        guard.armed = false;
        waiter.finish(WaitState::Ready(value.clone()));
        self.dispatch(out);
        value
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    fn weight(&self) -> u64 {
        self.shards.iter().map(|s| s.0.read().weight()).sum()
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let old = shard.0.write().take_all();
            match &self.listener {
                Some(listener) => {
                    for slot in old {
                        if let Slot::Live { key, value, .. } = slot
                            && catch_unwind(AssertUnwindSafe(|| {
                                listener(&key, &value, EvictionCause::Explicit)
                            }))
                            .is_err()
                        {
                            self.listener_panics.fetch_add(1, Relaxed);
                        }
                    }
                }
                None => drop(old),
            }
        }
    }

    fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        let mut by_cause = [0u64; EvictionCause::COUNT];
        for shard in self.shards.iter() {
            stats.hits += shard.0.lookups[0].load(Relaxed);
            stats.misses += shard.0.lookups[1].load(Relaxed);
            let s = shard.0.read();
            stats.inserts += s.inserts;
            for (total, n) in by_cause.iter_mut().zip(s.evictions) {
                *total += n;
            }
        }
        stats.evictions = EvictionCounts::from_array(by_cause);
        stats
    }

    /// Reclaims expired entries, releasing each shard's lock every 1024 looked at, up to
    /// `budget` per shard.
    fn maintain(&self, budget: usize) {
        if self.now().is_none() {
            return;
        }
        for shard in self.shards.iter() {
            let mut left = budget;
            while left > 0 {
                let Some(now) = self.now() else { return };
                let mut out = Evicted::new();
                let looked =
                    shard
                        .0
                        .write()
                        .reclaim_expired(now, left.min(1024), &self.params, &mut out);
                self.dispatch(out);
                if looked < left.min(1024) {
                    break;
                }
                left -= looked;
            }
            if self.params.tti.is_some() {
                // Deadlines move with reads: sweep the ring too (the whole of it, or `budget`
                // entries from where the last sweep stopped).
                let mut left = budget.min(shard.0.read().timer_len());
                while left > 0 {
                    let Some(now) = self.now() else { return };
                    let mut out = Evicted::new();
                    let looked =
                        shard
                            .0
                            .write()
                            .sweep_expired(now, left.min(1024), &self.params, &mut out);
                    self.dispatch(out);
                    if looked == 0 {
                        break;
                    }
                    left = left.saturating_sub(looked);
                }
            }
        }
    }

    fn shrink(&self, fraction: f64) -> CacheShrink {
        let fraction = if fraction.is_nan() {
            1.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let mut entries = 0;
        let mut weight = 0;
        for shard in self.shards.iter() {
            let mut out = Evicted::new();
            let (n, w) = {
                let mut s = shard.0.write();
                let (len, wt) = (s.len(), s.weight());
                s.shrink(fraction, &self.params, &mut out);
                (len - s.len(), wt - s.weight())
            };
            entries += n as u64;
            weight += w;
            self.dispatch(out);
        }
        CacheShrink {
            name: self.display_name(),
            entries_evicted: entries,
            weight_evicted: weight,
            bytes_evicted: self.bytes_of(entries, weight),
        }
    }

    fn display_name(&self) -> String {
        self.registration
            .as_ref()
            .map_or_else(String::new, |(_, name)| name.clone())
    }

    /// Bytes held: the weight when a weigher gives it, else a shallow estimate.
    fn bytes_of(&self, entries: u64, weight: u64) -> u64 {
        if self.weigher.is_some() {
            weight
        } else {
            let per = (std::mem::size_of::<K>() + std::mem::size_of::<V>()) as u64 + ENTRY_OVERHEAD;
            entries.saturating_mul(per)
        }
    }

    fn snapshot(&self) -> CacheReport {
        let stats = self.stats();
        let (mut entries, mut weight) = (0u64, 0u64);
        for shard in self.shards.iter() {
            let s = shard.0.read();
            entries += s.len() as u64;
            weight += s.weight();
        }
        CacheReport {
            name: self.display_name(),
            kind: self.kind,
            entries,
            weight,
            capacity: self.capacity,
            capacity_unit: if self.weigher.is_some() {
                CapacityUnit::Weight
            } else {
                CapacityUnit::Entries
            },
            weight_bytes: self.bytes_of(entries, weight),
            weight_bytes_estimated: self.weigher.is_none(),
            hits: stats.hits,
            misses: stats.misses,
            hit_ratio: stats.hit_ratio(),
            inserts: stats.inserts,
            evictions: stats.evictions,
            ttl_seconds: self.params.ttl.map(|n| n as f64 / 1e9),
            time_to_idle_seconds: self.params.tti.map(|n| n as f64 / 1e9),
            listener_panics: self.listener_panics.load(Relaxed),
        }
    }
}

impl<K, V> Registered for Inner<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn report(&self) -> CacheReport {
        self.snapshot()
    }
    fn shrink(&self, fraction: f64) -> CacheShrink {
        Inner::shrink(self, fraction)
    }
    fn maintain(&self, budget: usize) {
        Inner::maintain(self, budget)
    }
}

impl<K, V> fmt::Debug for Inner<K, V>
where
    K: Hash + Eq,
    V: Clone,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &self.kind)
            .field("name", &self.registration.as_ref().map(|(_, n)| n))
            .field("len", &self.len())
            .field("weight", &self.weight())
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field("ttl", &self.params.ttl.map(Duration::from_nanos))
            .field("time_to_idle", &self.params.tti.map(Duration::from_nanos))
            .finish_non_exhaustive()
    }
}

/// A bounded, thread-safe cache with approximate-LRU eviction (S3-FIFO, see the
/// [module documentation](self)), optionally bounded by weight and with expiry.
///
/// Clones are handles to the same cache. Values are returned as clones: wrap large values in
/// an `Arc`.
///
/// ```
/// use leakguard::cache::LruCache;
///
/// let cache = LruCache::new(2);
/// cache.insert("a", 1);
/// cache.insert("b", 2);
/// cache.insert("c", 3); // over capacity: one of the others is evicted
/// assert_eq!(cache.len(), 2);
/// assert_eq!(cache.get("c"), Some(3));
/// ```
pub struct LruCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

/// A bounded, thread-safe cache whose entries expire a fixed time after they were inserted
/// (and optionally after they were last used); otherwise the same as [`LruCache`].
///
/// ```
/// use leakguard::ManualClock;
/// use leakguard::cache::TtlCache;
/// use std::{sync::Arc, time::Duration};
///
/// let clock = ManualClock::new(0.0);
/// let tokens = TtlCache::builder(1_000, Duration::from_secs(300))
///     .clock(Arc::new(clock.clone()))
///     .build();
/// tokens.insert("alice", 42);
/// clock.advance(Duration::from_secs(299));
/// assert_eq!(tokens.get("alice"), Some(42));
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(tokens.get("alice"), None);
/// ```
pub struct TtlCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for LruCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> Clone for TtlCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Hash + Eq, V: Clone> fmt::Debug for LruCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<K: Hash + Eq, V: Clone> fmt::Debug for TtlCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<K, V> LruCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, unnamed (not registered), without expiry.
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<String, u32> = LruCache::new(1_000);
    /// assert_eq!(cache.capacity(), 1_000);
    /// ```
    pub fn new(capacity: u64) -> Self {
        Self::builder(capacity).build()
    }

    /// A builder for a cache of `capacity` entries (or weight, with a weigher).
    ///
    /// ```
    /// use leakguard::cache::LruCache;
    /// let cache: LruCache<u64, Vec<u8>> = LruCache::builder(1 << 20)
    ///     .weigher(|_, v: &Vec<u8>| v.len() as u64)
    ///     .name("blobs")
    ///     .build();
    /// assert_eq!(cache.name(), Some("blobs"));
    /// ```
    pub fn builder(capacity: u64) -> CacheBuilder<K, V, Self> {
        CacheBuilder::new(capacity)
    }
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `capacity` entries, each expiring `ttl` after it was inserted.
    ///
    /// ```
    /// use leakguard::cache::TtlCache;
    /// use std::time::Duration;
    /// let cache: TtlCache<u64, String> = TtlCache::new(1_000, Duration::from_secs(60));
    /// assert_eq!(cache.ttl(), Some(Duration::from_secs(60)));
    /// ```
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self::builder(capacity, ttl).build()
    }

    /// A builder for a cache of `capacity` entries (or weight) expiring `ttl` after insert.
    ///
    /// ```
    /// use leakguard::cache::TtlCache;
    /// use std::time::Duration;
    /// let cache: TtlCache<u64, String> = TtlCache::builder(1_000, Duration::from_secs(60))
    ///     .time_to_idle(Duration::from_secs(10))
    ///     .build();
    /// assert_eq!(cache.time_to_idle(), Some(Duration::from_secs(10)));
    /// ```
    pub fn builder(capacity: u64, ttl: Duration) -> CacheBuilder<K, V, Self> {
        CacheBuilder::new(capacity).ttl(ttl)
    }
}

macro_rules! cache_methods {
    ($ty:ident, $uses:literal, $new:literal) => {
        impl<K, V> $ty<K, V>
        where
            K: Hash + Eq + Send + Sync + 'static,
            V: Clone + Send + Sync + 'static,
        {
            /// Inserts `value` under `key`, replacing (cause `Replaced`) any value there; may
            /// evict entries to stay within the capacity.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, \"one\");\ncache.insert(1, \"uno\");\n",
                "assert_eq!(cache.get(&1), Some(\"uno\"));\n```")]
            pub fn insert(&self, key: K, value: V) {
                self.inner.insert(key, value)
            }

            /// A clone of the value under `key`, if present and not expired. Marks the entry as
            /// used (and, with a time to idle, starts its idle time again).
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(\"k\".to_owned(), vec![1, 2]);\n",
                "assert_eq!(cache.get(\"k\"), Some(vec![1, 2]));\n",
                "assert_eq!(cache.get(\"missing\"), None);\n```")]
            #[inline]
            pub fn get<Q>(&self, key: &Q) -> Option<V>
            where
                K: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                self.inner.get(key)
            }

            /// Whether `key` is present and not expired; does not count as a use.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, ());\nassert!(cache.contains_key(&1));\n",
                "assert!(!cache.contains_key(&2));\nassert_eq!(cache.stats().hits, 0);\n```")]
            pub fn contains_key<Q>(&self, key: &Q) -> bool
            where
                K: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                self.inner.contains(key)
            }

            /// Removes `key` (cause `Explicit`) and returns its value, if it was present and
            /// not expired.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, \"one\");\nassert_eq!(cache.remove(&1), Some(\"one\"));\n",
                "assert_eq!(cache.remove(&1), None);\n```")]
            pub fn remove<Q>(&self, key: &Q) -> Option<V>
            where
                K: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                self.inner.remove(key)
            }

            /// The value under `key`, or the one `init` computes, inserted and returned.
            /// Concurrent misses for the same key compute it once: the other threads wait for
            /// the first one's result. If `init` panics, the panic reaches its caller and a
            /// waiting thread computes instead (nothing is poisoned). An `init` that asks the
            /// cache for its own key computes again rather than waiting for itself.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "let v = cache.get_or_insert_with(1, || \"computed\");\n",
                "assert_eq!(v, \"computed\");\n",
                "let v = cache.get_or_insert_with(1, || unreachable!());\n",
                "assert_eq!(v, \"computed\");\n```")]
            pub fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, init: F) -> V {
                self.inner.get_or_insert_with(key, init)
            }

            /// The number of entries held (expired ones count until they are reclaimed).
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, 1);\ncache.insert(2, 2);\nassert_eq!(cache.len(), 2);\n```")]
            pub fn len(&self) -> usize {
                self.inner.len()
            }

            /// Whether the cache holds no entries.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "assert!(cache.is_empty());\ncache.insert(1, 1);\nassert!(!cache.is_empty());\n```")]
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The total weight held: the sum of the weigher's values, or the number of
            /// entries without a weigher.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, 1);\nassert_eq!(cache.weight(), 1);\n```")]
            pub fn weight(&self) -> u64 {
                self.inner.weight()
            }

            /// The capacity: entries, or weight with a weigher.
            ///
            #[doc = concat!("```\n", $uses, "let cache: ", stringify!($ty), "<u8, u8> = ", $new, ";\n",
                "assert_eq!(cache.capacity(), 100);\n```")]
            pub fn capacity(&self) -> u64 {
                self.inner.capacity
            }

            /// Removes every entry (cause `Explicit`) and frees the cache's storage.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, 1);\ncache.clear();\nassert!(cache.is_empty());\n",
                "assert_eq!(cache.stats().evictions.explicit, 1);\n```")]
            pub fn clear(&self) {
                self.inner.clear()
            }

            /// Hits, misses, inserts and evictions by cause since the cache was built.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, 1);\nassert_eq!(cache.get(&1), Some(1));\n",
                "assert_eq!(cache.stats().hits, 1);\n```")]
            pub fn stats(&self) -> CacheStats {
                self.inner.stats()
            }

            /// Reclaims every expired entry now (cause `Expired`), so that its memory is
            /// freed; a no-op for caches without expiry. Reads and writes already reclaim some
            /// as they go, and a running guard calls [`maintain_all`] on every sample.
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "cache.insert(1, 1);\ncache.maintain();\nassert_eq!(cache.len(), 1);\n```")]
            pub fn maintain(&self) {
                self.inner.maintain(usize::MAX)
            }

            /// Evicts entries (cause `Pressure`) until the cache holds at most `fraction`
            /// (0 to 1) of its current weight; what the guard does to every registered cache
            /// under memory pressure ([`shrink_all`]).
            ///
            #[doc = concat!("```\n", $uses, "let cache = ", $new, ";\n",
                "for i in 0..10 { cache.insert(i, i); }\n",
                "let shrunk = cache.shrink(0.5);\n",
                "assert_eq!(shrunk.entries_evicted, 5);\nassert_eq!(cache.len(), 5);\n```")]
            pub fn shrink(&self, fraction: f64) -> CacheShrink {
                self.inner.shrink(fraction)
            }

            /// The name under which the cache is registered, if it is.
            ///
            #[doc = concat!("```\n", $uses, "let cache: ", stringify!($ty), "<u8, u8> = ", $new, ";\n",
                "assert_eq!(cache.name(), None);\n```")]
            pub fn name(&self) -> Option<&str> {
                self.inner.registration.as_ref().map(|(_, n)| n.as_str())
            }

            /// The time to live, if any.
            ///
            #[doc = concat!("```\n", $uses, "let cache: ", stringify!($ty), "<u8, u8> = ", $new, ";\n",
                "let _ttl: Option<Duration> = cache.ttl();\n```")]
            pub fn ttl(&self) -> Option<Duration> {
                self.inner.params.ttl.map(Duration::from_nanos)
            }

            /// The time to idle, if any.
            ///
            #[doc = concat!("```\n", $uses, "let cache: ", stringify!($ty), "<u8, u8> = ", $new, ";\n",
                "assert_eq!(cache.time_to_idle(), None);\n```")]
            pub fn time_to_idle(&self) -> Option<Duration> {
                self.inner.params.tti.map(Duration::from_nanos)
            }

            /// The number of shards.
            ///
            #[doc = concat!("```\n", $uses, "let cache: ", stringify!($ty), "<u8, u8> = ", $new, ";\n",
                "assert!(cache.shards().is_power_of_two());\n```")]
            pub fn shards(&self) -> usize {
                self.inner.shards.len()
            }
        }
    };
}

cache_methods!(
    LruCache,
    "use leakguard::cache::LruCache;\nuse std::time::Duration;\n",
    "LruCache::new(100)"
);
cache_methods!(
    TtlCache,
    "use leakguard::cache::TtlCache;\nuse std::time::Duration;\n",
    "TtlCache::new(100, Duration::from_secs(60))"
);

#[cfg(test)]
mod tests;
