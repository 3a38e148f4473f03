//! Overhead of leakguard on a real HTTP service under load: an axum service driven by `wrk`
//! (Debian package `wrk`), with everything a user turns on, against the same binary with
//! leakguard off.
//!
//! ```sh
//! apt-get install wrk
//! cargo bench -p leakguard-benches --bench overhead                          # off / on
//! cargo bench -p leakguard-benches --features profiling --bench overhead     # + heap profiling
//! cargo bench -p leakguard-benches --bench overhead -- --rounds 30 --secs 4 --conns 32 [--unsampled]
//! ```
//!
//! The service is this binary re-run as a child process (`--serve off|on`): a tokio runtime
//! serving `GET /item/{id}` with axum. Each request looks its id up in a leakguard
//! `LruCache<u64, Arc<str>>` of 10,000 entries and, on a miss, renders a ~0.5 KiB value (a few
//! small allocations) and inserts it; the answer is a JSON-ish body of ~0.6 KiB. wrk (1
//! thread, `--conns` connections) asks for ids drawn uniformly from 1–20,000, so about half
//! the requests miss and evict.
//!
//! - `off`: no guard, no handle tracking, an unnamed cache (what the service is without
//!   leakguard; the cache is the service's own data structure either way);
//! - `off_again`: a second `off`, the control;
//! - `on`: a guard sampling every second with its built-in endpoint on loopback, scraped every
//!   second (`GET /metrics`, a fresh connection each time, as Prometheus does) while wrk runs;
//!   every request tracked as a handle of kind `request` while it is served; the cache named
//!   `items` (its statistics in the report and `/metrics`);
//! - `on_prof` (with `--features profiling`): `on` with heap profiling as leakguard recommends
//!   (`leakguard::profile::RECOMMENDED_CONF`, a sample per 2 MiB);
//! - `on_prof_512k` (with `--features profiling`, no target): `on` with `prof:true` alone,
//!   jemalloc's default sample rate (512 KiB);
//! - `on_unsampled` (with `--unsampled`, no target): `on` with the request kind's stack
//!   sampling off (`sample_every(0)`).
//!
//! The services run on the first CPU with one runtime worker each; wrk, this driver and the
//! scraper on the others. Runs one after the other cannot resolve a 1% cost on a shared
//! machine, whose speed moves by ±10% from one second to the next; so every variant is
//! measured side by side with a fresh `off`: the two started together, warmed up together
//! (1 s) and driven together (`--secs`, a wrk each), sharing the service CPU at the same
//! moment. Every round does this for each variant, in an order that rotates every round;
//! fresh processes make a process's own luck (its memory layout, its hash seeds) round-to-round
//! noise instead of a bias for the whole run. A pair gives the variant's throughput, p99
//! latency and requests per CPU second (its threads' run time, from
//! `/proc/<pid>/task/*/schedstat`) divided by its `off`'s. The verdict is on the median of
//! those ratios over the rounds, with a distribution-free 95% confidence interval (order
//! statistics; `leakguard_benches::median_interval`), which narrows as rounds are added.
//! Targets: throughput and requests per CPU second ≥ 0.99 and p99 ≤ 1.05 for `on`, ≥ 0.97 for
//! `on_prof`. A target is a PASS when the whole interval meets it, a FAIL (exit status 1) when
//! the whole interval misses it, and INCONCLUSIVE (status 2) when the interval straddles it
//! (more rounds decide) or when the control's interval (`off_again` beside `off`, two
//! identical services) for the same ratio does not hold 1. A verdict needs at least 6 rounds
//! (30 by default). It also prints the CPU time of leakguard's own threads in the service (the
//! sampler and the endpoint's), the background cost a user pays whatever the request rate.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it does a smoke run: one short round of
//! `off` and `on`, checks that the scrapes see the cache and the handles, and gives no verdict.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing;
use leakguard::cache::LruCache;
use leakguard::{Guard, HandleKind};
use leakguard_benches::wrk::{self, Wrk};
use leakguard_benches::{Summary, machine, median_interval};
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

