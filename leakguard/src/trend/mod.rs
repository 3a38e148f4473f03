//! The online leak detector.
//!
//! A healthy service's memory rises at start, then levels off; garbage collectors and caches
//! make it saw-tooth. A leak is a *floor* that keeps rising. So the detector:
//!
//! 1. ignores a warm-up (default 10 minutes);
//! 2. follows the lower envelope: the minimum of each window (default 2 minutes), so
//!    saw-tooth and short spikes do not look like growth;
//! 3. over several horizons (1 h, 3 h, 12 h) estimates the floor's slope with Theil–Sen (the
//!    median of all pairwise slopes: robust to outliers and steps) and a confidence (the share
//!    of pairwise slopes that are positive);
//! 4. flags a leak only when, over at least `min_span` (default 30 minutes) of data, the slope
//!    clears the normal growth rate (default 10 MB/h) by two standard errors, the confidence is
//!    high, the rise is well
//!    above the floor's noise, it is spread over the horizon (no single step carries most of
//!    it: a deploy or a traffic change is a step, not a leak) and it is still going on in the
//!    most recent third;
//! 5. and only once this has held for three evaluations in a row (one per window): noise passes
//!    a test once in a while, a leak keeps passing it.
//!
//! Rates follow the runbooks: under 10 MB/h is normal, 50 MB/h warns, 100 MB/h is critical
//! (MB = 10⁶ bytes). The detector is fed one sample at a time, keeps a bounded number of
//! windows (12 hours' worth) whatever the uptime, and is the same code the guard's sampler runs
//! and `leakguard analyze` replays.
//!
//! ```
//! use leakguard::trend::{TrendConfig, TrendDetector};
//! let mut d = TrendDetector::new(TrendConfig::default());
//! // Four hours of a floor growing 60 MB/h, sampled every 15 s, with a saw-tooth on top.
//! for i in 0..(4 * 240) {
//!     let t = 1_700_000_000.0 + f64::from(i) * 15.0;
//!     let floor = 200e6 + 60e6 * f64::from(i) * 15.0 / 3600.0;
//!     let saw = f64::from(i % 20) * 2e6;
//!     d.observe(t, (floor + saw) as u64);
//! }
//! let v = d.verdict();
//! assert!(v.leak);
//! let mb_per_hour = v.slope_bytes_per_second.unwrap() * 3600.0 / 1e6;
//! assert!((50.0..70.0).contains(&mb_per_hour), "{mb_per_hour}");
//! ```

pub mod synth;

use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// One megabyte as the runbooks count it (10⁶ bytes), per hour, in bytes per second.
pub const MB_PER_HOUR: f64 = 1e6 / 3600.0;

/// The detector's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendConfig {
    /// Samples in this first stretch after the first sample are ignored (default 10 min).
    pub warmup: Duration,
    /// Width of the windows whose minima form the floor (default 2 min).
    pub window: Duration,
    /// Least span of floor data a verdict needs (default 30 min).
    pub min_span: Duration,
    /// The horizons evaluated (default 1 h, 3 h, 12 h); the longest bounds the memory used.
    pub horizons: Vec<Duration>,
    /// Growth below this is normal, bytes per second (default 10 MB/h).
    pub normal_rate: f64,
    /// Growth from this warns (default 50 MB/h).
    pub warn_rate: f64,
    /// Growth from this is critical (default 100 MB/h).
    pub critical_rate: f64,
    /// Least share of positive pairwise slopes (default 0.75).
    pub min_confidence: f64,
    /// Consecutive evaluations (one per window) a horizon must pass before a leak is flagged
    /// (default 3): noise passes once, a leak keeps passing.
    pub confirmations: u32,
}

impl Default for TrendConfig {
    fn default() -> Self {
        Self {
            warmup: Duration::from_secs(600),
            window: Duration::from_secs(120),
            min_span: Duration::from_secs(1800),
            horizons: vec![
                Duration::from_secs(3600),
                Duration::from_secs(3 * 3600),
                Duration::from_secs(12 * 3600),
            ],
            normal_rate: 10.0 * MB_PER_HOUR,
            warn_rate: 50.0 * MB_PER_HOUR,
            critical_rate: 100.0 * MB_PER_HOUR,
            min_confidence: 0.75,
            confirmations: 3,
        }
    }
}

