//! The `handles` section of the report, its metric families, and the limit checks.

use super::os::{self, OsHandles, TCP_STATES};
use super::registry::{self, Kind, KindStats, MAX_KINDS};
use super::sites::{self, SYMBOLIZE_BUDGET, SamplingStats, SiteGroup};
use crate::event::Level;
use crate::exposition::{Families, Family, Kind as MetricKind, Labels};
use crate::process::ProcessStats;
use serde::Serialize;
use std::path::Path;

/// Creation sites listed per kind in a report.
pub const SITES_PER_KIND: usize = 10;
/// Fraction of the fd limit at which [`HandleLimitMonitor`] warns.
pub const FD_WARN_RATIO: f64 = 0.80;
/// Fraction of the fd limit under which the fd warning is re-armed.
pub const FD_REARM_RATIO: f64 = 0.75;

/// The `handles` section of the report: every kind's counts, ages, limits and the creation
/// sites of its open sampled handles, plus what the OS says (fds, threads, TCP states).
///
/// ```
/// let _conn = leakguard::track("doc_report_conn");
/// let report = leakguard::handles::report();
/// let kind = report.kinds.iter().find(|k| k.kind == "doc_report_conn").unwrap();
/// assert_eq!(kind.open, 1);
/// println!("{}", serde_json::to_string_pretty(&report).unwrap());
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct HandlesReport {
    /// Kinds, most open handles first.
    pub kinds: Vec<KindReport>,
    /// Kinds that can have their own name ([`MAX_KINDS`]); more are counted as `other`.
    pub kind_capacity: usize,
    /// Distinct names folded into `other` because the capacity was reached.
    pub folded_kinds: u64,
    /// Whether `folded_kinds` stopped counting (it is then a lower bound).
    pub folded_kinds_saturated: bool,
    /// Usage of the table of open sampled handles.
    pub sampling: SamplingStats,
    /// Open fds, fd limit, threads and TCP sockets, from `/proc`.
    pub os: OsHandles,
}

/// One kind of handle.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// The kind's name.
    pub kind: String,
    /// Open now.
    pub open: u64,
    /// Opened since the process started.
    pub opened: u64,
    /// Closed since the process started.
    pub closed: u64,
    /// The highest open count observed (at reports, limit checks and sampled opens).
    pub peak: u64,
    /// Age of the oldest open handle, at least (seconds); `None` when none is open. Exact
    /// for a sampled handle; else accurate to its generation (see the
    /// [module documentation](super#precision)).
    pub oldest_age_seconds: Option<f64>,
    /// Age of the oldest open handle, at most (seconds).
    pub oldest_age_max_seconds: Option<f64>,
    /// The configured `max_open`, if any.
    pub max_open: Option<u64>,
    /// The configured `max_age`, seconds, if any.
    pub max_age_seconds: Option<f64>,
    /// `open > max_open`.
    pub max_open_exceeded: bool,
    /// `oldest_age_seconds > max_age`.
    pub max_age_exceeded: bool,
    /// One open in this many is sampled (0: none; 1: all): the kind's configured rate.
    pub sample_every: u32,
    /// One open in this many is sampled now: `sample_every` slowed down by the capture
    /// budget while the kind's opens come faster than the budget allows (see
    /// [`set_capture_budget`](super::set_capture_budget)), else equal to it.
    pub sample_every_now: u32,
    /// Whether the operator marked the kind as suspect (every open is sampled).
    pub suspect: bool,
    /// Sampled handles of this kind still open.
    pub sampled_open: u64,
    /// Where the open sampled handles were created, most first.
    pub sites: Vec<SiteReport>,
}

/// Open sampled handles created at one place (one call stack).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteReport {
    /// Sampled handles from this stack still open.
    pub sampled_open: u64,
    /// Estimated open handles from this stack (each sampled one stands for
    /// `sample_every` opens).
    pub estimated_open: u64,
    /// Age of the oldest of them, seconds.
    pub oldest_age_seconds: f64,
    /// The function that opened them (the first frame outside leakguard).
    pub function: Option<String>,
    /// Its file and line.
    pub location: Option<String>,
    /// The stack, innermost first, as `function (file:line)`.
    pub frames: Vec<String>,
}

