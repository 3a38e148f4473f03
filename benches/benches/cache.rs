//! leakguard's caches against their peers, side by side in one run.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench cache
//! ```
//!
//! Peers: `moka::sync::Cache`, `quick_cache::sync::Cache` (built with its `stats` feature, so
//! that it counts hits and misses as leakguard's caches always do), `mini_moka::sync::Cache`,
//! and `lru::LruCache` behind a `parking_lot::Mutex` ("mutex_lru"); all with their default
//! hashers, `u64` keys and values.
//!
//! Throughput (criterion; time per operation, so lower is better), on 1 and 2 threads:
//! - `get_hit`: uniformly random keys, all present (50 000 keys, capacity 100 000);
//! - `insert_evict`: inserts of new keys into a full cache of 10 000 (every insert evicts);
//! - `mix_90_10`: 90% `get`, 10% `insert`, keys drawn from Zipf(1.0) over 100 000 keys,
//!   capacity 10 000.
//!
//! A summary table follows with the median time per operation of each, the peers' times
//! over leakguard's (above 1: leakguard is faster), and the issue's targets (on the mix,
//! leakguard's throughput at least quick_cache's and at least 3× moka's).
//!
//! Then two tables are printed (not criterion: one deterministic run each):
//! - hit ratio at equal capacity on a Zipf(1.0) trace with a periodic scan of one-time keys
//!   (a miss inserts the key), and on a plain Zipf(1.0) trace at a capacity of 10 % of its keys;
//! - memory per entry: bytes this thread allocated and still holds (jemalloc
//!   `thread.allocated − thread.deallocated`, exact for a single-threaded fill) for a full
//!   cache after churn, per entry, minus the 16 bytes of key and value.
//!
//! Then the same mix on caches with a weigher and with expiry, against the peers' equivalents:
//! - `weighted_mix`: a cache of 10 000 × 2 KiB bytes whose entries weigh 1–4096 bytes (a
//!   function of the value); quick_cache with a `Weighter`, moka and mini-moka with a `weigher`;
//! - `ttl_mix`: 10 000 entries that expire 1 s after their insert; moka and mini-moka with
//!   `time_to_live`; quick_cache has no expiry, so its entry keeps a deadline that `get`
//!   checks (what its users do).
//!
//! Set `CACHE_BENCH_QUICK=1` for a short smoke run, `CACHE_BENCH_TABLES_ONLY=1` for only the
//! hit-ratio and memory tables.
//!
//! Set `CACHE_BENCH_INTERLEAVED=<rounds>` to compare only leakguard and quick_cache on
//! `get_hit`, `insert_evict` and `mix_90_10` (1 and 2 threads) in alternating rounds of
//! 500 000 operations per thread: the median of the rounds' ratios against the target; the
//! process exits 1 when a target is missed.
//!
//! Set `CACHE_BENCH_CALLGRIND=<cache>:<workload>:<ops>` (cache `leakguard` or `quick_cache`,
//! workload `get_hit`, `insert_evict` or `mix_90_10`) to run only that workload's loop, on
//! one thread and without criterion, for counting instructions:
//! `valgrind --tool=callgrind --toggle-collect='cache::callgrind_*' <bench binary>` collects
//! the setup's warm-up pass (200 000 operations) and then `ops` operations; the difference
//! between a run with `ops` = 1 000 000 and one with 0, over 1 000 000, is the per-operation
//! count (BENCHMARKS.md has the commands).

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// The operations every cache under test offers.
trait Cache: Send + Sync {
    const NAME: &'static str;
    fn with_capacity(capacity: u64) -> Self;
    fn get(&self, key: u64) -> Option<u64>;
    fn insert(&self, key: u64, value: u64);
    fn len(&self) -> u64;
    /// A cache of `capacity` bytes whose entries weigh [`weight_of`] their value; `None` when
    /// the cache has no weigher.
    fn weighted(_capacity: u64) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
    /// A cache of `capacity` entries that expire `ttl` after their insert; `None` when the
    /// cache has no expiry.
    fn expiring(_capacity: u64, _ttl: Duration) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// The weight in bytes of an entry of the weighted workload: 1–4096, 2048 on average, a
/// function of the value (so the same for every cache).
#[inline]
fn weight_of(value: u64) -> u64 {
    (value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) + 1
}

struct Leakguard(leakguard::cache::LruCache<u64, u64>);
struct Moka(moka::sync::Cache<u64, u64>);
struct Quick(quick_cache::sync::Cache<u64, u64>);
struct MiniMoka(mini_moka::sync::Cache<u64, u64>);
struct MutexLru(parking_lot::Mutex<lru::LruCache<u64, u64>>);
/// quick_cache with its weigher (a different type from the unweighted one).
struct QuickWeighted(quick_cache::sync::Cache<u64, u64, BytesWeighter>);
/// quick_cache has no expiry: its users keep a deadline with the value and check it on
/// `get`, which is what this does (an expired entry reads as a miss and is removed).
struct QuickTtl(quick_cache::sync::Cache<u64, (u64, Instant)>, Duration);

#[derive(Clone)]
struct BytesWeighter;

impl quick_cache::Weighter<u64, u64> for BytesWeighter {
    fn weight(&self, _key: &u64, value: &u64) -> u64 {
        weight_of(*value)
    }
}

impl Cache for Leakguard {
    const NAME: &'static str = "leakguard";
    fn with_capacity(capacity: u64) -> Self {
        Self(leakguard::cache::LruCache::new(capacity))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value)
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn weighted(capacity: u64) -> Option<Self> {
        Some(Self(
            leakguard::cache::LruCache::builder(capacity)
                .weigher(|_, v: &u64| weight_of(*v))
                .build(),
        ))
    }
    fn expiring(capacity: u64, ttl: Duration) -> Option<Self> {
        Some(Self(
            leakguard::cache::LruCache::builder(capacity)
                .ttl(ttl)
                .build(),
        ))
    }
}

impl Cache for Moka {
    const NAME: &'static str = "moka";
    fn with_capacity(capacity: u64) -> Self {
        Self(moka::sync::Cache::new(capacity))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value)
    }
    fn len(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.entry_count()
    }
    fn weighted(capacity: u64) -> Option<Self> {
        Some(Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, v: &u64| weight_of(*v) as u32)
                .build(),
        ))
    }
    fn expiring(capacity: u64, ttl: Duration) -> Option<Self> {
        Some(Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        ))
    }
}

