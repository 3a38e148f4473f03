//! Graceful restart in place against a kill-and-restart by a supervisor, under the same load.
//!
//! ```sh
//! cargo bench -p leakguard-benches --bench restart
//! cargo bench -p leakguard-benches --bench restart -- --rounds 5
//! cargo bench -p leakguard-benches --bench restart -- --overshoot
//! ```
//!
//! `--overshoot`: peak usage relative to the limit against the leak rate, for a child process
//! (this binary) leaking at several rates under a guard whose callback action records the
//! resident size when it runs (see [`overshoot`]).
//!
//! The demo (`leaky_service`, release build, built first through `$CARGO` if needed; found
//! next to this bench under the target directory) runs as a child process on fresh loopback
//! ports every round, without background leak, with `LEAKGUARD_INTERVAL=100ms`,
//! `LEAKGUARD_MIN_UPTIME=1s` and `DEMO_DRAIN_DELAY=1s`. Six client threads load `GET /`
//! continuously (1 ms pause between requests), two of each kind:
//! - `retrying`: keep-alive; a request on a reused connection that the server closed before
//!   answering is sent again once on a fresh connection, as RFC 9112 allows for idempotent
//!   requests and HTTP clients do (counted as a "resend", not a failure);
//! - `never-retrying`: keep-alive (a raw HTTP/1.1 loop over one `TcpStream`, which honours
//!   `Connection: close`); any error, on a reused connection or not, is a failure, and the next
//!   request opens a fresh connection;
//! - `fresh`: a new connection per request.
//!
//! After a failed request a client waits 10 ms before the next one, so the failure count is
//! about (clients × outage / 10 ms).
//!
//! Variants, interleaved (A B, then B A, ...):
//! - `graceful`: `POST /debug/leakguard/restart` with the token at T0. The demo turns
//!   readiness off, waits its drain delay, stops accepting, drains, and leakguard re-executes
//!   `/proc/self/exe` keeping the listeners. The marker M is the moment the harness reads the
//!   `re-executing in place` line (printed after every request in flight was answered).
//! - `kill`: `SIGKILL` at T0; the harness reaps the process (M) and spawns it again at once
//!   with the same environment (same `DEMO_ADDR`).
//!
//! Per round:
//! - `serving`: T0 → the first successful answer completed after M (so from the new image or
//!   the new process), the time to serving again;
//! - `M→serving`: the same from M (the exec or the respawn, without the drain);
//! - `worst`: the longest request (successful or not) in flight at any moment between T0 and
//!   serving again;
//! - `gap`: the longest stretch without any successful answer, over all clients;
//! - `failed`: requests that got no 200 (refused, reset, timeout, other status), per kind of
//!   client;
//! - `resend`: keep-alive requests sent again after the server closed the connection.
//!
//! Without `--bench` (which `cargo bench` passes) it does one round of each as a smoke run.
#![allow(clippy::unwrap_used)]

use leakguard_benches::{Summary, machine};
use leakguard_tests::{KeepAlive, Running, example_binary, free_port, request_with, wait_until_ok};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "restart-bench-token";
/// Clients of each kind.
const PER_KIND: usize = 2;
const CLIENTS: usize = PER_KIND * Kind::ALL.len();
const THINK: Duration = Duration::from_millis(1);
const BACKOFF: Duration = Duration::from_millis(10);
/// Longest a round may take from start to end (every wait below is bounded by less).
const ROUND_LIMIT: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Graceful,
    Kill,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Graceful => "graceful",
            Variant::Kill => "kill",
        }
    }
}

/// How a client talks to the service.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Keep-alive, sends a request again once when a reused connection was closed under it.
    Retrying,
    /// Keep-alive, never sends a request again: every error is a failure.
    NeverRetrying,
    /// A fresh connection per request.
    Fresh,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Retrying, Kind::NeverRetrying, Kind::Fresh];

    fn of(client: usize) -> Kind {
        Kind::ALL[client % Kind::ALL.len()]
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Retrying => "keep-alive, retrying",
            Kind::NeverRetrying => "keep-alive, never retrying",
            Kind::Fresh => "fresh",
        }
    }
}

