//! [`Jemalloc`], the global allocator leakguard offers: tikv-jemallocator's, except that a
//! small block grows by allocate, copy and free rather than through jemalloc's `realloc`
//! (or stays where it is when its size class has room, as jemalloc would keep it).
//!
//! To grow a small block (jemalloc's small size classes end at 14 KiB with 4 KiB pages)
//! beyond its size class, jemalloc's `realloc` allocates a new block, copies and frees the old
//! one anyway, but only after its general entry point: a radix-tree lookup of the old pointer,
//! an attempt to resize in place, hooks. Growing a small block costs it about 500 instructions
//! (with the copy) where `malloc`, `memcpy` and a sized free, all on their fast paths, cost
//! some 120. With jemalloc's heap profiler on (`prof:true`) its `realloc` costs about 100
//! more, sampled or not: it looks pointers up again to learn whether the old or the new block
//! is a sampled one, and calls out of line to undo a sampling decision it prepared; `malloc`
//! and the sized free keep their fast paths. On the allocation-heavy workload of
//! `BENCHMARKS.md`, which grows many `String`s and `Vec`s, that bookkeeping was most of what
//! the profiler cost (see "Heap profiling" there).
//!
//! Heap profiles see the same thing as with jemalloc's own move: the new block is sampled (or
//! not) as any allocation of its size, with the stack of the code that grew it, and a sampled
//! old block leaves the profile when it is freed. Shrinking, and growing into or within the
//! large sizes (which jemalloc may do in place, without a copy), still go to jemalloc's
//! `realloc`.

use std::alloc::{GlobalAlloc, Layout};

/// The jemalloc allocator, for the service's `#[global_allocator]`:
///
/// ```
/// #[global_allocator]
/// static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;
/// ```
///
/// It is tikv-jemallocator's `Jemalloc`, except that a small block (up to jemalloc's largest
/// small size class, 14 KiB with 4 KiB pages) grows by allocate, copy and free, which is what
/// jemalloc's `realloc` does for it too, but without that function's overhead, which grows
/// with the heap profiler on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jemalloc;

// SAFETY: every method forwards to tikv-jemallocator's `Jemalloc`, which implements
// `GlobalAlloc`, with the same arguments; `realloc`'s other path allocates a block of the new
// layout, copies the old block's bytes (fewer than the new size) and frees the old block with
// its own layout, which is what `GlobalAlloc::realloc`'s contract allows.
unsafe impl GlobalAlloc for Jemalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `alloc` are passed on.
        unsafe { tikv_jemallocator::Jemalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { tikv_jemallocator::Jemalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees for `dealloc` are passed on.
        unsafe { tikv_jemallocator::Jemalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && new_size <= small::grow_by_copy_max() {
            // Growing within its size class: the block already has room, and jemalloc's
            // `realloc` would keep it where it is too. Its later free with the new size names
            // the same class, which is all jemalloc's sized free asks.
            // SAFETY: both sizes are non-zero (`new_size` is larger than a size).
            if unsafe { small::size_class(new_size, layout.align()) }
                == unsafe { small::size_class(layout.size().max(1), layout.align()) }
            {
                return ptr;
            }
            // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`,
            // does not overflow `isize`, which is all `Layout` asks; it is not zero (larger
            // than a size).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: `new_layout` has a non-zero size.
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                // SAFETY: `ptr` is valid for `layout.size()` bytes (the caller's guarantee),
                // `new` for `new_size`, which is larger, and two live blocks do not overlap;
                // `ptr` was allocated by this allocator with `layout`, and is not used after.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                    self.dealloc(ptr, layout);
                }
            }
            // On failure the old block is left as it was, as `realloc` must.
            return new;
        }
        // SAFETY: the caller's guarantees for `realloc` are passed on.
        unsafe { tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size) }
    }
}

/// jemalloc's largest small size class, read once.
mod small {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Not read yet.
    const UNKNOWN: usize = usize::MAX;

    /// `_Alignof(max_align_t)`, as tikv-jemallocator defines it per target: jemalloc aligns
    /// every block of at least this size this far without being asked, so its flags ask for
    /// an alignment only beyond it.
    const MAX_ALIGN_T: usize = if cfg!(any(
        target_arch = "arm",
        target_arch = "mips",
        target_arch = "powerpc"
    )) {
        8
    } else {
        16
    };

    /// The size jemalloc really gives a request of `size` bytes aligned to `align`, with the
    /// flags tikv-jemallocator passes for that layout.
    ///
    /// # Safety
    ///
    /// `size` is not zero.
    #[inline]
    pub(super) unsafe fn size_class(size: usize, align: usize) -> usize {
        let flags = if align <= MAX_ALIGN_T && align <= size {
            0
        } else {
            tikv_jemalloc_sys::MALLOCX_ALIGN(align)
        };
        // SAFETY: `size` is not zero (the caller's guarantee); nallocx has no other
        // precondition and does not allocate.
        unsafe { tikv_jemalloc_sys::nallocx(size, flags) }
    }

