//! The background sampler thread: it samples, survives panics, and stopping joins it.
#![allow(clippy::unwrap_used)]

use leakguard::{EventKind, Guard};
use std::time::{Duration, Instant};

/// Names of this process's threads, from the real /proc.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// One test: it counts this process's sampler threads, which another guard in a parallel test
// would disturb.
#[test]
fn sampler_thread_samples_survives_panics_and_is_joined_on_stop() {
    let sampler_threads = || {
        thread_names()
            .iter()
            .filter(|n| n.starts_with("leakguard-sampl"))
            .count()
    };
    assert_eq!(sampler_threads(), 0);

    // A callback that panics on every event: at start (on this thread) and on the sampler
    // thread. Neither may take anything down.
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .record_metrics(false)
        .interval(Duration::from_millis(20))
        .limit(1 << 40)
        .on_event(|e| panic!("callback refuses event {:?}", e.kind))
        .start()
        .unwrap();
    wait_for("the sampler thread to be named", || sampler_threads() == 1);
    wait_for("ten samples", || guard.report().sampler.samples >= 10);

    let report = guard.report();
    assert!(report.sampler.panics >= 1, "{}", guard.report_json());
    let panics: Vec<_> = guard
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::SamplerPanicked)
        .collect();
    assert!(
        panics[0].message.contains("callback refuses event Started"),
        "{panics:?}"
    );
    let history = guard.history_fine();
    assert!(!history.is_empty());
    assert!(history.iter().all(|p| p.rss > 0));

    let started = Instant::now();
    guard.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Joined; it may linger in /proc/self/task for a moment after join returns.
    wait_for("the joined sampler thread to leave /proc", || {
        sampler_threads() == 0
    });
}
