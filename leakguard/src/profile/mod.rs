//! Heap profiles: where the live bytes were allocated (feature `profiling`).
//!
//! The runbooks' second and third steps — take a heap snapshot, compare snapshots over time,
//! find the retained allocations — done in the process, with nothing attached to it.
//! jemalloc samples allocations (one every 512 KiB allocated, on average, by default) and
//! remembers the call stack of each sampled one while it lives. leakguard then:
//!
//! - serves the live heap as gzipped pprof protobuf at `GET /debug/pprof/heap`, which
//!   `go tool pprof` and the pprof web UI read, with function names already resolved in the
//!   process (nothing else needs the binary);
//! - takes a *baseline* profile when the leak detector's warm-up ends, and when a leak is
//!   suspected diffs the live heap against it: the report's leak section lists the top growing
//!   allocation sites ([`HeapGrowth`]), and `GET /debug/pprof/heap?base=baseline` serves the
//!   diff;
//! - before a graceful restart, and on `POST /debug/leakguard/dump`, writes the profile and
//!   the report to `LEAKGUARD_DUMP_DIR` for the post-mortem ([`dump`]).
//!
//! # Switching it on
//!
//! 1. Build with the `profiling` feature (it builds jemalloc with its profiler, inactive until
//!    it is switched on) and make jemalloc the global allocator:
//!    `#[global_allocator] static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;`
//! 2. Switch the profiler on at start, either in the environment (tikv-jemallocator's
//!    jemalloc reads `_RJEM_MALLOC_CONF`, not `MALLOC_CONF`):
//!    `_RJEM_MALLOC_CONF=prof:true,lg_prof_sample:21` ([`RECOMMENDED_CONF`]; `lg_prof_sample`
//!    is the log2 of the mean bytes between samples: 21 = 2 MiB, while jemalloc's default, 19 =
//!    512 KiB, costs more, see [`RECOMMENDED_CONF`]), or in the binary with
//!    [`enable_heap_profiling!`](crate::enable_heap_profiling), which the environment can
//!    still override. jemalloc reads its configuration once, before `main`: it cannot be
//!    switched on later.
//!
//! Without the feature, or with the profiler off, the endpoint answers 404 or 409 with a body
//! that says which of these steps is missing ([`ProfilingStatus::how_to_enable`]).
//!
//! # Where the dump goes
//!
//! jemalloc writes a profile to a file name. leakguard hands it an anonymous in-memory file
//! (`memfd_create`, named through `/proc/self/fd/N`): no writable directory is needed, nothing
//! is left behind. Only where `memfd_create` is unavailable does it fall back to a file in
//! [`std::env::temp_dir`] (`$TMPDIR`, else `/tmp`), removed at once after reading.
//!
//! # Bounds and cost
//!
//! - a profile keeps at most [`MAX_STACKS`] stacks (the largest; how many were left out is
//!   said in the profile's comments) of at most [`MAX_DEPTH`] frames; jemalloc's text is
//!   parsed as it is read, holding at most [`MAX_STACKS_WHILE_PARSING`] stacks; a dump larger
//!   than [`MAX_DUMP_BYTES`] is refused;
//! - a pre-restart dump symbolizes the profile only from the symbol cache (addresses earlier
//!   profiles resolved), else writes it unsymbolized, so that it needs at most
//!   [`DUMP_NEEDS`];
//! - symbols are resolved in the process with the `backtrace` crate's DWARF reader, cached for
//!   at most [`MAX_SYMBOLS`] addresses; the first profile pays for reading the binary's debug
//!   information (see `BENCHMARKS.md`);
//! - the baseline is one parsed profile (addresses and two numbers per stack); the report
//!   keeps at most [`MAX_SITES`] sites.
//!
//! # What a site is
//!
//! The frames of the allocator itself (jemalloc, the `GlobalAlloc` shims, `alloc::alloc`) are
//! left out of every stack, as `jeprof` does. Then a leading run of frames of Rust's generic
//! data structures (`alloc`, `core`, `std`, `hashbrown`: `RawVec`, `Vec::push`,
//! `Iterator::collect`, `HashMap::insert`) is left out too when a frame of other code follows,
//! so the leaf of each served stack — what `go tool pprof -top` lists first — and the report's
//! site are the function that asked for the memory.

mod dump;
#[cfg(feature = "profiling")]
mod jemalloc;
#[cfg(feature = "profiling")]
mod pprof;
mod symbols;

pub use self::dump::{DUMPS_KEPT, DumpOutcome, MAX_PROFILE_BYTES, MAX_REPORT_BYTES, write_dump};
pub(crate) use self::dump::{ProfileBody, write_dump_noting};
pub use self::symbols::MAX_SYMBOLS;

use crate::endpoint::{EndpointRequest, EndpointResponse};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Most stacks a profile keeps (the largest by bytes).
pub const MAX_STACKS: usize = 4096;
/// Most frames kept per stack (from the leaf).
pub const MAX_DEPTH: usize = 64;
/// Most allocation sites the report lists.
pub const MAX_SITES: usize = 10;
/// Largest jemalloc dump leakguard reads, bytes. It is read as it is parsed, never whole.
pub const MAX_DUMP_BYTES: u64 = 64 << 20;
/// Longest line of a jemalloc dump leakguard reads, bytes (a stack's line of 128 addresses,
/// jemalloc's deepest, is about 2 KiB).
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// Most stacks held while a dump is parsed: when there are this many, the smaller half is
/// left out (and counted), so parsing needs at most this many stacks of [`MAX_DEPTH`] frames
/// in memory whatever the dump's length.
pub const MAX_STACKS_WHILE_PARSING: usize = 2 * MAX_STACKS;

