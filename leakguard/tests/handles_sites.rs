//! Creation sites: sampled opens record their call stack, symbolized when a report asks.
#![allow(clippy::unwrap_used)]

use leakguard::handles::{self, KindConfig, KindReport};
use leakguard::{HandleGuard, Tracked, track};

fn kind_report(name: &str) -> KindReport {
    handles::report()
        .kinds
        .into_iter()
        .find(|k| k.kind == name)
        .unwrap()
}

#[inline(never)]
fn open_suspect_connection() -> HandleGuard {
    track("sites_suspect")
}

#[inline(never)]
fn open_other_connection() -> HandleGuard {
    track("sites_suspect")
}

#[test]
fn a_suspect_kind_names_the_function_that_opened_each_handle() {
    let _warm = track("sites_suspect");
    assert!(handles::set_suspect("sites_suspect", true));
    let a: Vec<HandleGuard> = (0..3).map(|_| open_suspect_connection()).collect();
    let b = open_other_connection();
    assert!(a.iter().all(HandleGuard::is_sampled));

    let k = kind_report("sites_suspect");
    assert!(k.suspect);
    assert_eq!(k.sample_every, 1);
    assert_eq!(k.sampled_open, 4);
    let top = &k.sites[0];
    assert_eq!(top.sampled_open, 3);
    assert_eq!(top.estimated_open, 3);
    let function = top.function.as_deref().unwrap();
    assert!(function.contains("open_suspect_connection"), "{k:#?}");
    assert!(
        top.location
            .as_deref()
            .unwrap()
            .contains("handles_sites.rs"),
        "{top:?}"
    );
    assert!(top.frames[0].contains("open_suspect_connection"));
    assert!(
        top.frames
            .iter()
            .any(|f| f.contains("a_suspect_kind_names_the_function_that_opened_each_handle"))
    );
    assert!(
        k.sites[1]
            .function
            .as_deref()
            .unwrap()
            .contains("open_other_connection")
    );

    // Back to normal sampling: new opens are not all sampled any more.
    assert!(handles::set_suspect("sites_suspect", false));
    let later: Vec<HandleGuard> = (0..50).map(|_| open_suspect_connection()).collect();
    assert!(later.iter().filter(|g| g.is_sampled()).count() < 10);
    drop((a, b, later));
    assert_eq!(kind_report("sites_suspect").sampled_open, 0);
}

#[inline(never)]
fn open_tracked_file() -> Tracked<Vec<u8>> {
    Tracked::new(vec![1, 2, 3], "sites_tracked")
}

#[test]
fn a_tracked_value_names_the_function_that_wrapped_it() {
    handles::configure("sites_tracked", KindConfig::new().sample_every(1)).unwrap();
    let file = open_tracked_file();
    let k = kind_report("sites_tracked");
    let function = k.sites[0].function.as_deref().unwrap();
    assert!(function.contains("open_tracked_file"), "{k:#?}");
    drop(file);
}

#[test]
fn sampling_one_in_n_estimates_the_open_count() {
    handles::configure("sites_one_in_16", KindConfig::new().sample_every(16)).unwrap();
    let open: Vec<HandleGuard> = (0..16_000).map(|_| track("sites_one_in_16")).collect();
    let k = kind_report("sites_one_in_16");
    assert_eq!(k.open, 16_000);
    assert!((700..1300).contains(&k.sampled_open), "{}", k.sampled_open);
    let estimated: u64 = k.sites.iter().map(|s| s.estimated_open).sum();
    assert!(
        (11_000..21_000).contains(&estimated),
        "estimated {estimated} of 16000"
    );
    drop(open);
}

#[test]
fn a_kind_sampled_never_records_no_site() {
    handles::configure("sites_never", KindConfig::new().sample_every(0)).unwrap();
    let open: Vec<HandleGuard> = (0..1000).map(|_| track("sites_never")).collect();
    assert!(open.iter().all(|g| !g.is_sampled()));
    let k = kind_report("sites_never");
    assert_eq!((k.open, k.sampled_open, k.sites.len()), (1000, 0, 0));
}

#[test]
fn marking_an_unknown_kind_suspect_does_not_create_it() {
    assert!(!handles::set_suspect("sites_no_such_kind", true));
    assert!(
        !handles::report()
            .kinds
            .iter()
            .any(|k| k.kind == "sites_no_such_kind")
    );
}
