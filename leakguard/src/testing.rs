//! Leak assertions for a service's own tests.
//!
//! [`assert_no_leak`] runs a closure for a warm-up, then for a number of measured
//! iterations, and panics with a readable message when live heap memory or open handles
//! grew per iteration:
//!
//! ```
//! # #[cfg(feature = "jemalloc")]
//! #[global_allocator]
//! static A: leakguard::Jemalloc = leakguard::Jemalloc;
//!
//! # #[cfg(feature = "jemalloc")]
//! # fn main() {
//! use leakguard::testing::{LeakCheck, assert_no_leak};
//!
//! let mut cache = std::collections::HashMap::new();
//! let mut n = 0;
//! assert_no_leak(|| {
//!     // Bounded: the same 10 keys again and again.
//!     n += 1;
//!     cache.insert(n % 10, vec![0u8; 256]);
//! });
//!
//! let failure = LeakCheck::new()
//!     .check(|| std::mem::forget(vec![0u8; 100]))
//!     .unwrap_err();
//! assert!(failure.to_string().contains("bytes per iteration"));
//! # }
//! # #[cfg(not(feature = "jemalloc"))]
//! # fn main() {}
//! ```
//!
//! # How it measures
//!
//! - **Heap**: jemalloc's per-thread counters of bytes allocated and freed
//!   (`thread.allocatedp`, `thread.deallocatedp`), read before and after the iterations.
//!   They only see the calling thread, so tests running in parallel on other threads do
//!   not disturb the measurement, and reading them costs nothing per iteration. They need
//!   jemalloc as the test binary's global allocator
//!   (`#[global_allocator] static A: leakguard::Jemalloc = leakguard::Jemalloc;`); without
//!   it the check fails with that advice, or measures handles only
//!   ([`LeakCheck::handles_only`]).
//! - **Handles**: while the iterations run, every handle the calling thread opens
//!   ([`track`](crate::track), [`Tracked`](crate::Tracked)) is recorded with its creation
//!   site, whatever the kind's sampling, and tagged with this measurement; the ones still
//!   open at the end are the leaked ones. Other threads' handles are not counted.
//!
//! A leak must show in **both halves** of the measured iterations: a one-off allocation
//! (a lazily built table, a cache filling up to its bound) grows one half only and is not
//! a leak. The amount per iteration is the smaller of the two halves' rates.
//!
//! # Caveats
//!
//! - Memory allocated on this thread and freed by another (sent through a channel, say)
//!   counts as growth here; memory allocated by threads the closure spawns is not seen.
//! - Collections grow by doubling, so a closure that leaks by pushing into a `Vec` grows
//!   the heap only at the doublings: use at least as many iterations as warm-up
//!   iterations (the defaults do) so each half sees one.
//! - Do not print from the closure: the test harness captures output into a buffer that
//!   grows.
//!
//! # Cost
//!
//! The measured iterations run the bare closure: the heap counters are read three times
//! in all. A handle opened during the measurement costs a stack capture (a few
//! microseconds). Compare dhat's testing mode, which intercepts every allocation (about a
//! thousand times slower).

use crate::handles::{self, SiteReport};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Warm-up iterations by default.
pub const DEFAULT_WARMUP: u32 = 10;
/// Measured iterations by default.
pub const DEFAULT_ITERATIONS: u32 = 100;

/// Runs `f` ([`DEFAULT_WARMUP`] + [`DEFAULT_ITERATIONS`] times) and panics with a readable
/// message if live heap memory or open handles grow per iteration. See the
/// [module documentation](self).
#[track_caller]
pub fn assert_no_leak(f: impl FnMut()) -> LeakMeasurement {
    LeakCheck::new().assert(f)
}

