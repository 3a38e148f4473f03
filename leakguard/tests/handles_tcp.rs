//! TCP sockets of this process by state: a real CLOSE_WAIT socket, and fixture tables.
#![allow(clippy::unwrap_used)]

use leakguard::handles::{self, TCP_STATES};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls the real tables until `done` holds, for at most five seconds: the kernel moves a
/// socket to CLOSE_WAIT when the peer's FIN arrives, which on loopback is at once.
fn tcp_until(done: impl Fn(&handles::TcpSockets) -> bool) -> handles::TcpSockets {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tcp = handles::tcp_sockets(Path::new("/proc"));
        if done(&tcp) || Instant::now() > deadline {
            return tcp;
        }
        std::thread::yield_now();
    }
}

/// The one test in this binary that opens real sockets, so the counts are its own.
#[test]
fn a_connection_the_peer_closed_but_we_did_not_shows_as_close_wait() {
    let before = handles::tcp_sockets(Path::new("/proc"));
    assert_eq!(before.note, None);
    assert_eq!(before.states["close_wait"], 0);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let open = tcp_until(|t| t.states["established"] >= before.states["established"] + 2);
    assert_eq!(open.states["listen"], before.states["listen"] + 1);
    assert_eq!(open.states["established"], before.states["established"] + 2);
    assert_eq!(open.sockets, before.sockets + 3);

    // The client closes; the server side never does: the leak pattern.
    client.write_all(b"bye").unwrap();
    drop(client);
    let after = tcp_until(|t| t.states["close_wait"] == 1);
    assert_eq!(after.states["close_wait"], 1, "{after:?}");
    assert_eq!(after.states["established"], before.states["established"]);
    // The client's half-closed socket has no descriptor any more, so it is not ours.
    assert_eq!(after.states["fin_wait2"], before.states["fin_wait2"]);

    let report = handles::report();
    assert_eq!(report.os.tcp.states["close_wait"], 1);
    assert!(report.os.fds_by_type.unwrap().socket >= 2);
    assert!(report.os.fd_usage_ratio.unwrap() > 0.0);

    drop(server_side);
    let closed = tcp_until(|t| t.states["close_wait"] == 0);
    assert_eq!(closed.states["close_wait"], 0);
    drop(listener);
}

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn line(sl: u32, state: u8, inode: u64) -> String {
    format!(
        "  {sl:>2}: 0100007F:1F90 0100007F:C350 {state:02X} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 20 4 30 10 -1\n"
    )
}

/// A procfs tree with `net/tcp`, optionally `net/tcp6`, and `self/fd` links.
fn fixture(tcp: &str, tcp6: Option<&str>, fds: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net")).unwrap();
    std::fs::create_dir_all(dir.path().join("self/fd")).unwrap();
    std::fs::write(dir.path().join("net/tcp"), tcp).unwrap();
    if let Some(tcp6) = tcp6 {
        std::fs::write(dir.path().join("net/tcp6"), tcp6).unwrap();
    }
    for (fd, target) in fds.iter().enumerate() {
        symlink(target, dir.path().join("self/fd").join(fd.to_string())).unwrap();
    }
    dir
}

#[test]
fn fixture_tables_count_only_the_sockets_behind_our_descriptors() {
    let tcp = format!(
        "{HEADER}{}{}{}{}{}",
        line(0, 0x0A, 1001), // listen, ours
        line(1, 0x08, 1002), // close_wait, ours
        line(2, 0x08, 1003), // close_wait, ours
        line(3, 0x08, 9999), // close_wait, another process's
        line(4, 0x06, 0),    // time_wait: no inode
    );
    let tcp6 = format!("{HEADER}{}", line(0, 0x01, 2001));
    let dir = fixture(
        &tcp,
        Some(&tcp6),
        &[
            "socket:[1001]",
            "socket:[1002]",
            "socket:[1003]",
            "socket:[2001]",
            "socket:[3001]", // a UDP or Unix socket: in no TCP table
            "/dev/null",
            "pipe:[77]",
        ],
    );
    let t = handles::tcp_sockets(dir.path());
    assert_eq!(t.note, None);
    assert!(!t.truncated);
    assert_eq!(t.lines_read, 6);
    assert_eq!(t.socket_fds, 5);
    assert_eq!(t.sockets, 4);
    assert_eq!(t.states["listen"], 1);
    assert_eq!(t.states["close_wait"], 2);
    assert_eq!(t.states["established"], 1);
    assert_eq!(t.states["time_wait"], 0);
    assert_eq!(t.states.len(), TCP_STATES.len());
}

#[test]
fn a_missing_tcp6_table_is_fine_and_a_missing_tcp_table_is_a_note() {
    let tcp = format!("{HEADER}{}", line(0, 0x08, 5));
    let dir = fixture(&tcp, None, &["socket:[5]"]);
    let t = handles::tcp_sockets(dir.path());
    assert_eq!(t.note, None);
    assert_eq!(t.states["close_wait"], 1);

    std::fs::remove_file(dir.path().join("net/tcp")).unwrap();
    let t = handles::tcp_sockets(dir.path());
    assert!(t.note.as_deref().unwrap().contains("net/tcp"), "{t:?}");
    assert_eq!(t.sockets, 0);

    let nothing = handles::tcp_sockets(Path::new("/nonexistent-proc-root"));
    assert!(nothing.note.as_deref().unwrap().contains("self/fd"));
}

#[test]
fn malformed_lines_are_skipped() {
    let tcp = format!(
        "{HEADER}garbage\n   7: short line\n{}\u{0}\u{ff}\n{}",
        line(1, 0x08, 11),
        line(2, 0x63, 11) // an unknown state number
    );
    let dir = fixture(&tcp, None, &["socket:[11]"]);
    let t = handles::tcp_sockets(dir.path());
    assert_eq!(t.states["close_wait"], 1);
    assert_eq!(t.sockets, 2);
    assert_eq!(t.states.values().sum::<u64>(), 1);
}

#[test]
fn the_os_part_of_a_fixture_tree_says_what_it_could_not_read() {
    let dir = fixture(
        &format!("{HEADER}{}", line(0, 0x08, 1)),
        None,
        &["socket:[1]"],
    );
    let os = handles::os_handles(dir.path());
    assert_eq!(os.tcp.states["close_wait"], 1);
    assert_eq!(os.open_fds, None);
    assert!(os.errors[0].starts_with("process:"), "{:?}", os.errors);
}
