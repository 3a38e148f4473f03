//! Cost of one sample: what the watchdog pays per interval, and each source on its own.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench sample
//! ```
//!
//! Groups:
//! - `sample`: `Sampler::sample` (all sources) and `Guard::tick` (the sample plus limit,
//!   thresholds, history and the metrics the sampler thread records). The sampler takes a
//!   full reading every `FULL_EVERY` of clock time and fast readings between, and reads the
//!   allocator on a cadence set by what that costs (`Sampler::allocator_every`); driven by a
//!   `ManualClock`, `*_fast` (a step of 0: `/proc` and cgroup only) and `*_full` (a step of
//!   `FULL_EVERY`: everything, the allocator included) take only one kind, and `*_every_1s` /
//!   `*_every_100ms` advance the clock by the sampling interval per call, so their time per
//!   call is the amortized cost the watchdog pays at that interval;
//! - `process`, `cgroup`: `ProcReader::read` and `CgroupReader::read`, fast and full readings;
//!   a full process reading classifies every open fd, so it is also measured with more fds;
//! - `allocator`: `Allocator::read`, jemalloc (the global allocator here; also split into the
//!   `epoch` advance and the six statistics reads) and glibc `mallinfo2` (which under
//!   jemalloc measures only what C code allocates with `malloc`);
//! - `procfs`: the bare system calls behind the sources, with no parsing, to show which
//!   file dominates;
//! - `endpoint`: rendering `/metrics` and the JSON report;
//! - `arenas`: jemalloc's `epoch` merges the statistics of every arena in use, and a
//!   multi-threaded service uses all of them (4 per CPU by default): the jemalloc reading with
//!   more and more arenas in use, then the sample and the tick again with all of them. Run
//!   with `_RJEM_MALLOC_CONF=narenas:64` for up to 64.
//!
//! Then a table of CPU time per call (the thread's, system calls included; other load on the
//! machine does not inflate it as it does wall time) of the headline costs with 1, 2, 4 …
//! arenas in use; `SAMPLE_BENCH_CPU_ONLY=1` runs only that table.
//!
//! At the end it prints the median and interquartile range of the time per call of every
//! benchmark that ran, from criterion's raw samples (`<target>/criterion/*/*/new/sample.json`).

use criterion::{BenchmarkId, Criterion, criterion_group};
use leakguard::allocator::{Allocator, AllocatorChoice, AllocatorKind};
use leakguard::cgroup::CgroupReader;
use leakguard::process::ProcReader;
use leakguard::sample::FULL_EVERY;
use leakguard::{Guard, ManualClock, Sampler, SystemClock};
use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

fn sample(c: &mut Criterion) {
    let clock = SystemClock::new();
    let mut sampler = Sampler::new(AllocatorChoice::Auto);
    assert_eq!(
        sampler.allocator_status().kind,
        AllocatorKind::Jemalloc,
        "the bench must measure the jemalloc backend: {:?}",
        sampler.allocator_status()
    );
    let first = sampler.sample(&clock);
    assert!(first.errors.is_empty(), "sample errors: {:?}", first.errors);
    eprintln!(
        "# machine: {}; cgroup: {}; open fds: {}; full reading every {:?}",
        leakguard_benches::machine(),
        first.cgroup.as_ref().map_or_else(
            || "none".to_owned(),
            |c| format!("{:?} {}", c.version, c.path)
        ),
        first.process.open_fds,
        FULL_EVERY,
    );
    drop(sampler);

    let mut g = c.benchmark_group("sample");
    sampler_benches(&mut g, "", &["fast", "full", "every_1s", "every_100ms"]);
    guard_benches(&mut g, "", &["every_1s", "every_100ms"]);
    g.finish();

    let mut g = c.benchmark_group("endpoint");
    let guard = Guard::builder()
        .ignore_env()
        .no_endpoint()
        .background(false)
        .start()
        .expect("a guard starts");
    g.bench_function("render_metrics", |b| {
        b.iter(|| black_box(guard.render_metrics()))
    });
    g.bench_function("report_json", |b| b.iter(|| black_box(guard.report_json())));
    g.finish();
    drop(guard);
}

