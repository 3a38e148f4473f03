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
use std::collections::VecDeque;
use std::time::Duration;

/// The shortest sampling interval, used while usage is high and rising.
pub(crate) const FASTEST_INTERVAL: Duration = Duration::from_millis(100);

/// How far back the recent slope looks, and how many samples it keeps at most.
const RECENT_SPAN: f64 = 5.0;
const RECENT_POINTS: usize = 64;

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
    /// The configured sampling interval.
    pub interval: Duration,
    /// The warn threshold, a fraction of the limit: above it, rising usage is sampled faster.
    pub warn: f64,
    /// Samples in a row a decision needs (the thresholds' `consecutive_samples`).
    pub consecutive: u32,
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
    /// Recent (detector time, resident bytes), for the slope the projection uses (bounded).
    pub recent: VecDeque<(f64, u64)>,
    /// Samples in a row whose projection reached the limit.
    pub projected_run: u32,
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
            recent: VecDeque::new(),
            projected_run: 0,
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
    /// Usage reached the limit itself: the restart overrides the minimum uptime (the hourly
    /// cap still applies).
    pub at_limit: bool,
    /// When to take the next sample: the configured interval, shorter while usage is above
    /// the warn threshold and rising.
    pub next_interval: Duration,
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

/// Least-squares slope (bytes per second) of the recent samples; `None` with fewer than three
/// or a span under half a second.
fn recent_slope(recent: &VecDeque<(f64, u64)>) -> Option<f64> {
    let n = recent.len();
    let (first, last) = (recent.front()?.0, recent.back()?.0);
    if n < 3 || last - first < 0.5 {
        return None;
    }
    let mean_t = recent.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let mean_b = recent.iter().map(|p| p.1 as f64).sum::<f64>() / n as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for &(t, b) in recent {
        num += (t - mean_t) * (b as f64 - mean_b);
        den += (t - mean_t) * (t - mean_t);
    }
    (den > 0.0).then(|| num / den).filter(|s| s.is_finite())
}

/// Applies one sample to the state and says what follows from it; `now` (wall seconds)
/// stamps the events, `context` is the registered caches' weight and the open tracked
/// handles at the sample (taken by the loop, so that this stays pure).
pub(crate) fn observe(
    st: &mut State,
    sample: &MemorySample,
    now: f64,
    context: crate::trend::Context,
) -> Outcome {
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
    st.recent.push_back((t, sample.process.resident_bytes));
    while st.recent.len() > RECENT_POINTS
        || st.recent.front().is_some_and(|p| t - p.0 > RECENT_SPAN)
    {
        st.recent.pop_front();
    }
    let slope = recent_slope(&st.recent).filter(|s| *s > 0.0);
    out.next_interval = st.rules.interval;
    if slope.is_some() && ratio.is_some_and(|r| r >= st.rules.warn) {
        out.next_interval = (st.rules.interval / 5)
            .max(FASTEST_INTERVAL)
            .min(st.rules.interval);
    }
    out.at_limit = st
        .limit
        .as_ref()
        .is_some_and(|l| sample.process.resident_bytes >= l.bytes);
    out.restart = restart_reason(st, sample, slope, out.next_interval);
    out
}

