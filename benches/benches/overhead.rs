//! Overhead of leakguard on a real HTTP service under load: an axum service driven by `wrk`
//! (Debian package `wrk`), with everything a user turns on, against the same binary with
//! leakguard off.
//!
//! ```sh
//! apt-get install wrk
//! cargo bench -p leakguard-benches --bench overhead                          # off / on
//! cargo bench -p leakguard-benches --features profiling --bench overhead     # + heap profiling
//! cargo bench -p leakguard-benches --bench overhead -- --rounds 10 --secs 4 --conns 32
//! ```
//!
//! The service is this binary re-run as a child process (`--serve off|on`): a tokio runtime
//! with 2 worker threads serving `GET /item/{id}` with axum. Each request looks its id up in a
//! leakguard `LruCache<u64, Arc<str>>` of 10,000 entries and, on a miss, renders a ~0.5 KiB
//! value (a few small allocations) and inserts it; the answer is a JSON-ish body of ~0.6 KiB.
//! wrk (1 thread, `--conns` connections) asks for ids drawn uniformly from 1–20,000, so about
//! half the requests miss and evict.
//!
//! - `off`: no guard, no handle tracking, an unnamed cache (what the service is without
//!   leakguard; the cache is the service's own data structure either way);
//! - `off_again`: a second `off` process, as a control: its ratio to `off` is the noise floor;
//! - `on`: a guard sampling every second with its built-in endpoint on loopback, scraped every
//!   second (`GET /metrics`, a fresh connection each time, as Prometheus does) while wrk runs;
//!   every request tracked as a handle of kind `request` while it is served; the cache named
//!   `items` (its statistics in the report and `/metrics`);
//! - `on_unsampled`: `on` with the request kind's stack sampling off (`sample_every(0)`),
//!   which tells how much of `on`'s cost is the unwinder capturing the creation stack of one
//!   request handle in 128; no target;
//! - `on_prof` (with `--features profiling`): `on`, in a process started with
//!   `_RJEM_MALLOC_CONF=prof:true`, jemalloc's heap profiler on at its default sample rate.
//!
//! Every round starts a fresh process per variant, all at once, warms each up (2 s of wrk) and
//! gives each `--secs` seconds of wrk, in an order that rotates every round: a process's own
//! luck (its address-space layout, hash seeds, where its threads run) then varies from round
//! to round like the rest of the noise instead of biasing one variant for the whole run. Per
//! round, a variant's throughput, p99 latency and requests per CPU second of the service (its CPU time
//! from `/proc/<pid>/stat`, which other processes' load moves much less than throughput) are
//! divided by `off`'s of the same round; the verdict is on the median of those ratios over the
//! rounds: throughput and requests per CPU second ≥ 0.99 and p99 ≤ 1.05 for `on`, ≥ 0.97 for
//! `on_prof`. The control (`off_again` against `off`) gives each ratio a noise floor,
//! max(|median − 1|, IQR / 2). A target missed by more than its noise floor is a FAIL (exit
//! status 1); one met with a noise floor within the target's margin is a PASS; anything else
//! is INCONCLUSIVE (status 2): a shared machine's noise can hide a 1% cost. It also prints the
//! CPU time of leakguard's own threads in the service (the sampler and the endpoint's, from
//! `/proc/<pid>/task/*/stat`), the background cost a user pays whatever the request rate.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it does a smoke run: one short round of
//! `off` and `on`, checks that the scrapes see the cache and the handles, and gives no verdict.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing;
use leakguard::cache::LruCache;
use leakguard::{Guard, HandleKind};
use leakguard_benches::{Summary, machine};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// Distinct ids wrk asks for.
const KEYS: u64 = 20_000;
/// Entries the service's cache holds.
const CAPACITY: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// The service (child process).

struct App {
    cache: LruCache<u64, Arc<str>>,
    /// The handle kind of a request, when leakguard is on.
    requests: Option<HandleKind>,
}

/// What a cache miss costs: a value of ~0.5 KiB built from a few small allocations.
fn render(id: u64) -> Arc<str> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let parts: Vec<String> = (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}{:08x}", x >> 40)
        })
        .collect();
    Arc::from(parts.join("-"))
}

