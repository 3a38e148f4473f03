//! Faults around a running guard degrade to a reported state: broken `/proc` and cgroup
//! files, no cgroup, jemalloc linked but not the allocator, drain hooks that panic or never
//! return. The guard keeps sampling and answering; nothing panics or hangs the host.
//! (Parsers are checked file by file in `process_fixture.rs` and `cgroup_fixture.rs`; an exec
//! that fails and a taken port are checked on the demo in `tests/tests/restart.rs` and
//! `tests/tests/demo.rs`.) One restart in this binary: the restart record is process-wide.
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice};
use leakguard::cgroup::CgroupReader;
use leakguard::endpoint::EndpointRequest;
use leakguard::process::ProcReader;
use leakguard::restart::RestartPolicy;
use leakguard::{EventKind, Guard, ManualClock, RestartAction, Sampler};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const STATM: &str = "1000 250 100 10 0 500 0\n";
const STATUS: &str = "Name:\tsvc\nVmHWM:\t    2048 kB\nVmSwap:\t       0 kB\nThreads:\t7\n";
const STAT: &str = "4242 (svc) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 \
20 0 7 0 123456 3133440 409 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max open files            1024                 4096                 files     \n";
const BOOT_STAT: &str = "cpu  1 2 3 4 5 6 7 0 0 0\nbtime 1700000000\n";
const V2_MOUNT: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn good_proc(root: &Path) {
    fs::create_dir_all(root.join("self/fd")).unwrap();
    for (path, content) in [
        ("self/statm", STATM),
        ("self/status", STATUS),
        ("self/stat", STAT),
        ("self/limits", LIMITS),
        ("stat", BOOT_STAT),
    ] {
        write(root, path, content);
    }
}

fn guard_over(proc_root: &Path, cgroup_root: &Path, choice: AllocatorChoice) -> Guard {
    Guard::builder()
        .no_endpoint()
        .ignore_env()
        .background(false)
        .record_metrics(false)
        .clock(Arc::new(ManualClock::new(1_700_000_000.0)))
        .sampler(Sampler::with_readers(
            ProcReader::with_root(proc_root),
            Some(CgroupReader::with_root(cgroup_root)),
            Allocator::new(choice),
        ))
        .start()
        .unwrap()
}

fn answers(guard: &Guard) {
    for path in ["/healthz", "/readyz", "/metrics", "/debug/leakguard"] {
        let r = guard.handle(&EndpointRequest::new("GET", path));
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    serde_json::from_str::<serde_json::Value>(&guard.report_json()).unwrap();
}

fn messages(guard: &Guard, kind: EventKind) -> Vec<String> {
    guard
        .events()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

#[test]
fn broken_proc_and_cgroup_files_are_reported_and_the_guard_recovers_with_them() {
    let proc_dir = tempfile::tempdir().unwrap();
    let cg_dir = tempfile::tempdir().unwrap();
    let (proc_root, cg_root) = (proc_dir.path(), cg_dir.path());
    // /proc: `status` missing, `stat` unreadable (a directory: EISDIR, even for root).
    good_proc(proc_root);
    fs::remove_file(proc_root.join("self/status")).unwrap();
    fs::remove_file(proc_root.join("self/stat")).unwrap();
    fs::create_dir(proc_root.join("self/stat")).unwrap();
    // cgroup: v2 whose memory.max is garbage.
    write(cg_root, "proc/self/cgroup", "0::/app\n");
    write(cg_root, "proc/self/mountinfo", V2_MOUNT);
    write(cg_root, "sys/fs/cgroup/app/memory.max", "lots of memory\n");
    write(cg_root, "sys/fs/cgroup/app/memory.current", "4096\n");

    let guard = guard_over(proc_root, cg_root, AllocatorChoice::None);
    for _ in 0..3 {
        guard.tick();
    }
    answers(&guard);
    let report = guard.report();
    assert_eq!(report.sampler.samples, 4);
    assert_eq!(report.sampler.sample_errors, 4);
    assert_eq!(report.sampler.panics, 0);
    // Each failing source is reported once, naming its file, not on every sample.
    let failed = messages(&guard, EventKind::SourceFailed);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|m| m.contains("self/status") || m.contains("self/stat")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|m| m.contains("memory.max")),
        "{failed:?}"
    );
    // No limit is known, so no threshold state can be raised by garbage.
    assert!(report.limit.is_none(), "{:?}", report.limit);

    // Repaired: the sources come back and the cgroup limit is taken.
    fs::remove_dir(proc_root.join("self/stat")).unwrap();
    good_proc(proc_root);
    write(cg_root, "sys/fs/cgroup/app/memory.max", "1073741824\n");
    guard.tick();
    answers(&guard);
    let report = guard.report();
    assert_eq!(report.sampler.sample_errors, 4);
    assert_eq!(report.memory.resident_bytes, Some(250 * page_size()));
    assert_eq!(report.limit.as_ref().map(|l| l.bytes), Some(1 << 30));
    let recovered = messages(&guard, EventKind::SourceRecovered);
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    guard.stop();
}

