//! The demo: a small HTTP service with a deliberate leak, guarded by leakguard.
//!
//! ```text
//! cargo run --release --example leaky_service
//! ```
//!
//! Environment:
//! - `DEMO_ADDR`: the service's address (default `127.0.0.1:8080`).
//! - `DEMO_LEAK_KIB_PER_SEC`: background leak rate (default 2048 KiB/s, i.e. 2 MiB/s).
//! - `DEMO_LIMIT`: the demo's memory limit (default 256MiB; `LEAKGUARD_LIMIT` overrides it).
//! - `DEMO_LEAK_MAX`: the background leak stops here (default: 110% of the limit), so an
//!   unattended demo never eats the machine.
//! - every `LEAKGUARD_*` variable of the operator contract (endpoint address, thresholds, …).
//!
//! Endpoints of the service: `GET /` (a little real work), `GET /leak?kib=N` (keeps N KiB
//! forever). leakguard's endpoint is printed at start.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use leakguard::{Event, Guard, format_bytes, parse_size};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// What the service leaks: kept forever, never read again.
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
static LEAKED_BYTES: AtomicU64 = AtomicU64::new(0);

fn leak(bytes: usize) {
    // Filled, so the pages are really resident.
    let block = vec![0xA5u8; bytes].into_boxed_slice();
    LEAKED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    if let Ok(mut kept) = LEAKED.lock() {
        kept.push(block);
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn fail(message: String) -> ! {
    eprintln!("leaky_service: {message}");
    std::process::exit(2);
}

/// `GET /`: a little real work: build and checksum a small document.
async fn index() -> String {
    let mut doc = String::with_capacity(16 * 1024);
    let mut sum: u64 = 0;
    for i in 0..500u64 {
        let line = format!("{{\"id\":{i},\"sq\":{}}}\n", i * i);
        sum = sum.wrapping_mul(31).wrapping_add(line.len() as u64 + i);
        doc.push_str(&line);
    }
    format!(
        "hello from the leaky service: {} bytes of work, checksum {sum:x}, leaked so far {}\n",
        doc.len(),
        format_bytes(LEAKED_BYTES.load(Ordering::Relaxed))
    )
}

/// `GET /leak?kib=N`: keeps N KiB forever.
async fn leak_handler(
    Query(q): Query<HashMap<String, String>>,
) -> (axum::http::StatusCode, String) {
    let kib = match q.get("kib").map(|v| v.parse::<usize>()) {
        Some(Ok(kib)) if kib <= 1 << 20 => kib,
        _ => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                "use /leak?kib=N with N from 0 to 1048576\n".into(),
            );
        }
    };
    leak(kib * 1024);
    (
        axum::http::StatusCode::OK,
        format!(
            "leaked {kib} KiB; {} kept in total\n",
            format_bytes(LEAKED_BYTES.load(Ordering::Relaxed))
        ),
    )
}

fn print_event(e: &Event) {
    println!("  [event {:>5}] {}", e.level.as_str(), e.message);
}

fn main() {
    let demo_addr = env_or("DEMO_ADDR", "127.0.0.1:8080");
    let rate_kib: u64 = env_or("DEMO_LEAK_KIB_PER_SEC", "2048")
        .trim()
        .parse()
        .unwrap_or_else(|_| fail("DEMO_LEAK_KIB_PER_SEC must be a whole number of KiB".into()));
    let limit = parse_size("DEMO_LIMIT", &env_or("DEMO_LIMIT", "256MiB"))
        .unwrap_or_else(|e| fail(e.to_string()));
    let leak_max = match std::env::var("DEMO_LEAK_MAX") {
        Ok(v) => parse_size("DEMO_LEAK_MAX", &v).unwrap_or_else(|e| fail(e.to_string())),
        Err(_) => limit / 10 * 11,
    };

    let guard = Guard::builder()
        .limit(limit)
        .on_event(print_event)
        .start()
        .unwrap_or_else(|e| fail(format!("cannot start leakguard: {e}")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&demo_addr))
        .unwrap_or_else(|e| fail(format!("cannot listen on {demo_addr}: {e}")));
    let service_addr = listener
        .local_addr()
        .map_or(demo_addr.clone(), |a| a.to_string());

    println!("leaky_service: a demo service with a deliberate leak, guarded by leakguard");
    println!("  service     http://{service_addr}/          (GET /leak?kib=N leaks on demand)");
    println!(
        "  background  leaking {rate_kib} KiB/s, stops at {}",
        format_bytes(leak_max)
    );
    let limit_in_force = guard.report().limit.map(|l| (l.bytes, l.source));
    match &limit_in_force {
        Some((bytes, source)) => println!("  limit       {} ({source})", format_bytes(*bytes)),
        None => println!("  limit       none"),
    }
    match guard.endpoint_addr() {
        Some(a) => {
            println!("  leakguard   http://{a}/debug/leakguard   (JSON report)");
            println!("              http://{a}/metrics           (Prometheus)");
            println!("              http://{a}/healthz  http://{a}/readyz");
        }
        None => println!("  leakguard   endpoint off (see the events)"),
    }
    println!();

    // The deliberate background leak, in steps of a tenth of a second.
    if rate_kib > 0 {
        let step = (rate_kib * 1024 / 10) as usize;
        let spawned = std::thread::Builder::new()
            .name("demo-leak".into())
            .spawn(move || {
                let mut paused = false;
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if LEAKED_BYTES.load(Ordering::Relaxed) + step as u64 > leak_max {
                        if !paused {
                            println!(
                                "  [demo] background leak paused at {}",
                                format_bytes(leak_max)
                            );
                            paused = true;
                        }
                        continue;
                    }
                    leak(step);
                }
            });
        if let Err(e) = spawned {
            fail(format!("cannot start the leak thread: {e}"));
        }
    }

    // A compact status line every few seconds.
    let status_every = Duration::from_secs(5);
    let started = Instant::now();
    let mut last: Option<(Instant, u64)> = None;
    let status = std::thread::Builder::new()
        .name("demo-status".into())
        .spawn(move || {
            loop {
                std::thread::sleep(status_every);
                let r = guard.report();
                let rss = r.memory.resident_bytes.unwrap_or(0);
                let now = Instant::now();
                let growth = last.map_or(0.0, |(t, prev)| {
                    (rss as f64 - prev as f64) / now.duration_since(t).as_secs_f64()
                });
                last = Some((now, rss));
                let usage = match (&r.limit, r.memory.usage_ratio) {
                    (Some(l), Some(ratio)) => format!(
                        "{} / {} ({:.0}%)",
                        format_bytes(rss),
                        format_bytes(l.bytes),
                        ratio * 100.0
                    ),
                    _ => format_bytes(rss),
                };
                println!(
                    "[{:>4}s] rss {usage}  heap {}  growth {}{}/s  state {}",
                    started.elapsed().as_secs(),
                    format_bytes(r.memory.heap_bytes.unwrap_or(0)),
                    if growth < 0.0 { "-" } else { "+" },
                    format_bytes(growth.abs() as u64),
                    r.state,
                );
            }
        });
    if let Err(e) = status {
        fail(format!("cannot start the status thread: {e}"));
    }

    let app = Router::new()
        .route("/", get(index))
        .route("/leak", get(leak_handler));
    if let Err(e) = runtime.block_on(async { axum::serve(listener, app).await }) {
        fail(format!("the service stopped: {e}"));
    }
}