impl Cache for Quick {
    const NAME: &'static str = "quick_cache";
    fn with_capacity(capacity: u64) -> Self {
        Self(quick_cache::sync::Cache::new(capacity as usize))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value)
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

impl Cache for QuickWeighted {
    const NAME: &'static str = "quick_cache";
    fn with_capacity(capacity: u64) -> Self {
        Self::weighted(capacity * 2048).unwrap_or_else(|| unreachable!())
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value)
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn weighted(capacity: u64) -> Option<Self> {
        // quick_cache sizes its table from an estimate of the entries: capacity / mean weight.
        Some(Self(quick_cache::sync::Cache::with_weighter(
            (capacity / 2048) as usize,
            capacity,
            BytesWeighter,
        )))
    }
}

impl Cache for QuickTtl {
    const NAME: &'static str = "quick_cache";
    fn with_capacity(capacity: u64) -> Self {
        Self(
            quick_cache::sync::Cache::new(capacity as usize),
            Duration::MAX,
        )
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        let (value, deadline) = self.0.get(&key)?;
        if Instant::now() < deadline {
            Some(value)
        } else {
            self.0.remove(&key);
            None
        }
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        let deadline = Instant::now()
            .checked_add(self.1)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 32));
        self.0.insert(key, (value, deadline))
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn expiring(capacity: u64, ttl: Duration) -> Option<Self> {
        Some(Self(quick_cache::sync::Cache::new(capacity as usize), ttl))
    }
}

impl Cache for MiniMoka {
    const NAME: &'static str = "mini_moka";
    fn with_capacity(capacity: u64) -> Self {
        Self(mini_moka::sync::Cache::new(capacity))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value)
    }
    fn len(&self) -> u64 {
        mini_moka::sync::ConcurrentCacheExt::sync(&self.0);
        self.0.entry_count()
    }
    fn weighted(capacity: u64) -> Option<Self> {
        Some(Self(
            mini_moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, v: &u64| weight_of(*v) as u32)
                .build(),
        ))
    }
    fn expiring(capacity: u64, ttl: Duration) -> Option<Self> {
        Some(Self(
            mini_moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        ))
    }
}

