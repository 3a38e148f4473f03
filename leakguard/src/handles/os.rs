//! What the OS says about this process's handles, whether or not the application tracks
//! them: open fds by type against the fd limit, threads, and TCP sockets by state.
//!
//! TCP states come from `net/tcp` and `net/tcp6` under the procfs root (the process's own
//! network namespace), keeping the lines whose socket inode is one of this process's
//! descriptors (`self/fd/N -> socket:[inode]`). Both tables list every socket of the
//! namespace, so on a busy host they can be large: each is read up to
//! [`TCP_MAX_LINES`] lines and [`TCP_MAX_BYTES`] bytes, and the result says when it was
//! cut. At most [`MAX_FDS_SCANNED`] descriptors are looked at.

use crate::process::{FdCounts, ProcReader};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Lines read at most from each of `net/tcp` and `net/tcp6`.
pub const TCP_MAX_LINES: usize = 32_768;
/// Bytes read at most from each of `net/tcp` and `net/tcp6`.
pub const TCP_MAX_BYTES: u64 = 8 << 20;
/// Descriptors looked at, at most, to find this process's sockets.
pub const MAX_FDS_SCANNED: usize = 65_536;
/// How long, at least, reports and `/metrics` reuse one reading of this process's TCP
/// sockets. The reading asks each of the process's socket descriptors for its state (about
/// 2 µs a socket; the kernel's tables, which [`tcp_sockets`] reads, would cost a walk of the
/// whole machine's connections), so a process holding tens of thousands of connections pays
/// tens of milliseconds for it; a scrape flood would otherwise pay that on every request, and
/// the guard's tick pays it whenever the reuse has run out. So a reading that took `d` of CPU
/// time is reused for `TCP_REUSE_COST_FACTOR × d` when that is longer (at most
/// [`TCP_REUSE_MAX`]): reading costs at most 0.1% of one CPU. [`tcp_sockets`] itself never
/// reuses.
pub const TCP_REUSE: std::time::Duration = std::time::Duration::from_secs(5);
/// How long, at most, one reading of this process's TCP sockets is reused (see [`TCP_REUSE`]).
pub const TCP_REUSE_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// A read is reused for at least this many times the CPU time it took (see [`TCP_REUSE`]).
const TCP_REUSE_COST_FACTOR: u64 = 1000;

/// TCP states in the kernel's numbering (`st` in `/proc/net/tcp`, 1 to 12), named as
/// `ss` and node_exporter name them (lowercase).
pub const TCP_STATES: [&str; 12] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "new_syn_recv",
];

/// This process's TCP sockets by state.
///
/// ```no_run
/// let tcp = leakguard::handles::tcp_sockets(std::path::Path::new("/proc"));
/// println!("{} sockets in CLOSE_WAIT", tcp.states["close_wait"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TcpSockets {
    /// Count per state (every state is present, most are 0).
    pub states: BTreeMap<&'static str, u64>,
    /// This process's TCP sockets found in the tables.
    pub sockets: u64,
    /// This process's socket descriptors of any protocol (TCP, UDP, Unix, …).
    pub socket_fds: u64,
    /// Lines read from the tables (0 for the live process's own reading, which asks its
    /// socket descriptors instead of reading the tables).
    pub lines_read: u64,
    /// Whether a table (or the descriptor list) was longer than the caps and was cut: the
    /// counts are then lower bounds.
    pub truncated: bool,
    /// What went wrong or was cut, if anything.
    pub note: Option<String>,
}

/// Open fds, their limit, threads and TCP sockets of the process.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OsHandles {
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors (`None`: unlimited or unknown).
    pub max_fds: Option<u64>,
    /// `open_fds / max_fds`; the guard warns at 0.8.
    pub fd_usage_ratio: Option<f64>,
    /// Open fds by type: file, socket, pipe, anon_inode, other.
    pub fds_by_type: Option<FdCounts>,
    /// OS threads.
    pub threads: Option<u64>,
    /// TCP sockets by state.
    pub tcp: TcpSockets,
    /// Sources that could not be read.
    pub errors: Vec<String>,
}

