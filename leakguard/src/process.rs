//! Process statistics from `/proc/self`: resident and virtual size, peak, swap, threads,
//! open file descriptors by type, the fd limit and the start time.
//!
//! # Cost
//!
//! The sampler reads these every second, so a reading is built to be cheap. The reader keeps
//! the procfs files it needs open (close-on-exec) and re-reads them with `pread` at offset 0,
//! which makes procfs regenerate their content without a fresh `open`/`close` pair. On Linux
//! procfs a *fast* reading is three or four system calls:
//!
//! | value | fast reading | full reading |
//! | --- | --- | --- |
//! | resident, virtual | `self/statm` | `self/statm` |
//! | threads | link count of `self/task` (`self/stat` field 20 outside procfs) | `Threads` in `self/status` |
//! | open fds | size of `self/fd` (Linux ≥ 6.2; else the entries are counted) | entries of `self/fd` |
//! | peak resident | the last full reading's `VmHWM`, raised to the current resident size | `VmHWM` in `self/status` |
//! | swap | the last full reading's | `VmSwap` in `self/status` |
//! | fds by type, fd limit | the last full reading's | entries of `self/fd`, `fstat` of each (`readlink` for regular files and anonymous inodes), `self/limits` |
//! | start time | computed once per process | computed once per process |
//!
//! `self/status` is the most expensive file to generate, so it is read on full readings only.
//!
//! The reader holds up to six descriptors open (they show up in [`ProcessStats::open_fds`]
//! as files). It notices a `fork` (the process id changes) and reopens them then, so a child
//! never reports its parent.

use crate::error::{Error, Result};
use serde::Serialize;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Largest procfs file the reader is willing to buffer.
const MAX_FILE_BYTES: usize = 1 << 20;
/// Initial size of the read buffer; `self/status` and `self/limits` fit in it.
const READ_BUF_BYTES: usize = 4096;
/// Enough of a link target to classify it (`anon_inode:` is the longest prefix we test).
const LINK_BUF_BYTES: usize = 64;

/// One reading of the process's own statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessStats {
    /// Resident set size (RSS), bytes (`/proc/self/statm`).
    pub resident_bytes: u64,
    /// Virtual memory size, bytes (`/proc/self/statm`).
    pub virtual_bytes: u64,
    /// Peak resident set size (`VmHWM` in `/proc/self/status`), bytes. Read on full
    /// readings; a fast reading raises the last full value to the current resident size.
    pub peak_resident_bytes: u64,
    /// Swapped-out anonymous memory (`VmSwap`), bytes; from the last full reading.
    pub swap_bytes: u64,
    /// Number of threads.
    pub threads: u64,
    /// Number of open file descriptors.
    pub open_fds: u64,
    /// Open file descriptors by type; counted on full readings only (fast readings repeat
    /// the last full reading's counts).
    pub fds_by_type: Option<FdCounts>,
    /// Soft limit on open file descriptors (`/proc/self/limits`); `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Process start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Open file descriptors by what they point at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FdCounts {
    /// Regular files, directories and devices.
    pub file: u64,
    /// Sockets.
    pub socket: u64,
    /// Pipes and FIFOs. (In a fixture tree, where only link targets are known, a named FIFO
    /// is a path and counts as a file.)
    pub pipe: u64,
    /// `anon_inode:` descriptors (eventfd, epoll, timerfd, signalfd, …).
    pub anon_inode: u64,
    /// Anything else.
    pub other: u64,
}

impl FdCounts {
    /// All descriptors counted.
    pub fn total(&self) -> u64 {
        self.file + self.socket + self.pipe + self.anon_inode + self.other
    }

    /// Counts one descriptor whose link target (in `/proc/self/fd`) starts with `target`.
    fn count(&mut self, target: &[u8]) {
        let kind = if target.starts_with(b"socket:[") {
            FdKind::Socket
        } else if target.starts_with(b"pipe:[") {
            FdKind::Pipe
        } else if target.starts_with(b"anon_inode:") {
            FdKind::AnonInode
        } else if target.starts_with(b"/") {
            FdKind::File
        } else {
            FdKind::Other
        };
        self.add(kind);
    }

