//! The guard follows the process's real resident memory through the threshold states.
//! One test in this file: it allocates and measures RSS, which parallel tests would disturb.
#![allow(clippy::unwrap_used)]

use leakguard::{EventKind, Guard, MemoryState};

const MIB: u64 = 1 << 20;

fn touch(mib: u64) -> Vec<u8> {
    // Filled with non-zero bytes so every page is resident.
    std::hint::black_box(vec![0x5Au8; (mib * MIB) as usize])
}

#[test]
fn states_follow_real_resident_memory_up_and_down() {
    let rss0 = leakguard::process::ProcReader::new()
        .read(false)
        .unwrap()
        .resident_bytes;
    // Limit and thresholds placed relative to the current RSS: warn at +100 MiB, critical at
    // +150 MiB, restart at +190 MiB.
    let limit = rss0 + 200 * MIB;
    let frac = |extra: u64| (rss0 + extra * MIB) as f64 / limit as f64;
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .record_metrics(false)
        .limit(limit)
        .warn(frac(100))
        .critical(frac(150))
        .restart(frac(190))
        .hysteresis(0.01)
        .start()
        .unwrap();
    assert_eq!(guard.state(), MemoryState::Normal);

    let block = touch(125);
    // Two samples over the warning threshold are not enough…
    guard.tick();
    guard.tick();
    assert_eq!(guard.state(), MemoryState::Normal);
    // …the third is.
    guard.tick();
    assert_eq!(guard.state(), MemoryState::Warn, "{}", guard.report_json());

    let more = touch(50);
    for _ in 0..3 {
        guard.tick();
    }
    assert_eq!(
        guard.state(),
        MemoryState::Critical,
        "{}",
        guard.report_json()
    );

    drop(more);
    drop(block);
    for _ in 0..3 {
        guard.tick();
    }
    assert_eq!(
        guard.state(),
        MemoryState::Normal,
        "{}",
        guard.report_json()
    );

    let kinds: Vec<EventKind> = guard.events().iter().map(|e| e.kind).collect();
    let raised = kinds
        .iter()
        .filter(|k| **k == EventKind::ThresholdRaised)
        .count();
    let lowered = kinds
        .iter()
        .filter(|k| **k == EventKind::ThresholdLowered)
        .count();
    assert_eq!((raised, lowered), (2, 1), "{kinds:?}");
    let report = guard.report();
    assert_eq!(report.limit.as_ref().unwrap().bytes, limit);
    assert_eq!(report.limit.as_ref().unwrap().source, "builder");
    assert_eq!(report.sampler.samples, 1 + 9);
}
