//! Creation sites given by a language binding: frames as text (function, file, line)
//! instead of native return addresses.
//!
//! A binding for another language (leakguard's Python package is one) knows its own call
//! stack better than a native unwinder does: the native stack of a Python handle is the
//! interpreter's loop, the same for every handle. [`HandleKind::track_with_site`] opens a
//! handle exactly like [`HandleKind::track`]; when the open is *sampled* (the kind's
//! `sample_every`, or every open of a suspect kind), it calls the binding's closure, which
//! pushes the frames it sees into a [`SiteFrames`]. On the common, unsampled path the
//! closure is not called at all, so no interpreter traceback is taken.
//!
//! ```
//! use leakguard::handles::{self, KindConfig};
//!
//! let kind = handles::configure("doc_external", KindConfig::new().sample_every(1))?;
//! let conn = kind.track_with_site(|site| {
//!     // Innermost first, as a binding walks its stack.
//!     site.push("connect", "app/db.py", 42);
//!     site.push("handle_request", "app/server.py", 7);
//! });
//! let report = handles::report();
//! let k = report.kinds.iter().find(|k| k.kind == "doc_external").unwrap();
//! assert_eq!(k.sites[0].function.as_deref(), Some("connect"));
//! assert_eq!(k.sites[0].location.as_deref(), Some("app/db.py:42"));
//! assert_eq!(k.sites[0].frames[1], "handle_request (app/server.py:7)");
//! drop(conn);
//! # Ok::<(), leakguard::Error>(())
//! ```
//!
//! Such sites appear in the report, the limit events and `assert_no_leak`'s messages like
//! native ones, and count against the same bounds.
//!
//! # Bounds
//!
//! - a site keeps at most the capture depth's frames ([`set_capture_depth`], default
//!   [`DEFAULT_DEPTH`], at most [`MAX_DEPTH`]); [`SiteFrames::push`] says when it is full
//!   and ignores frames beyond;
//! - a function name is cut at [`MAX_FUNCTION_BYTES`], a file name at [`MAX_FILE_BYTES`]
//!   (keeping its end, the telling part of a path), both at a character boundary;
//! - distinct frames are interned once in a table of at most [`EXTERNAL_FRAME_CAPACITY`]
//!   entries (about 0.8 MiB when full, allocated as frames are first seen) and kept for the
//!   life of the process: a program has a fixed set of code locations. Once it is full, new
//!   frames show as [`FRAME_NOT_RECORDED`] and are counted
//!   ([`SamplingStats::external_frames_dropped`]);
//! - distinct sites and open sampled handles share [`SITE_CAPACITY`] and
//!   [`TABLE_CAPACITY`] with native stacks.
//!
//! [`HandleKind::track_with_site`]: super::HandleKind::track_with_site
//! [`HandleKind::track`]: super::HandleKind::track
//! [`set_capture_depth`]: super::set_capture_depth
//! [`DEFAULT_DEPTH`]: super::DEFAULT_DEPTH
//! [`SamplingStats::external_frames_dropped`]: super::SamplingStats::external_frames_dropped
//! [`SITE_CAPACITY`]: super::SITE_CAPACITY
//! [`TABLE_CAPACITY`]: super::TABLE_CAPACITY

use super::sites::{MAX_DEPTH, SymFrame};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, LazyLock};

/// Distinct external frames kept at most.
pub const EXTERNAL_FRAME_CAPACITY: usize = 2048;
/// Longest function name kept, bytes.
pub const MAX_FUNCTION_BYTES: usize = 128;
/// Longest file name kept, bytes (its end is kept).
pub const MAX_FILE_BYTES: usize = 160;
/// What a frame that found the frame table full shows as.
pub const FRAME_NOT_RECORDED: &str = "<frame not recorded: table of external frames full>";

/// External frame `i` is stored in a site's frame array as `usize::MAX - i`: the top pages
/// of the address space, which are never user-space return addresses (the kernel's half on
/// 64-bit Linux, and the kernel's last gigabyte on 32-bit). `usize::MAX - CAPACITY` stands
/// for a frame that found the table full.
const NOT_RECORDED_ID: usize = EXTERNAL_FRAME_CAPACITY;
const LOWEST: usize = usize::MAX - NOT_RECORDED_ID;

fn encode(id: usize) -> usize {
    usize::MAX - id
}

/// Whether a value of a site's frame array is an external frame.
pub(crate) fn is_external(address: usize) -> bool {
    address >= LOWEST
}

/// The frames of one handle's creation site, pushed by a binding, innermost first.
///
/// Given to the closure of [`HandleKind::track_with_site`](super::HandleKind::track_with_site)
/// when the open is sampled. See the [module documentation](self) for the bounds.
#[derive(Debug)]
pub struct SiteFrames<'a> {
    out: &'a mut [usize; MAX_DEPTH],
    len: usize,
    depth: usize,
}