    fn add(&mut self, kind: FdKind) {
        let slot = match kind {
            FdKind::File => &mut self.file,
            FdKind::Socket => &mut self.socket,
            FdKind::Pipe => &mut self.pipe,
            FdKind::AnonInode => &mut self.anon_inode,
            FdKind::Other => &mut self.other,
        };
        *slot += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum FdKind {
    File,
    Socket,
    Pipe,
    AnonInode,
    Other,
}

/// What `fstat` tells about one of this process's descriptors.
enum FdClass {
    Known(FdKind),
    /// Closed since the directory was listed.
    Closed,
    /// A regular file, an anonymous inode or something unusual: the link target tells
    /// (`/path`, `anon_inode:…`, `net:[…]`, …).
    AskReadlink,
}

/// Reads [`ProcessStats`] from a procfs tree.
#[derive(Debug)]
pub struct ProcReader {
    paths: Paths,
    handles: Option<Handles>,
    page_size: u64,
    ticks_per_second: u64,
    /// Scratch buffer for file contents, reused across readings.
    buf: Vec<u8>,
    /// Scratch buffer for directory entries, allocated on the first full reading.
    dirents: Vec<u8>,
    /// What the last full reading found, reused by fast readings.
    last_full: Option<FullValues>,
    /// Start time of the process, computed once per process id.
    start_time: Option<f64>,
}

/// The files the reader uses, resolved once under the procfs root.
#[derive(Debug)]
struct Paths {
    statm: PathBuf,
    status: PathBuf,
    stat: PathBuf,
    limits: PathBuf,
    fd: PathBuf,
    task: PathBuf,
    boot_stat: PathBuf,
}

/// Open descriptors, valid for the process id they were opened in.
#[derive(Debug)]
struct Handles {
    pid: u32,
    statm: File,
    fd_dir: File,
    /// `self/fd` reports the number of open fds as its size (procfs, Linux ≥ 6.2).
    fd_count_in_size: bool,
    /// `self/fd` is procfs, so its entries are this process's own descriptors and can be
    /// classified with `fstat` instead of `readlink`.
    own_fds: bool,
    /// `self/task`, whose link count is 2 + the number of threads (procfs only).
    task_dir: Option<File>,
    stat: File,
    status: File,
    limits: File,
}

#[derive(Debug, Clone, Copy)]
struct FullValues {
    peak_resident_bytes: u64,
    swap_bytes: u64,
    fds_by_type: FdCounts,
    max_fds: Option<u64>,
}

impl ProcReader {
    /// A reader of the real `/proc`.
    pub fn new() -> Self {
        Self::with_root("/proc")
    }

    /// A reader of a procfs tree at `proc_root` (laid out like `/proc`: `self/statm`,
    /// `self/status`, `self/stat`, `self/limits`, `self/fd/`, and `stat` for the boot time).
    pub fn with_root(proc_root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = proc_root.into();
        let paths = Paths {
            statm: root.join("self/statm"),
            status: root.join("self/status"),
            stat: root.join("self/stat"),
            limits: root.join("self/limits"),
            fd: root.join("self/fd"),
            task: root.join("self/task"),
            boot_stat: root.join("stat"),
        };
        Self {
            paths,
            handles: None,
            page_size: sysconf_or(libc::_SC_PAGESIZE, 4096),
            ticks_per_second: sysconf_or(libc::_SC_CLK_TCK, 100),
            buf: Vec::new(),
            dirents: Vec::new(),
            last_full: None,
            start_time: None,
        }
    }

    /// Takes one reading.
    ///
    /// A `full` reading reads `self/status` (peak resident size, swap, threads), classifies
    /// every open fd by type and re-reads the fd limit. A fast one reads only the resident
    /// and virtual size, the thread count and the number of open fds, and repeats the rest
    /// from the last full reading (see the [module documentation](self) for the sources).
    /// The first reading, and the first after a `fork`, is always full. The start time is
    /// computed once per process, since it cannot change.
    pub fn read(&mut self, full: bool) -> Result<ProcessStats> {
        let pid = std::process::id();
        if self.handles.as_ref().is_none_or(|h| h.pid != pid) {
            // A new process (first reading, or after fork): nothing cached belongs to it.
            self.handles = None;
            self.last_full = None;
            self.start_time = None;
            self.handles = Some(Handles::open(&self.paths, pid)?);
        }
        match self.last_full {
            Some(last) if !full => self.read_fast(last),
            _ => self.read_full(),
        }
    }

    fn read_fast(&mut self, last: FullValues) -> Result<ProcessStats> {
        let (resident_bytes, virtual_bytes) = self.read_statm()?;
        let threads = self.read_threads_fast()?;
        let open_fds = self.count_fds_fast()?;
        Ok(ProcessStats {
            resident_bytes,
            virtual_bytes,
            peak_resident_bytes: last.peak_resident_bytes.max(resident_bytes),
            swap_bytes: last.swap_bytes,
            threads,
            open_fds,
            fds_by_type: Some(last.fds_by_type),
            max_fds: last.max_fds,
            start_time_seconds: self.start_time.unwrap_or_default(),
        })
    }

    fn read_full(&mut self) -> Result<ProcessStats> {
        let (resident_bytes, virtual_bytes) = self.read_statm()?;
        let status = self.read_status()?;
        let fds_by_type = self.classify_fds()?;
        let max_fds = self.read_max_fds()?;
        let start_time_seconds = match self.start_time {
            Some(t) => t,
            None => {
                let t = self.read_start_time()?;
                self.start_time = Some(t);
                t
            }
        };
        let last = FullValues {
            peak_resident_bytes: status.peak_resident_bytes,
            swap_bytes: status.swap_bytes,
            fds_by_type,
            max_fds,
        };
        self.last_full = Some(last);
        Ok(ProcessStats {
            resident_bytes,
            virtual_bytes,
            peak_resident_bytes: status.peak_resident_bytes,
            swap_bytes: status.swap_bytes,
            threads: status.threads,
            open_fds: fds_by_type.total(),
            fds_by_type: Some(fds_by_type),
            max_fds,
            start_time_seconds,
        })
    }

    /// Resident and virtual size from `self/statm`, bytes.
    fn read_statm(&mut self) -> Result<(u64, u64)> {
        let page_size = self.page_size;
        let path = &self.paths.statm;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        let text = pread_text(&handles.statm, &mut self.buf, path)?;
        let mut fields = text.split_ascii_whitespace();
        let size = parse_next(&mut fields, path, "size")?;
        let resident = parse_next(&mut fields, path, "resident")?;
        Ok((
            resident.saturating_mul(page_size),
            size.saturating_mul(page_size),
        ))
    }

    /// The thread count, the cheapest way this tree allows.
    fn read_threads_fast(&mut self) -> Result<u64> {
        let path = &self.paths.task;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        if let Some(task_dir) = &handles.task_dir {
            let meta = task_dir.metadata().map_err(|e| Error::Read {
                path: path.clone(),
                source: e,
            })?;
            return Ok(meta.nlink().saturating_sub(2));
        }
        let fields = self.read_stat_fields(&[20])?;
        Ok(fields[0])
    }

    /// `self/stat` fields by their 1-based number in proc(5) (all after `comm`, field 2).
    fn read_stat_fields<const N: usize>(&mut self, numbers: &[usize; N]) -> Result<[u64; N]> {
        let path = &self.paths.stat;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        let text = pread_text(&handles.stat, &mut self.buf, path)?;
        parse_stat_fields(text, numbers, path)
    }

    fn count_fds_fast(&mut self) -> Result<u64> {
        let path = &self.paths.fd;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        if handles.fd_count_in_size {
            let meta = handles.fd_dir.metadata().map_err(|e| Error::Read {
                path: path.clone(),
                source: e,
            })?;
            return Ok(meta.len());
        }
        let mut count = 0u64;
        for_each_entry(&handles.fd_dir, &mut self.dirents, path, |_| count += 1)?;
        Ok(count)
    }

    fn classify_fds(&mut self) -> Result<FdCounts> {
        let path = &self.paths.fd;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        let dir = &handles.fd_dir;
        let own_fds = handles.own_fds;
        let mut counts = FdCounts::default();
        let mut target = [0u8; LINK_BUF_BYTES];
        for_each_entry(dir, &mut self.dirents, path, |name| {
            if own_fds {
                match classify_own_fd(name) {
                    FdClass::Known(kind) => return counts.add(kind),
                    FdClass::Closed => return,
                    FdClass::AskReadlink => {}
                }
            }
            match read_link_prefix(dir, name, &mut target) {
                Ok(prefix) => counts.count(prefix),
                // Closed between listing and readlink: it is no longer open.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => counts.other += 1,
            }
        })?;
        Ok(counts)
    }

    fn read_status(&mut self) -> Result<StatusValues> {
        let path = &self.paths.status;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        let text = pread_text(&handles.status, &mut self.buf, path)?;
        parse_status(text, path)
    }

    fn read_max_fds(&mut self) -> Result<Option<u64>> {
        let path = &self.paths.limits;
        let handles = self.handles.as_ref().ok_or_else(|| not_open(path))?;
        let text = pread_text(&handles.limits, &mut self.buf, path)?;
        parse_max_open_files(text, path)
    }

    fn read_start_time(&mut self) -> Result<f64> {
        let [start_ticks] = self.read_stat_fields(&[22])?;
        let path = &self.paths.boot_stat;
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.clone(),
            source: e,
        })?;
        let btime = parse_btime(&text, path)?;
        Ok(btime as f64 + start_ticks as f64 / self.ticks_per_second as f64)
    }
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new()
    }
}

