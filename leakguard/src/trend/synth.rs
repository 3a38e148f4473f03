//! Labelled synthetic memory series: the shapes the detector must and must not call a leak,
//! with randomized parameters and noise. Used by leakguard's tests and benchmarks, and
//! available to users who want to try their own detector settings.
//!
//! ```
//! use leakguard::trend::synth::{Shape, generate};
//! let s = generate(Shape::Linear, 7, 15.0, 8.0 * 3600.0);
//! assert!(s.leak);
//! assert_eq!(s.samples.len(), 8 * 240 + 1);
//! ```

use serde::Serialize;

/// The shapes of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Not a leak: a warm-up (caches filling) over 10–30 minutes that then plateaus.
    WarmupPlateau,
    /// Not a leak: a one-off step up (deploy, traffic change) that then stays flat.
    StepThenFlat,
    /// Not a leak: short spikes (large payloads) on a flat floor.
    Spikes,
    /// Not a leak: slow traffic-driven waves whose slope stays under the normal rate.
    SlowWaves,
    /// Not a leak: a garbage-collector saw-tooth on a flat floor.
    SawtoothFlat,
    /// A leak: steady linear growth from 12 MB/h up.
    Linear,
    /// A leak: growth hidden under a saw-tooth.
    SawtoothGrowth,
    /// A leak: staircase growth, bursts every few minutes.
    Staircase,
    /// A leak: linear growth that starts hours after start-up.
    LateStart,
    /// Not a leak: a warm-up that takes 30–90 minutes to level off (caches filling, a JIT, a
    /// heap growing to its working size), decelerating towards its plateau.
    LongWarmup,
    /// Not a leak: a deploy or traffic shift hours after start-up that ramps memory up over
    /// 30–60 minutes, decelerating, then stays flat.
    DeployRamp,
    /// Not a leak: three days of a daily cycle: memory follows office traffic up in the
    /// morning, levels off, and falls back in the evening.
    DailyCycle,
    /// Not a leak: a process restarted every 2–6 hours, each lifetime with its own warm-up.
    Restarts,
    /// A leak: a process restarted every 3–6 hours that leaks in every lifetime.
    RecurringLeak,
    /// A leak that would reach the limit within the hour: starts 30 minutes to 3 hours after
    /// start-up, and the limit is 20–60 minutes of growth away.
    FastLeak,
    /// A leak on top of the daily cycle, starting on the second day.
    LeakOnCycle,
    /// Not a leak: a slow saw-tooth (a collection every 5–15 minutes, 20–80 MB) on a flat
    /// floor: each drop falls back to the floor, which is not a restart.
    SlowSawtoothFlat,
    /// A leak: growth under a slow saw-tooth (a collection every 5–15 minutes, 20–80 MB).
    SlowSawtoothGrowth,
}

impl Shape {
    /// The shapes of the first corpus (tidy series, no limit needed).
    pub const TIDY: [Shape; 9] = [
        Shape::WarmupPlateau,
        Shape::StepThenFlat,
        Shape::Spikes,
        Shape::SlowWaves,
        Shape::SawtoothFlat,
        Shape::Linear,
        Shape::SawtoothGrowth,
        Shape::Staircase,
        Shape::LateStart,
    ];

    /// The production shapes added to them.
    pub const PRODUCTION: [Shape; 9] = [
        Shape::LongWarmup,
        Shape::DeployRamp,
        Shape::DailyCycle,
        Shape::Restarts,
        Shape::RecurringLeak,
        Shape::FastLeak,
        Shape::LeakOnCycle,
        Shape::SlowSawtoothFlat,
        Shape::SlowSawtoothGrowth,
    ];

    /// Every shape.
    pub const ALL: [Shape; 18] = [
        Shape::WarmupPlateau,
        Shape::StepThenFlat,
        Shape::Spikes,
        Shape::SlowWaves,
        Shape::SawtoothFlat,
        Shape::LongWarmup,
        Shape::DeployRamp,
        Shape::DailyCycle,
        Shape::Restarts,
        Shape::SlowSawtoothFlat,
        Shape::Linear,
        Shape::SawtoothGrowth,
        Shape::Staircase,
        Shape::LateStart,
        Shape::RecurringLeak,
        Shape::FastLeak,
        Shape::LeakOnCycle,
        Shape::SlowSawtoothGrowth,
    ];

