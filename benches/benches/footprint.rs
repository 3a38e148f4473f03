//! leakguard's own memory footprint with a full 24 h history.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench footprint
//! ```
//!
//! A guard without its background thread is driven by a `ManualClock`: every `tick()` is a
//! real sample of this process, and the clock advances one second between ticks, so 24 h of
//! history (600 one-second buckets, 1440 one-minute buckets) fill in a few seconds. The heap
//! is measured three ways:
//! - `thread net`: jemalloc's `thread.allocated − thread.deallocated` of the main thread, which
//!   runs every tick here: exactly the bytes the guard keeps alive (size classes included);
//! - `stats.allocated`: jemalloc's global live bytes (also counts objects in thread caches);
//! - resident size (`/proc/self/statm`): all of it (`RSS`, which includes the pages of
//!   leakguard's code faulted in by its first use), its anonymous part (heap and stacks), and
//!   the anonymous part after returning jemalloc's free pages to the OS (`anon purged`);
//!
//! each as a delta from before the guard was built.
//!
//! Then a guard with its background thread (100 ms interval, real clock) is measured the same
//! way, to include the sampler thread's stack and thread cache.

use leakguard::{Guard, ManualClock};
use leakguard_benches::{jemalloc, machine, resident};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// Ticks of one second: 24 h plus the 10 minutes of the fine tier, plus one minute so the
/// coarse tier has rotated.
const DAY_TICKS: u64 = 86_400 + 600 + 60;
const MORE_HOURS: u64 = 4;
/// Without `--bench` (e.g. `cargo test --benches`), a smoke run: one hour instead of a day.
const SMOKE_TICKS: u64 = 3_600;

#[derive(Debug, Clone, Copy)]
struct Reading {
    thread_net: i64,
    allocated: u64,
    resident: u64,
    anon: u64,
    anon_purged: u64,
}

fn read() -> Reading {
    let thread_net = jemalloc::thread_net().expect("thread.allocated");
    let allocated = jemalloc::global().expect("jemalloc stats").allocated;
    let now = resident().expect("statm");
    jemalloc::purge().expect("purge");
    let purged = resident().expect("statm");
    Reading {
        thread_net,
        allocated,
        resident: now.total,
        anon: now.anon(),
        anon_purged: purged.anon(),
    }
}

fn kib(bytes: i128) -> String {
    format!("{:>9.1} KiB", bytes as f64 / 1024.0)
}

fn row(label: &str, base: &Reading, r: &Reading) {
    println!(
        "{label:<34} {} {} {} {} {}",
        kib(i128::from(r.thread_net) - i128::from(base.thread_net)),
        kib(i128::from(r.allocated) - i128::from(base.allocated)),
        kib(i128::from(r.resident) - i128::from(base.resident)),
        kib(i128::from(r.anon) - i128::from(base.anon)),
        kib(i128::from(r.anon_purged) - i128::from(base.anon_purged)),
    );
}

fn tick_for(guard: &Guard, clock: &ManualClock, ticks: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..ticks {
        clock.advance(Duration::from_secs(1));
        drop(guard.tick());
    }
    started.elapsed()
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) gets a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (day_ticks, more_hours) = if smoke {
        (SMOKE_TICKS, 1)
    } else {
        (DAY_TICKS, MORE_HOURS)
    };
    let hours = day_ticks / 3600;
    println!("# footprint: {}", machine());
    if smoke {
        println!("# smoke run ({hours} h of history, not 24 h): use `cargo bench` to measure");
    }
    println!(
        "{:<34} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "delta from before the guard",
        "thread net",
        "stats.alloc",
        "RSS",
        "RSS anon",
        "anon purged"
    );
    // Touch what the harness itself uses before the baseline.
    let _ = read();
    let base = read();

    let clock = ManualClock::new(1_700_000_000.0);
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .clock(Arc::new(clock.clone()))
        .start()
        .expect("a guard starts");
    let started = read();
    row("guard started (1 sample)", &base, &started);

    let took = tick_for(&guard, &clock, day_ticks);
    let day = read();
    row(
        &format!("after {hours} h ({day_ticks} samples)"),
        &base,
        &day,
    );

    let took_more = tick_for(&guard, &clock, more_hours * 3600);
    let more = read();
    row(&format!("after {more_hours} h more"), &base, &more);

    let fine = guard.history_fine().len();
    let coarse = guard.history_coarse().len();
    let report = guard.report_json().len();
    let metrics = guard.render_metrics().len();
    let latest = guard.latest().expect("a sample");
    let after_calls = read();
    row("after report/metrics calls", &base, &after_calls);

    drop(guard);
    let dropped = read();
    row("guard dropped", &base, &dropped);

    let full = fine == 600 && coarse == 1440;
    println!(
        "history: fine {fine} points (expected 600), coarse {coarse} points (expected 1440): {}",
        match (full, smoke) {
            (true, _) => "ok",
            (false, true) => "not full yet (smoke run)",
            (false, false) => "MISMATCH",
        }
    );
    println!(
        "growth from {hours} h to {} h: thread net {:+} B, stats.allocated {:+} B",
        hours + more_hours,
        more.thread_net - day.thread_net,
        i128::from(more.allocated) - i128::from(day.allocated)
    );
    println!("report_json: {report} bytes; render_metrics: {metrics} bytes");
    println!(
        "filling: {day_ticks} ticks in {:.2} s ({:.1} us/tick), {} more in {:.2} s; process fds {}",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / day_ticks as f64,
        more_hours * 3600,
        took_more.as_secs_f64(),
        latest.process.open_fds
    );

    // A guard as a service runs it: background thread, real clock, 100 ms interval.
    let base = read();
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .interval(Duration::from_millis(100))
        .start()
        .expect("a guard starts");
    std::thread::sleep(Duration::from_millis(1_500));
    let running = read();
    let threads = guard.latest().map_or(0, |s| s.process.threads);
    row("background guard, 1.5 s at 100 ms", &base, &running);
    println!("(thread net is the main thread only; threads now: {threads})");
    drop(guard);
}
