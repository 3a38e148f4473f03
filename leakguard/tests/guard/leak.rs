//! The guard runs the leak detector on every sample: a guard whose sampler reads a procfs
//! fixture tree, whose `statm` the test rewrites before each tick, driven through hours of
//! samples by a manual clock.
#![allow(clippy::unwrap_used)]

use super::fixture::{START, fixture_guard, set_rss};
use leakguard::{EventKind, ManualClock};
use std::time::Duration;

#[test]
fn a_growing_floor_is_flagged_explained_and_cleared_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let clock = ManualClock::new(START);
    let limit: u64 = 2_000_000_000;
    let guard = fixture_guard(root, &clock, limit);
    let set_rss = |bytes: f64| set_rss(root, bytes);

    // Four hours of a floor growing 60 MB/h under a 40 MB saw-tooth, sampled every 15 s.
    let step = 15.0;
    let mut t = 0.0;
    let mut flagged_at = None;
    while t < 4.0 * 3600.0 {
        let saw = 40e6 * ((t % 180.0) / 180.0);
        set_rss(300e6 + 60e6 * t / 3600.0 + saw);
        clock.advance(Duration::from_secs_f64(step));
        t += step;
        guard.tick();
        if flagged_at.is_none() && guard.report().leak.suspected {
            flagged_at = Some(t);
        }
    }
    let flagged_at = flagged_at.expect("the leak was never flagged");
    assert!(
        flagged_at < 1.5 * 3600.0,
        "flagged only after {flagged_at} s"
    );

    let report = guard.report();
    let leak = &report.leak;
    let rate = leak.growth_mb_per_hour.unwrap();
    assert!((50.0..70.0).contains(&rate), "{rate} MB/h");
    assert_eq!(format!("{:?}", leak.severity), "Warning");
    assert_eq!(leak.first_suspected_at, Some(1_700_000_000.0 + flagged_at));
    let rss = report.memory.resident_bytes.unwrap() as f64;
    let eta = leak.oom_eta_seconds.unwrap();
    let expected = (limit as f64 - rss) / leak.growth_bytes_per_second.unwrap();
    assert!((eta - expected).abs() < 1.0, "{eta} vs {expected}");
    let attribution = leak.attribution.as_ref().unwrap();
    assert!(attribution.resident_delta > 180_000_000, "{attribution:?}");
    assert!(
        attribution.summary.starts_with("RSS +"),
        "{}",
        attribution.summary
    );

    let metrics = guard.render_metrics();
    assert!(
        metrics.contains("\nleakguard_leak_suspected 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nleakguard_memory_oom_eta_seconds "));
    assert!(metrics.contains("\nleakguard_memory_growth_bytes_per_second "));
    let suspected: Vec<_> = guard
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::LeakSuspected)
        .collect();
    assert_eq!(suspected.len(), 1, "{suspected:?}");

    // The leak stops: the floor stays flat, and the verdict clears.
    let top = 300e6 + 60e6 * 4.0;
    while t < 7.0 * 3600.0 {
        set_rss(top + 40e6 * ((t % 180.0) / 180.0));
        clock.advance(Duration::from_secs_f64(step));
        t += step;
        guard.tick();
    }
    let report = guard.report();
    assert!(!report.leak.suspected, "{}", report.leak.reason);
    assert_eq!(report.leak.oom_eta_seconds, None);
    assert!(
        guard
            .render_metrics()
            .contains("\nleakguard_leak_suspected 0\n")
    );
    assert!(
        guard
            .events()
            .iter()
            .any(|e| e.kind == EventKind::LeakCleared)
    );
}
