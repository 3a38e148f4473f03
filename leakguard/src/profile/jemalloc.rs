//! jemalloc's side: is the profiler on, and a dump into an anonymous in-memory file.

use super::{HeapProfile, MAX_DUMP_BYTES, ProfilingStatus, perr};
use crate::error::Result;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd};

pub(super) fn status() -> ProfilingStatus {
    if !crate::allocator::jemalloc_is_global_allocator() {
        return ProfilingStatus::NotGlobalAllocator;
    }
    // SAFETY: `opt.prof` is documented as a readable bool.
    match unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.prof\0") } {
        Ok(true) => {}
        _ => return ProfilingStatus::Off,
    }
    // SAFETY: `prof.active` is documented as a readable bool.
    if !unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"prof.active\0") }.unwrap_or(false) {
        return ProfilingStatus::Inactive;
    }
    // SAFETY: `prof.lg_sample` is documented as a readable size_t.
    let lg = unsafe { tikv_jemalloc_ctl::raw::read::<libc::size_t>(b"prof.lg_sample\0") }
        .unwrap_or(19)
        .min(62);
    ProfilingStatus::Active {
        sample_period: 1u64 << lg,
    }
}

/// Asks jemalloc to write its profile to `path`.
fn prof_dump(path: &str) -> Result<()> {
    let c = CString::new(path).map_err(|_| perr(format!("bad dump path {path:?}")))?;
    let ptr: *const libc::c_char = c.as_ptr();
    // SAFETY: `prof.dump` is documented as writable with a `const char *` file name; the
    // string lives until the call returns.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", ptr) }.map_err(|e| {
        perr(format!(
            "jemalloc could not write the profile to {path}: {e}"
        ))
    })
}

/// The buffer a dump is read through.
const READ_BUFFER: usize = 64 << 10;

/// Parses the dump in `file` as it is read, through a [`READ_BUFFER`]: the text is never
/// held whole.
fn parse_bounded(file: &mut std::fs::File, at: f64) -> Result<HeapProfile> {
    let len = file
        .metadata()
        .map_err(|e| perr(format!("cannot size the heap dump: {e}")))?
        .len();
    if len > MAX_DUMP_BYTES {
        return Err(perr(format!(
            "the heap dump is {len} bytes, more than the {MAX_DUMP_BYTES} leakguard reads"
        )));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| perr(format!("cannot read the heap dump: {e}")))?;
    HeapProfile::read_jeheap(
        std::io::BufReader::with_capacity(READ_BUFFER, file.take(MAX_DUMP_BYTES)),
        at,
    )
}

/// jemalloc's dump, parsed: written to a memfd (no directory needed), else to a file in the
/// temporary directory that is removed at once.
fn dump_parsed(at: f64) -> Result<HeapProfile> {
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd = unsafe { libc::memfd_create(c"leakguard-heap".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        if prof_dump(&path).is_ok() {
            return parse_bounded(&mut file, at);
        }
        // /proc may be missing: fall through to the temporary directory.
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "leakguard-{}-{}.heap",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let name = path.to_string_lossy().into_owned();
    // Created first, private (0600), new and not through a link: jemalloc then writes into
    // this file (in a sticky temporary directory nobody else can replace it).
    drop(
        super::dump::create_private(&path)
            .map_err(|e| perr(format!("cannot create the heap dump {name}: {e}")))?,
    );
    if let Err(e) = prof_dump(&name) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let result = std::fs::File::open(&path)
        .map_err(|e| perr(format!("cannot open the heap dump {name}: {e}")))
        .and_then(|mut f| parse_bounded(&mut f, at));
    let _ = std::fs::remove_file(&path);
    result
}

pub(super) fn take(at: f64) -> Result<HeapProfile> {
    let st = status();
    if let Some(how) = st.how_to_enable() {
        return Err(perr(how));
    }
    dump_parsed(at)
}