/// What the heap profile of a pre-restart dump may need in memory, bytes: with less headroom
/// to the limit, the dump writes the report only. Derived from the bounds of its steps:
///
/// - parsing jemalloc's text as it is read: at most [`MAX_STACKS_WHILE_PARSING`] (8192)
///   stacks of at most [`MAX_DEPTH`] (64) addresses, 4 MiB, their index and the sort that
///   prunes them (about 1 MiB), a 64 KiB read buffer and one line of at most
///   [`MAX_LINE_BYTES`]: 6 MiB;
/// - then either, when every address was resolved by an earlier profile, symbolizing from the
///   symbol cache, at most [`MAX_SYMBOLS`] addresses at under 1 KiB each (the location, its
///   lines, the names in the string table, the encoded profile): 16 MiB;
/// - or, unsymbolized, encoding as it is written: the mappings (at most 256), an index of at
///   most 32768 addresses, one sample and the compressor's state: under 3 MiB. Nothing is
///   resolved: the first resolution reads the binary's symbols and debug information (57.6 MB
///   in a debug test binary), and each new address the debug information of its compilation
///   unit (symbolizing 16384 new addresses spread over a 9 MiB test binary needed 50 MB).
///
/// 6 + max(16, 3) = 22 MiB, rounded to 24 MiB. Measured with jemalloc's per-thread peak in a
/// debug build: parsing 48 MB of text, 5.1 MB; taking and encoding unsymbolized a profile of
/// 16384 distinct stacks cut to 4096, 4.5 MB; symbolizing 12288 addresses naming 4676
/// functions from the cache, 7.3 MB.
pub const DUMP_NEEDS: u64 = 24 << 20;

/// Why a near-the-limit dump's profile is not symbolized.
#[cfg(feature = "profiling")]
const UNSYMBOLIZED: &str = "some of its addresses were not resolved by an earlier profile in \
     this process, and resolving them near the memory limit reads the binary's debug \
     information, which could cause the OOM kill the restart is meant to prevent";

/// `Content-Type` of a served profile.
pub const PPROF_CONTENT_TYPE: &str = "application/octet-stream";

/// Whether heap profiles can be taken, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProfilingStatus {
    /// leakguard was built without the `profiling` feature.
    NotBuilt,
    /// jemalloc is not the process's global allocator.
    NotGlobalAllocator,
    /// jemalloc's profiler was not switched on at start (`prof:true`).
    Off,
    /// The profiler is on but inactive (`prof_active:false`): no allocation is sampled.
    Inactive,
    /// Allocations are sampled: one every `sample_period` bytes on average.
    Active {
        /// Mean bytes between samples (`2^lg_prof_sample`).
        sample_period: u64,
    },
}

/// The jemalloc configuration leakguard recommends for heap profiling, and the one
/// [`enable_heap_profiling!`](crate::enable_heap_profiling) sets by default: the profiler on,
/// one sample per 2 MiB allocated on average (`lg_prof_sample:21`, TCMalloc's default
/// sampling interval). jemalloc's own default, 512 KiB (`lg_prof_sample:19`), samples four
/// times as often: each sample walks the allocating stack, and on the overhead bench's axum
/// service that cost 2.5–3.5% of its throughput against ~1% at 2 MiB (BENCHMARKS.md). A leak
/// worth a restart grows by many megabytes, which 2 MiB sampling sees.
pub const RECOMMENDED_CONF: &str = "prof:true,lg_prof_sample:21";

/// How to switch profiling on, said once for every message.
const SWITCH_ON: &str = "start the process with _RJEM_MALLOC_CONF=prof:true,lg_prof_sample:21 \
     in its environment (tikv-jemallocator's jemalloc reads _RJEM_MALLOC_CONF, not \
     MALLOC_CONF), or put `leakguard::enable_heap_profiling!();` in the service's binary";

impl ProfilingStatus {
    /// Whether profiles can be taken.
    pub fn is_active(&self) -> bool {
        matches!(self, ProfilingStatus::Active { .. })
    }

    /// What to do to switch profiling on, or `None` when it is on.
    pub fn how_to_enable(&self) -> Option<String> {
        match self {
            ProfilingStatus::NotBuilt => Some(format!(
                "heap profiles are not in this build: build leakguard with its `profiling` \
                 feature (features = [\"profiling\"] in Cargo.toml), make jemalloc the global \
                 allocator (`#[global_allocator] static ALLOC: leakguard::Jemalloc = \
                 leakguard::Jemalloc;`) and {SWITCH_ON}"
            )),
            ProfilingStatus::NotGlobalAllocator => Some(format!(
                "heap profiling needs jemalloc as the global allocator: add \
                 `#[global_allocator] static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;` \
                 to the service's binary and {SWITCH_ON}"
            )),
            ProfilingStatus::Off => Some(format!(
                "heap profiling is off: {SWITCH_ON}. jemalloc reads this once at start; \
                 restart the process with it"
            )),
            ProfilingStatus::Inactive => Some(
                "heap profiling is on but inactive (prof_active:false): start the process with \
                 _RJEM_MALLOC_CONF=prof:true,prof_active:true"
                    .to_owned(),
            ),
            ProfilingStatus::Active { .. } => None,
        }
    }

    /// The HTTP status for a profile request in this state: 404 without the feature, 409 when
    /// it is there but switched off, 200 when active.
    pub fn http_status(&self) -> u16 {
        match self {
            ProfilingStatus::NotBuilt => 404,
            ProfilingStatus::Active { .. } => 200,
            _ => 409,
        }
    }
}

