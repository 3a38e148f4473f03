//! A guard over a procfs fixture tree: the sampler reads `self/statm`, `status`, `stat`,
//! `limits` and `stat` from a temporary directory, whose resident size a test rewrites before
//! each tick, with a manual clock and no allocator statistics. Shared by `leak.rs` and `ui.rs`.
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice};
use leakguard::process::ProcReader;
use leakguard::{Guard, ManualClock, Sampler};
use std::fs;
use std::path::Path;
use std::sync::Arc;

const STATUS: &str = "Name:\tsvc\nVmHWM:\t    2048 kB\nVmSwap:\t       0 kB\nThreads:\t4\n";
const STAT: &str = "42 (svc) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 4 0 100 0 0\n";
const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max open files            1024                 4096                 files     \n";

/// The fixture's clock starts here (seconds since the epoch; the tree's boot time).
pub const START: f64 = 1_700_000_000.0;

fn page() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}

/// Sets the resident size `self/statm` reports, rounded down to whole pages.
pub fn set_rss(root: &Path, bytes: f64) {
    let pages = (bytes as u64) / page();
    fs::write(
        root.join("self/statm"),
        format!("{} {pages} 0 0 0 0 0\n", pages * 2),
    )
    .unwrap();
}

/// Writes the tree under `root` (resident size 300 MB) and starts a guard over it: no endpoint,
/// no background thread (the test calls `tick`), no `metrics` recording, the given limit.
pub fn fixture_guard(root: &Path, clock: &ManualClock, limit: u64) -> Guard {
    fs::create_dir_all(root.join("self/fd")).unwrap();
    fs::write(root.join("self/status"), STATUS).unwrap();
    fs::write(root.join("self/stat"), STAT).unwrap();
    fs::write(root.join("self/limits"), LIMITS).unwrap();
    fs::write(root.join("stat"), "btime 1700000000\n").unwrap();
    set_rss(root, 300e6);
    Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .limit(limit)
        .clock(Arc::new(clock.clone()))
        .sampler(Sampler::with_readers(
            ProcReader::with_root(root),
            None,
            Allocator::new(AllocatorChoice::None),
        ))
        .start()
        .unwrap()
}
