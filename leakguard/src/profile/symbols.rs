//! In-process symbolization of a heap profile's return addresses, with a bounded cache, and
//! the rule that finds an allocation's *site*: the first frame, from the leaf, that is not
//! the allocator or Rust's generic allocation machinery.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Most addresses whose symbols are cached (about 150 bytes each plus the names); the cache
/// is emptied when full, so a service whose profiles keep naming new addresses never makes
/// it grow past this.
pub const MAX_SYMBOLS: usize = 16 * 1024;

/// One function an address stands for (several when calls were inlined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Demangled name without the hash, e.g. `leaky_service::leak`, or the address in hex
    /// when it could not be resolved.
    pub function: Arc<str>,
    /// The raw (mangled) symbol name, or the same as `function`.
    pub system_name: Arc<str>,
    /// Source file, if the debug information has it.
    pub file: Option<Arc<str>>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

static CACHE: LazyLock<Mutex<HashMap<usize, Arc<[Frame]>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The cached frames of every address `addrs` names, or `None` as soon as one is not cached:
/// symbolizing from these reads no symbols and no debug information, so it needs memory in
/// proportion to them only (at most [`MAX_SYMBOLS`] addresses). Taken under one lock, so the
/// cache being emptied meanwhile changes nothing.
#[cfg(feature = "profiling")]
pub(crate) fn cached_frames(
    addrs: impl Iterator<Item = usize>,
) -> Option<HashMap<usize, Arc<[Frame]>>> {
    let cache = CACHE.lock();
    let mut out: HashMap<usize, Arc<[Frame]>> = HashMap::new();
    for a in addrs {
        if out.contains_key(&a) {
            continue;
        }
        out.insert(a, Arc::clone(cache.get(&a)?));
    }
    Some(out)
}

/// What an address that could not be resolved stands for: itself, in hex.
pub(crate) fn unresolved(address: usize) -> Arc<[Frame]> {
    let hex: Arc<str> = Arc::from(format!("{address:#x}"));
    Arc::from(vec![Frame {
        function: Arc::clone(&hex),
        system_name: hex,
        file: None,
        line: 0,
    }])
}

/// The symbol cache's lock, taken around a fork (see [`crate::fork`]).
fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&*CACHE);
}

/// The frames `address` (a return address) stands for, innermost first; never empty.
pub(crate) fn resolve(address: usize) -> Arc<[Frame]> {
    static FORK_SAFE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    crate::fork::install(crate::fork::Source::Symbols, fork_locks, &FORK_SAFE);
    if let Some(frames) = CACHE.lock().get(&address) {
        return Arc::clone(frames);
    }
    let frames = resolve_uncached(address);
    let mut cache = CACHE.lock();
    if cache.len() >= MAX_SYMBOLS {
        cache.clear();
    }
    cache.insert(address, Arc::clone(&frames));
    frames
}

/// Number of cached addresses.
#[cfg(test)]
pub(crate) fn cached() -> usize {
    CACHE.lock().len()
}

fn resolve_uncached(address: usize) -> Arc<[Frame]> {
    let mut frames = Vec::new();
    // A return address points just past the call; the call itself is one byte earlier.
    let pc = address.saturating_sub(1);
    crate::fork::backtrace_section(|| {
        backtrace::resolve(pc as *mut std::ffi::c_void, |symbol| {
            let (function, system_name): (Arc<str>, Arc<str>) = match symbol.name() {
                Some(name) => {
                    let demangled: Arc<str> = Arc::from(format!("{name:#}"));
                    let raw = String::from_utf8_lossy(name.as_bytes());
                    let raw: Arc<str> = if *raw == *demangled {
                        Arc::clone(&demangled)
                    } else {
                        Arc::from(raw.as_ref())
                    };
                    (demangled, raw)
                }
                None => {
                    let hex: Arc<str> = Arc::from(format!("{address:#x}"));
                    (Arc::clone(&hex), hex)
                }
            };
            frames.push(Frame {
                function,
                system_name,
                file: symbol
                    .filename()
                    .map(|p| Arc::from(p.to_string_lossy().as_ref())),
                line: symbol.lineno().unwrap_or(0),
            });
        })
    });
    if frames.is_empty() {
        return unresolved(address);
    }
    Arc::from(frames)
}

/// The allocator itself: jemalloc's functions (exported and internal), its profiler, the
/// `GlobalAlloc` shims. Always left out of a profile's stacks (as `jeprof` does).
///
/// Without the `profiling` feature there are no heap profiles, and so no allocator frames to
/// leave out: the table of jemalloc's names is not even compiled in (a build without jemalloc,
/// such as the Python extension, carries none of its symbol names).
#[cfg(not(feature = "profiling"))]
pub(crate) fn is_allocator(_frame: &Frame) -> bool {
    false
}

/// The allocator itself: jemalloc's functions (exported and internal), its profiler, the
/// `GlobalAlloc` shims. Always left out of a profile's stacks (as `jeprof` does).
#[cfg(feature = "profiling")]
pub(crate) fn is_allocator(frame: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "_rjem_",
        "je_",
        "prof_",
        "imalloc",
        "ialloc",
        "iralloc",
        "ixalloc",
        "do_rallocx",
        "do_xallocx",
        "arena_",
        "tcache_",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rustc::",
        "__rdl_",
        "__rg_",
        "tikv_jemallocator::",
        "alloc::alloc::",
        "std::alloc::",
        "core::alloc::",
    ];
    let name = frame.function.trim_start_matches('<');
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.contains(" as core::alloc::global::GlobalAlloc>")
        || name.contains(" as core::alloc::Allocator>")
        || frame.file.as_deref().is_some_and(|f| {
            f.contains("tikv-jemalloc")
                || f.contains("/jemalloc/src/")
                || f.contains("/jemalloc/include/")
        })
}