/// Whether heap profiles can be taken in this process now.
pub fn status() -> ProfilingStatus {
    #[cfg(feature = "profiling")]
    {
        jemalloc::status()
    }
    #[cfg(not(feature = "profiling"))]
    {
        ProfilingStatus::NotBuilt
    }
}

/// One stack of a heap profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Return addresses, leaf first, at most [`MAX_DEPTH`].
    pub addrs: Box<[usize]>,
    /// Estimated live bytes allocated through this stack (unbiased from the samples); in a
    /// diff, the change (may be negative).
    pub bytes: f64,
    /// Estimated live objects, likewise.
    pub objects: f64,
}

/// A heap profile as jemalloc wrote it, parsed but not symbolized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeapProfile {
    /// When it was taken, seconds since the Unix epoch.
    pub at: f64,
    /// Mean bytes between samples.
    pub sample_period: u64,
    /// The stacks, largest first.
    pub stacks: Vec<Stack>,
    /// Stacks left out beyond [`MAX_STACKS`].
    pub dropped_stacks: usize,
    /// For a diff: when the profile it was compared with was taken.
    pub base_at: Option<f64>,
}

fn perr(reason: impl Into<String>) -> Error {
    Error::Profile(reason.into())
}

/// Bytes and objects of one stack.
type Counts = (f64, f64);

/// The stacks of a dump being parsed: identical ones merged, at most
/// [`MAX_STACKS_WHILE_PARSING`] held. When full, the largest [`MAX_STACKS`] are kept and the
/// others counted as left out: a stack among the largest [`MAX_STACKS`] of the whole dump is
/// never among those (it is among the largest of any part of the dump).
#[derive(Default)]
struct BoundedStacks {
    by_addrs: HashMap<Box<[usize]>, Counts>,
    dropped: usize,
}

impl BoundedStacks {
    fn add(&mut self, addrs: Box<[usize]>, bytes: f64, objects: f64) {
        if !self.by_addrs.contains_key(&addrs) && self.by_addrs.len() >= MAX_STACKS_WHILE_PARSING {
            self.prune(MAX_STACKS);
        }
        let e = self.by_addrs.entry(addrs).or_default();
        e.0 += bytes;
        e.1 += objects;
    }

    /// The held stacks, largest first (ties: by address, so the order does not depend on
    /// the hash), at most `keep`.
    fn sorted(&mut self, keep: usize) -> Vec<(Box<[usize]>, Counts)> {
        let mut all: Vec<_> = self.by_addrs.drain().collect();
        all.sort_unstable_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        if all.len() > keep {
            self.dropped += all.len() - keep;
            all.truncate(keep);
        }
        all
    }

    fn prune(&mut self, keep: usize) {
        let kept = self.sorted(keep);
        self.by_addrs.extend(kept);
    }

    /// The largest `keep` stacks, largest first, and how many were left out.
    fn into_largest(mut self, keep: usize) -> (Vec<Stack>, usize) {
        let stacks = self
            .sorted(keep)
            .into_iter()
            .map(|(addrs, (bytes, objects))| Stack {
                addrs,
                bytes,
                objects,
            })
            .collect();
        (stacks, self.dropped)
    }
}

impl HeapProfile {
    /// Parses jemalloc's `heap_v2` text format (what `prof.dump` writes). Identical stacks
    /// (after cutting them at [`MAX_DEPTH`]) are merged; only the [`MAX_STACKS`] largest are
    /// kept. The same as [`HeapProfile::read_jeheap`] over the text.
    ///
    /// ```
    /// let text = "heap_v2/524288\n  t*: 3: 3145728 [0: 0]\n\
    ///             @ 0x10 0x20 0x30\n  t*: 2: 2097152 [0: 0]\n  t0: 2: 2097152 [0: 0]\n\
    ///             @ 0x11 0x20\n  t*: 1: 1048576 [0: 0]\n\n\
    ///             MAPPED_LIBRARIES:\n00400000-00452000 r-xp 00000000 08:02 1 /bin/x\n";
    /// let p = leakguard::profile::HeapProfile::parse_jeheap(text, 0.0)?;
    /// assert_eq!(p.sample_period, 524288);
    /// assert_eq!(p.stacks.len(), 2);
    /// assert_eq!(&*p.stacks[0].addrs, &[0x10, 0x20, 0x30]);
    /// // Two sampled objects of 1 MiB at a 512 KiB period: each stands for ~1.16 MiB.
    /// assert!((p.stacks[0].bytes - 2097152.0 / (1.0 - (-2.0f64).exp())).abs() < 1.0);
    /// # Ok::<(), leakguard::Error>(())
    /// ```
    pub fn parse_jeheap(text: &str, at: f64) -> Result<HeapProfile> {
        Self::read_jeheap(text.as_bytes(), at)
    }

