//! Cost of heap profiling: throughput of the allocation-heavy workload with jemalloc's profiler
//! on at the default sample rate against off, and the time and peak extra memory of serving one
//! profile.
//!
//! ```sh
//! cargo bench -p leakguard-benches --features profiling --bench profiling
//! cargo bench -p leakguard-benches --features profiling --bench profiling -- --rounds 12 --secs 1.5
//! ```
//!
//! jemalloc reads its configuration once, at start, so each measurement runs in a child process
//! (this same binary, `--child ...`) with `_RJEM_MALLOC_CONF` set. Every round runs five
//! children, in an order that rotates every round:
//! - `off`: `prof:false` (the feature built in, profiling not switched on);
//! - `on`: `prof:true` at the default sample rate (one sample per 512 KiB on average);
//! - `off_again`: `prof:false` once more, as a control: its ratio to `off` shows how far apart
//!   two identical runs land on this machine (the noise floor of the ratios);
//! - `off_jr` and `on_jr`: the same with jemalloc's own `realloc` for every block (`_jr`), as
//!   `leakguard::Jemalloc` did before it grew small blocks by allocate, copy and free: the
//!   earlier on/off figures, measured the same way.
//!
//! Each child runs the workload for `--secs` after a short warm-up and reports units per second
//! of wall time and of its own CPU time. Ratios are per round, summarized by median and IQR.
//! For `perf` or callgrind, one child with a fixed amount of work (330 units, 30 of them
//! warm-up):
//!
//! ```sh
//! _RJEM_MALLOC_CONF=prof:true valgrind --tool=callgrind target/release/deps/profiling-<hash> \
//!     --child throughput --units 300 [--realloc jemalloc]
//! ```
//!
//! Then one child with profiling on builds a live heap of many distinct stacks and serves
//! profiles the way `GET /debug/pprof/heap` does (`heap_profile` + `to_pprof`): the first one
//! (which reads the binary's debug information for symbolization), then warm ones. It reports
//! their time, the calling thread's peak extra heap (jemalloc `thread.peak`) and the peak extra
//! resident memory (`VmHWM` after resetting it through `/proc/self/clear_refs`).

use leakguard::profile::{heap_profile, status};
use leakguard_benches::{Summary, machine, workload};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The global allocator: leakguard's `Jemalloc`, or, in the children started with
/// `--realloc jemalloc`, the same with jemalloc's own `realloc` for every block (what
/// `leakguard::Jemalloc` was before it grew small blocks by copy: tikv-jemallocator's
/// `Jemalloc`). Both are the same jemalloc underneath, so a block from one is freed or
/// resized by the other without harm; the switch is set before the workload runs.
#[derive(Debug)]
struct Switch;