async fn item(State(app): State<Arc<App>>, Path(id): Path<u64>) -> String {
    let _request = app.requests.map(HandleKind::track);
    let value = app.cache.get_or_insert_with(id, || render(id));
    format!("{{\"id\":{id},\"value\":\"{value}\"}}\n")
}

/// `mode`: `off`, `on`, or `on-unsampled` (`on` without sampling the request handles' stacks).
fn serve(mode: &str) -> ! {
    let on = mode != "off";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let guard = on.then(|| {
        Guard::builder()
            .ignore_env()
            .addr("127.0.0.1:0")
            .interval(Duration::from_secs(1))
            .start()
            .expect("a guard starts")
    });
    let cache = if on {
        LruCache::builder(CAPACITY).name("items").build()
    } else {
        LruCache::new(CAPACITY)
    };
    let app = Arc::new(App {
        cache,
        requests: on.then(|| {
            if mode == "on-unsampled" {
                leakguard::handles::configure(
                    "request",
                    leakguard::KindConfig::new().sample_every(0),
                )
                .expect("the request kind")
            } else {
                leakguard::handles::kind("request")
            }
        }),
    });
    let router = Router::new()
        .route("/item/{id}", routing::get(item))
        .with_state(Arc::clone(&app));
    let endpoint = guard
        .as_ref()
        .and_then(Guard::endpoint_addr)
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let served: std::io::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("READY {} {endpoint}", listener.local_addr()?);
        std::io::stdout().flush()?;
        axum::serve(listener, router).await
    });
    eprintln!("the service stopped: {served:?}");
    drop(guard);
    std::process::exit(1)
}

// ---------------------------------------------------------------------------------------------
// The driver.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Off,
    OffAgain,
    On,
    OnProf,
    OnUnsampled,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::OffAgain => "off_again",
            Variant::On => "on",
            Variant::OnProf => "on_prof",
            Variant::OnUnsampled => "on_unsampled",
        }
    }
}

/// A running service.
struct Service {
    variant: Variant,
    child: Child,
    addr: SocketAddr,
    endpoint: Option<SocketAddr>,
}