    /// Parses jemalloc's `heap_v2` text as it is read, line by line, in bounded memory
    /// whatever the text's length: a line longer than [`MAX_LINE_BYTES`] is an error, at most
    /// [`MAX_STACKS_WHILE_PARSING`] stacks are held while parsing (when there are that many,
    /// the smaller half is left out and counted in `dropped_stacks`), and reading stops at
    /// the `MAPPED_LIBRARIES:` section. At most [`MAX_STACKS`] stacks are kept, the largest.
    pub fn read_jeheap(mut reader: impl std::io::BufRead, at: f64) -> Result<HeapProfile> {
        use std::io::BufRead as _;
        let mut buf = Vec::new();
        let mut next_line = |buf: &mut Vec<u8>| -> Result<bool> {
            buf.clear();
            let n = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', buf)
                .map_err(|e| perr(format!("cannot read the heap dump: {e}")))?;
            if buf.len() > MAX_LINE_BYTES {
                return Err(perr(format!(
                    "a line of the heap dump is longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            Ok(n > 0)
        };
        let text = |buf: &[u8]| -> Result<String> {
            std::str::from_utf8(buf)
                .map(|s| s.trim().to_owned())
                .map_err(|_| perr("the heap dump is not text"))
        };
        if !next_line(&mut buf)? {
            return Err(perr("the heap dump is empty"));
        }
        let header = text(&buf)?;
        let period: u64 = header
            .strip_prefix("heap_v2/")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| perr(format!("not a jemalloc heap_v2 dump: {header:?}")))?;
        let rate = period as f64;
        let mut kept = BoundedStacks::default();
        let mut current: Option<Box<[usize]>> = None;
        while next_line(&mut buf)? {
            let line = std::str::from_utf8(&buf)
                .map_err(|_| perr("the heap dump is not text"))?
                .trim();
            if line.starts_with("MAPPED_LIBRARIES") {
                break;
            }
            if let Some(rest) = line.strip_prefix('@') {
                let addrs: Vec<usize> = rest
                    .split_ascii_whitespace()
                    .take(MAX_DEPTH)
                    .map(|w| usize::from_str_radix(w.trim_start_matches("0x"), 16))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| perr(format!("bad address in {line:?}: {e}")))?;
                current = Some(addrs.into_boxed_slice());
                continue;
            }
            let Some(rest) = line.strip_prefix("t*:") else {
                continue;
            };
            // The first `t*:` (before any `@`) is the total; a stack's own follows its `@`.
            let Some(addrs) = current.take() else {
                continue;
            };
            let mut words = rest.split(|c: char| c == ':' || c.is_ascii_whitespace());
            let mut next_number = || -> Result<f64> {
                words
                    .by_ref()
                    .find(|w| !w.is_empty())
                    .and_then(|w| w.parse::<f64>().ok())
                    .ok_or_else(|| perr(format!("bad counts in {line:?}")))
            };
            let n = next_number()?;
            let bytes = next_number()?;
            if n <= 0.0 || bytes <= 0.0 {
                continue;
            }
            // jeprof's unbiasing: a sampled object of size s stands for 1/(1-e^(-s/period))
            // objects of that size.
            let scale = 1.0 / (1.0 - (-(bytes / n) / rate).exp());
            kept.add(addrs, bytes * scale, n * scale);
        }
        let (stacks, dropped_stacks) = kept.into_largest(MAX_STACKS);
        Ok(HeapProfile {
            at,
            sample_period: period,
            stacks,
            dropped_stacks,
            base_at: None,
        })
    }

    /// Sorts the stacks, largest change first, and keeps at most [`MAX_STACKS`].
    fn bound(&mut self) {
        self.stacks
            .sort_by(|a, b| b.bytes.abs().total_cmp(&a.bytes.abs()));
        if self.stacks.len() > MAX_STACKS {
            self.dropped_stacks += self.stacks.len() - MAX_STACKS;
            self.stacks.truncate(MAX_STACKS);
            self.stacks.shrink_to_fit();
        }
    }

    /// Estimated live bytes in all kept stacks (in a diff: the net change).
    pub fn total_bytes(&self) -> f64 {
        self.stacks.iter().map(|s| s.bytes).sum()
    }

    /// This profile minus `base`, stack by stack: what grew (positive) and what shrank
    /// (negative) since `base` was taken. Stacks that did not change are left out.
    pub fn diff(&self, base: &HeapProfile) -> HeapProfile {
        let mut by_stack: HashMap<&[usize], (f64, f64)> = HashMap::new();
        for s in &self.stacks {
            let e = by_stack.entry(&s.addrs).or_default();
            e.0 += s.bytes;
            e.1 += s.objects;
        }
        for s in &base.stacks {
            let e = by_stack.entry(&s.addrs).or_default();
            e.0 -= s.bytes;
            e.1 -= s.objects;
        }
        let mut diff = HeapProfile {
            at: self.at,
            sample_period: self.sample_period,
            stacks: by_stack
                .into_iter()
                .filter(|(_, (bytes, _))| bytes.abs() >= 1.0)
                .map(|(addrs, (bytes, objects))| Stack {
                    addrs: addrs.into(),
                    bytes,
                    objects,
                })
                .collect(),
            dropped_stacks: self.dropped_stacks + base.dropped_stacks,
            base_at: Some(base.at),
        };
        diff.bound();
        diff
    }

    /// The functions through which the most bytes were allocated (in a diff: which grew the
    /// most), at most `n`, symbolized in the process. `share` is each site's part of the
    /// bytes of all sites that grew.
    pub fn top_sites(&self, n: usize) -> Vec<AllocationSite> {
        /// Bytes, file and line of one site.
        type Site = (i64, Option<Arc<str>>, u32);
        let mut by_site: HashMap<Arc<str>, Site> = HashMap::new();
        for stack in self.stacks.iter().filter(|s| s.bytes >= 1.0) {
            let Some(site) = site_of(&stack.addrs) else {
                continue;
            };
            let e = by_site.entry(Arc::clone(&site.function)).or_insert((
                0,
                site.file.clone(),
                site.line,
            ));
            e.0 += stack.bytes.round() as i64;
        }
        let grown: i64 = by_site.values().map(|(b, _, _)| *b).sum();
        let mut sites: Vec<AllocationSite> = by_site
            .into_iter()
            .map(|(function, (bytes, file, line))| AllocationSite {
                function: function.to_string(),
                file: file.map(|f| f.to_string()),
                line: (line > 0).then_some(line),
                bytes,
                share: if grown > 0 {
                    bytes as f64 / grown as f64
                } else {
                    0.0
                },
            })
            .collect();
        sites.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.function.cmp(&b.function))
        });
        sites.truncate(n);
        sites
    }

    /// The profile as gzipped pprof protobuf (what `GET /debug/pprof/heap` serves), stacks
    /// symbolized in the process, the allocator's frames left out.
    #[cfg(feature = "profiling")]
    #[cfg_attr(docsrs, doc(cfg(feature = "profiling")))]
    pub fn to_pprof(&self) -> Vec<u8> {
        pprof::encode(self)
    }

    /// The profile as gzipped pprof protobuf without symbols: each location is an address in
    /// one of the process's executable mappings (the executable's first), marked as not
    /// symbolized, for `go tool pprof <binary> <file>` to symbolize; the allocator's own
    /// frames stay in the stacks. Nothing is resolved in the process: what a pre-restart dump
    /// writes when not every address was resolved by an earlier profile (see
    /// [`HeapProfile::to_pprof_near_limit`] and [`DUMP_NEEDS`]).
    #[cfg(feature = "profiling")]
    #[cfg_attr(docsrs, doc(cfg(feature = "profiling")))]
    pub fn to_pprof_unsymbolized(&self) -> Vec<u8> {
        pprof::encode_addresses(self, UNSYMBOLIZED)
    }

    /// What a pre-restart dump writes of this profile, and why it is not symbolized if it
    /// is not: symbolized when every address was already resolved by an earlier profile in
    /// this process (the baseline, the growth the leak detector computes, a served profile),
    /// taken from the symbol cache without reading any symbols; else unsymbolized
    /// ([`HeapProfile::to_pprof_unsymbolized`]). Resolving new addresses reads the binary's
    /// symbols and the debug information of their compilation units, which near the memory
    /// limit could cause the OOM kill the restart is meant to prevent (see [`DUMP_NEEDS`]).
    #[cfg(feature = "profiling")]
    #[cfg_attr(docsrs, doc(cfg(feature = "profiling")))]
    pub fn to_pprof_near_limit(&self) -> (Vec<u8>, Option<String>) {
        let (body, why) = self.dump_body();
        let bytes = match body {
            ProfileBody::Encoded(bytes) => bytes,
            ProfileBody::Streamed(write) => {
                let mut out = Vec::new();
                // Writing into a Vec cannot fail.
                let _ = write(&mut out);
                out
            }
        };
        (bytes, why)
    }

    /// [`HeapProfile::to_pprof_near_limit`] for a dump file: the unsymbolized profile is
    /// written as it is encoded.
    #[cfg(feature = "profiling")]
    pub(crate) fn dump_body(&self) -> (ProfileBody<'_>, Option<String>) {
        let addrs = self.stacks.iter().flat_map(|s| s.addrs.iter().copied());
        if let Some(frames) = symbols::cached_frames(addrs) {
            let resolve = |a: usize| {
                frames
                    .get(&a)
                    .cloned()
                    .unwrap_or_else(|| symbols::unresolved(a))
            };
            return (
                ProfileBody::Encoded(pprof::encode_with(self, &resolve)),
                None,
            );
        }
        (
            ProfileBody::Streamed(Box::new(move |w| {
                pprof::write_addresses(self, UNSYMBOLIZED, w)
            })),
            Some(format!(
                "{UNSYMBOLIZED}; `go tool pprof <binary> <file>` symbolizes it"
            )),
        )
    }
}