static JEMALLOC_REALLOC: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to an allocator that implements `GlobalAlloc`, with the same
// arguments; both allocate from the same jemalloc, so either may resize or free the other's
// blocks.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on.
        unsafe { leakguard::Jemalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on.
        unsafe { leakguard::Jemalloc.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees are passed on.
        unsafe { leakguard::Jemalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on.
        unsafe {
            if JEMALLOC_REALLOC.load(Ordering::Relaxed) {
                tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size)
            } else {
                leakguard::Jemalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Switch = Switch;

fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs the workload for `secs` (or for exactly `units` units, when given: a fixed amount of
/// work for `perf` or `valgrind --tool=callgrind`) and prints `wall=<units/s> cpu=<units/s>`.
fn child_throughput(secs: f64, fixed_units: Option<u64>) {
    let mut seed = 1u64;
    let warm = Instant::now();
    // With a fixed amount of work, a fixed warm-up too (a tenth of it), so that two runs
    // execute the same units.
    while match fixed_units {
        Some(n) => seed <= n / 10,
        None => warm.elapsed().as_secs_f64() < 0.2,
    } {
        black_box(workload(seed));
        seed += 1;
    }
    let (wall0, cpu0) = (Instant::now(), cpu_time());
    let mut units = 0u64;
    while match fixed_units {
        Some(n) => units < n,
        None => wall0.elapsed().as_secs_f64() < secs,
    } {
        black_box(workload(seed));
        seed += 1;
        units += 1;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    println!(
        "wall={} cpu={} status={:?}",
        units as f64 / wall,
        units as f64 / cpu,
        status()
    );
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn thread_peak_reset() {
    // SAFETY: `thread.peak.reset` is a void mallctl: no old or new value.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.peak.reset".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
}

fn thread_peak() -> u64 {
    // SAFETY: `thread.peak.read` is documented as a readable uint64_t.
    unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.peak.read\0") }.unwrap_or(0)
}

/// Distinct call stacks that keep memory: a recursion whose depth and branch differ.
#[inline(never)]
fn keep(depth: u32, branch: u64, kept: &mut Vec<Vec<u8>>) {
    if depth == 0 {
        kept.push(vec![branch as u8; 64 * 1024 + (branch as usize % 7) * 4096]);
        return;
    }
    if branch & 1 == 0 {
        keep_even(depth - 1, branch >> 1, kept);
    } else {
        keep_odd(depth - 1, branch >> 1, kept);
    }
}

// The two differ (a different constant), so that the optimizer cannot merge them into one
// function, which would make every path the same stack.
#[inline(never)]
fn keep_even(depth: u32, branch: u64, kept: &mut Vec<Vec<u8>>) {
    keep(depth, branch, kept);
    black_box((&kept, 0xE7E7u32));
}

#[inline(never)]
fn keep_odd(depth: u32, branch: u64, kept: &mut Vec<Vec<u8>>) {
    keep(depth, branch, kept);
    black_box((&kept, 0x0DD0_0DD0u64));
}

fn child_serve(warm_runs: usize) {
    // A live heap: 4096 blocks of 64-88 KiB (about 300 MiB) over 1024 distinct stacks,
    // plus the workload's churn.
    let mut kept = Vec::new();
    for i in 0..4096u64 {
        keep(10, i % 1024, &mut kept);
    }
    for seed in 0..50 {
        black_box(workload(seed));
    }
    let serve = || {
        let rss0 = rss_kib("VmRSS:");
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        thread_peak_reset();
        let t = Instant::now();
        let profile = heap_profile(0.0).expect("profiling is on in this child");
        let stacks = profile.stacks.len();
        let bytes = profile.to_pprof();
        let took = t.elapsed().as_secs_f64();
        let peak_heap = thread_peak();
        let peak_rss = rss_kib("VmHWM:").saturating_sub(rss0) * 1024;
        (took, peak_heap, peak_rss, stacks, bytes.len())
    };
    let (t, h, r, stacks, size) = serve();
    println!("first time={t} heap={h} rss={r} stacks={stacks} size={size}");
    for _ in 0..warm_runs {
        let (t, h, r, stacks, size) = serve();
        println!("warm time={t} heap={h} rss={r} stacks={stacks} size={size}");
    }
    black_box(kept);
}

fn run_child(args: &[&str], conf: &str) -> String {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(args)
        .env("_RJEM_MALLOC_CONF", conf)
        .output()
        .expect("child runs");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn show(label: &str, values: &[f64]) {
    match Summary::of(values) {
        Some(s) => println!(
            "  {label:<22} median {:.4}  IQR {:.4}..{:.4}  (n={})",
            s.median, s.q1, s.q3, s.n
        ),
        None => println!("  {label:<22} no data"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(kind) = arg("--child") {
        if arg("--realloc").as_deref() == Some("jemalloc") {
            JEMALLOC_REALLOC.store(true, Ordering::Relaxed);
        }
        match kind.as_str() {
            "throughput" => child_throughput(
                arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(1.0),
                arg("--units").and_then(|s| s.parse().ok()),
            ),
            _ => child_serve(arg("--warm").and_then(|s| s.parse().ok()).unwrap_or(5)),
        }
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let rounds: usize = arg("--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 12 } else { 1 });
    let secs = arg("--secs").unwrap_or_else(|| if bench { "1.5" } else { "0.2" }.to_owned());
    println!("profiling bench: {}", machine());
    // (name, _RJEM_MALLOC_CONF, realloc): `_jr` runs every realloc through jemalloc's own
    // (leakguard's `Jemalloc` before it grew small blocks by copy).
    let variants = [
        ("off", "prof:false", "leakguard"),
        ("on", "prof:true", "leakguard"),
        ("off_again", "prof:false", "leakguard"),
        ("off_jr", "prof:false", "jemalloc"),
        ("on_jr", "prof:true", "jemalloc"),
    ];
    let n = variants.len();
    println!(
        "{rounds} rounds x {n} children x {secs} s of the allocation-heavy workload \
         (_jr: jemalloc's own realloc for every block)"
    );
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in 0..rounds {
        for k in 0..n {
            let v = (r + k) % n;
            let (name, conf, realloc) = variants[v];
            let out = run_child(
                &[
                    "--child",
                    "throughput",
                    "--secs",
                    &secs,
                    "--realloc",
                    realloc,
                ],
                conf,
            );
            let line = out.lines().last().unwrap_or("");
            if r == 0 {
                println!("  {name:<9} {line}");
            }
            wall[v].push(field(line, "wall"));
            cpu[v].push(field(line, "cpu"));
        }
    }
    let ratio =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    println!("throughput, units per second (median over rounds):");
    for (i, (name, _, _)) in variants.iter().enumerate() {
        show(&format!("{name} wall"), &wall[i]);
        show(&format!("{name} cpu"), &cpu[i]);
    }
    println!("ratios per round (target for on/off: >= 0.97):");
    for (label, a, b) in [
        ("on/off", 1, 0),
        ("off_again/off", 2, 0),
        ("on_jr/off_jr", 4, 3),
        ("off/off_jr", 0, 3),
        ("on/on_jr", 1, 4),
    ] {
        show(&format!("{label} wall"), &ratio(&wall[a], &wall[b]));
        show(&format!("{label} cpu"), &ratio(&cpu[a], &cpu[b]));
    }

    println!("serving one profile (heap_profile + to_pprof), profiling on at the default rate:");
    let warm = if bench { "7" } else { "1" };
    let out = run_child(&["--child", "serve", "--warm", warm], "prof:true");
    let mut warm_t = Vec::new();
    let mut warm_h = Vec::new();
    let mut warm_r = Vec::new();
    for line in out.lines() {
        println!("  {line}");
        if line.starts_with("warm") {
            warm_t.push(field(line, "time") * 1e3);
            warm_h.push(field(line, "heap") / 1048576.0);
            warm_r.push(field(line, "rss") / 1048576.0);
        }
    }
    show("warm time ms", &warm_t);
    show("warm peak heap MiB", &warm_h);
    show("warm peak rss MiB", &warm_r);
}