/// Reads the OS-level handles of this process from the procfs tree at `proc_root`
/// (`/proc` on a real system; a fixture tree laid out the same way in tests). The TCP states
/// of the live `/proc` may be up to [`TCP_REUSE`] old.
pub fn os_handles(proc_root: &Path) -> OsHandles {
    let mut out = OsHandles {
        tcp: tcp_sockets_reused(proc_root),
        ..OsHandles::default()
    };
    match ProcReader::with_root(proc_root).read(true) {
        Ok(p) => {
            out.open_fds = Some(p.open_fds);
            out.max_fds = p.max_fds;
            out.fd_usage_ratio = p
                .max_fds
                .filter(|&m| m > 0)
                .map(|m| p.open_fds as f64 / m as f64);
            out.fds_by_type = p.fds_by_type;
            out.threads = Some(p.threads);
        }
        Err(e) => out.errors.push(format!("process: {e}")),
    }
    out
}

/// The last reading of the live `/proc`'s TCP sockets: when it was taken and for how long it
/// is reused (registry-clock nanoseconds), and the reading.
static LAST: parking_lot::Mutex<Option<(u64, u64, TcpSockets)>> = parking_lot::Mutex::new(None);

/// The last reading's lock, taken around a fork (see [`crate::fork`]).
pub(super) fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&LAST);
}

/// This process's TCP sockets of the live `/proc` ([`own_tcp_sockets`]), reused for
/// [`TCP_REUSE`] or longer when reading took long (by the handle registry's clock); any other
/// root is read every time, from its tables ([`tcp_sockets`]).
pub(crate) fn tcp_sockets_reused(proc_root: &Path) -> TcpSockets {
    if proc_root != Path::new("/proc") {
        return tcp_sockets(proc_root);
    }
    let now = super::registry::now_nanos();
    if let Some((at, reuse, tcp)) = &*LAST.lock()
        && now >= *at
        && now - *at < *reuse
    {
        return tcp.clone();
    }
    let cpu = thread_cpu_nanos();
    let fresh = own_tcp_sockets(&proc_root.join("self/fd"));
    let reuse = reuse_nanos(thread_cpu_nanos().saturating_sub(cpu));
    *LAST.lock() = Some((now, reuse, fresh.clone()));
    fresh
}

/// How long a read of the live TCP tables that took `cpu_nanos` of CPU time is reused:
/// [`TCP_REUSE`], or `TCP_REUSE_COST_FACTOR` times its cost when that is longer, at most
/// [`TCP_REUSE_MAX`].
fn reuse_nanos(cpu_nanos: u64) -> u64 {
    use super::registry::duration_nanos;
    cpu_nanos
        .saturating_mul(TCP_REUSE_COST_FACTOR)
        .clamp(duration_nanos(TCP_REUSE), duration_nanos(TCP_REUSE_MAX))
}

