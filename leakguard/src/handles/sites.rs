//! Creation sites of sampled handles: raw return addresses captured on open, kept in a
//! bounded table while the handle is open, symbolized only when a report asks.
//!
//! # Bounds
//!
//! - at most [`TABLE_CAPACITY`] open sampled handles are recorded (24 bytes each); a sampled
//!   open that finds the table full is counted (`dropped`) and not recorded;
//! - their stacks are interned: at most [`SITE_CAPACITY`] distinct stacks of at most
//!   [`MAX_DEPTH`] frames; a handle whose stack finds no room is recorded without a site;
//! - both tables are allocated once, at their full size (about 280 KiB), on the first
//!   sampled open, so that recording a handle never allocates (which keeps
//!   [`testing`](crate::testing)'s per-thread heap measurement exact);
//! - symbolized frames are cached, at most [`SYMBOL_CACHE`] addresses, and one report
//!   symbolizes at most [`SYMBOLIZE_BUDGET`] new addresses (the rest show as hexadecimal).
//!   The `backtrace` crate additionally keeps the parsed debug information of up to four
//!   loaded objects.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

/// Open sampled handles recorded at most.
pub const TABLE_CAPACITY: usize = 4096;
/// Distinct creation stacks kept at most.
pub const SITE_CAPACITY: usize = 1024;
/// Deepest stack captured (frames, including leakguard's own two or three).
pub const MAX_DEPTH: usize = 16;
/// Frames captured by default.
pub const DEFAULT_DEPTH: usize = 12;
/// Symbolized addresses cached at most.
pub const SYMBOL_CACHE: usize = 4096;
/// New addresses symbolized by one report at most.
pub const SYMBOLIZE_BUDGET: usize = 1024;
/// Frames shown per site in a report.
pub const FRAMES_SHOWN: usize = 8;

/// A guard that has no table entry.
pub(crate) const NO_ENTRY: u32 = u32::MAX;
const NO_SITE: u32 = u32::MAX;

static DEPTH: AtomicUsize = AtomicUsize::new(DEFAULT_DEPTH);

pub(crate) fn set_depth(depth: usize) {
    DEPTH.store(depth.clamp(1, MAX_DEPTH), Ordering::Relaxed);
}

/// Frames a sampled open records (the capture depth).
pub(crate) fn depth() -> usize {
    DEPTH.load(Ordering::Relaxed).clamp(1, MAX_DEPTH)
}

/// Captures the calling stack's return addresses, unresolved; returns how many.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize; MAX_DEPTH]) -> usize {
    let depth = DEPTH.load(Ordering::Relaxed).clamp(1, MAX_DEPTH);
    let mut n = 0;
    let mut record = |frame: &backtrace::Frame| {
        if let Some(slot) = out.get_mut(n) {
            *slot = frame.ip() as usize;
            n += 1;
        }
        n < depth
    };
    // A section, so that no fork happens in the middle of the unwinder's own locks (libunwind
    // has some); in a child forked in the middle of one, no stack is recorded.
    #[cfg(unix)]
    crate::fork::backtrace_section(|| {
        // SAFETY: on unix targets the backtrace crate walks the stack with the system
        // unwinder's `_Unwind_Backtrace`, which is thread-safe and shares no state between
        // callers; the crate's global lock (which `trace` takes) is only needed on Windows,
        // where dbghelp is single-threaded. Our callback does not panic and does not unwind.
        unsafe { backtrace::trace_unsynchronized(&mut record) };
    });
    #[cfg(not(unix))]
    backtrace::trace(&mut record);
    n
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    live: bool,
    kind: u16,
    site: u32,
    weight: u32,
    tag: u32,
    born: u64,
}

struct Site {
    frames: [usize; MAX_DEPTH],
    len: u8,
    refs: u32,
    hash: u64,
}

