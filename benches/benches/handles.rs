//! Cost of handle tracking, and of `testing::assert_no_leak`.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench handles
//! ```
//!
//! Criterion groups:
//! - `handles`: `Arc` clone + drop (the floor: two atomic operations on one counter), then
//!   `track` + drop of a guard: by a string literal and by a kept `HandleKind`, unsampled;
//!   with one open in 64 sampled (stack captured, recorded, removed on drop); with a second
//!   thread doing the same on the same kind all along; and `Tracked::new` + `into_inner`;
//!   and a kind at the default rate (1 in 128) under the capture budget (about 10 stack
//!   captures a second, so a loop this fast captures almost never) next to a kind with
//!   its own rate of 1 in 128, which the budget does not apply to (every 128th open
//!   captured);
//! - `testing`: 110 calls of a closure (an allocation and a free) bare, then under
//!   `LeakCheck::measure` (10 warm-up + 100 measured), and the same for a closure that also
//!   opens and closes a tracked handle.
//!
//! Then a summary with medians of its own (batches of 100 000 operations; for the
//! sampled case the batch mean, since sampling is bursty), the ratio to the `Arc` floor,
//! and the targets of issue 4: `track` + drop ≤ 20 ns single-threaded, ≤ 2× that with
//! two threads on one kind, ≤ 50 ns on average with sampling at 1/64; and the budgeted
//! default kind against the unsampled one and the unbudgeted 1 in 128 (batches of the
//! three interleaved, medians): at most 1.2× the unsampled cost, and below the unbudgeted
//! one.

use criterion::{Criterion, criterion_group};
use leakguard::handles::{self, HandleKind, KindConfig};
use leakguard::testing::LeakCheck;
use leakguard::{Tracked, track};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

static UNSAMPLED: LazyLock<HandleKind> = LazyLock::new(|| {
    handles::configure("bench_unsampled", KindConfig::new().sample_every(0)).expect("kind")
});
static SAMPLED: LazyLock<HandleKind> = LazyLock::new(|| {
    handles::configure("bench_sampled_64", KindConfig::new().sample_every(64)).expect("kind")
});
/// At the registry default (1 in 128), so under the capture budget.
static BUDGETED: LazyLock<HandleKind> = LazyLock::new(|| handles::kind("bench_default_budgeted"));
/// 1 in 128 by its own configuration, which the budget leaves alone.
static UNBUDGETED: LazyLock<HandleKind> = LazyLock::new(|| {
    handles::configure("bench_128_unbudgeted", KindConfig::new().sample_every(128)).expect("kind")
});
static SHARED: LazyLock<HandleKind> = LazyLock::new(|| {
    handles::configure("bench_two_threads", KindConfig::new().sample_every(0)).expect("kind")
});

#[inline(never)]
fn track_literal() {
    drop(black_box(track("bench_unsampled")));
}

#[inline(never)]
fn track_kind(kind: HandleKind) {
    drop(black_box(kind.track()));
}

#[inline(never)]
fn arc_clone_drop(arc: &Arc<u64>) {
    drop(black_box(Arc::clone(arc)));
}

/// Runs `op` on a second thread, over and over, until the returned flag is set.
fn busy_neighbour(op: fn()) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            for _ in 0..1000 {
                op();
            }
        }
    });
    (stop, thread)
}

fn shared_op() {
    track_kind(*SHARED);
}

