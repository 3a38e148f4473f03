//! `leakguard::testing::assert_no_leak` on real leaks and clean closures. The tests run in
//! parallel threads, as `cargo test` runs them: the heap is measured per thread.
#![cfg(feature = "jemalloc")]
#![allow(clippy::unwrap_used)]

use leakguard::testing::{LeakCheck, assert_no_leak};
use leakguard::{HandleGuard, track};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[global_allocator]
static A: leakguard::Jemalloc = leakguard::Jemalloc;

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).unwrap_err();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap()
}

#[test]
fn a_closure_that_leaks_memory_fails_naming_the_bytes_per_iteration() {
    let message = panic_message(|| {
        assert_no_leak(|| std::mem::forget(vec![0u8; 1000]));
    });
    assert!(
        message.starts_with("assert_no_leak: the closure leaks"),
        "{message}"
    );
    assert!(message.contains("bytes per iteration"), "{message}");

    let err = LeakCheck::new()
        .check(|| std::mem::forget(vec![0u8; 1000]))
        .unwrap_err();
    let heap = err.measurement.heap.unwrap();
    // jemalloc rounds 1000 bytes up to its 1024-byte size class.
    assert!(
        (1000.0..=1024.0).contains(&heap.bytes_per_iteration),
        "{heap:?}"
    );
    assert_eq!(heap.total_bytes, 100 * 1024);
}

#[test]
fn a_closure_that_keeps_growing_a_collection_fails() {
    let mut kept: Vec<String> = Vec::new();
    let err = LeakCheck::new()
        .check(|| kept.push(format!("request {}", kept.len())))
        .unwrap_err();
    assert!(err.measurement.heap.unwrap().bytes_per_iteration > 16.0);
}

#[test]
fn a_clean_closure_passes() {
    let m = assert_no_leak(|| {
        let s = format!("{:?}", vec![1u64; 64]);
        let mut map = std::collections::HashMap::new();
        map.insert(s, Box::new([0u8; 512]));
        drop(map);
    });
    let heap = m.heap.unwrap();
    assert_eq!(heap.total_bytes, 0);
    assert!(m.handles.is_empty());
}

#[test]
fn a_bounded_cache_and_a_one_off_allocation_are_not_leaks() {
    // The cache is full after the warm-up; the one-off allocation happens in the second
    // half of the measured iterations, so the first half shows no growth.
    let mut cache = std::collections::VecDeque::new();
    let mut iteration = 0;
    let mut once: Option<Vec<u8>> = None;
    assert_no_leak(|| {
        iteration += 1;
        cache.push_back(vec![0u8; 64]);
        if cache.len() > 5 {
            cache.pop_front();
        }
        if iteration == 80 {
            once = Some(vec![0u8; 100_000]);
        }
    });
    assert!(once.is_some());
}

#[test]
fn a_cache_filling_up_during_the_first_half_only_is_not_a_leak() {
    let mut cache = std::collections::HashMap::new();
    let mut n = 0u32;
    let m = assert_no_leak(|| {
        n += 1;
        cache.insert(n % 40, vec![0u8; 100]);
    });
    let heap = m.heap.unwrap();
    assert!(heap.first_half_bytes > 0, "{heap:?}");
    assert_eq!(heap.second_half_bytes, 0);
}

#[test]
fn heavy_allocation_on_other_threads_does_not_fail_a_clean_closure() {
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    kept.push(vec![0u8; 4096]);
                    if kept.len() > 20_000 {
                        kept.clear();
                    }
                }
            })
        })
        .collect();
    for _ in 0..5 {
        let m = LeakCheck::new()
            .iterations(1000)
            .assert(|| drop(std::hint::black_box(vec![0u8; 4096])));
        assert_eq!(m.heap.unwrap().total_bytes, 0);
    }
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
}

#[inline(never)]
fn open_leaky_connection() -> HandleGuard {
    track("testing_leaky_conn")
}

#[test]
fn a_closure_that_leaks_handles_fails_naming_the_kind_and_the_site() {
    let message = panic_message(|| {
        assert_no_leak(|| std::mem::forget(open_leaky_connection()));
    });
    assert!(
        message.contains("kind testing_leaky_conn: 100 left open"),
        "{message}"
    );
    assert!(message.contains("1.00 per iteration"), "{message}");
    assert!(message.contains("open_leaky_connection"), "{message}");
    assert!(message.contains("testing_assert.rs"), "{message}");
}

#[test]
fn handles_opened_and_closed_each_iteration_pass_with_the_heap_measured() {
    let mut pool: Vec<HandleGuard> = Vec::with_capacity(8);
    let m = assert_no_leak(|| {
        let conn = track("testing_clean_conn");
        pool.push(conn);
        if pool.len() == 8 {
            pool.clear();
        }
        drop(track("testing_clean_conn"));
    });
    assert_eq!(m.heap.unwrap().total_bytes, 0);
    // The pool holds at most a few at the end, from the second half only: not a leak.
    assert!(m.handles.iter().all(|g| g.first_half == 0));
}

#[test]
fn handles_opened_by_other_threads_are_not_counted() {
    // The other thread's handles are not sampled, so they cannot fill the table that
    // records this thread's.
    leakguard::handles::configure(
        "testing_other_thread_conn",
        leakguard::KindConfig::new().sample_every(0),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let leaker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut leaked = Vec::new();
            while !stop.load(Ordering::Relaxed) && leaked.len() < 1_000_000 {
                leaked.push(track("testing_other_thread_conn"));
            }
            leaked.len()
        })
    };
    let kind = leakguard::handles::kind("testing_other_thread_conn");
    while kind.open() < 1000 {
        std::thread::yield_now();
    }
    let m = LeakCheck::new()
        .handles_only()
        .assert(|| drop(track("testing_other_thread_conn")));
    assert!(m.handles.is_empty());
    assert_eq!(m.handles_unrecorded, 0);
    assert!(m.heap.is_none());
    stop.store(true, Ordering::Relaxed);
    assert!(leaker.join().unwrap() > 0);
}

#[test]
fn tolerances_let_a_known_small_growth_pass() {
    let mut kept: Vec<HandleGuard> = Vec::new();
    let mut n = 0u32;
    LeakCheck::new()
        .max_bytes_per_iteration(1024)
        .max_handles_per_iteration(0.5)
        .assert(|| {
            n += 1;
            if n.is_multiple_of(3) {
                kept.push(track("testing_tolerated"));
            }
        });
}

#[test]
fn a_panicking_closure_propagates_its_panic_and_stops_tagging() {
    let message = panic_message(|| {
        assert_no_leak(|| panic!("boom"));
    });
    assert_eq!(message, "boom");
    // Handles opened afterwards on this thread are sampled normally again.
    leakguard::handles::configure(
        "testing_after_panic",
        leakguard::KindConfig::new().sample_every(0),
    )
    .unwrap();
    assert!(!track("testing_after_panic").is_sampled());
}