/// The site of one stack: its first frame outside the allocator and Rust's generic
/// allocation machinery.
fn site_of(addrs: &[usize]) -> Option<symbols::Frame> {
    let resolved: Vec<Arc<[symbols::Frame]>> = addrs.iter().map(|a| symbols::resolve(*a)).collect();
    let (i, j) = symbols::site_start(&resolved)?;
    resolved.get(i).and_then(|f| f.get(j)).cloned()
}

/// One allocation site of the report's leak section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllocationSite {
    /// The function that allocated, e.g. `my_service::cache::Store::put`.
    pub function: String,
    /// Its source file, when the binary has debug information.
    pub file: Option<String>,
    /// The line of the allocating call, when known.
    pub line: Option<u32>,
    /// Estimated bytes allocated here and still live (in a diff: the growth).
    pub bytes: i64,
    /// Share of the growth of all growing sites, 0 to 1.
    pub share: f64,
}

/// Where the live heap grew since the baseline: the report's `leak.allocation_sites`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeapGrowth {
    /// When the baseline profile was taken (end of the warm-up), seconds since the epoch.
    pub since: f64,
    /// When the compared profile was taken, seconds since the epoch.
    pub at: f64,
    /// Net change of the sampled live heap between the two, estimated bytes.
    pub growth_bytes: i64,
    /// The top growing sites, largest first (at most [`MAX_SITES`]).
    pub sites: Vec<AllocationSite>,
}

impl HeapGrowth {
    /// The growth from `base` to `now`.
    pub fn between(base: &HeapProfile, now: &HeapProfile) -> HeapGrowth {
        let diff = now.diff(base);
        HeapGrowth {
            since: base.at,
            at: now.at,
            growth_bytes: diff.total_bytes().round() as i64,
            sites: diff.top_sites(MAX_SITES),
        }
    }
}