    /// Largest size that grows by copy: jemalloc's largest small size class (0 if it could
    /// not be read: then every `realloc` goes to jemalloc's).
    static GROW_BY_COPY_MAX: AtomicUsize = AtomicUsize::new(UNKNOWN);

    #[inline]
    pub(super) fn grow_by_copy_max() -> usize {
        match GROW_BY_COPY_MAX.load(Ordering::Relaxed) {
            UNKNOWN => read(),
            max => max,
        }
    }

    /// Reads the largest small size class. jemalloc is initialized by then (a block is being
    /// resized), and `mallctl` does not allocate through the global allocator. Several threads
    /// may race here; they store the same value.
    #[cold]
    fn read() -> usize {
        let max = small_max();
        GROW_BY_COPY_MAX.store(max, Ordering::Relaxed);
        max
    }

    /// The size of jemalloc's largest small (slab) size class, `arenas.bin.<nbins-1>.size`
    /// (14 KiB with 4 KiB pages); 0 if it cannot be read.
    fn small_max() -> usize {
        // SAFETY: `arenas.nbins` is documented as a readable unsigned.
        let Ok(nbins) = (unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.nbins\0") }) else {
            return 0;
        };
        let Some(last) = nbins.checked_sub(1) else {
            return 0;
        };
        // The name without allocating: "arenas.bin.<last>.size\0" in a stack buffer.
        let mut name = [0u8; 48];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            name[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        push(b"arenas.bin.");
        let mut digits = [0u8; 10];
        let mut n = last;
        let mut d = digits.len();
        loop {
            d -= 1;
            digits[d] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        push(&digits[d..]);
        push(b".size\0");
        // SAFETY: `arenas.bin.<i>.size` is documented as a readable size_t for i < nbins.
        unsafe { tikv_jemalloc_ctl::raw::read::<libc::size_t>(&name[..len]) }.unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_grow_by_copy_up_to_the_largest_small_class() {
        let max = small::grow_by_copy_max();
        // 14 KiB with 4 KiB pages; larger with larger pages.
        assert!((8 << 10..=1 << 20).contains(&max), "{max}");
        assert_eq!(max, small::grow_by_copy_max());
    }

    #[test]
    fn growing_within_the_size_class_keeps_the_block_where_it_is() {
        let a = Jemalloc;
        // 20 and 24 bytes share jemalloc's 32-byte class; 24 and 40 do not.
        // SAFETY: non-zero sizes; each block is resized with its own layout and freed with
        // the layout of its new size.
        unsafe {
            assert_eq!(small::size_class(20, 8), small::size_class(32, 8));
            assert_ne!(small::size_class(24, 8), small::size_class(40, 8));
            let old = Layout::from_size_align(20, 8).unwrap();
            let p = a.alloc(old);
            p.write_bytes(7, 20);
            let q = a.realloc(p, old, 24);
            assert_eq!(q, p, "grown within its class");
            assert!((0..20).all(|i| *q.add(i) == 7));
            let r = a.realloc(q, Layout::from_size_align(24, 8).unwrap(), 40);
            assert!(!r.is_null());
            assert!((0..20).all(|i| *r.add(i) == 7));
            a.dealloc(r, Layout::from_size_align(40, 8).unwrap());
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_and_the_alignment_on_every_path() {
        let max = small::grow_by_copy_max();
        let a = Jemalloc;
        for align in [1, 8, 16, 64, 4096] {
            for (from, to) in [
                (1, 2),
                (24, 100),
                (100, max),
                (max - 1, max),
                (8000, max + 1),
                (max, 100_000),
                (100_000, 300_000),
                (100_000, 50),
                (max, 16),
                (5000, 5000),
            ] {
                let old = Layout::from_size_align(from, align).unwrap();
                // SAFETY: non-zero sizes; every block is written within its size, resized
                // with its own layout and freed with the layout of its new size.
                unsafe {
                    let p = a.alloc(old);
                    assert!(!p.is_null());
                    for i in 0..from {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, old, to);
                    assert!(!q.is_null(), "{from} -> {to}, align {align}");
                    assert_eq!(q as usize % align, 0, "{from} -> {to}, align {align}");
                    for i in 0..from.min(to) {
                        assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to} at {i}");
                    }
                    a.dealloc(q, Layout::from_size_align(to, align).unwrap());
                }
            }
        }
    }
}
