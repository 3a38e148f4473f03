//! The guard: the background sampler thread, thresholds, events, and the endpoint's content.

use crate::allocator::{Allocator, AllocatorChoice};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LimitSetting, RestartAction, parse_addr};
use crate::endpoint::{self, EndpointRequest, EndpointResponse, Routes};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, EventLog, Level};
use crate::exposition;
use crate::history::{History, HistoryPoint};
use crate::report::Report;
use crate::sample::{MemorySample, Sampler};
use crate::snapshot::{Limit, Snapshot};
use crate::threshold::{MemoryState, ThresholdTracker, Thresholds, Transition};
use crate::units::format_bytes;
use parking_lot::{Condvar, Mutex};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type EventCallback = Box<dyn Fn(&Event) + Send + Sync>;
type Answer = fn(&Inner, &EndpointRequest) -> EndpointResponse;

/// Builds and starts a [`Guard`]. The `LEAKGUARD_*` environment variables override what is
/// set here (unless [`GuardBuilder::ignore_env`] is called).
#[must_use = "a builder does nothing until `start()` is called"]
pub struct GuardBuilder {
    config: Config,
    read_env: bool,
    clock: Option<Arc<dyn Clock>>,
    sampler: Option<Sampler>,
    background: bool,
    record_metrics: bool,
    callbacks: Vec<EventCallback>,
    addr_error: Option<Error>,
}

impl std::fmt::Debug for GuardBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("config", &self.config)
            .field("read_env", &self.read_env)
            .field("background", &self.background)
            .finish_non_exhaustive()
    }
}

impl GuardBuilder {
    fn new() -> Self {
        Self {
            config: Config::default(),
            read_env: true,
            clock: None,
            sampler: None,
            background: true,
            record_metrics: true,
            callbacks: Vec::new(),
            addr_error: None,
        }
    }

    /// A fixed memory limit in bytes, instead of the cgroup's (`LEAKGUARD_LIMIT`).
    pub fn limit(mut self, bytes: u64) -> Self {
        self.config.limit = LimitSetting::Bytes(bytes);
        self.config.limit_origin = "builder";
        self
    }

    /// Warning threshold as a fraction of the limit (`LEAKGUARD_WARN`, default 0.80).
    pub fn warn(mut self, fraction: f64) -> Self {
        self.config.warn = fraction;
        self
    }

    /// Critical threshold (`LEAKGUARD_CRITICAL`, default 0.90).
    pub fn critical(mut self, fraction: f64) -> Self {
        self.config.critical = fraction;
        self
    }

    /// Restart threshold (`LEAKGUARD_RESTART`, default 0.95).
    pub fn restart(mut self, fraction: f64) -> Self {
        self.config.restart = fraction;
        self
    }

    /// Consecutive samples needed to enter or leave a threshold state (default 3).
    pub fn consecutive_samples(mut self, n: u32) -> Self {
        self.config.consecutive_samples = n;
        self
    }

    /// How far below a threshold usage must fall to leave its state (default 0.05).
    pub fn hysteresis(mut self, fraction: f64) -> Self {
        self.config.hysteresis = fraction;
        self
    }

    /// Sampling interval (`LEAKGUARD_INTERVAL`, default 1 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// The debug endpoint's address: `"127.0.0.1:6464"`, `":6464"`, `"6464"` or `"off"`
    /// (`LEAKGUARD_ADDR`). An address that cannot be parsed makes `start()` fail.
    pub fn addr(mut self, addr: &str) -> Self {
        match parse_addr("addr", addr) {
            Ok(a) => self.config.addr = a,
            Err(e) => self.addr_error = Some(e),
        }
        self
    }

    /// Disables the debug endpoint (same as `addr("off")`).
    pub fn no_endpoint(mut self) -> Self {
        self.config.addr = None;
        self
    }

    /// Bearer token for mutating endpoints (`LEAKGUARD_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// The restart action (`LEAKGUARD_RESTART_ACTION`, default re-exec).
    pub fn restart_action(mut self, action: RestartAction) -> Self {
        self.config.restart_action = action;
        self
    }

    /// No restart before this uptime (`LEAKGUARD_MIN_UPTIME`, default 60 s).
    pub fn min_uptime(mut self, uptime: Duration) -> Self {
        self.config.min_uptime = uptime;
        self
    }

