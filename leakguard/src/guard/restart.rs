//! Where a restart is decided and carried out: a wanted restart is held back by the minimum
//! uptime and the per-hour limit, else run on a thread of its own (readiness off, drain delay,
//! drain hooks, post-mortem dump, then the restart action).

use super::Inner;
use super::snapshot::View;
use crate::config::RestartAction;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind, Level};
use crate::report::Report;
use crate::restart::{HookOutcome, run_hooks};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long after sending a `signal:NAME` action the guard waits for the process to end
/// (at most the drain timeout) before it concludes that the process lives on.
const SIGNAL_SETTLE: Duration = Duration::from_secs(10);

// What the heap profile of a pre-restart dump may need, derived from its bounds (see
// `crate::profile::DUMP_NEEDS`): with less headroom to the limit, the pre-restart dump writes
// the report only.
use crate::profile::DUMP_NEEDS;

impl Inner {
    /// Starts the wanted restart unless the uptime or the rate limit holds it back (said once
    /// per cause, not every sample). Usage `at_limit` overrides the minimum uptime: waiting
    /// would let the kernel's OOM killer strike first (the hourly cap still prevents loops).
    pub(super) fn want_restart(
        self: &Arc<Self>,
        reason: String,
        at_limit: bool,
        events: &mut Vec<Event>,
    ) {
        if self.restarting.load(Ordering::SeqCst) {
            return;
        }
        let uptime = self.clock.monotonic().saturating_sub(self.started_mono);
        let held = if uptime < self.config.min_uptime && !at_limit {
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
    pub(super) fn begin_restart(
        self: Arc<Self>,
        reason: String,
    ) -> std::result::Result<(), String> {
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
        match spawned {
            Ok(thread) => {
                *self.restart_thread.lock() = Some(thread);
                Ok(())
            }
            Err(e) => {
                self.ready.store(true, Ordering::SeqCst);
                self.restarting.store(false, Ordering::SeqCst);
                Err(format!("cannot start the restart thread: {e}"))
            }
        }
    }

    /// After a `signal:NAME` or callback action the process is still here: says so, gives
    /// the listeners back to the service, turns readiness back on and allows the next restart
    /// (this one counts toward the hourly limit).
    fn lives_on(&self, action: &str) {
        crate::handover::release_held();
        self.ready.store(true, Ordering::SeqCst);
        self.restarting.store(false, Ordering::SeqCst);
        let recent = crate::restart::within_the_hour(
            &crate::handover::record().times,
            self.clock.unix_seconds(),
        );
        self.emit(vec![self.event(
            Level::Warn,
            EventKind::Restart,
            format!(
                "the process lives on after the restart action ({action}): readiness back on; a later restart may come ({recent} of {} this hour)",
                self.policy.max_per_hour
            ),
        )]);
    }

    /// Waits the drain timeout (at most [`SIGNAL_SETTLE`]) for the process to end after a
    /// signal or callback action; false when the guard is stopped meanwhile (the process is
    /// ending, or the service stopped the guard).
    fn settle(&self) -> bool {
        let deadline = Instant::now() + self.policy.drain_timeout.min(SIGNAL_SETTLE);
        let mut stop = self.stop.lock();
        while !*stop {
            if self.wake.wait_until(&mut stop, deadline).timed_out() {
                return !*stop;
            }
        }
        false
    }

    fn run_restart(&self, reason: String) {
        use std::io::Write as _;
        self.ready.store(false, Ordering::SeqCst);
        // Keep the listeners open through the drain, even if the service closes its own.
        crate::handover::hold_for_restart();
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
        // The post-mortem: profile and report, before the process image goes; the profile
        // only when the headroom to the limit allows it (it could cause the OOM kill the
        // restart is meant to prevent). The outcome is said as an event; a failed dump does
        // not stop the restart.
        if self.config.dump_dir.is_some() {
            let why = format!("before a graceful restart ({reason})");
            let skip = self.short_headroom().map(|headroom| {
                format!(
                    "skipped: the headroom to the limit ({}) is under the {} a heap profile may need",
                    crate::units::format_bytes(headroom),
                    crate::units::format_bytes(DUMP_NEEDS)
                )
            });
            let _ = self.dump_and_say_with(&why, skip, true);
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
                if let Some(f) = &self.before_exit
                    && let Err(p) = catch_unwind(AssertUnwindSafe(|| f()))
                {
                    self.caught_panic("the before-exit hook panicked", &*p);
                }
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
                // A service that ends on the signal ends within the drain timeout; one that
                // reloads (SIGHUP) or ignores it lives on.
                if self.settle() {
                    self.lives_on(&format!("signal {name}"));
                }
            }
            RestartAction::None => {
                crate::handover::release_held();
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
                // The callback may end the process asynchronously (a gunicorn worker's graceful
                // exit): give it the same time as a signal.
                if self.settle() {
                    self.lives_on("callback returned");
                }
            }
        }
    }

    /// The headroom to the limit when it is under [`DUMP_NEEDS`] (no limit known: `None`).
    fn short_headroom(&self) -> Option<u64> {
        let st = self.state.lock();
        let limit = st.limit.as_ref()?.bytes;
        let used = st.latest.as_ref()?.process.resident_bytes;
        let headroom = limit.saturating_sub(used);
        (headroom < DUMP_NEEDS).then_some(headroom)
    }

    /// Writes a post-mortem dump (heap profile and report) to the dump directory; with
    /// `skip_profile`, the report only, saying why. `near_limit` (before a restart): the
    /// profile is symbolized only when the binary's symbols were already read in this process,
    /// and is otherwise written unsymbolized as it is encoded, so that it needs no more than
    /// [`DUMP_NEEDS`].
    fn dump(
        &self,
        reason: &str,
        skip_profile: Option<String>,
        near_limit: bool,
    ) -> Result<crate::profile::DumpOutcome> {
        let Some(dir) = &self.config.dump_dir else {
            return Err(Error::config(
                "LEAKGUARD_DUMP_DIR",
                "",
                "no dump directory is set: set LEAKGUARD_DUMP_DIR (or GuardBuilder::dump_dir)",
            ));
        };
        let now = self.clock.unix_seconds();
        let report = Report::from_snapshot(self.snapshot(View::Report)).to_json();
        if let Some(skipped) = skip_profile {
            return crate::profile::write_dump(dir, reason, &report, Err(skipped), now);
        }
        let profile = crate::profile::heap_profile(now);
        // What the profile left out (its smaller stacks beyond the bound), said in the dump.
        let cut = profile
            .as_ref()
            .ok()
            .filter(|p| p.dropped_stacks > 0)
            .map(|p| {
                format!(
                    "{} smaller stacks left out (at most {} kept)",
                    p.dropped_stacks,
                    crate::profile::MAX_STACKS
                )
            });
        use crate::profile::ProfileBody;
        // Before a restart, the profile as `dump_body` bounds it (and why it is not
        // symbolized, if it is not); on request, symbolized.
        #[cfg(feature = "profiling")]
        let (body, unsymbolized) = match &profile {
            Ok(p) if near_limit => {
                let (body, why) = p.dump_body();
                (Ok(body), why)
            }
            Ok(p) => (Ok(ProfileBody::Encoded(p.to_pprof())), None),
            Err(e) => (Err(e.to_string()), None),
        };
        #[cfg(not(feature = "profiling"))]
        let (body, unsymbolized) = {
            let _ = near_limit;
            let body = profile
                .as_ref()
                .map(|_| ProfileBody::Encoded(Vec::new()))
                .map_err(|e| e.to_string());
            (body, None)
        };
        crate::profile::write_dump_noting(dir, reason, &report, body, cut, unsymbolized, now)
    }

    /// Dumps and reports the outcome as an event.
    pub(super) fn dump_and_say(&self, reason: &str) -> Result<crate::profile::DumpOutcome> {
        self.dump_and_say_with(reason, None, false)
    }

    /// [`Inner::dump_and_say`], leaving the heap profile out (saying why) with `skip_profile`;
    /// `near_limit` as [`Inner::dump`] takes it.
    fn dump_and_say_with(
        &self,
        reason: &str,
        skip_profile: Option<String>,
        near_limit: bool,
    ) -> Result<crate::profile::DumpOutcome> {
        let outcome = self.dump(reason, skip_profile, near_limit);
        let event = match &outcome {
            Ok(o) => self.event(
                Level::Info,
                EventKind::Profile,
                format!(
                    "post-mortem dump written ({reason}): {}{}{}",
                    o.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    o.profile_error
                        .as_deref()
                        .map(|e| format!("; no heap profile: {e}"))
                        .or_else(|| o
                            .profile_cut
                            .as_deref()
                            .map(|c| format!("; heap profile cut: {c}")))
                        .unwrap_or_default(),
                    o.profile_unsymbolized
                        .as_deref()
                        .map(|u| format!("; heap profile not symbolized: {u}"))
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::event::EventKind;
    use crate::restart::RestartPolicy;
    use std::sync::mpsc;
    use std::time::Duration;

    fn resident() -> u64 {
        crate::process::ProcReader::new()
            .read(false)
            .unwrap()
            .resident_bytes
    }

    /// Starts a guard with an hour of minimum uptime whose restart action reports its reason.
    fn guard(limit: u64, restart: f64) -> (crate::Guard, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let guard = crate::Guard::builder()
            .ignore_env()
            .no_endpoint()
            .background(false)
            .record_metrics(false)
            .limit(limit)
            .warn(restart / 3.0)
            .critical(restart / 2.0)
            .restart(restart)
            .min_uptime(Duration::from_secs(3600))
            .restart_policy(RestartPolicy {
                drain_delay: Duration::ZERO,
                ..Default::default()
            })
            .on_restart(move |reason| {
                let _ = tx.lock().unwrap().send(reason.to_owned());
            })
            .start()
            .unwrap();
        (guard, rx)
    }

    #[test]
    fn reaching_the_limit_overrides_the_minimum_uptime_and_the_threshold_does_not() {
        // Over the restart threshold but far under the limit: held back by the uptime.
        let (held, rx) = guard(resident() + (256 << 20), 0.03);
        for _ in 0..5 {
            held.tick();
        }
        let events = held.events();
        assert!(
            events
                .iter()
                .any(|e| e.kind == EventKind::Restart && e.message.contains("minimum")),
            "{events:?}"
        );
        assert!(rx.try_recv().is_err(), "held back by the minimum uptime");
        held.stop();

        // At the limit: one sample is enough, whatever the uptime.
        let (urgent, rx) = guard(resident() / 2, 0.95);
        urgent.tick();
        let reason = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(reason.contains("reached the"), "{reason}");
    }
}