/// One request as a client saw it.
#[derive(Debug, Clone)]
struct Rec {
    client: usize,
    start: Instant,
    end: Instant,
    ok: bool,
    error: Option<String>,
    /// The first attempt's error, when the request was sent again on a fresh connection.
    resent: Option<String>,
}

/// One request with `Connection: close`: the status and body.
fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    request_with(method, addr, path, headers).map(|r| (r.status, r.text()))
}

/// GET `path` on a keep-alive client: the status, and a note when the request had to be sent
/// again on a fresh connection because the server closed the idle one.
fn keep_get(client: &mut KeepAlive, path: &str) -> (std::io::Result<u16>, Option<String>) {
    let before = client.retries;
    let result = client.get(path).map(|(status, _)| status);
    let resent = (client.retries > before)
        .then(|| "the server closed the idle keep-alive connection first".to_owned());
    (result, resent)
}

/// What one round measured.
#[derive(Debug, Clone)]
struct Outcome {
    variant: Variant,
    /// M − T0 (the drain, or kill → reaped), seconds.
    to_marker: f64,
    /// T0 → first successful answer completed after M, seconds.
    serving: f64,
    /// M → the same, seconds.
    marker_to_serving: f64,
    /// Longest request in flight between T0 and serving again, seconds.
    worst: f64,
    /// Longest request before T0 (the same load without a restart), seconds.
    worst_before: f64,
    /// Longest stretch without a successful answer, seconds.
    gap: f64,
    /// M → the new image's (or process's) start-up banner, seconds.
    banner: Option<f64>,
    ok: usize,
    failed: usize,
    /// Failed requests per kind of client, in the order of [`Kind::ALL`].
    failed_by: [usize; 3],
    resent: usize,
    resends: Vec<String>,
    failures: Vec<String>,
}

