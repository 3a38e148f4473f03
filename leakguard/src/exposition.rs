//! Metrics: one list of metric families, rendered as Prometheus text (format 0.0.4) for
//! `/metrics` and recorded through the `metrics` facade so a service's own recorder sees
//! them too.

use crate::event::Level;
use crate::snapshot::Snapshot;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
}

/// Label names and values of one series.
pub(crate) type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub series: Vec<(Labels, f64)>,
}

struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        series: Vec<(Labels, f64)>,
    ) {
        if !series.is_empty() {
            self.0.push(Family {
                name,
                help,
                kind,
                series,
            });
        }
    }
    fn gauge(&mut self, name: &'static str, help: &'static str, value: Option<f64>) {
        self.add(
            name,
            help,
            Kind::Gauge,
            value.map(|v| (Vec::new(), v)).into_iter().collect(),
        );
    }
    fn counter(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.add(name, help, Kind::Counter, vec![(Vec::new(), value)]);
    }
}

/// The metric families for a snapshot. Families without a value (no limit known, no allocator
/// statistics) are left out rather than reported as zero.
pub(crate) fn families(s: &Snapshot) -> Vec<Family> {
    let mut f = Families(Vec::new());
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
    f.0.extend(crate::handles::families());
    f.0.extend(crate::cache::families());
    f.add(
        "leakguard_info",
        "leakguard's version and the allocator it reads (value is always 1).",
        Kind::Gauge,
        vec![(
            vec![("version", s.version.to_owned()), ("allocator", allocator)],
            1.0,
        )],
    );
    f.0
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Renders families in the Prometheus text exposition format 0.0.4.
pub(crate) fn render(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for fam in families {
        let kind = match fam.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} {kind}", fam.name);
        for (labels, value) in &fam.series {
            out.push_str(fam.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(*value, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Records families through the `metrics` facade (a no-op when the service installed no
/// recorder).
pub(crate) fn record(families: &[Family]) {
    for fam in families {
        for (labels, value) in &fam.series {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect();
            match fam.kind {
                Kind::Gauge => metrics::gauge!(fam.name, labels).set(*value),
                Kind::Counter => metrics::counter!(fam.name, labels).absolute(*value as u64),
            }
        }
    }
}

/// Describes the families to the `metrics` facade (help texts), once per guard start.
pub(crate) fn describe(families: &[Family]) {
    for fam in families {
        match fam.kind {
            Kind::Gauge => metrics::describe_gauge!(fam.name, fam.help),
            Kind::Counter => metrics::describe_counter!(fam.name, fam.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_integers_printed_plainly() {
        let fams = vec![Family {
            name: "x_total",
            help: "h",
            kind: Kind::Counter,
            series: vec![
                (vec![("a", "q\"\\\nz".to_owned())], 3.0),
                (vec![], 0.25),
                (vec![], f64::NAN),
            ],
        }];
        let text = render(&fams);
        assert_eq!(
            text,
            "# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\nz\"} 3\nx_total 0.25\nx_total NaN\n"
        );
    }
}
