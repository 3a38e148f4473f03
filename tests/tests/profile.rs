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

fn thread_peak_reset() {
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
}

/// The calling thread's peak of allocated minus freed bytes since the last reset.
fn thread_peak() -> u64 {
    // SAFETY: `thread.peak.read` is documented as a readable uint64_t.
    unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.peak.read\0") }.unwrap()
}

/// jemalloc's `prof.reset`: forgets what was sampled and samples one allocation every `2^lg`
/// bytes from now on.
fn prof_reset(lg: usize) {
    // SAFETY: `prof.reset` is documented as writable with a size_t (the new lg_sample).
    unsafe { tikv_jemalloc_ctl::raw::write::<usize>(b"prof.reset\0", lg) }.unwrap();
}

/// Puts the sample period back to this binary's when dropped (a failed test included).
struct SampleEveryAllocation;

impl SampleEveryAllocation {
    fn start() -> Self {
        prof_reset(0);
        SampleEveryAllocation
    }
}

impl Drop for SampleEveryAllocation {
    fn drop(&mut self) {
        prof_reset(16);
    }
}

/// Levels of [`walk`]: `2^LEVELS` distinct call paths.
const LEVELS: u32 = 14;

/// Allocates 64 bytes through one of `2^level` call paths, chosen by the bits of `path`
/// (each level calls [`left`] or [`right`]): every path is a distinct stack.
#[inline(never)]
fn walk(path: u32, level: u32, keep: &mut Vec<Vec<u8>>) {
    if level == 0 {
        keep.push(std::hint::black_box(vec![7u8; 64]));
        return;
    }
    if path & 1 == 1 {
        left(path >> 1, level - 1, keep);
    } else {
        right(path >> 1, level - 1, keep);
    }
    std::hint::black_box(());
}

#[inline(never)]
fn left(path: u32, level: u32, keep: &mut Vec<Vec<u8>>) {
    walk(path, level, keep);
    std::hint::black_box(());
}

#[inline(never)]
fn right(path: u32, level: u32, keep: &mut Vec<Vec<u8>>) {
    walk(path, level, keep);
    std::hint::black_box(());
}

/// What the heap profile of a pre-restart dump needs in memory, measured with jemalloc's
/// per-thread peak (`thread.peak`), with a large profile: every allocation sampled, 16384
/// live allocations from as many distinct call paths. The dump parses jemalloc's text as it
/// reads it and keeps the 4096 largest stacks; it symbolizes them only from what earlier
/// profiles resolved, else writes them unsymbolized (addresses and mappings, for
/// `go tool pprof <binary> <file>`); either way what it needs stays under
/// `leakguard::profile::DUMP_NEEDS`, the headroom it asks for before taking one.
#[test]
fn a_heap_profile_needs_less_than_the_headroom_a_dump_asks_for() {
    use leakguard::profile::{DUMP_NEEDS, MAX_STACKS};
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    let mut keep: Vec<Vec<u8>> = Vec::with_capacity(1 << LEVELS);
    let sampling = SampleEveryAllocation::start();
    for path in 0..1u32 << LEVELS {
        walk(path, LEVELS, &mut keep);
    }

    // The call paths were never profiled before: the dump writes them unsymbolized.
    thread_peak_reset();
    let profile = leakguard::profile::heap_profile(0.0).unwrap();
    let (unsymbolized, why) = profile.to_pprof_near_limit();
    let cold = thread_peak();
    drop(sampling);
    let why = why.expect("not symbolized");
    assert!(why.contains("go tool pprof"), "{why}");
    assert_eq!(profile.stacks.len(), MAX_STACKS);
    // More stacks than are held while parsing: the smaller ones were left out as it went.
    // (The thread's first allocations after the reset may still be counted down to the old
    // period and not sampled.)
    assert!(
        profile.stacks.len() + profile.dropped_stacks > 3 * MAX_STACKS,
        "{} left out",
        profile.dropped_stacks
    );
    let u = pprof::decode(&unsymbolized).unwrap();
    assert_eq!(u.sample.len(), MAX_STACKS);
    assert!(u.function.is_empty());
    assert!(
        u.location
            .iter()
            .all(|l| l.line.is_empty() && l.address > 0)
    );
    assert!(!u.mapping.is_empty() && u.mapping.iter().all(|m| !m.has_functions));
    // The executable's mapping comes first: `go tool pprof <binary>` takes it for the binary.
    let exe = std::env::current_exe().unwrap();
    assert_eq!(
        u.string(u.mapping[0].filename),
        exe.to_string_lossy(),
        "{:?}",
        u.mapping
    );
    let ids: std::collections::HashSet<u64> = u.location.iter().map(|l| l.id).collect();
    assert!(
        u.sample
            .iter()
            .all(|s| s.location_id.iter().all(|id| ids.contains(id)))
    );
    let in_exe = u.location.iter().filter(|l| l.mapping_id == 1).count();
    assert!(
        in_exe * 10 >= u.location.len() * 9,
        "{in_exe} of {}",
        u.location.len()
    );
    assert!(
        u.comments().iter().any(|c| c.contains("not symbolized")),
        "{:?}",
        u.comments()
    );

    // The same profile symbolized in the process names the call paths at the same addresses.
    let s = pprof::decode(&profile.to_pprof()).unwrap();
    let addresses: std::collections::HashSet<u64> = u.location.iter().map(|l| l.address).collect();
    let walked = |p: &pprof::Profile| -> Vec<u64> {
        p.function
            .iter()
            .filter(|f| ["profile::left", "profile::right"].contains(&p.string(f.name)))
            .map(|f| f.id)
            .collect()
    };
    assert_eq!(walked(&s).len(), 2, "{} functions", s.function.len());
    let through_walk: Vec<u64> = s
        .location
        .iter()
        .filter(|l| {
            l.line
                .iter()
                .any(|line| walked(&s).contains(&line.function_id))
        })
        .map(|l| l.address)
        .collect();
    assert!(!through_walk.is_empty());
    assert!(through_walk.iter().all(|a| addresses.contains(a)));

    // Now that they were resolved, the dump symbolizes them, from the cache.
    thread_peak_reset();
    let (symbolized, why) = profile.to_pprof_near_limit();
    let warm = thread_peak();
    assert_eq!(why, None);
    let w = pprof::decode(&symbolized).unwrap();
    assert_eq!(walked(&w).len(), 2, "{} functions", w.function.len());
    eprintln!(
        "a heap profile of {} stacks ({} left out): taken and encoded unsymbolized, {} bytes, \
         {cold} bytes at its peak; encoded symbolized from the cache, {} bytes, {warm} bytes \
         at its peak",
        profile.stacks.len(),
        profile.dropped_stacks,
        unsymbolized.len(),
        symbolized.len()
    );
    assert!(
        cold < DUMP_NEEDS && cold + warm < DUMP_NEEDS,
        "taking and encoding a heap profile of {MAX_STACKS} stacks needed {cold} bytes \
         unsymbolized, {cold} + {warm} symbolized, more than the {DUMP_NEEDS} of headroom a \
         dump asks for"
    );
    drop(keep);
}