fn run_round(binary: &PathBuf, variant: Variant) -> Outcome {
    let round_deadline = Instant::now() + ROUND_LIMIT;
    let service: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let endpoint: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let env: Vec<(String, String)> = [
        ("DEMO_ADDR", service.to_string()),
        ("LEAKGUARD_ADDR", endpoint.to_string()),
        ("LEAKGUARD_INTERVAL", "100ms".to_owned()),
        ("LEAKGUARD_MIN_UPTIME", "1s".to_owned()),
        ("LEAKGUARD_TOKEN", TOKEN.to_owned()),
        ("DEMO_LIMIT", "256MiB".to_owned()),
        ("DEMO_LEAK_KIB_PER_SEC", "0".to_owned()),
        ("DEMO_DRAIN_DELAY", "1s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut demo = Running::start(binary, &env);
    let started = Instant::now();
    assert!(
        wait_until_ok(endpoint, "/healthz", Duration::from_secs(20))
            && wait_until_ok(service, "/", Duration::from_secs(5)),
        "the demo did not come up:\n{}",
        demo.text()
    );
    let pid = demo.pid();

    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let recs = Arc::new(Mutex::new(Vec::<Rec>::new()));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (stop, recs) = (Arc::clone(&stop), Arc::clone(&recs));
        clients.push(std::thread::spawn(move || {
            let mut keep = KeepAlive::new(service);
            let mut plain = KeepAlive::never_retrying(service);
            while !stop.load(Ordering::SeqCst) && Instant::now() < round_deadline {
                let start = Instant::now();
                let (result, resent) = match Kind::of(client) {
                    Kind::Retrying => keep_get(&mut keep, "/"),
                    Kind::NeverRetrying => (plain.get("/").map(|(s, _)| s), None),
                    Kind::Fresh => (request("GET", service, "/", &[]).map(|(s, _)| s), None),
                };
                let end = Instant::now();
                let (ok, error) = match result {
                    Ok(200) => (true, None),
                    Ok(s) => (false, Some(format!("status {s}"))),
                    Err(e) => (false, Some(format!("{:?}: {e}", e.kind()))),
                };
                recs.lock().unwrap().push(Rec {
                    client,
                    start,
                    end,
                    ok,
                    error,
                    resent,
                });
                std::thread::sleep(if ok { THINK } else { BACKOFF });
            }
        }));
    }

    // Warm up under load, past the minimum uptime.
    std::thread::sleep(Duration::from_millis(1000));
    while started.elapsed() < Duration::from_millis(1300) {
        std::thread::sleep(Duration::from_millis(10));
    }

    let t0 = Instant::now();
    let marker = match variant {
        Variant::Graceful => {
            let answer = request(
                "POST",
                endpoint,
                "/debug/leakguard/restart",
                &[("Authorization", &format!("Bearer {TOKEN}"))],
            );
            assert!(
                matches!(answer, Ok((202, _))),
                "restart not accepted: {answer:?}\n{}",
                demo.text()
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(t) = demo.line_since("re-executing in place", t0) {
                    break t;
                }
                assert!(
                    Instant::now() < deadline,
                    "no re-exec within 20 s:\n{}",
                    demo.text()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Variant::Kill => {
            demo.kill();
            let reaped = Instant::now();
            // The supervisor starts it again at once, same environment.
            let fresh = Running::start(binary, &env);
            // The old one is reaped already; dropping it only kills a dead pid's Child (a no-op).
            drop(std::mem::replace(&mut demo, fresh));
            reaped
        }
    };

    // Serving again: the first successful answer completed after the marker.
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        let first = recs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ok && r.end > marker)
            .map(|r| r.end)
            .min();
        if let Some(t) = first {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "{} round: not serving again within 20 s:\n{}",
            variant.name(),
            demo.text()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // Keep the load on a while after.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    if variant == Variant::Graceful {
        let (status, body) = request("GET", endpoint, "/debug/leakguard", &[])
            .unwrap_or_else(|e| panic!("report after the restart: {e}\n{}", demo.text()));
        let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(
            status == 200 && report["restart"]["restarts_total"] == 1,
            "restarts_total is not 1 after the restart: {body}"
        );
        assert_eq!(demo.pid(), pid);
        assert!(
            demo.text().contains(&format!(
                "running after graceful restart #1 in place (pid {pid})"
            )),
            "{}",
            demo.text()
        );
    }
    demo.kill();

    let banner = demo.line_since("leaky_service (pid", marker);
    let recs = recs.lock().unwrap().clone();
    let secs = |d: Duration| d.as_secs_f64();
    let worst = recs
        .iter()
        .filter(|r| r.end >= t0 && r.start <= back)
        .map(|r| secs(r.end - r.start))
        .fold(0.0, f64::max);
    let worst_before = recs
        .iter()
        .filter(|r| r.end < t0)
        .map(|r| secs(r.end - r.start))
        .fold(0.0, f64::max);
    let mut ok_ends: Vec<Instant> = recs.iter().filter(|r| r.ok).map(|r| r.end).collect();
    ok_ends.sort();
    let gap = ok_ends
        .windows(2)
        .map(|w| secs(w[1] - w[0]))
        .fold(0.0, f64::max);
    let failures: Vec<String> = recs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "client {} ({}), started T0{:+.3}s, ended T0{:+.3}s: {}",
                r.client,
                Kind::of(r.client).name(),
                signed(r.start, t0),
                signed(r.end, t0),
                r.error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let resends: Vec<String> = recs
        .iter()
        .filter_map(|r| {
            let first = r.resent.as_deref()?;
            Some(format!(
                "client {}, started T0{:+.3}s, ended T0{:+.3}s: first attempt {first}, then {}",
                r.client,
                signed(r.start, t0),
                signed(r.end, t0),
                r.error.as_deref().unwrap_or("200")
            ))
        })
        .collect();
    Outcome {
        variant,
        to_marker: secs(marker - t0),
        serving: secs(back - t0),
        marker_to_serving: secs(back - marker),
        worst,
        worst_before,
        gap,
        ok: recs.iter().filter(|r| r.ok).count(),
        failed: failures.len(),
        failed_by: Kind::ALL.map(|k| {
            recs.iter()
                .filter(|r| !r.ok && Kind::of(r.client) == k)
                .count()
        }),
        resent: recs.iter().filter(|r| r.resent.is_some()).count(),
        banner: banner.map(|b| secs(b.saturating_duration_since(marker))),
        resends,
        failures,
    }
}

fn signed(t: Instant, t0: Instant) -> f64 {
    if t >= t0 {
        (t - t0).as_secs_f64()
    } else {
        -(t0 - t).as_secs_f64()
    }
}

fn ms(v: f64) -> String {
    format!("{:.1}", v * 1000.0)
}

/// Set in the leaking child of the overshoot section: `RATE_MIB_PER_S:LIMIT_BYTES`.
const LEAK_CHILD: &str = "LEAKGUARD_BENCH_LEAK_CHILD";

/// The leaking child: a guard with the default thresholds (warn 80%, restart 95%) and
/// cadence (1 s), no drain hook, and a callback action that prints the resident size when it
/// runs; the process jumps to half the limit, holds still past the minimum uptime, then leaks (touched pages) at the given rate.
fn leak_child(spec: &str) {
    let (rate, limit) = spec.split_once(':').expect("rate:limit");
    let rate: f64 = rate.parse().expect("rate");
    let limit: u64 = limit.parse().expect("limit");
    let resident = || {
        leakguard::process::ProcReader::new()
            .read(false)
            .expect("/proc")
            .resident_bytes
    };
    let _guard = leakguard::Guard::builder()
        .ignore_env()
        .no_endpoint()
        .limit(limit)
        .min_uptime(Duration::from_secs(15))
        .restart_policy(leakguard::restart::RestartPolicy {
            drain_delay: Duration::ZERO,
            ..Default::default()
        })
        .on_restart(move |reason| {
            println!("ACTION {} {} {reason}", resident(), peak_resident());
            std::process::exit(0);
        })
        .start()
        .expect("start the guard");
    let mut held: Vec<Vec<u8>> = Vec::new();
    let jump = (limit / 2).saturating_sub(resident()) as usize;
    held.push(vec![0x5A; jump]);
    // Steady for longer than the guard's recent-slope window (5 s), and until the minimum
    // uptime (15 s) has passed: filling the jump's pages takes seconds on a busy machine, and
    // that growth is not the leak measured here.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(16) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let began = Instant::now();
    let mut leaked = 0.0_f64;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let due = rate * began.elapsed().as_secs_f64() * 1_048_576.0;
        let step = (due - leaked).max(0.0) as usize;
        if step > 0 {
            held.push(vec![0x5A; step]);
            leaked += step as f64;
        }
        std::hint::black_box(&held);
    }
}

/// Peak resident size of this process so far (`VmHWM`), bytes.
fn peak_resident() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The Python interpreter of the overshoot section's Python row: `LEAKGUARD_BENCH_PYTHON`, else
/// the workspace's `.venv` (where `make wheel` installs leakguard); `None` when it cannot
/// import leakguard.
fn python_with_leakguard() -> Result<PathBuf, String> {
    let python = std::env::var_os("LEAKGUARD_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import leakguard"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if ok.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import leakguard (run `make wheel`): {}",
            python.display(),
            String::from_utf8_lossy(&ok.stderr).trim()
        ))
    }
}