#[test]
fn no_cgroup_at_all_means_no_limit_said_once_and_everything_else_works() {
    let proc_dir = tempfile::tempdir().unwrap();
    let cg_dir = tempfile::tempdir().unwrap();
    good_proc(proc_dir.path());
    write(cg_dir.path(), "proc/self/cgroup", "");
    write(cg_dir.path(), "proc/self/mountinfo", "");
    let guard = guard_over(proc_dir.path(), cg_dir.path(), AllocatorChoice::None);
    guard.tick();
    guard.tick();
    answers(&guard);
    let report = guard.report();
    assert_eq!(report.sampler.sample_errors, 0);
    assert!(report.limit.is_none());
    // Metrics without a value are left out, not reported as 0: no limit, no thresholds in
    // bytes, no time to the limit; the resident size, which is known, is there.
    let metrics = guard.render_metrics();
    for absent in [
        "leakguard_memory_limit_bytes",
        "leakguard_memory_threshold_bytes",
        "leakguard_memory_oom_eta_seconds",
    ] {
        assert!(
            !metrics.lines().any(|l| l.starts_with(absent)),
            "{absent} is reported without a limit:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("process_resident_memory_bytes ")),
        "{metrics}"
    );
    let limits = messages(&guard, EventKind::LimitChanged);
    assert!(limits.len() <= 1, "{limits:?}");
    assert!(messages(&guard, EventKind::SourceFailed).is_empty());
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}

/// This test binary runs on the system allocator while jemalloc is linked (the default
/// features): the guard says so, reports glibc's numbers, and purge still works.
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[test]
fn jemalloc_linked_but_not_the_allocator_is_said_and_glibc_is_reported() {
    let guard = Guard::builder()
        .no_endpoint()
        .ignore_env()
        .background(false)
        .record_metrics(false)
        .token("t")
        .start()
        .unwrap();
    let notes = messages(&guard, EventKind::Allocator);
    assert!(
        notes.iter().any(|m| m.contains("not the global allocator")),
        "{notes:?}"
    );
    let report: serde_json::Value = serde_json::from_str(&guard.report_json()).unwrap();
    assert_eq!(
        report["allocator"]["kind"], "glibc",
        "{}",
        report["allocator"]
    );
    let mut purge = EndpointRequest::new("POST", "/debug/leakguard/purge");
    purge.authorization = Some("Bearer t".into());
    let r = guard.handle(&purge);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn drain_hooks_that_panic_or_never_return_do_not_stop_the_restart() {
    // The stuck hook waits until the test lets it go, so no thread outlives the test.
    let (release, stuck) = mpsc::channel::<()>();
    let stuck = Mutex::new(stuck);
    let (restarted, restarts) = mpsc::channel::<(String, Instant)>();
    let restarted = Mutex::new(restarted);
    let ran_last = Arc::new(Mutex::new(false));
    let last = Arc::clone(&ran_last);
    let guard = Guard::builder()
        .no_endpoint()
        .ignore_env()
        .background(false)
        .record_metrics(false)
        .restart_policy(RestartPolicy {
            drain_delay: Duration::ZERO,
            // Room for the panic hook to print a backtrace on a loaded machine.
            drain_timeout: Duration::from_secs(3),
            max_per_hour: 3,
        })
        .on_drain(|_| panic!("the drain hook failed"))
        .on_drain(move |_| {
            let _ = stuck.lock().unwrap().recv();
        })
        .on_drain(move |_| *last.lock().unwrap() = true)
        .restart_action(RestartAction::Callback)
        .on_restart(move |reason| {
            let _ = restarted
                .lock()
                .unwrap()
                .send((reason.to_owned(), Instant::now()));
        })
        .start()
        .unwrap();
    let began = Instant::now();
    guard.request_restart("fault test").unwrap();
    assert!(!guard.is_ready());
    let (reason, at) = restarts.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(reason.contains("fault test"), "{reason}");
    // The deadline holds: the stuck hook is given up on after the drain timeout.
    assert!(at - began < Duration::from_secs(10), "{:?}", at - began);
    let events = messages(&guard, EventKind::Restart).join("\n");
    assert!(
        events.contains("drain hook #1 panicked: the drain hook failed"),
        "{events}"
    );
    assert!(events.contains("drain hook #2 overran"), "{events}");
    // The stuck hook ate the time that was left: the third had none.
    assert!(events.contains("drain hook #3 overran"), "{events}");
    assert!(!*ran_last.lock().unwrap());
    // One restart at a time: a second request is refused with the crate's error.
    match guard.request_restart("a second one") {
        Err(leakguard::Error::RestartRefused(why)) => {
            assert!(why.contains("already under way"), "{why}")
        }
        other => panic!("a second restart was not refused: {other:?}"),
    }
    // The guard still answers (readiness stays off: a restart is under way).
    assert_eq!(
        guard
            .handle(&EndpointRequest::new("GET", "/healthz"))
            .status,
        200
    );
    assert_eq!(
        guard.handle(&EndpointRequest::new("GET", "/readyz")).status,
        503
    );
    let _ = release.send(());
}