/// The sampler takes a full reading on its first call and then once every [`FULL_EVERY`] of
/// its clock's time, fast readings otherwise. Driving it with a [`ManualClock`] that advances
/// by a fixed step per call reproduces what the watchdog pays at that interval; a step of 0
/// gives only fast readings and a step of [`FULL_EVERY`] only full ones.
fn sampler_benches(g: &mut Group<'_>, suffix: &str, only: &[&str]) {
    for (name, step) in steps().into_iter().filter(|(n, _)| only.contains(n)) {
        let clock = ManualClock::new(1_700_000_000.0);
        let mut sampler = Sampler::new(AllocatorChoice::Auto);
        black_box(sampler.sample(&clock));
        g.bench_function(format!("sampler_{name}{suffix}"), |b| {
            b.iter(|| {
                clock.advance(step);
                black_box(sampler.sample(&clock))
            })
        });
        eprintln!(
            "# sampler_{name}{suffix}: the allocator is read every {:.2} s of clock time",
            sampler.allocator_every().as_secs_f64()
        );
    }
}

/// `Guard::tick` (sample, limit, thresholds, history, metrics through the `metrics` facade,
/// with no recorder installed) at the watchdog's intervals.
fn guard_benches(g: &mut Group<'_>, suffix: &str, only: &[&str]) {
    for (name, step) in steps().into_iter().filter(|(n, _)| only.contains(n)) {
        let clock = ManualClock::new(1_700_000_000.0);
        let guard = Guard::builder()
            .ignore_env()
            .no_endpoint()
            .background(false)
            .clock(Arc::new(clock.clone()))
            .start()
            .expect("a guard starts");
        g.bench_function(format!("guard_tick_{name}{suffix}"), |b| {
            b.iter(|| {
                clock.advance(step);
                black_box(guard.tick())
            })
        });
    }
}