impl Service {
    fn start(variant: Variant) -> Service {
        let mode = match variant {
            Variant::Off | Variant::OffAgain => "off",
            Variant::On | Variant::OnProf => "on",
            Variant::OnUnsampled => "on-unsampled",
        };
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut command = Command::new(exe);
        command
            .args(["--serve", mode])
            .env_remove("_RJEM_MALLOC_CONF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if variant == Variant::OnProf {
            command.env("_RJEM_MALLOC_CONF", "prof:true");
        }
        let mut child = command.spawn().expect("the service starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the service says where it listens");
        let words: Vec<&str> = line.split_whitespace().collect();
        let (addr, endpoint) = match words.as_slice() {
            ["READY", addr, endpoint] => (addr.parse().expect("an address"), endpoint.parse().ok()),
            _ => panic!("unexpected first line from the service: {line:?}"),
        };
        Service {
            variant,
            child,
            addr,
            endpoint,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one wrk run printed.
#[derive(Debug, Clone, Copy, Default)]
struct Wrk {
    requests: u64,
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: u64,
}

fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

fn parse_wrk(out: &str) -> Wrk {
    let mut w = Wrk {
        requests_per_sec: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        ..Wrk::default()
    };
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => w.p50_ms = millis(v).unwrap_or(f64::NAN),
            ["99%", v] => w.p99_ms = millis(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => w.requests_per_sec = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.socket_errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    w
}

/// wrk's Lua script: a uniformly random id per request.
fn script() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("leakguard-overhead-{}.lua", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "math.randomseed(42)\n\
             request = function()\n  \
               return wrk.format(nil, \"/item/\" .. math.random(1, {KEYS}))\n\
             end\n"
        ),
    )
    .expect("write wrk's script");
    path
}

fn wrk(addr: SocketAddr, script: &std::path::Path, conns: u32, secs: u32) -> Wrk {
    let out = Command::new("wrk")
        .args([
            "-t1".to_owned(),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--timeout".into(),
            "5s".into(),
            "--latency".into(),
            "-s".into(),
            script.display().to_string(),
            format!("http://{addr}/"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk (Debian: apt-get install wrk): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = parse_wrk(&text);
    assert!(
        w.requests_per_sec.is_finite() && w.p99_ms.is_finite(),
        "cannot read wrk's output: {text}"
    );
    w
}

/// GETs `path` on a fresh connection; the status and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// Scrapes `/metrics` every second, like Prometheus, until stopped.
struct Scraper {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl Scraper {
    fn start(endpoint: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, failed) = (Arc::clone(&stop), Arc::clone(&failed));
            std::thread::spawn(move || {
                let mut scrapes = 0;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        match get(endpoint, "/metrics") {
                            Ok((200, _)) => scrapes += 1,
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        next += Duration::from_secs(1);
                    }
                    // Pacing only: the scrape interval, checked often enough to stop promptly.
                    std::thread::sleep(Duration::from_millis(20));
                }
                scrapes
            })
        };
        Scraper {
            stop,
            failed,
            thread,
        }
    }

    /// Scrapes done and scrapes that failed.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let done = self.thread.join().unwrap_or(0);
        (done, self.failed.load(Ordering::Relaxed))
    }
}

/// Clock ticks per second of `/proc`'s CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// utime + stime of a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line, seconds, and
/// the thread's name (`comm`).
fn stat_cpu(stat: &str) -> (f64, &str) {
    let (head, after) = stat.rsplit_once(')').unwrap_or(("", ""));
    let name = head.split_once('(').map_or("", |(_, n)| n);
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ((ticks(11) + ticks(12)) / clock_ticks(), name)
}

/// CPU seconds the service has used: (all its threads, living or gone; leakguard's own
/// threads, the ones named `leakguard-*`: the sampler and the endpoint's). Leakguard's threads
/// use well under a millisecond a second, less than one clock tick of `stat` in a round, so
/// their time comes from `schedstat` (nanoseconds) where the kernel has it.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let all = stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()).0;
    let mut ours = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let (cpu, name) = stat_cpu(&stat);
            if name.starts_with("leakguard") {
                // schedstat: time on the CPU (ns), time waiting for it, timeslices.
                let precise = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
                ours += precise.map_or(cpu, |ns| ns / 1e9);
            }
        }
    }
    (all, ours)
}

/// One measured run.
struct Run {
    wrk: Wrk,
    /// Scrapes of `/metrics` during the run.
    scrapes: u64,
    /// The service's CPU microseconds per request (all its threads).
    cpu_us: f64,
    /// CPU seconds that leakguard's own threads used.
    ours_s: f64,
    /// How long the run took, seconds.
    elapsed_s: f64,
}

/// One measured run: wrk on the service, with the scraper on its endpoint if it has one.
fn measure(service: &Service, script: &std::path::Path, conns: u32, secs: u32) -> Run {
    let scraper = service.endpoint.map(Scraper::start);
    let (cpu_before, ours_before) = cpu_seconds(service.child.id());
    let started = Instant::now();
    let w = wrk(service.addr, script, conns, secs);
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_after, ours_after) = cpu_seconds(service.child.id());
    let (scrapes, failed) = scraper.map_or((0, 0), Scraper::stop);
    assert_eq!(failed, 0, "{}: failed scrapes", service.variant.name());
    assert!(
        w.non_2xx == 0 && w.socket_errors == 0,
        "{}: errors under load: {w:?}",
        service.variant.name()
    );
    Run {
        wrk: w,
        scrapes,
        cpu_us: (cpu_after - cpu_before) * 1e6 / w.requests.max(1) as f64,
        ours_s: ours_after - ours_before,
        elapsed_s: elapsed,
    }
}

