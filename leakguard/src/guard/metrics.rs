//! The metric families of a [`Snapshot`]: what `/metrics` shows and the `metrics` facade
//! records. Families without a value (no limit known, no allocator statistics) are left out
//! rather than reported as zero.

use crate::event::Level;
use crate::exposition::{Families, Family, Kind};
use crate::snapshot::Snapshot;
/// The metric families for a snapshot. Families without a value (no limit known, no allocator
/// statistics) are left out rather than reported as zero.
pub(crate) fn families(s: &Snapshot) -> Vec<Family> {
    let mut f = Families::default();
    let sample = s.sample.as_ref();
    let process = sample.map(|x| &x.process);
    let n = |v: u64| v as f64;

    // Standard process metrics, with the names existing dashboards use.
    f.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        process.map(|p| n(p.resident_bytes)),
    );
    f.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        process.map(|p| n(p.virtual_bytes)),
    );
    f.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        process.map(|p| n(p.open_fds)),
    );
    f.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        process.and_then(|p| p.max_fds).map(n),
    );
    f.gauge(
        "process_threads",
        "Number of OS threads in the process.",
        process.map(|p| n(p.threads)),
    );
    f.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        process.map(|p| p.start_time_seconds).filter(|t| *t > 0.0),
    );

    // leakguard's own.
    f.gauge(
        "leakguard_process_peak_resident_memory_bytes",
        "Peak resident memory size (VmHWM) in bytes.",
        process.map(|p| n(p.peak_resident_bytes)),
    );
    f.gauge(
        "leakguard_process_swap_bytes",
        "Swapped-out anonymous memory (VmSwap) in bytes.",
        process.map(|p| n(p.swap_bytes)),
    );
    if let Some(by) = process.and_then(|p| p.fds_by_type) {
        let series = [
            ("file", by.file),
            ("socket", by.socket),
            ("pipe", by.pipe),
            ("anon_inode", by.anon_inode),
            ("other", by.other),
        ]
        .into_iter()
        .map(|(t, v)| (vec![("type", t.to_owned())], n(v)))
        .collect();
        f.add(
            "leakguard_process_open_fds",
            "Open file descriptors by type.",
            Kind::Gauge,
            series,
        );
    }
    if let Some(a) = sample.and_then(|x| x.allocator.as_ref()) {
        let series = [
            ("allocated", Some(a.allocated)),
            ("active", a.active),
            ("resident", a.resident),
            ("mapped", a.mapped),
            ("retained", a.retained),
            ("metadata", a.metadata),
            ("free", a.free),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (vec![("kind", k.to_owned())], n(v))))
        .collect();
        f.add(
            "leakguard_allocator_bytes",
            "Allocator statistics in bytes, by kind (allocated = live heap).",
            Kind::Gauge,
            series,
        );
    }
    f.gauge(
        "leakguard_memory_limit_bytes",
        "The memory limit in force, in bytes.",
        s.limit.as_ref().map(|l| n(l.bytes)),
    );
    f.gauge(
        "leakguard_memory_usage_ratio",
        "Resident memory over the limit (0 to 1 and beyond).",
        s.usage_ratio(),
    );
    if let Some(limit) = &s.limit {
        let t = &s.thresholds;
        let series = [
            ("warn", t.warn),
            ("critical", t.critical),
            ("restart", t.restart),
        ]
        .into_iter()
        .map(|(lvl, frac)| {
            (
                vec![("level", lvl.to_owned())],
                (limit.bytes as f64 * frac).floor(),
            )
        })
        .collect();
        f.add(
            "leakguard_memory_threshold_bytes",
            "Resident memory at which each threshold state begins, in bytes.",
            Kind::Gauge,
            series,
        );
    }
    f.gauge(
        "leakguard_memory_growth_bytes_per_second",
        "Growth rate of the memory floor (lower envelope of RSS), bytes per second.",
        s.verdict.slope_bytes_per_second,
    );
    f.gauge(
        "leakguard_memory_oom_eta_seconds",
        "Seconds until RSS reaches the limit at the current growth rate, while a leak is suspected.",
        s.oom_eta_seconds,
    );
    f.gauge(
        "leakguard_leak_suspected",
        "1 while the leak detector sees sustained growth of the memory floor.",
        Some(if s.verdict.leak { 1.0 } else { 0.0 }),
    );
    f.gauge(
        "leakguard_leak_confidence",
        "Share of the floor's pairwise slopes that are positive (0.5 flat, 1 steady growth).",
        s.verdict
            .slope_bytes_per_second
            .map(|_| s.verdict.confidence),
    );
    f.gauge(
        "leakguard_threshold_state",
        "Memory threshold state: 0 normal, 1 warn, 2 critical, 3 restart.",
        Some(f64::from(s.state.as_number())),
    );
    f.gauge(
        "leakguard_ready",
        "1 while the service is ready, 0 from the moment a restart begins.",
        Some(if s.ready { 1.0 } else { 0.0 }),
    );
    if let Some(cg) = sample.and_then(|x| x.cgroup.as_ref()) {
        f.gauge(
            "leakguard_cgroup_memory_usage_bytes",
            "Memory usage of the process's cgroup in bytes.",
            cg.current_bytes.map(n),
        );
        f.gauge(
            "leakguard_cgroup_memory_high_bytes",
            "The cgroup's memory.high throttling threshold in bytes.",
            cg.high_bytes.map(n),
        );
        if let Some(kills) = cg.oom_kills {
            f.counter(
                "leakguard_cgroup_oom_kills_total",
                "OOM kills recorded in the process's cgroup.",
                n(kills),
            );
        }
    }
    f.counter(
        "leakguard_restarts_total",
        "Graceful restarts performed by leakguard.",
        n(s.restarts_total),
    );
    f.counter(
        "leakguard_samples_total",
        "Samples taken.",
        n(s.samples_total),
    );
    f.counter(
        "leakguard_sample_errors_total",
        "Samples in which a statistics source failed.",
        n(s.sample_errors_total),
    );
    f.counter(
        "leakguard_sampler_panics_total",
        "Panics caught on the sampler thread.",
        n(s.panics_total),
    );
    f.gauge(
        "leakguard_sample_duration_seconds",
        "How long the last sample took, in seconds.",
        sample.map(|x| x.duration.as_secs_f64()),
    );
    f.add(
        "leakguard_events_total",
        "Events recorded, by level.",
        Kind::Counter,
        [Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .map(|l| {
                (
                    vec![("level", l.as_str().to_owned())],
                    n(s.events_by_level[l as usize]),
                )
            })
            .collect(),
    );
    let allocator = serde_json::to_value(s.allocator.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    f.extend(s.families.iter().cloned());
    f.add(
        "leakguard_info",
        "leakguard's version and the allocator it reads (value is always 1).",
        Kind::Gauge,
        vec![(
            vec![("version", s.version.to_owned()), ("allocator", allocator)],
            1.0,
        )],
    );
    f.into_vec()
}
