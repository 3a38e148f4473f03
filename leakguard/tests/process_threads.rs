//! Thread counts on the real `/proc`. One test in this binary, so no test-harness thread
//! starts or ends while it counts.
#![allow(clippy::unwrap_used)]

use leakguard::process::ProcReader;
use std::sync::{Arc, Barrier};

#[test]
fn threads_rise_when_threads_are_spawned() {
    let mut reader = ProcReader::new();
    let before_full = reader.read(true).unwrap();
    let before_fast = reader.read(false).unwrap();
    assert_eq!(before_fast.threads, before_full.threads);

    let spawned = 8;
    let started = Arc::new(Barrier::new(spawned + 1));
    let release = Arc::new(Barrier::new(spawned + 1));
    let handles: Vec<_> = (0..spawned)
        .map(|_| {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            std::thread::spawn(move || {
                started.wait();
                release.wait();
            })
        })
        .collect();
    started.wait();

    let fast = reader.read(false).unwrap();
    let full = reader.read(true).unwrap();
    assert_eq!(fast.threads, before_fast.threads + spawned as u64);
    assert_eq!(full.threads, before_full.threads + spawned as u64);

    release.wait();
    for handle in handles {
        handle.join().unwrap();
    }
    // join() returns once the kernel cleared the thread's id, which can be a moment before it
    // leaves /proc/self/task: wait for the count to come back down.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = reader.read(false).unwrap().threads;
        if now == before_fast.threads {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} threads, {} before",
            before_fast.threads
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
