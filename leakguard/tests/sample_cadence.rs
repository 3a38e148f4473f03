//! Full readings (fd types, limits) come first and then every 30 s of clock time; fast ones in
//! between still count every fd. One test: it counts this process's fds.
#![allow(clippy::unwrap_used)]

use leakguard::allocator::AllocatorChoice;
use leakguard::{ManualClock, Sampler};
use std::time::Duration;

#[test]
fn fd_types_are_refreshed_on_full_readings_only() {
    let clock = ManualClock::new(1_700_000_000.0);
    let mut sampler = Sampler::new(AllocatorChoice::Glibc);
    let first = sampler.sample(&clock);
    let sockets0 = first.process.fds_by_type.unwrap().socket;
    // The readers keep their files open after the first readings: count from a fast one.
    clock.advance(Duration::from_secs(1));
    let open0 = sampler.sample(&clock).process.open_fds;

    let listeners: Vec<_> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();

    clock.advance(Duration::from_secs(1));
    let fast = sampler.sample(&clock);
    assert_eq!(fast.process.open_fds, open0 + 4, "fast readings count fds");
    assert_eq!(
        fast.process.fds_by_type.unwrap().socket,
        sockets0,
        "fast readings repeat the last types"
    );

    clock.advance(Duration::from_secs(28));
    let full = sampler.sample(&clock);
    assert_eq!(full.process.fds_by_type.unwrap().socket, sockets0 + 4);
    assert_eq!(full.unix_seconds, 1_700_000_030.0);
    assert_eq!(sampler.taken(), 4);
    drop(listeners);
}