impl Cache for MutexLru {
    const NAME: &'static str = "mutex_lru";
    fn with_capacity(capacity: u64) -> Self {
        let cap = NonZeroUsize::new(capacity as usize).unwrap_or(NonZeroUsize::MIN);
        Self(parking_lot::Mutex::new(lru::LruCache::new(cap)))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.lock().get(&key).copied()
    }
    #[inline]
    fn insert(&self, key: u64, value: u64) {
        self.0.lock().put(key, value);
    }
    fn len(&self) -> u64 {
        self.0.lock().len() as u64
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over `0..n` by inversion of the cumulative distribution.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for i in 0..n {
            sum += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// Per benchmark (workload, threads, cache): the wall time per operation of each criterion
/// sample, in nanoseconds.
type Results = std::sync::Mutex<Vec<(String, usize, &'static str, Vec<f64>)>>;
static RESULTS: Results = std::sync::Mutex::new(Vec::new());

fn record(
    workload: &str,
    threads: usize,
    cache: &'static str,
    iters: u64,
    d: Duration,
) -> Duration {
    let per_op = d.as_nanos() as f64 / iters.max(1) as f64 / threads as f64;
    let mut r = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    match r
        .iter_mut()
        .find(|(w, t, c, _)| w == workload && *t == threads && *c == cache)
    {
        Some((_, _, _, v)) => v.push(per_op),
        None => r.push((workload.to_owned(), threads, cache, vec![per_op])),
    }
    d
}

const TRACE_LEN: usize = 1 << 20;
const MASK: usize = TRACE_LEN - 1;

/// Runs `op` over the trace on `threads` threads (each starting at its own offset), `iters`
/// operations per thread; returns the wall time of the slowest.
fn run_threads(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    run_threads_cpu(threads, iters, op).0
}

/// The calling thread's CPU time (user and system).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// [`run_threads`], also returning the CPU time the threads spent in the loop, summed: on a
/// machine shared with other work, time a thread waits for a core is in the wall time and not
/// in its CPU time.
fn run_threads_cpu(
    threads: usize,
    iters: u64,
    op: impl Fn(usize, u64) + Sync,
) -> (Duration, Duration) {
    if threads == 1 {
        let cpu = thread_cpu();
        let start = Instant::now();
        for i in 0..iters {
            op(0, i);
        }
        return (start.elapsed(), thread_cpu().saturating_sub(cpu));
    }
    let barrier = Barrier::new(threads + 1);
    let mut elapsed = Duration::ZERO;
    let cpu = std::sync::Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, op, cpu) = (&barrier, &op, &cpu);
            s.spawn(move || {
                barrier.wait();
                let before = thread_cpu();
                for i in 0..iters {
                    op(t, i);
                }
                let spent = thread_cpu().saturating_sub(before);
                *cpu.lock().unwrap_or_else(|e| e.into_inner()) += spent;
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        elapsed = start.elapsed();
    });
    (elapsed, cpu.into_inner().unwrap_or_else(|e| e.into_inner()))
}

struct Traces {
    uniform_hits: Vec<u64>,
    zipf_mix: Vec<u64>,
}

fn traces() -> Traces {
    let mut rng = Rng(42);
    let uniform_hits = (0..TRACE_LEN).map(|_| rng.next() % GET_KEYS).collect();
    let zipf = Zipf::new(MIX_KEYS as usize, 1.0);
    // Low bit: 1 = write.
    let zipf_mix = (0..TRACE_LEN)
        .map(|_| {
            let key = zipf.sample(&mut rng);
            let write = u64::from(rng.next().is_multiple_of(10));
            (key << 1) | write
        })
        .collect();
    Traces {
        uniform_hits,
        zipf_mix,
    }
}

const GET_KEYS: u64 = 50_000;
const GET_CAPACITY: u64 = 100_000;
const EVICT_CAPACITY: u64 = 10_000;
const MIX_KEYS: u64 = 100_000;
const MIX_CAPACITY: u64 = 10_000;

fn bench_cache<C: Cache>(c: &mut Criterion, traces: &Traces, threads: usize) {
    let tag = format!("{}t", threads);
    // get_hit
    {
        let cache = C::with_capacity(GET_CAPACITY);
        for k in 0..GET_KEYS {
            cache.insert(k, k);
        }
        assert_eq!(cache.len(), GET_KEYS, "{}: all keys present", C::NAME);
        let mut g = c.benchmark_group(format!("get_hit/{tag}"));
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
            b.iter_custom(|iters| {
                let d = run_threads(threads, iters, |t, i| {
                    let key = traces.uniform_hits[(i as usize + t * 7919) & MASK];
                    black_box(cache.get(key));
                });
                record("get_hit", threads, C::NAME, iters, d)
            })
        });
        g.finish();
    }
    // insert_evict
    {
        let cache = C::with_capacity(EVICT_CAPACITY);
        for k in 0..EVICT_CAPACITY {
            cache.insert(k, k);
        }
        let next = std::sync::atomic::AtomicU64::new(1 << 32);
        let mut g = c.benchmark_group(format!("insert_evict/{tag}"));
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
            b.iter_custom(|iters| {
                let base =
                    next.fetch_add(iters * threads as u64, std::sync::atomic::Ordering::Relaxed);
                let d = run_threads(threads, iters, |t, i| {
                    let key = base + (t as u64) * iters + i;
                    cache.insert(key, key);
                });
                record("insert_evict", threads, C::NAME, iters, d)
            })
        });
        g.finish();
    }
    // mix_90_10
    {
        let cache = C::with_capacity(MIX_CAPACITY);
        for &x in traces.zipf_mix.iter().take(200_000) {
            if cache.get(x >> 1).is_none() {
                cache.insert(x >> 1, x);
            }
        }
        let mut g = c.benchmark_group(format!("mix_90_10/{tag}"));
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
            b.iter_custom(|iters| {
                let d = run_threads(threads, iters, |t, i| {
                    let x = traces.zipf_mix[(i as usize + t * 524_287) & MASK];
                    if x & 1 == 1 {
                        cache.insert(x >> 1, x);
                    } else {
                        black_box(cache.get(x >> 1));
                    }
                });
                record("mix_90_10", threads, C::NAME, iters, d)
            })
        });
        g.finish();
    }
}

