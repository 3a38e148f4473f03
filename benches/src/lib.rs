//! Helpers shared by the benchmarks of leakguard (see `benches/` and `BENCHMARKS.md` at the
//! workspace root): summary statistics for the custom harnesses, the allocation-heavy
//! workload of the load and profiling benches, readings of this process's resident size and
//! of jemalloc's counters, pinning the process to cores, and wrk's command line and report
//! ([`wrk`]) for the load and overhead benches.
//!
//! The benches themselves live in `benches/`:
//!
//! | bench | harness | measures |
//! | --- | --- | --- |
//! | `sample` | criterion | one sample, amortized and per source (fast and full readings) |
//! | `overhead` | custom | an axum service with everything on against the same one with leakguard off, under wrk |
//! | `footprint` | custom | leakguard's heap and resident footprint with a full 24 h history |
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::io;

/// Order statistics of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// First quartile (linear interpolation between closest ranks).
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarizes `values`; `None` when there are none (or any is NaN).
    ///
    /// ```
    /// let s = leakguard_benches::Summary::of(&[4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
    /// assert_eq!((s.min, s.q1, s.median, s.q3, s.max), (1.0, 2.0, 3.0, 4.0, 5.0));
    /// ```
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Self {
            n: v.len(),
            min: v[0],
            q1: quantile(&v, 0.25),
            median: quantile(&v, 0.5),
            q3: quantile(&v, 0.75),
            max: v[v.len() - 1],
        })
    }

    /// Interquartile range.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// A distribution-free confidence interval for the median of `values` (independent
/// measurements of one quantity): the order statistics `x(k)` and `x(n + 1 - k)`, with `k` the
/// largest rank such that a Binomial(n, ½) variable is below `k` with probability at most
/// `(1 - level) / 2`. The interval holds the true median with probability at least `level`
/// whatever the distribution, and it narrows as measurements are added (unlike the spread of
/// the measurements themselves). Returns `(low, high, coverage)`, the coverage being the
/// interval's exact probability; `None` when there are too few values for `level` (fewer
/// than 6 for 0.95), or any is NaN.
///
/// ```
/// let v: Vec<f64> = (1..=10).map(f64::from).collect();
/// let (low, high, coverage) = leakguard_benches::median_interval(&v, 0.95).unwrap();
/// assert_eq!((low, high), (2.0, 9.0));
/// assert!((coverage - 0.9785).abs() < 1e-4);
/// assert!(leakguard_benches::median_interval(&v[..5], 0.95).is_none());
/// ```
pub fn median_interval(values: &[f64], level: f64) -> Option<(f64, f64, f64)> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let n = values.len();
    let tail = (1.0 - level) / 2.0;
    // P(B < k) for k = 0, 1, ...: the largest k with P(B < k) <= tail.
    let mut p_i = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut k = 0;
    for i in 0..n {
        if below + p_i > tail {
            break;
        }
        below += p_i;
        k = i + 1;
        p_i *= (n - i) as f64 / (i + 1) as f64;
    }
    if k == 0 {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some((v[k - 1], v[n - k], 1.0 - 2.0 * below))
}

/// The `q` quantile of sorted, non-empty `v`, interpolating between closest ranks.
fn quantile(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// A small deterministic PRNG (xorshift64*), so that every call of [`workload`] with the same
/// seed does exactly the same work.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One unit of allocation-heavy, single-threaded work (a few milliseconds in a release
/// build): builds and drops many small `String`s, `Vec`s, `HashMap` and `BTreeMap` nodes of
/// varying sizes, and a few larger buffers. The same `seed` always does the same work.
/// Returns a checksum so that nothing can be optimized away.
///
/// ```
/// assert_eq!(leakguard_benches::workload(7), leakguard_benches::workload(7));
/// ```
pub fn workload(seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut sum = 0u64;

    // Short strings of 1..=128 bytes, kept alive together, then dropped together.
    let mut strings: Vec<String> = Vec::new();
    for _ in 0..3_000 {
        let len = 1 + rng.below(128) as usize;
        let mut s = String::with_capacity(len / 2);
        for i in 0..len {
            s.push(char::from(b'a' + ((i as u64 + seed) % 26) as u8));
        }
        strings.push(s);
    }
    sum += strings.iter().map(|s| s.len() as u64).sum::<u64>();
    drop(black_box(strings));

    // A hash map of small vectors that grow one element at a time.
    let mut map: HashMap<u64, Vec<u32>> = HashMap::new();
    for i in 0..4_000u32 {
        map.entry(rng.below(1_024)).or_default().push(i);
    }
    sum += map.values().map(|v| v.len() as u64).sum::<u64>();
    drop(black_box(map));

    // A B-tree with string keys: many small node allocations, some removed on the way.
    let mut tree: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..2_000u64 {
        let key = format!("k{:08x}", rng.next() >> 32);
        let value = vec![(i & 0xff) as u8; 8 + rng.below(248) as usize];
        tree.insert(key, value);
        if i % 7 == 0 {
            let probe = format!("k{:08x}", rng.next() >> 32);
            let _ = tree
                .range(probe..)
                .next()
                .map(|(k, _)| k.clone())
                .map(|k| tree.remove(&k));
        }
    }
    sum += tree.values().map(|v| v.len() as u64).sum::<u64>();
    drop(black_box(tree));

    // A few larger buffers (4 KiB .. 256 KiB), touched so their pages are real.
    for _ in 0..16 {
        let len = 4_096 << rng.below(7);
        let mut buf = vec![0u8; len];
        let step = 4_096.min(len);
        for b in buf.iter_mut().step_by(step) {
            *b = 1;
        }
        sum += black_box(&buf)
            .iter()
            .step_by(step)
            .map(|&b| u64::from(b))
            .sum::<u64>();
    }
    sum
}

/// This process's resident set size from `/proc/self/statm`, bytes.
pub fn resident_bytes() -> io::Result<u64> {
    resident().map(|r| r.total)
}

/// This process's resident set, split as `/proc/self/statm` splits it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resident {
    /// All resident pages, bytes.
    pub total: u64,
    /// Resident pages backed by a file or shared memory (the binary's code and data pages
    /// among them), bytes.
    pub file: u64,
}

