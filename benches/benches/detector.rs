//! leakguard's leak detector against the hand-written alert rule and a published baseline, on
//! the same labelled corpus; and the detector's cost per sample and memory.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench detector
//! DETECTOR_SEEDS=20 cargo bench -p leakguard-benches --bench detector   # a quicker run
//! ```
//!
//! The corpus is `leakguard::trend::synth`: every shape of `Shape::ALL` (ten that are not
//! leaks, eight that are), `DETECTOR_SEEDS` seeds each (default 100), a sample every 15 s (a
//! Prometheus scrape), `Shape::corpus_duration` long (8 to 16 h; three days for the daily
//! cycles), each with its limit (`Series::limit`). Each series is replayed through:
//! - leakguard: a fresh `TrendDetector` with the default settings and the series' limit (what
//!   the guard runs, and `leakguard analyze --limit`);
//! - the rule operators write by hand, `deriv(mem[1h]) * 3600 > 10 MB held for 15m`
//!   (`synth::deriv_rule_fires_at`, Prometheus' least-squares `deriv`, at every scrape);
//! - Linear Backward Regression (LBR; Jindal, Staab, Kulkarni, Cardoso, Gerndt, Podolskiy,
//!   "Memory Leak Detection Algorithms in the Cloud-based Infrastructure", 2021), run online:
//!   every 2 minutes, on all the data so far resampled to 2-minute means, a least-squares line
//!   is fitted to the most recent window, and the window is extended backwards one point at a
//!   time down to the first sample; the largest window whose fit has R² ≥ 0.8 (and at least
//!   1 hour long) is kept; a leak is reported when its slope is positive and the line reaches
//!   the limit (the paper's critical memory, 100% utilisation) within the critical time of
//!   7 days. Parameters: R² ≥ 0.8, minimum window 1 h, critical time 7 days.
//!
//! Per shape: false alarms (a series without a leak flagged, or a leak flagged before it
//! began), misses, and the detection delay (minutes from the leak's start to the first flag).
//! For the fast leaks (the limit under an hour away), how many were flagged within 15 minutes.
//!
//! Cost: `observe` over 7 days of samples, at the guard's default 1 s interval and at 15 s;
//! the median of several runs, as ns per sample (amortized: most calls only update the
//! current window's minimum; one per window evaluates the horizons). The evaluations are the
//! slowest calls: the `k` slowest of a run timed call by call, `k` being the number of windows
//! completed, give their median and worst cost.
//!
//! Memory: jemalloc's `thread.allocated − thread.deallocated` of this thread (exactly the
//! bytes the detector keeps alive, in size classes) after 1 day and after 7 days of samples,
//! next to the bound: the floor keeps at most `ceil((12 h + 24 h) / 2 min) + 2` windows of
//! 32 bytes (the longest horizon plus one day for the daily comparison).

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

