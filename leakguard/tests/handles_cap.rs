//! The kind capacity and every other bound, under a million opens across thousands of
//! names. One test in this binary: it fills the process-wide kind registry.
#![cfg(feature = "jemalloc")]
#![allow(clippy::unwrap_used)]

use leakguard::allocator::{Allocator, AllocatorChoice};
use leakguard::handles::{self, KindConfig, MAX_KINDS, OTHER, TABLE_CAPACITY};
use leakguard::{HandleGuard, track};

#[global_allocator]
static A: leakguard::Jemalloc = leakguard::Jemalloc;

fn heap_bytes(allocator: &mut Allocator) -> i64 {
    allocator.read().unwrap().unwrap().allocated as i64
}

#[test]
fn names_beyond_the_capacity_are_counted_as_other_and_memory_stays_bounded() {
    let mut allocator = Allocator::new(AllocatorChoice::Auto);

    // Fill the registry: these names get kinds of their own.
    let own: Vec<_> = (0..MAX_KINDS)
        .map(|i| handles::kind(&format!("cap_{i}")))
        .collect();
    assert!(own.iter().all(|k| k.name().starts_with("cap_")));

    // A thousand more names: all `other`, counted.
    let folded: Vec<HandleGuard> = (0..1000)
        .map(|i| handles::kind(&format!("cap_extra_{i}")).track())
        .collect();
    assert!(folded.iter().all(|g| g.kind() == OTHER));
    let report = handles::report();
    assert_eq!(report.folded_kinds, 1000);
    assert!(!report.folded_kinds_saturated);
    assert_eq!(report.kinds.len(), MAX_KINDS + 1);
    let other = report.kinds.iter().find(|k| k.kind == OTHER).unwrap();
    assert_eq!(other.open, 1000);
    drop(folded);

    // A static name past the cap is `other` too, and a folded name cannot take limits.
    assert_eq!(track("cap_static_late").kind(), OTHER);
    let err = handles::configure("cap_extra_1", KindConfig::new().max_open(1)).unwrap_err();
    assert!(err.to_string().contains("capacity of 256"), "{err}");

    // A million opens across thousands of names (sampled 1 in 16), some kept open: the heap
    // grows by leakguard's fixed tables only, whatever the traffic.
    handles::set_default_sample_every(16);
    let before = heap_bytes(&mut allocator);
    let names: Vec<_> = (0..4000)
        .map(|i| handles::kind(&format!("cap_traffic_{i}")))
        .collect();
    let mut kept = Vec::new();
    for i in 0..1_000_000usize {
        let guard = names[i % names.len()].track();
        if i % 100 == 0 {
            kept.push(guard);
        }
    }
    let during = handles::report();
    drop(kept);
    let after_report = handles::report();
    let growth = heap_bytes(&mut allocator) - before;
    assert!(
        growth < 2 << 20,
        "the heap grew by {growth} bytes over a million opens"
    );
    assert_eq!(during.kinds.len(), MAX_KINDS + 1);
    // 5001 names were folded; distinct ones are counted up to 4096, then it says so.
    assert_eq!(during.folded_kinds, 4096);
    assert!(during.folded_kinds_saturated);
    assert!(during.sampling.table_used <= TABLE_CAPACITY);
    assert!(during.sampling.sites_used <= during.sampling.site_capacity);
    let other = during.kinds.iter().find(|k| k.kind == OTHER).unwrap();
    assert_eq!(other.open, 10_000);
    assert!(other.sites.len() <= handles::SITES_PER_KIND);

    // Closing everything empties the sampled table again.
    let other = after_report.kinds.iter().find(|k| k.kind == OTHER).unwrap();
    assert_eq!(other.open, 0);
    assert_eq!(other.opened, 1_001_001);
    assert_eq!(after_report.sampling.table_used, 0);
    assert_eq!(after_report.sampling.sites_used, 0);

    // Keeping more sampled handles open than the table holds: the rest are counted (with no
    // capture budget, which would otherwise slow the sampling of this burst down).
    handles::set_capture_budget(0);
    handles::set_default_sample_every(1);
    let many: Vec<HandleGuard> = (0..TABLE_CAPACITY + 100).map(|_| track("cap_0")).collect();
    let full = handles::report();
    assert_eq!(full.sampling.table_used, TABLE_CAPACITY);
    assert!(full.sampling.dropped_table_full >= 100);
    let cap0 = full.kinds.iter().find(|k| k.kind == "cap_0").unwrap();
    assert_eq!(cap0.open, TABLE_CAPACITY as u64 + 100);
    drop(many);
    assert_eq!(handles::report().sampling.table_used, 0);
}
