//! The memory limit that applies to this process, from the cgroup tree (v2 and v1).

use crate::error::Result;
use serde::Serialize;
use std::path::PathBuf;

/// Which cgroup hierarchy the memory controller was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// cgroup v1 (`memory.limit_in_bytes`).
    V1,
    /// cgroup v2 (`memory.max`).
    V2,
}

/// The memory controller's view of this process's cgroup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgroupStats {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// This process's cgroup path (from `/proc/self/cgroup`).
    pub path: String,
    /// The smallest memory limit on the way from this cgroup up to the root; `None` when
    /// unlimited (v2 `max`, v1 9223372036854771712).
    pub limit_bytes: Option<u64>,
    /// The cgroup directory the limit was found in.
    pub limit_source: Option<String>,
    /// The smallest v2 `memory.high` up the tree; `None` when unset or on v1.
    pub high_bytes: Option<u64>,
    /// The cgroup's current memory usage (`memory.current`, v1 `memory.usage_in_bytes`).
    pub current_bytes: Option<u64>,
    /// OOM kills in this cgroup (v2 `memory.events` `oom_kill`, v1 `memory.oom_control`).
    pub oom_kills: Option<u64>,
}

/// Reads [`CgroupStats`] starting from `/proc/self/cgroup`.
#[derive(Debug)]
pub struct CgroupReader {
    root: PathBuf,
}

impl CgroupReader {
    /// A reader of the real system (root `/`).
    pub fn new() -> Self {
        Self::with_root("/")
    }

    /// A reader of a tree laid out like `/` under `root`: `proc/self/cgroup`,
    /// `proc/self/mountinfo` and the cgroup mounts it names (e.g. `sys/fs/cgroup/...`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Takes one reading; `Ok(None)` when no memory controller applies to this process.
    /// A `full` reading re-resolves the cgroup path and the limits up the tree; a fast one
    /// reads only the usage and OOM-kill counters and reuses the rest.
    pub fn read(&mut self, full: bool) -> Result<Option<CgroupStats>> {
        let _ = (&self.root, full);
        unimplemented!("filled in by the sampling work")
    }
}

impl Default for CgroupReader {
    fn default() -> Self {
        Self::new()
    }
}
