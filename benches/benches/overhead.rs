//! Overhead of a running guard on an allocation-heavy, single-threaded workload.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench overhead
//! cargo bench -p leakguard-benches --bench overhead -- --rounds 16 --secs 1.5 --mode both
//! ```
//!
//! Variants, interleaved in rounds (the order rotates every round, so that no variant always runs first):
//! - `none`: the workload alone;
//! - `none_again`: the workload alone once more, as a control: its ratio to `none` shows how
//!   far apart two identical rounds land on this machine (the noise floor of the ratios);
//! - `guard_1s`: the same, with a guard sampling every second on its background thread;
//! - `guard_100ms`: the same, sampling every 100 ms;
//! - `10_guards_10ms` (only with `--stress`): ten guards, each sampling every 10 ms (the
//!   shortest interval allowed), about 1000 samples a second: a known, larger load, to show
//!   what overhead the harness resolves.
//!
//! Every round of every variant runs the workload for `--secs` seconds and counts completed
//! units. Two throughputs are computed per round:
//! - `wall`: units per second of wall-clock time, what the service sees;
//! - `cpu`: units per second of this process's CPU time (all threads, the sampler's
//!   included), which other load on a shared machine disturbs much less than wall time.
//!
//! A guard is started before its round's clocks start and stopped after they stop. The ratios
//! are computed per round (each guard round against the `none` round of the same rotation,
//! which ran next to it), then summarized by median and interquartile range.
//!
//! Without `--bench` (which `cargo bench` passes), e.g. under `cargo test --benches`, it does
//! a smoke run of one short round instead.
//!
//! `--mode spread` lets the OS place threads (on 2 cores the sampler thread runs on the other
//! core); `--mode pinned` restricts the whole process to one core first, so the workload and
//! the sampler share it: the worst case. `--mode both` (default) runs spread, then pinned.

use leakguard::Guard;
use leakguard_benches::{Summary, machine, pin_to_one_core, workload};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    None,
    NoneAgain,
    Guard(Duration),
    /// Several guards at the same interval.
    Guards(usize, Duration),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::None => "none".to_owned(),
            Variant::NoneAgain => "none_again".to_owned(),
            Variant::Guard(d) if d >= Duration::from_secs(1) => format!("guard_{}s", d.as_secs()),
            Variant::Guard(d) => format!("guard_{}ms", d.as_millis()),
            Variant::Guards(n, d) => format!("{n}_guards_{}ms", d.as_millis()),
        }
    }
}

#[derive(Debug)]
struct Options {
    rounds: usize,
    secs: f64,
    spread: bool,
    pinned: bool,
    stress: bool,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 16,
        secs: 1.5,
        spread: true,
        pinned: true,
        stress: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) gets a smoke run.
    if !args.iter().any(|a| a == "--bench") {
        println!("# smoke run (1 round of 0.2 s, spread only): use `cargo bench` to measure");
        (o.rounds, o.secs, o.pinned) = (1, 0.2, false);
    }
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).map(String::as_str);
        match (args[i].as_str(), value) {
            ("--rounds", Some(v)) => {
                o.rounds = v.parse().expect("--rounds N");
                i += 1;
            }
            ("--secs", Some(v)) => {
                o.secs = v.parse().expect("--secs SECONDS");
                i += 1;
            }
            ("--mode", Some(v)) => {
                (o.spread, o.pinned) = match v {
                    "spread" => (true, false),
                    "pinned" => (false, true),
                    "both" => (true, true),
                    _ => panic!("--mode spread|pinned|both"),
                };
                i += 1;
            }
            ("--stress", _) => o.stress = true,
            // `cargo bench` passes `--bench`; criterion-style filters are ignored too.
            _ => {}
        }
        i += 1;
    }
    o
}

/// One round's throughputs (units per second) and the samples the guard took meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    wall: f64,
    cpu: f64,
    samples: u64,
}

/// CPU time of the whole process (all threads).
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs the workload for `secs` of wall time.
fn round(secs: f64, seed: &mut u64) -> Round {
    let limit = Duration::from_secs_f64(secs);
    let cpu_start = process_cpu();
    let start = Instant::now();
    let mut units = 0u64;
    let mut sink = 0u64;
    loop {
        sink = sink.wrapping_add(workload(*seed % 64));
        *seed += 1;
        units += 1;
        let elapsed = start.elapsed();
        if elapsed >= limit {
            let cpu = process_cpu().saturating_sub(cpu_start);
            black_box(sink);
            return Round {
                wall: units as f64 / elapsed.as_secs_f64(),
                cpu: units as f64 / cpu.as_secs_f64(),
                samples: 0,
            };
        }
    }
}

