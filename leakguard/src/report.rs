//! The report that `GET /debug/leakguard` serves (and that later the CLI renders).

use crate::allocator::{AllocatorStats, AllocatorStatus};
use crate::attribution::Attribution;
use crate::cgroup::CgroupStats;
use crate::event::Event;
use crate::process::ProcessStats;
pub use crate::snapshot::Limit;
use crate::snapshot::Snapshot;
use crate::threshold::{MemoryState, Thresholds};
use crate::trend::Severity;
use serde::Serialize;

/// Top-level keys of the [`Report`], its fields' names: an extra section may not take them,
/// and the CLI's report view knows them. A test ties the list to the fields.
pub(crate) const REPORT_KEYS: &[&str] = &[
    "version",
    "generated_at",
    "started_at",
    "uptime_seconds",
    "state",
    "ready",
    "memory",
    "limit",
    "leak",
    "thresholds",
    "allocator",
    "process",
    "handles",
    "caches",
    "cgroup",
    "sampler",
    "restart",
    "endpoint",
    "events",
];

/// The whole report. Its JSON form is part of the operator contract: fields are added, never
/// renamed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// leakguard's version.
    pub version: &'static str,
    /// When the report was made, seconds since the Unix epoch.
    pub generated_at: f64,
    /// When the guard started, seconds since the Unix epoch.
    pub started_at: f64,
    /// Seconds since the guard started.
    pub uptime_seconds: f64,
    /// The threshold state.
    pub state: MemoryState,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Memory usage against the limit.
    pub memory: MemorySection,
    /// The limit in force, if any, and the thresholds in bytes.
    pub limit: Option<LimitSection>,
    /// The leak detector's verdict and where the growth went.
    pub leak: LeakSection,
    /// The thresholds as fractions.
    pub thresholds: Thresholds,
    /// Allocator status and statistics.
    pub allocator: AllocatorSection,
    /// Process statistics from the last sample.
    pub process: Option<ProcessStats>,
    /// Tracked handles by kind, their open creation sites, and the OS view (fds, TCP states).
    pub handles: Option<crate::handles::HandlesReport>,
    /// Registered caches.
    pub caches: Vec<crate::cache::CacheReport>,
    /// The cgroup memory controller, if any.
    pub cgroup: Option<CgroupStats>,
    /// The sampler's own health.
    pub sampler: SamplerSection,
    /// Graceful restarts.
    pub restart: RestartSection,
    /// The debug endpoint's address, if it runs.
    pub endpoint: Option<String>,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
    /// Sections added with [`GuardBuilder::report_section`](crate::GuardBuilder::report_section),
    /// by name; in JSON each is a top-level key of the report.
    #[serde(flatten)]
    pub extensions: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Memory usage.
#[derive(Debug, Clone, Serialize)]
pub struct MemorySection {
    /// Resident set size, bytes (what the thresholds compare with the limit).
    pub resident_bytes: Option<u64>,
    /// Live heap (allocator `allocated`), bytes.
    pub heap_bytes: Option<u64>,
    /// Resident over limit.
    pub usage_ratio: Option<f64>,
}

/// The leak detector's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct LeakSection {
    /// Whether a leak is suspected.
    pub suspected: bool,
    /// How serious: none, slow, warning, critical.
    pub severity: Severity,
    /// Growth rate of the memory floor, bytes per second (once there is enough data).
    pub growth_bytes_per_second: Option<f64>,
    /// The same in MB (10⁶ bytes) per hour, the runbooks' unit.
    pub growth_mb_per_hour: Option<f64>,
    /// Share of pairwise slopes that are positive (0.5: flat and noisy; 1: steady growth).
    pub confidence: f64,
    /// When the leak was first suspected, seconds since the Unix epoch.
    pub first_suspected_at: Option<f64>,
    /// Seconds until RSS reaches the limit at this rate (leak suspected and a limit known).
    pub oom_eta_seconds: Option<f64>,
    /// The horizon the verdict comes from, seconds.
    pub horizon_seconds: Option<f64>,
    /// Whether the detector is still warming up.
    pub warming_up: bool,
    /// Why, in one sentence.
    pub reason: String,
    /// Where the growth since the end of the warm-up went; `None` during the warm-up.
    pub attribution: Option<Attribution>,
    /// Where the live heap grew since the baseline heap profile (taken at the end of the
    /// warm-up): the top growing allocation sites, computed when a leak is suspected and
    /// heap profiling is on (feature `profiling`); `None` otherwise.
    pub allocation_sites: Option<crate::profile::HeapGrowth>,
}

/// The limit and thresholds in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct LimitSection {
    /// Limit, bytes.
    pub bytes: u64,
    /// Where it came from.
    pub source: String,
    /// Warning threshold, bytes.
    pub warn_bytes: u64,
    /// Critical threshold, bytes.
    pub critical_bytes: u64,
    /// Restart threshold, bytes.
    pub restart_bytes: u64,
}

/// Allocator status and last statistics.
#[derive(Debug, Clone, Serialize)]
pub struct AllocatorSection {
    /// What was detected at start.
    #[serde(flatten)]
    pub status: AllocatorStatus,
    /// The last statistics.
    pub stats: Option<AllocatorStats>,
}

