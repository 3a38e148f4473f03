//! leakguard's leak detector against the hand-written alert rule, on the same labelled corpus;
//! and the detector's cost per sample and memory.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench detector
//! DETECTOR_SEEDS=20 cargo bench -p leakguard-benches --bench detector   # a quicker run
//! ```
//!
//! The corpus is `leakguard::trend::synth`: every shape of `Shape::ALL` (five that are not
//! leaks, four that are), `DETECTOR_SEEDS` seeds each (default 100), a sample every 15 s (a
//! Prometheus scrape), 8 to 16 h a series (8 + seed mod 9 hours). Each series is replayed
//! through a fresh `TrendDetector` with the default settings (what the guard and `leakguard
//! analyze` run at this step) and through the alert operators write by hand,
//! `deriv(mem[1h]) * 3600 > 10 MB held for 15m` (`synth::deriv_rule_fires_at`, Prometheus'
//! least-squares `deriv`, evaluated at every scrape). Per shape: false positives (non-leak
//! series flagged), flags before the leak began, misses, and the detection delay (minutes
//! from the leak's start to the first flag) of each.
//!
//! Cost: `observe` over 7 days of samples, at the guard's default 1 s interval and at 15 s;
//! the median of several runs, as ns per sample (amortized: most calls only update the
//! current window's minimum; one per window evaluates the horizons). The evaluations are the
//! slowest calls: the `k` slowest of a run timed call by call, `k` being the number of windows
//! completed, give their median and worst cost.
//!
//! Memory: jemalloc's `thread.allocated − thread.deallocated` of this thread (exactly the
//! bytes the detector keeps alive, in size classes) after 1 day and after 7 days of samples,
//! next to the bound: the floor keeps at most `ceil(12 h / 2 min) + 2` windows of 16 bytes.

use leakguard::trend::synth::{Series, Shape, deriv_rule_fires_at, generate};
use leakguard::trend::{MB_PER_HOUR, TrendConfig, TrendDetector};
use leakguard_benches::{Summary, jemalloc, machine};
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

const STEP: f64 = 15.0;
const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

/// The first time the detector flags a leak, replaying `series` in order.
fn detector_flags_at(series: &Series) -> Option<f64> {
    let mut d = TrendDetector::new(TrendConfig::default());
    for &(t, v) in &series.samples {
        if d.observe(t, v) && d.verdict().leak {
            return Some(t);
        }
    }
    None
}

/// The hand-written rule: `deriv(mem[1h]) * 3600 > 10 MB` held for 15 minutes.
fn rule_fires_at(series: &Series) -> Option<f64> {
    deriv_rule_fires_at(&series.samples, HOUR, 10.0 * MB_PER_HOUR, 900.0)
}

/// What one alerting method did on the series of one shape.
#[derive(Debug, Default, Clone)]
struct Tally {
    series: usize,
    /// Non-leak series flagged.
    false_positives: usize,
    /// Leak series flagged before the leak began (a false alarm too).
    early: usize,
    /// Leak series never flagged.
    missed: usize,
    /// Minutes from the leak's start to the flag.
    delays: Vec<f64>,
}