/// How to check a closure for leaks: warm-up, iterations, tolerances.
///
/// ```
/// # #[cfg(feature = "jemalloc")]
/// # #[global_allocator]
/// # static A: leakguard::Jemalloc = leakguard::Jemalloc;
/// # #[cfg(feature = "jemalloc")]
/// # fn main() {
/// use leakguard::testing::LeakCheck;
///
/// let m = LeakCheck::new()
///     .warmup(5)
///     .iterations(200)
///     .max_bytes_per_iteration(16)
///     .assert(|| drop(vec![1u8; 4096]));
/// assert_eq!(m.heap.unwrap().total_bytes, 0);
/// # }
/// # #[cfg(not(feature = "jemalloc"))]
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a LeakCheck does nothing until `assert`, `check` or `measure` runs a closure"]
pub struct LeakCheck {
    warmup: u32,
    iterations: u32,
    max_bytes: f64,
    max_handles: f64,
    heap: bool,
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Live heap growth on the measuring thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadHeapGrowth {
    /// Bytes, all measured iterations.
    pub total_bytes: i64,
    /// Bytes, first half of the iterations.
    pub first_half_bytes: i64,
    /// Bytes, second half.
    pub second_half_bytes: i64,
    /// The smaller of the two halves' growth per iteration (bytes; negative when the heap
    /// shrank).
    pub bytes_per_iteration: f64,
}

/// Former name of [`ThreadHeapGrowth`] (not to be confused with
/// [`profile::HeapGrowth`](crate::profile::HeapGrowth), growth by allocation site).
#[deprecated(note = "renamed `ThreadHeapGrowth`")]
#[doc(hidden)]
pub type HeapGrowth = ThreadHeapGrowth;

/// Handles of one kind opened during the measured iterations and still open.
#[derive(Debug, Clone, PartialEq)]
pub struct HandleGrowth {
    /// The kind.
    pub kind: String,
    /// Opened during the iterations and still open.
    pub left_open: u64,
    /// Of which opened in the first half of the iterations.
    pub first_half: u64,
    /// And in the second half.
    pub second_half: u64,
    /// The smaller of the two halves' count per iteration.
    pub per_iteration: f64,
    /// Where they were opened, most first.
    pub sites: Vec<SiteReport>,
}

/// What one run of [`LeakCheck`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakMeasurement {
    /// Warm-up iterations run.
    pub warmup: u32,
    /// Measured iterations run.
    pub iterations: u32,
    /// Heap growth; `None` when it could not be measured (see `heap_note`).
    pub heap: Option<ThreadHeapGrowth>,
    /// Why the heap was not measured.
    pub heap_note: Option<String>,
    /// Kinds with handles left open, most first.
    pub handles: Vec<HandleGrowth>,
    /// Handles the measurement could not record because leakguard's table of sampled
    /// handles was full (the counts above are then lower bounds).
    pub handles_unrecorded: u64,
    /// Time the measured iterations took.
    pub elapsed: Duration,
}

/// A closure leaks (or its heap could not be measured); displays the readable message.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakError {
    /// What was measured.
    pub measurement: Box<LeakMeasurement>,
    message: String,
}

impl fmt::Display for LeakError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LeakError {}

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

fn next_tag() -> u32 {
    loop {
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        if tag != 0 {
            return tag;
        }
    }
}

/// Restores the thread's previous measurement tag, also when the closure panics.
struct RestoreTag(u32);

impl Drop for RestoreTag {
    fn drop(&mut self) {
        handles::swap_tag(self.0);
    }
}

impl LeakCheck {
    /// [`DEFAULT_WARMUP`] warm-up and [`DEFAULT_ITERATIONS`] measured iterations; no growth
    /// tolerated; the heap is measured.
    pub fn new() -> Self {
        Self {
            warmup: DEFAULT_WARMUP,
            iterations: DEFAULT_ITERATIONS,
            max_bytes: 0.0,
            max_handles: 0.0,
            heap: true,
        }
    }

    /// Iterations run before measuring (caches fill, lazy statics initialize).
    pub fn warmup(mut self, n: u32) -> Self {
        self.warmup = n;
        self
    }

    /// Measured iterations (at least 2: the halves are compared).
    pub fn iterations(mut self, n: u32) -> Self {
        self.iterations = n.max(2);
        self
    }

    /// Heap growth tolerated per iteration, bytes (default 0).
    pub fn max_bytes_per_iteration(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes as f64;
        self
    }

    /// Handles left open tolerated per iteration, per kind (default 0).
    pub fn max_handles_per_iteration(mut self, handles: f64) -> Self {
        self.max_handles = if handles.is_nan() { 0.0 } else { handles };
        self
    }

    /// Check open handles only, not the heap (for test binaries whose global allocator is
    /// not jemalloc).
    pub fn handles_only(mut self) -> Self {
        self.heap = false;
        self
    }

