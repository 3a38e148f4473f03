//! Process statistics from `/proc/self`: resident and virtual size, peak, swap, threads,
//! open file descriptors by type, the fd limit and the start time.

use crate::error::Result;
use serde::Serialize;
use std::path::PathBuf;

/// One reading of the process's own statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessStats {
    /// Resident set size (RSS), bytes (`/proc/self/statm`).
    pub resident_bytes: u64,
    /// Virtual memory size, bytes (`/proc/self/statm`).
    pub virtual_bytes: u64,
    /// Peak resident set size (`VmHWM` in `/proc/self/status`), bytes.
    pub peak_resident_bytes: u64,
    /// Swapped-out anonymous memory (`VmSwap`), bytes.
    pub swap_bytes: u64,
    /// Number of threads.
    pub threads: u64,
    /// Number of open file descriptors.
    pub open_fds: u64,
    /// Open file descriptors by type; counted on full readings only.
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
    /// Pipes and FIFOs.
    pub pipe: u64,
    /// `anon_inode:` descriptors (eventfd, epoll, timerfd, signalfd, …).
    pub anon_inode: u64,
    /// Anything else.
    pub other: u64,
}

/// Reads [`ProcessStats`] from a procfs tree.
#[derive(Debug)]
pub struct ProcReader {
    root: PathBuf,
}

impl ProcReader {
    /// A reader of the real `/proc`.
    pub fn new() -> Self {
        Self::with_root("/proc")
    }

    /// A reader of a procfs tree at `proc_root` (laid out like `/proc`: `self/statm`,
    /// `self/status`, `self/stat`, `self/limits`, `self/fd/`, and `stat` for the boot time).
    pub fn with_root(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            root: proc_root.into(),
        }
    }

    /// Takes one reading. A `full` reading also classifies the open fds by type and re-reads
    /// the fd limit and start time; a fast one reuses those from the last full reading.
    pub fn read(&mut self, full: bool) -> Result<ProcessStats> {
        let _ = (&self.root, full);
        unimplemented!("filled in by the sampling work")
    }
}

impl Default for ProcReader {
    fn default() -> Self {
        Self::new()
    }
}