    /// Whether series of this shape are leaks.
    pub fn is_leak(self) -> bool {
        matches!(
            self,
            Shape::Linear
                | Shape::SawtoothGrowth
                | Shape::Staircase
                | Shape::LateStart
                | Shape::RecurringLeak
                | Shape::FastLeak
                | Shape::LeakOnCycle
                | Shape::SlowSawtoothGrowth
        )
    }

    /// The length of a corpus series of this shape for `seed`, seconds: 8 to 16 hours, three
    /// days for the daily cycles.
    pub fn corpus_duration(self, seed: u64) -> f64 {
        match self {
            Shape::DailyCycle | Shape::LeakOnCycle => 3.0 * 24.0 * HOUR,
            _ => (8.0 + (seed % 9) as f64) * HOUR,
        }
    }
}

/// One generated series and its label.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// The shape.
    pub shape: Shape,
    /// The seed it was made with.
    pub seed: u64,
    /// Whether it is a leak.
    pub leak: bool,
    /// For leaks: seconds after the first sample at which the leak begins.
    pub leak_start: Option<f64>,
    /// For leaks: the leak's average rate, bytes per second.
    pub leak_rate: Option<f64>,
    /// The memory limit of the process, bytes: 1.3–3 times the largest sample of a leak, 2–4
    /// times that of a healthy process (for [`Shape::FastLeak`], 20–60 minutes of its growth
    /// above the level where it starts).
    pub limit: u64,
    /// `(seconds since start, bytes)`, one per `step`.
    pub samples: Vec<(f64, u64)>,
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Approximately normal with mean 0 and deviation `sigma` (sum of twelve uniforms).
    pub fn normal(&mut self, sigma: f64) -> f64 {
        (0..12)
            .map(|_| self.unit())
            .sum::<f64>()
            .mul_add(sigma, -6.0 * sigma)
    }
}

/// The deterministic part of a shape, as a function of time (it may draw random numbers).
type ShapeFn = Box<dyn FnMut(f64, &mut Rng) -> f64>;

const MB: f64 = 1e6;
const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;

