//! Where a sample is taken: the sampler thread's loop. [`Inner::tick`] samples, lets
//! [`observe`] decide, and applies the outcome: the baseline, heap profiles, cache pressure,
//! the restart, metrics and events.

use super::Inner;
use super::metrics::families;
use super::observe::observe;
use super::snapshot::View;
use super::snapshot::current_quantities;
use crate::event::{Event, EventKind, Level};
use crate::sample::MemorySample;
use crate::units::format_bytes;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The gauges of a cache that are zero once it is dropped.
const DROPPED_CACHE_GAUGES: [&str; 4] = [
    "leakguard_cache_entries",
    "leakguard_cache_weight_bytes",
    "leakguard_cache_capacity_entries",
    "leakguard_cache_capacity_bytes",
];

impl Inner {
    /// Takes one sample and applies what it decides; returns the sample.
    pub(super) fn tick(self: &Arc<Self>) -> MemorySample {
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
        // Taken here, outside the state lock, so that `observe` stays pure.
        let context = crate::trend::Context {
            bounded_cache_bytes: crate::cache::weight_by_cache().iter().map(|(_, b)| b).sum(),
            open_handles: crate::handles::open_by_kind().iter().map(|(_, n)| n).sum(),
        };
        let outcome = {
            let mut st = self.state.lock();
            let outcome = observe(&mut st, &sample, self.clock.unix_seconds(), context);
            if let Some(t) = outcome.baseline_due {
                st.baseline = Some(current_quantities(&sample, t));
            }
            outcome
        };
        events.extend(outcome.events);
        *self.cadence.lock() = outcome.next_interval;
        // Heap profiles (feature `profiling`), outside the state lock: the baseline at the end
        // of the warm-up, the growth since while a leak is suspected.
        if outcome.baseline_due.is_some()
            && let Some(m) = self.profiles.take_baseline(sample.unix_seconds)
        {
            events.push(self.event(Level::Info, EventKind::Profile, m));
        }
        if outcome.leak {
            let mono = sample.monotonic.as_secs_f64();
            if let Some(m) =
                self.profiles
                    .refresh_growth(mono, sample.unix_seconds, outcome.leak_flipped)
            {
                events.push(self.event(Level::Warn, EventKind::Profile, m));
            }
        } else if outcome.leak_flipped {
            self.profiles.clear_growth();
        }
        if outcome.pressure {
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
        if let Some(reason) = outcome.restart {
            self.want_restart(reason, outcome.at_limit, &mut events);
        } else {
            *self.restart_deferred.lock() = None;
        }
        if self.record_metrics {
            let families = families(&self.snapshot(View::Metrics));
            crate::exposition::record(&families);
            self.zero_dropped_caches(&families);
        }
        self.emit(events);
        sample
    }

    /// A recorder keeps the series of a cache that was dropped (the `metrics` facade cannot
    /// remove them): its gauges are set to zero once, as it holds nothing any more, and its
    /// series are not updated again.
    fn zero_dropped_caches(&self, families: &[crate::exposition::Family]) {
        let now: std::collections::BTreeSet<String> = families
            .iter()
            .filter(|f| f.name.starts_with("leakguard_cache_"))
            .flat_map(|f| &f.series)
            .flat_map(|(labels, _)| labels.iter())
            .filter(|(k, _)| *k == "cache")
            .map(|(_, v)| v.clone())
            .collect();
        let mut recorded = self.recorded_caches.lock();
        for gone in recorded.difference(&now) {
            for name in DROPPED_CACHE_GAUGES {
                metrics::gauge!(name, "cache" => gone.clone()).set(0.0);
            }
        }
        *recorded = now;
    }

    /// The sampler thread: a tick every interval (shorter while usage is high and rising, as
    /// the last sample decided) until stopped. A panic in a tick is caught,
    /// counted and reported, and the loop goes on.
    pub(super) fn run(self: &Arc<Self>) {
        loop {
            let next = Instant::now() + *self.cadence.lock();
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn a_dropped_caches_gauges_go_to_zero_and_stay() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let guard = crate::Guard::builder()
            .ignore_env()
            .no_endpoint()
            .background(false)
            .limit(32 << 30)
            .start()
            .unwrap();
        let entries = || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(key, _, _, _)| {
                    key.key().name() == "leakguard_cache_entries"
                        && key
                            .key()
                            .labels()
                            .any(|l| l.key() == "cache" && l.value() == "tick-dropped")
                })
                .map(|(_, _, _, v)| v)
        };
        metrics::with_local_recorder(&recorder, || {
            let cache: crate::cache::LruCache<u32, u32> = crate::cache::LruCache::builder(10)
                .name("tick-dropped")
                .build();
            for i in 0..3 {
                cache.insert(i, i);
            }
            guard.tick();
            match entries() {
                Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 3.0),
                other => panic!("entries of the live cache: {other:?}"),
            }
            drop(cache);
            // A cache report running on another test's thread may hold the cache for a moment
            // after this drop; the gauge goes to zero on the first tick after it lets go.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                guard.tick();
                match entries() {
                    Some(DebugValue::Gauge(v)) if v.into_inner() == 0.0 => break,
                    Some(DebugValue::Gauge(v)) if v.into_inner() == 3.0 => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the cache outlived its owner"
                        );
                        std::thread::yield_now();
                    }
                    other => panic!("entries of the dropped cache: {other:?}"),
                }
            }
            guard.tick();
            match entries() {
                Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0),
                other => panic!("entries of the dropped cache, a tick later: {other:?}"),
            }
        });
    }
}