/// The 90/10 mix of `mix_90_10` on a cache built by `make`, recorded as `workload`.
fn bench_mix_on<C: Cache>(
    c: &mut Criterion,
    traces: &Traces,
    threads: usize,
    workload: &'static str,
    cache: C,
) {
    for &x in traces.zipf_mix.iter().take(200_000) {
        if cache.get(x >> 1).is_none() {
            cache.insert(x >> 1, x);
        }
    }
    let mut g = c.benchmark_group(format!("{workload}/{threads}t"));
    g.throughput(Throughput::Elements(threads as u64));
    g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
        b.iter_custom(|iters| {
            let d = run_threads(threads, iters, |t, i| {
                let x = traces.zipf_mix[(i as usize + t * 524_287) & MASK];
                if x & 1 == 1 {
                    cache.insert(x >> 1, x);
                } else {
                    black_box(cache.get(x >> 1));
                }
            });
            record(workload, threads, C::NAME, iters, d)
        })
    });
    g.finish();
}

/// Bytes of the weighted workload's cache: 10 000 entries of the mean weight (2 KiB).
const WEIGHTED_CAPACITY: u64 = MIX_CAPACITY * 2048;
/// Time to live of the TTL workload: a hot key expires and is inserted again about once a
/// second of the run.
const TTL: Duration = Duration::from_secs(1);

/// `weighted_mix`: the mix on a cache of [`WEIGHTED_CAPACITY`] bytes whose entries weigh
/// 1–4096 bytes ([`weight_of`]); `ttl_mix`: the mix on a cache of [`MIX_CAPACITY`] entries
/// that expire [`TTL`] after their insert.
fn bench_weighted_and_ttl<C: Cache>(c: &mut Criterion, traces: &Traces, threads: usize) {
    if let Some(cache) = C::weighted(WEIGHTED_CAPACITY) {
        bench_mix_on(c, traces, threads, "weighted_mix", cache);
    }
    if let Some(cache) = C::expiring(MIX_CAPACITY, TTL) {
        bench_mix_on(c, traces, threads, "ttl_mix", cache);
    }
}

