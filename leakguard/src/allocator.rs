//! Allocator backends: jemalloc (feature `jemalloc`), glibc `mallinfo2`, or none.
//!
//! jemalloc's numbers are only meaningful when jemalloc is the process's
//! `#[global_allocator]`; linking the crate is not enough. [`Allocator::new`] therefore checks,
//! once per process, that an allocation made through the global allocator shows up in
//! jemalloc's per-thread counter, and with [`AllocatorChoice::Auto`] falls back to glibc
//! malloc (and says so in [`AllocatorStatus::note`]) when it does not.
//!
//! glibc's `mallinfo2` (glibc ≥ 2.33) is looked up at run time, so a binary built against a
//! new glibc still loads on an old one; there the older `mallinfo` is used, whose `int`
//! counters wrap: they are read as unsigned 32-bit values, correct up to 4 GiB.

use crate::error::{Error, Result};
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
    /// How old these numbers are, seconds of the sampler's clock: 0 on the sample that read
    /// the allocator, more on the samples between two readings. The sampler reads the
    /// allocator on a cadence of its own (see [`crate::sample::Sampler`]), because refreshing
    /// jemalloc's statistics costs a few microseconds per arena in use.
    pub age_seconds: f64,
}

/// Reads [`AllocatorStats`] from the chosen backend.
#[derive(Debug)]
pub struct Allocator {
    status: AllocatorStatus,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    #[cfg(feature = "jemalloc")]
    Jemalloc(jemalloc::Mibs),
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    Glibc(glibc::Mallinfo),
    None,
}

/// The note when jemalloc is linked but the service did not make it its global allocator.
#[cfg(feature = "jemalloc")]
const NOT_GLOBAL: &str = "jemalloc is linked but is not the global allocator; set \
     `#[global_allocator] static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;` \
     to get jemalloc statistics";

impl Allocator {
    /// Detects the allocator according to `choice`.
    ///
    /// With [`AllocatorChoice::Auto`] and the `jemalloc` feature, this makes one probe
    /// allocation of 64 KiB through the global allocator (once per process) to find out
    /// whether jemalloc is the `#[global_allocator]`.
    pub fn new(choice: AllocatorChoice) -> Self {
        match choice {
            AllocatorChoice::None => Self::none(None),
            AllocatorChoice::Glibc => {
                #[cfg(feature = "jemalloc")]
                let note = jemalloc::is_global_allocator().then(|| {
                    "glibc malloc was chosen although jemalloc is the global allocator: only \
                     memory allocated with C's malloc (by C libraries) is counted"
                        .to_owned()
                });
                #[cfg(not(feature = "jemalloc"))]
                let note = None;
                Self::glibc(note)
            }
            AllocatorChoice::Auto => Self::auto(),
        }
    }

    #[cfg(feature = "jemalloc")]
    fn auto() -> Self {
        if !jemalloc::is_global_allocator() {
            return Self::glibc(Some(NOT_GLOBAL.to_owned()));
        }
        match jemalloc::Mibs::new() {
            Ok(mibs) => Self {
                status: AllocatorStatus {
                    kind: AllocatorKind::Jemalloc,
                    jemalloc_linked: true,
                    note: None,
                },
                backend: Backend::Jemalloc(mibs),
            },
            Err(e) => Self::none(Some(format!(
                "jemalloc is the global allocator but its statistics are unavailable: {e}"
            ))),
        }
    }

    #[cfg(not(feature = "jemalloc"))]
    fn auto() -> Self {
        Self::glibc(None)
    }

    /// The glibc backend; `note` explains why it was chosen. Falls back to none (with a
    /// note) where glibc's statistics are not available.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc(note: Option<String>) -> Self {
        let Some(mallinfo) = glibc::Mallinfo::resolve() else {
            return Self::none(Some(join_notes(
                note,
                "this glibc has neither mallinfo2 nor mallinfo; no allocator statistics",
            )));
        };
        let note = match mallinfo {
            glibc::Mallinfo::V2(_) if note.is_some() => {
                Some(join_notes(note, "reporting glibc malloc"))
            }
            glibc::Mallinfo::V2(_) => None,
            glibc::Mallinfo::V1(_) => Some(join_notes(
                note,
                "reporting glibc malloc through mallinfo (glibc < 2.33), \
                 whose counters wrap at 4 GiB",
            )),
        };
        Self {
            status: AllocatorStatus {
                kind: AllocatorKind::Glibc,
                jemalloc_linked: cfg!(feature = "jemalloc"),
                note,
            },
            backend: Backend::Glibc(mallinfo),
        }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn glibc(note: Option<String>) -> Self {
        Self::none(Some(join_notes(
            note,
            "glibc malloc statistics are only available on Linux with glibc; \
             no allocator statistics",
        )))
    }

    fn none(note: Option<String>) -> Self {
        Self {
            status: AllocatorStatus {
                kind: AllocatorKind::None,
                jemalloc_linked: cfg!(feature = "jemalloc"),
                note,
            },
            backend: Backend::None,
        }
    }

