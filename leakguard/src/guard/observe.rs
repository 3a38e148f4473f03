//! Where a verdict is made: [`observe`] takes the guard's [`State`] and one sample and returns
//! the [`Outcome`] (events, memory pressure, the baseline's moment, leak flips, the restart
//! reason). It is pure: no clock, no lock, no global registry; the loop in
//! [`tick`](super::tick) applies what it returns.

use crate::attribution::Baseline;
use crate::config::LimitSetting;
use crate::event::{Event, EventKind, Level};
use crate::history::History;
use crate::sample::MemorySample;
use crate::snapshot::Limit;
use crate::threshold::{MemoryState, ThresholdTracker, Transition};
use crate::trend::{Severity, TrendDetector};
use crate::units::format_bytes;
use std::time::Duration;

/// The settings [`observe`] decides with, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Where the limit comes from.
    pub limit: LimitSetting,
    /// Where an explicit limit came from (`builder` or `LEAKGUARD_LIMIT`).
    pub limit_origin: &'static str,
    /// The restart threshold, a fraction of the limit (for the reason's text).
    pub restart: f64,
    /// Drain delay, drain timeout and one interval: a leak predicted to reach the limit
    /// within this wants a restart now.
    pub drain: Duration,
    /// The clock's monotonic time at start.
    pub started_mono: Duration,
    /// The clock's wall time at start.
    pub started_unix: f64,
}

/// What the guard knows between samples. Bounded: the history's tiers and the detector are.
#[derive(Debug)]
pub(crate) struct State {
    pub latest: Option<MemorySample>,
    pub history: History,
    pub tracker: ThresholdTracker,
    pub limit: Option<Limit>,
    /// Sources that failed at the last sample (at most the sampler's error bound).
    pub failing: Vec<String>,
    pub trend: TrendDetector,
    /// Taken when the detector's warm-up ends.
    pub baseline: Option<Baseline>,
    pub rules: Rules,
}

impl State {
    pub fn new(tracker: ThresholdTracker, trend: TrendDetector, rules: Rules) -> Self {
        Self {
            latest: None,
            history: History::default(),
            tracker,
            limit: None,
            failing: Vec::new(),
            trend,
            baseline: None,
            rules,
        }
    }
}

/// What one sample decided.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Limit changes, threshold transitions, leak flips, sources failing and recovering.
    pub events: Vec<Event>,
    /// The critical threshold was just reached from below: caches should shrink.
    pub pressure: bool,
    /// The warm-up just ended: the baseline should be taken, at this detector time.
    pub baseline_due: Option<f64>,
    /// A leak is suspected.
    pub leak: bool,
    /// The leak verdict changed with this sample.
    pub leak_flipped: bool,
    /// Why a restart is wanted, if it is.
    pub restart: Option<String>,
}

/// The limit in force for this sample: the configured one, or the cgroup's.
fn resolve_limit(rules: &Rules, sample: &MemorySample) -> Option<Limit> {
    match rules.limit {
        LimitSetting::Bytes(bytes) => Some(Limit {
            bytes,
            source: rules.limit_origin.to_owned(),
        }),
        LimitSetting::Cgroup => {
            let cg = sample.cgroup.as_ref()?;
            let bytes = cg.limit_bytes?;
            let path = cg.limit_source.as_deref().unwrap_or(&cg.path);
            Some(Limit {
                bytes,
                source: format!("cgroup {path}"),
            })
        }
    }
}

