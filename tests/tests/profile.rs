//! Heap profiles end to end. This test binary makes jemalloc its global allocator and switches
//! jemalloc's profiler on for itself (`enable_heap_profiling!`), leaks through one named
//! function, and reads the profiles its guard serves over real HTTP on loopback.
#![allow(clippy::unwrap_used)]

use leakguard::trend::TrendConfig;
use leakguard::{Guard, ManualClock};
use leakguard_tests::{Running, example_binary, free_port, pprof, request_with, wait_until_ok};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

// One sample every 64 KiB on average (the default is 512 KiB): a short test has enough
// samples to tell sites apart precisely.
leakguard::enable_heap_profiling!("prof:true,lg_prof_sample:16");

/// What the test leaks: kept until the process ends.
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The one function the test leaks through.
#[inline(never)]
fn leak_through_this_function(bytes: usize) {
    let block = std::hint::black_box(vec![0x5Au8; bytes]);
    KEPT.lock().unwrap().push(block);
}

/// Only one test of this binary at a time looks at the heap, so that one's leak does not
/// show in another's profile.
static HEAP: Mutex<()> = Mutex::new(());

const TOKEN: &str = "pr0file";
const LEAF: &str = "profile::leak_through_this_function";

fn get_with_token(addr: SocketAddr, path: &str) -> leakguard_tests::Response {
    let auth = format!("Bearer {TOKEN}");
    request_with("GET", addr, path, &[("Authorization", &auth)]).unwrap()
}

#[test]
fn the_served_profile_and_its_diff_name_the_leaking_function() {
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        leakguard::profile::status().is_active(),
        "{:?}",
        leakguard::profile::status()
    );
    let clock = Arc::new(ManualClock::new(1_800_000_000.0));
    let guard = Guard::builder()
        .ignore_env()
        .addr("127.0.0.1:0")
        .token(TOKEN)
        .limit(64 << 30)
        .clock(clock.clone())
        .background(false)
        .trend(TrendConfig {
            warmup: Duration::from_secs(10),
            window: Duration::from_secs(2),
            min_span: Duration::from_secs(20),
            horizons: vec![Duration::from_secs(60)],
            confirmations: 2,
            ..TrendConfig::default()
        })
        .start()
        .unwrap();
    let addr = guard.endpoint_addr().unwrap();

    // Before the warm-up ends there is no baseline, and the answer says when there will be.
    let early = get_with_token(addr, "/debug/pprof/heap?base=baseline");
    assert_eq!(early.status, 409, "{}", early.text());
    assert!(early.text().contains("warm-up"), "{}", early.text());
    assert_eq!(early.header("x-go-pprof"), Some("1"));

    // A heap profile is sensitive: no token, no profile.
    let refused = request_with("GET", addr, "/debug/pprof/heap", &[]).unwrap();
    assert_eq!(refused.status, 401, "{}", refused.text());

    clock.advance(Duration::from_secs(11));
    guard.tick();
    assert!(
        guard
            .events()
            .iter()
            .any(|e| e.message.starts_with("heap profile baseline taken")),
        "{:?}",
        guard.events()
    );

    // The leak: 1 MiB per second of guard time, through one function, for a minute.
    for _ in 0..60 {
        for _ in 0..4 {
            leak_through_this_function(256 << 10);
        }
        clock.advance(Duration::from_secs(1));
        guard.tick();
    }
    let leaked = 60 << 20;

    // The live heap, over real HTTP, decoded with prost.
    let live = get_with_token(addr, "/debug/pprof/heap");
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(
        live.header("content-type"),
        Some("application/octet-stream")
    );
    let p = pprof::decode(&live.body).unwrap();
    assert_eq!(p.string(p.default_sample_type), "inuse_space");
    assert_eq!(p.period, 1 << 16);
    let top = p.flat_by_function("inuse_space");
    assert_eq!(top[0].0, LEAF, "{top:?}");
    // Sampled, then unbiased: close to what was leaked.
    let estimated = top[0].1 as f64;
    assert!(
        (0.8..1.25).contains(&(estimated / leaked as f64)),
        "{estimated} vs {leaked}"
    );
    assert!(p.mapping.iter().any(|m| m.has_functions));

    // What `go tool pprof http://pprof:TOKEN@host/...` sends: the token as Basic password.
    let basic = request_with(
        "GET",
        addr,
        "/debug/pprof/heap",
        &[("Authorization", "Basic cHByb2Y6cHIwZmlsZQ==")], // pprof:pr0file
    )
    .unwrap();
    assert_eq!(basic.status, 200, "{}", basic.text());
    let wrong = request_with(
        "GET",
        addr,
        "/debug/pprof/heap",
        &[("Authorization", "Basic cHByb2Y6bm9wZQ==")], // pprof:nope
    )
    .unwrap();
    assert_eq!(wrong.status, 401);

    // The diff against the baseline: the leak is the top growing site.
    let diff = get_with_token(addr, "/debug/pprof/heap?base=baseline");
    assert_eq!(diff.status, 200, "{}", diff.text());
    let d = pprof::decode(&diff.body).unwrap();
    assert!(
        d.comments().iter().any(|c| c.contains("baseline")),
        "{:?}",
        d.comments()
    );
    let growth = d.flat_by_function("inuse_space");
    assert_eq!(growth[0].0, LEAF, "{growth:?}");
    assert!(
        (0.8..1.25).contains(&(growth[0].1 as f64 / leaked as f64)),
        "{growth:?}"
    );

    // The leak detector flagged the leak, and the report names the site.
    let report = guard.report();
    assert!(report.leak.suspected, "{}", report.leak.reason);
    let sites = report
        .leak
        .allocation_sites
        .expect("allocation sites in the leak section");
    assert_eq!(sites.sites[0].function, LEAF, "{sites:?}");
    assert!(sites.sites[0].share > 0.8, "{sites:?}");
    assert!(sites.sites[0].bytes > 0 && sites.sites.len() <= leakguard::profile::MAX_SITES);
    assert!(sites.growth_bytes > 0);
    let json: serde_json::Value = serde_json::from_str(&guard.report_json()).unwrap();
    assert_eq!(
        json["leak"]["allocation_sites"]["sites"][0]["function"], LEAF,
        "{}",
        json["leak"]
    );
    // And on demand.
    let now = guard.heap_growth().unwrap();
    assert_eq!(now.sites[0].function, LEAF);

    // An unknown base is refused in words.
    let bad = get_with_token(addr, "/debug/pprof/heap?base=monday");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("baseline"));
}