/// What one leaking child printed when its action ran: resident and peak resident bytes, and
/// the reason; `None` without an action.
fn action_line(out: &std::process::Output) -> Option<(f64, f64, String)> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("ACTION "))?;
    let mut parts = line.splitn(4, ' ').skip(1);
    let at = parts.next()?.parse().ok()?;
    let peak = parts.next()?.parse().ok()?;
    Some((at, peak, parts.next().unwrap_or("").to_owned()))
}

/// Peak usage relative to the limit against leak rate: for each time from the warn threshold
/// to the limit, a Rust child (this binary) and a Python child (`benches/python/
/// leak_overshoot.py` with the wheel) leak from half the limit, one after the other; the usage
/// when the restart action runs, and the peak resident size until then. Exits with 1 when a
/// leak that takes at least 20 s from warn to limit reaches the limit before the action.
fn overshoot() {
    let limit: u64 = 512 << 20;
    let python = python_with_leakguard();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/leak_overshoot.py");
    println!("leak overshoot: {}", machine());
    println!(
        "limit {} MiB, leak from 50% of it after 16 s steady, minimum uptime 15 s, default thresholds and 1 s interval, drain with no hook\n",
        limit >> 20
    );
    if let Err(why) = &python {
        println!("Python row not run: {why}\n");
    }
    println!(
        "| warn→limit | leak rate | runtime | usage at the action / limit | peak usage / limit | reason |"
    );
    println!("| ---: | ---: | --- | ---: | ---: | --- |");
    let mut met = true;
    for (i, warn_to_limit) in [5.0_f64, 10.0, 20.0, 40.0].into_iter().enumerate() {
        let rate = 0.2 * (limit >> 20) as f64 / warn_to_limit;
        let mut runs: Vec<(&str, std::process::Command)> = Vec::new();
        let mut rust = std::process::Command::new(std::env::current_exe().expect("bench binary"));
        rust.env(LEAK_CHILD, format!("{rate}:{limit}"));
        runs.push(("Rust", rust));
        if let Ok(python) = &python {
            let mut py = std::process::Command::new(python);
            py.arg(&script).arg(rate.to_string()).arg(limit.to_string());
            runs.push(("Python", py));
        }
        // Interleaved: Rust first at even rates, Python first at odd ones.
        if i % 2 == 1 {
            runs.reverse();
        }
        let mut rows = Vec::new();
        for (runtime, mut cmd) in runs {
            let out = cmd.output().expect("run the leaking child");
            let (at, peak, reason) = action_line(&out).unwrap_or_else(|| {
                (
                    f64::NAN,
                    f64::NAN,
                    format!(
                        "(no action: {})",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ),
                )
            });
            let (at, peak) = (at / limit as f64, peak / limit as f64);
            // A missing figure (NaN: no action) misses the target too.
            if warn_to_limit >= 20.0 && (peak.is_nan() || peak >= 1.0) {
                met = false;
            }
            rows.push((
                runtime,
                format!(
                    "| {warn_to_limit:.0} s | {rate:.1} MiB/s | {runtime} | {:.1}% | {:.1}% | {reason} |",
                    at * 100.0,
                    peak * 100.0
                ),
            ));
        }
        rows.sort_by_key(|(runtime, _)| *runtime != "Rust");
        for (_, row) in rows {
            println!("{row}");
        }
    }
    println!(
        "\ntarget: peak usage below the limit whenever warn→limit takes ≥ 20 s: {}",
        if met { "met" } else { "MISSED" }
    );
    if !met {
        std::process::exit(1);
    }
}