fn handle_benches(c: &mut Criterion) {
    let (unsampled, sampled) = (*UNSAMPLED, *SAMPLED);
    let arc = Arc::new(7u64);
    let mut g = c.benchmark_group("handles");
    g.bench_function("arc_clone_drop", |b| b.iter(|| arc_clone_drop(&arc)));
    g.bench_function("track_drop_literal_unsampled", |b| b.iter(track_literal));
    g.bench_function("track_drop_kind_unsampled", |b| {
        b.iter(|| track_kind(unsampled))
    });
    g.bench_function("track_drop_sampled_1_in_64", |b| {
        b.iter(|| track_kind(sampled))
    });
    let (budgeted, unbudgeted) = (*BUDGETED, *UNBUDGETED);
    g.bench_function("track_drop_default_budgeted", |b| {
        b.iter(|| track_kind(budgeted))
    });
    g.bench_function("track_drop_128_unbudgeted", |b| {
        b.iter(|| track_kind(unbudgeted))
    });
    g.bench_function("tracked_new_into_inner", |b| {
        b.iter(|| {
            black_box(Tracked::into_inner(Tracked::new(
                black_box(5u64),
                unsampled,
            )))
        })
    });
    let (stop, neighbour) = busy_neighbour(shared_op);
    g.bench_function("track_drop_two_threads_same_kind", |b| {
        b.iter(|| track_kind(*SHARED))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = neighbour.join();
    g.finish();
}

#[inline(never)]
fn alloc_closure() {
    drop(black_box(vec![0u8; 64]));
}

#[inline(never)]
fn handle_closure() {
    alloc_closure();
    track_kind(*UNSAMPLED);
}

fn testing_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("testing");
    for (name, f) in [
        ("alloc", alloc_closure as fn()),
        ("alloc_and_handle", handle_closure),
    ] {
        g.bench_function(format!("{name}_bare_110_calls"), |b| {
            b.iter(|| {
                for _ in 0..110 {
                    f();
                }
            })
        });
        g.bench_function(format!("{name}_assert_no_leak_10_plus_100"), |b| {
            b.iter(|| black_box(LeakCheck::new().measure(f)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = handle_benches, testing_benches
}

// ---------------------------------------------------------------------------------------
// The summary: medians of batches, ratios, targets.

const BATCH: u32 = 100_000;
const BATCHES: usize = 41;

/// Nanoseconds per operation of each batch.
fn batches(op: impl Fn()) -> Vec<f64> {
    for _ in 0..BATCH {
        op();
    }
    (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                op();
            }
            t.elapsed().as_nanos() as f64 / f64::from(BATCH)
        })
        .collect()
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Operations per batch on two threads: short, so that both threads, having just met at a
/// spinning barrier (so both are on a CPU), run the whole batch side by side.
const PAIR_BATCH: u32 = 10_000;
const PAIR_BATCHES: usize = 201;

/// Batches on two threads at once, each timing its own: both threads' ns per operation,
/// and how many threads ran at once on average (their CPU time over the wall time of the
/// batches: 2.0 when they really ran side by side, 1.0 when they took turns on one CPU).
fn batches_two_threads(op: fn()) -> (Vec<f64>, f64) {
    use std::sync::atomic::AtomicUsize;
    let arrived = Arc::new(AtomicUsize::new(0));
    let run = move |arrived: Arc<AtomicUsize>| {
        for _ in 0..PAIR_BATCH {
            op();
        }
        let mut times = Vec::with_capacity(PAIR_BATCHES);
        let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
        for round in 0..PAIR_BATCHES {
            // Both threads arrive, then both start.
            arrived.fetch_add(1, Ordering::AcqRel);
            while arrived.load(Ordering::Acquire) < 2 * (round + 1) {
                std::hint::spin_loop();
            }
            let (c, t) = (thread_cpu(), Instant::now());
            for _ in 0..PAIR_BATCH {
                op();
            }
            let elapsed = t.elapsed();
            cpu += thread_cpu().saturating_sub(c);
            wall += elapsed;
            times.push(elapsed.as_nanos() as f64 / f64::from(PAIR_BATCH));
        }
        (times, cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9))
    };
    let other = {
        let arrived = Arc::clone(&arrived);
        std::thread::spawn(move || run(arrived))
    };
    let (mut all, share_a) = run(arrived);
    let (b, share_b) = other.join().unwrap_or_default();
    all.extend(b);
    (all, share_a + share_b)
}

/// Batches of several operations, interleaved round by round: the median ns per operation
/// of each.
fn interleaved_medians<const N: usize>(ops: [&dyn Fn(); N]) -> [f64; N] {
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(BATCHES));
    for round in 0..=BATCHES {
        for (op, t) in ops.iter().zip(times.iter_mut()) {
            let start = Instant::now();
            for _ in 0..BATCH {
                op();
            }
            // The first round warms up.
            if round > 0 {
                t.push(start.elapsed().as_nanos() as f64 / f64::from(BATCH));
            }
        }
    }
    times.map(|t| median(&t))
}

fn median(values: &[f64]) -> f64 {
    leakguard_benches::Summary::of(values).map_or(f64::NAN, |s| s.median)
}

fn summary() {
    let (unsampled, sampled) = (*UNSAMPLED, *SAMPLED);
    let arc = Arc::new(7u64);
    let floor = median(&batches(|| arc_clone_drop(&arc)));
    let literal = median(&batches(track_literal));
    let kind = median(&batches(|| track_kind(unsampled)));
    let (two, two_parallel) = batches_two_threads(shared_op);
    let two = median(&two);
    let (arc_two, arc_parallel) = {
        static SHARED_ARC: LazyLock<Arc<u64>> = LazyLock::new(|| Arc::new(1));
        batches_two_threads(|| arc_clone_drop(&SHARED_ARC))
    };
    let arc_two = median(&arc_two);
    let sampled_batches = batches(|| track_kind(sampled));
    let sampled_mean = sampled_batches.iter().sum::<f64>() / sampled_batches.len() as f64;
    let [plain, budgeted, unbudgeted] = interleaved_medians([
        &|| track_kind(unsampled),
        &|| track_kind(*BUDGETED),
        &|| track_kind(*UNBUDGETED),
    ]);
    let every_open = {
        let all = handles::configure("bench_all_sampled", KindConfig::new().sample_every(1))
            .expect("kind");
        let n = 20_000u32;
        let t = Instant::now();
        for _ in 0..n {
            track_kind(all);
        }
        t.elapsed().as_nanos() as f64 / f64::from(n)
    };

    let ok = |v: f64, target: f64| if v <= target { "ok" } else { "MISSED" };
    println!();
    println!("# {}", leakguard_benches::machine());
    println!(
        "{:<52} {:>10} {:>9} {:>14}",
        "handles (ns per track + drop)", "ns", "× Arc", "target"
    );
    let row = |name: &str, v: f64, target: Option<f64>| {
        let t = target.map_or_else(String::new, |t| format!("≤ {t:.0} {}", ok(v, t)));
        println!("{name:<52} {v:>10.1} {:>9.2} {t:>14}", v / floor);
    };
    row("Arc clone + drop (floor), median", floor, None);
    row(
        &format!("Arc clone + drop, two threads on one Arc ({arc_parallel:.2} CPUs)"),
        arc_two,
        None,
    );
    row(
        "track(\"literal\") + drop, unsampled, median",
        literal,
        Some(20.0),
    );
    row(
        "HandleKind::track + drop, unsampled, median",
        kind,
        Some(20.0),
    );
    row(
        &format!("two threads on one kind, unsampled ({two_parallel:.2} CPUs)"),
        two,
        Some(2.0 * literal.max(kind)),
    );
    row("sampled 1 in 64, mean", sampled_mean, Some(50.0));
    row(
        "unsampled, interleaved with the next two, median",
        plain,
        None,
    );
    row(
        &format!(
            "default 1 in 128, budget {}/s per kind, median",
            handles::capture_budget()
        ),
        budgeted,
        Some((1.2 * plain).min(unbudgeted)),
    );
    row("1 in 128 configured (no budget), median", unbudgeted, None);
    row("every open sampled (suspect), mean", every_open, None);

    // assert_no_leak: time per iteration, bare and measured.
    println!();
    println!(
        "{:<52} {:>10} {:>12} {:>9}",
        "assert_no_leak (ns per closure call)", "bare", "measured", "ratio"
    );
    for (name, f) in [
        ("64-byte allocation + free", alloc_closure as fn()),
        ("allocation + tracked handle", handle_closure),
    ] {
        let runs = 201;
        let bare: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..110 {
                    f();
                }
                t.elapsed().as_nanos() as f64 / 110.0
            })
            .collect();
        let measured: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(LeakCheck::new().measure(f));
                t.elapsed().as_nanos() as f64 / 110.0
            })
            .collect();
        let (b, m) = (median(&bare), median(&measured));
        println!("{name:<52} {b:>10.1} {m:>12.1} {:>9.2}", m / b);
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