impl Tally {
    fn add(&mut self, series: &Series, flagged: Option<f64>) {
        self.series += 1;
        match (series.leak_start, flagged) {
            (None, Some(_)) => self.false_positives += 1,
            (None, None) => {}
            (Some(_), None) => self.missed += 1,
            (Some(start), Some(t)) if t < start => self.early += 1,
            (Some(start), Some(t)) => self.delays.push((t - start) / 60.0),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.series += other.series;
        self.false_positives += other.false_positives;
        self.early += other.early;
        self.missed += other.missed;
        self.delays.extend_from_slice(&other.delays);
    }

    fn delays(&self) -> String {
        match Summary::of(&self.delays) {
            Some(s) => format!("{:>6.0} {:>6.0}", s.median, s.max),
            None => format!("{:>6} {:>6}", "-", "-"),
        }
    }

    fn row(&self, leak: bool) -> String {
        if leak {
            format!(
                "{:>6} {:>6} {:>6} {}",
                self.delays.len(),
                self.early,
                self.missed,
                self.delays()
            )
        } else {
            format!(
                "{:>6} {:>6} {:>6} {:>6} {:>6}",
                self.false_positives, "", "", "", ""
            )
        }
    }
}

fn shape_name(shape: Shape) -> String {
    format!("{shape:?}")
}

fn corpus_comparison(seeds: u64) {
    println!(
        "corpus: {} shapes x {seeds} seeds, a sample every {STEP} s, 8-16 h a series",
        Shape::ALL.len()
    );
    println!();
    println!(
        "{:<16} {:>5} {:>6} | {:^34} | {:^34}",
        "", "", "", "leakguard", "deriv(mem[1h])*3600 > 10MB for 15m"
    );
    println!(
        "{:<16} {:>5} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6}",
        "shape",
        "leak",
        "series",
        "flag",
        "early",
        "missed",
        "median",
        "worst",
        "flag",
        "early",
        "missed",
        "median",
        "worst"
    );
    let started = Instant::now();
    let mut totals = [Tally::default(), Tally::default()];
    let mut leak_totals = [Tally::default(), Tally::default()];
    let mut rates = Vec::new();
    for shape in Shape::ALL {
        let mut tallies = [Tally::default(), Tally::default()];
        for seed in 0..seeds {
            let hours = 8.0 + (seed % 9) as f64;
            let series = generate(shape, seed, STEP, hours * HOUR);
            if let Some(r) = series.leak_rate {
                rates.push(r / MB_PER_HOUR);
            }
            tallies[0].add(&series, detector_flags_at(&series));
            tallies[1].add(&series, rule_fires_at(&series));
        }
        let leak = shape.is_leak();
        println!(
            "{:<16} {:>5} {:>6} | {} | {}",
            shape_name(shape),
            if leak { "yes" } else { "no" },
            tallies[0].series,
            tallies[0].row(leak),
            tallies[1].row(leak)
        );
        for (i, t) in tallies.iter().enumerate() {
            if leak {
                leak_totals[i].merge(t);
            } else {
                totals[i].merge(t);
            }
        }
    }
    println!(
        "(non-leak shapes: `flag` counts false positives; leak shapes: `flag` counts series flagged after the leak began, `early` before it, delays in minutes from the leak's start)"
    );
    let rates = Summary::of(&rates);
    println!();
    println!(
        "non-leak series: {}; false positives: leakguard {}, rule {}",
        totals[0].series, totals[0].false_positives, totals[1].false_positives
    );
    println!(
        "leak series: {} (rates {:.0} to {:.0} MB/h); flagged before the leak began: leakguard {}, rule {}; missed: leakguard {}, rule {}",
        leak_totals[0].series,
        rates.map_or(0.0, |r| r.min),
        rates.map_or(0.0, |r| r.max),
        leak_totals[0].early,
        leak_totals[1].early,
        leak_totals[0].missed,
        leak_totals[1].missed
    );
    if let (Some(a), Some(b)) = (
        Summary::of(&leak_totals[0].delays),
        Summary::of(&leak_totals[1].delays),
    ) {
        println!(
            "detection delay, minutes: leakguard median {:.0}, worst {:.0} (over {} leaks); rule median {:.0}, worst {:.0} (over {} leaks it caught); median ratio rule/leakguard {:.2}",
            a.median,
            a.max,
            a.n,
            b.median,
            b.max,
            b.n,
            b.median / a.median
        );
    }
    println!(
        "({:.1} s for the comparison)",
        started.elapsed().as_secs_f64()
    );
}

/// ns per `observe`, amortized over `samples`; the median of `runs` runs.
fn amortized_ns(samples: &[(f64, u64)], runs: usize) -> Summary {
    let per_sample: Vec<f64> = (0..runs)
        .map(|_| {
            let mut d = TrendDetector::new(TrendConfig::default());
            let started = Instant::now();
            for &(t, v) in samples {
                black_box(d.observe(black_box(t), black_box(v)));
            }
            black_box(d.verdict());
            started.elapsed().as_nanos() as f64 / samples.len() as f64
        })
        .collect();
    Summary::of(&per_sample).unwrap_or(Summary {
        n: 0,
        min: 0.0,
        q1: 0.0,
        median: 0.0,
        q3: 0.0,
        max: 0.0,
    })
}

/// The cost of an evaluation: the `windows` slowest calls of a run timed call by call, µs:
/// their summary and their 99th percentile (the worst includes preemptions by the OS).
fn evaluation_us(samples: &[(f64, u64)], windows: usize) -> Option<(Summary, f64)> {
    let mut d = TrendDetector::new(TrendConfig::default());
    let mut each: Vec<f64> = Vec::with_capacity(samples.len());
    for &(t, v) in samples {
        let started = Instant::now();
        black_box(d.observe(black_box(t), black_box(v)));
        each.push(started.elapsed().as_nanos() as f64 / 1000.0);
    }
    each.sort_by(|a, b| b.total_cmp(a));
    each.truncate(windows);
    let p99 = each.get(windows / 100).copied()?;
    Summary::of(&each).map(|s| (s, p99))
}

fn cost() {
    let config = TrendConfig::default();
    let window = config.window.as_secs_f64();
    let warmup = config.warmup.as_secs_f64();
    println!();
    println!("cost of `observe` over 7 days of a leak under a saw-tooth (SawtoothGrowth, seed 7)");
    for (step, runs) in [(1.0, 7), (15.0, 15)] {
        let series = generate(Shape::SawtoothGrowth, 7, step, 7.0 * DAY);
        let n = series.samples.len();
        // Warm the caches and the branch predictors once.
        black_box(amortized_ns(&series.samples, 1));
        let s = amortized_ns(&series.samples, runs);
        let windows = ((7.0 * DAY - warmup) / window).floor() as usize;
        let eval = evaluation_us(&series.samples, windows);
        println!(
            "  a sample every {step:>2} s: {n:>7} samples, {:>6.1} ns per sample amortized (median of {runs} runs; min {:.1}, max {:.1}); {windows} evaluations: median {:.1} µs, p99 {:.1} µs, worst {:.1} µs",
            s.median,
            s.min,
            s.max,
            eval.map_or(0.0, |e| e.0.median),
            eval.map_or(0.0, |e| e.1),
            eval.map_or(0.0, |e| e.0.max),
        );
    }
}

fn memory() {
    let config = TrendConfig::default();
    let longest = config
        .horizons
        .iter()
        .max()
        .map_or(0.0, |h| h.as_secs_f64());
    let window = config.window.as_secs_f64();
    let capacity = (longest / window).ceil() as usize + 2;
    println!();
    println!(
        "memory: the floor keeps at most ceil({:.0} h / {:.0} min) + 2 = {capacity} windows x 16 bytes = {} bytes; the detector itself is {} bytes inline",
        longest / HOUR,
        window / 60.0,
        capacity * 16,
        std::mem::size_of::<TrendDetector>()
    );
    for days in [1.0, 7.0] {
        // The samples are made before the first reading: only the detector is measured.
        let series = generate(Shape::SawtoothGrowth, 11, 1.0, days * DAY);
        let before = jemalloc::thread_net().expect("thread.allocated");
        let mut d = TrendDetector::new(TrendConfig::default());
        let fresh = jemalloc::thread_net().expect("thread.allocated") - before;
        for &(t, v) in &series.samples {
            d.observe(t, v);
        }
        let held = jemalloc::thread_net().expect("thread.allocated") - before;
        println!(
            "  after {days:.0} day(s) of 1 s samples ({} samples, leak flagged: {}): heap held {held} bytes (new: {fresh} bytes)",
            series.samples.len(),
            d.verdict().leak
        );
        black_box(&d);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore any argument.
    let seeds = std::env::var("DETECTOR_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100u64);
    println!("leak detector bench: {}", machine());
    println!();
    corpus_comparison(seeds);
    cost();
    memory();
}