impl Handles {
    fn open(paths: &Paths, pid: u32) -> Result<Self> {
        let statm = open(&paths.statm)?;
        let fd_dir = open(&paths.fd)?;
        let on_procfs = is_procfs(&fd_dir);
        let fd_count_in_size = on_procfs && fd_dir.metadata().is_ok_and(|m| m.len() > 0);
        let task_dir = if on_procfs {
            File::open(&paths.task).ok()
        } else {
            None
        };
        // Everything is opened up front, so that the descriptors the reader holds are the
        // same in every reading's count.
        Ok(Self {
            pid,
            statm,
            fd_dir,
            fd_count_in_size,
            own_fds: on_procfs,
            task_dir,
            stat: open(&paths.stat)?,
            status: open(&paths.status)?,
            limits: open(&paths.limits)?,
        })
    }
}

struct StatusValues {
    peak_resident_bytes: u64,
    swap_bytes: u64,
    threads: u64,
}

/// `read` opens the handles before it calls the readers, so this is never returned.
fn not_open(path: &Path) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        source: io::Error::other("procfs files are not open"),
    }
}

fn open(path: &Path) -> Result<File> {
    // std opens with O_CLOEXEC, so a child the service spawns does not inherit these.
    File::open(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Reads a whole small file with `pread` at offset 0 into `buf` and returns it as text.
///
/// procfs and sysfs generate a single-record file (`statm`, `status`, `memory.max`, …) in
/// one go when read from offset 0, so one read is enough unless it fills the buffer; then
/// the buffer grows and the file is read again from the start, for a consistent snapshot.
pub(crate) fn pread_text<'a>(file: &File, buf: &'a mut Vec<u8>, path: &Path) -> Result<&'a str> {
    if buf.len() < READ_BUF_BYTES {
        buf.resize(READ_BUF_BYTES, 0);
    }
    let len = loop {
        let n = match file.read_at(buf, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        if n < buf.len() {
            break n;
        }
        if buf.len() >= MAX_FILE_BYTES {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                reason: format!("larger than {MAX_FILE_BYTES} bytes"),
            });
        }
        let grown = buf.len() * 2;
        buf.resize(grown, 0);
    };
    std::str::from_utf8(&buf[..len]).map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".to_owned(),
    })
}

