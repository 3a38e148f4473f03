//! The guard's [`Snapshot`]: its state copied under the locks at one moment, for the report and
//! `/metrics` to render without them.

use super::Inner;
use crate::attribution::{Attribution, Baseline, attribute};
use crate::event::Level;
use crate::sample::MemorySample;
use crate::snapshot::Snapshot;

/// What a snapshot is taken for: each view copies only what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// The core figures only (state, sample, limit, verdict, counters).
    Core,
    /// For `/metrics` and the `metrics` facade: the core plus the handles' and caches' metric
    /// families.
    Metrics,
    /// For the report: the core plus recent events, attribution, handles, caches, report
    /// sections and heap growth.
    Report,
}
use std::sync::atomic::Ordering;

/// The quantities attribution compares: RSS, live heap, caches' weights, open handles.
pub(super) fn current_quantities(sample: &MemorySample, at: f64) -> Baseline {
    Baseline {
        at,
        resident_bytes: sample.process.resident_bytes,
        heap_bytes: sample.allocator.as_ref().map(|a| a.allocated),
        caches: crate::cache::weight_by_cache(),
        handles: crate::handles::open_by_kind(),
    }
}

impl Inner {
    pub(super) fn snapshot(&self, view: View) -> Snapshot {
        let with_events = view == View::Report;
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
            families: if view == View::Metrics {
                let mut families = crate::handles::families();
                families.extend(crate::cache::families());
                families
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
}