impl std::fmt::Display for SiteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let function = self.function.as_deref().unwrap_or("an unknown site");
        write!(
            f,
            "{} open from {function}",
            self.sampled_open.max(self.estimated_open)
        )?;
        if let Some(location) = &self.location {
            write!(f, " ({location})")?;
        }
        write!(f, ", oldest {:.1} s", self.oldest_age_seconds)
    }
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Site reports from table groups (all of one kind), most handles (estimated) first, symbolized.
/// Stacks that look the same once symbolized (they differ in frames not shown) are merged.
pub(crate) fn site_reports(
    mut groups: Vec<SiteGroup>,
    now: u64,
    budget: &mut usize,
) -> Vec<SiteReport> {
    // By estimated handles, not sampled ones: under the capture budget a site's samples may
    // stand for more handles each than another's (they were taken at a lower rate).
    groups.sort_by(|a, b| {
        b.estimated
            .max(b.count)
            .cmp(&a.estimated.max(a.count))
            .then(a.oldest_born.cmp(&b.oldest_born))
    });
    let mut out: Vec<SiteReport> = Vec::new();
    for g in groups.into_iter().take(4 * SITES_PER_KIND) {
        let frames = sites::symbolize(&g.frames, budget);
        let shown: Vec<String> = frames.iter().map(ToString::to_string).collect();
        let age = seconds(now.saturating_sub(g.oldest_born));
        if let Some(same) = out.iter_mut().find(|s| s.frames == shown) {
            same.sampled_open += g.count;
            same.estimated_open += g.estimated;
            same.oldest_age_seconds = same.oldest_age_seconds.max(age);
            continue;
        }
        let first = frames.first();
        out.push(SiteReport {
            sampled_open: g.count,
            estimated_open: g.estimated,
            oldest_age_seconds: age,
            function: first.and_then(|f| f.function.clone()),
            location: first.and_then(|f| {
                let file = f.file.as_ref()?;
                Some(match f.line {
                    Some(line) => format!("{file}:{line}"),
                    None => file.clone(),
                })
            }),
            frames: shown,
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.sampled_open.max(s.estimated_open)));
    out.truncate(SITES_PER_KIND);
    out
}

/// A kind's counts at `now` with its sampled handles' exact ages folded in.
struct KindView {
    kind: &'static Kind,
    stats: KindStats,
    oldest: Option<(u64, u64)>,
    config: super::KindConfig,
}

impl KindView {
    fn max_open_exceeded(&self) -> bool {
        self.config.max_open.is_some_and(|m| self.stats.open > m)
    }
    fn max_age_exceeded(&self) -> bool {
        match (self.config.max_age, self.oldest) {
            (Some(max), Some((at_least, _))) => at_least > registry::duration_nanos(max),
            _ => false,
        }
    }
}

/// Every kind, with housekeeping done; `groups` are the open sampled handles by site.
fn views(now: u64, groups: &[SiteGroup]) -> Vec<KindView> {
    registry::all()
        .map(|kind| {
            let stats = kind.stats(now);
            let sampled_oldest = groups
                .iter()
                .filter(|g| g.kind == kind.index)
                .map(|g| now.saturating_sub(g.oldest_born))
                .max();
            let oldest = match (stats.oldest, sampled_oldest) {
                (Some((lo, hi)), Some(s)) => Some((lo.max(s), hi.max(s))),
                (None, Some(s)) if stats.open > 0 => Some((s, s)),
                (o, _) if stats.open > 0 => o,
                _ => None,
            };
            KindView {
                kind,
                stats,
                oldest,
                config: kind.config(),
            }
        })
        .collect()
}

/// The `handles` section, with the OS part read from the real `/proc`.
pub fn report() -> HandlesReport {
    report_at(Path::new("/proc"))
}

/// The `handles` section, with the OS part read from the procfs tree at `proc_root`.
///
/// Cost: one pass over every kind's counters, one over the sampled-handle table (at most
/// [`TABLE_CAPACITY`](super::TABLE_CAPACITY) entries), symbolization of at most
/// [`SYMBOLIZE_BUDGET`] new addresses (the first one loads the binary's debug information),
/// and the bounded `/proc` reads of [`os_handles`](super::os_handles).
pub fn report_at(proc_root: &Path) -> HandlesReport {
    let now = registry::now_nanos();
    let groups = sites::groups(|_, _| true);
    let mut views = views(now, &groups);
    views.sort_by(|a, b| {
        b.stats
            .open
            .cmp(&a.stats.open)
            .then_with(|| a.kind.name.cmp(&b.kind.name))
    });
    let mut budget = SYMBOLIZE_BUDGET;
    let kinds = views
        .iter()
        .map(|v| {
            let mine: Vec<SiteGroup> = groups
                .iter()
                .filter(|g| g.kind == v.kind.index)
                .cloned()
                .collect();
            let sampled_open = mine.iter().map(|g| g.count).sum();
            KindReport {
                kind: v.kind.name.to_string(),
                open: v.stats.open,
                opened: v.stats.opened,
                closed: v.stats.closed,
                peak: v.stats.peak,
                oldest_age_seconds: v.oldest.map(|(lo, _)| seconds(lo)),
                oldest_age_max_seconds: v.oldest.map(|(_, hi)| seconds(hi)),
                max_open: v.config.max_open,
                max_age_seconds: v.config.max_age.map(|d| d.as_secs_f64()),
                max_open_exceeded: v.max_open_exceeded(),
                max_age_exceeded: v.max_age_exceeded(),
                sample_every: v.kind.sample_every(),
                sample_every_now: v.kind.sample_every_now(),
                suspect: v.kind.suspect(),
                sampled_open,
                sites: site_reports(mine, now, &mut budget),
            }
        })
        .collect();
    let (folded_kinds, folded_kinds_saturated) = registry::folded();
    HandlesReport {
        kinds,
        kind_capacity: MAX_KINDS,
        folded_kinds,
        folded_kinds_saturated,
        sampling: sites::stats(),
        os: os::os_handles(proc_root),
    }
}

/// Open handles by kind, cheaply (no housekeeping, no `/proc`): what the leak detector
/// compares against a baseline to attribute growth.
///
/// ```
/// let _a = leakguard::track("doc_open_by_kind");
/// let open = leakguard::handles::open_by_kind();
/// assert!(open.contains(&("doc_open_by_kind".to_owned(), 1)));
/// ```
pub fn open_by_kind() -> Vec<(String, u64)> {
    registry::all()
        .map(|k| (k.name.to_string(), k.open_now()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Metrics.

/// The handle metric families, with TCP states read from the real `/proc`.
pub(crate) fn families() -> Vec<Family> {
    families_at(Path::new("/proc"))
}

/// The handle metric families, with TCP states read from the procfs tree at `proc_root`.
pub(crate) fn families_at(proc_root: &Path) -> Vec<Family> {
    let now = registry::now_nanos();
    let groups = sites::groups(|_, _| true);
    let views = views(now, &groups);
    let by_kind = |f: &dyn Fn(&KindView) -> Option<f64>| -> Vec<(Labels, f64)> {
        views
            .iter()
            .filter_map(|v| f(v).map(|x| (vec![("kind", v.kind.name.to_string())], x)))
            .collect()
    };
    let mut out = Families::default();
    out.add(
        "leakguard_handles_open",
        "Handles open now, by kind.",
        MetricKind::Gauge,
        by_kind(&|v| Some(v.stats.open as f64)),
    );
    out.add(
        "leakguard_handles_opened_total",
        "Handles opened, by kind.",
        MetricKind::Counter,
        by_kind(&|v| Some(v.stats.opened as f64)),
    );
    out.add(
        "leakguard_handles_closed_total",
        "Handles closed, by kind.",
        MetricKind::Counter,
        by_kind(&|v| Some(v.stats.closed as f64)),
    );
    out.add(
        "leakguard_handles_peak",
        "Highest number of handles open at once observed, by kind.",
        MetricKind::Gauge,
        by_kind(&|v| Some(v.stats.peak as f64)),
    );
    out.add(
        "leakguard_handles_oldest_age_seconds",
        "Age of the oldest open handle (a lower bound, accurate to a generation), by kind.",
        MetricKind::Gauge,
        by_kind(&|v| v.oldest.map(|(lo, _)| seconds(lo))),
    );
    let mut exceeded = Vec::new();
    for v in &views {
        if v.config.max_open.is_some() {
            exceeded.push((
                vec![
                    ("kind", v.kind.name.to_string()),
                    ("limit", "max_open".to_owned()),
                ],
                f64::from(u8::from(v.max_open_exceeded())),
            ));
        }
        if v.config.max_age.is_some() {
            exceeded.push((
                vec![
                    ("kind", v.kind.name.to_string()),
                    ("limit", "max_age".to_owned()),
                ],
                f64::from(u8::from(v.max_age_exceeded())),
            ));
        }
    }
    out.add(
        "leakguard_handles_limit_exceeded",
        "1 while a kind is over its configured limit (max_open or max_age).",
        MetricKind::Gauge,
        exceeded,
    );
    let (folded, _) = registry::folded();
    out.add(
        "leakguard_handles_folded_kinds",
        "Distinct kind names counted as kind=\"other\" because the kind capacity was reached.",
        MetricKind::Gauge,
        vec![(Vec::new(), folded as f64)],
    );
    let sampling = sites::stats();
    out.add(
        "leakguard_handles_sampled_open",
        "Open sampled handles whose creation site is recorded.",
        MetricKind::Gauge,
        vec![(Vec::new(), sampling.table_used as f64)],
    );
    out.add(
        "leakguard_handles_samples_dropped_total",
        "Sampled opens not recorded because the table of sampled handles was full.",
        MetricKind::Counter,
        vec![(Vec::new(), sampling.dropped_table_full as f64)],
    );
    let tcp = os::tcp_sockets_reused(proc_root);
    if tcp.note.is_none() || tcp.lines_read > 0 {
        out.add(
            "leakguard_tcp_sockets",
            "This process's TCP sockets by state (from /proc/net/tcp and tcp6, read at most every 5 s).",
            MetricKind::Gauge,
            TCP_STATES
                .iter()
                .map(|s| {
                    (
                        vec![("state", (*s).to_owned())],
                        tcp.states.get(s).copied().unwrap_or(0) as f64,
                    )
                })
                .collect(),
        );
        out.add(
            "leakguard_tcp_table_truncated",
            "1 when /proc/net/tcp was longer than leakguard reads: the counts are lower bounds.",
            MetricKind::Gauge,
            vec![(Vec::new(), f64::from(u8::from(tcp.truncated)))],
        );
    }
    out.into_vec()
}

// ---------------------------------------------------------------------------------------
// Limits.

/// Which limit a [`LimitEvent`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitName {
    /// A kind's `max_open`.
    MaxOpen,
    /// A kind's `max_age`.
    MaxAge,
    /// Open file descriptors against the process's fd limit.
    Fds,
}

impl LimitName {
    /// `max_open`, `max_age` or `fds`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::MaxOpen => "max_open",
            LimitName::MaxAge => "max_age",
            LimitName::Fds => "fds",
        }
    }
}

/// A limit crossed (upwards: a warning) or left (downwards: the warning is re-armed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitEvent {
    /// `warn` when crossed, `info` when back under.
    pub level: Level,
    /// The handle kind; `None` for the fd limit.
    pub kind: Option<String>,
    /// Which limit.
    pub limit: LimitName,
    /// `true` when crossed, `false` when back under.
    pub exceeded: bool,
    /// One human sentence.
    pub message: String,
}

