//! Reports and `/metrics` reuse one reading of the kernel's TCP tables for at least `TCP_REUSE`
//! (5 s) and at most `TCP_REUSE_MAX` (longer when a read was costly), by the handle registry's
//! clock: a listener opened within the first is not seen, one opened before the second is. A
//! binary of its own: it sets the process-wide registry clock and opens sockets.
#![allow(clippy::unwrap_used)]

use leakguard::ManualClock;
use leakguard::handles::{self, TCP_REUSE, TCP_REUSE_MAX};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn one_reading_of_the_tcp_tables_serves_reports_for_five_seconds_to_a_minute() {
    assert_eq!(TCP_REUSE, Duration::from_secs(5));
    assert_eq!(TCP_REUSE_MAX, Duration::from_secs(60));
    let clock = ManualClock::new(1_700_000_000.0);
    handles::set_clock(Arc::new(clock.clone()));

    let first = handles::report().os.tcp;
    assert_eq!(first.note, None, "{first:?}");
    let listen = first.states["listen"];

    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    // The fresh reading does see it: the reuse, not the kernel, hides it below.
    assert_eq!(
        handles::tcp_sockets(std::path::Path::new("/proc")).states["listen"],
        listen + 1
    );
    clock.advance(TCP_REUSE - Duration::from_millis(1));
    assert_eq!(handles::report().os.tcp.states["listen"], listen);

    clock.advance(TCP_REUSE_MAX);
    assert_eq!(handles::report().os.tcp.states["listen"], listen + 1);

    // The new reading is reused in turn.
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    clock.advance(TCP_REUSE - Duration::from_millis(1));
    assert_eq!(handles::report().os.tcp.states["listen"], listen + 1);
    clock.advance(TCP_REUSE_MAX);
    assert_eq!(handles::report().os.tcp.states["listen"], listen + 2);
    drop((a, b));
}