fn samples_taken(guard: &Guard) -> u64 {
    guard
        .history_fine()
        .iter()
        .map(|p| u64::from(p.n))
        .sum::<u64>()
}

fn measure(variant: Variant, secs: f64, seed: &mut u64) -> Round {
    match variant {
        Variant::None | Variant::NoneAgain => round(secs, seed),
        Variant::Guard(interval) => measure_guards(1, interval, secs, seed),
        Variant::Guards(n, interval) => measure_guards(n, interval, secs, seed),
    }
}

fn measure_guards(n: usize, interval: Duration, secs: f64, seed: &mut u64) -> Round {
    let guards: Vec<Guard> = (0..n)
        .map(|_| {
            Guard::builder()
                .ignore_env()
                .no_endpoint()
                .interval(interval)
                .start()
                .expect("a guard starts")
        })
        .collect();
    let taken = |guards: &[Guard]| guards.iter().map(samples_taken).sum::<u64>();
    let before = taken(&guards);
    let mut r = round(secs, seed);
    r.samples = taken(&guards).saturating_sub(before);
    for guard in guards {
        guard.stop();
    }
    r
}

fn run(label: &str, o: &Options) {
    let mut variants = vec![
        Variant::None,
        Variant::NoneAgain,
        Variant::Guard(Duration::from_secs(1)),
        Variant::Guard(Duration::from_millis(100)),
    ];
    if o.stress {
        variants.push(Variant::Guards(10, Duration::from_millis(10)));
    }
    let k = variants.len();
    let mut seed = 0u64;
    // A warm-up round of each variant, discarded (page faults, jemalloc arenas, CPU clocks).
    for &v in &variants {
        measure(v, o.secs.min(1.0), &mut seed);
    }
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); k];
    let started = Instant::now();
    for r in 0..o.rounds {
        for j in 0..k {
            let vi = (j + r) % k;
            rounds[vi].push(measure(variants[vi], o.secs, &mut seed));
        }
        eprint!(".");
    }
    eprintln!();
    let wall = |vi: usize| -> Vec<f64> { rounds[vi].iter().map(|r| r.wall).collect() };
    let cpu = |vi: usize| -> Vec<f64> { rounds[vi].iter().map(|r| r.cpu).collect() };
    let base = Summary::of(&wall(0)).expect("rounds");
    println!(
        "[{label}] {} rounds x {} variants x {:.1} s in {:.0} s; one workload unit = {:.2} ms \
         (median, no guard)",
        o.rounds,
        k,
        o.secs,
        started.elapsed().as_secs_f64(),
        1e3 / base.median
    );
    println!(
        "[{label}] {:<12} {:>8} {:>10} {:>22} {:>10} {:>22}",
        "variant", "samples", "wall u/s", "wall ratio med (IQR)", "cpu u/s", "cpu ratio med (IQR)"
    );
    for (vi, &v) in variants.iter().enumerate() {
        let samples: u64 = rounds[vi].iter().map(|r| r.samples).sum();
        let w = Summary::of(&wall(vi)).expect("rounds");
        let c = Summary::of(&cpu(vi)).expect("rounds");
        let ratio = |mine: Vec<f64>, none: Vec<f64>| {
            let r: Vec<f64> = mine.iter().zip(&none).map(|(m, n)| m / n).collect();
            Summary::of(&r).expect("rounds")
        };
        let wr = ratio(wall(vi), wall(0));
        let cr = ratio(cpu(vi), cpu(0));
        println!(
            "[{label}] {:<12} {:>8} {:>10.1} {:>8.4} ({:.3}..{:.3}) {:>10.1} {:>8.4} ({:.3}..{:.3})",
            v.name(),
            samples,
            w.median,
            wr.median,
            wr.q1,
            wr.q3,
            c.median,
            cr.median,
            cr.q1,
            cr.q3,
        );
    }
    // The noise floor: `none` rounds against their own median.
    for (what, values) in [("wall", wall(0)), ("cpu", cpu(0))] {
        let m = Summary::of(&values).expect("rounds").median;
        let rel: Vec<f64> = values.iter().map(|t| t / m).collect();
        let n = Summary::of(&rel).expect("rounds");
        println!(
            "[{label}] noise ({what}): `none` rounds span {:.3}..{:.3} of their median (IQR {:.3}..{:.3})",
            n.min, n.max, n.q1, n.q3
        );
    }
}

fn main() {
    let o = options();
    println!("# overhead: {}", machine());
    if o.spread {
        run("spread", &o);
    }
    if o.pinned {
        match pin_to_one_core() {
            Ok(cpu) => run(&format!("pinned cpu{cpu}"), &o),
            Err(e) => println!("# pinned run skipped: cannot pin to one core: {e}"),
        }
    }
}