/// Checks that the `on` service really has everything on: the named cache and the request
/// handles appear in its metrics.
fn check_instrumented(service: &Service) {
    let endpoint = service.endpoint.expect("the guard's endpoint");
    let (status, body) = get(endpoint, "/metrics").expect("a scrape");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"items\""),
        "the named cache in /metrics:\n{body}"
    );
    assert!(
        body.contains("\"request\""),
        "the request handles in /metrics:\n{body}"
    );
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(values: &[f64]) -> f64 {
    Summary::of(values).map_or(f64::NAN, |s| s.median)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(args.get(i + 1).map_or("off", String::as_str));
    }
    let bench = args.iter().any(|a| a == "--bench");
    let rounds = arg(&args, "--rounds", if bench { 10 } else { 1 }) as usize;
    let secs = arg(&args, "--secs", if bench { 4 } else { 1 });
    let conns = arg(&args, "--conns", 32);

    let mut variants = vec![Variant::Off, Variant::On];
    if bench {
        variants.insert(1, Variant::OffAgain);
        variants.push(Variant::OnUnsampled);
        if cfg!(feature = "profiling") {
            variants.push(Variant::OnProf);
        }
    }
    eprintln!(
        "# machine: {}; {rounds} rounds of {secs} s per variant, wrk 1 thread {conns} \
         connections, ids 1-{KEYS}, cache {CAPACITY}; variants: {}{}",
        machine(),
        variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", "),
        if cfg!(feature = "profiling") {
            ""
        } else {
            " (on_prof needs --features profiling)"
        }
    );
    let script = script();
    // runs[variant][round]. Every round starts its own processes: what one process happens to
    // get (its address-space layout, its hash seeds, where its threads land) can favour it by
    // a percent or two for its whole life, which the rounds of one process would not average
    // out; fresh processes turn it into round-to-round noise, which the control measures.
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        let services: Vec<Service> = variants.iter().map(|&v| Service::start(v)).collect();
        for s in &services {
            wrk(s.addr, &script, conns, if bench { 2 } else { 1 });
            if round == 0 && s.endpoint.is_some() {
                check_instrumented(s);
            }
        }
        for k in 0..services.len() {
            let i = (k + round) % services.len();
            runs[i].push(measure(&services[i], &script, conns, secs));
        }
        eprintln!(
            "# round {}: {}",
            round + 1,
            services
                .iter()
                .zip(&runs)
                .map(|(s, r)| format!(
                    "{} {:.0} req/s p99 {:.2} ms {:.1} µs CPU/req",
                    s.variant.name(),
                    r[round].wrk.requests_per_sec,
                    r[round].wrk.p99_ms,
                    r[round].cpu_us
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if round + 1 == rounds
            && let Some(on) = services.iter().find(|s| s.variant == Variant::On)
        {
            check_instrumented(on);
        }
    }
    let _ = std::fs::remove_file(&script);
    if !bench {
        eprintln!("smoke run done (no verdict without --bench)");
        return;
    }
    std::process::exit(verdict(&variants, &runs));
}

/// A ratio of `variant` to `off`, per round.
fn ratios(runs: &[Run], off: &[Run], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().zip(off).map(|(r, o)| f(r) / f(o)).collect()
}

/// How far the control lands from `off`: max(|median - 1|, IQR / 2) of its per-round ratios.
fn spread(ratios: &[f64]) -> f64 {
    Summary::of(ratios).map_or(f64::INFINITY, |s| {
        (s.median - 1.0).abs().max((s.q3 - s.q1) / 2.0)
    })
}

/// One target: its median ratio against a bound, judged against the control's noise floor.
/// FAIL when the target is missed by more than the noise floor (a cost this machine does
/// resolve); PASS when it is met and the noise floor is within the target's margin; otherwise
/// INCONCLUSIVE (the machine's noise hides a cost of the target's size).
struct Target {
    what: &'static str,
    value: f64,
    /// `value >= bound` when true, `value <= bound` when false.
    at_least: bool,
    bound: f64,
    noise: f64,
}

impl Target {
    fn word(&self) -> &'static str {
        let margin = (1.0 - self.bound).abs();
        let miss = if self.at_least {
            self.bound - self.value
        } else {
            self.value - self.bound
        };
        if miss > self.noise {
            "FAIL"
        } else if miss <= 0.0 && self.noise <= margin {
            "PASS"
        } else {
            "INCONCLUSIVE"
        }
    }
}