impl std::fmt::Display for LimitEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Watches the handle limits (each kind's `max_open` and `max_age`, and the process's fd
/// limit, `RLIMIT_NOFILE`) and reports each crossing once. Not the memory limit: that is the
/// guard's business (`LimitSetting`).
///
/// The guard's sampler calls [`HandleLimitMonitor::check`] every interval. A limit that is
/// crossed yields one warning; it is re-armed (with an `info` event) once the value is
/// back under: `max_open` when at most 90 % of it is open, `max_age` when the oldest open
/// handle is within it, the fd limit under [`FD_REARM_RATIO`] (it warns at
/// [`FD_WARN_RATIO`]).
///
/// ```
/// use leakguard::handles::{self, KindConfig, HandleLimitMonitor};
///
/// handles::configure("doc_limited", KindConfig::new().max_open(1)).unwrap();
/// let mut monitor = HandleLimitMonitor::new();
/// let a = leakguard::track("doc_limited");
/// let b = leakguard::track("doc_limited");
/// let events = monitor.check(None);
/// assert!(events.iter().any(|e| e.exceeded && e.kind.as_deref() == Some("doc_limited")));
/// assert!(monitor.check(None).is_empty()); // once per crossing
/// drop((a, b));
/// assert!(monitor.check(None).iter().any(|e| !e.exceeded));
/// ```
#[derive(Debug, Clone)]
pub struct HandleLimitMonitor {
    over_open: Vec<bool>,
    over_age: Vec<bool>,
    over_fds: bool,
}

/// The former name of [`HandleLimitMonitor`]: "limit" alone reads as the memory limit.
#[deprecated(note = "renamed `HandleLimitMonitor`: it watches handle and fd limits, not memory")]
pub type LimitMonitor = HandleLimitMonitor;

impl Default for HandleLimitMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl HandleLimitMonitor {
    /// A monitor with every limit armed.
    pub fn new() -> Self {
        Self {
            over_open: vec![false; MAX_KINDS + 1],
            over_age: vec![false; MAX_KINDS + 1],
            over_fds: false,
        }
    }

    /// Does every kind's housekeeping and returns the limits crossed or left since the
    /// last call. `process` (the sampler's last reading) gives the fd usage; without it
    /// the fd limit is not checked.
    pub fn check(&mut self, process: Option<&ProcessStats>) -> Vec<LimitEvent> {
        let now = registry::now_nanos();
        let groups = sites::groups(|_, _| true);
        let mut events = Vec::new();
        let mut budget = 64;
        for v in views(now, &groups) {
            let i = usize::from(v.kind.index);
            let name = &v.kind.name;
            let top_site = |budget: &mut usize| {
                let mine: Vec<SiteGroup> = groups
                    .iter()
                    .filter(|g| g.kind == v.kind.index)
                    .cloned()
                    .collect();
                site_reports(mine, now, budget)
                    .first()
                    .map(|s| format!("; most sampled open ones: {s}"))
                    .unwrap_or_default()
            };
            if let (Some(max), Some(over)) = (v.config.max_open, self.over_open.get_mut(i)) {
                let open = v.stats.open;
                if !*over && open > max {
                    *over = true;
                    events.push(LimitEvent {
                        level: Level::Warn,
                        kind: Some(name.to_string()),
                        limit: LimitName::MaxOpen,
                        exceeded: true,
                        message: format!(
                            "{open} handles of kind {name} are open, over its max_open of {max}{}",
                            top_site(&mut budget)
                        ),
                    });
                } else if *over && open <= max - max / 10 {
                    *over = false;
                    events.push(LimitEvent {
                        level: Level::Info,
                        kind: Some(name.to_string()),
                        limit: LimitName::MaxOpen,
                        exceeded: false,
                        message: format!(
                            "handles of kind {name} are back under max_open {max}: {open} open"
                        ),
                    });
                }
            }
            if let (Some(max), Some(over)) = (v.config.max_age, self.over_age.get_mut(i)) {
                let exceeded = v.max_age_exceeded();
                let age = v.oldest.map_or(0.0, |(lo, _)| seconds(lo));
                if !*over && exceeded {
                    *over = true;
                    events.push(LimitEvent {
                        level: Level::Warn,
                        kind: Some(name.to_string()),
                        limit: LimitName::MaxAge,
                        exceeded: true,
                        message: format!(
                            "the oldest open handle of kind {name} is at least {age:.0} s old, over its max_age of {} s{}",
                            max.as_secs_f64(),
                            top_site(&mut budget)
                        ),
                    });
                } else if *over && !exceeded {
                    *over = false;
                    events.push(LimitEvent {
                        level: Level::Info,
                        kind: Some(name.to_string()),
                        limit: LimitName::MaxAge,
                        exceeded: false,
                        message: format!(
                            "no open handle of kind {name} is older than max_age {} s any more",
                            max.as_secs_f64()
                        ),
                    });
                }
            }
        }
        if let Some(p) = process
            && let Some(max) = p.max_fds.filter(|&m| m > 0)
        {
            let ratio = p.open_fds as f64 / max as f64;
            if !self.over_fds && ratio >= FD_WARN_RATIO {
                self.over_fds = true;
                events.push(LimitEvent {
                    level: Level::Warn,
                    kind: None,
                    limit: LimitName::Fds,
                    exceeded: true,
                    message: format!(
                        "{} file descriptors are open, {:.0}% of the limit of {max}",
                        p.open_fds,
                        ratio * 100.0
                    ),
                });
            } else if self.over_fds && ratio < FD_REARM_RATIO {
                self.over_fds = false;
                events.push(LimitEvent {
                    level: Level::Info,
                    kind: None,
                    limit: LimitName::Fds,
                    exceeded: false,
                    message: format!(
                        "open file descriptors back under {:.0}% of the limit: {} of {max}",
                        FD_REARM_RATIO * 100.0,
                        p.open_fds
                    ),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_prometheus_text() {
        let _a = super::super::track("unit_families_kind");
        let _b = super::super::track("unit_families_kind");
        super::super::configure(
            "unit_families_kind",
            super::super::KindConfig::new().max_open(1),
        )
        .ok();
        let text = crate::exposition::render(&families());
        assert!(
            text.contains("leakguard_handles_open{kind=\"unit_families_kind\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("leakguard_handles_opened_total{kind=\"unit_families_kind\"} 2\n"));
        assert!(text.contains("# TYPE leakguard_handles_closed_total counter\n"));
        assert!(text.contains(
            "leakguard_handles_limit_exceeded{kind=\"unit_families_kind\",limit=\"max_open\"} 1\n"
        ));
        assert!(text.contains("leakguard_tcp_sockets{state=\"close_wait\"}"));
        assert!(text.contains("leakguard_handles_oldest_age_seconds{kind=\"unit_families_kind\"}"));
    }

    #[test]
    fn the_fd_limit_warns_at_80_percent_once_and_rearms_under_75() {
        let mut monitor = HandleLimitMonitor::new();
        let at = |open| ProcessStats {
            open_fds: open,
            max_fds: Some(100),
            ..ProcessStats::default()
        };
        let fds = |events: Vec<LimitEvent>| {
            events
                .into_iter()
                .filter(|e| e.limit == LimitName::Fds)
                .map(|e| e.exceeded)
                .collect::<Vec<_>>()
        };
        assert_eq!(fds(monitor.check(Some(&at(79)))), Vec::<bool>::new());
        assert_eq!(fds(monitor.check(Some(&at(80)))), vec![true]);
        assert_eq!(fds(monitor.check(Some(&at(90)))), Vec::<bool>::new());
        assert_eq!(fds(monitor.check(Some(&at(76)))), Vec::<bool>::new());
        assert_eq!(fds(monitor.check(Some(&at(74)))), vec![false]);
        assert_eq!(fds(monitor.check(Some(&at(85)))), vec![true]);
        let unlimited = ProcessStats {
            open_fds: 10_000,
            max_fds: None,
            ..ProcessStats::default()
        };
        assert!(fds(HandleLimitMonitor::new().check(Some(&unlimited))).is_empty());
    }
}