impl<'a> SiteFrames<'a> {
    pub(crate) fn new(out: &'a mut [usize; MAX_DEPTH], depth: usize) -> Self {
        Self {
            out,
            len: 0,
            depth: depth.clamp(1, MAX_DEPTH),
        }
    }

    /// Adds the next outer frame: the function, its file and the line being run. Returns
    /// whether the site takes more frames (`false` once it holds the capture depth's worth;
    /// later pushes are ignored), so a binding can stop walking its stack.
    pub fn push(&mut self, function: &str, file: &str, line: u32) -> bool {
        if self.len >= self.depth {
            return false;
        }
        self.out[self.len] = encode(TABLE.lock().intern(function, file, line));
        self.len += 1;
        self.len < self.depth
    }

    /// Frames pushed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frames this site takes at most (the capture depth).
    pub fn capacity(&self) -> usize {
        self.depth
    }
}

/// The first `max` bytes of `s` at most, at a character boundary.
fn clip_start(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// The last `max` bytes of `s` at most, at a character boundary.
fn clip_end(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

pub(crate) struct Frames {
    frames: Vec<Arc<[SymFrame]>>,
    by_hash: HashMap<u64, u32>,
    capacity: usize,
    dropped: u64,
}

static TABLE: LazyLock<Mutex<Frames>> =
    LazyLock::new(|| Mutex::new(Frames::new(EXTERNAL_FRAME_CAPACITY)));

/// The frame table's lock, taken around a fork (see [`crate::fork`]).
pub(super) fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&*TABLE);
}

impl Frames {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            frames: Vec::new(),
            by_hash: HashMap::new(),
            capacity: capacity.min(EXTERNAL_FRAME_CAPACITY),
            dropped: 0,
        }
    }

    /// The id of a frame, interned; [`NOT_RECORDED_ID`] when the table is full.
    pub(crate) fn intern(&mut self, function: &str, file: &str, line: u32) -> usize {
        let function = clip_start(function, MAX_FUNCTION_BYTES);
        let file = clip_end(file, MAX_FILE_BYTES);
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((function, file, line));
        if let Some(&i) = self.by_hash.get(&hash)
            && let Some(frame) = self.frames.get(i as usize).and_then(|f| f.first())
            && frame.function.as_deref() == Some(function)
            && frame.file.as_deref() == Some(file)
            && frame.line == Some(line)
        {
            return i as usize;
        }
        if self.frames.len() >= self.capacity || self.by_hash.contains_key(&hash) {
            // Full, or two frames with one 64-bit hash (the first one keeps it).
            self.dropped += 1;
            return NOT_RECORDED_ID;
        }
        let id = self.frames.len();
        self.frames.push(Arc::from(vec![SymFrame {
            function: Some(function.to_owned()),
            file: Some(file.to_owned()),
            line: Some(line),
            address: encode(id),
        }]));
        self.by_hash.insert(hash, id as u32);
        id
    }

    /// The frame stored as `address`, if it is an external one.
    pub(crate) fn resolve(&self, address: usize) -> Option<Arc<[SymFrame]>> {
        if !is_external(address) {
            return None;
        }
        let id = usize::MAX - address;
        Some(match self.frames.get(id) {
            Some(frame) => Arc::clone(frame),
            None => Arc::from(vec![SymFrame {
                function: Some(FRAME_NOT_RECORDED.to_owned()),
                file: None,
                line: None,
                address,
            }]),
        })
    }
}

/// The frame stored as `address`, if it is an external one.
pub(crate) fn resolve(address: usize) -> Option<Arc<[SymFrame]>> {
    if !is_external(address) {
        return None;
    }
    TABLE.lock().resolve(address)
}