/// Hit ratio on Zipf(1.0) over `keys` keys with, every `period` requests, a scan of `scan`
/// one-time keys; a miss inserts the key. Returns (hits, requests).
fn hit_ratio<C: Cache>(
    capacity: u64,
    keys: usize,
    requests: usize,
    period: usize,
    scan: u64,
) -> f64 {
    let cache = C::with_capacity(capacity);
    let zipf = Zipf::new(keys, 1.0);
    let mut rng = Rng(7);
    let mut next_scan_key = 1u64 << 40;
    let (mut hits, mut total) = (0u64, 0u64);
    let mut access = |key: u64| {
        total += 1;
        if cache.get(key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, key);
        }
    };
    for i in 0..requests {
        if i % period == period - 1 {
            for _ in 0..scan {
                access(next_scan_key);
                next_scan_key += 1;
            }
        }
        access(zipf.sample(&mut rng));
    }
    hits as f64 / total as f64
}

fn thread_net() -> i64 {
    let a = tikv_jemalloc_ctl::thread::allocatedp::read()
        .map(|p| p.get())
        .unwrap_or(0);
    let d = tikv_jemalloc_ctl::thread::deallocatedp::read()
        .map(|p| p.get())
        .unwrap_or(0);
    a as i64 - d as i64
}

/// Bytes of overhead per entry beyond the 16 of a `u64` key and value, for a full cache of
/// `capacity` after inserting `2 × capacity` distinct keys (with a read of an older key
/// every third insert).
fn overhead_per_entry<C: Cache>(capacity: u64) -> (f64, u64) {
    let before = thread_net();
    let cache = C::with_capacity(capacity);
    for k in 0..2 * capacity {
        cache.insert(k, k);
        if k % 3 == 0 {
            black_box(cache.get(k / 2));
        }
    }
    let len = cache.len();
    let held = thread_net() - before;
    drop(cache);
    (held as f64 / len as f64 - 16.0, len)
}