struct Table {
    entries: Vec<Entry>,
    free: Vec<u32>,
    used: usize,
    sites: Vec<Site>,
    free_sites: Vec<u32>,
    by_hash: HashMap<u64, u32>,
    dropped: u64,
    sites_dropped: u64,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
    Mutex::new(Table {
        entries: Vec::with_capacity(TABLE_CAPACITY),
        free: Vec::with_capacity(TABLE_CAPACITY),
        used: 0,
        sites: Vec::with_capacity(SITE_CAPACITY),
        free_sites: Vec::with_capacity(SITE_CAPACITY),
        // Twice the capacity: hashbrown then always rehashes in place, never reallocates.
        by_hash: HashMap::with_capacity(2 * SITE_CAPACITY + 2),
        dropped: 0,
        sites_dropped: 0,
    })
});

fn hash_frames(frames: &[usize]) -> u64 {
    // FNV-1a over the addresses, finished with a multiply-xorshift.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &f in frames {
        h ^= f as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Table {
    /// The site of `frames`, interned; `NO_SITE` when the site table is full.
    fn intern(&mut self, frames: &[usize], hash: u64) -> u32 {
        if let Some(&i) = self.by_hash.get(&hash)
            && let Some(site) = self.sites.get_mut(i as usize)
            && site.frames[..usize::from(site.len)] == *frames
        {
            site.refs += 1;
            return i;
        }
        if self.by_hash.contains_key(&hash) {
            // Two stacks with one 64-bit hash: keep the first.
            self.sites_dropped += 1;
            return NO_SITE;
        }
        let mut site = Site {
            frames: [0; MAX_DEPTH],
            len: frames.len().min(MAX_DEPTH) as u8,
            refs: 1,
            hash,
        };
        site.frames[..usize::from(site.len)].copy_from_slice(&frames[..usize::from(site.len)]);
        let i = if let Some(i) = self.free_sites.pop() {
            self.sites[i as usize] = site;
            i
        } else if self.sites.len() < SITE_CAPACITY {
            self.sites.push(site);
            (self.sites.len() - 1) as u32
        } else {
            self.sites_dropped += 1;
            return NO_SITE;
        };
        self.by_hash.insert(hash, i);
        i
    }

    fn release_site(&mut self, i: u32) {
        let Some(site) = self.sites.get_mut(i as usize) else {
            return;
        };
        site.refs = site.refs.saturating_sub(1);
        if site.refs == 0 {
            let hash = site.hash;
            self.by_hash.remove(&hash);
            self.free_sites.push(i);
        }
    }
}

/// Records an open sampled handle; returns its entry (or [`NO_ENTRY`] when the table is
/// full).
pub(crate) fn insert(kind: u16, frames: &[usize], born: u64, weight: u32, tag: u32) -> u32 {
    let hash = hash_frames(frames);
    let mut t = TABLE.lock();
    let index = if let Some(i) = t.free.pop() {
        i
    } else if t.entries.len() < TABLE_CAPACITY {
        t.entries.push(Entry {
            live: false,
            kind: 0,
            site: NO_SITE,
            weight: 0,
            tag: 0,
            born: 0,
        });
        (t.entries.len() - 1) as u32
    } else {
        t.dropped += 1;
        return NO_ENTRY;
    };
    let site = t.intern(frames, hash);
    t.entries[index as usize] = Entry {
        live: true,
        kind,
        site,
        weight,
        tag,
        born,
    };
    t.used += 1;
    index
}

/// Forgets a closed handle's entry.
pub(crate) fn remove(index: u32) {
    let mut t = TABLE.lock();
    let Some(entry) = t.entries.get_mut(index as usize) else {
        return;
    };
    if !entry.live {
        return;
    }
    entry.live = false;
    let site = entry.site;
    t.used -= 1;
    if site != NO_SITE {
        t.release_site(site);
    }
    t.free.push(index);
}

/// Open sampled handles of one kind from one site, as the table holds them.
#[derive(Debug, Clone)]
pub(crate) struct SiteGroup {
    pub kind: u16,
    /// Raw return addresses; empty when the handles were recorded without a site.
    pub frames: Vec<usize>,
    /// Sampled handles still open.
    pub count: u64,
    /// Sum of their weights (each stands for `sample_every` opens): an estimate of all
    /// open handles from this site.
    pub estimated: u64,
    /// Registry-clock nanoseconds of the oldest one's open.
    pub oldest_born: u64,
}

/// Table usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SamplingStats {
    /// Open sampled handles the table can record.
    pub table_capacity: usize,
    /// Open sampled handles recorded now.
    pub table_used: usize,
    /// Sampled opens not recorded because the table was full.
    pub dropped_table_full: u64,
    /// Distinct creation stacks the table can keep.
    pub site_capacity: usize,
    /// Distinct creation stacks kept now.
    pub sites_used: usize,
    /// Recorded handles whose stack found no room (counted without a site).
    pub sites_dropped: u64,
    /// Frames captured per sampled open.
    pub capture_depth: usize,
    /// Distinct frames given as text by a language binding, kept now (see
    /// [`SiteFrames`](super::SiteFrames)).
    pub external_frames_used: usize,
    /// Frames given by a binding that were not recorded because the table of external
    /// frames was full.
    pub external_frames_dropped: u64,
}