/// Takes a heap profile of this process now.
///
/// Fails with [`Error::Profile`] saying how to switch profiling on when it is off (see the
/// module documentation), or why the dump could not be read.
pub fn heap_profile(at: f64) -> Result<HeapProfile> {
    #[cfg(feature = "profiling")]
    {
        jemalloc::take(at)
    }
    #[cfg(not(feature = "profiling"))]
    {
        let _ = at;
        Err(perr(
            ProfilingStatus::NotBuilt
                .how_to_enable()
                .unwrap_or_default(),
        ))
    }
}

/// The profiles a guard keeps: the baseline and the last growth it computed.
#[derive(Debug, Default)]
pub(crate) struct Profiles {
    baseline: Mutex<Option<Arc<HeapProfile>>>,
    growth: Mutex<Option<HeapGrowth>>,
    /// Guard-clock time of the last growth computation.
    growth_at: Mutex<Option<f64>>,
}

/// While a leak is suspected, the growth is computed again at most this often, seconds.
const GROWTH_REFRESH_SECONDS: f64 = 60.0;

impl Profiles {
    /// Takes the baseline now, if profiling is active. Returns what to say, if anything.
    pub fn take_baseline(&self, at: f64) -> Option<String> {
        if !status().is_active() {
            return None;
        }
        match heap_profile(at) {
            Ok(p) => {
                let message = format!(
                    "heap profile baseline taken: {} stacks, {} sampled live",
                    p.stacks.len(),
                    crate::units::format_bytes(p.total_bytes().max(0.0) as u64)
                );
                *self.baseline.lock() = Some(Arc::new(p));
                Some(message)
            }
            Err(e) => Some(format!("heap profile baseline not taken: {e}")),
        }
    }

    /// The baseline, if taken.
    pub fn baseline(&self) -> Option<Arc<HeapProfile>> {
        self.baseline.lock().clone()
    }

    /// Computes the growth since the baseline (at most once per [`GROWTH_REFRESH_SECONDS`]
    /// unless `force`). Returns an error message when it failed.
    pub fn refresh_growth(&self, now_mono: f64, at: f64, force: bool) -> Option<String> {
        let base = self.baseline()?;
        {
            let mut last = self.growth_at.lock();
            if !force && last.is_some_and(|t| now_mono - t < GROWTH_REFRESH_SECONDS) {
                return None;
            }
            *last = Some(now_mono);
        }
        match heap_profile(at) {
            Ok(now) => {
                *self.growth.lock() = Some(HeapGrowth::between(&base, &now));
                None
            }
            Err(e) => Some(format!("heap growth since the baseline not computed: {e}")),
        }
    }

    /// The last growth computed.
    pub fn growth(&self) -> Option<HeapGrowth> {
        self.growth.lock().clone()
    }

    /// Forgets the growth (the leak is no longer suspected).
    pub fn clear_growth(&self) {
        *self.growth.lock() = None;
        *self.growth_at.lock() = None;
    }

    /// Answers `GET /debug/pprof/heap[?base=baseline]`.
    pub fn serve(
        &self,
        req: &EndpointRequest,
        now: f64,
        baseline_eta: Option<f64>,
    ) -> EndpointResponse {
        let mut diff = false;
        for pair in req.query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (key, value) {
                ("base", "baseline") => diff = true,
                ("base", other) => {
                    return pprof_error(EndpointResponse::error(
                        400,
                        &format!("unknown base {other:?}: the only base is `baseline`"),
                    ));
                }
                // go tool pprof may add `seconds` and the like; a heap profile has no duration.
                _ => {}
            }
        }
        let st = status();
        if let Some(how) = st.how_to_enable() {
            return pprof_error(EndpointResponse::error(st.http_status(), &how));
        }
        let base = if diff {
            match self.baseline() {
                Some(b) => Some(b),
                None => {
                    let when = match baseline_eta {
                        Some(s) if s > 0.0 => format!("in about {s:.0} s"),
                        _ => "at the next sample".to_owned(),
                    };
                    return pprof_error(EndpointResponse::error(
                        409,
                        &format!(
                            "no baseline yet: it is taken when the leak detector's warm-up \
                             ends ({when}); GET /debug/pprof/heap without `base` serves the \
                             live heap"
                        ),
                    ));
                }
            }
        } else {
            None
        };
        let profile = match heap_profile(now) {
            Ok(p) => p,
            Err(e) => return pprof_error(EndpointResponse::error(500, &e.to_string())),
        };
        let served = match &base {
            Some(b) => profile.diff(b),
            None => profile,
        };
        #[cfg(feature = "profiling")]
        {
            let mut r = EndpointResponse::new(200, PPROF_CONTENT_TYPE, served.to_pprof());
            r.headers.push((
                "Content-Disposition",
                "attachment; filename=\"heap.pb.gz\"".to_owned(),
            ));
            r
        }
        #[cfg(not(feature = "profiling"))]
        {
            let _ = served;
            pprof_error(EndpointResponse::error(
                404,
                "heap profiles are not in this build",
            ))
        }
    }
}

/// `go tool pprof` cannot send a bearer token, but Go's HTTP client sends the user info of a
/// URL as HTTP Basic credentials: `http://pprof:TOKEN@host:port/debug/pprof/heap`. For the
/// profile endpoint only, Basic credentials are read as the bearer token (the password is the
/// token; the user name is ignored). Any other request is returned unchanged.
pub(crate) fn basic_as_bearer(req: &EndpointRequest) -> std::borrow::Cow<'_, EndpointRequest> {
    let password = req
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b64| base64_decode(b64.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()));
    match password {
        Some(p) => {
            let mut r = req.clone();
            r.authorization = Some(format!("Bearer {p}"));
            std::borrow::Cow::Owned(r)
        }
        None => std::borrow::Cow::Borrowed(req),
    }
}