fn tables(quick: bool) {
    let (requests, keys) = if quick {
        (200_000, 100_000)
    } else {
        (2_000_000, 1_000_000)
    };
    println!(
        "\n## hit ratio: Zipf(1.0) over {keys} keys, {requests} requests, every 100 000 a scan of 20 000 one-time keys"
    );
    println!("| capacity | leakguard | quick_cache | moka | mini_moka | mutex_lru |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for capacity in [10_000u64, 50_000] {
        let row = [
            hit_ratio::<Leakguard>(capacity, keys, requests, 100_000, 20_000),
            hit_ratio::<Quick>(capacity, keys, requests, 100_000, 20_000),
            hit_ratio::<Moka>(capacity, keys, requests, 100_000, 20_000),
            hit_ratio::<MiniMoka>(capacity, keys, requests, 100_000, 20_000),
            hit_ratio::<MutexLru>(capacity, keys, requests, 100_000, 20_000),
        ];
        println!(
            "| {capacity} | {} |",
            row.map(|r| format!("{:.4}", r)).join(" | ")
        );
    }
    let requests = if quick { 200_000 } else { 2_000_000 };
    println!(
        "\n## hit ratio: Zipf(1.0) over 100 000 keys, capacity 10 000 (10 %), {requests} requests, no scan"
    );
    println!("| leakguard | quick_cache | moka | mini_moka | mutex_lru |");
    println!("| --- | --- | --- | --- | --- |");
    let row = [
        hit_ratio::<Leakguard>(10_000, 100_000, requests, usize::MAX, 0),
        hit_ratio::<Quick>(10_000, 100_000, requests, usize::MAX, 0),
        hit_ratio::<Moka>(10_000, 100_000, requests, usize::MAX, 0),
        hit_ratio::<MiniMoka>(10_000, 100_000, requests, usize::MAX, 0),
        hit_ratio::<MutexLru>(10_000, 100_000, requests, usize::MAX, 0),
    ];
    println!("| {} |", row.map(|r| format!("{:.4}", r)).join(" | "));
    let capacity = if quick { 20_000 } else { 100_000 };
    println!(
        "\n## memory per entry: bytes beyond the 16 of key and value, full cache of {capacity} after churn"
    );
    println!("| cache | bytes/entry | entries |");
    println!("| --- | --- | --- |");
    for (name, (bytes, len)) in [
        (Leakguard::NAME, overhead_per_entry::<Leakguard>(capacity)),
        (Quick::NAME, overhead_per_entry::<Quick>(capacity)),
        (Moka::NAME, overhead_per_entry::<Moka>(capacity)),
        (MiniMoka::NAME, overhead_per_entry::<MiniMoka>(capacity)),
        (MutexLru::NAME, overhead_per_entry::<MutexLru>(capacity)),
    ] {
        println!("| {name} | {bytes:.1} | {len} |");
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians of the last `samples` samples (the measurement; earlier ones are criterion's
/// warm-up), ratios against leakguard, and the targets.
fn summary(samples: usize) {
    let r = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    let time = |w: &str, t: usize, c: &str| {
        r.iter()
            .find(|(rw, rt, rc, _)| rw == w && *rt == t && *rc == c)
            .map(|(_, _, _, v)| median(&v[v.len().saturating_sub(samples)..]))
    };
    let peers = [Quick::NAME, Moka::NAME, MiniMoka::NAME, MutexLru::NAME];
    println!(
        "\n## throughput: median ns per operation (peer / leakguard: above 1, leakguard is faster)"
    );
    println!("| workload | threads | leakguard | quick_cache | moka | mini_moka | mutex_lru |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for w in [
        "get_hit",
        "insert_evict",
        "mix_90_10",
        "weighted_mix",
        "ttl_mix",
    ] {
        for t in [1, 2] {
            let Some(lg) = time(w, t, Leakguard::NAME) else {
                continue;
            };
            let cells: Vec<String> = peers
                .iter()
                .map(|p| match time(w, t, p) {
                    Some(x) => format!("{x:.1} ({:.2}×)", x / lg),
                    None => "-".to_owned(),
                })
                .collect();
            println!("| {w} | {t} | {lg:.1} | {} |", cells.join(" | "));
        }
    }
    for w in ["get_hit", "insert_evict", "mix_90_10"] {
        for t in [1, 2] {
            let (Some(lg), Some(q)) = (time(w, t, Leakguard::NAME), time(w, t, Quick::NAME)) else {
                continue;
            };
            println!(
                "target, {w} on {t} thread(s): throughput ≥ 1.05× quick_cache's: {:.2}× ({})",
                q / lg,
                if q / lg >= 1.05 { "met" } else { "not met" },
            );
        }
    }
}

/// The `get_hit` loop, for `CACHE_BENCH_CALLGRIND` (one thread: the same keys as thread 0).
#[inline(never)]
fn callgrind_get_hit<C: Cache>(cache: &C, traces: &Traces, ops: u64) {
    for i in 0..ops {
        black_box(cache.get(traces.uniform_hits[i as usize & MASK]));
    }
}

/// The `mix_90_10` loop, for `CACHE_BENCH_CALLGRIND`.
#[inline(never)]
fn callgrind_mix<C: Cache>(cache: &C, traces: &Traces, ops: u64) {
    for i in 0..ops {
        let x = traces.zipf_mix[i as usize & MASK];
        if x & 1 == 1 {
            cache.insert(x >> 1, x);
        } else {
            black_box(cache.get(x >> 1));
        }
    }
}

/// The `insert_evict` loop, for `CACHE_BENCH_CALLGRIND`: new keys from `base`, every insert
/// evicts.
#[inline(never)]
fn callgrind_insert_evict<C: Cache>(cache: &C, base: u64, ops: u64) {
    for i in 0..ops {
        let key = base + i;
        cache.insert(key, key);
    }
}

/// The cache of `workload` (`get_hit`, `insert_evict` or `mix_90_10`), set up as the
/// criterion benchmark sets it up.
fn setup<C: Cache>(workload: &str, traces: &Traces) -> C {
    match workload {
        "get_hit" => {
            let cache = C::with_capacity(GET_CAPACITY);
            for k in 0..GET_KEYS {
                cache.insert(k, k);
            }
            cache
        }
        "mix_90_10" => {
            let cache = C::with_capacity(MIX_CAPACITY);
            for &x in traces.zipf_mix.iter().take(200_000) {
                if cache.get(x >> 1).is_none() {
                    cache.insert(x >> 1, x);
                }
            }
            cache
        }
        "insert_evict" => {
            let cache = C::with_capacity(EVICT_CAPACITY);
            for k in 0..EVICT_CAPACITY {
                cache.insert(k, k);
            }
            cache
        }
        _ => panic!("workload {workload:?} is not get_hit, insert_evict or mix_90_10"),
    }
}

/// One workload on one thread, set up as the criterion benchmark sets it up, then a warm-up
/// pass of 200 000 operations and `ops` more.
fn callgrind_run<C: Cache>(workload: &str, traces: &Traces, ops: u64) {
    let cache = setup::<C>(workload, traces);
    match workload {
        "get_hit" => {
            callgrind_get_hit(&cache, traces, 200_000);
            callgrind_get_hit(&cache, traces, ops);
        }
        "mix_90_10" => {
            callgrind_mix(&cache, traces, 200_000);
            callgrind_mix(&cache, traces, ops);
        }
        _ => {
            callgrind_insert_evict(&cache, 1 << 32, 200_000);
            callgrind_insert_evict(&cache, (1 << 32) + 200_000, ops);
        }
    }
}

/// Operations per thread in a round of the interleaved comparison (10–40 ms).
const ROUND_OPS: u64 = 500_000;

/// One round of `workload` on `cache`: [`ROUND_OPS`] operations per thread, the trace read
/// from position `start` (new keys from `next_key` for `insert_evict`); wall nanoseconds per
/// operation, as the criterion benchmark counts them, and CPU nanoseconds per operation.
fn interleaved_round<C: Cache>(
    workload: &str,
    cache: &C,
    traces: &Traces,
    threads: usize,
    start: usize,
    next_key: &std::sync::atomic::AtomicU64,
) -> (f64, f64) {
    let ops = ROUND_OPS;
    let (wall, cpu) = match workload {
        "get_hit" => run_threads_cpu(threads, ops, |t, i| {
            let key = traces.uniform_hits[(start + i as usize + t * 7919) & MASK];
            black_box(cache.get(key));
        }),
        "mix_90_10" => run_threads_cpu(threads, ops, |t, i| {
            let x = traces.zipf_mix[(start + i as usize + t * 524_287) & MASK];
            if x & 1 == 1 {
                cache.insert(x >> 1, x);
            } else {
                black_box(cache.get(x >> 1));
            }
        }),
        _ => {
            let base =
                next_key.fetch_add(ops * threads as u64, std::sync::atomic::Ordering::Relaxed);
            run_threads_cpu(threads, ops, |t, i| {
                let key = base + (t as u64) * ops + i;
                cache.insert(key, key);
            })
        }
    };
    let n = (ops * threads as u64) as f64;
    (wall.as_nanos() as f64 / n, cpu.as_nanos() as f64 / n)
}

/// `CACHE_BENCH_INTERLEAVED=<rounds>`: leakguard against quick_cache on `get_hit`,
/// `insert_evict` and `mix_90_10`, 1 and 2 threads, in alternating rounds (ABBA order) on
/// caches set up once, so that both see the same machine load; the ratio of each pair of
/// rounds, then the median of the ratios against the target (≥ 1.05× quick_cache's
/// throughput, by wall time). The same ratios by CPU time are printed beside them: on a
/// machine shared with other work they leave out the time a thread waited for a core. So is
/// the ratio of each cache's fastest round (and those rounds' ns/op, leakguard's first): the
/// rounds least disturbed by other work on such a machine.
/// Returns whether every target is met.
fn interleaved(rounds: usize) -> bool {
    let traces = traces();
    let mut all_met = true;
    println!(
        "## leakguard vs quick_cache, {rounds} interleaved rounds of {ROUND_OPS} operations per thread"
    );
    println!(
        "| workload | threads | leakguard ns/op | quick_cache ns/op | quick_cache / leakguard: median (quartiles) | by CPU time | fastest rounds | target ≥ 1.05 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let quartiles = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (median(&v), v[v.len() / 4], v[v.len() * 3 / 4])
    };
    for workload in ["get_hit", "insert_evict", "mix_90_10"] {
        for threads in [1, 2] {
            let lg = setup::<Leakguard>(workload, &traces);
            let qc = setup::<Quick>(workload, &traces);
            let (lg_key, qc_key) = (
                std::sync::atomic::AtomicU64::new(1 << 32),
                std::sync::atomic::AtomicU64::new(1 << 32),
            );
            let (mut lg_ns, mut qc_ns) = (Vec::new(), Vec::new());
            let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
            // Round 0 is a warm-up.
            for r in 0..=rounds {
                let start = (r * ROUND_OPS as usize) & MASK;
                let lg_round =
                    || interleaved_round(workload, &lg, &traces, threads, start, &lg_key);
                let qc_round =
                    || interleaved_round(workload, &qc, &traces, threads, start, &qc_key);
                let (a, b) = if r % 2 == 0 {
                    let a = lg_round();
                    (a, qc_round())
                } else {
                    let b = qc_round();
                    (lg_round(), b)
                };
                if r > 0 {
                    lg_ns.push(a.0);
                    qc_ns.push(b.0);
                    ratios.push(b.0 / a.0);
                    cpu_ratios.push(b.1 / a.1);
                }
            }
            let (ratio, q1, q3) = quartiles(&ratios);
            let (cpu, c1, c3) = quartiles(&cpu_ratios);
            let met = ratio >= 1.05;
            all_met &= met;
            // On a machine shared with other work, each cache's fastest round is the one least
            // disturbed: the ratio of the two is a steadier figure than the medians there.
            let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "| {workload} | {threads} | {:.1} | {:.1} | {ratio:.3} ({q1:.3}–{q3:.3}) | {cpu:.3} ({c1:.3}–{c3:.3}) | {:.3} ({:.1} / {:.1}) | {} |",
                median(&lg_ns),
                median(&qc_ns),
                fastest(&qc_ns) / fastest(&lg_ns),
                fastest(&lg_ns),
                fastest(&qc_ns),
                if met { "met" } else { "not met" }
            );
        }
    }
    all_met
}

fn callgrind(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [cache, workload, ops] = parts[..] else {
        panic!("CACHE_BENCH_CALLGRIND={spec:?}: expected <cache>:<workload>:<ops>");
    };
    let ops: u64 = ops.parse().expect("CACHE_BENCH_CALLGRIND: ops is a number");
    let traces = traces();
    match cache {
        "leakguard" => callgrind_run::<Leakguard>(workload, &traces, ops),
        "quick_cache" => callgrind_run::<Quick>(workload, &traces, ops),
        _ => panic!("CACHE_BENCH_CALLGRIND: cache {cache:?} is not leakguard or quick_cache"),
    }
}

fn main() {
    if let Some(spec) = std::env::var_os("CACHE_BENCH_CALLGRIND") {
        callgrind(&spec.to_string_lossy());
        return;
    }
    if let Some(rounds) = std::env::var_os("CACHE_BENCH_INTERLEAVED") {
        let rounds: usize = rounds
            .to_string_lossy()
            .parse()
            .expect("CACHE_BENCH_INTERLEAVED: a number of rounds");
        if !interleaved(rounds.max(4)) {
            std::process::exit(1);
        }
        return;
    }
    let quick = std::env::var_os("CACHE_BENCH_QUICK").is_some();
    if std::env::var_os("CACHE_BENCH_TABLES_ONLY").is_some() {
        tables(quick);
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(if quick { 100 } else { 500 }))
        .measurement_time(Duration::from_millis(if quick { 300 } else { 2000 }))
        .sample_size(if quick { 10 } else { 30 });
    let traces = traces();
    for threads in [1, 2] {
        bench_cache::<Leakguard>(&mut c, &traces, threads);
        bench_cache::<Quick>(&mut c, &traces, threads);
        bench_cache::<Moka>(&mut c, &traces, threads);
        bench_cache::<MiniMoka>(&mut c, &traces, threads);
        bench_cache::<MutexLru>(&mut c, &traces, threads);
    }
    for threads in [1, 2] {
        bench_weighted_and_ttl::<Leakguard>(&mut c, &traces, threads);
        bench_weighted_and_ttl::<QuickWeighted>(&mut c, &traces, threads);
        bench_weighted_and_ttl::<QuickTtl>(&mut c, &traces, threads);
        bench_weighted_and_ttl::<Moka>(&mut c, &traces, threads);
        bench_weighted_and_ttl::<MiniMoka>(&mut c, &traces, threads);
    }
    c.final_summary();
    summary(if quick { 10 } else { 30 });
    tables(quick);
}