/// The sampler's health.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerSection {
    /// Sampling interval, seconds.
    pub interval_seconds: f64,
    /// Samples taken.
    pub samples: u64,
    /// Samples in which a source failed.
    pub sample_errors: u64,
    /// Panics caught on the sampler thread.
    pub panics: u64,
    /// Cost of the last sample, microseconds.
    pub last_duration_us: Option<f64>,
    /// Time of the last sample, seconds since the Unix epoch.
    pub last_sample_at: Option<f64>,
    /// Sources that failed in the last sample.
    pub errors: Vec<String>,
}

/// Restart state.
#[derive(Debug, Clone, Serialize)]
pub struct RestartSection {
    /// Restarts performed (survives the re-exec).
    pub restarts_total: u64,
    /// Whether a restart is under way.
    pub in_progress: bool,
    /// When the last restart happened, seconds since the Unix epoch (survives the re-exec).
    pub last_at: Option<f64>,
    /// Why the last restart happened.
    pub last_reason: Option<String>,
}

fn threshold_bytes(limit: u64, fraction: f64) -> u64 {
    (limit as f64 * fraction).floor() as u64
}

impl Report {
    pub(crate) fn from_snapshot(s: Snapshot) -> Self {
        let usage_ratio = s.usage_ratio();
        let v = &s.verdict;
        let leak = LeakSection {
            suspected: v.leak,
            severity: v.severity,
            growth_bytes_per_second: v.slope_bytes_per_second,
            growth_mb_per_hour: v
                .slope_bytes_per_second
                .map(|b| b / crate::trend::MB_PER_HOUR),
            confidence: v.confidence,
            first_suspected_at: v.first_suspected_at,
            oom_eta_seconds: s.oom_eta_seconds,
            horizon_seconds: v.horizon_seconds,
            warming_up: v.warming_up,
            reason: v.reason.clone(),
            attribution: s.attribution.clone(),
            allocation_sites: s.heap_growth.clone(),
        };
        let sample = s.sample;
        let limit = s.limit.map(|Limit { bytes, source }| LimitSection {
            bytes,
            source,
            warn_bytes: threshold_bytes(bytes, s.thresholds.warn),
            critical_bytes: threshold_bytes(bytes, s.thresholds.critical),
            restart_bytes: threshold_bytes(bytes, s.thresholds.restart),
        });
        let (process, allocator_stats, cgroup, sampler_bits) = match sample {
            Some(x) => (
                Some(x.process),
                x.allocator,
                x.cgroup,
                Some((x.duration.as_secs_f64() * 1e6, x.unix_seconds, x.errors)),
            ),
            None => (None, None, None, None),
        };
        let (last_duration_us, last_sample_at, errors) = match sampler_bits {
            Some((d, t, e)) => (Some(d), Some(t), e),
            None => (None, None, Vec::new()),
        };
        Report {
            version: s.version,
            generated_at: s.now_unix,
            started_at: s.started_unix,
            uptime_seconds: s.uptime_seconds,
            state: s.state,
            ready: s.ready,
            memory: MemorySection {
                resident_bytes: process.as_ref().map(|p| p.resident_bytes),
                heap_bytes: allocator_stats.as_ref().map(|a| a.allocated),
                usage_ratio,
            },
            limit,
            leak,
            thresholds: s.thresholds,
            allocator: AllocatorSection {
                status: s.allocator,
                stats: allocator_stats,
            },
            process,
            handles: s.handles,
            caches: s.caches,
            cgroup,
            sampler: SamplerSection {
                interval_seconds: s.interval_seconds,
                samples: s.samples_total,
                sample_errors: s.sample_errors_total,
                panics: s.panics_total,
                last_duration_us,
                last_sample_at,
                errors,
            },
            restart: {
                let record = crate::handover::record();
                RestartSection {
                    restarts_total: s.restarts_total,
                    in_progress: !s.ready,
                    last_at: record.times.last().copied(),
                    last_reason: record.last_reason,
                }
            },
            endpoint: s.endpoint,
            events: s.recent_events,
            extensions: s.extensions,
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("report could not be rendered: {e}") }).to_string()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::allocator::{AllocatorKind, AllocatorStatus};
    use crate::threshold::Thresholds;

    #[test]
    fn the_report_keys_are_the_reports_fields() {
        let snapshot = Snapshot {
            version: "0",
            now_unix: 0.0,
            started_unix: 0.0,
            uptime_seconds: 0.0,
            interval_seconds: 1.0,
            sample: None,
            limit: None,
            state: MemoryState::Normal,
            thresholds: Thresholds {
                warn: 0.8,
                critical: 0.9,
                restart: 0.95,
                consecutive_samples: 3,
                hysteresis: 0.05,
            },
            ready: true,
            samples_total: 0,
            sample_errors_total: 0,
            panics_total: 0,
            restarts_total: 0,
            events_by_level: [0; 3],
            recent_events: Vec::new(),
            allocator: AllocatorStatus {
                kind: AllocatorKind::None,
                jemalloc_linked: false,
                note: None,
            },
            endpoint: None,
            verdict: Default::default(),
            oom_eta_seconds: None,
            attribution: None,
            handles: None,
            caches: Vec::new(),
            families: Vec::new(),
            extensions: Default::default(),
            heap_growth: None,
        };
        let json = serde_json::to_value(Report::from_snapshot(snapshot)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = REPORT_KEYS.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }
}