/// Standard base64 (with or without padding); `None` on anything else.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Turns an error answer into the form `go tool pprof` prints: plain text with the
/// `X-Go-Pprof` header (without it, pprof shows only the status line, not why).
pub fn pprof_error(mut r: EndpointResponse) -> EndpointResponse {
    if r.status < 400 {
        return r;
    }
    let message = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
    r.content_type = crate::endpoint::TEXT;
    r.body = format!("{message}\n").into_bytes();
    r.headers.push(("X-Go-Pprof", "1".to_owned()));
    r
}

/// A `malloc_conf` string for jemalloc, as [`enable_heap_profiling!`](crate::enable_heap_profiling)
/// exports it. Public only for the macro.
#[cfg(feature = "profiling")]
#[doc(hidden)]
#[repr(transparent)]
#[derive(Debug)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a `'static` string literal that is never written; jemalloc only
// reads it.
#[cfg(feature = "profiling")]
unsafe impl Sync for MallocConf {}

#[cfg(feature = "profiling")]
impl MallocConf {
    /// `conf` must end with a NUL byte (the macro adds it).
    pub const fn new(conf: &'static str) -> Self {
        let bytes = conf.as_bytes();
        assert!(
            !bytes.is_empty() && bytes[bytes.len() - 1] == 0,
            "malloc_conf must end with NUL"
        );
        MallocConf(bytes.as_ptr().cast())
    }
}

