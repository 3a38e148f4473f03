//! A child forked while leakguard's threads hold its locks (the sampler, a report that
//! symbolizes, caches and handle kinds coming and going) must not block on them: Python
//! `multiprocessing` with fork, Celery prefork and gunicorn `--preload` do exactly this. Nor
//! must a child that goes on using the guard and the caches the parent made while the parent's
//! threads were using them (their own locks: the guard's state, event log and sampler, the
//! caches' shard locks).
//!
//! One test per binary: the test forks, and the other tests' threads must not be in the way.
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use leakguard::cache::{LruCache, TtlCache};
use leakguard::endpoint::EndpointRequest;
use leakguard::{Guard, KindConfig, ManualClock};

/// Forks made while the parent's threads work.
const FORKS: usize = 1000;
/// How long a child may take to do its work and exit; far more than it needs (about a
/// millisecond), far less than "forever".
const CHILD_DEADLINE: Duration = Duration::from_secs(10);

/// The token of the guard's routes (the purge route needs one).
const TOKEN: &str = "fork-test-token";

/// What the parent shares with its children: a guard and caches its threads use all the time.
struct Shared {
    guard: Guard,
    /// Named, inserts evicting all the time, cleared now and then.
    named: LruCache<u64, Vec<u8>>,
    /// Unnamed (not in the cache registry), weighted and expiring.
    unnamed: TtlCache<u64, Vec<u8>>,
}

/// What a child does: takes the locks leakguard's threads take (all of them, with a report,
/// every tenth child: a report reads `/proc`, which takes long in a debug build), uses the
/// parent's guard and caches (their locks were held by the parent's threads all the time),
/// then exits.
fn child_work(shared: &Shared, with_report: bool) -> i32 {
    let cache: LruCache<u64, u64> = LruCache::builder(16).name("forked-child").build();
    cache.insert(1, 1);
    if cache.get(&1) != Some(1) {
        return 2;
    }
    let handle = leakguard::handles::track("fork_test_conn");
    if with_report && leakguard::handles::report().kinds.is_empty() {
        return 3;
    }
    drop(handle);
    drop(cache);
    // The parent's caches: a read, an insert that evicts, a read of what was inserted.
    let _ = shared.named.get(&7);
    shared.named.insert(u64::MAX, vec![1]);
    if shared.named.get(&u64::MAX) != Some(vec![1]) {
        return 4;
    }
    shared.unnamed.insert(u64::MAX, vec![2; 8]);
    if shared.unnamed.get(&u64::MAX) != Some(vec![2; 8]) {
        return 5;
    }
    // The parent's guard: its state, event log, endpoint address and snapshot.
    let _ = shared.guard.state();
    let _ = shared.guard.events();
    let _ = shared.guard.endpoint_addr();
    if !shared
        .guard
        .render_metrics()
        .contains("leakguard_cache_entries")
    {
        return 6;
    }
    if with_report {
        // The sampler's lock, the handle limits, the cadence, the registry's calls into caches.
        let _ = shared.guard.tick();
        if shared.guard.report().sampler.samples == 0 {
            return 7;
        }
    }
    0
}

