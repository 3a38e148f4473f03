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
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 9] = [
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

    /// Whether series of this shape are leaks.
    pub fn is_leak(self) -> bool {
        matches!(
            self,
            Shape::Linear | Shape::SawtoothGrowth | Shape::Staircase | Shape::LateStart
        )
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
    };

    let n = (duration / step).round() as usize;
    let mut samples = Vec::with_capacity(n + 1);
    for i in 0..=n {
        let t = i as f64 * step;
        let v = base + boot(t) + shape_fn(t, &mut rng) + rng.normal(noise);
        samples.push((t, v.max(0.0) as u64));
    }
    Series {
        shape,
        seed,
        leak: shape.is_leak(),
        leak_start,
        leak_rate,
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
        let mean_period = rng.range(0.5, 5.0) * MIN;
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