/// Switches jemalloc's heap profiler on from the service's binary, so no environment
/// variable is needed (feature `profiling`); without arguments with
/// [`RECOMMENDED_CONF`](crate::profile::RECOMMENDED_CONF)
/// (`prof:true,lg_prof_sample:21`, a sample per 2 MiB). Put it once at the top level of the binary
/// crate, next to the `#[global_allocator]`:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;
/// leakguard::enable_heap_profiling!();
/// // or with jemalloc options of your own:
/// // leakguard::enable_heap_profiling!("prof:true,lg_prof_sample:17");
/// ```
///
/// It defines jemalloc's `malloc_conf` symbol (tikv-jemalloc-sys names it
/// `_rjem_malloc_conf`; with its `unprefixed_malloc_on_supported_platforms` feature use the
/// environment instead). `_RJEM_MALLOC_CONF` in the environment is read after it and wins
/// option by option, so an operator can still turn it off with `_RJEM_MALLOC_CONF=prof:false`.
#[cfg(feature = "profiling")]
#[cfg_attr(docsrs, doc(cfg(feature = "profiling")))]
#[macro_export]
macro_rules! enable_heap_profiling {
    () => {
        $crate::enable_heap_profiling!("prof:true,lg_prof_sample:21");
    };
    ($conf:literal) => {
        const _: () = {
            #[unsafe(export_name = "_rjem_malloc_conf")]
            #[used]
            static LEAKGUARD_MALLOC_CONF: $crate::profile::MallocConf =
                $crate::profile::MallocConf::new(concat!($conf, "\0"));
        };
    };
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DUMP: &str = "heap_v2/524288
  t*: 6: 6291456 [0: 0]
  t0: 6: 6291456 [0: 0]
@ 0x10 0x20 0x30
  t*: 4: 4194304 [0: 0]
  t0: 4: 4194304 [0: 0]
@ 0x11 0x20 0x30
  t*: 2: 2097152 [0: 0]
@ 0x12 0x20
  t*: 0: 0 [0: 0]

MAPPED_LIBRARIES:
55d0c0a00000-55d0c0a52000 r-xp 00000000 08:02 1 /usr/bin/service
";

    #[test]
    fn a_jemalloc_dump_parses_into_unbiased_stacks_largest_first() {
        let p = HeapProfile::parse_jeheap(DUMP, 12.0).unwrap();
        assert_eq!(p.at, 12.0);
        assert_eq!(p.sample_period, 524288);
        assert_eq!(p.stacks.len(), 2, "the empty stack is left out");
        assert_eq!(&*p.stacks[0].addrs, &[0x10, 0x20, 0x30]);
        let scale = 1.0 / (1.0 - (-2.0f64).exp());
        assert!((p.stacks[0].bytes - 4194304.0 * scale).abs() < 1e-6);
        assert!((p.stacks[0].objects - 4.0 * scale).abs() < 1e-9);
        assert!((p.total_bytes() - 6291456.0 * scale).abs() < 1e-6);
    }

    #[test]
    fn bad_dumps_are_errors_not_panics() {
        for bad in [
            "",
            "heap_v3/1\n",
            "heap_v2/0\n",
            "heap_v2/524288\n@ 0xzz\n t*: 1: 1 [0: 0]\n",
            "heap_v2/524288\n@ 0x10\n t*: x: 1 [0: 0]\n",
        ] {
            let e = HeapProfile::parse_jeheap(bad, 0.0).unwrap_err();
            assert!(matches!(e, Error::Profile(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn stacks_deeper_than_the_bound_are_cut_and_merged() {
        let deep: Vec<String> = (0..MAX_DEPTH + 10)
            .map(|i| format!("0x{:x}", 0x1000 + i))
            .collect();
        let mut text = String::from("heap_v2/1024\n");
        for tail in ["0xaaaa", "0xbbbb"] {
            text.push_str(&format!(
                "@ {} {tail}\n  t*: 1: 2048 [0: 0]\n",
                deep.join(" ")
            ));
        }
        let p = HeapProfile::parse_jeheap(&text, 0.0).unwrap();
        assert_eq!(p.stacks.len(), 1);
        assert_eq!(p.stacks[0].addrs.len(), MAX_DEPTH);
    }

    #[test]
    fn at_most_max_stacks_are_kept_the_largest() {
        let mut text = String::from("heap_v2/1024\n");
        for i in 0..MAX_STACKS + 5 {
            text.push_str(&format!("@ 0x{:x}\n  t*: 1: {} [0: 0]\n", i + 1, 1024 + i));
        }
        let p = HeapProfile::parse_jeheap(&text, 0.0).unwrap();
        assert_eq!(p.stacks.len(), MAX_STACKS);
        assert_eq!(p.dropped_stacks, 5);
        assert!(p.stacks.iter().all(|s| s.addrs[0] > 5));
    }

    #[test]
    fn while_parsing_the_smaller_stacks_are_left_out_as_it_goes_and_counted() {
        // Three times what is held while parsing, the largest spread through the text.
        let n = 3 * MAX_STACKS_WHILE_PARSING + 1;
        let mut text = String::from("heap_v2/1024\n");
        for i in 0..n {
            let bytes = 1024 + (i * 7919) % n;
            text.push_str(&format!("@ 0x{:x}\n  t*: 1: {bytes} [0: 0]\n", i + 1));
        }
        let p = HeapProfile::parse_jeheap(&text, 0.0).unwrap();
        assert_eq!(p.stacks.len(), MAX_STACKS);
        assert_eq!(p.dropped_stacks, n - MAX_STACKS);
        let mut raw: Vec<usize> = p
            .stacks
            .iter()
            .map(|s| 1024 + ((s.addrs[0] - 1) * 7919) % n)
            .collect();
        assert!(raw.windows(2).all(|w| w[0] > w[1]), "largest first");
        raw.sort_unstable();
        assert_eq!(raw, (1024 + n - MAX_STACKS..1024 + n).collect::<Vec<_>>());
    }

    #[test]
    fn an_overlong_line_or_binary_text_is_an_error() {
        let long = format!("heap_v2/1024\n@ {}\n", "0x1 ".repeat(MAX_LINE_BYTES / 4));
        let e = HeapProfile::parse_jeheap(&long, 0.0).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let e = HeapProfile::read_jeheap(&b"heap_v2/1024\n@ 0x1\xff\n"[..], 0.0).unwrap_err();
        assert!(e.to_string().contains("not text"), "{e}");
        // Reading stops at the mappings: what follows is not read.
        let p = HeapProfile::read_jeheap(
            &b"heap_v2/1024\n@ 0x1\n t*: 1: 2048 [0: 0]\nMAPPED_LIBRARIES:\n\xff\xff"[..],
            0.0,
        )
        .unwrap();
        assert_eq!(p.stacks.len(), 1);
    }

    #[test]
    fn a_diff_keeps_what_grew_and_what_shrank() {
        let stack = |a: &[usize], bytes: f64| Stack {
            addrs: a.into(),
            bytes,
            objects: 1.0,
        };
        let base = HeapProfile {
            at: 100.0,
            sample_period: 1,
            stacks: vec![
                stack(&[1, 2], 1000.0),
                stack(&[3], 500.0),
                stack(&[4], 10.0),
            ],
            ..HeapProfile::default()
        };
        let now = HeapProfile {
            at: 200.0,
            sample_period: 1,
            stacks: vec![
                stack(&[1, 2], 5000.0),
                stack(&[4], 10.0),
                stack(&[5], 300.0),
            ],
            ..HeapProfile::default()
        };
        let d = now.diff(&base);
        assert_eq!(d.base_at, Some(100.0));
        let got: Vec<(Vec<usize>, f64)> = d
            .stacks
            .iter()
            .map(|s| (s.addrs.to_vec(), s.bytes))
            .collect();
        assert_eq!(
            got,
            vec![(vec![1, 2], 4000.0), (vec![3], -500.0), (vec![5], 300.0)]
        );
        assert_eq!(d.total_bytes(), 3800.0);
    }

    #[test]
    fn basic_credentials_are_read_as_the_bearer_token_for_pprof() {
        let mut req = EndpointRequest::new("GET", "/debug/pprof/heap");
        // "pprof:s3cret"
        req.authorization = Some("Basic cHByb2Y6czNjcmV0".into());
        assert_eq!(
            basic_as_bearer(&req).authorization.as_deref(),
            Some("Bearer s3cret")
        );
        req.authorization = Some("Basic !!!".into());
        assert_eq!(
            basic_as_bearer(&req).authorization.as_deref(),
            Some("Basic !!!")
        );
        req.authorization = Some("Bearer x".into());
        assert_eq!(
            basic_as_bearer(&req).authorization.as_deref(),
            Some("Bearer x")
        );
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    }

    #[test]
    fn without_profiling_the_answer_says_how_to_switch_it_on() {
        let profiles = Profiles::default();
        let r = profiles.serve(&EndpointRequest::new("GET", "/debug/pprof/heap"), 0.0, None);
        let st = status();
        if st.is_active() {
            return; // a test binary that switched profiling on; covered end to end
        }
        assert_eq!(r.status, st.http_status());
        assert!((400..500).contains(&r.status));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("_RJEM_MALLOC_CONF=prof:true"), "{body}");
        assert!(r.headers.iter().any(|(k, _)| *k == "X-Go-Pprof"));
        let bad = profiles.serve(
            &EndpointRequest::new("GET", "/debug/pprof/heap?base=yesterday"),
            0.0,
            None,
        );
        assert_eq!(bad.status, 400);
    }
}
