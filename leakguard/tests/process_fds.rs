//! Open fds by type on the real `/proc`. One test in this binary, so no other test opens or
//! closes descriptors while it counts.
#![allow(clippy::unwrap_used)]

use leakguard::process::{FdCounts, ProcReader};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};

/// Classifies this process's fds the way `ls -l /proc/self/fd` shows them. The directory
/// listing itself holds one more descriptor (a file), which is not counted.
fn by_readlink() -> FdCounts {
    let mut counts = FdCounts::default();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(target) = std::fs::read_link(entry.unwrap().path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let slot = if target.starts_with("socket:[") {
            &mut counts.socket
        } else if target.starts_with("pipe:[") {
            &mut counts.pipe
        } else if target.starts_with("anon_inode:") {
            &mut counts.anon_inode
        } else if target.starts_with('/') {
            &mut counts.file
        } else {
            &mut counts.other
        };
        *slot += 1;
    }
    counts.file -= 1;
    counts
}

#[test]
fn sockets_pipes_and_anon_inodes_are_counted_by_type() {
    let mut reader = ProcReader::new();
    let before = reader.read(true).unwrap();
    let before_types = before.fds_by_type.unwrap();
    let before_fast = reader.read(false).unwrap();
    assert_eq!(before_fast.open_fds, before.open_fds);

    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let (pipe_reader, pipe_writer) = std::io::pipe().unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: eventfd returns a new descriptor (or -1), which the OwnedFd then owns.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: `raw` is an open descriptor owned by nothing else.
    let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };

    // A fast reading sees the count but repeats the last full reading's types.
    let fast = reader.read(false).unwrap();
    assert_eq!(fast.open_fds, before.open_fds + 9);
    assert_eq!(fast.fds_by_type, Some(before_types));

    let after = reader.read(true).unwrap();
    let types = after.fds_by_type.unwrap();
    assert_eq!(types.socket, before_types.socket + 5);
    assert_eq!(types.pipe, before_types.pipe + 2);
    assert_eq!(types.file, before_types.file + 1);
    assert_eq!(types.anon_inode, before_types.anon_inode + 1);
    assert_eq!(after.open_fds, before.open_fds + 9);
    assert_eq!(after.open_fds, types.total());
    // The fstat shortcut agrees with what readlink says.
    assert_eq!(types, by_readlink());

    drop((listeners, pipe_reader, pipe_writer, devnull, eventfd));
    let closed = reader.read(true).unwrap();
    assert_eq!(closed.open_fds, before.open_fds);
    assert_eq!(closed.fds_by_type, Some(before_types));
}
