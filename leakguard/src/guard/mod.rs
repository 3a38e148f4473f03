//! The guard: what a service starts ([`Guard`], built by [`GuardBuilder`]) and its parts.
//!
//! - [`builder`]: every setting, and the start (environment, validation, threads);
//! - [`observe`]: the pure decision for one sample (states, pressure, baseline,
//!   leak flips, restart reason), where a verdict is made;
//! - [`tick`]: the sampler thread's loop, which takes a sample and applies the outcome;
//! - [`restart`]: the graceful restart sequence, and the post-mortem dump;
//! - [`routes`]: the endpoint's route table and its authorisation, where a route is answered;
//! - [`snapshot`] and [`metrics`]: the consistent copy the report and `/metrics`
//!   are made from, and its metric families.

mod builder;
mod metrics;
mod observe;
mod restart;
mod routes;
mod snapshot;
mod tick;

pub use self::builder::GuardBuilder;

use self::observe::State;
use self::routes::GuardRoutes;
use self::snapshot::View;
use crate::clock::Clock;
use crate::config::Config;
use crate::endpoint::{EndpointRequest, EndpointResponse, Routes};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, EventLog, Level};
use crate::history::HistoryPoint;
use crate::panics::panic_message;
use crate::report::Report;
use crate::restart::{DrainHook, RestartCallback, RestartPolicy};
use crate::sample::{MemorySample, Sampler};
use crate::threshold::MemoryState;
use parking_lot::{Condvar, Mutex};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

type EventCallback = Box<dyn Fn(&Event) + Send + Sync>;

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
        Report::from_snapshot(self.inner.snapshot(View::Report))
    }

    /// The report as JSON (what `GET /debug/leakguard` serves).
    pub fn report_json(&self) -> String {
        self.report().to_json()
    }

    /// The Prometheus text exposition (what `GET /metrics` serves).
    pub fn render_metrics(&self) -> String {
        crate::exposition::render(&metrics::families(&self.inner.snapshot(View::Metrics)))
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
    /// ([`Error::RestartRefused`]) while one is under way or when the per-hour limit is
    /// reached.
    pub fn request_restart(&self, reason: &str) -> Result<()> {
        Arc::clone(&self.inner)
            .begin_restart(reason.to_owned())
            .map_err(Error::RestartRefused)
    }

    /// Starts a graceful restart now; the refusal as a string.
    #[deprecated(note = "use `Guard::request_restart`, which returns the crate's `Error`")]
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
        // A guard dropped while a restart is under way (a `main` that returns once the drain
        // hook stopped its server) waits for the restart to finish, which exits or re-execs,
        // rather than letting the process end with code 0.
        let restart = self.inner.restart_thread.lock().take();
        if let Some(restart) = restart
            && self.inner.restarting.load(Ordering::SeqCst)
            && restart.thread().id() != std::thread::current().id()
        {
            // After a signal or callback action, the restart thread only waits to see whether
            // the process lives on: stopping ends that wait (the process is ending).
            *self.inner.stop.lock() = true;
            self.inner.wake.notify_all();
            if matches!(
                self.inner.config.restart_action,
                crate::config::RestartAction::Reexec | crate::config::RestartAction::Exit(_)
            ) {
                let e = self.inner.event(
                    Level::Warn,
                    EventKind::Restart,
                    "the guard is being dropped while a restart is under way: waiting for the restart to finish".into(),
                );
                crate::event::trace(&e);
                eprintln!("leakguard: {}", e.message);
                self.inner.emit(vec![e]);
            }
            let _ = restart.join();
        }
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
    /// Run before the `exit` action ends the process.
    before_exit: Option<Arc<dyn Fn() + Send + Sync>>,
    /// One restart at a time.
    restarting: AtomicBool,
    /// The thread carrying out the restart under way, for a guard dropped meanwhile to wait.
    restart_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The caches whose series were recorded at the last sample (bounded by the registry).
    recorded_caches: Mutex<std::collections::BTreeSet<String>>,
    /// The sampler thread's next interval, as the last sample decided.
    cadence: Mutex<std::time::Duration>,
    /// Why a wanted restart is being held back (reported once per reason).
    restart_deferred: Mutex<Option<String>>,
    /// Per-kind handle limits and the fd limit, each crossing reported once.
    handle_limits: Mutex<crate::handles::HandleLimitMonitor>,
    /// Registered caches shrink to this fraction when the critical threshold is reached.
    pressure_fraction: f64,
    /// Extra routes, report sections and purge hooks.
    extensions: crate::extensions::Extensions,
    /// The baseline heap profile and the growth since (feature `profiling`).
    profiles: crate::profile::Profiles,
}

impl crate::fork::ForkObject for Inner {
    /// Every lock of the guard's, the sampler's first (held while sampling, the outer one);
    /// none of the others is taken while another is held.
    fn fork_locks<'a>(&'a self, out: &mut Vec<&'a dyn crate::fork::ForkLock>) {
        out.extend([
            &self.sampler as &dyn crate::fork::ForkLock,
            &self.handle_limits,
            &self.state,
            &self.cadence,
            &self.restart_deferred,
            &self.recorded_caches,
            &self.events,
            &self.endpoint,
            &self.restart_thread,
            &self.stop,
        ]);
    }
}

fn allocator_name(kind: crate::allocator::AllocatorKind) -> &'static str {
    match kind {
        crate::allocator::AllocatorKind::Jemalloc => "jemalloc",
        crate::allocator::AllocatorKind::Glibc => "glibc malloc",
        crate::allocator::AllocatorKind::None => "none",
    }
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
}