/// How serious the growth is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// No leak (or not enough data yet).
    #[default]
    None,
    /// A leak growing between the normal and the warning rate.
    Slow,
    /// A leak growing at the warning rate or more.
    Warning,
    /// A leak growing at the critical rate or more.
    Critical,
}

/// The detector's judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Verdict {
    /// Whether a leak is suspected.
    pub leak: bool,
    /// How serious it is.
    pub severity: Severity,
    /// The floor's growth rate over the deciding horizon (or the shortest one with enough
    /// data), bytes per second; `None` until there is enough data.
    pub slope_bytes_per_second: Option<f64>,
    /// Share of pairwise slopes that are positive, 0 to 1 (0.5 is a flat noisy floor).
    pub confidence: f64,
    /// When the leak was first suspected (time of the sample that tipped it), Unix seconds.
    pub first_suspected_at: Option<f64>,
    /// The horizon the verdict comes from, seconds.
    pub horizon_seconds: Option<f64>,
    /// Whether the detector is still in its warm-up or has too little data.
    pub warming_up: bool,
    /// One sentence saying why.
    pub reason: String,
}

/// What one horizon's evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Evaluation {
    horizon: f64,
    slope: f64,
    confidence: f64,
    passes: bool,
}

/// The online leak detector: feed it `(time, bytes)` in time order with
/// [`TrendDetector::observe`].
#[derive(Debug, Clone)]
pub struct TrendDetector {
    config: TrendConfig,
    first_t: Option<f64>,
    last_t: f64,
    /// The window being filled: (index, minimum, time of the minimum).
    current: Option<(i64, f64, f64)>,
    /// Completed windows: (time of the minimum, minimum).
    floor: VecDeque<(f64, f64)>,
    capacity: usize,
    verdict: Verdict,
    out_of_order: u64,
    streak: u32,
}

/// Points per horizon evaluation at most: windows are merged (minimum of neighbours) beyond it,
/// which keeps Theil–Sen's pairwise work bounded.
const MAX_POINTS: usize = 48;
/// Points a horizon needs before it is judged.
const MIN_POINTS: usize = 8;