    /// What was detected.
    pub fn status(&self) -> &AllocatorStatus {
        &self.status
    }

    /// Asks the allocator to return free memory to the OS: jemalloc purges every arena's dirty
    /// and muzzy pages, glibc runs `malloc_trim(0)`.
    pub fn purge(&self) -> Result<()> {
        match &self.backend {
            #[cfg(feature = "jemalloc")]
            Backend::Jemalloc(_) => {
                // MALLCTL_ARENAS_ALL is 4096; purge takes neither input nor output.
                let name = c"arena.4096.purge";
                // SAFETY: a valid NUL-terminated mallctl name with null old/new pointers, as
                // this control requires.
                let rc = unsafe {
                    tikv_jemalloc_sys::mallctl(
                        name.as_ptr(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        0,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(Error::Allocator(format!(
                        "jemalloc arena purge failed (error {rc})"
                    )))
                }
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            Backend::Glibc(_) => {
                // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
                unsafe { libc::malloc_trim(0) };
                Ok(())
            }
            Backend::None => Err(Error::Allocator(
                "no allocator statistics backend: nothing to purge".into(),
            )),
        }
    }

    /// Takes one reading (jemalloc: advances the `epoch` once, then reads the stats).
    /// `Ok(None)` for [`AllocatorKind::None`].
    pub fn read(&mut self) -> Result<Option<AllocatorStats>> {
        match &self.backend {
            #[cfg(feature = "jemalloc")]
            Backend::Jemalloc(mibs) => mibs.read().map(Some),
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            Backend::Glibc(mallinfo) => Ok(Some(mallinfo.read())),
            Backend::None => Ok(None),
        }
    }
}

/// Whether jemalloc is this process's `#[global_allocator]` (always `false` without the
/// `jemalloc` feature).
///
/// The first call makes one probe allocation of 64 KiB through the global allocator and
/// checks that jemalloc's per-thread allocation counter saw it; the answer is cached for
/// the life of the process.
pub fn jemalloc_is_global_allocator() -> bool {
    #[cfg(feature = "jemalloc")]
    {
        jemalloc::is_global_allocator()
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        false
    }
}

fn join_notes(first: Option<String>, second: &str) -> String {
    match first {
        Some(first) => format!("{first}; {second}"),
        None => second.to_owned(),
    }
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    use super::{AllocatorStats, Error, Result};
    use once_cell::sync::Lazy;
    use std::fmt;
    use tikv_jemalloc_ctl::{epoch, epoch_mib, stats, thread};

    /// Size of the probe allocation that tells whether jemalloc is the global allocator.
    const PROBE_BYTES: usize = 64 * 1024;

    static IS_GLOBAL: Lazy<bool> = Lazy::new(probe_global);

    pub(super) fn is_global_allocator() -> bool {
        *IS_GLOBAL
    }

    /// Allocates through the global allocator and checks that jemalloc's counter of bytes
    /// allocated by this thread grew by at least that much.
    fn probe_global() -> bool {
        let Ok(counter) = thread::allocatedp::mib().and_then(|mib| mib.read()) else {
            return false;
        };
        let before = counter.get();
        let probe: Vec<u8> = std::hint::black_box(Vec::with_capacity(PROBE_BYTES));
        let after = counter.get();
        drop(std::hint::black_box(probe));
        after.wrapping_sub(before) >= PROBE_BYTES as u64
    }

    /// The MIBs (pre-resolved names) of the statistics, so a reading does no string lookups.
    pub(super) struct Mibs {
        epoch: epoch_mib,
        allocated: stats::allocated_mib,
        active: stats::active_mib,
        resident: stats::resident_mib,
        mapped: stats::mapped_mib,
        retained: stats::retained_mib,
        metadata: stats::metadata_mib,
    }

    impl fmt::Debug for Mibs {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JemallocMibs").finish_non_exhaustive()
        }
    }

    impl Mibs {
        pub(super) fn new() -> Result<Self, tikv_jemalloc_ctl::Error> {
            Ok(Self {
                epoch: epoch::mib()?,
                allocated: stats::allocated::mib()?,
                active: stats::active::mib()?,
                resident: stats::resident::mib()?,
                mapped: stats::mapped::mib()?,
                retained: stats::retained::mib()?,
                metadata: stats::metadata::mib()?,
            })
        }

        /// Advances the epoch (which refreshes jemalloc's cached statistics) and reads them.
        pub(super) fn read(&self) -> Result<AllocatorStats> {
            let err = |what: &str, e: tikv_jemalloc_ctl::Error| {
                Error::Allocator(format!("jemalloc {what}: {e}"))
            };
            self.epoch.advance().map_err(|e| err("epoch", e))?;
            let bytes = |v: usize| v as u64;
            Ok(AllocatorStats {
                allocated: bytes(
                    self.allocated
                        .read()
                        .map_err(|e| err("stats.allocated", e))?,
                ),
                active: Some(bytes(
                    self.active.read().map_err(|e| err("stats.active", e))?,
                )),
                resident: Some(bytes(
                    self.resident.read().map_err(|e| err("stats.resident", e))?,
                )),
                mapped: Some(bytes(
                    self.mapped.read().map_err(|e| err("stats.mapped", e))?,
                )),
                retained: Some(bytes(
                    self.retained.read().map_err(|e| err("stats.retained", e))?,
                )),
                metadata: Some(bytes(
                    self.metadata.read().map_err(|e| err("stats.metadata", e))?,
                )),
                free: None,
                age_seconds: 0.0,
            })
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use super::AllocatorStats;
    use once_cell::sync::Lazy;

    type Mallinfo2Fn = unsafe extern "C" fn() -> libc::mallinfo2;
    type MallinfoFn = unsafe extern "C" fn() -> libc::mallinfo;

    /// glibc's statistics function, found at run time.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Mallinfo {
        /// `mallinfo2` (glibc ≥ 2.33), `size_t` counters.
        V2(Mallinfo2Fn),
        /// `mallinfo`, `int` counters that wrap.
        V1(MallinfoFn),
    }

    static RESOLVED: Lazy<Option<Mallinfo>> = Lazy::new(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
        let v2 = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        if !v2.is_null() {
            // SAFETY: glibc's `mallinfo2` has the C signature `struct mallinfo2 mallinfo2(void)`,
            // and libc::mallinfo2 is that struct (#[repr(C)], ten size_t fields).
            let f = unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2Fn>(v2) };
            return Some(Mallinfo::V2(f));
        }
        // SAFETY: as above.
        let v1 = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo".as_ptr()) };
        if !v1.is_null() {
            // SAFETY: glibc's `mallinfo` has the C signature `struct mallinfo mallinfo(void)`,
            // and libc::mallinfo is that struct (#[repr(C)], ten int fields).
            let f = unsafe { std::mem::transmute::<*mut libc::c_void, MallinfoFn>(v1) };
            return Some(Mallinfo::V1(f));
        }
        None
    });

    impl Mallinfo {
        pub(super) fn resolve() -> Option<Self> {
            *RESOLVED
        }

        pub(super) fn read(self) -> AllocatorStats {
            let (arena, hblkhd, uordblks, fordblks) = match self {
                Mallinfo::V2(f) => {
                    // SAFETY: `f` is glibc's mallinfo2, which takes no arguments and only
                    // locks and reads the malloc arenas.
                    let mi = unsafe { f() };
                    let b = |v: libc::size_t| v as u64;
                    (b(mi.arena), b(mi.hblkhd), b(mi.uordblks), b(mi.fordblks))
                }
                Mallinfo::V1(f) => {
                    // SAFETY: `f` is glibc's mallinfo, which takes no arguments and only
                    // locks and reads the malloc arenas.
                    let mi = unsafe { f() };
                    // The int counters wrap above 2 GiB; as u32 they are right up to 4 GiB.
                    let b = |v: libc::c_int| u64::from(v as u32);
                    (b(mi.arena), b(mi.hblkhd), b(mi.uordblks), b(mi.fordblks))
                }
            };
            AllocatorStats {
                allocated: uordblks + hblkhd,
                mapped: Some(arena + hblkhd),
                free: Some(fordblks),
                ..AllocatorStats::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_can_move_to_the_sampler_thread() {
        fn is_send<T: Send>() {}
        is_send::<Allocator>();
        is_send::<crate::process::ProcReader>();
        is_send::<crate::cgroup::CgroupReader>();
    }

    #[test]
    fn none_choice_reads_nothing() {
        let mut allocator = Allocator::new(AllocatorChoice::None);
        assert_eq!(allocator.status().kind, AllocatorKind::None);
        assert!(matches!(allocator.read(), Ok(None)));
    }

    /// The lib's test binary runs on the system allocator while jemalloc is linked.
    #[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
    #[test]
    fn auto_reports_glibc_when_jemalloc_is_linked_but_not_global() {
        assert!(!jemalloc_is_global_allocator());
        let mut allocator = Allocator::new(AllocatorChoice::Auto);
        let status = allocator.status();
        assert_eq!(status.kind, AllocatorKind::Glibc);
        assert!(status.jemalloc_linked);
        let note = status.note.as_deref().unwrap_or_default();
        assert!(note.contains("not the global allocator"), "{note}");
        assert!(note.contains("#[global_allocator]"), "{note}");
        assert!(note.contains("reporting glibc malloc"), "{note}");
        let stats = allocator.read().ok().flatten();
        assert!(stats.is_some_and(|s| s.allocated > 0 && s.free.is_some()));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_choice_reads_mallinfo() {
        let mut allocator = Allocator::new(AllocatorChoice::Glibc);
        assert_eq!(allocator.status().kind, AllocatorKind::Glibc);
        let stats = allocator.read().ok().flatten();
        assert!(stats.is_some_and(|s| s.allocated > 0 && s.mapped.is_some()));
    }
}
