//! The demo: a small HTTP service with a deliberate leak, guarded by leakguard.
//!
//! ```text
//! cargo run --release --example leaky_service
//! ```
//!
//! With heap profiles (`GET /debug/pprof/heap`, which needs `LEAKGUARD_TOKEN`):
//!
//! ```text
//! _RJEM_MALLOC_CONF=prof:true,lg_prof_sample:21 LEAKGUARD_TOKEN=secret \
//!     cargo run --release --example leaky_service --features profiling
//! ```
//!
//! Environment:
//! - `DEMO_ADDR`: the service's address (default `127.0.0.1:8080`).
//! - `DEMO_LEAK_KIB_PER_SEC`: background leak rate (default 2048 KiB/s, i.e. 2 MiB/s).
//! - `DEMO_LIMIT`: the demo's memory limit (default 256MiB; `LEAKGUARD_LIMIT` overrides it).
//! - `DEMO_LEAK_MAX`: the background leak stops here (default: 110% of the limit), so an
//!   unattended demo never eats the machine.
//! - `DEMO_DRAIN_DELAY`: how long readiness is off before the drain at a restart (default 2s).
//! - `DEMO_TREND_SPEEDUP`: divide the leak detector's warm-up, window, minimum spans, season and
//!   horizons by this factor (1 to 3600; default 1), so that with e.g. 120 the detector flags
//!   the leak and the page at `/debug/leakguard/ui` draws its trend and projected OOM within
//!   half a minute instead of 40.
//! - every `LEAKGUARD_*` variable of the operator contract (endpoint address, thresholds, …).
//!
//! Endpoints of the service: `GET /` (a little real work), `GET /leak?kib=N` (keeps N KiB
//! forever), `GET /leak_conn?n=N` (opens N connections and never closes them: they show in the
//! report's handles section as kind `upstream_conn`, with the function that opened them).
//! The service's own accepted connections are tracked as kind `http_conn`. A bounded cache
//! named `pages` (a quarter of the limit, weighed in bytes) fills in the background; when the
//! critical threshold is reached, leakguard shrinks it before it considers a restart.
//! `GET /child_env` runs `env` as a child process and returns what the service's children
//! see (leakguard's handover variables are not among them). leakguard's endpoint is printed
//! at start.

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use leakguard::restart::RestartPolicy;
use leakguard::trend::TrendConfig;
use leakguard::{Event, Guard, format_bytes, parse_duration, parse_size};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;

/// What the service leaks: kept forever, never read again.
static LEAKED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
static LEAKED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The leak: the function a heap profile names as the top growing allocation site.
#[inline(never)]
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

/// Connections the service "forgot" to close (see `/leak_conn`).
static LEAKED_CONNS: Mutex<Vec<leakguard::Tracked<std::net::TcpStream>>> = Mutex::new(Vec::new());

/// The service's own address, for `/leak_conn` to connect to.
static SERVICE_ADDR: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();

/// Opens a connection like a client to an upstream would, counted by leakguard while open.
fn open_upstream_conn(
    addr: std::net::SocketAddr,
) -> std::io::Result<leakguard::Tracked<std::net::TcpStream>> {
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    Ok(leakguard::Tracked::new(stream, "upstream_conn"))
}

/// `GET /leak_conn?n=N`: opens N connections and keeps them open forever.
async fn leak_conn_handler(
    Query(q): Query<HashMap<String, String>>,
) -> (axum::http::StatusCode, String) {
    let n = match q.get("n").map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if n <= 256 => n,
        _ => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                "use /leak_conn?n=N with N from 0 to 256\n".into(),
            );
        }
    };
    let Some(addr) = SERVICE_ADDR.get().copied() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready\n".into(),
        );
    };
    let opened = tokio::task::spawn_blocking(move || {
        let mut opened = 0;
        for _ in 0..n {
            match open_upstream_conn(addr) {
                Ok(conn) => {
                    if let Ok(mut kept) = LEAKED_CONNS.lock() {
                        kept.push(conn);
                        opened += 1;
                    }
                }
                Err(_) => break,
            }
        }
        opened
    })
    .await
    .unwrap_or(0);
    let total = LEAKED_CONNS.lock().map_or(0, |k| k.len());
    (
        axum::http::StatusCode::OK,
        format!("leaked {opened} connection(s); {total} kept open in total\n"),
    )
}

/// An accepted connection, counted by leakguard as kind `http_conn` while it is open.
struct TrackedConn {
    stream: tokio::net::TcpStream,
    _handle: leakguard::HandleGuard,
}