/// Waits for `pid` for at most [`CHILD_DEADLINE`]; `None` when it did not exit in time (it is
/// killed then).
fn wait_for(pid: libc::pid_t) -> Option<i32> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        assert!(
            r == 0,
            "waitpid failed: {}",
            std::io::Error::last_os_error()
        );
        if Instant::now() >= deadline {
            if std::env::var_os("FORK_DEBUG").is_some() {
                let out = std::process::Command::new("gdb")
                    .args(["-p", &pid.to_string(), "-batch", "-ex", "bt"])
                    .output();
                if let Ok(out) = out {
                    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
                }
            }
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_thousand_forks_during_heavy_sampler_activity_never_block_a_child() {
    // The TTL cache's time is the workers' to move: entries expire in the parent all the time,
    // while in a child (where no worker runs) what it inserts stays until it reads it back,
    // however slowly a loaded machine runs it.
    let ttl_clock = ManualClock::new(0.0);
    let shared = Arc::new(Shared {
        guard: Guard::builder()
            .ignore_env()
            .no_endpoint()
            .token(TOKEN)
            .interval(Duration::from_millis(10))
            .start()
            .expect("start the guard"),
        named: LruCache::builder(256).name("fork-shared").build(),
        unnamed: TtlCache::builder(4096, Duration::from_millis(50))
            .weigher(|_, v: &Vec<u8>| v.len() as u64)
            .clock(Arc::new(ttl_clock.clone()))
            .build(),
    });
    leakguard::handles::configure("fork_test_conn", KindConfig::new().sample_every(1))
        .expect("configure the kind");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    // Caches registered and dropped, sampled handles opened and closed (their stacks
    // recorded), reports that symbolize the sites: the registry, the handle tables, the symbol
    // caches and the stack walker's lock are taken all the time.
    for w in 0..3u64 {
        let stop = Arc::clone(&stop);
        let rounds = Arc::clone(&rounds);
        let shared = Arc::clone(&shared);
        workers.push(thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let cache: LruCache<u64, u64> =
                    LruCache::builder(64).name(format!("worker-{w}")).build();
                for k in 0..32 {
                    cache.insert(k, k);
                }
                let handles: Vec<_> = (0..8)
                    .map(|_| leakguard::handles::track("fork_test_conn"))
                    .collect();
                let _ = leakguard::handles::configure(
                    &format!("fork_test_kind_{}", i % 8),
                    KindConfig::new().sample_every(1),
                );
                if w == 0 {
                    let _ = leakguard::handles::report();
                } else if w == 1 {
                    let _ = shared.guard.report();
                }
                drop(handles);
                drop(cache);
                i += 1;
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The shared guard used all the time: samples, reports, metrics, events, purges.
    {
        let stop = Arc::clone(&stop);
        let shared = Arc::clone(&shared);
        workers.push(thread::spawn(move || {
            let mut purge = EndpointRequest::new("POST", "/debug/leakguard/purge");
            purge.authorization = Some(format!("Bearer {TOKEN}"));
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = shared.guard.tick();
                let _ = shared.guard.render_metrics();
                let _ = shared.guard.events();
                if i.is_multiple_of(16) {
                    let _ = shared.guard.report();
                    let _ = shared.guard.handle(&purge);
                }
                i += 1;
            }
        }));
    }
    // The shared caches used all the time: inserts that evict, reads, removals, clears.
    for w in 0..2u64 {
        let stop = Arc::clone(&stop);
        let shared = Arc::clone(&shared);
        let ttl_clock = ttl_clock.clone();
        workers.push(thread::spawn(move || {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                ttl_clock.advance(Duration::from_micros(100));
                let k = i.wrapping_mul(0x9e37_79b9) % 4096;
                shared.named.insert(k, vec![0; 16]);
                let _ = shared.named.get(&(k / 2));
                shared.unnamed.insert(k, vec![0; (k % 64) as usize + 1]);
                let _ = shared.unnamed.get(&(k / 2));
                if i.is_multiple_of(64) {
                    shared.named.remove(&(k / 3));
                }
                if i.is_multiple_of(8192) {
                    shared.named.clear();
                    shared.unnamed.clear();
                }
                i += 2;
            }
        }));
    }
    let mut blocked = 0;
    let mut failed = Vec::new();
    let began = Instant::now();
    let mut fork_time = Duration::ZERO;
    for n in 0..FORKS {
        // Fork only while the workers are busy.
        let before = rounds.load(Ordering::Relaxed);
        while rounds.load(Ordering::Relaxed) == before {
            thread::yield_now();
        }
        // SAFETY: the child only runs `child_work` (which allocates: glibc's malloc and the
        // Rust runtime are fork-safe for that) and leaves with `_exit`.
        let t0 = Instant::now();
        let pid = unsafe { libc::fork() };
        if pid != 0 {
            fork_time += t0.elapsed();
        }
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = child_work(&shared, n % 10 == 0);
            // SAFETY: leaving the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        match wait_for(pid) {
            Some(0) => {}
            Some(code) => failed.push((n, code)),
            None => blocked += 1,
        }
    }
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker");
    }
    assert_eq!(
        blocked, 0,
        "{blocked} of {FORKS} children blocked ({took:?})"
    );
    assert!(failed.is_empty(), "children failed: {failed:?}");
    eprintln!(
        "{FORKS} forks in {took:?} (in fork(): {fork_time:?}) during {} worker rounds, none blocked",
        rounds.load(Ordering::Relaxed)
    );
}