/// Clock steps per sample: only fast readings, only full ones, and the default and a short
/// sampling interval (amortized).
fn steps() -> Vec<(&'static str, Duration)> {
    vec![
        ("fast", Duration::ZERO),
        ("full", FULL_EVERY),
        ("every_1s", Duration::from_secs(1)),
        ("every_100ms", Duration::from_millis(100)),
    ]
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn process(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    let mut reader = ProcReader::new();
    reader.read(true).expect("a first process reading");
    g.bench_function("read_fast", |b| {
        b.iter(|| black_box(reader.read(false).expect("fast reading")))
    });
    g.bench_function("read_full", |b| {
        b.iter(|| black_box(reader.read(true).expect("full reading")))
    });
    // A full reading classifies every descriptor: its cost grows with the fds a service holds.
    for extra in [100usize, 1000] {
        // (A fast reading does not depend on the number of fds: measured at 1000 only.)
        let files: Vec<File> = (0..extra)
            .map(|_| File::open("/dev/null").expect("open /dev/null"))
            .collect();
        let fds = reader.read(true).expect("full reading").open_fds;
        g.bench_with_input(BenchmarkId::new("read_full_fds", fds), &fds, |b, _| {
            b.iter(|| black_box(reader.read(true).expect("full reading")))
        });
        if extra == 1000 {
            g.bench_with_input(BenchmarkId::new("read_fast_fds", fds), &fds, |b, _| {
                b.iter(|| black_box(reader.read(false).expect("fast reading")))
            });
        }
        drop(files);
    }
    g.finish();
}

fn cgroup(c: &mut Criterion) {
    let mut g = c.benchmark_group("cgroup");
    let mut reader = CgroupReader::new();
    let first = reader.read(true).expect("a first cgroup reading");
    if first.is_none() {
        eprintln!("# no memory cgroup applies to this process: the cgroup numbers are trivial");
    }
    g.bench_function("read_fast", |b| {
        b.iter(|| black_box(reader.read(false).expect("fast reading")))
    });
    g.bench_function("read_full", |b| {
        b.iter(|| black_box(reader.read(true).expect("full reading")))
    });
    g.finish();
}

fn allocator(c: &mut Criterion) {
    let mut g = c.benchmark_group("allocator");
    let mut jemalloc = Allocator::new(AllocatorChoice::Auto);
    assert_eq!(jemalloc.status().kind, AllocatorKind::Jemalloc);
    let (used, slots) = leakguard_benches::jemalloc::arenas_in_use().expect("arenas");
    eprintln!("# jemalloc arenas in use: {used} of {slots}");
    g.bench_function("jemalloc_read", |b| {
        b.iter(|| black_box(jemalloc.read().expect("jemalloc stats")))
    });
    // The two halves of a jemalloc reading: the epoch advance (which merges every arena's
    // statistics into the totals), and the six reads of the totals by MIB.
    let epoch = tikv_jemalloc_ctl::epoch::mib().expect("epoch mib");
    g.bench_function("jemalloc_epoch_advance", |b| {
        b.iter(|| black_box(epoch.advance().expect("epoch")))
    });
    let reads = JemallocReads::new();
    g.bench_function("jemalloc_six_stats_reads", |b| {
        b.iter(|| black_box(reads.read()))
    });
    let mut glibc = Allocator::new(AllocatorChoice::Glibc);
    if glibc.status().kind == AllocatorKind::Glibc {
        if let Some(note) = &glibc.status().note {
            eprintln!("# glibc backend under jemalloc: {note}");
        }
        g.bench_function("glibc_mallinfo2_read", |b| {
            b.iter(|| black_box(glibc.read().expect("mallinfo2")))
        });
    }
    g.finish();
}

/// The six statistics leakguard reads, by MIB, without advancing the epoch.
struct JemallocReads {
    allocated: tikv_jemalloc_ctl::stats::allocated_mib,
    active: tikv_jemalloc_ctl::stats::active_mib,
    resident: tikv_jemalloc_ctl::stats::resident_mib,
    mapped: tikv_jemalloc_ctl::stats::mapped_mib,
    retained: tikv_jemalloc_ctl::stats::retained_mib,
    metadata: tikv_jemalloc_ctl::stats::metadata_mib,
}

impl JemallocReads {
    fn new() -> Self {
        use tikv_jemalloc_ctl::stats;
        Self {
            allocated: stats::allocated::mib().expect("mib"),
            active: stats::active::mib().expect("mib"),
            resident: stats::resident::mib().expect("mib"),
            mapped: stats::mapped::mib().expect("mib"),
            retained: stats::retained::mib().expect("mib"),
            metadata: stats::metadata::mib().expect("mib"),
        }
    }

    fn read(&self) -> [usize; 6] {
        [
            self.allocated.read().expect("stats.allocated"),
            self.active.read().expect("stats.active"),
            self.resident.read().expect("stats.resident"),
            self.mapped.read().expect("stats.mapped"),
            self.retained.read().expect("stats.retained"),
            self.metadata.read().expect("stats.metadata"),
        ]
    }
}

/// jemalloc's `epoch` merges the statistics of every arena in use. A thread is given an
/// arena of its own while there are unused ones (4 per CPU by default), so a service with
/// many threads uses them all, and a guard's sampler thread alone makes two. The jemalloc
/// reading, the sample and the guard's tick at 1 s with more and more arenas in use, and the
/// fast and full samples with all of them.
fn arenas(c: &mut Criterion) {
    let mut g = c.benchmark_group("arenas");
    let mut jemalloc = Allocator::new(AllocatorChoice::Auto);
    let (_, slots) = leakguard_benches::jemalloc::arenas_in_use().expect("arenas");
    let mut measured = Vec::new();
    // 2, 4, 8 … up to every arena there is: 9 on 2 CPUs by default; more with
    // `_RJEM_MALLOC_CONF=narenas:64` (what a 16-CPU host has).
    let wants = [2, 4, 8, 16, 32, 64, 128]
        .into_iter()
        .filter(|&w| w < slots)
        .chain([slots.saturating_sub(1)]);
    for want in wants {
        let used = leakguard_benches::jemalloc::use_arenas(want).expect("arenas");
        if measured.contains(&used) {
            continue;
        }
        measured.push(used);
        eprintln!("# jemalloc arenas in use: {used} of {slots}");
        g.bench_function(format!("jemalloc_read_{used}_arenas"), |b| {
            b.iter(|| black_box(jemalloc.read().expect("jemalloc stats")))
        });
        let suffix = format!("_{used}_arenas");
        sampler_benches(&mut g, &suffix, &["every_1s"]);
        guard_benches(&mut g, &suffix, &["every_1s"]);
    }
    let used = measured.last().copied().unwrap_or_default();
    sampler_benches(&mut g, &format!("_{used}_arenas"), &["fast", "full"]);
    g.finish();
}

/// A procfs or cgroupfs file kept open and re-read at offset 0, as the readers do.
struct Kept {
    file: File,
    buf: Vec<u8>,
}

impl Kept {
    fn open(path: impl Into<PathBuf>) -> Option<Self> {
        let file = File::open(path.into()).ok()?;
        Some(Self {
            file,
            buf: vec![0; 64 * 1024],
        })
    }

    fn pread(&mut self) -> usize {
        self.file.read_at(&mut self.buf, 0).expect("pread")
    }
}

fn procfs(c: &mut Criterion) {
    let mut g = c.benchmark_group("procfs");
    for name in ["statm", "stat", "status", "limits"] {
        let Some(mut kept) = Kept::open(format!("/proc/self/{name}")) else {
            continue;
        };
        g.bench_function(format!("pread_self_{name}"), |b| {
            b.iter(|| black_box(kept.pread()))
        });
    }
    for name in ["fd", "task"] {
        let dir = File::open(format!("/proc/self/{name}")).expect("open a /proc/self directory");
        g.bench_function(format!("fstat_self_{name}_dir"), |b| {
            b.iter(|| black_box(dir.metadata().expect("fstat")))
        });
    }
    // What a full reading does per descriptor: readlink (and fstat) of one fd.
    let fd_dir = File::open("/proc/self/fd").expect("open /proc/self/fd");
    let probe = File::open("/dev/null").expect("open /dev/null");
    let name = std::ffi::CString::new(probe.as_raw_fd().to_string()).expect("fd number");
    g.bench_function("readlink_one_fd", |b| {
        let mut target = [0u8; 64];
        b.iter(|| {
            // SAFETY: `name` is NUL-terminated, `target` is writable for its length.
            let n = unsafe {
                libc::readlinkat(
                    fd_dir.as_raw_fd(),
                    name.as_ptr(),
                    target.as_mut_ptr().cast(),
                    target.len(),
                )
            };
            black_box(n)
        })
    });
    g.bench_function("fstat_one_fd", |b| {
        b.iter(|| black_box(probe.metadata().expect("fstat")))
    });
    // What a full cgroup reading opens and reads each time.
    for path in ["/proc/self/cgroup", "/proc/self/mountinfo"] {
        let label = path.trim_start_matches("/proc/self/");
        g.bench_function(format!("open_read_self_{label}"), |b| {
            b.iter(|| black_box(std::fs::read(path).expect("read")))
        });
    }
    // The cgroup counters a fast reading re-reads (v2 or v1 names), in this process's cgroup.
    if let Some(dir) = memory_cgroup_dir() {
        for name in [
            "memory.current",
            "memory.events",
            "memory.usage_in_bytes",
            "memory.oom_control",
        ] {
            if let Some(mut kept) = Kept::open(dir.join(name)) {
                g.bench_function(format!("pread_cgroup_{name}"), |b| {
                    b.iter(|| black_box(kept.pread()))
                });
            }
        }
        for name in ["memory.max", "memory.limit_in_bytes"] {
            let path = dir.join(name);
            if path.exists() {
                g.bench_function(format!("open_read_cgroup_{name}"), |b| {
                    b.iter(|| black_box(std::fs::read(&path).expect("read")))
                });
            }
        }
    }
    g.finish();
}

/// This process's memory cgroup directory, found the simple way (the mount point plus the
/// path in `/proc/self/cgroup`); `None` where that does not exist.
fn memory_cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            candidates.push(PathBuf::from("/sys/fs/cgroup/memory").join(rel));
        } else if controllers.is_empty() {
            candidates.push(PathBuf::from("/sys/fs/cgroup").join(rel));
            candidates.push(PathBuf::from("/sys/fs/cgroup/unified").join(rel));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("memory.current").exists() || d.join("memory.usage_in_bytes").exists())
}