/// The first time the detector flags a leak, replaying `series` in order with its limit.
fn detector_flags_at(series: &Series) -> Option<f64> {
    let mut d = TrendDetector::new(TrendConfig {
        limit: Some(series.limit),
        ..TrendConfig::default()
    });
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

/// Linear Backward Regression, online: the first evaluation (every `EVERY` seconds) at which it
/// reports a leak.
fn lbr_fires_at(series: &Series) -> Option<f64> {
    const EVERY: f64 = 120.0;
    const R2_MIN: f64 = 0.8;
    const MIN_WINDOW: f64 = HOUR;
    const CRITICAL_TIME: f64 = 7.0 * DAY;
    let limit = series.limit as f64;
    // Resampled to 2-minute means.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let (mut bucket, mut sum, mut n) = (0i64, 0.0, 0.0);
    let origin = series.samples.first().map_or(0.0, |s| s.0);
    for &(t, v) in &series.samples {
        let b = ((t - origin) / EVERY).floor() as i64;
        if b != bucket && n > 0.0 {
            points.push((origin + (bucket as f64 + 0.5) * EVERY, sum / n));
            (sum, n) = (0.0, 0.0);
            // One evaluation per completed bucket, over everything so far.
            if lbr_leak(&points, R2_MIN, MIN_WINDOW, CRITICAL_TIME, limit) {
                return Some(t);
            }
        }
        bucket = b;
        sum += v as f64;
        n += 1.0;
    }
    None
}

/// One LBR evaluation: the largest window ending at the last point with R² ≥ `r2_min` (at least
/// `min_window` long); a leak when its slope is positive and the line reaches `limit` within
/// `critical_time` of the last point.
fn lbr_leak(
    points: &[(f64, f64)],
    r2_min: f64,
    min_window: f64,
    critical_time: f64,
    limit: f64,
) -> bool {
    let Some(&(t_end, _)) = points.last() else {
        return false;
    };
    let (mut n, mut st, mut sv, mut stt, mut stv, mut svv) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut best: Option<(f64, f64)> = None;
    for &(t, v) in points.iter().rev() {
        let x = t - t_end;
        n += 1.0;
        st += x;
        sv += v;
        stt += x * x;
        stv += x * v;
        svv += v * v;
        if t_end - t < min_window || n < 3.0 {
            continue;
        }
        let sxx = stt - st * st / n;
        let sxy = stv - st * sv / n;
        let syy = svv - sv * sv / n;
        if sxx <= 0.0 || syy <= 0.0 {
            continue;
        }
        let r2 = sxy * sxy / (sxx * syy);
        if r2 >= r2_min {
            let slope = sxy / sxx;
            let intercept = sv / n - slope * st / n;
            best = Some((slope, intercept));
        }
    }
    match best {
        // The line at x (seconds after the last point) reaches the limit at (limit − c) / m.
        Some((m, c)) if m > 0.0 => (limit - c) / m <= critical_time,
        _ => false,
    }
}

/// What one alerting method did on the series of one shape.
#[derive(Debug, Default, Clone)]
struct Tally {
    series: usize,
    /// Series without a leak flagged, and leaks flagged before they began.
    false_alarms: usize,
    /// Leak series never flagged.
    missed: usize,
    /// Minutes from the leak's start to the flag.
    delays: Vec<f64>,
}

impl Tally {
    fn add(&mut self, series: &Series, flagged: Option<f64>) {
        self.series += 1;
        match (series.leak_start, flagged) {
            (None, Some(_)) => self.false_alarms += 1,
            (None, None) => {}
            (Some(_), None) => self.missed += 1,
            (Some(start), Some(t)) if t < start => self.false_alarms += 1,
            (Some(start), Some(t)) => self.delays.push((t - start) / 60.0),
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.series += other.series;
        self.false_alarms += other.false_alarms;
        self.missed += other.missed;
        self.delays.extend_from_slice(&other.delays);
    }

    fn within(&self, minutes: f64) -> usize {
        self.delays.iter().filter(|d| **d <= minutes).count()
    }

    /// A markdown cell group: false alarms | misses | median | worst.
    fn cells(&self, leak: bool) -> String {
        let delays = match Summary::of(&self.delays) {
            Some(s) => format!("{:.0} min | {:.0} min", s.median, s.max),
            None => "| ".into(),
        };
        if leak {
            format!("{} | {} | {delays}", self.false_alarms, self.missed)
        } else {
            format!("{} | | |", self.false_alarms)
        }
    }
}

const METHODS: [&str; 3] = ["leakguard", "deriv rule", "LBR"];

fn corpus_comparison(seeds: u64) {
    println!(
        "corpus: {} shapes x {seeds} seeds, a sample every {STEP} s, 8-16 h a series (3 days for the daily cycles), each with its limit",
        Shape::ALL.len()
    );
    println!();
    println!(
        "| shape | leak | series | leakguard: false alarms | misses | median delay | worst | deriv rule: false alarms | misses | median | worst | LBR: false alarms | misses | median | worst |"
    );
    println!("|{}", " --- |".repeat(15));
    let started = Instant::now();
    let mut totals: [Tally; 3] = Default::default();
    let mut leak_totals: [Tally; 3] = Default::default();
    let mut fast: [Tally; 3] = Default::default();
    let mut steady: [Tally; 3] = Default::default();
    for shape in Shape::ALL {
        let mut tallies: [Tally; 3] = Default::default();
        for seed in 0..seeds {
            let series = generate(shape, seed, STEP, shape.corpus_duration(seed));
            tallies[0].add(&series, detector_flags_at(&series));
            tallies[1].add(&series, rule_fires_at(&series));
            tallies[2].add(&series, lbr_fires_at(&series));
        }
        let leak = shape.is_leak();
        println!(
            "| {shape:?} | {} | {} | {} | {} | {} |",
            if leak { "yes" } else { "no" },
            tallies[0].series,
            tallies[0].cells(leak),
            tallies[1].cells(leak),
            tallies[2].cells(leak)
        );
        for (i, t) in tallies.iter().enumerate() {
            if leak {
                leak_totals[i].merge(t);
            } else {
                totals[i].merge(t);
            }
            if shape == Shape::FastLeak {
                fast[i].merge(t);
            }
            if shape == Shape::Linear {
                steady[i].merge(t);
            }
        }
    }
    println!();
    for i in 0..3 {
        let d = Summary::of(&leak_totals[i].delays);
        println!(
            "{}: false alarms {} of {} healthy series and {} leaks flagged before they began; missed {} of {} leaks; delay median {:.0} min, worst {:.0} min; fast leaks flagged within 15 min: {} of {}; steady (Linear) median {:.0} min",
            METHODS[i],
            totals[i].false_alarms,
            totals[i].series,
            leak_totals[i].false_alarms,
            leak_totals[i].missed,
            leak_totals[i].series,
            d.map_or(f64::NAN, |d| d.median),
            d.map_or(f64::NAN, |d| d.max),
            fast[i].within(15.0),
            fast[i].series,
            Summary::of(&steady[i].delays).map_or(f64::NAN, |d| d.median),
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
    let kept = longest + config.season.as_secs_f64();
    let capacity = (kept / window).ceil() as usize + 2;
    println!();
    println!(
        "memory: the floor keeps at most ceil({:.0} h / {:.0} min) + 2 = {capacity} windows x 32 bytes = {} bytes; the detector itself is {} bytes inline",
        kept / HOUR,
        window / 60.0,
        capacity * 32,
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
