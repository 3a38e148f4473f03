//! The guard records through the `metrics` facade, so a service's own recorder sees it.
#![allow(clippy::unwrap_used)]

use leakguard::Guard;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn a_services_recorder_sees_the_guards_gauges_and_counters() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .limit(32 << 30)
        .start()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        guard.tick();
        guard.tick();
    });
    let seen = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        seen.iter()
            .find(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, v)| v)
    };
    match value("process_resident_memory_bytes") {
        Some(DebugValue::Gauge(v)) => assert!(v.into_inner() > 1_048_576.0),
        other => panic!("resident gauge: {other:?}"),
    }
    match value("leakguard_memory_limit_bytes") {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), (32u64 << 30) as f64),
        other => panic!("limit gauge: {other:?}"),
    }
    match value("leakguard_samples_total") {
        Some(DebugValue::Counter(n)) => assert_eq!(*n, 3),
        other => panic!("samples counter: {other:?}"),
    }
}
