//! Without jemalloc as the global allocator, `assert_no_leak` says how to fix it, and
//! `handles_only` still checks handles.
#![allow(clippy::unwrap_used)]

use leakguard::testing::{LeakCheck, assert_no_leak};

#[test]
fn the_failure_says_to_make_jemalloc_the_global_allocator() {
    let payload = std::panic::catch_unwind(|| {
        assert_no_leak(|| drop(vec![0u8; 16]));
    })
    .unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("the heap could not be measured"),
        "{message}"
    );
    if cfg!(feature = "jemalloc") {
        assert!(message.contains("#[global_allocator]"), "{message}");
    } else {
        assert!(message.contains("`jemalloc` feature"), "{message}");
    }
    assert!(message.contains("handles_only"), "{message}");
}

#[test]
fn handles_only_checks_handles_without_the_heap() {
    let m = LeakCheck::new()
        .handles_only()
        .assert(|| drop(leakguard::track("no_jemalloc_conn")));
    assert!(m.heap.is_none());
    let err = LeakCheck::new()
        .handles_only()
        .check(|| std::mem::forget(leakguard::track("no_jemalloc_conn")))
        .unwrap_err();
    assert!(err.to_string().contains("kind no_jemalloc_conn"), "{err}");
    assert!(!err.to_string().contains("live heap"), "{err}");
    assert!(!err.to_string().contains("could not be measured"), "{err}");
    // One site, although the first and second halves' stacks differ inside leakguard.
    assert_eq!(err.measurement.handles[0].sites.len(), 1, "{err}");
}
