//! Graceful restart: readiness off, a drain delay for load balancers to notice, the service's
//! drain hooks under a deadline, then the action (re-exec in place, exit, a signal, nothing, or
//! a callback).

pub use crate::handover::{RestartRecord, handover_names};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A drain hook: called with the deadline by which it must have finished (stop accepting,
/// finish in-flight work).
pub type DrainHook = Arc<dyn Fn(Instant) + Send + Sync>;

/// A restart action in code: called with the reason instead of the built-in actions.
pub type RestartCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// Timing and limits of restarts.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// Time between readiness going off and the drain hooks, for load balancers to stop
    /// sending new requests (default 5 s).
    pub drain_delay: Duration,
    /// Time the drain hooks have in all (default 30 s).
    pub drain_timeout: Duration,
    /// At most this many restarts in any hour (default 3); the count survives re-exec.
    pub max_per_hour: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            max_per_hour: 3,
        }
    }
}

/// How one drain hook went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Finished in time.
    Done,
    /// Panicked, with the message.
    Panicked(String),
    /// Still running at the deadline; the sequence went on without it.
    Overran,
}

/// Runs `hooks` in order, each on its own thread and under the time that remains until
/// `deadline`. A hook that panics or overruns does not stop the sequence.
pub fn run_hooks(hooks: &[DrainHook], deadline: Instant) -> Vec<HookOutcome> {
    hooks
        .iter()
        .map(|hook| {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return HookOutcome::Overran;
            }
            let (tx, rx) = mpsc::channel();
            let hook = Arc::clone(hook);
            let spawned = std::thread::Builder::new()
                .name("leakguard-drain".into())
                .spawn(move || {
                    let outcome = match catch_unwind(AssertUnwindSafe(|| hook(deadline))) {
                        Ok(()) => HookOutcome::Done,
                        Err(p) => HookOutcome::Panicked(crate::panics::panic_message(&*p)),
                    };
                    let _ = tx.send(outcome);
                });
            match spawned {
                Ok(_) => rx.recv_timeout(remaining).unwrap_or(HookOutcome::Overran),
                Err(e) => HookOutcome::Panicked(format!("could not start a thread for it: {e}")),
            }
        })
        .collect()
}

/// Sends `name` (`SIGTERM`, …) to this process.
pub(crate) fn signal_self(name: &str) -> std::io::Result<()> {
    let sig = match name {
        "SIGTERM" => libc::SIGTERM,
        "SIGINT" => libc::SIGINT,
        "SIGHUP" => libc::SIGHUP,
        "SIGQUIT" => libc::SIGQUIT,
        "SIGUSR1" => libc::SIGUSR1,
        "SIGUSR2" => libc::SIGUSR2,
        "SIGKILL" => libc::SIGKILL,
        _ => return Err(std::io::Error::other(format!("unknown signal {name}"))),
    };
    // SAFETY: kill(2) on our own PID with a valid signal number.
    if unsafe { libc::kill(libc::getpid(), sig) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How many of the restart times `times` (Unix seconds, wall clock: they survive re-exec) fall
/// within an hour of `now`. A time after `now` means the wall clock was set back since; it
/// counts while it is within the hour either side, so a clock set back a day does not hold
/// restarts back for a day, and a clock set forward only ends the hour early.
pub(crate) fn within_the_hour(times: &[f64], now: f64) -> usize {
    times.iter().filter(|t| (now - **t).abs() < 3600.0).count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn hooks_run_in_order_and_a_panic_or_overrun_does_not_stop_the_rest() {
        let order = Arc::new(AtomicU32::new(0));
        let (a, b, c) = (Arc::clone(&order), Arc::clone(&order), Arc::clone(&order));
        let hooks: Vec<DrainHook> = vec![
            Arc::new(move |_| {
                a.fetch_add(1, Ordering::SeqCst);
            }),
            Arc::new(|_| panic!("drain failed")),
            Arc::new(|_| std::thread::sleep(Duration::from_secs(30))),
            Arc::new(move |_| {
                b.fetch_add(10, Ordering::SeqCst);
            }),
        ];
        // The overrunning hook eats the remaining time, so the last one has none left. The
        // deadline leaves the panicking hook room to print its message (and a backtrace, with
        // RUST_BACKTRACE set) on a loaded machine before it counts as an overrun.
        let started = Instant::now();
        let outcomes = run_hooks(&hooks, Instant::now() + Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(outcomes[0], HookOutcome::Done);
        assert_eq!(outcomes[1], HookOutcome::Panicked("drain failed".into()));
        assert_eq!(outcomes[2], HookOutcome::Overran);
        assert_eq!(outcomes[3], HookOutcome::Overran);
        assert_eq!(c.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn each_hook_is_given_the_deadline() {
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let s = Arc::clone(&seen);
        let deadline = Instant::now() + Duration::from_secs(2);
        let hooks: Vec<DrainHook> = vec![Arc::new(move |d| *s.lock() = Some(d))];
        assert_eq!(run_hooks(&hooks, deadline), vec![HookOutcome::Done]);
        assert_eq!(*seen.lock(), Some(deadline));
    }

    #[test]
    fn the_hourly_count_survives_wall_clock_jumps() {
        let t = 1_700_000_000.0;
        let times = [t - 4000.0, t - 1800.0, t - 5.0];
        assert_eq!(within_the_hour(&times, t), 2);
        // Set back by a day: the restarts are "in the future"; none holds a restart back.
        assert_eq!(within_the_hour(&times, t - 86_400.0), 0);
        // Set back by ten minutes: all three are within the hour either side.
        assert_eq!(within_the_hour(&times, t - 600.0), 3);
        // Forward by a day: the hour is over.
        assert_eq!(within_the_hour(&times, t + 86_400.0), 0);
        assert_eq!(within_the_hour(&[], t), 0);
        assert_eq!(within_the_hour(&[f64::NAN], t), 0);
    }
}