/// Why a restart is wanted now, if it is: usage reached the limit, the restart threshold
/// held (the tracker already asks for consecutive samples), or usage projected at the recent
/// slope reaches the limit by the time the restart would complete (the confirmation still
/// needed plus the drain), for `consecutive` samples in a row.
fn restart_reason(
    st: &mut State,
    sample: &MemorySample,
    slope: Option<f64>,
    next_interval: Duration,
) -> Option<String> {
    let Some(limit) = st.limit.as_ref() else {
        st.projected_run = 0;
        return None;
    };
    let rss = sample.process.resident_bytes;
    let percent = rss as f64 * 100.0 / limit.bytes.max(1) as f64;
    // The projection keeps counting whatever else decides, so that its run is honest.
    let need = st.rules.consecutive.max(1);
    // The drain plus the confirming samples, one interval each: counted in full for every
    // sample of the run (a sample comes up to an interval after the moment it would be due).
    let ahead = st.rules.drain + next_interval * need;
    let eta = slope.map(|s| limit.bytes.saturating_sub(rss) as f64 / s);
    // Rising at this sample too: a step up followed by a plateau is not a leak.
    let rising = st.recent.len() >= 2 && st.recent[st.recent.len() - 2].1 < rss;
    let projected = rising && eta.is_some_and(|eta| eta <= ahead.as_secs_f64());
    st.projected_run = if projected { st.projected_run + 1 } else { 0 };
    if rss >= limit.bytes {
        return Some(format!(
            "resident {} reached the {} limit ({percent:.1}%)",
            format_bytes(rss),
            format_bytes(limit.bytes),
        ));
    }
    if st.tracker.state() == MemoryState::Restart {
        return Some(format!(
            "resident {} is {percent:.1}% of the {} limit (restart threshold {:.0}%)",
            format_bytes(rss),
            format_bytes(limit.bytes),
            st.rules.restart * 100.0
        ));
    }
    if let Some(eta) = eta.filter(|_| projected && st.projected_run >= need) {
        return Some(format!(
            "predicted OOM in {eta:.0} s at the recent growth of {}/s, within the confirmation and drain time ({:.0} s)",
            format_bytes(slope.unwrap_or(0.0) as u64),
            ahead.as_secs_f64()
        ));
    }
    // A suspected leak (noisy growth the recent slope misses) predicted to reach the limit.
    let v = st.trend.verdict();
    let eta = v
        .slope_bytes_per_second
        .filter(|s| v.leak && *s > 0.0)
        .map(|s| limit.bytes.saturating_sub(rss) as f64 / s)?;
    (eta <= ahead.as_secs_f64()).then(|| {
        format!(
            "predicted OOM in {eta:.0} s, within the confirmation and drain time ({:.0} s)",
            ahead.as_secs_f64()
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
            interval: Duration::from_secs(1),
            warn: 0.80,
            consecutive: 2,
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
        observe(st, &sample, clock.unix_seconds(), Default::default())
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
        // of drain and the confirming samples) comes before the restart threshold (95%, 21 s
        // before the limit).
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
            if let Some(r) = o.restart
                && restart.is_none()
            {
                restart = Some((i, r));
            }
            if restart.is_some() && flipped_at.is_some() {
                break;
            }
        }
        let flipped_at = flipped_at.expect("the leak is suspected");
        let (at, reason) = restart.expect("a restart is wanted before the limit");
        assert!(flipped_at > 0);
        // The predicted time to the limit is within the drain time (40 s) and the two
        // confirming samples, and the limit is not reached yet.
        let eta: f64 = reason["predicted OOM in ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no time in {reason:?}"));
        // (These steps are 1 s apart whatever cadence the guard asks for above the warn
        // threshold, so the margin of the confirming samples is short by up to a second.)
        assert!(eta <= 42.0 && eta > 38.0, "{reason}");
        assert!(
            10 * MB + (rate * at as f64) as u64 <= limit,
            "{reason} at {at} s"
        );
        assert!(reason.starts_with("predicted OOM in"), "{reason}");
        assert!(
            10 * MB + ((rate * at as f64) as u64) < limit * 95 / 100,
            "before the restart threshold"
        );
    }

    /// A leak from half the limit, sampled at the cadence `observe` asks for: returns the
    /// usage when the restart is wanted and when it would complete (one drain later), and
    /// the shortest interval asked for.
    fn leak_until_restart(warn_to_limit: f64) -> (u64, u64, Duration, Outcome) {
        let clock = ManualClock::new(0.0);
        let limit = 1_000 * MB;
        let mut st = state(&clock, LimitSetting::Bytes(limit), TrendConfig::default());
        let drain = st.rules.drain.as_secs_f64();
        // From the warn threshold (80%) to the limit in `warn_to_limit` seconds.
        let rate = 0.2 * limit as f64 / warn_to_limit;
        let start = 500 * MB;
        let mut elapsed = 0.0;
        let mut interval = Duration::from_secs(1);
        let mut fastest = interval;
        for _ in 0..100_000 {
            clock.advance(interval);
            elapsed += interval.as_secs_f64();
            let rss = start + (rate * (elapsed - 10.0).max(0.0)) as u64;
            let sample = MemorySample {
                unix_seconds: clock.unix_seconds(),
                monotonic: clock.monotonic(),
                process: ProcessStats {
                    resident_bytes: rss,
                    ..ProcessStats::default()
                },
                ..MemorySample::default()
            };
            let o = observe(&mut st, &sample, clock.unix_seconds(), Default::default());
            interval = o.next_interval;
            fastest = fastest.min(interval);
            if o.restart.is_some() {
                return (rss, rss + (rate * drain) as u64, fastest, o);
            }
        }
        panic!("no restart for a leak of {warn_to_limit} s from warn to limit");
    }

    #[test]
    fn a_fast_leak_restarts_early_enough_to_complete_under_the_limit() {
        let limit = 1_000 * MB;
        for warn_to_limit in [20.0, 30.0, 60.0, 120.0, 600.0, 3_600.0] {
            let (at, done, fastest, o) = leak_until_restart(warn_to_limit);
            assert!(
                done < limit,
                "{warn_to_limit} s warn->limit: restart wanted at {} MiB completes at {} MiB: {:?}",
                at / MB,
                done / MB,
                o.restart
            );
            assert!(!o.at_limit);
            // Not absurdly early either: the completion lands within the last fifth.
            assert!(
                done > limit * 4 / 5,
                "{warn_to_limit} s: completes at {} MiB",
                done / MB
            );
            if warn_to_limit >= 120.0 {
                // Slow leaks cross the warn threshold first, and are then sampled faster.
                assert!(at > limit * 4 / 5, "{warn_to_limit} s: at {} MiB", at / MB);
                assert_eq!(fastest, Duration::from_millis(200), "{warn_to_limit} s");
            }
        }
    }

    #[test]
    fn flat_usage_above_warn_keeps_the_interval_and_reaching_the_limit_is_urgent() {
        let clock = ManualClock::new(0.0);
        let mut st = state(
            &clock,
            LimitSetting::Bytes(100 * MB),
            TrendConfig::default(),
        );
        for _ in 0..30 {
            let o = step(&mut st, &clock, 85 * MB);
            assert!(o.restart.is_none() && !o.at_limit);
            assert_eq!(o.next_interval, Duration::from_secs(1), "not rising");
        }
        // A single sample at the limit wants the restart at once, overriding the uptime.
        let o = step(&mut st, &clock, 100 * MB);
        assert!(o.at_limit);
        assert!(o.restart.unwrap().contains("reached the"), "limit reason");
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
            kinds(&observe(
                &mut st,
                &sample,
                clock.unix_seconds(),
                Default::default(),
            ))
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