/// CPU time the calling thread has used, nanoseconds (0 when it cannot be read).
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// This process's TCP sockets by state, from `net/tcp`, `net/tcp6` and `self/fd` under
/// `proc_root`. Never fails: what could not be read is said in [`TcpSockets::note`].
pub fn tcp_sockets(proc_root: &Path) -> TcpSockets {
    let mut out = TcpSockets {
        states: TCP_STATES.iter().map(|s| (*s, 0)).collect(),
        ..TcpSockets::default()
    };
    let mut notes = Vec::new();
    let inodes = match socket_inodes(&proc_root.join("self/fd")) {
        Ok((inodes, fds, cut)) => {
            out.socket_fds = fds;
            if cut {
                out.truncated = true;
                notes.push(format!(
                    "only the first {MAX_FDS_SCANNED} descriptors were looked at"
                ));
            }
            inodes
        }
        Err(e) => {
            out.note = Some(format!("cannot list {}/self/fd: {e}", proc_root.display()));
            return out;
        }
    };
    for (file, required) in [("net/tcp", true), ("net/tcp6", false)] {
        let path = proc_root.join(file);
        match File::open(&path) {
            Ok(f) => {
                let table = count_states(f, &inodes, &mut out);
                if let Err(e) = table {
                    notes.push(format!("cannot read {}: {e}", path.display()));
                } else if let Ok(true) = table {
                    out.truncated = true;
                    notes.push(format!(
                        "{} is longer than {TCP_MAX_LINES} lines or {} MiB and was cut",
                        path.display(),
                        TCP_MAX_BYTES >> 20
                    ));
                }
            }
            // No IPv6 in this kernel or namespace.
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => notes.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    if !notes.is_empty() {
        out.note = Some(notes.join("; "));
    }
    out
}

/// This process's TCP sockets by state, asked of each of its own socket descriptors (listed in
/// `fd_dir`, `/proc/self/fd`) with `getsockopt(TCP_INFO)`, the state the kernel keeps in the
/// socket: the same counts as [`tcp_sockets`] gives from the live tables, at a cost that grows
/// with this process's sockets instead of the whole machine's. Reading `/proc/net/tcp` and
/// `tcp6` makes the kernel walk every bucket of its connection hash table (262,144 on a machine
/// with 24 GiB) for each file: about 7 ms of CPU per reading where this takes some 2 µs per
/// socket. Several descriptors of one socket count it once; nothing is read from the tables
/// (`lines_read` stays 0).
pub(crate) fn own_tcp_sockets(fd_dir: &Path) -> TcpSockets {
    let mut out = TcpSockets {
        states: TCP_STATES.iter().map(|s| (*s, 0)).collect(),
        ..TcpSockets::default()
    };
    let entries = match std::fs::read_dir(fd_dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.note = Some(format!("cannot list {}: {e}", fd_dir.display()));
            return out;
        }
    };
    let mut counted = HashSet::new();
    for (seen, entry) in entries.enumerate() {
        if seen >= MAX_FDS_SCANNED {
            out.truncated = true;
            out.note = Some(format!(
                "only the first {MAX_FDS_SCANNED} descriptors were looked at"
            ));
            break;
        }
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        // Closed since the listing, or not a link: not a socket of ours.
        let Some(inode) = std::fs::read_link(entry.path())
            .ok()
            .and_then(|target| socket_inode(&target))
        else {
            continue;
        };
        out.socket_fds += 1;
        if !counted.insert(inode) {
            continue; // another descriptor of a socket already counted
        }
        if let Some(state) = tcp_state(fd, inode) {
            out.sockets += 1;
            if let Some(count) = TCP_STATES
                .get(usize::from(state).wrapping_sub(1))
                .and_then(|name| out.states.get_mut(name))
            {
                *count += 1;
            }
        }
    }
    out
}

/// The kernel's state of the TCP socket open as `fd` (numbered as in `/proc/net/tcp`), if `fd`
/// is still the socket of inode `inode` and a TCP one; `None` for any other descriptor (UDP,
/// Unix, closed and reused since it was listed).
fn tcp_state(fd: libc::c_int, inode: u64) -> Option<u8> {
    // SAFETY: an all-zero `stat` is a valid value for `fstat` to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid `stat` to write into; an fd that is not open gives EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
        || st.st_ino != inode
    {
        return None;
    }
    // `tcpi_state` is the first byte of `struct tcp_info`, and the kernel copies no more than
    // the length asked for.
    let mut state = 0u8;
    let mut len: libc::socklen_t = 1;
    // SAFETY: `state` is a writable byte and `len` says so; a descriptor that is not a TCP
    // socket gives an error (ENOPROTOOPT, EOPNOTSUPP), not a write.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut state).cast(),
            &mut len,
        )
    };
    (rc == 0 && len == 1 && state != 0).then_some(state)
}

/// The inode of a `/proc/<pid>/fd` link's target `socket:[<inode>]`.
fn socket_inode(target: &Path) -> Option<u64> {
    target
        .to_str()
        .and_then(|t| t.strip_prefix("socket:["))
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<u64>().ok())
}

/// Socket inodes of the descriptors in `fd_dir`, the number of socket descriptors, and
/// whether the listing was cut at [`MAX_FDS_SCANNED`].
fn socket_inodes(fd_dir: &Path) -> std::io::Result<(HashSet<u64>, u64, bool)> {
    let mut inodes = HashSet::new();
    let mut sockets = 0;
    let mut seen = 0;
    for entry in std::fs::read_dir(fd_dir)? {
        let Ok(entry) = entry else { continue };
        seen += 1;
        if seen > MAX_FDS_SCANNED {
            return Ok((inodes, sockets, true));
        }
        // Closed since the listing, or not a link: not a socket of ours.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = socket_inode(&target) {
            sockets += 1;
            inodes.insert(inode);
        }
    }
    Ok((inodes, sockets, false))
}