fn config() -> Criterion {
    // A shared, noisy 2-core machine: many short samples, medians read from the estimates.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60)
}

criterion_group! {
    name = benches;
    config = config();
    targets = sample, process, cgroup, allocator, procfs, arenas
}

/// CPU time of the calling thread (its system calls included). Unlike wall time, other load on
/// a shared machine does not add to it (only through caches and frequency).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU microseconds per call of `f`: the median over 7 batches of `calls` calls.
fn cpu_per_call(calls: u32, mut f: impl FnMut()) -> f64 {
    let mut batches: Vec<f64> = (0..7)
        .map(|_| {
            let start = thread_cpu();
            for _ in 0..calls {
                f();
            }
            (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(calls)
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[3]
}

/// The headline costs in CPU time per call (this thread's, system calls included), with more
/// and more jemalloc arenas in use: what a sample costs whatever else runs on the machine.
/// `SAMPLE_BENCH_CPU_ONLY=1` runs only this.
fn cpu_table() {
    let (_, slots) = leakguard_benches::jemalloc::arenas_in_use().expect("arenas");
    println!("\n## CPU time per call, µs (median of 7 batches; this thread's CPU time)");
    println!(
        "| arenas in use | jemalloc_read | sampler_fast | sampler_every_1s | sampler_every_100ms | guard_tick_every_1s | allocator read every |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let wants = [1, 2, 4, 8, 16, 32, 64, 128]
        .into_iter()
        .filter(|&w| w < slots)
        .chain([slots.saturating_sub(1)]);
    let mut measured = Vec::new();
    for want in wants {
        let used = leakguard_benches::jemalloc::use_arenas(want).expect("arenas");
        if measured.contains(&used) {
            continue;
        }
        measured.push(used);
        let mut jemalloc = Allocator::new(AllocatorChoice::Auto);
        let read = cpu_per_call(200, || {
            black_box(jemalloc.read().expect("jemalloc stats"));
        });
        let mut per_step = Vec::new();
        let mut every = Duration::ZERO;
        for step in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_millis(100),
        ] {
            let clock = ManualClock::new(1_700_000_000.0);
            let mut sampler = Sampler::new(AllocatorChoice::Auto);
            black_box(sampler.sample(&clock));
            per_step.push(cpu_per_call(600, || {
                clock.advance(step);
                black_box(sampler.sample(&clock));
            }));
            every = every.max(sampler.allocator_every());
        }
        let clock = ManualClock::new(1_700_000_000.0);
        let guard = Guard::builder()
            .ignore_env()
            .no_endpoint()
            .background(false)
            .clock(Arc::new(clock.clone()))
            .start()
            .expect("a guard starts");
        // Few calls: a tick also reads the handles' OS view (`/proc/net/tcp`), whose cost is
        // that of the network namespace's whole socket table.
        let tick = cpu_per_call(30, || {
            clock.advance(Duration::from_secs(1));
            black_box(guard.tick());
        });
        drop(guard);
        println!(
            "| {used} | {read:.1} | {:.1} | {:.1} | {:.1} | {tick:.1} | {:.1} s |",
            per_step[0],
            per_step[1],
            per_step[2],
            every.as_secs_f64()
        );
    }
}

fn main() {
    if std::env::var_os("SAMPLE_BENCH_CPU_ONLY").is_some() {
        cpu_table();
        return;
    }
    let started = SystemTime::now();
    benches();
    cpu_table();
    Criterion::default().configure_from_args().final_summary();
    print_medians(started);
}

/// Where criterion writes its results (the same rules criterion follows).
fn criterion_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(Path::new(&target).join("criterion"));
    }
    // <target>/release/deps/sample-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// Prints the median and interquartile range of the time per call of every benchmark whose
/// results were written since `since`, in the order they ran.
fn print_medians(since: SystemTime) {
    let Some(home) = criterion_home() else {
        return;
    };
    let mut rows: Vec<(SystemTime, String, leakguard_benches::Summary)> = Vec::new();
    let mut dirs = vec![home];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.file_name().is_some_and(|n| n != "report") {
                dirs.push(path);
                continue;
            }
            if path.file_name().is_none_or(|n| n != "sample.json")
                || path
                    .parent()
                    .and_then(Path::file_name)
                    .is_none_or(|n| n != "new")
            {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if modified < since {
                continue;
            }
            if let Some((id, summary)) = read_result(&path) {
                rows.push((modified, id, summary));
            }
        }
    }
    if rows.is_empty() {
        return; // e.g. `cargo test --benches`: criterion's test mode saves nothing
    }
    rows.sort_by_key(|a| a.0);
    println!();
    println!(
        "{:<48} {:>12} {:>25}",
        "benchmark (time per call)", "median", "IQR"
    );
    for (_, id, s) in rows {
        println!(
            "{id:<48} {:>12} {:>12} .. {:<10}",
            human(s.median),
            human(s.q1),
            human(s.q3)
        );
    }
}

/// The id and the per-call times of one benchmark, from its `new/sample.json` (and the
/// `benchmark.json` next to it).
fn read_result(sample: &Path) -> Option<(String, leakguard_benches::Summary)> {
    let dir = sample.parent()?;
    let bench: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let data: serde_json::Value = serde_json::from_slice(&std::fs::read(sample).ok()?).ok()?;
    let iters = data.get("iters")?.as_array()?;
    let times = data.get("times")?.as_array()?;
    let per_call: Vec<f64> = iters
        .iter()
        .zip(times)
        .filter_map(|(n, t)| Some(t.as_f64()? / n.as_f64()?))
        .collect();
    let id = bench.get("full_id")?.as_str()?.to_owned();
    Some((id, leakguard_benches::Summary::of(&per_call)?))
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
