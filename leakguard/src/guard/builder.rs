//! [`GuardBuilder`]: every setting, and `start`, which applies the environment, validates and
//! starts the guard's threads.

use super::metrics::families;
use super::observe::{Rules, State};
use super::routes::GuardRoutes;
use super::snapshot::View;
use super::{EventCallback, Guard, Inner, allocator_name};
use crate::allocator::{Allocator, AllocatorChoice};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LimitSetting, RestartAction, parse_addr};
use crate::endpoint::{EndpointRequest, EndpointResponse, Routes};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, EventLog, Level};
use crate::restart::{DrainHook, RestartCallback, RestartPolicy};
use crate::sample::Sampler;
use crate::threshold::{ThresholdTracker, Thresholds};
use crate::trend::{TrendConfig, TrendDetector};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

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
    before_exit: Option<Arc<dyn Fn() + Send + Sync>>,
    pressure_fraction: f64,
    extensions: crate::extensions::Extensions,
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
    pub(super) fn new() -> Self {
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
            before_exit: None,
            pressure_fraction: 0.5,
            extensions: crate::extensions::Extensions::default(),
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

    /// Runs `f` just before the `exit[:code]` restart action ends the process (after the drain
    /// and the dump), e.g. an embedding language's exit handlers (the Python layer runs
    /// `atexit`'s). A panic inside it is caught; the exit goes on.
    pub fn before_exit(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.before_exit = Some(Arc::new(f));
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
    /// Where post-mortem dumps (heap profile and report) are written before a restart and on
    /// `POST /debug/leakguard/dump` (`LEAKGUARD_DUMP_DIR`; default none: no dumps). See
    /// [`profile::write_dump`](crate::profile::write_dump).
    pub fn dump_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.dump_dir = Some(dir.into());
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
    /// [`MAX_EXTENSIONS`](crate::extensions::MAX_EXTENSIONS) routes. See [`crate::extensions`].
    pub fn route(
        mut self,
        path: &str,
        methods: &[&'static str],
        handler: impl Fn(&EndpointRequest) -> EndpointResponse + Send + Sync + 'static,
    ) -> Self {
        self.extensions.routes.push(crate::extensions::Route {
            path: path.to_owned(),
            methods: methods.to_vec(),
            handler: Arc::new(handler),
        });
        self
    }

    /// Adds a top-level section `name` to the report (`GET /debug/leakguard`,
    /// [`Guard::report`]), made by `f` each time a report is made. `start` refuses a name the
    /// report has already. See [`crate::extensions`].
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
    /// purge's answer under `hooks.<name>`. See [`crate::extensions`].
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
        if self.policy.max_per_hour as usize > crate::handover::MAX_TIMES {
            return Err(Error::config(
                "max restarts per hour",
                &self.policy.max_per_hour.to_string(),
                format!(
                    "must be at most {} (the restart record keeps that many times)",
                    crate::handover::MAX_TIMES
                ),
            ));
        }
        self.extensions.validate()?;
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
        let started_mono = clock.monotonic();
        let started_unix = clock.unix_seconds();
        let rules = Rules {
            limit: config.limit.clone(),
            limit_origin: config.limit_origin,
            restart: config.restart,
            drain: self.policy.drain_delay + self.policy.drain_timeout + config.interval,
            interval: config.interval,
            warn: config.warn,
            consecutive: config.consecutive_samples,
            started_mono,
            started_unix,
        };
        let trend = TrendDetector::new(self.trend);
        let inner = Arc::new(Inner {
            started_mono,
            started_unix,
            clock,
            sampler: Mutex::new(sampler),
            allocator,
            state: Mutex::new(State::new(ThresholdTracker::new(thresholds), trend, rules)),
            events: Mutex::new(EventLog::default()),
            ready: AtomicBool::new(true),
            samples: AtomicU64::new(0),
            sample_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(record.restarts_total),
            hooks: self.hooks,
            policy: self.policy,
            restart_callback: self.restart_callback,
            before_exit: self.before_exit,
            restarting: AtomicBool::new(false),
            restart_thread: Mutex::new(None),
            restart_deferred: Mutex::new(None),
            cadence: Mutex::new(config.interval),
            recorded_caches: Mutex::new(Default::default()),
            handle_limits: Mutex::new(crate::handles::HandleLimitMonitor::new()),
            pressure_fraction: self.pressure_fraction,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            callbacks: self.callbacks,
            record_metrics: self.record_metrics,
            endpoint: Mutex::new(None),
            extensions: self.extensions,
            profiles: crate::profile::Profiles::default(),
            config,
        });
        // Its locks are taken around a fork, so a child can use the guard (a report, a tick).
        let weak: std::sync::Weak<dyn crate::fork::ForkObject> = Arc::downgrade(&inner) as _;
        crate::fork::register(crate::fork::Tier::Guard, weak);

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
            crate::exposition::describe(&families(&inner.snapshot(View::Metrics)));
        }

        #[cfg(feature = "http")]
        let server = match inner.config.addr {
            Some(addr) => {
                let routes: Arc<dyn Routes> = Arc::new(GuardRoutes(Arc::clone(&inner)));
                let started = crate::handover::listener("leakguard", addr).and_then(|l| {
                    // Readiness is off only while a restart is under way: its drain.
                    let weak = Arc::downgrade(&inner);
                    let draining = move || {
                        weak.upgrade()
                            .is_some_and(|i| !i.ready.load(std::sync::atomic::Ordering::SeqCst))
                    };
                    crate::http::Server::start_closing_when(
                        l,
                        routes,
                        crate::http::ServerOptions::default(),
                        Arc::new(draining),
                    )
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