    /// Which allocator backend to read (default: detect).
    pub fn allocator(mut self, choice: AllocatorChoice) -> Self {
        self.config.allocator = choice;
        self
    }

    /// Do not read `LEAKGUARD_*` environment variables (tests, embedding).
    pub fn ignore_env(mut self) -> Self {
        self.read_env = false;
        self
    }

    /// The clock to timestamp samples and bucket the history with (tests use
    /// [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Use this sampler (e.g. over fixture trees) instead of the real system.
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Whether to start the background sampler thread (default true). Without it, samples are
    /// taken only by [`Guard::tick`].
    pub fn background(mut self, yes: bool) -> Self {
        self.background = yes;
        self
    }

    /// Whether to record metrics through the `metrics` facade (default true).
    pub fn record_metrics(mut self, yes: bool) -> Self {
        self.record_metrics = yes;
        self
    }

    /// Calls `f` for every event, on the sampler thread. Keep it short; a panic inside it is
    /// caught and reported.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Box::new(f));
        self
    }

    /// The configuration as it stands (before the environment is applied).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies the environment, validates, takes a first sample, starts the endpoint and the
    /// sampler thread.
    ///
    /// Fails on a bad setting (naming it). A debug endpoint that cannot bind does not fail the
    /// start: it is reported as an event and in the report, and the guard runs without it.
    pub fn start(self) -> Result<Guard> {
        if let Some(e) = self.addr_error {
            return Err(e);
        }
        let mut config = self.config;
        if self.read_env {
            config.apply_env(|k| std::env::var(k).ok())?;
        }
        config.validate()?;
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(SystemClock::new()) as Arc<dyn Clock>);
        let sampler = self.sampler.unwrap_or_else(|| {
            Sampler::with_readers(
                crate::process::ProcReader::new(),
                Some(crate::cgroup::CgroupReader::new()),
                Allocator::new(config.allocator),
            )
        });
        let allocator = sampler.allocator_status().clone();
        let thresholds = Thresholds {
            warn: config.warn,
            critical: config.critical,
            restart: config.restart,
            consecutive_samples: config.consecutive_samples,
            hysteresis: config.hysteresis,
        };
        let inner = Arc::new(Inner {
            started_mono: clock.monotonic(),
            started_unix: clock.unix_seconds(),
            clock,
            sampler: Mutex::new(sampler),
            allocator,
            state: Mutex::new(State {
                latest: None,
                history: History::default(),
                tracker: ThresholdTracker::new(thresholds),
                limit: None,
                failing: Vec::new(),
            }),
            events: Mutex::new(EventLog::default()),
            ready: AtomicBool::new(true),
            samples: AtomicU64::new(0),
            sample_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            callbacks: self.callbacks,
            record_metrics: self.record_metrics,
            endpoint: Mutex::new(None),
            config,
        });

        inner.emit(vec![inner.event(
            Level::Info,
            EventKind::Started,
            format!(
                "leakguard {} started: sampling every {:?}, allocator {}, endpoint {}",
                env!("CARGO_PKG_VERSION"),
                inner.config.interval,
                allocator_name(inner.allocator.kind),
                inner
                    .config
                    .addr
                    .map_or_else(|| "off".to_owned(), |a| format!("http://{a}")),
            ),
        )]);
        if let Some(note) = inner.allocator.note.clone() {
            inner.emit(vec![inner.event(Level::Warn, EventKind::Allocator, note)]);
        }
        // The first sample, so the report and /metrics have data at once.
        inner.tick();
        if inner.record_metrics {
            exposition::describe(&exposition::families(&inner.snapshot(false)));
        }

        #[cfg(feature = "http")]
        let server = match inner.config.addr {
            Some(addr) => {
                let routes: Arc<dyn Routes> = Arc::new(GuardRoutes(Arc::clone(&inner)));
                match crate::http::Server::bind(addr, routes, crate::http::ServerOptions::default())
                {
                    Ok(server) => {
                        *inner.endpoint.lock() = Some(server.local_addr());
                        Some(server)
                    }
                    Err(e) => {
                        inner.emit(vec![inner.event(
                            Level::Error,
                            EventKind::EndpointFailed,
                            format!("the debug endpoint is off: {e}"),
                        )]);
                        None
                    }
                }
            }
            None => None,
        };

        let thread = if self.background {
            let worker = Arc::clone(&inner);
            let spawned = std::thread::Builder::new()
                .name("leakguard-sampler".into())
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => Some(handle),
                Err(source) => {
                    return Err(Error::Io {
                        what: "starting the leakguard sampler thread".into(),
                        source,
                    });
                }
            }
        } else {
            None
        };

        Ok(Guard {
            inner,
            thread,
            #[cfg(feature = "http")]
            server,
        })
    }
}

