//! A consistent copy of the guard's state, taken under its lock and rendered without it.

use crate::allocator::AllocatorStatus;
use crate::attribution::Attribution;
use crate::event::Event;
use crate::sample::MemorySample;
use crate::threshold::{MemoryState, Thresholds};
use crate::trend::Verdict;
use serde::Serialize;

/// The memory limit in force and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// Bytes.
    pub bytes: u64,
    /// `builder`, `LEAKGUARD_LIMIT` or `cgroup <path>`.
    pub source: String,
}

/// Everything the report and `/metrics` show, copied at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub version: &'static str,
    pub now_unix: f64,
    pub started_unix: f64,
    pub uptime_seconds: f64,
    pub interval_seconds: f64,
    pub sample: Option<MemorySample>,
    pub limit: Option<Limit>,
    pub state: MemoryState,
    pub thresholds: Thresholds,
    pub ready: bool,
    pub samples_total: u64,
    pub sample_errors_total: u64,
    pub panics_total: u64,
    pub restarts_total: u64,
    pub events_by_level: [u64; 3],
    pub recent_events: Vec<Event>,
    pub allocator: AllocatorStatus,
    pub endpoint: Option<String>,
    pub verdict: Verdict,
    pub oom_eta_seconds: Option<f64>,
    /// Computed for the report only.
    pub attribution: Option<Attribution>,
    /// For the report only.
    pub handles: Option<crate::handles::HandlesReport>,
    /// For the report only.
    pub caches: Vec<crate::cache::CacheReport>,
    /// For the report only: the sections added with `GuardBuilder::report_section`.
    pub extensions: std::collections::BTreeMap<String, serde_json::Value>,
    /// For `/metrics` only: the handles' and caches' metric families, copied with the rest.
    pub families: Vec<crate::exposition::Family>,
    /// For the report only: top growing allocation sites since the baseline profile.
    pub heap_growth: Option<crate::profile::HeapGrowth>,
}

impl Snapshot {
    /// Usage (resident bytes) over the limit.
    pub fn usage_ratio(&self) -> Option<f64> {
        let limit = self.limit.as_ref()?;
        let sample = self.sample.as_ref()?;
        Some(sample.process.resident_bytes as f64 / limit.bytes.max(1) as f64)
    }
}