impl tokio::io::AsyncRead for TrackedConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TrackedConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The service's listener, which stops handing out connections once the drain begins: new
/// connections then wait in the kernel's backlog for the next process image, and the ones
/// already accepted are served to the end.
struct DrainableListener {
    inner: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl axum::serve::Listener for DrainableListener {
    type Io = TrackedConn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, stop) = (&self.inner, &mut self.stop);
        loop {
            tokio::select! {
                accepted = inner.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let conn = TrackedConn { stream, _handle: leakguard::track("http_conn") };
                        return (conn, peer);
                    }
                    // Out of descriptors and the like: wait a little rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => {
                    std::future::pending::<()>().await
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A cache of rendered pages, weighed in bytes: bounded, named, and shrunk under pressure.
static PAGES: std::sync::OnceLock<leakguard::cache::LruCache<u64, Vec<u8>>> =
    std::sync::OnceLock::new();

/// `GET /child_env`: the environment a child process of the service gets.
async fn child_env() -> (axum::http::StatusCode, String) {
    let out = tokio::task::spawn_blocking(|| std::process::Command::new("env").output()).await;
    match out.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        Ok(out) => (
            axum::http::StatusCode::OK,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot run env: {e}\n"),
        ),
    }
}

/// The leak detector's settings: the defaults, or every span of the series it looks at divided
/// by `DEMO_TREND_SPEEDUP` (not `urgent_eta`: the time left until the limit is real time).
fn trend_config() -> TrendConfig {
    let mut config = TrendConfig::default();
    let Ok(value) = std::env::var("DEMO_TREND_SPEEDUP") else {
        return config;
    };
    let speedup: u32 = value
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=3600).contains(n))
        .unwrap_or_else(|| fail("DEMO_TREND_SPEEDUP must be a whole number from 1 to 3600".into()));
    config.warmup /= speedup;
    config.window /= speedup;
    config.min_span /= speedup;
    config.urgent_span /= speedup;
    config.season /= speedup;
    for horizon in &mut config.horizons {
        *horizon /= speedup;
    }
    config
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

    let drain_delay = parse_duration("DEMO_DRAIN_DELAY", &env_or("DEMO_DRAIN_DELAY", "2s"))
        .unwrap_or_else(|e| fail(e.to_string()));

    // At a restart, leakguard calls this after readiness went off: stop accepting and finish
    // the requests in flight, then return (the listener itself stays open for the new image).
    let (stop_accepting, stop_rx) = tokio::sync::watch::channel(false);
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_tx = std::sync::Mutex::new(Some(drain_tx));
    let (drained_tx, drained_rx) = std::sync::mpsc::channel::<()>();
    let drained_rx = std::sync::Mutex::new(drained_rx);

    let guard = Guard::builder()
        .limit(limit)
        .trend(trend_config())
        .restart_policy(RestartPolicy {
            drain_delay,
            ..RestartPolicy::default()
        })
        .on_event(print_event)
        .on_drain(move |deadline| {
            // First stop accepting; give the connections just accepted time to have their
            // request read; then close idle connections and finish the ones in flight.
            let _ = stop_accepting.send(true);
            std::thread::sleep(Duration::from_millis(250));
            if let Some(tx) = drain_tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if let Ok(rx) = drained_rx.lock() {
                let _ = rx.recv_timeout(wait);
            }
        })
        .start()
        .unwrap_or_else(|e| fail(format!("cannot start leakguard: {e}")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    // The service's listener comes through leakguard, so it survives a restart in place.
    let listener = leakguard::listener("http", demo_addr.as_str())
        .and_then(|l| {
            l.set_nonblocking(true)
                .map_err(|source| leakguard::Error::Io {
                    what: "making the listener non-blocking".into(),
                    source,
                })?;
            Ok(l)
        })
        .unwrap_or_else(|e| fail(format!("cannot listen on {demo_addr}: {e}")));
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)
            .unwrap_or_else(|e| fail(format!("cannot listen on {demo_addr}: {e}")))
    };
    let service_addr = listener
        .local_addr()
        .map_or(demo_addr.clone(), |a| a.to_string());
    if let Ok(a) = listener.local_addr() {
        let _ = SERVICE_ADDR.set(a);
    }
    // Every upstream connection's creation site is recorded (a kind under suspicion), and more
    // than 100 open at once is a warning.
    let _ = leakguard::handles::configure(
        "upstream_conn",
        leakguard::KindConfig::new().sample_every(1).max_open(100),
    );

    println!(
        "leaky_service (pid {}): a demo service with a deliberate leak, guarded by leakguard",
        std::process::id()
    );
    println!(
        "  service     http://{service_addr}/          (GET /leak?kib=N, /leak_conn?n=N leak on demand)"
    );
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
            println!("              http://{a}/debug/leakguard/ui   (the page)");
            if leakguard::profile::status().is_active() {
                println!(
                    "              http://{a}/debug/pprof/heap  (heap profile, needs the token)"
                );
            }
        }
        None => println!("  leakguard   endpoint off (see the events)"),
    }
    println!();

    let pages = PAGES.get_or_init(|| {
        leakguard::cache::LruCache::builder(limit / 4)
            .weigher(|_, page: &Vec<u8>| page.len() as u64)
            .name("pages")
            .build()
    });
    // The page cache fills in the background (as traffic would fill it), 64 KiB at a time.
    let warm = pages.clone();
    let cache_fill = std::thread::Builder::new()
        .name("demo-cache".into())
        .spawn(move || {
            for key in 0u64.. {
                warm.insert(key, vec![(key % 251) as u8; 64 * 1024]);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
    if let Err(e) = cache_fill {
        fail(format!("cannot start the cache thread: {e}"));
    }

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
                let cache = r
                    .caches
                    .iter()
                    .find(|c| c.name == "pages")
                    .map_or(0, |c| c.weight_bytes);
                println!(
                    "[{:>4}s] rss {usage}  heap {}  cache {}  growth {}{}/s  state {}",
                    started.elapsed().as_secs(),
                    format_bytes(r.memory.heap_bytes.unwrap_or(0)),
                    format_bytes(cache),
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
        .route("/leak", get(leak_handler))
        .route("/leak_conn", get(leak_conn_handler))
        .route("/child_env", get(child_env));
    let served = runtime.block_on(async {
        let listener = DrainableListener {
            inner: listener,
            stop: stop_rx,
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = drain_rx.await;
            })
            .await
    });
    if let Err(e) = served {
        fail(format!("the service stopped: {e}"));
    }
    // Drained: in-flight requests are done. leakguard now replaces the process image; new
    // connections wait in the listener's backlog meanwhile.
    println!("  [demo] drained: no request in flight");
    let _ = drained_tx.send(());
    loop {
        std::thread::park();
    }
}