#[test]
fn an_operator_dump_writes_the_profile_and_the_report() {
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard::builder()
        .ignore_env()
        .addr("127.0.0.1:0")
        .token(TOKEN)
        .dump_dir(dir.path())
        .start()
        .unwrap();
    let addr = guard.endpoint_addr().unwrap();
    let refused = request_with("POST", addr, "/debug/leakguard/dump", &[]).unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let auth = format!("Bearer {TOKEN}");
    let r = request_with(
        "POST",
        addr,
        "/debug/leakguard/dump",
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    let files: Vec<String> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files.len(), 2, "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(report["reason"], "requested by an operator");
    assert!(
        report["report"]["memory"]["resident_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let profile = pprof::decode(&std::fs::read(&files[1]).unwrap()).unwrap();
    assert!(!profile.sample.is_empty());
    assert!(
        guard
            .events()
            .iter()
            .any(|e| e.message.starts_with("post-mortem dump written")),
        "{:?}",
        guard.events()
    );
}

/// The function that grows small vectors by `push`: every growth is a `realloc` of a small
/// block, which `leakguard::Jemalloc` makes an allocation, a copy and a free while the profiler
/// is on.
#[inline(never)]
fn grow_through_this_function(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..len {
        v.push(i as u8);
    }
    std::hint::black_box(v)
}

#[test]
fn a_block_grown_by_copy_is_charged_to_the_function_that_grew_it() {
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    // 6144 vectors of 7 KiB, grown from empty to a capacity of 8 KiB (jemalloc's small size
    // classes end at 14 KiB): 48 MiB live, every block of it allocated inside `realloc`.
    let grown: Vec<Vec<u8>> = (0..6144)
        .map(|_| grow_through_this_function(7 << 10))
        .collect();
    let live = 6144 * (8 << 10);
    let profile = leakguard::profile::heap_profile(0.0).unwrap();
    let p = pprof::decode(&profile.to_pprof()).unwrap();
    let top = p.flat_by_function("inuse_space");
    let site = "profile::grow_through_this_function";
    let bytes = top
        .iter()
        .find(|(f, _)| f == site)
        .map(|(_, b)| *b)
        .unwrap_or_else(|| panic!("{site} not in {top:?}"));
    assert!(
        (0.8..1.25).contains(&(bytes as f64 / live as f64)),
        "{bytes} vs {live}: {top:?}"
    );
    // No leaf is the allocator's own code (its frames are left out of every stack).
    assert!(
        !top.iter()
            .any(|(f, _)| f.contains("Jemalloc") || f.contains("realloc")),
        "{top:?}"
    );
    drop(grown);
}

/// The demo as built by the tests (without the `profiling` feature): the endpoint says how
/// to switch profiles on; a restart leaves the report in the dump directory.
#[test]
fn without_profiling_the_demo_says_how_and_dumps_its_report_before_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut demo = Running::start(
        &example_binary("leaky_service"),
        &[
            ("DEMO_ADDR", format!("127.0.0.1:{}", free_port())),
            ("DEMO_LEAK_KIB_PER_SEC", "0".to_owned()),
            ("DEMO_DRAIN_DELAY", "0s".to_owned()),
            ("LEAKGUARD_ADDR", endpoint.to_string()),
            ("LEAKGUARD_TOKEN", TOKEN.to_owned()),
            ("LEAKGUARD_RESTART_ACTION", "exit:3".to_owned()),
            ("LEAKGUARD_DUMP_DIR", dir.path().display().to_string()),
        ],
    );
    assert!(
        wait_until_ok(endpoint, "/healthz", Duration::from_secs(60)),
        "{}",
        demo.text()
    );
    let r = get_with_token(endpoint, "/debug/pprof/heap");
    assert!((400..500).contains(&r.status), "{}", r.status);
    assert_eq!(r.header("x-go-pprof"), Some("1"));
    assert!(
        r.text().contains("_RJEM_MALLOC_CONF=prof:true"),
        "{}",
        r.text()
    );

    let auth = format!("Bearer {TOKEN}");
    let restart = request_with(
        "POST",
        endpoint,
        "/debug/leakguard/restart",
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(restart.status, 202, "{}", restart.text());
    assert_eq!(demo.wait_exit(Duration::from_secs(60)), Some(3));
    let names: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}\n{}", demo.text());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&names[0]).unwrap()).unwrap();
    assert_eq!(
        report["reason"],
        "before a graceful restart (requested by an operator)"
    );
    assert!(
        report["heap_profile_error"]
            .as_str()
            .unwrap()
            .contains("_RJEM_MALLOC_CONF"),
        "{report}"
    );
    assert!(
        report["report"]["restart"]["in_progress"]
            .as_bool()
            .unwrap()
    );
}

#[inline(never)]
fn leak_through_another_function(bytes: usize) {
    KEPT.lock().unwrap().push(vec![3u8; bytes]);
}

/// What the heap profile of a pre-restart dump needs in memory, measured with jemalloc's
/// per-thread peak (`thread.peak`): taking the profile, symbolizing its stacks (the first time
/// in this process or not, depending on the order the tests run in) and encoding it stay under
/// the 64 MiB of headroom the dump asks for before it takes one.
#[test]
fn a_heap_profile_needs_less_than_the_headroom_a_dump_asks_for() {
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..64 {
        leak_through_this_function(64 << 10);
        leak_through_another_function(64 << 10);
    }
    // SAFETY: `thread.peak.reset` is a void mallctl: no old or new value.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.peak.reset".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(rc, 0, "thread.peak.reset");
    let profile = leakguard::profile::heap_profile(0.0).unwrap();
    let encoded = profile.to_pprof();
    // SAFETY: `thread.peak.read` is documented as a readable uint64_t.
    let peak = unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.peak.read\0") }.unwrap();
    assert!(!encoded.is_empty());
    let stacks = pprof::decode(&encoded).unwrap().sample.len();
    eprintln!(
        "a heap profile of {stacks} stacks, {} bytes encoded, needed {peak} bytes at its peak",
        encoded.len()
    );
    assert!(
        peak < 64 << 20,
        "taking a heap profile of {stacks} stacks needed {peak} bytes, more than the 64 MiB \
         headroom a dump asks for"
    );
}
