//! The capture budget: a busy kind sampled at the default rate makes about the budgeted
//! stack captures a second, on the registry clock, and its weighted sites still estimate
//! its open handles; suspect and explicitly configured kinds capture as before.
#![allow(clippy::unwrap_used)]

use leakguard::handles::{self, KindConfig, KindReport};
use leakguard::{HandleGuard, HandleKind, ManualClock};
use std::sync::Arc;
use std::time::Duration;

fn kind_report(name: &str) -> KindReport {
    handles::report()
        .kinds
        .into_iter()
        .find(|k| k.kind == name)
        .unwrap()
}

#[inline(never)]
fn open_from_a(kind: HandleKind) -> HandleGuard {
    kind.track()
}

#[inline(never)]
fn open_from_b(kind: HandleKind) -> HandleGuard {
    kind.track()
}

/// `steps` milliseconds of the clock, `per_step` opens in each (one in four from `b`), all
/// kept open.
fn run(clock: &ManualClock, kind: HandleKind, steps: usize, per_step: usize) -> Vec<HandleGuard> {
    let mut kept = Vec::with_capacity(steps * per_step);
    for _ in 0..steps {
        clock.advance(Duration::from_millis(1));
        for i in 0..per_step {
            kept.push(if i % 4 == 3 {
                open_from_b(kind)
            } else {
                open_from_a(kind)
            });
        }
    }
    kept
}

#[test]
fn the_budget_caps_captures_per_second_and_the_estimates_stay_unbiased() {
    let clock = ManualClock::new(1_700_000_000.0);
    handles::set_clock(Arc::new(clock.clone()));
    assert_eq!(
        handles::capture_budget(),
        handles::DEFAULT_CAPTURES_PER_SECOND
    );
    assert_eq!(handles::DEFAULT_SAMPLE_EVERY, 128);

    // 20,000 opens a second for 50 s at 1 in 128: ~7,800 captures without a budget, ~500
    // with 10 a second.
    let busy = handles::kind("budget_busy");
    let kept = run(&clock, busy, 50_000, 20);
    let k = kind_report("budget_busy");
    assert_eq!(k.open, 1_000_000);
    assert_eq!(k.sample_every, 128);
    // 20,000 opens a second against 10 captures: about one open in 2,000 sampled now.
    assert!(
        (1_000..=4_000).contains(&k.sample_every_now),
        "sampled one in {} now",
        k.sample_every_now
    );
    assert!(
        (300..=800).contains(&k.sampled_open),
        "{} captures",
        k.sampled_open
    );
    let estimated: u64 = k.sites.iter().map(|s| s.estimated_open).sum();
    assert!(
        (750_000..=1_250_000).contains(&estimated),
        "estimated {estimated} of 1,000,000 open"
    );
    let site = |name: &str| {
        k.sites
            .iter()
            .find(|s| s.function.as_deref().is_some_and(|f| f.contains(name)))
            .unwrap_or_else(|| panic!("no site {name} in {k:#?}"))
            .estimated_open
    };
    let (a, b) = (site("open_from_a"), site("open_from_b"));
    assert!((525_000..=975_000).contains(&a), "a: {a} of 750,000");
    assert!((175_000..=325_000).contains(&b), "b: {b} of 250,000");
    drop(kept);

    // A suspect kind, and a kind with its own rate, capture every open at the same pace.
    let suspect = handles::kind("budget_suspect");
    let _first = suspect.track();
    assert!(handles::set_suspect("budget_suspect", true));
    let kept = run(&clock, suspect, 100, 20);
    assert!(kept.iter().all(HandleGuard::is_sampled));
    assert_eq!(kind_report("budget_suspect").sampled_open, 2000);
    drop(kept);
    let configured = handles::configure("budget_every", KindConfig::new().sample_every(1)).unwrap();
    let kept = run(&clock, configured, 100, 20);
    assert!(kept.iter().all(HandleGuard::is_sampled));
    let k = kind_report("budget_every");
    assert_eq!((k.sample_every, k.sample_every_now), (1, 1));
    drop(kept);

    // Without a budget, the default rate holds whatever the traffic: 1 in 128 of 200,000.
    handles::set_capture_budget(0);
    let free = handles::kind("budget_free");
    let kept = run(&clock, free, 10_000, 20);
    let sampled = kept.iter().filter(|g| g.is_sampled()).count();
    assert!(
        (1_300..=1_850).contains(&sampled),
        "{sampled} of 200,000 sampled"
    );
    assert_eq!(kind_report("budget_free").sample_every_now, 128);
    drop(kept);

    // Sites are ranked by estimated handles, not by samples: `b` opens 100 a second for
    // 100 s (every sample stands for 128), then `a` 500,000 in 1 s (a sample stands for
    // thousands): `a` has fewer samples but far more handles, and comes first.
    handles::set_capture_budget(handles::DEFAULT_CAPTURES_PER_SECOND);
    let ranked = handles::kind("budget_ranked");
    let mut kept = Vec::new();
    for _ in 0..100 {
        for _ in 0..100 {
            kept.push(open_from_b(ranked));
        }
        clock.advance(Duration::from_secs(1));
    }
    for _ in 0..1000 {
        clock.advance(Duration::from_millis(1));
        for _ in 0..500 {
            kept.push(open_from_a(ranked));
        }
    }
    let k = kind_report("budget_ranked");
    let named = |s: &handles::SiteReport, name: &str| {
        s.function.as_deref().is_some_and(|f| f.contains(name))
    };
    let (a, b) = (
        k.sites.iter().find(|s| named(s, "open_from_a")).unwrap(),
        k.sites.iter().find(|s| named(s, "open_from_b")).unwrap(),
    );
    assert!(a.sampled_open < b.sampled_open, "{k:#?}");
    assert!(a.estimated_open > b.estimated_open, "{k:#?}");
    assert!(named(&k.sites[0], "open_from_a"), "{k:#?}");
    drop(kept);
}
