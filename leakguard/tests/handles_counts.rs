//! Handle counts by kind: exact totals under many threads, guards closed on other threads,
//! `Tracked<T>`, the peak.
#![allow(clippy::unwrap_used)]

use leakguard::handles::{self, KindConfig};
use leakguard::{HandleGuard, Tracked, track};
use std::sync::Arc;
use std::sync::Barrier;

fn kind_report(name: &str) -> handles::KindReport {
    handles::report()
        .kinds
        .into_iter()
        .find(|k| k.kind == name)
        .unwrap()
}

#[test]
fn counts_are_exact_across_many_threads() {
    const THREADS: usize = 8;
    const PER_THREAD: u64 = 20_000;
    const KEPT: u64 = 7;
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut kept = Vec::new();
                for i in 0..PER_THREAD {
                    let guard = track("counts_threads");
                    if i < KEPT {
                        kept.push(guard);
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<Vec<HandleGuard>> = workers.into_iter().map(|w| w.join().unwrap()).collect();

    let k = kind_report("counts_threads");
    assert_eq!(k.opened, THREADS as u64 * PER_THREAD);
    assert_eq!(k.closed, THREADS as u64 * (PER_THREAD - KEPT));
    assert_eq!(k.open, THREADS as u64 * KEPT);
    assert!(
        handles::open_by_kind().contains(&("counts_threads".to_owned(), THREADS as u64 * KEPT))
    );

    drop(kept);
    let k = kind_report("counts_threads");
    assert_eq!(k.open, 0);
    assert_eq!(k.closed, k.opened);
}

#[test]
fn guards_dropped_on_other_threads_close_their_handles_once() {
    let kind = handles::kind("counts_cross_thread");
    let guards: Vec<HandleGuard> = (0..1000).map(|_| kind.track()).collect();
    assert_eq!(kind.open(), 1000);
    let (tx, rx) = std::sync::mpsc::channel();
    let closer = std::thread::spawn(move || {
        for guard in rx {
            drop::<HandleGuard>(guard);
        }
    });
    for guard in guards {
        tx.send(guard).unwrap();
    }
    drop(tx);
    closer.join().unwrap();
    let k = kind_report("counts_cross_thread");
    assert_eq!((k.opened, k.closed, k.open), (1000, 1000, 0));
}

#[test]
fn tracked_counts_its_value_while_alive_and_derefs_to_it() {
    let kind = handles::kind("counts_tracked_buffer");
    let mut buffer = Tracked::new(Vec::<u8>::new(), kind);
    buffer.extend_from_slice(b"abc"); // DerefMut
    assert_eq!(buffer.len(), 3); // Deref
    assert_eq!(Tracked::kind(&buffer), "counts_tracked_buffer");
    assert!(format!("{buffer:?}").contains("counts_tracked_buffer"));
    assert_eq!(kind.open(), 1);

    let inner: Vec<u8> = Tracked::into_inner(buffer);
    assert_eq!(inner, b"abc");
    assert_eq!(kind.open(), 0);

    let moved = Tracked::new(String::from("x"), "counts_tracked_buffer");
    std::thread::spawn(move || assert_eq!(*moved, "x"))
        .join()
        .unwrap();
    let k = kind_report("counts_tracked_buffer");
    assert_eq!((k.opened, k.closed, k.open), (2, 2, 0));
}

#[test]
fn the_peak_is_the_highest_count_a_report_saw() {
    let kind = handles::kind("counts_peak");
    let mut open: Vec<HandleGuard> = (0..5).map(|_| kind.track()).collect();
    assert_eq!(kind_report("counts_peak").peak, 5);
    open.truncate(2);
    let k = kind_report("counts_peak");
    assert_eq!((k.open, k.peak), (2, 5));
}

#[test]
fn a_literal_and_a_registered_name_are_the_same_kind() {
    let registered = handles::kind("counts_same_name");
    let by_literal = track("counts_same_name");
    let name = String::from("counts_same_name");
    assert_eq!(handles::kind(&name), registered);
    assert_eq!(registered.open(), 1);
    drop(by_literal);
    assert_eq!(registered.open(), 0);
}

#[test]
fn configured_limits_show_in_the_report() {
    handles::configure(
        "counts_limited",
        KindConfig::new()
            .max_open(2)
            .max_age(std::time::Duration::from_secs(60))
            .sample_every(0),
    )
    .unwrap();
    let _open: Vec<HandleGuard> = (0..3).map(|_| track("counts_limited")).collect();
    let k = kind_report("counts_limited");
    assert_eq!(k.max_open, Some(2));
    assert_eq!(k.max_age_seconds, Some(60.0));
    assert!(k.max_open_exceeded);
    assert!(!k.max_age_exceeded);
    assert_eq!(k.sample_every, 0);
    assert_eq!(k.sampled_open, 0);
}

#[test]
fn the_report_serializes_to_json_with_the_os_part() {
    let _h = track("counts_json");
    let json = serde_json::to_value(handles::report()).unwrap();
    let kinds = json["kinds"].as_array().unwrap();
    assert!(
        kinds
            .iter()
            .any(|k| k["kind"] == "counts_json" && k["open"] == 1)
    );
    assert_eq!(json["kind_capacity"], 256);
    assert!(json["os"]["open_fds"].as_u64().unwrap() > 0);
    assert!(json["os"]["threads"].as_u64().unwrap() >= 1);
    assert!(json["os"]["tcp"]["states"]["close_wait"].is_u64());
}