/// The table's usage (does not create it).
pub(crate) fn stats() -> SamplingStats {
    let mut s = SamplingStats {
        table_capacity: TABLE_CAPACITY,
        site_capacity: SITE_CAPACITY,
        capture_depth: DEPTH.load(Ordering::Relaxed),
        ..SamplingStats::default()
    };
    (s.external_frames_used, s.external_frames_dropped) = super::external::usage();
    if let Some(t) = LazyLock::get(&TABLE) {
        let t = t.lock();
        s.table_used = t.used;
        s.dropped_table_full = t.dropped;
        s.sites_used = t.sites.len() - t.free_sites.len();
        s.sites_dropped = t.sites_dropped;
    }
    s
}

/// Open sampled handles grouped by kind and site, for the entries `keep` accepts.
pub(crate) fn groups(keep: impl Fn(u16, u32) -> bool) -> Vec<SiteGroup> {
    let Some(table) = LazyLock::get(&TABLE) else {
        return Vec::new();
    };
    let t = table.lock();
    let mut by: HashMap<(u16, u32), (u64, u64, u64)> = HashMap::new();
    for e in t.entries.iter().filter(|e| e.live && keep(e.kind, e.tag)) {
        let g = by.entry((e.kind, e.site)).or_insert((0, 0, u64::MAX));
        g.0 += 1;
        g.1 += u64::from(e.weight);
        g.2 = g.2.min(e.born);
    }
    by.into_iter()
        .map(
            |((kind, site), (count, estimated, oldest_born))| SiteGroup {
                kind,
                frames: t
                    .sites
                    .get(site as usize)
                    .filter(|_| site != NO_SITE)
                    .map(|s| s.frames[..usize::from(s.len)].to_vec())
                    .unwrap_or_default(),
                count,
                estimated,
                oldest_born,
            },
        )
        .collect()
}

// ---------------------------------------------------------------------------------------
// Symbolization.

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SymFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub address: usize,
}

impl std::fmt::Display for SymFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.function {
            Some(name) => f.write_str(name)?,
            None => write!(f, "{:#x}", self.address)?,
        }
        if let Some(file) = &self.file {
            write!(f, " ({file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

static SYMBOLS: LazyLock<Mutex<HashMap<usize, Arc<[SymFrame]>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The site table's and symbol cache's locks, taken around a fork (see [`crate::fork`]).
pub(super) fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&*TABLE);
    out.push(&*SYMBOLS);
}

/// The frames one address stands for (several when calls were inlined), innermost first.
fn resolve(address: usize, budget: &mut usize) -> Arc<[SymFrame]> {
    if let Some(frames) = super::external::resolve(address) {
        return frames;
    }
    let mut cache = SYMBOLS.lock();
    if let Some(frames) = cache.get(&address) {
        return Arc::clone(frames);
    }
    let unresolved = || -> Arc<[SymFrame]> {
        Arc::from(vec![SymFrame {
            function: None,
            file: None,
            line: None,
            address,
        }])
    };
    if *budget == 0 {
        return unresolved();
    }
    *budget -= 1;
    let mut frames = Vec::new();
    crate::fork::backtrace_section(|| {
        backtrace::resolve(address as *mut std::ffi::c_void, |symbol| {
            frames.push(SymFrame {
                function: symbol.name().map(|n| format!("{n:#}")),
                file: symbol.filename().map(|p| p.display().to_string()),
                line: symbol.lineno(),
                address,
            });
        });
    });
    let frames: Arc<[SymFrame]> = if frames.is_empty() {
        unresolved()
    } else {
        Arc::from(frames)
    };
    if cache.len() >= SYMBOL_CACHE {
        cache.clear();
    }
    cache.insert(address, Arc::clone(&frames));
    frames
}