fn main() {
    if let Ok(spec) = std::env::var(LEAK_CHILD) {
        leak_child(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--overshoot") {
        overshoot();
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let mut rounds = if bench { 5 } else { 1 };
    if let Some(i) = args.iter().position(|a| a == "--rounds")
        && let Some(n) = args.get(i + 1).and_then(|v| v.parse().ok())
    {
        rounds = n;
    }
    let binary = example_binary("leaky_service");
    println!("restart bench: {}", machine());
    println!(
        "{rounds} round(s) of each variant, {CLIENTS} clients ({PER_KIND} of each kind: keep-alive retrying, keep-alive never retrying, fresh connection per request), demo drain delay 1s\n"
    );
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Variant::Graceful, Variant::Kill]
        } else {
            [Variant::Kill, Variant::Graceful]
        };
        for variant in order {
            let o = run_round(&binary, variant);
            println!(
                "round {round} {:<8}  T0→M {:>7} ms  serving {:>7} ms  M→serving {:>6} ms  worst {:>7} ms (before T0 {:>5} ms)  gap {:>7} ms  ok {:>5}  failed {:>3} (retrying {}, never retrying {}, fresh {})  resent {}",
                o.variant.name(),
                ms(o.to_marker),
                ms(o.serving),
                ms(o.marker_to_serving),
                ms(o.worst),
                ms(o.worst_before),
                ms(o.gap),
                o.ok,
                o.failed,
                o.failed_by[0],
                o.failed_by[1],
                o.failed_by[2],
                o.resent
            );
            println!(
                "    M→start-up banner {} ms",
                o.banner.map_or("?".to_owned(), ms)
            );
            for r in &o.resends {
                println!("    resent: {r}");
            }
            for f in o.failures.iter().take(if o.variant == Variant::Graceful {
                20
            } else {
                3
            }) {
                println!("    failed: {f}");
            }
            outcomes.push(o);
        }
    }

    println!("\nsummary over {rounds} round(s) each, median (worst); times in ms");
    println!(
        "| variant | T0→M | time to serving | M→serving | worst latency | longest gap without an answer | failed: keep-alive, retrying | failed: keep-alive, never retrying | failed: fresh connections | resends | answers |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for variant in [Variant::Graceful, Variant::Kill] {
        let of = |f: fn(&Outcome) -> f64| {
            let v: Vec<f64> = outcomes
                .iter()
                .filter(|o| o.variant == variant)
                .map(f)
                .collect();
            let s = Summary::of(&v).unwrap();
            (s.median, s.max)
        };
        let pair = |f: fn(&Outcome) -> f64| {
            let (m, w) = of(f);
            format!("{} ({})", ms(m), ms(w))
        };
        let count = |f: fn(&Outcome) -> f64| {
            let (m, w) = of(f);
            format!("{m} ({w})")
        };
        // Failed requests of one kind of client: median a restart (worst; total).
        let failed = |k: usize| {
            let v: Vec<f64> = outcomes
                .iter()
                .filter(|o| o.variant == variant)
                .map(|o| o.failed_by[k] as f64)
                .collect();
            let s = Summary::of(&v).unwrap();
            format!("{} ({}; total {})", s.median, s.max, v.iter().sum::<f64>())
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            variant.name(),
            pair(|o| o.to_marker),
            pair(|o| o.serving),
            pair(|o| o.marker_to_serving),
            pair(|o| o.worst),
            pair(|o| o.gap),
            failed(0),
            failed(1),
            failed(2),
            count(|o| o.resent as f64),
            count(|o| o.ok as f64),
        );
    }
    let before: Vec<f64> = outcomes.iter().map(|o| o.worst_before).collect();
    if let Some(s) = Summary::of(&before) {
        println!(
            "\nworst latency before T0 (same load, no restart): median {} ms, max {} ms",
            ms(s.median),
            ms(s.max)
        );
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    // The targets: in a graceful restart no request of the retrying or fresh clients fails,
    // and a client that never retries loses at most one request per keep-alive connection
    // open at the drain (one per such client).
    let graceful = || outcomes.iter().filter(|o| o.variant == Variant::Graceful);
    let retry_ok = graceful().all(|o| o.failed_by[0] == 0 && o.failed_by[2] == 0);
    let never_ok = graceful().all(|o| o.failed_by[1] <= PER_KIND);
    println!(
        "target, graceful: 0 failed for the retrying and fresh clients: {}; at most {PER_KIND} a restart (one per connection) for the never-retrying clients: {}",
        if retry_ok { "met" } else { "MISSED" },
        if never_ok { "met" } else { "MISSED" }
    );
    if !(retry_ok && never_ok) {
        std::process::exit(1);
    }
}