/// Prints the table and the verdicts; the exit status: 0 when every target passes, 1 when
/// one fails, 2 when none fails but one is inconclusive.
fn verdict(variants: &[Variant], runs: &[Vec<Run>]) -> i32 {
    let off = &runs[0];
    let show = |v: &[f64]| {
        Summary::of(v).map_or_else(
            || "-".to_owned(),
            |s| format!("{:.3} ({:.3}–{:.3})", s.median, s.q1, s.q3),
        )
    };
    println!(
        "\n| variant | req/s (median) | p99 ms (median) | throughput / off (median, IQR) | \
         p99 / off (median, IQR) | CPU µs per request (median) | requests per CPU second / off \
         (median, IQR) | leakguard's threads, CPU ms per second (all rounds) | scrapes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let throughput = |r: &Run| r.wrk.requests_per_sec;
    let p99 = |r: &Run| r.wrk.p99_ms;
    let per_cpu_second = |r: &Run| 1.0 / r.cpu_us;
    // The control's spread: how far apart two identical services land here.
    let mut noise = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    if let Some(i) = variants.iter().position(|v| *v == Variant::OffAgain) {
        noise = (
            spread(&ratios(&runs[i], off, throughput)),
            spread(&ratios(&runs[i], off, p99)),
            spread(&ratios(&runs[i], off, per_cpu_second)),
        );
    }
    let mut targets = Vec::new();
    for (v, r) in variants.iter().zip(runs) {
        let column = |f: &dyn Fn(&Run) -> f64| median(&r.iter().map(f).collect::<Vec<_>>());
        let (rs, ps, cs) = (
            ratios(r, off, throughput),
            ratios(r, off, p99),
            ratios(r, off, per_cpu_second),
        );
        println!(
            "| `{}` | {:.0} | {:.2} | {} | {} | {:.1} | {} | {:.2} | {} |",
            v.name(),
            column(&throughput),
            column(&p99),
            show(&rs),
            show(&ps),
            column(&|r: &Run| r.cpu_us),
            show(&cs),
            r.iter().map(|r| r.ours_s).sum::<f64>() * 1e3
                / r.iter().map(|r| r.elapsed_s).sum::<f64>().max(1e-9),
            r.iter().map(|r| r.scrapes).sum::<u64>()
        );
        let (min_throughput, name) = match v {
            Variant::On => (0.99, "on"),
            Variant::OnProf => (0.97, "on_prof"),
            Variant::Off | Variant::OffAgain | Variant::OnUnsampled => continue,
        };
        targets.push(Target {
            what: if *v == Variant::On {
                "on: throughput ≥ 0.99× off"
            } else {
                "on_prof: throughput ≥ 0.97× off"
            },
            value: median(&rs),
            at_least: true,
            bound: min_throughput,
            noise: noise.0,
        });
        if *v == Variant::On {
            targets.push(Target {
                what: "on: p99 ≤ 1.05× off",
                value: median(&ps),
                at_least: false,
                bound: 1.05,
                noise: noise.1,
            });
        }
        // The same cost in CPU time, which other processes' load moves much less than
        // throughput: the service's requests per CPU second against off's.
        targets.push(Target {
            what: if name == "on" {
                "on: requests per CPU second ≥ 0.99× off"
            } else {
                "on_prof: requests per CPU second ≥ 0.97× off"
            },
            value: median(&cs),
            at_least: true,
            bound: min_throughput,
            noise: noise.2,
        });
    }
    println!(
        "\nnoise floor (the control off_again against off: max(|median - 1|, IQR / 2)): \
         throughput ±{:.3}, p99 ±{:.3}, requests per CPU second ±{:.3}",
        noise.0, noise.1, noise.2
    );
    let mut status = 0;
    for t in &targets {
        let word = t.word();
        match word {
            "FAIL" => status = 1,
            "INCONCLUSIVE" if status == 0 => status = 2,
            _ => {}
        }
        println!(
            "{word}: {} (median ratio {:.3}; noise floor ±{:.3})",
            t.what, t.value, t.noise
        );
    }
    status
}
