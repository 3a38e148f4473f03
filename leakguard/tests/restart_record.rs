//! The restart record that survives a re-exec is bounded and keeps the newest restart times,
//! so that the hourly limit still counts right after a long lineage of restarts.
//! One test in this file: it sets the process's environment before the guard reads it.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[test]
fn an_inherited_record_keeps_the_newest_times_and_the_hourly_limit_counts_them() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // 2,000 restart times, oldest first: 1,000 from two hours ago, then 1,000 in the last
    // ten minutes. Keeping the oldest 1,024 would leave 24 within the hour.
    let times: Vec<f64> = (0..1_000)
        .map(|i| now - 7_200.0 + f64::from(i) * 0.1)
        .chain((0..1_000).map(|i| now - 600.0 + f64::from(i) * 0.1))
        .collect();
    let state = serde_json::json!({
        "restarts_total": 2_000,
        "times": times,
        "last_reason": "an earlier image",
    });
    // SAFETY: the only test of this binary, before any thread of the guard exists.
    unsafe { std::env::set_var("LEAKGUARD_RESTART_STATE", state.to_string()) };
    let guard = leakguard::Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .restart_action(leakguard::RestartAction::None)
        .restart_policy(leakguard::restart::RestartPolicy {
            drain_delay: Duration::ZERO,
            max_per_hour: 1_000,
            ..Default::default()
        })
        .start()
        .unwrap();
    let refused = guard.request_restart("one more").unwrap_err().to_string();
    assert!(refused.contains("1000"), "{refused}");
    assert!(!refused.contains("under way"), "{refused}");
    assert_eq!(guard.report().restart.restarts_total, 2_000);

    // The hourly limit cannot be set beyond what the record keeps.
    let too_many = leakguard::Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .restart_policy(leakguard::restart::RestartPolicy {
            max_per_hour: 1_025,
            ..Default::default()
        })
        .start()
        .unwrap_err()
        .to_string();
    assert!(too_many.contains("1024"), "{too_many}");
}