/// Distinct external frames kept, and frames not recorded because the table was full (does
/// not create the table).
pub(crate) fn usage() -> (usize, u64) {
    LazyLock::get(&TABLE).map_or((0, 0), |t| {
        let t = t.lock();
        (t.frames.len(), t.dropped)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_frames_are_interned_once() {
        let mut t = Frames::new(8);
        let a = t.intern("f", "a.py", 1);
        assert_eq!(t.intern("f", "a.py", 1), a);
        assert_ne!(t.intern("f", "a.py", 2), a);
        assert_ne!(t.intern("g", "a.py", 1), a);
        assert_eq!(t.frames.len(), 3);
        let frame = t
            .resolve(encode(a))
            .unwrap_or_else(|| Arc::from(Vec::new()));
        assert_eq!(frame[0].to_string(), "f (a.py:1)");
    }

    #[test]
    fn a_full_table_records_frames_as_not_recorded_and_counts_them() {
        let mut t = Frames::new(2);
        t.intern("a", "x.py", 1);
        t.intern("b", "x.py", 1);
        let id = t.intern("c", "x.py", 1);
        assert_eq!(id, NOT_RECORDED_ID);
        assert_eq!(t.dropped, 1);
        assert_eq!(t.frames.len(), 2);
        let frame = t
            .resolve(encode(id))
            .unwrap_or_else(|| Arc::from(Vec::new()));
        assert_eq!(frame[0].function.as_deref(), Some(FRAME_NOT_RECORDED));
        // Frames already kept still resolve.
        assert_eq!(t.intern("a", "x.py", 1), 0);
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary_keeping_the_file_end() {
        let mut t = Frames::new(4);
        let function = "é".repeat(100);
        let file = format!("/{}/app/db.py", "ü".repeat(200));
        let id = t.intern(&function, &file, 3);
        let frame = t
            .resolve(encode(id))
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let f = frame[0].function.as_deref().unwrap_or_default();
        let p = frame[0].file.as_deref().unwrap_or_default();
        assert!(f.len() <= MAX_FUNCTION_BYTES && f.len() >= MAX_FUNCTION_BYTES - 1);
        assert!(f.chars().all(|c| c == 'é'));
        assert!(
            p.len() <= MAX_FILE_BYTES && p.ends_with("/app/db.py"),
            "{p}"
        );
    }

    #[test]
    fn native_addresses_are_not_external() {
        let here = native_addresses_are_not_external as *const () as usize;
        assert!(!is_external(here));
        assert!(!is_external(0));
        assert!(is_external(encode(0)));
        assert!(is_external(encode(NOT_RECORDED_ID)));
        assert!(Frames::new(1).resolve(here).is_none());
    }

    #[test]
    fn the_site_closure_runs_only_for_sampled_opens() {
        use crate::handles::{self, KindConfig};
        let never = handles::configure("unit_external_never", KindConfig::new().sample_every(0))
            .expect("a new kind");
        let mut called = 0;
        let unsampled: Vec<_> = (0..1000)
            .map(|_| never.track_with_site(|_| called += 1))
            .collect();
        assert_eq!(called, 0);
        assert!(unsampled.iter().all(|g| !g.is_sampled()));
        assert_eq!(never.open(), 1000);
        drop(unsampled);
        assert_eq!(never.open(), 0);

        let always = handles::configure("unit_external_always", KindConfig::new().sample_every(1))
            .expect("a new kind");
        let guard = always.track_with_site(|site| {
            called += 1;
            site.push("open_pool", "pool.py", 30);
            site.push("main", "main.py", 5);
        });
        assert_eq!(called, 1);
        assert!(guard.is_sampled());
        let report = handles::report();
        let kind = report
            .kinds
            .iter()
            .find(|k| k.kind == "unit_external_always")
            .expect("the kind is reported");
        assert_eq!(kind.sampled_open, 1);
        assert_eq!(kind.sites.len(), 1);
        assert_eq!(kind.sites[0].function.as_deref(), Some("open_pool"));
        assert_eq!(kind.sites[0].location.as_deref(), Some("pool.py:30"));
        assert_eq!(
            kind.sites[0].frames,
            ["open_pool (pool.py:30)", "main (main.py:5)"]
        );
        assert!(report.sampling.external_frames_used >= 2);
        drop(guard);
        let report = handles::report();
        let kind = report
            .kinds
            .iter()
            .find(|k| k.kind == "unit_external_always")
            .expect("the kind is reported");
        assert!(kind.sites.is_empty());
    }

    #[test]
    fn a_panicking_site_closure_counts_the_handle_as_closed() {
        use crate::handles::{self, KindConfig};
        let kind = handles::configure("unit_external_panic", KindConfig::new().sample_every(1))
            .expect("a new kind");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kind.track_with_site(|_| panic!("boom"))
        }));
        assert!(result.is_err());
        assert_eq!(kind.open(), 0);
        let report = handles::report();
        let k = report
            .kinds
            .iter()
            .find(|k| k.kind == "unit_external_panic")
            .expect("the kind is reported");
        assert_eq!((k.opened, k.closed, k.sampled_open), (1, 1, 0));
    }

    #[test]
    fn site_frames_stop_at_the_depth() {
        let mut out = [0usize; MAX_DEPTH];
        let mut site = SiteFrames::new(&mut out, 2);
        assert!(site.push("a", "x.py", 1));
        assert!(!site.push("b", "x.py", 2));
        assert!(!site.push("c", "x.py", 3));
        assert_eq!(site.len(), 2);
        assert_eq!(site.capacity(), 2);
        assert!(out[..2].iter().all(|&a| is_external(a)));
        assert_eq!(out[2], 0);
    }
}