fn parse_next<'a>(
    fields: &mut impl Iterator<Item = &'a str>,
    path: &Path,
    what: &str,
) -> Result<u64> {
    let field = fields.next().ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("missing field {what}"),
    })?;
    parse_u64(field, path, what)
}

fn parse_u64(text: &str, path: &Path, what: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("{what} is not a number: {text:?}"),
    })
}

/// Fields of `/proc/<pid>/stat` by their 1-based number. Field 2, `comm`, is in
/// parentheses and may itself contain spaces and parentheses, so parsing starts after the
/// last `)`; the fields asked for must come after it (number ≥ 3).
fn parse_stat_fields<const N: usize>(
    text: &str,
    numbers: &[usize; N],
    path: &Path,
) -> Result<[u64; N]> {
    let close = text.rfind(')').ok_or_else(|| Error::Parse {
        path: path.to_path_buf(),
        reason: "no ')' closing the command name".to_owned(),
    })?;
    let mut out = [0u64; N];
    for (slot, &number) in out.iter_mut().zip(numbers) {
        let what = format!("field {number}");
        let field = number
            .checked_sub(3)
            .and_then(|i| text[close + 1..].split_ascii_whitespace().nth(i))
            .ok_or_else(|| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("missing {what}"),
            })?;
        *slot = parse_u64(field, path, &what)?;
    }
    Ok(out)
}

