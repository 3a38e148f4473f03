//! A guard dropped while a restart is under way finishes the restart instead of letting the
//! process end quietly (the axum pattern: `main` returns once the drain hook stopped the
//! server, which drops the guard).

use std::time::Duration;

/// Set in the child: the test body runs there.
const CHILD: &str = "LEAKGUARD_TEST_RESTART_DROP_CHILD";

#[test]
fn a_guard_dropped_during_a_restart_finishes_it() {
    if std::env::var_os(CHILD).is_some() {
        let (drained, wait) = std::sync::mpsc::channel();
        let guard = leakguard::Guard::builder()
            .ignore_env()
            .no_endpoint()
            .restart_action(leakguard::RestartAction::Exit(42))
            .restart_policy(leakguard::restart::RestartPolicy {
                drain_delay: Duration::ZERO,
                ..Default::default()
            })
            .on_drain(move |_deadline| {
                let _ = drained.send(());
                // The hook's own work (in-flight requests finishing) outlasts `main`'s return.
                std::thread::sleep(Duration::from_millis(300));
            })
            .start()
            .expect("start");
        guard.request_restart("test").expect("restart accepted");
        // The drain hook ran: the service's main returns, dropping the guard.
        wait.recv().expect("the drain hook ran");
        drop(guard);
        // Without the wait in drop, the test (and the process) would end with code 0 here.
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_guard_dropped_during_a_restart_finishes_it",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(42), "{stderr}");
    assert!(
        stderr.contains("dropped while a restart is under way"),
        "{stderr}"
    );
}

/// Resident bytes of this process, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn the_pre_restart_dump_leaves_the_profile_out_when_the_headroom_is_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 16 MiB over what the process holds now: less than a heap profile may need.
    let guard = leakguard::Guard::builder()
        .ignore_env()
        .no_endpoint()
        .limit(resident_bytes() + (16 << 20))
        .dump_dir(dir.path())
        .restart_action(leakguard::RestartAction::None)
        .restart_policy(leakguard::restart::RestartPolicy {
            drain_delay: Duration::ZERO,
            ..Default::default()
        })
        .start()
        .expect("start");
    guard.request_restart("test").expect("restart accepted");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let written = loop {
        let events = guard.events();
        if let Some(e) = events
            .iter()
            .find(|e| e.message.starts_with("post-mortem dump"))
        {
            break e.message.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dump event: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(written.contains("skipped: the headroom"), "{written}");
    let reports: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dump dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let body = std::fs::read_to_string(&reports[0]).expect("report");
    assert!(body.contains("skipped: the headroom"), "{body}");
}