/// Adds the states of the sockets in one table whose inode is in `inodes`. Returns whether
/// the table was cut at the caps.
fn count_states(
    file: impl Read,
    inodes: &HashSet<u64>,
    out: &mut TcpSockets,
) -> std::io::Result<bool> {
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(TCP_MAX_BYTES));
    let mut line = Vec::with_capacity(256);
    let mut lines = 0usize;
    let mut bytes = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            // End of the file, or of the byte cap: cut if the cap was reached.
            return Ok(bytes >= TCP_MAX_BYTES);
        }
        bytes += n as u64;
        if !line.ends_with(b"\n") && bytes >= TCP_MAX_BYTES {
            // A line cut by the byte cap: not counted.
            return Ok(true);
        }
        lines += 1;
        if lines == 1 {
            continue; // the header
        }
        out.lines_read += 1;
        if let Some((state, inode)) = parse_tcp_line(&line)
            && inodes.contains(&inode)
        {
            out.sockets += 1;
            if let Some(count) = TCP_STATES
                .get(usize::from(state).wrapping_sub(1))
                .and_then(|name| out.states.get_mut(name))
            {
                *count += 1;
            }
        }
        if lines > TCP_MAX_LINES {
            let mut probe = [0u8; 1];
            return Ok(reader.read(&mut probe)? > 0);
        }
    }
}

