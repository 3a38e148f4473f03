//! With the system allocator (glibc malloc), `mallinfo2` numbers follow allocations.
#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice, AllocatorKind};
use std::sync::Mutex;

const MIB: u64 = 1024 * 1024;

/// Tests in this file run in parallel threads; they all take this lock.
static MEASURING: Mutex<()> = Mutex::new(());

/// The test harness's own threads may free a few bytes while a test measures.
const SLACK: u64 = MIB;

fn glibc() -> Allocator {
    let allocator = Allocator::new(AllocatorChoice::Glibc);
    assert_eq!(allocator.status().kind, AllocatorKind::Glibc);
    allocator
}

#[test]
fn small_allocations_raise_allocated() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut allocator = glibc();
    let before = allocator.read().unwrap().unwrap();
    // 32 MiB in 1 KiB boxes: below the mmap threshold, so they come from the arenas.
    let boxes: Vec<Box<[u8; 1024]>> = (0..32 * 1024).map(|_| Box::new([1u8; 1024])).collect();
    std::hint::black_box(&boxes);
    let held = allocator.read().unwrap().unwrap();
    assert!(
        held.allocated + SLACK >= before.allocated + 32 * MIB,
        "allocated {} -> {}",
        before.allocated,
        held.allocated
    );
    assert!(held.free.is_some());
    drop(boxes);
    let after = allocator.read().unwrap().unwrap();
    assert!(after.allocated + 32 * MIB <= held.allocated + SLACK);
}

#[test]
fn one_large_allocation_is_counted_as_mmapped() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut allocator = glibc();
    let before = allocator.read().unwrap().unwrap();
    let size = 64 * MIB as usize;
    let mut block: Vec<u8> = Vec::with_capacity(size);
    block.resize(size, 1);
    std::hint::black_box(&mut block);
    let held = allocator.read().unwrap().unwrap();
    assert!(held.allocated + SLACK >= before.allocated + 64 * MIB);
    assert!(held.mapped.unwrap() + SLACK >= before.mapped.unwrap() + 64 * MIB);
    drop(block);
    let after = allocator.read().unwrap().unwrap();
    assert!(after.allocated + 64 * MIB <= held.allocated + SLACK);
}

#[test]
fn auto_without_jemalloc_as_global_reports_glibc() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let allocator = Allocator::new(AllocatorChoice::Auto);
    assert_eq!(allocator.status().kind, AllocatorKind::Glibc);
    if allocator.status().jemalloc_linked {
        let note = allocator.status().note.clone().unwrap_or_default();
        assert!(note.contains("not the global allocator"), "{note}");
    }
}
