//! Allocator backends: jemalloc (feature `jemalloc`), glibc `mallinfo2`, or none.

use crate::error::Result;
use serde::Serialize;

/// Which allocator leakguard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocatorKind {
    /// jemalloc, and it is the process's global allocator.
    Jemalloc,
    /// glibc malloc, read through `mallinfo2` (or `mallinfo` on old glibc).
    Glibc,
    /// No allocator statistics are available.
    None,
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocatorChoice {
    /// jemalloc if it is the global allocator, else glibc malloc if this is a glibc process,
    /// else none.
    #[default]
    Auto,
    /// Force glibc malloc (what a Python process uses).
    Glibc,
    /// No allocator statistics.
    None,
}

/// What leakguard found out about the allocator, once, at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocatorStatus {
    /// The backend whose numbers are reported.
    pub kind: AllocatorKind,
    /// Whether jemalloc is linked into the binary (the `jemalloc` feature).
    pub jemalloc_linked: bool,
    /// A human explanation when the choice is not the obvious one, e.g. jemalloc is linked
    /// but is not the `#[global_allocator]`.
    pub note: Option<String>,
}

/// One reading of allocator statistics, bytes. Fields a backend does not provide are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AllocatorStats {
    /// Bytes in live allocations (jemalloc `stats.allocated`, glibc `uordblks + hblkhd`).
    pub allocated: u64,
    /// jemalloc `stats.active`: bytes in active pages.
    pub active: Option<u64>,
    /// jemalloc `stats.resident`: bytes in physically resident pages the allocator maps.
    pub resident: Option<u64>,
    /// Bytes the allocator has mapped from the OS (jemalloc `stats.mapped`, glibc `arena + hblkhd`).
    pub mapped: Option<u64>,
    /// jemalloc `stats.retained`: virtual memory retained for reuse, not returned to the OS.
    pub retained: Option<u64>,
    /// jemalloc `stats.metadata`: the allocator's own metadata.
    pub metadata: Option<u64>,
    /// glibc `fordblks`: free bytes held inside the heap (fragmentation/retention).
    pub free: Option<u64>,
}

/// Reads [`AllocatorStats`] from the chosen backend.
#[derive(Debug)]
pub struct Allocator {
    status: AllocatorStatus,
}

impl Allocator {
    /// Detects the allocator according to `choice`.
    pub fn new(choice: AllocatorChoice) -> Self {
        let _ = choice;
        unimplemented!("filled in by the sampling work")
    }

    /// What was detected.
    pub fn status(&self) -> &AllocatorStatus {
        &self.status
    }

    /// Takes one reading (jemalloc: advances the `epoch` once, then reads the stats).
    /// `Ok(None)` for [`AllocatorKind::None`].
    pub fn read(&mut self) -> Result<Option<AllocatorStats>> {
        unimplemented!("filled in by the sampling work")
    }
}