impl TrendDetector {
    /// A detector with `config`.
    pub fn new(config: TrendConfig) -> Self {
        let longest = config
            .horizons
            .iter()
            .copied()
            .max()
            .unwrap_or(Duration::from_secs(3600));
        let window = config.window.as_secs_f64().max(1.0);
        let capacity = (longest.as_secs_f64() / window).ceil() as usize + 2;
        Self {
            config,
            first_t: None,
            last_t: f64::NEG_INFINITY,
            current: None,
            floor: VecDeque::with_capacity(capacity),
            capacity,
            verdict: Verdict {
                warming_up: true,
                reason: "warming up".into(),
                ..Verdict::default()
            },
            out_of_order: 0,
            streak: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &TrendConfig {
        &self.config
    }

    /// The current verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Samples dropped because their time went backwards.
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Feeds one sample: `t` in seconds (any origin, e.g. Unix time), `bytes` of memory.
    /// Returns `true` when the verdict's `leak` flag changed. Samples that go back in time are
    /// counted and ignored.
    pub fn observe(&mut self, t: f64, bytes: u64) -> bool {
        if !t.is_finite() || t < self.last_t {
            self.out_of_order += 1;
            return false;
        }
        self.last_t = t;
        let first = *self.first_t.get_or_insert(t);
        if t - first < self.config.warmup.as_secs_f64() {
            return false;
        }
        let width = self.config.window.as_secs_f64().max(1.0);
        let index = ((t - first) / width).floor() as i64;
        let v = bytes as f64;
        match &mut self.current {
            Some((i, min, at)) if *i == index => {
                if v <= *min {
                    *min = v;
                    *at = t;
                }
                false
            }
            _ => {
                let completed = self.current.replace((index, v, t));
                match completed {
                    Some((_, min, at)) => {
                        if self.floor.len() == self.capacity {
                            self.floor.pop_front();
                        }
                        self.floor.push_back((at, min));
                        let was = self.verdict.leak;
                        self.evaluate(t);
                        was != self.verdict.leak
                    }
                    None => false,
                }
            }
        }
    }

    /// Seconds until `usage` reaches `limit` at the current growth rate, when a leak is
    /// suspected; `Some(0.0)` when already over.
    pub fn oom_eta(&self, usage: u64, limit: u64) -> Option<f64> {
        if !self.verdict.leak {
            return None;
        }
        let slope = self.verdict.slope_bytes_per_second.filter(|s| *s > 0.0)?;
        Some((limit.saturating_sub(usage)) as f64 / slope)
    }

    fn evaluate(&mut self, now: f64) {
        let min_span = self.config.min_span.as_secs_f64();
        let mut evaluations = Vec::with_capacity(self.config.horizons.len());
        for h in &self.config.horizons {
            let h = h.as_secs_f64();
            let points: Vec<(f64, f64)> = self
                .floor
                .iter()
                .copied()
                .filter(|(t, _)| *t >= now - h)
                .collect();
            let Some(&(t0, _)) = points.first() else {
                continue;
            };
            let Some(&(t1, _)) = points.last() else {
                continue;
            };
            if t1 - t0 < min_span || points.len() < MIN_POINTS {
                continue;
            }
            // Skip horizons that see no more data than a shorter one already did.
            if evaluations
                .last()
                .is_some_and(|e: &Evaluation| e.horizon >= t1 - t0)
            {
                continue;
            }
            evaluations.push(self.judge(&merge(&points, MAX_POINTS), h.min(t1 - t0)));
        }
        let Some(shortest) = evaluations.first().copied() else {
            self.verdict.warming_up = true;
            self.verdict.reason = "not enough data yet".into();
            return;
        };
        self.verdict.warming_up = false;
        let passing = evaluations.iter().find(|e| e.passes).copied();
        self.streak = if passing.is_some() {
            self.streak + 1
        } else {
            0
        };
        let was_leak = self.verdict.leak;
        let deciding =
            passing.filter(|_| was_leak || self.streak >= self.config.confirmations.max(1));
        match deciding {
            Some(e) => {
                let severity = if e.slope >= self.config.critical_rate {
                    Severity::Critical
                } else if e.slope >= self.config.warn_rate {
                    Severity::Warning
                } else {
                    Severity::Slow
                };
                self.verdict = Verdict {
                    leak: true,
                    severity,
                    slope_bytes_per_second: Some(e.slope),
                    confidence: e.confidence,
                    first_suspected_at: if was_leak {
                        self.verdict.first_suspected_at
                    } else {
                        Some(now)
                    },
                    horizon_seconds: Some(e.horizon),
                    warming_up: false,
                    reason: format!(
                        "the memory floor rose {:.1} MB/h over the last {} (confidence {:.0}%)",
                        e.slope / MB_PER_HOUR,
                        human_span(e.horizon),
                        e.confidence * 100.0
                    ),
                };
            }
            None => {
                // Once suspected, the verdict holds while the floor still grows at half the
                // normal rate over the shortest horizon.
                let still = was_leak && shortest.slope >= self.config.normal_rate / 2.0;
                self.verdict = Verdict {
                    leak: still,
                    severity: if still {
                        self.verdict.severity
                    } else {
                        Severity::None
                    },
                    slope_bytes_per_second: Some(shortest.slope),
                    confidence: shortest.confidence,
                    first_suspected_at: if still {
                        self.verdict.first_suspected_at
                    } else {
                        None
                    },
                    horizon_seconds: Some(shortest.horizon),
                    warming_up: false,
                    reason: if still {
                        format!(
                            "the memory floor still rises {:.1} MB/h",
                            shortest.slope / MB_PER_HOUR
                        )
                    } else {
                        format!(
                            "no sustained growth of the memory floor (over the last {} its \
                             estimated slope is {:+.1} MB/h, within noise or not sustained)",
                            human_span(shortest.horizon),
                            shortest.slope / MB_PER_HOUR
                        )
                    },
                };
            }
        }
    }

    fn judge(&self, points: &[(f64, f64)], horizon: f64) -> Evaluation {
        let (slope, confidence) = theil_sen(points);
        let mut e = Evaluation {
            horizon,
            slope,
            confidence,
            passes: false,
        };
        if slope < self.config.normal_rate || confidence < self.config.min_confidence {
            return e;
        }
        let (t0, t1) = (points[0].0, points[points.len() - 1].0);
        let span = t1 - t0;
        // The rise must stand out of the floor's own noise.
        let intercept = median(points.iter().map(|(t, v)| v - slope * (t - t0)).collect());
        let residuals: Vec<f64> = points
            .iter()
            .map(|(t, v)| (v - (intercept + slope * (t - t0))).abs())
            .collect();
        let sigma = 1.4826 * median(residuals);
        let rise = slope * span;
        if rise < 4.0 * sigma {
            return e;
        }
        // The slope must clear the normal rate by two standard errors, not just on its point
        // estimate: a wave at 8 MB/h plus noise is not a 10 MB/h leak.
        let mean_t = points.iter().map(|(t, _)| t).sum::<f64>() / points.len() as f64;
        let spread: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
        let standard_error = sigma / spread.sqrt().max(1.0);
        if slope - 2.0 * standard_error < self.config.normal_rate {
            return e;
        }
        // Spread over time: each quarter's median floor above the previous one, and no single
        // step carrying most of the rise.
        let quarters: Vec<f64> = (0..4)
            .filter_map(|q| {
                let lo = t0 + span * f64::from(q) / 4.0;
                let hi = t0 + span * f64::from(q + 1) / 4.0;
                let vals: Vec<f64> = points
                    .iter()
                    .filter(|(t, _)| *t >= lo && (*t < hi || (q == 3 && *t <= hi)))
                    .map(|(_, v)| *v)
                    .collect();
                (!vals.is_empty()).then(|| median(vals))
            })
            .collect();
        if quarters.len() < 4 {
            return e;
        }
        let steps: Vec<f64> = quarters.windows(2).map(|w| w[1] - w[0]).collect();
        let total = quarters[3] - quarters[0];
        if total <= 0.0 || steps.iter().any(|s| *s <= 0.0) {
            return e;
        }
        // Each quarter carries a fair share of the rise: a step (deploy) or a plateau (the end
        // of a warm-up) leaves one quarter with almost all of it, or one with none.
        if steps
            .iter()
            .any(|s| *s > 0.7 * total || *s < 0.2 * total / 3.0)
        {
            return e;
        }
        // Still going on: the most recent third grows at a good part of the overall rate.
        let recent: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= t1 - span / 3.0)
            .collect();
        if recent.len() >= 3
            && theil_sen(&recent).0 < (self.config.normal_rate / 2.0).max(0.4 * slope)
        {
            return e;
        }
        e.passes = true;
        e
    }
}

/// Merges neighbouring points (keeping each group's minimum) down to at most `max` points.
fn merge(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points.to_vec();
    }
    let group = points.len().div_ceil(max);
    points
        .chunks(group)
        .filter_map(|c| c.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// Theil–Sen slope (median of pairwise slopes) and the share of positive pairwise slopes.
fn theil_sen(points: &[(f64, f64)]) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    let mut positive = 0usize;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > 0.0 {
                let s = (b.1 - a.1) / dt;
                if s > 0.0 {
                    positive += 1;
                }
                slopes.push(s);
            }
        }
    }
    if slopes.is_empty() {
        return (0.0, 0.5);
    }
    let n = slopes.len();
    (median(slopes), positive as f64 / n as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if v.len() % 2 == 1 {
        m
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + m) / 2.0
    }
}

fn human_span(seconds: f64) -> String {
    if seconds >= 5400.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut pts: Vec<(f64, f64)> = (0..20)
            .map(|i| (f64::from(i), 2.0 * f64::from(i)))
            .collect();
        pts[10].1 = 1e9;
        let (s, c) = theil_sen(&pts);
        assert!((s - 2.0).abs() < 1e-9);
        assert!(c > 0.85);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn memory_is_bounded_whatever_the_uptime() {
        let mut d = TrendDetector::new(TrendConfig::default());
        for i in 0..(3 * 86_400 / 15) {
            d.observe(f64::from(i) * 15.0, 1_000_000);
        }
        assert!(d.floor.len() <= d.capacity);
        assert_eq!(d.capacity, 12 * 30 + 2);
    }

    #[test]
    fn out_of_order_samples_are_ignored() {
        let mut d = TrendDetector::new(TrendConfig::default());
        d.observe(100.0, 1);
        d.observe(50.0, 1);
        d.observe(f64::NAN, 1);
        assert_eq!(d.out_of_order(), 2);
    }
}
