//! With jemalloc as the global allocator, `Auto` detects it and its statistics follow
//! allocations.
#![cfg(feature = "jemalloc")]
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice, AllocatorKind};
use std::sync::Mutex;

#[global_allocator]
static A: leakguard::Jemalloc = leakguard::Jemalloc;

const MIB: u64 = 1024 * 1024;

/// Tests in this file run in parallel threads; they all take this lock.
static MEASURING: Mutex<()> = Mutex::new(());

/// The test harness's own threads may free a few bytes while a test measures.
const SLACK: u64 = MIB;

#[test]
fn auto_detects_jemalloc_as_the_global_allocator() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    assert!(leakguard::allocator::jemalloc_is_global_allocator());
    let mut allocator = Allocator::new(AllocatorChoice::Auto);
    let status = allocator.status();
    assert_eq!(status.kind, AllocatorKind::Jemalloc);
    assert!(status.jemalloc_linked);
    assert_eq!(status.note, None);
    let stats = allocator.read().unwrap().unwrap();
    for field in [
        stats.active,
        stats.resident,
        stats.mapped,
        stats.retained,
        stats.metadata,
    ] {
        assert!(field.is_some());
    }
    assert!(stats.active.unwrap() >= stats.allocated);
    assert!(stats.mapped.unwrap() >= stats.active.unwrap());
    assert_eq!(stats.free, None);
}

#[test]
fn allocated_and_resident_follow_a_64_mib_allocation() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut allocator = Allocator::new(AllocatorChoice::Auto);
    let before = allocator.read().unwrap().unwrap();

    let size = 64 * MIB as usize;
    let mut block: Vec<u8> = Vec::with_capacity(size);
    block.resize(size, 1); // touch every page
    std::hint::black_box(&mut block);
    let held = allocator.read().unwrap().unwrap();
    assert!(
        held.allocated + SLACK >= before.allocated + 64 * MIB,
        "allocated {} -> {}",
        before.allocated,
        held.allocated
    );
    let resident_rise = held
        .resident
        .unwrap()
        .saturating_sub(before.resident.unwrap());
    assert!(
        resident_rise >= 48 * MIB,
        "resident rose by {resident_rise}"
    );

    drop(block);
    let after = allocator.read().unwrap().unwrap();
    assert!(
        after.allocated + 64 * MIB <= held.allocated + SLACK,
        "allocated {} -> {}",
        held.allocated,
        after.allocated
    );
}

#[test]
fn forcing_glibc_says_jemalloc_is_the_global_allocator() {
    let _guard = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let allocator = Allocator::new(AllocatorChoice::Glibc);
    let note = allocator.status().note.clone().unwrap_or_default();
    assert!(note.contains("jemalloc is the global allocator"), "{note}");
}