    /// Runs `f` and measures; never fails (what could not be measured is said in the
    /// result).
    pub fn measure(&self, mut f: impl FnMut()) -> LeakMeasurement {
        let counters = if self.heap {
            HeapCounters::new()
        } else {
            Err("the heap is not measured (handles_only)".to_owned())
        };
        let half = self.iterations / 2;
        // Handles opened during the warm-up are tagged too (and then ignored), so the table
        // of sampled handles is allocated before the heap is measured.
        let warm = next_tag();
        let (first, second) = (next_tag(), next_tag());
        let restore = RestoreTag(handles::swap_tag(warm));
        for _ in 0..self.warmup {
            f();
        }
        let unrecorded_before = handles::sampling_stats().dropped_table_full;
        let start = Instant::now();
        handles::swap_tag(first);
        let h0 = counters.as_ref().ok().map(HeapCounters::read);
        for _ in 0..half {
            f();
        }
        let h1 = counters.as_ref().ok().map(HeapCounters::read);
        handles::swap_tag(second);
        for _ in half..self.iterations {
            f();
        }
        let h2 = counters.as_ref().ok().map(HeapCounters::read);
        drop(restore);
        let elapsed = start.elapsed();
        let unrecorded = handles::sampling_stats()
            .dropped_table_full
            .saturating_sub(unrecorded_before);

        let (n1, n2) = (f64::from(half), f64::from(self.iterations - half));
        let heap = match (h0, h1, h2) {
            (Some(h0), Some(h1), Some(h2)) => {
                let (a, b) = (h1.since(h0), h2.since(h1));
                Some(ThreadHeapGrowth {
                    total_bytes: a.saturating_add(b),
                    first_half_bytes: a,
                    second_half_bytes: b,
                    bytes_per_iteration: (a as f64 / n1).min(b as f64 / n2),
                })
            }
            _ => None,
        };
        LeakMeasurement {
            warmup: self.warmup,
            iterations: self.iterations,
            heap,
            heap_note: counters.err(),
            handles: handle_growth(first, second, n1, n2),
            handles_unrecorded: unrecorded,
            elapsed,
        }
    }

    /// Runs `f`, measures, and returns the measurement, or an error whose message names
    /// the bytes per iteration, the kinds of handles left open and where they were opened.
    /// Also an error when the heap should be measured and cannot be.
    pub fn check(&self, f: impl FnMut()) -> Result<LeakMeasurement, LeakError> {
        let m = self.measure(f);
        match self.verdict(&m) {
            None => Ok(m),
            Some(message) => Err(LeakError {
                measurement: Box::new(m),
                message,
            }),
        }
    }