/// Generates one series of `shape` from `seed`: a sample every `step` seconds for `duration`
/// seconds (inclusive of both ends).
pub fn generate(shape: Shape, seed: u64, step: f64, duration: f64) -> Series {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(shape as u64));
    let base = rng.range(100.0, 2000.0) * MB;
    let noise = rng.range(0.3, 3.0) * MB;
    // Every service rises at start: a short fill before anything else.
    let boot_rise = rng.range(10.0, 200.0) * MB;
    let boot_time = rng.range(2.0, 10.0) * MIN;
    let boot = move |t: f64| boot_rise * (t / boot_time).min(1.0);

    let mut leak_start = None;
    let mut leak_rate = None;
    // The shape's deterministic part, as a function of time.
    let mut shape_fn: ShapeFn = match shape {
        Shape::WarmupPlateau => {
            let fill = rng.range(10.0, 30.0) * MIN;
            let rise = rng.range(50.0, 600.0) * MB;
            let concave = rng.unit() < 0.5;
            Box::new(move |t, _| {
                let x = (t / fill).min(1.0);
                rise * if concave { 1.0 - (1.0 - x).powi(2) } else { x }
            })
        }
        Shape::StepThenFlat => {
            let at = rng.range(1.0 * HOUR, duration - 1.0 * HOUR);
            let height = rng.range(50.0, 800.0) * MB;
            let ramp = rng.range(0.0, 5.0) * MIN;
            Box::new(move |t, _| height * ((t - at) / ramp.max(1.0)).clamp(0.0, 1.0))
        }
        Shape::Spikes => {
            let every = rng.range(2.0, 20.0) * MIN;
            let width = rng.range(5.0, 60.0);
            let height = rng.range(50.0, 500.0) * MB;
            let phase = rng.range(0.0, every);
            Box::new(move |t, _| {
                if (t + phase) % every < width {
                    height
                } else {
                    0.0
                }
            })
        }
        Shape::SlowWaves => {
            let period = rng.range(2.0, 24.0) * HOUR;
            // Largest slope 2πA/P kept at or under 8 MB/h.
            let amplitude = rng.range(0.3, 1.0) * 8.0 * MB * period / HOUR / std::f64::consts::TAU;
            let phase = rng.range(0.0, std::f64::consts::TAU);
            Box::new(move |t, _| amplitude * (std::f64::consts::TAU * t / period + phase).sin())
        }
        Shape::SawtoothFlat => {
            let mut saw = Sawtooth::new(&mut rng, 20.0, 300.0);
            Box::new(move |t, rng| saw.at(t, rng))
        }
        Shape::Linear => {
            let rate = log_uniform(&mut rng, 12.0, 300.0) * MB / HOUR;
            let start = boot_time;
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, _| rate * (t - start).max(0.0))
        }
        Shape::SlowSawtoothFlat => {
            let mut saw = Sawtooth::with_period(&mut rng, 20.0, 80.0, 5.0, 15.0);
            Box::new(move |t, rng| saw.at(t, rng))
        }
        Shape::SlowSawtoothGrowth => {
            let rate = log_uniform(&mut rng, 15.0, 300.0) * MB / HOUR;
            let mut saw = Sawtooth::with_period(&mut rng, 20.0, 80.0, 5.0, 15.0);
            let start = boot_time;
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, rng| rate * (t - start).max(0.0) + saw.at(t, rng))
        }
        Shape::SawtoothGrowth => {
            let rate = log_uniform(&mut rng, 15.0, 300.0) * MB / HOUR;
            let mut saw = Sawtooth::new(&mut rng, 50.0, 300.0);
            let start = boot_time;
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, rng| rate * (t - start).max(0.0) + saw.at(t, rng))
        }
        Shape::Staircase => {
            let rate = log_uniform(&mut rng, 20.0, 300.0) * MB / HOUR;
            let every = rng.range(2.0, 10.0) * MIN;
            let start = boot_time;
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, _| {
                let bursts = ((t - start).max(0.0) / every).floor();
                rate * every * bursts
            })
        }
        Shape::LateStart => {
            let rate = log_uniform(&mut rng, 15.0, 300.0) * MB / HOUR;
            let start = rng.range(2.0 * HOUR, (duration - 4.0 * HOUR).max(2.5 * HOUR));
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, _| rate * (t - start).max(0.0))
        }
        Shape::LongWarmup => {
            let settle = rng.range(30.0, 90.0) * MIN;
            let rise = rng.range(100.0, 1500.0) * MB;
            let fill = Fill::new(&mut rng, settle);
            Box::new(move |t, _| rise * fill.at(t))
        }
        Shape::DeployRamp => {
            let at = rng.range(1.5 * HOUR, duration - 2.0 * HOUR);
            let settle = rng.range(30.0, 60.0) * MIN;
            let rise = rng.range(100.0, 1000.0) * MB;
            let fill = Fill::new(&mut rng, settle);
            Box::new(move |t, _| rise * fill.at(t - at))
        }
        Shape::DailyCycle => {
            let mut day = Daily::new(&mut rng);
            Box::new(move |t, rng| day.at(t, rng))
        }
        Shape::LeakOnCycle => {
            let mut day = Daily::new(&mut rng);
            let rate = log_uniform(&mut rng, 15.0, 300.0) * MB / HOUR;
            let start = rng.range(26.0 * HOUR, 44.0 * HOUR);
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, rng| day.at(t, rng) + rate * (t - start).max(0.0))
        }
        Shape::Restarts | Shape::RecurringLeak => {
            let leaks = shape == Shape::RecurringLeak;
            let (lo, hi) = if leaks { (3.0, 6.0) } else { (2.0, 6.0) };
            let every: Vec<f64> = (0..16).map(|_| rng.range(lo, hi) * HOUR).collect();
            let settle = rng.range(10.0, 60.0) * MIN;
            let rise = rng.range(50.0, 600.0) * MB;
            let fill = Fill::new(&mut rng, settle);
            let rate = log_uniform(&mut rng, 20.0, 300.0) * MB / HOUR;
            if leaks {
                leak_start = Some(boot_time);
                leak_rate = Some(rate);
            }
            Box::new(move |t, _| {
                // Time since the latest restart.
                let mut since = t;
                for e in &every {
                    if since < *e {
                        break;
                    }
                    since -= e;
                }
                // The lifetime's own boot and warm-up, in place of the series' boot.
                let own = boot(since) - boot(t) + rise * fill.at(since);
                own + if leaks {
                    rate * (since - boot_time).max(0.0)
                } else {
                    0.0
                }
            })
        }
        Shape::FastLeak => {
            let start = rng.range(0.5 * HOUR, 3.0 * HOUR);
            let rate = log_uniform(&mut rng, 300.0, 3000.0) * MB / HOUR;
            leak_start = Some(start);
            leak_rate = Some(rate);
            Box::new(move |t, _| rate * (t - start).max(0.0))
        }
    };

    // The limit comes from its own generator: the samples are the same as without it.
    let mut limit_rng = Rng::new(seed.wrapping_mul(131).wrapping_add(shape as u64));
    let n = (duration / step).round() as usize;
    let mut samples = Vec::with_capacity(n + 1);
    let mut limit = None;
    for i in 0..=n {
        let t = i as f64 * step;
        let v = base + boot(t) + shape_fn(t, &mut rng) + rng.normal(noise);
        if shape == Shape::FastLeak && limit.is_none() && leak_start.is_some_and(|s| t >= s) {
            // 20–60 minutes of growth above where the leak starts; the process dies there.
            let headroom = leak_rate.unwrap_or(0.0) * limit_rng.range(20.0, 60.0) * MIN;
            limit = Some((v + headroom) as u64);
        }
        if limit.is_some_and(|l| v >= l as f64) {
            break;
        }
        samples.push((t, v.max(0.0) as u64));
    }
    let top = samples.iter().map(|s| s.1).max().unwrap_or(0) as f64;
    // A leak's limit is 1.3–3 times its largest sample; a healthy process's 2–4 times (a ramp
    // towards a limit within the hour at its initial pace is urgent until it levels off).
    let (lo, hi) = if shape.is_leak() {
        (1.3, 3.0)
    } else {
        (2.0, 4.0)
    };
    let limit = limit.unwrap_or((top * limit_rng.range(lo, hi)) as u64);
    Series {
        shape,
        seed,
        leak: shape.is_leak(),
        leak_start,
        leak_rate,
        limit,
        samples,
    }
}