/// `(st, inode)` of one `/proc/net/tcp` line:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …`.
fn parse_tcp_line(line: &[u8]) -> Option<(u8, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let state = fields.nth(3)?;
    let inode = fields.nth(5)?;
    Some((u8::from_str_radix(state, 16).ok()?, inode.parse().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_costly_read_of_the_tcp_tables_is_reused_longer() {
        let ms = |n: u64| n * 1_000_000;
        let reuse = super::super::registry::duration_nanos(TCP_REUSE);
        // A cheap read: the usual reuse.
        assert_eq!(reuse_nanos(0), reuse);
        assert_eq!(reuse_nanos(ms(1)), reuse);
        // 30 ms of CPU (a table of tens of thousands of TIME_WAIT sockets): 30 s, 0.1%.
        assert_eq!(reuse_nanos(ms(30)), ms(30_000));
        // Never longer than the cap, whatever the read cost.
        let max = super::super::registry::duration_nanos(TCP_REUSE_MAX);
        assert_eq!(reuse_nanos(ms(500)), max);
        assert_eq!(reuse_nanos(u64::MAX), max);
    }

    #[test]
    fn the_calling_threads_cpu_time_advances_with_its_work() {
        let before = thread_cpu_nanos();
        assert!(before > 0, "this thread has run, so it has used CPU time");
        let mut x = 0u64;
        while thread_cpu_nanos() < before + 1_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_nanos() >= before + 1_000_000);
        assert!(x > 0);
    }

    /// The socket inode of one of this process's descriptors.
    fn inode_of(fd: &impl std::os::fd::AsRawFd) -> u64 {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        link.ok()
            .and_then(|t| socket_inode(&t))
            .unwrap_or_else(|| panic!("descriptor {} is a socket", fd.as_raw_fd()))
    }

    #[test]
    fn each_socket_descriptor_tells_the_state_the_kernels_table_shows() {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream, UdpSocket};
        use std::os::fd::AsRawFd;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // A connection whose peer closed: CLOSE_WAIT once our side has seen the FIN.
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut left, _) = listener.accept().unwrap();
        drop(peer);
        left.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert_eq!(left.read(&mut [0u8; 8]).unwrap(), 0, "the peer's FIN");

        let tcp: [(libc::c_int, u64); 4] = [
            (listener.as_raw_fd(), inode_of(&listener)),
            (client.as_raw_fd(), inode_of(&client)),
            (accepted.as_raw_fd(), inode_of(&accepted)),
            (left.as_raw_fd(), inode_of(&left)),
        ];
        let states: Vec<Option<u8>> = tcp.iter().map(|&(fd, i)| tcp_state(fd, i)).collect();
        // listen, established twice, close_wait (the kernel's numbering, as in TCP_STATES).
        assert_eq!(states, [Some(10), Some(1), Some(1), Some(8)]);

        // The same as the kernel's table says of these sockets.
        let mut table = TcpSockets {
            states: TCP_STATES.iter().map(|s| (*s, 0)).collect(),
            ..TcpSockets::default()
        };
        let ours: HashSet<u64> = tcp.iter().map(|&(_, i)| i).collect();
        count_states(File::open("/proc/net/tcp").unwrap(), &ours, &mut table).unwrap();
        assert_eq!(table.sockets, 4);
        assert_eq!(
            (
                table.states["listen"],
                table.states["established"],
                table.states["close_wait"]
            ),
            (1, 2, 1)
        );

        // Not TCP, or no longer the socket listed: no state.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(tcp_state(udp.as_raw_fd(), inode_of(&udp)), None);
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(tcp_state(unix.as_raw_fd(), inode_of(&unix)), None);
        assert_eq!(tcp_state(listener.as_raw_fd(), inode_of(&udp)), None);
        let file = File::open("/proc/self/status").unwrap();
        assert_eq!(tcp_state(file.as_raw_fd(), 1), None);
    }

    #[test]
    fn the_own_reading_counts_each_tcp_socket_once_and_every_socket_descriptor() {
        use std::net::{TcpListener, UdpSocket};
        use std::os::fd::AsRawFd;

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let again = listener.try_clone().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A descriptor list of our own making (links named by descriptor, as in /proc/self/fd):
        // the listener twice, a UDP socket, a number that is no descriptor, a file.
        let dir = tempfile::tempdir().unwrap();
        let link = |fd: libc::c_int, target: String| {
            std::os::unix::fs::symlink(target, dir.path().join(fd.to_string())).unwrap();
        };
        link(
            listener.as_raw_fd(),
            format!("socket:[{}]", inode_of(&listener)),
        );
        link(again.as_raw_fd(), format!("socket:[{}]", inode_of(&again)));
        link(udp.as_raw_fd(), format!("socket:[{}]", inode_of(&udp)));
        link(1 << 20, "socket:[12345]".to_owned());
        link(1 << 21, "/etc/hostname".to_owned());
        std::fs::write(dir.path().join("not-a-descriptor"), b"").unwrap();

        let t = own_tcp_sockets(dir.path());
        assert_eq!(t.note, None);
        assert_eq!((t.sockets, t.socket_fds, t.lines_read), (1, 4, 0));
        assert_eq!(t.states["listen"], 1);
        assert_eq!(t.states.values().sum::<u64>(), 1);

        let missing = own_tcp_sockets(&dir.path().join("missing"));
        assert!(missing.note.is_some_and(|n| n.contains("cannot list")));
    }

    const LINE: &[u8] = b"   1: 0100007F:1F90 0100007F:C350 08 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1\n";

    #[test]
    fn a_tcp_line_gives_state_and_inode() {
        assert_eq!(parse_tcp_line(LINE), Some((8, 424_242)));
        assert_eq!(parse_tcp_line(b"garbage\n"), None);
        assert_eq!(parse_tcp_line(b""), None);
    }

    fn cut_table(line: &[u8], lines: usize) -> (Option<bool>, TcpSockets) {
        let mut text = b"  sl  local_address rem_address   st\n".to_vec();
        for _ in 0..lines {
            text.extend_from_slice(line);
        }
        let inodes: HashSet<u64> = [424_242].into_iter().collect();
        let mut out = TcpSockets {
            states: TCP_STATES.iter().map(|s| (*s, 0)).collect(),
            ..TcpSockets::default()
        };
        let cut = count_states(&text[..], &inodes, &mut out).ok();
        (cut, out)
    }

    #[test]
    fn a_table_with_too_many_lines_is_cut_and_says_so() {
        let (cut, out) = cut_table(LINE, TCP_MAX_LINES + 10);
        assert_eq!(cut, Some(true));
        assert_eq!(out.lines_read as usize, TCP_MAX_LINES);
        assert_eq!(out.states["close_wait"] as usize, TCP_MAX_LINES);
        let (cut, out) = cut_table(LINE, TCP_MAX_LINES);
        assert_eq!(cut, Some(false));
        assert_eq!(out.sockets as usize, TCP_MAX_LINES);
    }

    #[test]
    fn a_table_with_too_many_bytes_is_cut_and_says_so() {
        let mut long = LINE[..LINE.len() - 1].to_vec();
        long.extend_from_slice(&[b' '; 1000]);
        long.push(b'\n');
        let fit = (TCP_MAX_BYTES as usize - 40) / long.len();
        let (cut, out) = cut_table(&long, fit + 5);
        assert_eq!(cut, Some(true));
        assert_eq!(out.states["close_wait"] as usize, fit);
    }
}