/// A running guard. Dropping it (or calling [`Guard::stop`]) stops the sampler thread and the
/// endpoint and joins them.
///
/// ```no_run
/// # fn main() -> Result<(), leakguard::Error> {
/// let guard = leakguard::Guard::builder()
///     .limit(512 << 20)
///     .addr("127.0.0.1:6464")
///     .start()?;
/// println!("{}", guard.report().memory.resident_bytes.unwrap_or(0));
/// # Ok(()) }
/// ```
#[must_use = "the guard stops when dropped; keep it alive for the life of the service"]
pub struct Guard {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    #[cfg(feature = "http")]
    server: Option<crate::http::Server>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("state", &self.state())
            .field("endpoint", &self.endpoint_addr())
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A builder with the defaults of the operator contract.
    pub fn builder() -> GuardBuilder {
        GuardBuilder::new()
    }

    /// Takes one sample now and evaluates thresholds; returns the sample.
    pub fn tick(&self) -> MemorySample {
        self.inner.tick()
    }

    /// The report.
    pub fn report(&self) -> Report {
        Report::from_snapshot(self.inner.snapshot(true))
    }

    /// The report as JSON (what `GET /debug/leakguard` serves).
    pub fn report_json(&self) -> String {
        self.report().to_json()
    }

    /// The Prometheus text exposition (what `GET /metrics` serves).
    pub fn render_metrics(&self) -> String {
        exposition::render(&exposition::families(&self.inner.snapshot(false)))
    }