/// Applies one sample to the state and says what follows from it; `now` (wall seconds)
/// stamps the events.
pub(crate) fn observe(st: &mut State, sample: &MemorySample, now: f64) -> Outcome {
    let event = |level, kind, message| Event {
        unix_seconds: now,
        level,
        kind,
        message,
    };
    let mut out = Outcome::default();
    let limit = resolve_limit(&st.rules, sample);
    if limit != st.limit {
        let message = match &limit {
            Some(l) => format!("memory limit {} (from {})", format_bytes(l.bytes), l.source),
            None => "no memory limit is known: thresholds are inactive (set LEAKGUARD_LIMIT or run under a cgroup limit)".to_owned(),
        };
        out.events
            .push(event(Level::Info, EventKind::LimitChanged, message));
        st.limit = limit;
    }
    let ratio = st
        .limit
        .as_ref()
        .map(|l| sample.process.resident_bytes as f64 / l.bytes.max(1) as f64);
    if let Some(Transition { from, to }) = st.tracker.observe(ratio) {
        out.pressure = to > from && to >= MemoryState::Critical && from < MemoryState::Critical;
        let (level, kind) = if to > from {
            let level = match to {
                MemoryState::Warn => Level::Warn,
                _ => Level::Error,
            };
            (level, EventKind::ThresholdRaised)
        } else {
            (Level::Info, EventKind::ThresholdLowered)
        };
        let usage = format_bytes(sample.process.resident_bytes);
        let limit = st.limit.as_ref().map_or(0, |l| l.bytes);
        out.events.push(event(
            level,
            kind,
            format!(
                "memory state {from} -> {to}: resident {usage} is {:.1}% of the {} limit",
                ratio.unwrap_or(0.0) * 100.0,
                format_bytes(limit)
            ),
        ));
    }
    // The detector runs on time since start (immune to wall-clock jumps) and RSS.
    let started = st.rules.started_unix;
    let t = started
        + sample
            .monotonic
            .saturating_sub(st.rules.started_mono)
            .as_secs_f64();
    // Urgency is judged against the limit; growth inside the registered (bounded) caches, or
    // memory that follows the open tracked handles, is load.
    st.trend.set_limit(st.limit.as_ref().map(|l| l.bytes));
    let context = crate::trend::Context {
        bounded_cache_bytes: crate::cache::weight_by_cache().iter().map(|(_, b)| b).sum(),
        open_handles: crate::handles::open_by_kind().iter().map(|(_, n)| n).sum(),
    };
    let flipped = st
        .trend
        .observe_with(t, sample.process.resident_bytes, context);
    if st.baseline.is_none() && t - started >= st.trend.config().warmup.as_secs_f64() {
        out.baseline_due = Some(t);
    }
    out.leak = st.trend.verdict().leak;
    out.leak_flipped = flipped;
    if flipped {
        let v = st.trend.verdict();
        out.events.push(if v.leak {
            let level = if v.severity >= Severity::Warning {
                Level::Error
            } else {
                Level::Warn
            };
            event(
                level,
                EventKind::LeakSuspected,
                format!("leak suspected ({:?}): {}", v.severity, v.reason).to_lowercase(),
            )
        } else {
            event(
                Level::Info,
                EventKind::LeakCleared,
                format!("leak no longer suspected: {}", v.reason),
            )
        });
    }
    let failing: Vec<String> = sample
        .failures
        .iter()
        .map(|f| f.source.to_string())
        .collect();
    for e in &sample.failures {
        if !st.failing.iter().any(|f| f == e.source.as_str()) {
            out.events
                .push(event(Level::Warn, EventKind::SourceFailed, e.to_string()));
        }
    }
    for f in &st.failing {
        if !failing.contains(f) {
            out.events.push(event(
                Level::Info,
                EventKind::SourceRecovered,
                format!("{f}: statistics available again"),
            ));
        }
    }
    st.failing = failing;
    st.history.push(sample);
    st.latest = Some(sample.clone());
    out.restart = restart_reason(st, sample);
    out
}