/// The most a dump symbolizes: as many distinct addresses as the symbol cache holds (three
/// quarters of it, so that this test's own resolving does not empty it), spread over the
/// whole executable code of the binary, so that they name thousands of functions. Symbolized
/// from the cache, they need memory in proportion to them only: under what a dump asks for,
/// less what parsing may need.
#[test]
fn symbolizing_the_most_addresses_a_dump_symbolizes_stays_under_the_headroom() {
    use leakguard::profile::{DUMP_NEEDS, HeapProfile, MAX_SYMBOLS, Stack};
    // The symbol cache is shared: no other test resolves while this one fills it.
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with(&*exe) && l.split_whitespace().nth(1).unwrap().contains('x'))
        .map(|l| {
            let (a, b) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            )
        })
        .next()
        .unwrap();
    let n = MAX_SYMBOLS * 3 / 4;
    let step = (end - start) / n;
    let stacks: Vec<Stack> = (0..n / 4)
        .map(|i| Stack {
            addrs: (0..4).map(|k| start + (i * 4 + k) * step + 1).collect(),
            bytes: 1e6 - i as f64,
            objects: 1.0,
        })
        .collect();
    let profile = HeapProfile {
        sample_period: 1,
        stacks,
        ..HeapProfile::default()
    };
    // Not resolved yet: left unsymbolized.
    assert!(profile.to_pprof_near_limit().1.is_some());
    // Resolved by an earlier profile (the cache may be emptied when full: again then).
    let mut tries = 0;
    let (encoded, peak) = loop {
        let _ = profile.to_pprof();
        thread_peak_reset();
        let (encoded, why) = profile.to_pprof_near_limit();
        let peak = thread_peak();
        if why.is_none() {
            break (encoded, peak);
        }
        tries += 1;
        assert!(tries < 3, "{why:?}");
    };
    let p = pprof::decode(&encoded).unwrap();
    eprintln!(
        "symbolizing {n} addresses spread over {} MiB of code from the cache: {} functions, \
         {} bytes encoded, {peak} bytes at its peak",
        (end - start) >> 20,
        p.function.len(),
        encoded.len()
    );
    assert!(p.function.len() > n / 8, "{}", p.function.len());
    assert!(peak < DUMP_NEEDS - (6 << 20), "{peak}");
}

/// Allocates through a call path no profile saw before the restart dump's.
#[inline(never)]
fn allocate_before_the_restart(bytes: usize) -> Vec<u8> {
    std::hint::black_box(vec![9u8; bytes])
}

/// The pre-restart dump, with stacks no earlier profile resolved: the profile is written
/// unsymbolized, with the process's mappings, and the event and the dump's report say so.
#[test]
fn a_pre_restart_dump_with_unresolved_stacks_writes_them_unsymbolized_and_says_so() {
    let _heap = HEAP.lock().unwrap_or_else(|p| p.into_inner());
    let held = allocate_before_the_restart(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .limit(64 << 30)
        .dump_dir(dir.path())
        .restart_action(leakguard::RestartAction::None)
        .restart_policy(leakguard::restart::RestartPolicy {
            drain_delay: Duration::ZERO,
            ..Default::default()
        })
        .start()
        .unwrap();
    guard.request_restart("test").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let event = loop {
        if let Some(e) = guard
            .events()
            .into_iter()
            .find(|e| e.message.starts_with("post-mortem dump"))
        {
            break e.message;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", guard.events());
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(held);
    assert!(event.contains("heap profile not symbolized"), "{event}");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let (profile, report) = (&files[0], &files[1]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert!(
        report["heap_profile_unsymbolized"]
            .as_str()
            .unwrap()
            .contains("go tool pprof <binary> <file>"),
        "{report}"
    );
    let p = pprof::decode(&std::fs::read(profile).unwrap()).unwrap();
    assert!(!p.sample.is_empty() && p.function.is_empty());
    assert!(p.mapping.iter().all(|m| !m.has_functions));
    assert!(p.location.iter().all(|l| l.line.is_empty()));
    assert!(p.location.iter().any(|l| l.mapping_id == 1));
}