fn parse_status(text: &str, path: &Path) -> Result<StatusValues> {
    let (mut peak, mut swap, mut threads) = (None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "VmHWM" => &mut peak,
            "VmSwap" => &mut swap,
            "Threads" => &mut threads,
            _ => continue,
        };
        let mut words = value.split_ascii_whitespace();
        let number = parse_next(&mut words, path, key)?;
        *slot = Some(match words.next() {
            None => number,
            Some("kB") => number.saturating_mul(1024),
            Some(unit) => {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    reason: format!("{key} has unknown unit {unit:?}"),
                });
            }
        });
    }
    let missing = |key: &str| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("no {key} line"),
    };
    Ok(StatusValues {
        peak_resident_bytes: peak.ok_or_else(|| missing("VmHWM"))?,
        swap_bytes: swap.ok_or_else(|| missing("VmSwap"))?,
        threads: threads.ok_or_else(|| missing("Threads"))?,
    })
}

/// The soft limit from the `Max open files` line of `/proc/<pid>/limits`.
fn parse_max_open_files(text: &str, path: &Path) -> Result<Option<u64>> {
    const KEY: &str = "Max open files";
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix(KEY))
        .ok_or_else(|| Error::Parse {
            path: path.to_path_buf(),
            reason: format!("no {KEY:?} line"),
        })?;
    let soft = line
        .split_ascii_whitespace()
        .next()
        .ok_or_else(|| Error::Parse {
            path: path.to_path_buf(),
            reason: format!("{KEY:?} has no soft limit"),
        })?;
    if soft == "unlimited" {
        return Ok(None);
    }
    parse_u64(soft, path, "the soft limit on open files").map(Some)
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_btime(text: &str, path: &Path) -> Result<u64> {
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .ok_or_else(|| Error::Parse {
            path: path.to_path_buf(),
            reason: "no btime line".to_owned(),
        })?;
    parse_u64(value.trim(), path, "btime")
}

/// Calls `f` with the name of every entry of the directory `dir` but `.` and `..`,
/// without allocating per entry.
#[cfg(target_os = "linux")]
fn for_each_entry(
    dir: &File,
    buf: &mut Vec<u8>,
    path: &Path,
    mut f: impl FnMut(&CStr),
) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    // struct linux_dirent64: d_ino (8 bytes), d_off (8), d_reclen (2), d_type (1), d_name.
    const NAME_OFFSET: usize = 19;
    /// Size of the buffer directory entries are read into.
    const DIRENT_BUF_BYTES: usize = 16 * 1024;
    let read_err = |source: io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    if buf.len() < DIRENT_BUF_BYTES {
        buf.resize(DIRENT_BUF_BYTES, 0);
    }
    let mut dir_ref = dir;
    dir_ref.seek(SeekFrom::Start(0)).map_err(read_err)?;
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which we hold
        // mutably, and reads the directory open as `dir`, which outlives the call.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(read_err(e));
        }
        let filled = usize::try_from(n).unwrap_or(0).min(buf.len());
        if filled == 0 {
            return Ok(());
        }
        let mut offset = 0;
        while offset + NAME_OFFSET <= filled {
            let reclen = usize::from(u16::from_ne_bytes([buf[offset + 16], buf[offset + 17]]));
            if reclen <= NAME_OFFSET || offset + reclen > filled {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    reason: "malformed directory entry".to_owned(),
                });
            }
            if let Ok(name) =
                CStr::from_bytes_until_nul(&buf[offset + NAME_OFFSET..offset + reclen])
                && name != c"."
                && name != c".."
            {
                f(name);
            }
            offset += reclen;
        }
    }
}

/// Calls `f` with the name of every entry of the directory `dir` but `.` and `..`.
#[cfg(not(target_os = "linux"))]
fn for_each_entry(
    _dir: &File,
    _buf: &mut Vec<u8>,
    path: &Path,
    mut f: impl FnMut(&CStr),
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let read_err = |source: io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        if let Ok(name) = std::ffi::CString::new(entry.file_name().as_bytes()) {
            f(&name);
        }
    }
    Ok(())
}