/// `mode`: `off`, `on`, or `on-unsampled` (`on` without sampling the request handles' stacks);
/// `cpu`: the one CPU the service runs on (all its threads, leakguard's included), or `None`
/// to run where the driver does.
fn serve(mode: &str, cpu: Option<usize>) -> ! {
    let on = mode != "off";
    if let Some(cpu) = cpu {
        leakguard_benches::run_on(&[cpu]).expect("the service's CPU");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if cpu.is_some() { 1 } else { 2 })
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
    OnProfFine,
    OnUnsampled,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::OffAgain => "off_again",
            Variant::On => "on",
            Variant::OnProf => "on_prof",
            Variant::OnProfFine => "on_prof_512k",
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
    fn start(variant: Variant, cpu: Option<usize>) -> Service {
        let mode = match variant {
            Variant::Off | Variant::OffAgain => "off",
            Variant::On | Variant::OnProf | Variant::OnProfFine => "on",
            Variant::OnUnsampled => "on-unsampled",
        };
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut command = Command::new(exe);
        command
            .args(["--serve", mode])
            .args(cpu.map(|c| format!("--cpu={c}")))
            .env_remove("_RJEM_MALLOC_CONF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match variant {
            Variant::OnProf => {
                command.env("_RJEM_MALLOC_CONF", leakguard::profile::RECOMMENDED_CONF);
            }
            Variant::OnProfFine => {
                command.env("_RJEM_MALLOC_CONF", "prof:true");
            }
            _ => {}
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

/// Starts wrk against `addr` (it runs on this driver's CPUs).
fn spawn_wrk(addr: SocketAddr, script: &std::path::Path, conns: u32, secs: u32) -> Child {
    wrk::command(addr, "/", 1, conns, secs, Some(script))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", wrk::NOT_FOUND))
}

/// Waits for a wrk started by [`spawn_wrk`] and reads what it measured.
fn finish_wrk(load: Child) -> Wrk {
    let out = load.wait_with_output().expect("wrk's output");
    let w = wrk::report(&out);
    assert!(
        w.requests_per_sec.is_finite() && w.p99_ms.is_finite(),
        "cannot read wrk's output: {}",
        String::from_utf8_lossy(&out.stdout)
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
/// CPU seconds of a service's threads, all and leakguard's: the sum of their run times in
/// `/proc/<pid>/task/*/schedstat` (nanoseconds; the services make no short-lived threads whose
/// time would be lost), or from `stat`'s clock ticks where schedstat is missing.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let (mut all, mut ours) = (0.0, 0.0);
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let (ticks, name) = stat_cpu(&stat);
            let precise = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
            let cpu = precise.map_or(ticks, |ns| ns / 1e9);
            all += cpu;
            if name.starts_with("leakguard") {
                ours += cpu;
            }
        }
    }
    (all, ours)
}

/// One measured run.
#[derive(Clone)]
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
/// Drives every service at once, each with its own wrk for `secs` seconds, and measures each.
fn measure_all(services: &[&Service], script: &std::path::Path, conns: u32, secs: u32) -> Vec<Run> {
    let scrapers: Vec<Option<Scraper>> = services
        .iter()
        .map(|s| s.endpoint.map(Scraper::start))
        .collect();
    let before: Vec<(f64, f64)> = services.iter().map(|s| cpu_seconds(s.child.id())).collect();
    let started = Instant::now();
    let loads: Vec<Child> = services
        .iter()
        .map(|s| spawn_wrk(s.addr, script, conns, secs))
        .collect();
    let outputs: Vec<Wrk> = loads.into_iter().map(finish_wrk).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let after: Vec<(f64, f64)> = services.iter().map(|s| cpu_seconds(s.child.id())).collect();
    services
        .iter()
        .zip(scrapers)
        .zip(outputs)
        .zip(before.into_iter().zip(after))
        .map(
            |(((service, scraper), w), ((cpu0, ours0), (cpu1, ours1)))| {
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
                    cpu_us: (cpu1 - cpu0) * 1e6 / w.requests.max(1) as f64,
                    ours_s: ours1 - ours0,
                    elapsed_s: elapsed,
                }
            },
        )
        .collect()
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
        let cpu = args
            .iter()
            .find_map(|a| a.strip_prefix("--cpu=").and_then(|c| c.parse().ok()));
        serve(args.get(i + 1).map_or("off", String::as_str), cpu);
    }
    let bench = args.iter().any(|a| a == "--bench");
    let rounds = arg(&args, "--rounds", if bench { 30 } else { 1 }) as usize;
    let secs = arg(&args, "--secs", if bench { 4 } else { 1 });
    let conns = arg(&args, "--conns", 32);

    let mut variants = vec![Variant::Off, Variant::On];
    if bench {
        variants.insert(1, Variant::OffAgain);
        if args.iter().any(|a| a == "--unsampled") {
            variants.push(Variant::OnUnsampled);
        }
        if cfg!(feature = "profiling") {
            variants.push(Variant::OnProf);
            variants.push(Variant::OnProfFine);
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
    // The service gets a core of its own and wrk (and this driver, and the scraper) the
    // others, as when the load comes from another machine: the services' throughput is then
    // what one core serves, not what is left of two cores after wrk took its share, which
    // moves with where the scheduler puts wrk's thread.
    let cpus = leakguard_benches::allowed_cpus().expect("the CPUs this process may use");
    let service_cpu = match cpus.as_slice() {
        [first, rest @ ..] if !rest.is_empty() => {
            leakguard_benches::run_on(rest).expect("the driver's CPUs");
            Some(*first)
        }
        _ => None,
    };
    eprintln!(
        "# {}",
        service_cpu.map_or_else(
            || "one CPU: the services and wrk share it".to_owned(),
            |c| format!(
                "each service on CPU {c} with one runtime worker; wrk and this driver on CPUs {:?}",
                &cpus[1..]
            )
        )
    );
    let script = script();
    // runs[variant][round]. Every round starts its own processes: what one process happens to
    // get (its address-space layout, its hash seeds, where its threads land) can favour it by
    // a percent or two for its whole life, which the rounds of one process would not average
    // out; fresh processes turn it into round-to-round noise, which the control measures.
    let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    // paired_off[variant][round]: `off`'s run measured side by side with that variant's.
    let mut paired_off: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Each variant side by side with a fresh `off`, the two started together (in an order
        // that alternates), warmed up together and measured together, sharing the service
        // core at the same moment; the variants take their turns in an order that rotates
        // every round.
        for k in 0..variants.len() - 1 {
            let i = 1 + (k + round) % (variants.len() - 1);
            let pair: Vec<Service> = if (round + k) % 2 == 0 {
                let off = Service::start(variants[0], service_cpu);
                vec![off, Service::start(variants[i], service_cpu)]
            } else {
                let other = Service::start(variants[i], service_cpu);
                vec![Service::start(variants[0], service_cpu), other]
            };
            if round == 0 && pair[1].endpoint.is_some() {
                check_instrumented(&pair[1]);
            }
            let both: Vec<&Service> = pair.iter().collect();
            measure_all(&both, &script, conns, 1);
            let mut runs_of_pair = measure_all(&both, &script, conns, secs);
            let (run, off) = (runs_of_pair.pop(), runs_of_pair.pop());
            runs[i].extend(run);
            paired_off[i].extend(off.clone());
            if k == 0 {
                runs[0].extend(off.clone());
                paired_off[0].extend(off);
            }
            if round + 1 == rounds && variants[i] == Variant::On {
                check_instrumented(&pair[1]);
            }
        }
        let services = &variants;
        eprintln!(
            "# round {}: {}",
            round + 1,
            services
                .iter()
                .zip(&runs)
                .map(|(v, r)| format!(
                    "{} {:.0} req/s p99 {:.2} ms {:.1} µs CPU/req",
                    v.name(),
                    r[round].wrk.requests_per_sec,
                    r[round].wrk.p99_ms,
                    r[round].cpu_us
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = std::fs::remove_file(&script);
    if !bench {
        eprintln!("smoke run done (no verdict without --bench)");
        return;
    }
    std::process::exit(verdict(&variants, &runs, &paired_off));
}

/// A ratio of `variant` to `off`, per round.
fn ratios(runs: &[Run], off: &[Run], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    runs.iter().zip(off).map(|(r, o)| f(r) / f(o)).collect()
}

/// The confidence level of the intervals the verdicts rest on.
const LEVEL: f64 = 0.95;

/// A ratio's median over the rounds with its distribution-free confidence interval
/// ([`median_interval`]): `None` with too few rounds.
#[derive(Clone, Copy)]
struct Estimate {
    median: f64,
    interval: Option<(f64, f64, f64)>,
}

impl Estimate {
    fn of(ratios: &[f64]) -> Self {
        Self {
            median: median(ratios),
            interval: median_interval(ratios, LEVEL),
        }
    }

    /// Whether the interval holds 1: false when the control's rounds favour one of two
    /// identical services (the rounds were biased, and no verdict can rest on them).
    fn holds_one(&self) -> bool {
        self.interval
            .is_some_and(|(lo, hi, _)| lo <= 1.0 && 1.0 <= hi)
    }

    fn show(&self) -> String {
        match self.interval {
            Some((lo, hi, _)) => format!("{:.3} ({lo:.3}–{hi:.3})", self.median),
            None => format!("{:.3} (-)", self.median),
        }
    }
}

/// One target: a ratio's median over the rounds against a bound. PASS when the whole
/// confidence interval of the median meets the bound, FAIL when the whole interval misses
/// it, INCONCLUSIVE when the interval straddles it (more rounds narrow it) or when the
/// control's interval for the same ratio excludes 1 (the rounds were biased).
struct Target {
    what: &'static str,
    estimate: Estimate,
    /// `value >= bound` when true, `value <= bound` when false.
    at_least: bool,
    bound: f64,
    /// The control's estimate of the same ratio.
    control: Estimate,
}

impl Target {
    fn word(&self) -> &'static str {
        let Some((lo, hi, _)) = self.estimate.interval else {
            return "INCONCLUSIVE";
        };
        if !self.control.holds_one() {
            return "INCONCLUSIVE";
        }
        let (meets, misses) = if self.at_least {
            (lo >= self.bound, hi < self.bound)
        } else {
            (hi <= self.bound, lo > self.bound)
        };
        if meets {
            "PASS"
        } else if misses {
            "FAIL"
        } else {
            "INCONCLUSIVE"
        }
    }
}

/// Prints the table and the verdicts; the exit status: 0 when every target passes, 1 when
/// one fails, 2 when none fails but one is inconclusive.
fn verdict(variants: &[Variant], runs: &[Vec<Run>], paired_off: &[Vec<Run>]) -> i32 {
    println!(
        "\n| variant | req/s (median) | p99 ms (median) | throughput / off | p99 / off | \
         CPU µs per request (median) | requests per CPU second / off | leakguard's threads, CPU \
         ms per second (all rounds) | scrapes |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let throughput = |r: &Run| r.wrk.requests_per_sec;
    let p99 = |r: &Run| r.wrk.p99_ms;
    let per_cpu_second = |r: &Run| 1.0 / r.cpu_us;
    let estimates = |i: usize| {
        let (r, off) = (&runs[i], &paired_off[i]);
        (
            Estimate::of(&ratios(r, off, throughput)),
            Estimate::of(&ratios(r, off, p99)),
            Estimate::of(&ratios(r, off, per_cpu_second)),
        )
    };
    // The control: two identical services, whose ratios' intervals must hold 1.
    let none = Estimate {
        median: f64::NAN,
        interval: None,
    };
    let control = variants
        .iter()
        .position(|v| *v == Variant::OffAgain)
        .map_or((none, none, none), estimates);
    let mut targets = Vec::new();
    for (i, (v, r)) in variants.iter().zip(runs).enumerate() {
        let column = |f: &dyn Fn(&Run) -> f64| median(&r.iter().map(f).collect::<Vec<_>>());
        let (rs, ps, cs) = estimates(i);
        println!(
            "| `{}` | {:.0} | {:.2} | {} | {} | {:.1} | {} | {:.2} | {} |",
            v.name(),
            column(&throughput),
            column(&p99),
            rs.show(),
            ps.show(),
            column(&|r: &Run| r.cpu_us),
            cs.show(),
            r.iter().map(|r| r.ours_s).sum::<f64>() * 1e3
                / r.iter().map(|r| r.elapsed_s).sum::<f64>().max(1e-9),
            r.iter().map(|r| r.scrapes).sum::<u64>()
        );
        let (min_throughput, on) = match v {
            Variant::On => (0.99, true),
            Variant::OnProf => (0.97, false),
            Variant::Off | Variant::OffAgain | Variant::OnUnsampled | Variant::OnProfFine => {
                continue;
            }
        };
        targets.push(Target {
            what: if on {
                "on: throughput ≥ 0.99× off"
            } else {
                "on_prof: throughput ≥ 0.97× off"
            },
            estimate: rs,
            at_least: true,
            bound: min_throughput,
            control: control.0,
        });
        if on {
            targets.push(Target {
                what: "on: p99 ≤ 1.05× off",
                estimate: ps,
                at_least: false,
                bound: 1.05,
                control: control.1,
            });
        }
        // The same cost in CPU time, which other processes' load moves much less than
        // throughput: the service's requests per CPU second against off's.
        targets.push(Target {
            what: if on {
                "on: requests per CPU second ≥ 0.99× off"
            } else {
                "on_prof: requests per CPU second ≥ 0.97× off"
            },
            estimate: cs,
            at_least: true,
            bound: min_throughput,
            control: control.2,
        });
    }
    let coverage = control.0.interval.map_or(f64::NAN, |i| i.2);
    println!(
        "\nratios: the median over {} rounds and its confidence interval ({:.1}% coverage, \
         distribution-free); the control off_again must hold 1 in each interval",
        runs[0].len(),
        coverage * 100.0
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
            "{word}: {} (median ratio {}; the control's {})",
            t.what,
            t.estimate.show(),
            t.control.show()
        );
    }
    status
}