    /// Like [`check`](Self::check), but panics with the message.
    #[track_caller]
    pub fn assert(&self, f: impl FnMut()) -> LeakMeasurement {
        match self.check(f) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// The failure message, if `m` shows a leak (or an unmeasurable heap).
    fn verdict(&self, m: &LeakMeasurement) -> Option<String> {
        let mut lines = Vec::new();
        if let Some(note) = &m.heap_note
            && self.heap
        {
            lines.push(format!("  the heap could not be measured: {note}"));
        }
        if let Some(h) = m.heap
            && h.bytes_per_iteration > self.max_bytes
        {
            lines.push(format!(
                "  live heap on this thread grew by {} bytes over {} iterations: {:.1} bytes per \
                 iteration (first half {:+}, second half {:+} bytes; tolerated {} bytes per iteration)",
                h.total_bytes,
                m.iterations,
                h.bytes_per_iteration,
                h.first_half_bytes,
                h.second_half_bytes,
                self.max_bytes
            ));
        }
        let leaking: Vec<&HandleGrowth> = m
            .handles
            .iter()
            .filter(|g| g.per_iteration > self.max_handles)
            .collect();
        if !leaking.is_empty() {
            lines.push(format!(
                "  handles left open (tolerated {} per iteration per kind):",
                self.max_handles
            ));
            for g in leaking {
                lines.push(format!(
                    "    kind {}: {} left open, {:.2} per iteration (first half {}, second half {})",
                    g.kind, g.left_open, g.per_iteration, g.first_half, g.second_half
                ));
                for s in &g.sites {
                    lines.push(format!("      {s}"));
                }
            }
            if m.handles_unrecorded > 0 {
                lines.push(format!(
                    "    ({} more were not recorded: the table of sampled handles was full)",
                    m.handles_unrecorded
                ));
            }
        }
        if lines.is_empty() {
            return None;
        }
        lines.insert(
            0,
            format!(
                "assert_no_leak: the closure leaks ({} warm-up + {} measured iterations):",
                m.warmup, m.iterations
            ),
        );
        Some(lines.join("\n"))
    }
}

/// Kinds with handles still open that were opened under the tags `first` and `second`.
fn handle_growth(first: u32, second: u32, n1: f64, n2: f64) -> Vec<HandleGrowth> {
    let now = handles::now_nanos();
    let groups = handles::sampled_groups(|_, tag| tag == first || tag == second);
    let first_groups = handles::sampled_groups(|_, tag| tag == first);
    let mut kinds: Vec<u16> = groups.iter().map(|g| g.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut budget = handles::SYMBOLIZE_BUDGET;
    let mut out: Vec<HandleGrowth> = kinds
        .into_iter()
        .map(|kind| {
            let mine: Vec<_> = groups.iter().filter(|g| g.kind == kind).cloned().collect();
            let left_open: u64 = mine.iter().map(|g| g.count).sum();
            let first_half: u64 = first_groups
                .iter()
                .filter(|g| g.kind == kind)
                .map(|g| g.count)
                .sum();
            let second_half = left_open - first_half;
            HandleGrowth {
                kind: handles::kind_name(kind),
                left_open,
                first_half,
                second_half,
                per_iteration: (first_half as f64 / n1).min(second_half as f64 / n2),
                sites: handles::site_reports(mine, now, &mut budget),
            }
        })
        .collect();
    out.sort_by(|a, b| b.left_open.cmp(&a.left_open).then(a.kind.cmp(&b.kind)));
    out
}

/// The calling thread's jemalloc counters of bytes allocated and freed.
struct HeapCounters {
    #[cfg(feature = "jemalloc")]
    allocated: tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
    #[cfg(feature = "jemalloc")]
    deallocated: tikv_jemalloc_ctl::thread::ThreadLocal<u64>,
}

#[derive(Debug, Clone, Copy)]
struct HeapReading {
    allocated: u64,
    deallocated: u64,
}

impl HeapReading {
    /// Live bytes gained since `earlier`.
    fn since(self, earlier: HeapReading) -> i64 {
        let allocated = self.allocated.wrapping_sub(earlier.allocated) as i64;
        let freed = self.deallocated.wrapping_sub(earlier.deallocated) as i64;
        allocated.wrapping_sub(freed)
    }
}

impl HeapCounters {
    #[cfg(feature = "jemalloc")]
    fn new() -> Result<Self, String> {
        use tikv_jemalloc_ctl::thread::{allocatedp, deallocatedp};
        if !crate::allocator::jemalloc_is_global_allocator() {
            return Err("jemalloc is not this binary's global allocator; add \
                 `#[global_allocator] static A: leakguard::Jemalloc = leakguard::Jemalloc;` \
                 to the test file (or use LeakCheck::new().handles_only())"
                .to_owned());
        }
        let allocated = allocatedp::read().map_err(|e| format!("thread.allocatedp: {e}"))?;
        let deallocated = deallocatedp::read().map_err(|e| format!("thread.deallocatedp: {e}"))?;
        Ok(Self {
            allocated,
            deallocated,
        })
    }

    #[cfg(not(feature = "jemalloc"))]
    fn new() -> Result<Self, String> {
        Err(
            "leakguard was built without its `jemalloc` feature, which measures the heap \
             (or use LeakCheck::new().handles_only())"
                .to_owned(),
        )
    }

    fn read(&self) -> HeapReading {
        #[cfg(feature = "jemalloc")]
        {
            HeapReading {
                allocated: self.allocated.get(),
                deallocated: self.deallocated.get(),
            }
        }
        #[cfg(not(feature = "jemalloc"))]
        {
            HeapReading {
                allocated: 0,
                deallocated: 0,
            }
        }
    }
}

impl fmt::Debug for HeapCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapCounters").finish_non_exhaustive()
    }
}