impl Resident {
    /// Anonymous resident pages (heap, stacks), bytes.
    pub fn anon(&self) -> u64 {
        self.total.saturating_sub(self.file)
    }
}

/// Reads [`Resident`] from `/proc/self/statm`.
pub fn resident() -> io::Result<Resident> {
    let text = std::fs::read_to_string("/proc/self/statm")?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/statm");
    let _size = fields.next().flatten().ok_or_else(bad)?;
    let total = fields.next().flatten().ok_or_else(bad)?;
    let file = fields.next().flatten().ok_or_else(bad)?;
    let page = page_size();
    Ok(Resident {
        total: total * page,
        file: file * page,
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}

pub mod wrk;

/// jemalloc's counters (meaningful only where jemalloc is the `#[global_allocator]`).
pub mod jemalloc {
    use tikv_jemalloc_ctl::{arenas, epoch, raw, stats, thread};

    /// Global counters after advancing the epoch, bytes.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Global {
        /// `stats.allocated`: live allocations (including objects in thread caches).
        pub allocated: u64,
        /// `stats.active`: bytes in active pages.
        pub active: u64,
        /// `stats.resident`: bytes in physically resident pages jemalloc maps (incl. metadata).
        pub resident: u64,
        /// `stats.metadata`: jemalloc's own metadata.
        pub metadata: u64,
    }

    /// Reads the global counters (advancing the epoch first).
    pub fn global() -> Result<Global, tikv_jemalloc_ctl::Error> {
        epoch::advance()?;
        Ok(Global {
            allocated: stats::allocated::read()? as u64,
            active: stats::active::read()? as u64,
            resident: stats::resident::read()? as u64,
            metadata: stats::metadata::read()? as u64,
        })
    }

    /// How many arenas are initialized (in use by some thread), and how many there can be
    /// (`arenas.narenas`, 4 per CPU by default). jemalloc hands threads arenas round-robin, so
    /// a service with many threads has them all.
    pub fn arenas_in_use() -> Result<(u32, u32), tikv_jemalloc_ctl::Error> {
        // `arena.<i>.initialized` is as of the last epoch.
        epoch::advance()?;
        let n = arenas::narenas::read()?;
        let mut used = 0;
        for i in 0..n {
            let name = format!("arena.{i}.initialized\0");
            // SAFETY: `arena.<i>.initialized` is a bool.
            if unsafe { raw::read::<bool>(name.as_bytes()) }? {
                used += 1;
            }
        }
        Ok((used, n))
    }

    /// Puts `want` arenas in use (as many as there are, at most), by allocating from
    /// `want - 1` threads alive at the same time besides the caller: a new thread takes an
    /// arena no thread holds, initializing one while there are fewer than `arenas.narenas`
    /// (one of which is kept for huge allocations). Returns the arenas in use after.
    pub fn use_arenas(want: u32) -> Result<u32, tikv_jemalloc_ctl::Error> {
        let spawn = want.saturating_sub(1) as usize;
        let all = std::sync::Arc::new(std::sync::Barrier::new(spawn + 1));
        let threads: Vec<_> = (0..spawn)
            .map(|_| {
                let all = std::sync::Arc::clone(&all);
                std::thread::spawn(move || {
                    let v = std::hint::black_box(vec![1u8; 4096]);
                    all.wait();
                    v.len()
                })
            })
            .collect();
        all.wait();
        for t in threads {
            let _ = t.join();
        }
        Ok(arenas_in_use()?.0)
    }

    /// Net bytes this thread has allocated through jemalloc (`thread.allocated` −
    /// `thread.deallocated`, size-class bytes). Unaffected by thread caches, so the difference
    /// of two readings is exactly what this thread's code kept alive in between.
    pub fn thread_net() -> Result<i64, tikv_jemalloc_ctl::Error> {
        let a = thread::allocatedp::read()?.get();
        let d = thread::deallocatedp::read()?.get();
        Ok(a.wrapping_sub(d) as i64)
    }

    /// Returns jemalloc's dirty and muzzy pages to the OS now (by setting every arena's decay
    /// time to 0, which purges, and then restoring it), so that the resident size shows live
    /// pages only. Returns how many arenas were purged.
    pub fn purge() -> Result<u32, tikv_jemalloc_ctl::Error> {
        let n = arenas::narenas::read()?;
        let mut purged = 0;
        for i in 0..n {
            for kind in ["dirty", "muzzy"] {
                let name = format!("arena.{i}.{kind}_decay_ms\0");
                // SAFETY: `arena.<i>.{dirty,muzzy}_decay_ms` are ssize_t (isize) settings.
                let Ok(old) = (unsafe { raw::read::<isize>(name.as_bytes()) }) else {
                    continue; // an arena that was never initialized
                };
                // SAFETY: as above; writing 0 purges the arena's pages of that kind.
                unsafe { raw::write::<isize>(name.as_bytes(), 0)? };
                // SAFETY: as above.
                unsafe { raw::write::<isize>(name.as_bytes(), old)? };
                if kind == "dirty" {
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }
}

/// The CPUs this thread may run on, in order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all zeros is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set, with an index below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Restricts the calling thread, and the threads and processes it starts afterwards, to
/// `cpus`.
pub fn run_on(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::other(format!("no CPU {c}")));
        }
        // SAFETY: CPU_SET writes one bit of `set`, with an index below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restricts the whole process to one CPU (the first it may run on), so that threads started
/// afterwards (a guard's sampler thread) share that core with the caller. Threads inherit the
/// affinity of the thread that creates them; call this before starting any. Returns the CPU.
pub fn pin_to_one_core() -> io::Result<usize> {
    let cpu = *allowed_cpus()?
        .first()
        .ok_or_else(|| io::Error::other("empty CPU affinity set"))?;
    run_on(&[cpu])?;
    Ok(cpu)
}

/// One line describing the machine: CPUs available to this process and the CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} CPUs available, {model}, Linux {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_even_count_interpolates_the_median() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).expect("values");
        assert_eq!(s.median, 2.5);
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
        assert_eq!(s.iqr(), 1.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn the_median_interval_has_the_tabulated_ranks_and_covers_the_median() {
        // Published tables: 95% intervals at the ranks (6, 15) of 20 values, (10, 21) of 30.
        let twenty: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let (low, high, coverage) = median_interval(&twenty, 0.95).expect("20 values");
        assert_eq!((low, high), (6.0, 15.0));
        assert!((coverage - 0.9586).abs() < 1e-4, "{coverage}");
        let thirty: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(
            median_interval(&thirty, 0.95).map(|i| (i.0, i.1)),
            Some((10.0, 21.0))
        );
        // On a skewed distribution (the median of -ln(u) is ln 2), 2,000 intervals of 12
        // values each cover it at least as often as their coverage says.
        let mut rng = Rng::new(3);
        let (mut hits, mut promised) = (0, 0.0);
        for _ in 0..2000 {
            let v: Vec<f64> = (0..12)
                .map(|_| -((rng.below(1 << 30) as f64 + 0.5) / (1u64 << 30) as f64).ln())
                .collect();
            let (low, high, coverage) = median_interval(&v, 0.95).expect("12 values");
            hits += usize::from(low <= 2f64.ln() && 2f64.ln() <= high);
            promised += coverage;
        }
        assert!(
            hits as f64 >= promised - 3.0 * (2000.0f64 * 0.05).sqrt(),
            "{hits} {promised}"
        );
        assert!(median_interval(&[1.0, f64::NAN, 2.0, 3.0, 4.0, 5.0, 6.0], 0.95).is_none());
    }

    #[test]
    fn workload_is_deterministic_and_seed_dependent() {
        assert_eq!(workload(1), workload(1));
        assert_ne!(workload(1), workload(2));
    }

    #[test]
    fn resident_bytes_is_plausible() {
        let rss = resident_bytes().expect("statm");
        assert!(rss > 100_000, "{rss}");
    }
}