/// Whether a leading frame belongs to the capture machinery rather than to the code that
/// opened the handle.
fn is_internal(frame: &SymFrame) -> bool {
    let Some(name) = frame.function.as_deref() else {
        return false;
    };
    let name = name.trim_start_matches('<');
    name.starts_with("backtrace::")
        || name.starts_with("leakguard::handles::")
        || name.starts_with("leakguard::fork::")
        || name.starts_with("leakguard::testing::")
        || name.starts_with("_Unwind_")
}

/// Whether a frame is `testing`'s measuring loop, which says nothing about the site.
fn is_measurement(frame: &SymFrame) -> bool {
    frame.function.as_deref().is_some_and(|name| {
        name.trim_start_matches('<')
            .starts_with("leakguard::testing::")
    })
}

/// The symbolized frames of a stack, leakguard's own leading frames (and `testing`'s
/// measuring loop) left out, at most [`FRAMES_SHOWN`].
pub(crate) fn symbolize(frames: &[usize], budget: &mut usize) -> Vec<SymFrame> {
    let mut out = Vec::new();
    let mut leading = true;
    for &address in frames {
        for frame in resolve(address, budget).iter() {
            if (leading && is_internal(frame)) || is_measurement(frame) {
                continue;
            }
            leading = false;
            out.push(frame.clone());
            if out.len() >= FRAMES_SHOWN {
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn capture_here() -> Vec<usize> {
        let mut frames = [0; MAX_DEPTH];
        let n = capture(&mut frames);
        frames[..n].to_vec()
    }

    #[test]
    fn a_captured_stack_symbolizes_to_its_caller() {
        let frames = capture_here();
        assert!(!frames.is_empty());
        let mut budget = SYMBOLIZE_BUDGET;
        // Everything in this test binary is inside `leakguard::handles`, which `symbolize`
        // skips as capture machinery: look at the resolved frames directly.
        let resolved: Vec<String> = frames
            .iter()
            .flat_map(|&ip| resolve(ip, &mut budget).to_vec())
            .map(|f| f.to_string())
            .collect();
        let caller = resolved.iter().position(|f| f.contains("capture_here"));
        assert!(caller.is_some(), "{resolved:#?}");
        assert!(
            resolved
                .iter()
                .any(|f| f.contains("capture_here") && f.contains("sites.rs"))
        );
        // The frames before it are the unwinder's and `capture`'s own.
        assert!(
            resolved[..caller.unwrap_or(0)]
                .iter()
                .all(|f| f.contains("backtrace") || f.contains("capture")),
            "{resolved:#?}"
        );
        assert!(
            symbolize(&frames, &mut budget)
                .iter()
                .all(|f| !is_internal(f))
        );
    }

    #[test]
    fn an_exhausted_budget_shows_addresses() {
        let mut budget = 0;
        let frames = symbolize(&[0x1234_5678], &mut budget);
        assert!(frames.iter().all(|f| f.function.is_none()));
    }

    #[test]
    fn equal_stacks_share_one_site_and_free_it_when_closed() {
        let frames = [1usize, 2, 3];
        let a = insert(0, &frames, 10, 1, 99);
        let b = insert(0, &frames, 20, 1, 99);
        let g = groups(|_, tag| tag == 99);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].count, 2);
        assert_eq!(g[0].oldest_born, 10);
        assert_eq!(g[0].frames, frames);
        remove(a);
        remove(b);
        assert!(groups(|_, tag| tag == 99).is_empty());
    }
}