/// A garbage collector's saw-tooth: memory climbs through a cycle and drops back to the floor.
/// Cycle lengths vary by ±30% around a mean of 30 s to 5 min, as collections driven by the
/// allocation rate do; a perfectly periodic saw-tooth sampled every 15 s would alias into slow
/// drifts of its sampled minima that no sample-based detector can tell from growth.
struct Sawtooth {
    height: f64,
    mean_period: f64,
    cycle_start: f64,
    cycle_len: f64,
}

impl Sawtooth {
    fn new(rng: &mut Rng, lo_mb: f64, hi_mb: f64) -> Self {
        Self::with_period(rng, lo_mb, hi_mb, 0.5, 5.0)
    }

    /// A saw-tooth of `lo_mb`–`hi_mb` whose mean cycle is `lo_min`–`hi_min` minutes.
    fn with_period(rng: &mut Rng, lo_mb: f64, hi_mb: f64, lo_min: f64, hi_min: f64) -> Self {
        let mean_period = rng.range(lo_min, hi_min) * MIN;
        Self {
            height: rng.range(lo_mb, hi_mb) * MB,
            mean_period,
            cycle_start: -rng.range(0.0, mean_period),
            cycle_len: mean_period,
        }
    }

    fn at(&mut self, t: f64, rng: &mut Rng) -> f64 {
        while t >= self.cycle_start + self.cycle_len {
            self.cycle_start += self.cycle_len;
            self.cycle_len = self.mean_period * rng.range(0.7, 1.3);
        }
        self.height * (t - self.cycle_start) / self.cycle_len
    }
}