/// Why a restart is wanted now, if it is: the restart threshold held (the tracker already
/// asks for consecutive samples), or a leak that reaches the limit within the drain time.
fn restart_reason(st: &State, sample: &MemorySample) -> Option<String> {
    let limit = st.limit.as_ref()?;
    let rss = sample.process.resident_bytes;
    if st.tracker.state() == MemoryState::Restart {
        return Some(format!(
            "resident {} is {:.1}% of the {} limit (restart threshold {:.0}%)",
            format_bytes(rss),
            rss as f64 * 100.0 / limit.bytes.max(1) as f64,
            format_bytes(limit.bytes),
            st.rules.restart * 100.0
        ));
    }
    let v = st.trend.verdict();
    let drain = st.rules.drain;
    let eta = v
        .slope_bytes_per_second
        .filter(|s| v.leak && *s > 0.0)
        .map(|s| limit.bytes.saturating_sub(rss) as f64 / s)?;
    (eta <= drain.as_secs_f64()).then(|| {
        format!(
            "predicted OOM in {eta:.0} s, within the drain time ({:.0} s)",
            drain.as_secs_f64()
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::process::ProcessStats;
    use crate::sample::{SampleError, Source};
    use crate::threshold::Thresholds;
    use crate::trend::{MB_PER_HOUR, TrendConfig};

    const MB: u64 = 1 << 20;

    fn state(clock: &ManualClock, limit: LimitSetting, trend: TrendConfig) -> State {
        let thresholds = Thresholds {
            warn: 0.80,
            critical: 0.90,
            restart: 0.95,
            consecutive_samples: 2,
            hysteresis: 0.05,
        };
        let rules = Rules {
            limit,
            limit_origin: "builder",
            restart: 0.95,
            drain: Duration::from_secs(40),
            started_mono: clock.monotonic(),
            started_unix: clock.unix_seconds(),
        };
        State::new(
            ThresholdTracker::new(thresholds),
            TrendDetector::new(trend),
            rules,
        )
    }

    /// One sample of `rss` bytes, one second after the last.
    fn step(st: &mut State, clock: &ManualClock, rss: u64) -> Outcome {
        clock.advance(Duration::from_secs(1));
        let sample = MemorySample {
            unix_seconds: clock.unix_seconds(),
            monotonic: clock.monotonic(),
            process: ProcessStats {
                resident_bytes: rss,
                ..ProcessStats::default()
            },
            ..MemorySample::default()
        };
        observe(st, &sample, clock.unix_seconds())
    }

    fn kinds(o: &Outcome) -> Vec<EventKind> {
        o.events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn thresholds_pressure_and_the_restart_threshold() {
        let clock = ManualClock::new(1_700_000_000.0);
        let mut st = state(
            &clock,
            LimitSetting::Bytes(100 * MB),
            TrendConfig::default(),
        );

        let first = step(&mut st, &clock, 50 * MB);
        assert_eq!(kinds(&first), [EventKind::LimitChanged]);
        assert_eq!(first.events[0].unix_seconds, 1_700_000_001.0);
        assert!(
            first.events[0].message.contains("100.0 MiB"),
            "{:?}",
            first.events
        );
        assert!(!first.pressure && first.restart.is_none());
        assert!(
            kinds(&step(&mut st, &clock, 50 * MB)).is_empty(),
            "said once"
        );

        // Critical needs two samples in a row; the first is not enough.
        assert!(kinds(&step(&mut st, &clock, 92 * MB)).is_empty());
        let critical = step(&mut st, &clock, 92 * MB);
        assert_eq!(kinds(&critical), [EventKind::ThresholdRaised]);
        assert_eq!(critical.events[0].level, Level::Error);
        assert!(
            critical.pressure,
            "critical reached from below: caches shrink"
        );
        assert!(critical.restart.is_none());
        assert_eq!(st.tracker.state(), MemoryState::Critical);
        assert!(
            !step(&mut st, &clock, 92 * MB).pressure,
            "pressure once per crossing"
        );

        step(&mut st, &clock, 97 * MB);
        let restart = step(&mut st, &clock, 97 * MB);
        assert_eq!(st.tracker.state(), MemoryState::Restart);
        assert!(!restart.pressure, "already above critical");
        let reason = restart.restart.unwrap();
        assert!(reason.contains("restart threshold 95%"), "{reason}");
        assert!(
            step(&mut st, &clock, 97 * MB).restart.is_some(),
            "wanted while held"
        );

        // Down again, below the thresholds less the hysteresis.
        step(&mut st, &clock, 10 * MB);
        let lowered = step(&mut st, &clock, 10 * MB);
        assert_eq!(kinds(&lowered), [EventKind::ThresholdLowered]);
        assert_eq!(lowered.events[0].level, Level::Info);
        assert!(lowered.restart.is_none());
        assert_eq!(st.latest.as_ref().unwrap().process.resident_bytes, 10 * MB);
        assert!(
            !st.history.fine.points().is_empty(),
            "every sample goes to the history"
        );
    }

    #[test]
    fn without_a_limit_no_threshold_applies() {
        let clock = ManualClock::new(0.0);
        let mut st = state(&clock, LimitSetting::Cgroup, TrendConfig::default());
        for _ in 0..5 {
            let o = step(&mut st, &clock, u64::MAX / 2);
            assert!(o.events.is_empty() && o.restart.is_none() && !o.pressure);
        }
        assert_eq!(st.tracker.state(), MemoryState::Normal);
    }

    #[test]
    fn the_baseline_is_due_once_when_the_warm_up_ends() {
        let clock = ManualClock::new(1_000.0);
        let trend = TrendConfig {
            warmup: Duration::from_secs(5),
            ..TrendConfig::default()
        };
        let mut st = state(&clock, LimitSetting::Bytes(100 * MB), trend);
        let due: Vec<Option<f64>> = (0..8)
            .map(|_| step(&mut st, &clock, 10 * MB).baseline_due)
            .collect();
        assert_eq!(due[..4], [None; 4]);
        assert_eq!(due[4], Some(1_005.0), "detector time: start plus 5 s");
        // Due until the loop takes it, and then never again.
        assert_eq!(due[5], Some(1_006.0));
        st.baseline = Some(Baseline {
            at: 1_006.0,
            resident_bytes: 10 * MB,
            heap_bytes: None,
            caches: Default::default(),
            handles: Default::default(),
        });
        assert_eq!(step(&mut st, &clock, 10 * MB).baseline_due, None);
    }

    #[test]
    fn a_steady_leak_flips_the_verdict_and_wants_a_restart_before_the_limit() {
        let clock = ManualClock::new(0.0);
        let trend = TrendConfig {
            warmup: Duration::from_secs(10),
            window: Duration::from_secs(10),
            min_span: Duration::from_secs(120),
            horizons: vec![Duration::from_secs(300)],
            confirmations: 1,
            ..TrendConfig::default()
        };
        // Growth of 10 MB/s reaches the 4,000 MiB limit in about 420 s: the prediction (40 s
        // of drain) comes before the restart threshold (95%, 21 s before the limit).
        let limit = 4_000 * MB;
        let mut st = state(&clock, LimitSetting::Bytes(limit), trend);
        let rate = 36_000.0 * MB_PER_HOUR;
        let mut flipped_at = None;
        let mut restart = None;
        for i in 0..500_u64 {
            let rss = 10 * MB + (rate * i as f64) as u64;
            let o = step(&mut st, &clock, rss);
            if o.leak_flipped && flipped_at.is_none() {
                assert!(o.leak);
                assert_eq!(kinds(&o).last(), Some(&EventKind::LeakSuspected));
                flipped_at = Some(i);
            }
            if let Some(r) = o.restart {
                restart = Some((i, r));
                break;
            }
        }
        let flipped_at = flipped_at.expect("the leak is suspected");
        let (at, reason) = restart.expect("a restart is wanted before the limit");
        assert!(at >= flipped_at, "the restart follows the verdict");
        // The predicted time to the limit is within the drain time (40 s), and the limit is
        // not reached yet.
        let eta: f64 = reason["predicted OOM in ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no time in {reason:?}"));
        assert!(eta <= 40.0 && eta > 20.0, "{reason}");
        assert!(
            10 * MB + (rate * at as f64) as u64 <= limit,
            "{reason} at {at} s"
        );
        assert!(reason.starts_with("predicted OOM in"), "{reason}");
        assert!(
            st.tracker.state() < MemoryState::Restart,
            "before the restart threshold"
        );
    }

    #[test]
    fn a_failing_source_is_said_once_and_its_recovery_too() {
        let clock = ManualClock::new(0.0);
        let mut st = state(&clock, LimitSetting::Cgroup, TrendConfig::default());
        let mut with_errors = |errors: &[&str]| {
            clock.advance(Duration::from_secs(1));
            let failures: Vec<SampleError> = errors
                .iter()
                .map(|e| SampleError {
                    source: Source::Allocator,
                    message: e.trim_start_matches("allocator: ").to_owned(),
                })
                .collect();
            let sample = MemorySample {
                monotonic: clock.monotonic(),
                errors: failures.iter().map(ToString::to_string).collect(),
                failures,
                ..MemorySample::default()
            };
            kinds(&observe(&mut st, &sample, clock.unix_seconds()))
        };
        assert_eq!(
            with_errors(&["allocator: no stats"]),
            [EventKind::SourceFailed]
        );
        assert!(with_errors(&["allocator: still no stats"]).is_empty());
        assert_eq!(with_errors(&[]), [EventKind::SourceRecovered]);
        assert!(with_errors(&[]).is_empty());
    }
}
