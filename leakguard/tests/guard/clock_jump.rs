//! The wall clock jumps (NTP steps it, an operator sets it) back and forward under a running
//! guard: sampling, the history, the detector, the report and the metrics go on without a
//! panic or a false alarm. Time since start comes from the monotonic clock, which does not
//! jump; the wall clock only stamps.
#![allow(clippy::unwrap_used)]

use leakguard::endpoint::EndpointRequest;
use leakguard::{Clock, Guard, ManualClock, MemoryState};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn wall_clock_jumps_back_and_forward_are_survived() {
    let clock = ManualClock::new(1_700_000_000.0);
    let guard = Guard::builder()
        .no_endpoint()
        .ignore_env()
        .background(false)
        .record_metrics(false)
        .limit(1 << 40)
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap();
    let run = |seconds: u32| {
        for _ in 0..seconds {
            clock.advance(Duration::from_secs(1));
            guard.tick();
        }
    };
    run(900);
    for jump in [-86_400.0, 30.0 * 86_400.0, -3_600.0, -1e9, 5e9] {
        clock.jump(jump);
        run(120);
        for path in ["/healthz", "/readyz", "/metrics", "/debug/leakguard"] {
            let r = guard.handle(&EndpointRequest::new("GET", path));
            assert_eq!(r.status, 200, "after a jump of {jump} s: {path}");
        }
        let report: serde_json::Value = serde_json::from_str(&guard.report_json()).unwrap();
        assert!(
            report["sampler"]["last_sample_at"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
        assert!(
            guard
                .render_metrics()
                .contains("process_resident_memory_bytes")
        );
    }
    let report = guard.report();
    assert_eq!(report.sampler.panics, 0);
    assert_eq!(guard.state(), MemoryState::Normal);
    // The detector runs on monotonic time: jumps are not growth, nor a gap.
    assert!(!report.leak.suspected, "{:?}", report.leak);
    // The history stays bounded and in sampling order, whatever the wall clock said.
    assert_eq!(guard.history_fine().len(), 600);
    assert!(guard.history_coarse().len() <= 1440);
    // The wall clock now reads what it was told.
    let expected = 1_700_000_000.0
        + (-86_400.0 + 30.0 * 86_400.0 - 3_600.0 - 1e9 + 5e9)
        + clock.monotonic().as_secs_f64();
    assert_eq!(clock.unix_seconds(), expected);
}