/// Classifies this process's descriptor named `name` (its number) with `fstat`, which is
/// several times cheaper than `readlink` on `/proc/self/fd/N`. Sockets, pipes and FIFOs,
/// directories and devices are told apart by their file type; the rest needs the link.
fn classify_own_fd(name: &CStr) -> FdClass {
    let Some(fd) = name
        .to_str()
        .ok()
        .and_then(|n| n.parse::<libc::c_int>().ok())
    else {
        return FdClass::AskReadlink;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes the `stat` struct we pass; a number that is not an open
    // descriptor (closed since the listing) fails with EBADF and changes nothing.
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc != 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::EBADF) => FdClass::Closed,
            _ => FdClass::AskReadlink,
        };
    }
    // SAFETY: fstat succeeded, so it filled in the struct.
    let mode = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT;
    match mode {
        libc::S_IFSOCK => FdClass::Known(FdKind::Socket),
        libc::S_IFIFO => FdClass::Known(FdKind::Pipe),
        libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK => FdClass::Known(FdKind::File),
        _ => FdClass::AskReadlink,
    }
}

/// The start of the link target of `name` inside the directory `dir`, at most
/// `target.len()` bytes (enough to classify an fd).
fn read_link_prefix<'a>(dir: &File, name: &CStr, target: &'a mut [u8]) -> io::Result<&'a [u8]> {
    // SAFETY: `name` is NUL-terminated, `target` is writable for `target.len()` bytes and
    // readlinkat writes at most that many (truncating, without a terminating NUL).
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            target.as_mut_ptr().cast(),
            target.len(),
        )
    };
    match usize::try_from(n) {
        Ok(n) => Ok(&target[..n.min(target.len())]),
        Err(_) => Err(io::Error::last_os_error()),
    }
}

/// Whether `file` lives on procfs, where `self/fd` and `self/task` report counts in their
/// metadata.
#[cfg(target_os = "linux")]
fn is_procfs(file: &File) -> bool {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` is an open descriptor for the duration of the call and `fs` is a
    // writable `statfs` the kernel fills in.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) };
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between targets
    let procfs = rc == 0 && fs.f_type as i64 == libc::PROC_SUPER_MAGIC as i64;
    procfs
}

#[cfg(not(target_os = "linux"))]
fn is_procfs(_file: &File) -> bool {
    false
}

/// `sysconf(name)`, or `default` when the system does not say.
fn sysconf_or(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// Runs every `/proc` text parser on `text` (the `fuzzing` feature's entry point).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_parsers(text: &str) {
    let path = Path::new("/proc/self/fuzz");
    let _ = parse_status(text, path);
    let _ = parse_max_open_files(text, path);
    let _ = parse_btime(text, path);
    let _ = parse_stat_fields(text, &[3, 14, 15, 22, 24], path);
    let _ = parse_stat_fields(text, &[0, 1, 2, usize::MAX], path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_last_paren_of_comm() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 7 0 12345 0 0\n";
        let fields = parse_stat_fields(text, &[4, 20, 22], Path::new("stat"));
        assert_eq!(fields.ok(), Some([1, 7, 12345]));
    }

    #[test]
    fn stat_state_letter_is_not_a_number() {
        let text = "42 (a) S 1\n";
        let err = parse_stat_fields(text, &[3], Path::new("/p/self/stat"));
        assert!(matches!(err, Err(Error::Parse { path, .. }) if path == Path::new("/p/self/stat")));
    }

    #[test]
    fn fd_targets_are_classified_by_prefix() {
        let mut counts = FdCounts::default();
        for target in [
            &b"socket:[123]"[..],
            b"pipe:[9]",
            b"anon_inode:[eventpoll]",
            b"/dev/null",
            b"/tmp/x (deleted)",
            b"net:[4026531840]",
        ] {
            counts.count(target);
        }
        let expected = FdCounts {
            file: 2,
            socket: 1,
            pipe: 1,
            anon_inode: 1,
            other: 1,
        };
        assert_eq!(counts, expected);
        assert_eq!(counts.total(), 6);
    }

    #[test]
    fn unlimited_open_files_is_none() {
        let text = "Limit Soft Hard Units\nMax open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_max_open_files(text, Path::new("limits")).ok(),
            Some(None)
        );
    }
}