/// Rust's generic data structures and iterators (`alloc`, `core`, `std`, `hashbrown`): a
/// leading run of these is left out when a frame of the service's own code follows, so the
/// site is the function that asked for the `Vec` or the `String`, not `RawVec`.
pub(crate) fn is_library(name: &str) -> bool {
    const CRATES: &[&str] = &["alloc::", "core::", "std::", "hashbrown::"];
    let trimmed = name.trim_start_matches('<');
    if CRATES.iter().any(|c| trimmed.starts_with(c)) {
        return true;
    }
    // `<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem` and the like.
    trimmed
        .split_once(" as ")
        .is_some_and(|(_, tr)| CRATES.iter().any(|c| tr.starts_with(c)))
}

/// Where the interesting part of a stack begins: (index of the address, index of the
/// inlined frame inside it), or `None` when every frame is the allocator's.
pub(crate) fn site_start(resolved: &[Arc<[Frame]>]) -> Option<(usize, usize)> {
    let flat = resolved
        .iter()
        .enumerate()
        .flat_map(|(i, frames)| frames.iter().enumerate().map(move |(j, f)| (i, j, f)));
    let mut first_non_allocator = None;
    for (i, j, f) in flat {
        if is_allocator(f) {
            continue;
        }
        if first_non_allocator.is_none() {
            first_non_allocator = Some((i, j));
        }
        if !is_library(&f.function) {
            return Some((i, j));
        }
    }
    first_non_allocator
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "profiling")]
    fn allocator_and_library_frames_are_told_apart_from_the_service() {
        let named = |n: &str| frame(n);
        for name in [
            "_rjem_je_prof_backtrace",
            "irallocx_prof",
            "do_rallocx",
            "_rjem_malloc",
            "__rustc::__rust_alloc",
            "__rust_alloc",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
            "<leakguard::global_alloc::Jemalloc as core::alloc::global::GlobalAlloc>::realloc",
            "alloc::alloc::Global::alloc_impl",
        ] {
            assert!(is_allocator(&named(name)), "{name}");
        }
        for name in [
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "core::iter::traits::iterator::Iterator::collect",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
        ] {
            assert!(!is_allocator(&named(name)), "{name}");
            assert!(is_library(name), "{name}");
        }
        for name in ["leaky_service::leak", "my_app::cache::Store::put"] {
            assert!(!is_allocator(&named(name)) && !is_library(name), "{name}");
        }
        // An inlined jemalloc function whose name is not listed is known by its source file.
        let mut inlined = frame("some_new_internal");
        inlined.file = Some(Arc::from(
            "/src/tikv-jemalloc-sys-0.7.1/jemalloc/src/jemalloc.c",
        ));
        assert!(is_allocator(&inlined));
    }

    #[cfg(feature = "profiling")]
    fn frame(name: &str) -> Frame {
        Frame {
            function: Arc::from(name),
            system_name: Arc::from(name),
            file: None,
            line: 0,
        }
    }

    #[test]
    #[cfg(feature = "profiling")]
    fn the_site_is_the_first_frame_of_the_service_even_inside_an_inlined_address() {
        let stack: Vec<Arc<[Frame]>> = vec![
            Arc::from(vec![frame("_rjem_je_prof_backtrace")]),
            Arc::from(vec![frame("__rustc::__rust_alloc")]),
            Arc::from(vec![
                frame("alloc::raw_vec::RawVecInner<A>::try_allocate_in"),
                frame("alloc::vec::from_elem"),
                frame("my_service::leak"),
            ]),
            Arc::from(vec![frame("my_service::main")]),
        ];
        assert_eq!(site_start(&stack), Some((2, 2)));
        // Only the standard library above the allocator: its first frame is the site.
        let std_only: Vec<Arc<[Frame]>> = vec![
            Arc::from(vec![frame("_rjem_malloc")]),
            Arc::from(vec![frame("std::thread::Builder::spawn")]),
            Arc::from(vec![frame("std::rt::lang_start")]),
        ];
        assert_eq!(site_start(&std_only), Some((1, 0)));
        let allocator_only: Vec<Arc<[Frame]>> = vec![Arc::from(vec![frame("_rjem_malloc")])];
        assert_eq!(site_start(&allocator_only), None);
    }

    #[test]
    fn a_function_of_this_binary_resolves_to_its_name_and_is_cached() {
        /// Return addresses of the current stack, as jemalloc records them.
        #[inline(never)]
        fn stack_of_a_named_function() -> Vec<usize> {
            let mut ips = Vec::new();
            backtrace::trace(|f| {
                ips.push(f.ip() as usize);
                ips.len() < 16
            });
            std::hint::black_box(ips)
        }
        let ips = stack_of_a_named_function();
        let names: Vec<String> = ips
            .iter()
            .flat_map(|ip| {
                resolve(*ip)
                    .iter()
                    .map(|f| f.function.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("stack_of_a_named_function")),
            "{names:?}"
        );
        assert!(cached() >= 1);
    }
}
