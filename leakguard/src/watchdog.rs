//! The guard: the background sampler thread, thresholds, events, and the endpoint's content.

use crate::allocator::{Allocator, AllocatorChoice};
use crate::attribution::{Attribution, Baseline, attribute};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LimitSetting, RestartAction, parse_addr};
use crate::endpoint::{self, EndpointRequest, EndpointResponse, Routes};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, EventLog, Level};
use crate::exposition;
use crate::history::{History, HistoryPoint};
use crate::report::Report;
use crate::restart::{DrainHook, HookOutcome, RestartCallback, RestartPolicy, run_hooks};
use crate::sample::{MemorySample, Sampler};
use crate::snapshot::{Limit, Snapshot};
use crate::threshold::{MemoryState, ThresholdTracker, Thresholds, Transition};
use crate::trend::{Severity, TrendConfig, TrendDetector};
use crate::units::format_bytes;
use parking_lot::{Condvar, Mutex};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type EventCallback = Box<dyn Fn(&Event) + Send + Sync>;
type Answer = fn(&Arc<Inner>, &EndpointRequest) -> EndpointResponse;

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
    trend: TrendConfig,
    hooks: Vec<DrainHook>,
    policy: RestartPolicy,
    restart_callback: Option<RestartCallback>,
    pressure_fraction: f64,
    extensions: crate::extend::Extensions,
    dump_dir: Option<std::path::PathBuf>,
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
            trend: TrendConfig::default(),
            hooks: Vec::new(),
            policy: RestartPolicy::default(),
            restart_callback: None,
            pressure_fraction: 0.5,
            extensions: crate::extend::Extensions::default(),
            dump_dir: None,
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

    /// The leak detector's settings (warm-up, window, rates; defaults follow the runbooks).
    pub fn trend(mut self, config: TrendConfig) -> Self {
        self.trend = config;
        self
    }

    /// Registers a drain hook, run at a graceful restart after readiness went off and the drain
    /// delay passed: stop accepting, finish in-flight work, before the deadline it is given.
    /// Hooks run in the order registered; one that panics or overruns is reported and the
    /// sequence goes on.
    pub fn on_drain(mut self, hook: impl Fn(std::time::Instant) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// When the critical threshold is reached, every registered cache is asked to shrink to
    /// this fraction of its size (default 0.5), before any restart is considered.
    pub fn pressure_shrink(mut self, fraction: f64) -> Self {
        self.pressure_fraction = fraction.clamp(0.0, 1.0);
        self
    }

    /// Drain delay, drain timeout and the restarts-per-hour limit.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// A restart action in code: `f` is called with the reason after the drain, instead of the
    /// built-in actions (the same as `restart_action(RestartAction::Callback)` plus the callback).
    pub fn on_restart(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.restart_callback = Some(Arc::new(f));
        self.config.restart_action = RestartAction::Callback;
        self
    }

    /// Where post-mortem dumps (heap profile and report) are written before a restart and on
    /// `POST /debug/leakguard/dump` (`LEAKGUARD_DUMP_DIR`; default none: no dumps). See
    /// [`profile::write_dump`](crate::profile::write_dump).
    pub fn dump_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dump_dir = Some(dir.into());
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

    /// Adds a route to the endpoint: `handler` answers requests to exactly `path` with one of
    /// `methods` (others get 405). Routes other than GET/HEAD need the token, like the built-in
    /// mutating ones; with `LEAKGUARD_AUTH=all` every route does. `start` refuses a path the
    /// guard answers itself, a path added twice, or more than
    /// [`MAX_EXTENSIONS`](crate::extend::MAX_EXTENSIONS) routes. See [`crate::extend`].
    pub fn route(
        mut self,
        path: &str,
        methods: &[&'static str],
        handler: impl Fn(&EndpointRequest) -> EndpointResponse + Send + Sync + 'static,
    ) -> Self {
        self.extensions.routes.push(crate::extend::Route {
            path: path.to_owned(),
            methods: methods.to_vec(),
            handler: Arc::new(handler),
        });
        self
    }

    /// Adds a top-level section `name` to the report (`GET /debug/leakguard`,
    /// [`Guard::report`]), made by `f` each time a report is made. `start` refuses a name the
    /// report has already. See [`crate::extend`].
    pub fn report_section(
        mut self,
        name: &str,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.extensions
            .sections
            .push((name.to_owned(), Arc::new(f)));
        self
    }

    /// Adds a hook that runs at a purge (`POST /debug/leakguard/purge`) before the allocator
    /// gives its free memory back, e.g. a garbage collection; what it returns appears in the
    /// purge's answer under `hooks.<name>`. See [`crate::extend`].
    pub fn on_purge(
        mut self,
        name: &str,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.extensions
            .purge_hooks
            .push((name.to_owned(), Arc::new(f)));
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
        self.extensions.validate()?;
        let mut dump_dir = self.dump_dir;
        if self.read_env
            && let Some(dir) = std::env::var_os("LEAKGUARD_DUMP_DIR").filter(|d| !d.is_empty())
        {
            dump_dir = Some(dir.into());
        }
        if config.restart_action == RestartAction::Callback && self.restart_callback.is_none() {
            return Err(Error::config(
                "restart action",
                "callback",
                "set the callback with GuardBuilder::on_restart",
            ));
        }
        let handover_notes = crate::handover::take_environment();
        let record = crate::handover::record();
        if let Some(clock) = &self.clock {
            // Handle ages follow the guard's clock (a manual one in tests).
            crate::handles::set_clock(Arc::clone(clock));
        }
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
                trend: TrendDetector::new(self.trend),
                baseline: None,
            }),
            events: Mutex::new(EventLog::default()),
            ready: AtomicBool::new(true),
            samples: AtomicU64::new(0),
            sample_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(record.restarts_total),
            hooks: self.hooks,
            policy: self.policy,
            restart_callback: self.restart_callback,
            restarting: AtomicBool::new(false),
            restart_deferred: Mutex::new(None),
            handle_limits: Mutex::new(crate::handles::LimitMonitor::new()),
            pressure_fraction: self.pressure_fraction,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            callbacks: self.callbacks,
            record_metrics: self.record_metrics,
            endpoint: Mutex::new(None),
            extensions: self.extensions,
            profiles: crate::profile::Profiles::default(),
            dump_dir,
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
        for note in handover_notes {
            inner.emit(vec![inner.event(Level::Warn, EventKind::Restart, note)]);
        }
        if record.restarts_total > 0 {
            inner.emit(vec![inner.event(
                Level::Info,
                EventKind::Restart,
                format!(
                    "running after graceful restart #{} in place (pid {}); last reason: {}",
                    record.restarts_total,
                    std::process::id(),
                    record.last_reason.as_deref().unwrap_or("unknown")
                ),
            )]);
        }
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
                let started = crate::handover::listener("leakguard", addr).and_then(|l| {
                    crate::http::Server::start(l, routes, crate::http::ServerOptions::default())
                });
                match started {
                    Ok(server) => {
                        *inner.endpoint.lock() = Some(server.local_addr());
                        let token = inner.config.token.as_deref();
                        if let Some(w) = crate::config::exposure_warning(server.local_addr(), token)
                        {
                            inner.emit(vec![inner.event(Level::Warn, EventKind::Exposed, w)]);
                        }
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

    /// Starts a graceful restart now (as `POST /debug/leakguard/restart` does): readiness off,
    /// drain delay, drain hooks, then the restart action, on a thread of its own. Refused
    /// while one is under way or when the per-hour limit is reached.
    pub fn restart_now(&self, reason: &str) -> std::result::Result<(), String> {
        Arc::clone(&self.inner).begin_restart(reason.to_owned())
    }

    /// Writes a post-mortem dump now (as `POST /debug/leakguard/dump` does): the report and,
    /// when heap profiling is on, the heap profile, into the dump directory
    /// (`LEAKGUARD_DUMP_DIR`). Fails when no directory is set or it cannot be written.
    pub fn dump(&self, reason: &str) -> Result<crate::profile::DumpOutcome> {
        self.inner.dump_and_say(reason)
    }

    /// The growth of the live heap since the baseline heap profile (taken at the end of the
    /// warm-up), computed now. Fails when profiling is off or no baseline was taken yet.
    pub fn heap_growth(&self) -> Result<crate::profile::HeapGrowth> {
        let base = self.inner.profiles.baseline().ok_or_else(|| {
            Error::Profile(match crate::profile::status().how_to_enable() {
                Some(how) => how,
                None => "no baseline yet: it is taken when the warm-up ends".to_owned(),
            })
        })?;
        let now = crate::profile::heap_profile(self.inner.clock.unix_seconds())?;
        Ok(crate::profile::HeapGrowth::between(&base, &now))
    }

    /// Whether a restart is under way.
    pub fn is_restarting(&self) -> bool {
        self.inner.restarting.load(Ordering::SeqCst)
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
    trend: TrendDetector,
    /// Taken when the detector's warm-up ends.
    baseline: Option<Baseline>,
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
    hooks: Vec<DrainHook>,
    policy: RestartPolicy,
    restart_callback: Option<RestartCallback>,
    /// One restart at a time.
    restarting: AtomicBool,
    /// Why a wanted restart is being held back (reported once per reason).
    restart_deferred: Mutex<Option<String>>,
    /// Per-kind handle limits and the fd limit, each crossing reported once.
    handle_limits: Mutex<crate::handles::LimitMonitor>,
    /// Registered caches shrink to this fraction when the critical threshold is reached.
    pressure_fraction: f64,
    /// Extra routes, report sections and purge hooks.
    extensions: crate::extend::Extensions,
    /// The baseline heap profile and the growth since (feature `profiling`).
    profiles: crate::profile::Profiles,
    /// Where post-mortem dumps go (`LEAKGUARD_DUMP_DIR`).
    dump_dir: Option<std::path::PathBuf>,
}

/// The quantities attribution compares: RSS, live heap, caches' weights, open handles.
fn current_quantities(sample: &MemorySample, at: f64) -> Baseline {
    Baseline {
        at,
        resident_bytes: sample.process.resident_bytes,
        heap_bytes: sample.allocator.as_ref().map(|a| a.allocated),
        caches: crate::cache::weight_by_cache(),
        handles: crate::handles::open_by_kind(),
    }
}

fn allocator_name(kind: crate::allocator::AllocatorKind) -> &'static str {
    match kind {
        crate::allocator::AllocatorKind::Jemalloc => "jemalloc",
        crate::allocator::AllocatorKind::Glibc => "glibc malloc",
        crate::allocator::AllocatorKind::None => "none",
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
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

    fn tick(self: &Arc<Self>) -> MemorySample {
        let sample = self.sampler.lock().sample(&*self.clock);
        // Expired cache entries are reclaimed on the sampler's tick too (bounded work).
        crate::cache::maintain_all();
        let handle_events = self.handle_limits.lock().check(Some(&sample.process));
        self.samples.fetch_add(1, Ordering::Relaxed);
        if !sample.errors.is_empty() {
            self.sample_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut events: Vec<Event> = handle_events
            .into_iter()
            .map(|e| self.event(e.level, EventKind::HandleLimit, e.message))
            .collect();
        let want_restart;
        let mut under_pressure = false;
        let mut baseline_now = false;
        let (leak_now, leak_flipped);
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
                under_pressure =
                    to > from && to >= MemoryState::Critical && from < MemoryState::Critical;
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
            // The detector runs on time since start (immune to wall-clock jumps) and RSS.
            let t = self.started_unix
                + sample
                    .monotonic
                    .saturating_sub(self.started_mono)
                    .as_secs_f64();
            let flipped = st.trend.observe(t, sample.process.resident_bytes);
            if st.baseline.is_none()
                && t - self.started_unix >= st.trend.config().warmup.as_secs_f64()
            {
                st.baseline = Some(current_quantities(&sample, t));
                baseline_now = true;
            }
            leak_now = st.trend.verdict().leak;
            leak_flipped = flipped;
            if flipped {
                let v = st.trend.verdict();
                events.push(if v.leak {
                    let level = if v.severity >= Severity::Warning {
                        Level::Error
                    } else {
                        Level::Warn
                    };
                    self.event(
                        level,
                        EventKind::LeakSuspected,
                        format!("leak suspected ({:?}): {}", v.severity, v.reason).to_lowercase(),
                    )
                } else {
                    self.event(
                        Level::Info,
                        EventKind::LeakCleared,
                        format!("leak no longer suspected: {}", v.reason),
                    )
                });
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
            want_restart = self.restart_reason(&st, &sample);
        }
        // Heap profiles (feature `profiling`), outside the state lock: the baseline at the end
        // of the warm-up, the growth since while a leak is suspected.
        if baseline_now && let Some(m) = self.profiles.take_baseline(sample.unix_seconds) {
            events.push(self.event(Level::Info, EventKind::Profile, m));
        }
        if leak_now {
            let mono = sample.monotonic.as_secs_f64();
            if let Some(m) = self
                .profiles
                .refresh_growth(mono, sample.unix_seconds, leak_flipped)
            {
                events.push(self.event(Level::Warn, EventKind::Profile, m));
            }
        } else if leak_flipped {
            self.profiles.clear_growth();
        }
        if under_pressure {
            // The step that often makes a restart unnecessary: caches give memory back.
            let shrunk = crate::cache::shrink_all(self.pressure_fraction);
            if shrunk.entries_evicted > 0 {
                events.push(self.event(
                    Level::Warn,
                    EventKind::Pressure,
                    format!(
                        "memory pressure: caches shrunk to {:.0}%, {} entries and {} evicted",
                        self.pressure_fraction * 100.0,
                        shrunk.entries_evicted,
                        format_bytes(shrunk.bytes_evicted)
                    ),
                ));
            }
        }
        if let Some(reason) = want_restart {
            self.want_restart(reason, &mut events);
        } else {
            *self.restart_deferred.lock() = None;
        }
        if self.record_metrics {
            exposition::record(&exposition::families(&self.snapshot(false)));
        }
        self.emit(events);
        sample
    }

    fn run(self: &Arc<Self>) {
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
        let (sample, limit, state, thresholds, verdict, baseline) = {
            let st = self.state.lock();
            (
                st.latest.clone(),
                st.limit.clone(),
                st.tracker.state(),
                *st.tracker.thresholds(),
                st.trend.verdict().clone(),
                st.baseline.clone(),
            )
        };
        let oom_eta_seconds = match (&sample, &limit) {
            (Some(x), Some(l)) if verdict.leak => verdict
                .slope_bytes_per_second
                .filter(|s| *s > 0.0)
                .map(|s| l.bytes.saturating_sub(x.process.resident_bytes) as f64 / s),
            _ => None,
        };
        let attribution: Option<Attribution> = match (&baseline, &sample) {
            (Some(b), Some(x)) if with_events => {
                Some(attribute(b, &current_quantities(x, x.unix_seconds)))
            }
            _ => None,
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
            verdict,
            oom_eta_seconds,
            attribution,
            handles: with_events.then(crate::handles::report),
            heap_growth: if with_events {
                self.profiles.growth()
            } else {
                None
            },
            caches: if with_events {
                crate::cache::report()
            } else {
                Vec::new()
            },
            extensions: if with_events {
                self.extensions.sections()
            } else {
                Default::default()
            },
        }
    }

    fn route(self: &Arc<Self>, req: &EndpointRequest) -> EndpointResponse {
        const GET: &[&str] = &["GET", "HEAD"];
        const POST: &[&str] = &["POST"];
        // `go tool pprof` sends the token as the password of a URL's Basic credentials.
        let converted =
            (req.path == "/debug/pprof/heap").then(|| crate::profile::basic_as_bearer(req));
        let req = converted.as_deref().unwrap_or(req);
        // The probes, and the page (static, no data: its own requests carry the token).
        if !matches!(
            req.path.as_str(),
            "/healthz" | "/readyz" | "/debug/leakguard/ui"
        ) && let Some(refused) = self.authorize(req, false)
        {
            return refused;
        }
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
            "/debug/leakguard/restart" => (POST, |inner, req| {
                if let Some(refused) = inner.authorize(req, true) {
                    return refused;
                }
                match Arc::clone(inner).begin_restart("requested by an operator".into()) {
                    Ok(()) => EndpointResponse::new(
                        202,
                        endpoint::JSON,
                        serde_json::json!({
                            "status": "restarting",
                            "drain_delay_seconds": inner.policy.drain_delay.as_secs_f64(),
                            "action": inner.config.restart_action.to_string(),
                        })
                        .to_string(),
                    ),
                    Err(why) => EndpointResponse::error(409, &format!("restart refused: {why}")),
                }
            }),
            "/debug/leakguard/purge" => (POST, |inner, req| {
                if let Some(refused) = inner.authorize(req, true) {
                    return refused;
                }
                inner.purge()
            }),
            "/debug/leakguard/ui" => (GET, |_, _| crate::ui::page()),
            "/debug/leakguard/history" => (GET, |inner, req| inner.history(req)),
            "/debug/pprof/heap" => (GET, |inner, req| {
                // Heap profiles show what the service holds: token required, like mutations.
                if let Some(refused) = inner.authorize(req, true) {
                    return crate::profile::pprof_error(refused);
                }
                inner.serve_heap_profile(req)
            }),
            "/debug/leakguard/dump" => (POST, |inner, req| {
                if let Some(refused) = inner.authorize(req, true) {
                    return refused;
                }
                inner.dump_endpoint()
            }),
            "/debug/leakguard" | "/debug/leakguard/" => (GET, |inner, _| {
                let report = Report::from_snapshot(inner.snapshot(true));
                EndpointResponse::new(200, endpoint::JSON, report.to_json())
            }),
            path => {
                if let Some(route) = self.extensions.route(path) {
                    return self.answer_extra(route, req);
                }
                return EndpointResponse::error(
                    404,
                    "not found: the endpoints are /healthz, /readyz, /metrics, /debug/leakguard, /debug/leakguard/ui, /debug/leakguard/history, /debug/pprof/heap, POST /debug/leakguard/purge, POST /debug/leakguard/restart, POST /debug/leakguard/dump",
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

impl Inner {
    /// Why a restart is wanted now, if it is: the restart threshold held (the tracker already
    /// asks for consecutive samples), or a leak that reaches the limit within the drain time.
    fn restart_reason(&self, st: &State, sample: &MemorySample) -> Option<String> {
        let limit = st.limit.as_ref()?;
        let rss = sample.process.resident_bytes;
        if st.tracker.state() == MemoryState::Restart {
            return Some(format!(
                "resident {} is {:.1}% of the {} limit (restart threshold {:.0}%)",
                format_bytes(rss),
                rss as f64 * 100.0 / limit.bytes.max(1) as f64,
                format_bytes(limit.bytes),
                self.config.restart * 100.0
            ));
        }
        let v = st.trend.verdict();
        let drain = self.policy.drain_delay + self.policy.drain_timeout + self.config.interval;
        let eta = v
            .slope_bytes_per_second
            .filter(|s| v.leak && *s > 0.0)
            .map(|s| limit.bytes.saturating_sub(rss) as f64 / s)?;
        (eta <= drain.as_secs_f64()).then(|| {
            format!(
                "predicted OOM in {eta:.0} s, within the drain time ({:.0} s)",
                drain.as_secs_f64()
            )
        })
    }

    /// Starts the wanted restart unless the uptime or the rate limit holds it back (said once
    /// per cause, not every sample).
    fn want_restart(self: &Arc<Self>, reason: String, events: &mut Vec<Event>) {
        if self.restarting.load(Ordering::SeqCst) {
            return;
        }
        let uptime = self.clock.monotonic().saturating_sub(self.started_mono);
        let held = if uptime < self.config.min_uptime {
            Some((
                "uptime",
                format!(
                    "restart wanted ({reason}) but held back: uptime {:.0} s is under the minimum {:.0} s (LEAKGUARD_MIN_UPTIME)",
                    uptime.as_secs_f64(),
                    self.config.min_uptime.as_secs_f64()
                ),
            ))
        } else {
            match Arc::clone(self).begin_restart(reason.clone()) {
                Ok(()) => None,
                Err(why) => Some((
                    "refused",
                    format!("restart wanted ({reason}) but held back: {why}"),
                )),
            }
        };
        let mut deferred = self.restart_deferred.lock();
        match held {
            Some((cause, message)) => {
                if deferred.as_deref() != Some(cause) {
                    events.push(self.event(Level::Warn, EventKind::Restart, message));
                    *deferred = Some(cause.to_owned());
                }
            }
            None => *deferred = None,
        }
    }

    /// Begins a graceful restart on a thread of its own, unless one is under way or the
    /// per-hour limit is reached.
    fn begin_restart(self: Arc<Self>, reason: String) -> std::result::Result<(), String> {
        if self.restarting.swap(true, Ordering::SeqCst) {
            return Err("a restart is already under way".into());
        }
        let now = self.clock.unix_seconds();
        let recent = crate::restart::within_the_hour(&crate::handover::record().times, now);
        if recent >= self.policy.max_per_hour as usize {
            self.restarting.store(false, Ordering::SeqCst);
            return Err(format!(
                "{recent} restart(s) in the last hour, the limit is {}",
                self.policy.max_per_hour
            ));
        }
        // Readiness goes off the moment the restart is accepted.
        self.ready.store(false, Ordering::SeqCst);
        let me = Arc::clone(&self);
        let spawned = std::thread::Builder::new()
            .name("leakguard-restart".into())
            .spawn(move || me.run_restart(reason));
        if let Err(e) = spawned {
            self.ready.store(true, Ordering::SeqCst);
            self.restarting.store(false, Ordering::SeqCst);
            return Err(format!("cannot start the restart thread: {e}"));
        }
        Ok(())
    }

    fn run_restart(&self, reason: String) {
        use std::io::Write as _;
        self.ready.store(false, Ordering::SeqCst);
        self.emit(vec![self.event(
            Level::Warn,
            EventKind::Restart,
            format!(
                "graceful restart begins ({reason}): readiness off, drain delay {:?}, then {} drain hook(s) within {:?}, then {}",
                self.policy.drain_delay,
                self.hooks.len(),
                self.policy.drain_timeout,
                self.config.restart_action
            ),
        )]);
        std::thread::sleep(self.policy.drain_delay);
        let deadline = Instant::now() + self.policy.drain_timeout;
        let mut events = Vec::new();
        for (i, outcome) in run_hooks(&self.hooks, deadline).into_iter().enumerate() {
            match outcome {
                HookOutcome::Done => {}
                HookOutcome::Panicked(m) => events.push(self.event(
                    Level::Error,
                    EventKind::Restart,
                    format!("drain hook #{} panicked: {m}; the restart goes on", i + 1),
                )),
                HookOutcome::Overran => events.push(self.event(
                    Level::Error,
                    EventKind::Restart,
                    format!(
                        "drain hook #{} overran the drain deadline; the restart goes on",
                        i + 1
                    ),
                )),
            }
        }
        self.emit(events);
        // The post-mortem: profile and report, before the process image goes.
        if self.dump_dir.is_some() {
            // The outcome is said as an event; a failed dump does not stop the restart.
            let _ = self.dump_and_say(&format!("before a graceful restart ({reason})"));
        }
        let record = crate::handover::note_restart(self.clock.unix_seconds(), &reason);
        self.restarts.store(record.restarts_total, Ordering::SeqCst);
        let flush = || {
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
        };
        match &self.config.restart_action {
            RestartAction::Reexec => {
                self.emit(vec![self.event(
                    Level::Warn,
                    EventKind::Restart,
                    format!(
                        "re-executing in place (restart #{}, pid {}), handing over: {}",
                        record.restarts_total,
                        std::process::id(),
                        crate::handover::handover_names().join(", ")
                    ),
                )]);
                flush();
                let err = crate::handover::reexec(&record);
                let e = self.event(
                    Level::Error,
                    EventKind::Restart,
                    format!("re-exec failed ({err}); exiting with code 1 instead"),
                );
                crate::event::trace(&e);
                eprintln!("leakguard: {}", e.message);
                flush();
                std::process::exit(1);
            }
            RestartAction::Exit(code) => {
                self.emit(vec![self.event(
                    Level::Warn,
                    EventKind::Restart,
                    format!("exiting with code {code} for the supervisor to restart the service"),
                )]);
                flush();
                std::process::exit(*code);
            }
            RestartAction::Signal(name) => {
                self.emit(vec![self.event(
                    Level::Warn,
                    EventKind::Restart,
                    format!("sending {name} to the process"),
                )]);
                if let Err(e) = crate::restart::signal_self(name) {
                    self.emit(vec![self.event(
                        Level::Error,
                        EventKind::Restart,
                        format!("sending {name} failed: {e}"),
                    )]);
                }
            }
            RestartAction::None => {
                crate::handover::forget_restart();
                self.restarts
                    .store(record.restarts_total.saturating_sub(1), Ordering::SeqCst);
                self.ready.store(true, Ordering::SeqCst);
                self.restarting.store(false, Ordering::SeqCst);
                self.emit(vec![self.event(
                    Level::Warn,
                    EventKind::Restart,
                    "restart action is none: nothing restarted, readiness back on".into(),
                )]);
            }
            RestartAction::Callback => {
                if let Some(cb) = &self.restart_callback
                    && let Err(p) = catch_unwind(AssertUnwindSafe(|| cb(&reason)))
                {
                    self.caught_panic("the restart callback panicked", &*p);
                }
            }
        }
    }

    /// `None` when the request may go on; else the refusal. Mutating endpoints need the
    /// token; with `LEAKGUARD_AUTH=all` every endpoint but the probes does.
    fn authorize(&self, req: &EndpointRequest, mutating: bool) -> Option<EndpointResponse> {
        if !mutating && !self.config.auth_all {
            return None;
        }
        let Some(token) = &self.config.token else {
            return Some(EndpointResponse::error(
                403,
                "this endpoint is off: set LEAKGUARD_TOKEN and send it as `Authorization: Bearer <token>`",
            ));
        };
        let given = req
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return None;
        }
        let mut r =
            EndpointResponse::error(401, "a valid `Authorization: Bearer <token>` is required");
        r.headers
            .push(("WWW-Authenticate", "Bearer realm=\"leakguard\"".to_owned()));
        Some(r)
    }

    /// `GET /debug/leakguard/history`: the bounded history and the detector's trend line.
    fn history(&self, req: &EndpointRequest) -> EndpointResponse {
        let tiers = match crate::ui::Tiers::parse(&req.query) {
            Ok(t) => t,
            Err(e) => return EndpointResponse::error(400, &e),
        };
        let (fine, coarse, window) = {
            let st = self.state.lock();
            (
                st.history.fine.points(),
                st.history.coarse.points(),
                st.trend.config().window,
            )
        };
        crate::ui::history(&self.snapshot(false), tiers, fine, coarse, window)
    }

    /// Answers `GET /debug/pprof/heap[?base=baseline]`.
    fn serve_heap_profile(&self, req: &EndpointRequest) -> EndpointResponse {
        let (warmup, uptime) = {
            let st = self.state.lock();
            (
                st.trend.config().warmup.as_secs_f64(),
                self.clock
                    .monotonic()
                    .saturating_sub(self.started_mono)
                    .as_secs_f64(),
            )
        };
        self.profiles
            .serve(req, self.clock.unix_seconds(), Some(warmup - uptime))
    }

    /// Writes a post-mortem dump (heap profile and report) to the dump directory.
    fn dump(&self, reason: &str) -> Result<crate::profile::DumpOutcome> {
        let Some(dir) = &self.dump_dir else {
            return Err(Error::config(
                "LEAKGUARD_DUMP_DIR",
                "",
                "no dump directory is set: set LEAKGUARD_DUMP_DIR (or GuardBuilder::dump_dir)",
            ));
        };
        let now = self.clock.unix_seconds();
        let report = Report::from_snapshot(self.snapshot(true)).to_json();
        #[cfg(feature = "profiling")]
        let profile = crate::profile::heap_profile(now)
            .map(|p| p.to_pprof())
            .map_err(|e| e.to_string());
        #[cfg(not(feature = "profiling"))]
        let profile = crate::profile::heap_profile(now)
            .map(|_| Vec::new())
            .map_err(|e| e.to_string());
        crate::profile::write_dump(dir, reason, &report, profile, now)
    }

    /// Dumps and reports the outcome as an event.
    fn dump_and_say(&self, reason: &str) -> Result<crate::profile::DumpOutcome> {
        let outcome = self.dump(reason);
        let event = match &outcome {
            Ok(o) => self.event(
                Level::Info,
                EventKind::Profile,
                format!(
                    "post-mortem dump written ({reason}): {}{}",
                    o.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    o.profile_error
                        .as_deref()
                        .map(|e| format!("; no heap profile: {e}"))
                        .unwrap_or_default()
                ),
            ),
            Err(e) => self.event(
                Level::Error,
                EventKind::Profile,
                format!("post-mortem dump failed ({reason}): {e}"),
            ),
        };
        self.emit(vec![event]);
        outcome
    }

    fn dump_endpoint(&self) -> EndpointResponse {
        if self.dump_dir.is_none() {
            return EndpointResponse::error(
                409,
                "no dump directory: set LEAKGUARD_DUMP_DIR to a writable directory (or GuardBuilder::dump_dir) and restart the service",
            );
        }
        match self.dump_and_say("requested by an operator") {
            Ok(o) => EndpointResponse::new(
                200,
                endpoint::JSON,
                serde_json::to_string(&o).unwrap_or_else(|_| "{}".into()),
            ),
            Err(e) => EndpointResponse::error(500, &e.to_string()),
        }
    }

    /// Purges the allocator and says how much resident memory was given back.
    fn purge(&self) -> EndpointResponse {
        let rss = || {
            crate::process::ProcReader::new()
                .read(false)
                .map(|p| p.resident_bytes)
                .ok()
        };
        let hooks = self.extensions.purge();
        let before = rss();
        let result = self.sampler.lock().purge_allocator();
        let after = rss();
        match result {
            Ok(()) => {
                let released = match (before, after) {
                    (Some(b), Some(a)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                let message = format!(
                    "allocator purged: {} of resident memory given back",
                    format_bytes(released.unwrap_or(0))
                );
                self.emit(vec![self.event(Level::Info, EventKind::Allocator, message)]);
                EndpointResponse::new(
                    200,
                    endpoint::JSON,
                    serde_json::json!({
                        "purged": true,
                        "resident_before_bytes": before,
                        "resident_after_bytes": after,
                        "released_bytes": released,
                        "hooks": hooks,
                    })
                    .to_string(),
                )
            }
            Err(e) => EndpointResponse::error(501, &e.to_string()),
        }
    }
}

impl Inner {
    /// Answers a request to an extra route: method, then authorization, then the handler.
    fn answer_extra(
        &self,
        route: &crate::extend::Route,
        req: &EndpointRequest,
    ) -> EndpointResponse {
        if !route.methods.contains(&req.method.as_str()) {
            let allowed = route.methods.join(", ");
            let mut r = EndpointResponse::error(
                405,
                &format!("method {} not allowed; use {allowed}", req.method),
            );
            r.headers.push(("Allow", allowed));
            return r;
        }
        let mutating = !matches!(req.method.as_str(), "GET" | "HEAD");
        if let Some(refused) = self.authorize(req, mutating) {
            return refused;
        }
        crate::extend::Extensions::answer(route, req)
    }
}

/// Compares secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct GuardRoutes(Arc<Inner>);

impl Routes for GuardRoutes {
    fn handle(&self, request: &EndpointRequest) -> EndpointResponse {
        self.0.route(request)
    }
}