/// A warm-up's fill, 0 to 1, that levels off over `settle` seconds: an exponential approach
/// (rate falling to 5%, then the fill is complete) or a cubic one; 0 before time 0.
struct Fill {
    settle: f64,
    exponential: bool,
}

impl Fill {
    fn new(rng: &mut Rng, settle: f64) -> Self {
        Self {
            settle,
            exponential: rng.unit() < 0.5,
        }
    }

    fn at(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        if self.exponential {
            let x = (t / self.settle).min(1.0);
            (1.0 - (-3.0 * x).exp()) / (1.0 - (-3.0f64).exp())
        } else {
            1.0 - (1.0 - (t / self.settle).min(1.0)).powi(3)
        }
    }
}

/// A daily cycle of office traffic: memory rises from a morning hour towards the day's level
/// (levelling off within 30–90 minutes), and falls back from an evening hour; each day's level
/// varies by ±5%.
struct Daily {
    amplitude: f64,
    morning: f64,
    evening: f64,
    tau: f64,
    day: i64,
    today: f64,
}

impl Daily {
    fn new(rng: &mut Rng) -> Self {
        Self {
            amplitude: rng.range(100.0, 1000.0) * MB,
            morning: rng.range(6.0, 10.0) * HOUR,
            evening: rng.range(17.0, 21.0) * HOUR,
            tau: rng.range(10.0, 30.0) * MIN,
            day: -1,
            today: 1.0,
        }
    }

    fn at(&mut self, t: f64, rng: &mut Rng) -> f64 {
        let day = (t / (24.0 * HOUR)).floor() as i64;
        if day != self.day {
            self.day = day;
            self.today = rng.range(0.95, 1.05);
        }
        let h = t - day as f64 * 24.0 * HOUR;
        let busy = if h < self.morning {
            0.0
        } else if h < self.evening {
            1.0 - (-(h - self.morning) / self.tau).exp()
        } else {
            (1.0 - (-(self.evening - self.morning) / self.tau).exp())
                * (-(h - self.evening) / self.tau).exp()
        };
        self.amplitude * self.today * busy
    }
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * rng.unit()).exp()
}

/// The hand-written alert rule operators use, `deriv(mem[range]) * 3600 > rate_per_hour held
/// for hold`, evaluated at every sample: Prometheus' `deriv` is the least-squares slope over
/// the range. Returns the time it would first fire.
pub fn deriv_rule_fires_at(
    samples: &[(f64, u64)],
    range: f64,
    rate: f64,
    hold: f64,
) -> Option<f64> {
    let mut since: Option<f64> = None;
    let mut lo = 0;
    // Running sums over the range window for an O(1) least-squares slope per step.
    let (mut n, mut st, mut sv, mut stt, mut stv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let origin = samples.first().map_or(0.0, |s| s.0);
    for (hi, &(t, v)) in samples.iter().enumerate() {
        let (x, y) = (t - origin, v as f64);
        n += 1.0;
        st += x;
        sv += y;
        stt += x * x;
        stv += x * y;
        while samples[lo].0 < t - range {
            let (x, y) = (samples[lo].0 - origin, samples[lo].1 as f64);
            n -= 1.0;
            st -= x;
            sv -= y;
            stt -= x * x;
            stv -= x * y;
            lo += 1;
        }
        let _ = hi;
        // Prometheus needs at least two points in the range; a full range for a stable answer.
        let denom = n * stt - st * st;
        if n < 2.0 || t - samples[lo].0 < range * 0.9 || denom <= 0.0 {
            since = None;
            continue;
        }
        let slope = (n * stv - st * sv) / denom;
        if slope > rate {
            let s = *since.get_or_insert(t);
            if t - s >= hold {
                return Some(t);
            }
        } else {
            since = None;
        }
    }
    None
}