    /// Answers an endpoint request, for services that mount the endpoint in their own router.
    pub fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        self.inner.route(request)
    }

    /// Something that answers endpoint requests and can be shared with another server.
    pub fn routes(&self) -> Arc<dyn Routes> {
        Arc::new(GuardRoutes(Arc::clone(&self.inner)))
    }

    /// The threshold state.
    pub fn state(&self) -> MemoryState {
        self.inner.state.lock().tracker.state()
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// The address the debug endpoint listens on, if it runs.
    pub fn endpoint_addr(&self) -> Option<SocketAddr> {
        *self.inner.endpoint.lock()
    }

    /// The last sample.
    pub fn latest(&self) -> Option<MemorySample> {
        self.inner.state.lock().latest.clone()
    }

    /// The 1 s history (last 10 minutes), oldest first.
    pub fn history_fine(&self) -> Vec<HistoryPoint> {
        self.inner.state.lock().history.fine.points()
    }

    /// The 1 min history (last 24 hours), oldest first.
    pub fn history_coarse(&self) -> Vec<HistoryPoint> {
        self.inner.state.lock().history.coarse.points()
    }

    /// Recent events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.inner.events.lock().recent()
    }

    /// The configuration in force (builder plus environment).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Stops the sampler thread and the endpoint and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        #[cfg(feature = "http")]
        if let Some(mut server) = self.server.take() {
            server.stop();
            *self.inner.endpoint.lock() = None;
        }
        if let Some(thread) = self.thread.take() {
            *self.inner.stop.lock() = true;
            self.inner.wake.notify_all();
            let _ = thread.join();
            self.inner.emit(vec![self.inner.event(
                Level::Info,
                EventKind::Stopped,
                "leakguard stopped".into(),
            )]);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct State {
    latest: Option<MemorySample>,
    history: History,
    tracker: ThresholdTracker,
    limit: Option<Limit>,
    failing: Vec<String>,
}

struct Inner {
    config: Config,
    clock: Arc<dyn Clock>,
    started_mono: Duration,
    started_unix: f64,
    /// Held while sampling (I/O); never taken on a request path.
    sampler: Mutex<Sampler>,
    allocator: crate::allocator::AllocatorStatus,
    /// Held only briefly, never during I/O.
    state: Mutex<State>,
    events: Mutex<EventLog>,
    ready: AtomicBool,
    samples: AtomicU64,
    sample_errors: AtomicU64,
    panics: AtomicU64,
    restarts: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
    callbacks: Vec<EventCallback>,
    record_metrics: bool,
    endpoint: Mutex<Option<SocketAddr>>,
}

fn allocator_name(kind: crate::allocator::AllocatorKind) -> &'static str {
    match kind {
        crate::allocator::AllocatorKind::Jemalloc => "jemalloc",
        crate::allocator::AllocatorKind::Glibc => "glibc malloc",
        crate::allocator::AllocatorKind::None => "none",
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The source name of an error string `"source: reason"`.
fn source_of(error: &str) -> &str {
    error.split(':').next().unwrap_or(error)
}

impl Inner {
    fn event(&self, level: Level, kind: EventKind, message: String) -> Event {
        Event {
            unix_seconds: self.clock.unix_seconds(),
            level,
            kind,
            message,
        }
    }

    /// Records, traces and hands events to the callbacks. A callback that panics is reported
    /// (not through the callbacks) and the others still run.
    fn emit(&self, events: Vec<Event>) {
        for e in events {
            crate::event::trace(&e);
            self.events.lock().push(e.clone());
            for cb in &self.callbacks {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| cb(&e))) {
                    self.caught_panic("an on_event callback panicked", &*payload);
                }
            }
        }
    }

    /// Counts and reports a caught panic, without calling the callbacks.
    fn caught_panic(&self, what: &str, payload: &(dyn std::any::Any + Send)) {
        self.panics.fetch_add(1, Ordering::Relaxed);
        let e = self.event(
            Level::Error,
            EventKind::SamplerPanicked,
            format!("{what}; the guard goes on: {}", panic_message(payload)),
        );
        crate::event::trace(&e);
        self.events.lock().push(e);
    }

    fn resolve_limit(&self, sample: &MemorySample) -> Option<Limit> {
        match self.config.limit {
            LimitSetting::Bytes(bytes) => Some(Limit {
                bytes,
                source: self.config.limit_origin.to_owned(),
            }),
            LimitSetting::Cgroup => {
                let cg = sample.cgroup.as_ref()?;
                let bytes = cg.limit_bytes?;
                let path = cg.limit_source.as_deref().unwrap_or(&cg.path);
                Some(Limit {
                    bytes,
                    source: format!("cgroup {path}"),
                })
            }
        }
    }

    fn tick(&self) -> MemorySample {
        let sample = self.sampler.lock().sample(&*self.clock);
        self.samples.fetch_add(1, Ordering::Relaxed);
        if !sample.errors.is_empty() {
            self.sample_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut events = Vec::new();
        {
            let mut st = self.state.lock();
            let limit = self.resolve_limit(&sample);
            if limit != st.limit {
                let message = match &limit {
                    Some(l) => format!("memory limit {} (from {})", format_bytes(l.bytes), l.source),
                    None => "no memory limit is known: thresholds are inactive (set LEAKGUARD_LIMIT or run under a cgroup limit)".to_owned(),
                };
                events.push(self.event(Level::Info, EventKind::LimitChanged, message));
                st.limit = limit;
            }
            let ratio = st
                .limit
                .as_ref()
                .map(|l| sample.process.resident_bytes as f64 / l.bytes.max(1) as f64);
            if let Some(Transition { from, to }) = st.tracker.observe(ratio) {
                let (level, kind) = if to > from {
                    let level = match to {
                        MemoryState::Warn => Level::Warn,
                        _ => Level::Error,
                    };
                    (level, EventKind::ThresholdRaised)
                } else {
                    (Level::Info, EventKind::ThresholdLowered)
                };
                let usage = format_bytes(sample.process.resident_bytes);
                let limit = st.limit.as_ref().map_or(0, |l| l.bytes);
                events.push(self.event(
                    level,
                    kind,
                    format!(
                        "memory state {from} -> {to}: resident {usage} is {:.1}% of the {} limit",
                        ratio.unwrap_or(0.0) * 100.0,
                        format_bytes(limit)
                    ),
                ));
            }
            let failing: Vec<String> = sample
                .errors
                .iter()
                .map(|e| source_of(e).to_owned())
                .collect();
            for e in &sample.errors {
                if !st.failing.iter().any(|f| f == source_of(e)) {
                    events.push(self.event(Level::Warn, EventKind::SourceFailed, e.clone()));
                }
            }
            for f in &st.failing {
                if !failing.contains(f) {
                    events.push(self.event(
                        Level::Info,
                        EventKind::SourceRecovered,
                        format!("{f}: statistics available again"),
                    ));
                }
            }
            st.failing = failing;
            st.history.push(&sample);
            st.latest = Some(sample.clone());
        }
        if self.record_metrics {
            exposition::record(&exposition::families(&self.snapshot(false)));
        }
        self.emit(events);
        sample
    }

    fn run(&self) {
        loop {
            let next = Instant::now() + self.config.interval;
            {
                let mut stop = self.stop.lock();
                while !*stop {
                    if self.wake.wait_until(&mut stop, next).timed_out() {
                        break;
                    }
                }
                if *stop {
                    return;
                }
            }
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                self.tick();
            })) {
                self.caught_panic("the sampler panicked", &*payload);
            }
        }
    }

    fn snapshot(&self, with_events: bool) -> Snapshot {
        let (sample, limit, state, thresholds) = {
            let st = self.state.lock();
            (
                st.latest.clone(),
                st.limit.clone(),
                st.tracker.state(),
                *st.tracker.thresholds(),
            )
        };
        let (events_by_level, recent_events) = {
            let log = self.events.lock();
            (
                [
                    log.total(Level::Info),
                    log.total(Level::Warn),
                    log.total(Level::Error),
                ],
                if with_events {
                    log.recent()
                } else {
                    Vec::new()
                },
            )
        };
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            now_unix: self.clock.unix_seconds(),
            started_unix: self.started_unix,
            uptime_seconds: self
                .clock
                .monotonic()
                .saturating_sub(self.started_mono)
                .as_secs_f64(),
            interval_seconds: self.config.interval.as_secs_f64(),
            sample,
            limit,
            state,
            thresholds,
            ready: self.ready.load(Ordering::SeqCst),
            samples_total: self.samples.load(Ordering::Relaxed),
            sample_errors_total: self.sample_errors.load(Ordering::Relaxed),
            panics_total: self.panics.load(Ordering::Relaxed),
            restarts_total: self.restarts.load(Ordering::Relaxed),
            events_by_level,
            recent_events,
            allocator: self.allocator.clone(),
            endpoint: self.endpoint.lock().map(|a| a.to_string()),
        }
    }

    fn route(&self, req: &EndpointRequest) -> EndpointResponse {
        const GET: &[&str] = &["GET", "HEAD"];
        let (allowed, answer): (&[&str], Answer) = match req.path.as_str() {
            "/healthz" => (GET, |_, _| {
                EndpointResponse::new(200, endpoint::TEXT, "ok\n")
            }),
            "/readyz" => (GET, |inner, _| {
                if inner.ready.load(Ordering::SeqCst) {
                    EndpointResponse::new(200, endpoint::TEXT, "ready\n")
                } else {
                    EndpointResponse::new(503, endpoint::TEXT, "not ready: restarting\n")
                }
            }),
            "/metrics" => (GET, |inner, _| {
                let text = exposition::render(&exposition::families(&inner.snapshot(false)));
                EndpointResponse::new(200, endpoint::PROMETHEUS_TEXT, text)
            }),
            "/debug/leakguard" | "/debug/leakguard/" => (GET, |inner, _| {
                let report = Report::from_snapshot(inner.snapshot(true));
                EndpointResponse::new(200, endpoint::JSON, report.to_json())
            }),
            _ => {
                return EndpointResponse::error(
                    404,
                    "not found: the endpoints are /healthz, /readyz, /metrics, /debug/leakguard",
                );
            }
        };
        if !allowed.contains(&req.method.as_str()) {
            let mut r = EndpointResponse::error(
                405,
                &format!(
                    "method {} not allowed; use {}",
                    req.method,
                    allowed.join(", ")
                ),
            );
            r.headers.push(("Allow", allowed.join(", ")));
            return r;
        }
        answer(self, req)
    }
}

struct GuardRoutes(Arc<Inner>);

impl Routes for GuardRoutes {
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        self.0.route(request)
    }
}
