//! Ages of open handles and the limits, on a manual clock (no sleeping). The registry
//! clock is process-wide, so the tests in this binary take turns.
#![allow(clippy::unwrap_used)]

use leakguard::handles::{self, HandleLimitMonitor, KindConfig, KindReport, LimitEvent, LimitName};
use leakguard::{HandleGuard, ManualClock, track};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

static TURN: Mutex<()> = Mutex::new(());

/// The shared manual clock, installed before any handle is opened; and this test's turn.
fn clock() -> (&'static ManualClock, MutexGuard<'static, ()>) {
    static CLOCK: OnceLock<ManualClock> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let clock = CLOCK.get_or_init(|| {
        let clock = ManualClock::new(1_700_000_000.0);
        handles::set_clock(Arc::new(clock.clone()));
        clock
    });
    (clock, turn)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn kind_report(name: &str) -> KindReport {
    handles::report()
        .kinds
        .into_iter()
        .find(|k| k.kind == name)
        .unwrap()
}

fn age_range(name: &str) -> (f64, f64) {
    let k = kind_report(name);
    (
        k.oldest_age_seconds.unwrap(),
        k.oldest_age_max_seconds.unwrap(),
    )
}

#[test]
fn the_oldest_open_handle_ages_with_the_clock_within_a_generation() {
    let (clock, _turn) = clock();
    handles::configure("age_unsampled", KindConfig::new().sample_every(0)).unwrap();
    let first = track("age_unsampled");
    clock.advance(secs(1));
    assert_eq!(age_range("age_unsampled"), (0.0, 1.0)); // a new generation begins
    let second = track("age_unsampled");
    clock.advance(secs(10));
    // `first` is 11 s old; its generation lasted from 0 to 1 s.
    assert_eq!(age_range("age_unsampled"), (10.0, 11.0));
    clock.advance(secs(5));
    assert_eq!(age_range("age_unsampled"), (15.0, 16.0));

    drop(first);
    // `second` is 15 s old; its generation lasted from 1 to 11 s, so the range is wide.
    assert_eq!(age_range("age_unsampled"), (5.0, 15.0));
    drop(second);
    let k = kind_report("age_unsampled");
    assert_eq!((k.oldest_age_seconds, k.open), (None, 0));
}

#[test]
fn a_sampled_handle_has_an_exact_age() {
    let (clock, _turn) = clock();
    handles::configure("age_sampled", KindConfig::new().sample_every(1)).unwrap();
    let handle = track("age_sampled");
    assert!(handle.is_sampled());
    clock.advance(secs(42));
    let k = kind_report("age_sampled");
    assert_eq!(k.oldest_age_seconds, Some(42.0));
    assert_eq!(k.sites[0].oldest_age_seconds, 42.0);
}

#[test]
fn generations_keep_a_leak_precise_while_short_lived_handles_come_and_go() {
    let (clock, _turn) = clock();
    handles::configure("age_churn", KindConfig::new().sample_every(0)).unwrap();
    let leaked = track("age_churn");
    // A sampler that looks every second, while handles open and close all the time.
    for _ in 0..600 {
        for _ in 0..10 {
            drop(track("age_churn"));
        }
        let _in_flight = track("age_churn");
        clock.advance(secs(1));
        handles::report();
    }
    let (at_least, at_most) = age_range("age_churn");
    assert!(
        (599.0..=600.0).contains(&at_least) && (600.0..=601.0).contains(&at_most),
        "{at_least}..{at_most}"
    );
    drop(leaked);
}

fn events_for(events: Vec<LimitEvent>, kind: &str) -> Vec<(LimitName, bool)> {
    events
        .into_iter()
        .filter(|e| e.kind.as_deref() == Some(kind))
        .map(|e| (e.limit, e.exceeded))
        .collect()
}

#[test]
fn max_open_warns_once_per_crossing_and_rearms_when_back_under() {
    let (_clock, _turn) = clock();
    handles::configure("age_max_open", KindConfig::new().max_open(10)).unwrap();
    let mut monitor = HandleLimitMonitor::new();
    let mut open: Vec<HandleGuard> = (0..10).map(|_| track("age_max_open")).collect();
    assert_eq!(events_for(monitor.check(None), "age_max_open"), vec![]);

    open.push(track("age_max_open"));
    let crossed = monitor.check(None);
    let event = crossed
        .iter()
        .find(|e| e.kind.as_deref() == Some("age_max_open"))
        .unwrap();
    assert_eq!(event.level, leakguard::Level::Warn);
    assert!(
        event
            .message
            .contains("11 handles of kind age_max_open are open"),
        "{}",
        event.message
    );
    open.push(track("age_max_open"));
    assert_eq!(events_for(monitor.check(None), "age_max_open"), vec![]);

    // Back to 10 is not yet under: at most 90 % re-arms.
    open.truncate(10);
    assert_eq!(events_for(monitor.check(None), "age_max_open"), vec![]);
    open.truncate(9);
    assert_eq!(
        events_for(monitor.check(None), "age_max_open"),
        vec![(LimitName::MaxOpen, false)]
    );
    open.extend((0..2).map(|_| track("age_max_open")));
    assert_eq!(
        events_for(monitor.check(None), "age_max_open"),
        vec![(LimitName::MaxOpen, true)]
    );
}

#[test]
fn max_age_warns_once_when_the_oldest_handle_is_surely_too_old_and_rearms() {
    let (clock, _turn) = clock();
    handles::configure(
        "age_max_age",
        KindConfig::new().max_age(secs(30)).sample_every(0),
    )
    .unwrap();
    let mut monitor = HandleLimitMonitor::new();
    let handle = track("age_max_age");
    // The guard's sampler checks every second.
    let mut crossed_at = Vec::new();
    for second in 1..=40 {
        clock.advance(secs(1));
        for (limit, exceeded) in events_for(monitor.check(None), "age_max_age") {
            assert_eq!((limit, exceeded), (LimitName::MaxAge, true));
            crossed_at.push(second);
        }
    }
    // Unsampled, the age is known to a generation: the warning comes 1 to 2 s late, never
    // early, and once.
    assert_eq!(crossed_at.len(), 1, "{crossed_at:?}");
    assert!((31..=33).contains(&crossed_at[0]), "{crossed_at:?}");
    assert!(kind_report("age_max_age").max_age_exceeded);

    drop(handle);
    assert_eq!(
        events_for(monitor.check(None), "age_max_age"),
        vec![(LimitName::MaxAge, false)]
    );
    assert!(!kind_report("age_max_age").max_age_exceeded);
}

#[test]
fn a_sampled_handle_crosses_max_age_on_time() {
    let (clock, _turn) = clock();
    handles::configure(
        "age_max_age_sampled",
        KindConfig::new().max_age(secs(30)).sample_every(1),
    )
    .unwrap();
    let mut monitor = HandleLimitMonitor::new();
    let _handle = track("age_max_age_sampled");
    clock.advance(secs(30));
    assert_eq!(
        events_for(monitor.check(None), "age_max_age_sampled"),
        vec![]
    );
    clock.advance(Duration::from_millis(1));
    let events = monitor.check(None);
    let event = events
        .iter()
        .find(|e| e.kind.as_deref() == Some("age_max_age_sampled"))
        .unwrap();
    assert!(
        event.message.contains("max_age of 30 s"),
        "{}",
        event.message
    );
    // The warning names where the handle was opened.
    assert!(
        event
            .message
            .contains("a_sampled_handle_crosses_max_age_on_time"),
        "{}",
        event.message
    );
}
