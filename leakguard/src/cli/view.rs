//! `leakguard top URL` and `leakguard report URL`: a running guard's report, fetched from its
//! endpoint and rendered as a live screen, a text summary, JSON, or the on-call incident
//! update.
//!
//! The report is read as generic JSON, field by field, so the CLI renders reports of older and
//! newer guards alike (the report's fields are added, never renamed); a missing field shows as
//! `-` rather than failing. What ties the paths it reads to the report is a test: every lookup
//! is recorded while the view renders the report of a running guard, and each path must exist
//! in that report.

use super::args::{self, Spec};
use super::fmt::{bytes, clock, iso, mb_per_hour, percent, signed_bytes, span};
use super::http::Endpoint;
use super::{CliError, print};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The view's lookups in the report: `at(r, &["leak", "reason"])`. A missing field reads as
/// `None` (shown as `-`), so reports of older guards still render.
///
/// Under test every lookup is also recorded, so that a test can check each path the view reads
/// against the report of a running guard (`tests::every_path_the_view_reads_is_in_a_real_report`).
mod lookup {
    use super::super::fmt;
    use serde_json::Value;

    /// A lookup: the address of the value looked in, and the path.
    #[cfg(test)]
    pub(super) type Read = (usize, Vec<String>);

    #[cfg(test)]
    thread_local! {
        /// The lookups made while recording.
        pub(super) static READS: std::cell::RefCell<Option<Vec<Read>>> =
            const { std::cell::RefCell::new(None) };
    }

    #[cfg(test)]
    fn record(v: &Value, path: &[&str]) {
        READS.with(|reads| {
            if let Some(reads) = reads.borrow_mut().as_mut() {
                let address = std::ptr::from_ref(v) as usize;
                reads.push((address, path.iter().map(|k| (*k).to_owned()).collect()));
            }
        });
    }

    #[cfg(not(test))]
    fn record(_: &Value, _: &[&str]) {}

    pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
        record(v, path);
        fmt::at(v, path)
    }

    pub(super) fn num(v: &Value, path: &[&str]) -> Option<f64> {
        record(v, path);
        fmt::num(v, path)
    }

    pub(super) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
        record(v, path);
        fmt::text(v, path)
    }

    pub(super) fn flag(v: &Value, path: &[&str]) -> Option<bool> {
        record(v, path);
        fmt::flag(v, path)
    }

    pub(super) fn show(v: &Value, path: &[&str]) -> String {
        record(v, path);
        fmt::show(v, path)
    }
}
use lookup::{at, flag, num, show, text};

/// How long one fetch may take (connect, send, read).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Events shown by `top`.
const TOP_EVENTS: usize = 5;

const TOP_SPECS: &[Spec] = &[
    Spec {
        name: "--interval",
        value: true,
    },
    Spec {
        name: "--once",
        value: false,
    },
];

const REPORT_SPECS: &[Spec] = &[Spec {
    name: "--format",
    value: true,
}];

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `leakguard report URL --format text|json|incident`.
pub(crate) fn report_command(rest: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let parsed = args::parse("report", rest, REPORT_SPECS)?;
    if parsed.help {
        return print(out, super::REPORT_HELP);
    }
    let url = args::one_positional("report", &parsed, "URL")?;
    let format = parsed.value("--format").unwrap_or("text");
    if !matches!(format, "text" | "json" | "incident") {
        return Err(CliError::usage(format!(
            "report: --format {format:?}: use text, json or incident"
        )));
    }
    let endpoint = Endpoint::parse(url).map_err(|e| prefix("report", e))?;
    let report = endpoint
        .fetch_report(FETCH_TIMEOUT)
        .map_err(|e| prefix("report", e))?;
    let rendered = match format {
        "json" => {
            serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::io(format!("report: cannot render JSON: {e}")))?
                + "\n"
        }
        "incident" => incident(&report, &endpoint.url()),
        _ => report_text(&report, &endpoint.url()),
    };
    print(out, &rendered)
}

fn prefix(command: &str, e: CliError) -> CliError {
    CliError {
        message: format!("{command}: {}", e.message),
        ..e
    }
}

/// Set by SIGINT/SIGTERM while `top` runs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and stays
        // valid for the life of the process.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// `leakguard top URL [--interval D] [--once]`.
pub(crate) fn top_command(rest: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let parsed = args::parse("top", rest, TOP_SPECS)?;
    if parsed.help {
        return print(out, super::TOP_HELP);
    }
    let url = args::one_positional("top", &parsed, "URL")?;
    let interval = match parsed.value("--interval") {
        Some(v) => crate::units::parse_duration("--interval", v)
            .map_err(|e| CliError::usage(format!("top: {e}")))?,
        None => Duration::from_secs(2),
    };
    if interval < Duration::from_millis(100) {
        return Err(CliError::usage("top: --interval must be at least 100ms"));
    }
    let endpoint = Endpoint::parse(url).map_err(|e| prefix("top", e))?;
    let source = endpoint.base();
    if parsed.flag("--once") {
        let report = endpoint
            .fetch_report(FETCH_TIMEOUT)
            .map_err(|e| prefix("top", e))?;
        return print(out, &frame(&report, &source, now_unix(), false));
    }

    let ansi = std::io::stdout().is_terminal();
    let color = ansi && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    install_stop_handlers();
    if ansi {
        // Hide the cursor while the screen refreshes.
        print(out, "\x1b[?25l")?;
    }
    let result = top_loop(&endpoint, &source, interval, ansi, color, out);
    if ansi {
        let _ = print(out, "\x1b[?25h");
    }
    result
}

fn top_loop(
    endpoint: &Endpoint,
    source: &str,
    interval: Duration,
    ansi: bool,
    color: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut last_good: Option<(Value, f64)> = None;
    while !STOP.load(Ordering::SeqCst) {
        let started = Instant::now();
        let timeout = FETCH_TIMEOUT.min(interval.max(Duration::from_secs(1)));
        let body = match endpoint.fetch_report(timeout) {
            Ok(report) => {
                let f = frame(&report, source, now_unix(), color);
                last_good = Some((report, now_unix()));
                f
            }
            Err(e) => {
                let mut f = format!(
                    "leakguard top: {source} is not answering: {} — retrying every {}\n",
                    e.one_line(),
                    span(interval.as_secs_f64())
                );
                if let Some((report, at)) = &last_good {
                    f.push_str(&format!("last report, fetched at {}:\n\n", iso(*at)));
                    f.push_str(&frame(report, source, now_unix(), color));
                }
                f
            }
        };
        let screen = if ansi {
            // Home, clear, redraw.
            format!("\x1b[H\x1b[2J{body}")
        } else {
            format!("{body}\n")
        };
        print(out, &screen)?;
        while !STOP.load(Ordering::SeqCst) && started.elapsed() < interval {
            std::thread::sleep(Duration::from_millis(25).min(interval));
        }
    }
    if ansi {
        print(out, "\n")?;
    }
    Ok(())
}

/// The allocator statistics in the order the report's docs give them.
const ALLOCATOR_ORDER: &[&str] = &[
    "allocated",
    "active",
    "resident",
    "mapped",
    "retained",
    "metadata",
    "free",
];
/// Open fds by type, most telling first.
const FD_ORDER: &[&str] = &["socket", "file", "pipe", "anon_inode", "other"];

/// The entries of `map`: those named in `order` first, in that order, then the rest.
fn in_order<'a>(
    map: &'a serde_json::Map<String, Value>,
    order: &[&str],
) -> Vec<(&'a String, &'a Value)> {
    let mut out: Vec<(&String, &Value)> =
        order.iter().filter_map(|k| map.get_key_value(*k)).collect();
    out.extend(map.iter().filter(|(k, _)| !order.contains(&k.as_str())));
    out
}

/// Colors a word when `color` is on.
fn paint(word: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_owned()
    }
}

fn state_color(state: &str) -> &'static str {
    match state {
        "normal" => "32",
        "warn" => "33;1",
        _ => "31;1",
    }
}

/// A usage bar: `#` up to `ratio`, `|` at each threshold.
fn bar(ratio: f64, marks: &[f64], width: usize) -> String {
    let filled = ((ratio.clamp(0.0, 1.0)) * width as f64).round() as usize;
    let mut cells: Vec<char> = (0..width)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    for m in marks {
        if (0.0..1.0).contains(m) {
            let i = ((m * width as f64).floor() as usize).min(width - 1);
            cells[i] = '|';
        }
    }
    let mut s = String::with_capacity(width + 3);
    s.push('[');
    s.extend(cells);
    s.push(']');
    if ratio > 1.0 {
        s.push('>');
    }
    s
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn opt_bytes(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), bytes)
}

/// The leak verdict in one line: `SUSPECTED, severity critical, since 12:01:03Z (4 min ago);
/// OOM in 2 min`.
fn leak_line(r: &Value, now: f64, color: bool) -> String {
    if at(r, &["leak"]).is_none() {
        return "not in this report (a guard without the leak detector)".into();
    }
    if flag(r, &["leak", "warming_up"]) == Some(true) {
        return match text(r, &["leak", "reason"]) {
            Some(reason) if reason != "warming up" => {
                format!("not yet judged: warming up ({reason})")
            }
            _ => "not yet judged: warming up".into(),
        };
    }
    if flag(r, &["leak", "suspected"]) != Some(true) {
        return "none suspected".into();
    }
    let mut s = format!(
        "{}, severity {}",
        paint("SUSPECTED", "31;1", color),
        show(r, &["leak", "severity"])
    );
    if let Some(t) = num(r, &["leak", "first_suspected_at"]) {
        s.push_str(&format!(", since {} ({} ago)", clock(t), span(now - t)));
    }
    match num(r, &["leak", "oom_eta_seconds"]) {
        Some(eta) if eta <= 0.0 => s.push_str("; at the limit now"),
        Some(eta) => s.push_str(&format!("; OOM in {} at this rate", span(eta))),
        None => {}
    }
    s
}

/// One screen of `top`.
pub(crate) fn frame(r: &Value, source: &str, now: f64, color: bool) -> String {
    let mut s = format!(
        "leakguard {} at {}   up {}   {}\n",
        show(r, &["version"]),
        source,
        num(r, &["uptime_seconds"]).map_or_else(|| "-".into(), span),
        num(r, &["generated_at"]).map_or_else(|| "-".into(), iso),
    );
    // Times are relative to the report's own time, so a slow fetch does not skew them.
    let now = num(r, &["generated_at"]).unwrap_or(now);
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<9}{v}\n"));
    let state = text(r, &["state"]).unwrap_or("-");
    let restarts = num(r, &["restart", "restarts_total"]).unwrap_or(0.0);
    row(
        "state",
        format!(
            "{}   ready {}   restarts {restarts}{}",
            paint(&state.to_uppercase(), state_color(state), color),
            yes_no(flag(r, &["ready"])),
            if flag(r, &["restart", "in_progress"]) == Some(true) {
                "   RESTART IN PROGRESS"
            } else {
                ""
            }
        ),
    );
    let resident = num(r, &["memory", "resident_bytes"]);
    match (resident, num(r, &["limit", "bytes"])) {
        (Some(res), Some(limit)) if limit > 0.0 => {
            let marks: Vec<f64> = ["warn_bytes", "critical_bytes", "restart_bytes"]
                .iter()
                .filter_map(|k| num(r, &["limit", k]))
                .map(|b| b / limit)
                .collect();
            row(
                "usage",
                format!(
                    "{} {} / {} ({})",
                    bar(res / limit, &marks, 40),
                    bytes(res),
                    bytes(limit),
                    percent(res / limit)
                ),
            );
            row(
                "",
                format!(
                    "warn {}   critical {}   restart {}   (limit from {})",
                    opt_bytes(num(r, &["limit", "warn_bytes"])),
                    opt_bytes(num(r, &["limit", "critical_bytes"])),
                    opt_bytes(num(r, &["limit", "restart_bytes"])),
                    show(r, &["limit", "source"])
                ),
            );
        }
        (res, _) => row(
            "usage",
            format!(
                "{} resident; no limit known, thresholds inactive",
                opt_bytes(res)
            ),
        ),
    }
    let mut heap = format!(
        "{} live ({})",
        opt_bytes(num(r, &["memory", "heap_bytes"])),
        show(r, &["allocator", "kind"])
    );
    if let Some(retained) = num(r, &["allocator", "stats", "retained"]) {
        heap.push_str(&format!(", retained {}", bytes(retained)));
    }
    row("heap", heap);
    if let Some(rate) = num(r, &["leak", "growth_bytes_per_second"]) {
        row(
            "growth",
            format!(
                "{} memory floor{}, confidence {:.0}%",
                mb_per_hour(rate),
                num(r, &["leak", "horizon_seconds"])
                    .map(|h| format!(" over the last {}", span(h)))
                    .unwrap_or_default(),
                num(r, &["leak", "confidence"]).unwrap_or(0.0) * 100.0
            ),
        );
    } else {
        row("growth", "- (not enough data yet)".into());
    }
    row("leak", leak_line(r, now, color));
    if flag(r, &["leak", "suspected"]) == Some(true) {
        row("", show(r, &["leak", "reason"]));
    }
    if let Some(summary) = text(r, &["leak", "attribution", "summary"]) {
        row("cause", summary.to_owned());
    }
    if at(r, &["process"]).is_some() {
        let mut fds = format!("fds {}", show(r, &["process", "open_fds"]));
        if let Some(max) = num(r, &["process", "max_fds"]) {
            fds.push_str(&format!("/{max}"));
        }
        if let Some(by) = at(r, &["process", "fds_by_type"]).and_then(Value::as_object) {
            let parts: Vec<String> = in_order(by, FD_ORDER)
                .into_iter()
                .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !parts.is_empty() {
                fds.push_str(&format!(" ({})", parts.join(", ")));
            }
        }
        row(
            "process",
            format!(
                "threads {}   {fds}   peak {}   swap {}",
                show(r, &["process", "threads"]),
                opt_bytes(num(r, &["process", "peak_resident_bytes"])),
                opt_bytes(num(r, &["process", "swap_bytes"])),
            ),
        );
    }
    row(
        "sampler",
        format!(
            "every {}, {} samples, {} errors, {} panics{}",
            num(r, &["sampler", "interval_seconds"]).map_or_else(|| "-".into(), span),
            show(r, &["sampler", "samples"]),
            show(r, &["sampler", "sample_errors"]),
            show(r, &["sampler", "panics"]),
            num(r, &["sampler", "last_duration_us"])
                .map(|us| format!("; the last took {us:.0} µs"))
                .unwrap_or_default()
        ),
    );
    let events = at(r, &["events"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        row("events", "none".into());
    } else {
        row(
            "events",
            format!(
                "last {} of {} (oldest first)",
                events.len().min(TOP_EVENTS),
                events.len()
            ),
        );
        for e in &events[events.len().saturating_sub(TOP_EVENTS)..] {
            row("", event_line(e));
        }
    }
    s
}

fn event_line(e: &Value) -> String {
    format!(
        "{} {:<5} {}",
        num(e, &["unix_seconds"]).map_or_else(|| "-".into(), clock),
        show(e, &["level"]),
        show(e, &["message"])
    )
}

/// The `text` format: one section per part of the report.
pub(crate) fn report_text(r: &Value, url: &str) -> String {
    let mut s = format!(
        "leakguard report from {url}\n  generated {} by leakguard {}; the guard has been up {} (since {})\n",
        num(r, &["generated_at"]).map_or_else(|| "-".into(), iso),
        show(r, &["version"]),
        num(r, &["uptime_seconds"]).map_or_else(|| "-".into(), span),
        num(r, &["started_at"]).map_or_else(|| "-".into(), iso),
    );
    fn section(s: &mut String, title: &str) {
        s.push('\n');
        s.push_str(title);
        s.push('\n');
    }
    fn row(s: &mut String, k: &str, v: String) {
        s.push_str(&format!("  {k:<16} {v}\n"));
    }

    section(&mut s, "State");
    row(
        &mut s,
        "memory state",
        format!(
            "{} (ready: {})",
            show(r, &["state"]),
            yes_no(flag(r, &["ready"]))
        ),
    );
    row(
        &mut s,
        "restarts",
        format!(
            "{} performed{}",
            show(r, &["restart", "restarts_total"]),
            if flag(r, &["restart", "in_progress"]) == Some(true) {
                ", one in progress"
            } else {
                ", none in progress"
            }
        ),
    );

    section(&mut s, "Memory");
    row(
        &mut s,
        "resident",
        format!(
            "{}{}",
            opt_bytes(num(r, &["memory", "resident_bytes"])),
            num(r, &["memory", "usage_ratio"])
                .map(|u| format!(" ({} of the limit)", percent(u)))
                .unwrap_or_default()
        ),
    );
    row(
        &mut s,
        "live heap",
        opt_bytes(num(r, &["memory", "heap_bytes"])),
    );

    section(&mut s, "Limit");
    if let Some(limit) = num(r, &["limit", "bytes"]) {
        row(
            &mut s,
            "limit",
            format!("{} (from {})", bytes(limit), show(r, &["limit", "source"])),
        );
        let t = |k: &str, f: &str| {
            format!(
                "{} {}{}",
                k,
                opt_bytes(num(r, &["limit", &format!("{k}_bytes")])),
                num(r, &["thresholds", f])
                    .map(|x| format!(" ({})", percent(x)))
                    .unwrap_or_default()
            )
        };
        row(
            &mut s,
            "thresholds",
            format!(
                "{}, {}, {}",
                t("warn", "warn"),
                t("critical", "critical"),
                t("restart", "restart")
            ),
        );
    } else {
        row(
            &mut s,
            "limit",
            "none known: the thresholds are inactive".into(),
        );
    }
    if at(r, &["thresholds"]).is_some() {
        row(
            &mut s,
            "confirmation",
            format!(
                "{} consecutive samples; hysteresis {}",
                show(r, &["thresholds", "consecutive_samples"]),
                num(r, &["thresholds", "hysteresis"]).map_or_else(|| "-".into(), percent)
            ),
        );
    }

    section(&mut s, "Leak detector");
    let now = num(r, &["generated_at"]).unwrap_or_else(now_unix);
    row(&mut s, "verdict", leak_line(r, now, false));
    if let Some(rate) = num(r, &["leak", "growth_bytes_per_second"]) {
        row(
            &mut s,
            "growth",
            format!(
                "{} (memory floor{}), confidence {:.0}%",
                mb_per_hour(rate),
                num(r, &["leak", "horizon_seconds"])
                    .map(|h| format!(" over the last {}", span(h)))
                    .unwrap_or_default(),
                num(r, &["leak", "confidence"]).unwrap_or(0.0) * 100.0
            ),
        );
    }
    if let Some(t) = num(r, &["leak", "first_suspected_at"]) {
        row(&mut s, "first suspected", iso(t));
    }
    if let Some(eta) = num(r, &["leak", "oom_eta_seconds"]) {
        row(
            &mut s,
            "OOM ETA",
            format!("{} (at {})", span(eta.max(0.0)), iso(now + eta.max(0.0))),
        );
    }
    row(&mut s, "reason", show(r, &["leak", "reason"]));
    if let Some(a) = at(r, &["leak", "attribution"]) {
        row(&mut s, "since baseline", show(a, &["summary"]));
        if let Some(since) = num(a, &["since"]) {
            row(&mut s, "baseline at", iso(since));
        }
        let parts: Vec<String> = [
            ("resident", "resident_delta"),
            ("live heap", "heap_delta"),
            ("retention", "retention_delta"),
        ]
        .iter()
        .filter_map(|(k, f)| num(a, &[f]).map(|v| format!("{k} {}", signed_bytes(v))))
        .collect();
        if !parts.is_empty() {
            row(&mut s, "growth by kind", parts.join(", "));
        }
        for (title, key, unit_bytes) in [
            ("caches grew", "caches", true),
            ("handles grew", "handles", false),
        ] {
            let list: Vec<String> = at(a, &[key])
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .map(|g| {
                            let d = num(g, &["delta"]).unwrap_or(0.0);
                            format!(
                                "{} {}",
                                show(g, &["name"]),
                                if unit_bytes {
                                    signed_bytes(d)
                                } else {
                                    format!("{d:+}")
                                }
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !list.is_empty() {
                row(&mut s, title, list.join(", "));
            }
        }
    }

    section(&mut s, "Allocator");
    row(
        &mut s,
        "kind",
        format!(
            "{} (jemalloc linked: {})",
            show(r, &["allocator", "kind"]),
            yes_no(flag(r, &["allocator", "jemalloc_linked"]))
        ),
    );
    if let Some(note) = text(r, &["allocator", "note"]) {
        row(&mut s, "note", note.to_owned());
    }
    if let Some(stats) = at(r, &["allocator", "stats"]).and_then(Value::as_object) {
        let parts: Vec<String> = in_order(stats, ALLOCATOR_ORDER)
            .into_iter()
            .filter_map(|(k, v)| v.as_f64().map(|b| format!("{k} {}", bytes(b))))
            .collect();
        row(&mut s, "statistics", parts.join(", "));
    }

    section(&mut s, "Process");
    if at(r, &["process"]).is_some() {
        let p = |k: &str| opt_bytes(num(r, &["process", k]));
        row(
            &mut s,
            "memory",
            format!(
                "resident {}, virtual {}, peak {}, swap {}",
                p("resident_bytes"),
                p("virtual_bytes"),
                p("peak_resident_bytes"),
                p("swap_bytes")
            ),
        );
        row(&mut s, "threads", show(r, &["process", "threads"]));
        let mut fds = format!(
            "{} open, limit {}",
            show(r, &["process", "open_fds"]),
            show(r, &["process", "max_fds"])
        );
        if let Some(by) = at(r, &["process", "fds_by_type"]).and_then(Value::as_object) {
            let parts: Vec<String> = in_order(by, FD_ORDER)
                .into_iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            fds.push_str(&format!(" ({})", parts.join(", ")));
        }
        row(&mut s, "fds", fds);
        if let Some(t) = num(r, &["process", "start_time_seconds"]) {
            row(&mut s, "started", iso(t));
        }
    } else {
        row(&mut s, "process", "no sample yet".into());
    }

    section(&mut s, "Cgroup");
    if at(r, &["cgroup"]).is_some() {
        row(
            &mut s,
            "cgroup",
            format!(
                "{} {}",
                show(r, &["cgroup", "version"]),
                show(r, &["cgroup", "path"])
            ),
        );
        row(
            &mut s,
            "limit",
            match num(r, &["cgroup", "limit_bytes"]) {
                Some(l) => format!("{} ({})", bytes(l), show(r, &["cgroup", "limit_source"])),
                None => "none".into(),
            },
        );
        row(
            &mut s,
            "usage",
            format!(
                "current {}, high {}, OOM kills {}",
                opt_bytes(num(r, &["cgroup", "current_bytes"])),
                opt_bytes(num(r, &["cgroup", "high_bytes"])),
                show(r, &["cgroup", "oom_kills"])
            ),
        );
    } else {
        row(&mut s, "cgroup", "none found".into());
    }

    section(&mut s, "Sampler");
    row(
        &mut s,
        "sampling",
        format!(
            "every {}; {} samples, {} with errors, {} panics caught",
            num(r, &["sampler", "interval_seconds"]).map_or_else(|| "-".into(), span),
            show(r, &["sampler", "samples"]),
            show(r, &["sampler", "sample_errors"]),
            show(r, &["sampler", "panics"])
        ),
    );
    if let Some(us) = num(r, &["sampler", "last_duration_us"]) {
        row(
            &mut s,
            "last sample",
            format!(
                "took {us:.0} µs, at {}",
                num(r, &["sampler", "last_sample_at"]).map_or_else(|| "-".into(), iso)
            ),
        );
    }
    if let Some(errors) = at(r, &["sampler", "errors"]).and_then(Value::as_array)
        && !errors.is_empty()
    {
        let list: Vec<String> = errors
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect();
        row(&mut s, "failing sources", list.join("; "));
    }
    row(&mut s, "endpoint", show(r, &["endpoint"]));

    let events = at(r, &["events"])
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    section(&mut s, &format!("Events ({}, oldest first)", events.len()));
    if events.is_empty() {
        s.push_str("  none\n");
    }
    for e in events {
        s.push_str(&format!(
            "  {} {:<5} {:<18} {}\n",
            num(e, &["unix_seconds"]).map_or_else(|| "-".into(), iso),
            show(e, &["level"]),
            show(e, &["kind"]),
            show(e, &["message"])
        ));
    }

    // Sections this CLI does not know yet (a newer guard) are shown flattened, and so are the
    // handles and caches, which have no section of their own above.
    let flattened =
        |k: &str| !crate::report::REPORT_KEYS.contains(&k) || matches!(k, "handles" | "caches");
    if let Some(obj) = r.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| flattened(k)) {
            section(&mut s, &title_case(k));
            let mut lines = Vec::new();
            flatten("", v, &mut lines);
            let total = lines.len();
            for (path, value) in lines.into_iter().take(30) {
                row(&mut s, if path.is_empty() { k } else { &path }, value);
            }
            if total > 30 {
                s.push_str(&format!("  ... {} more\n", total - 30));
            }
        }
    }
    s
}

fn title_case(k: &str) -> String {
    let mut c = k.replace('_', " ");
    if let Some(first) = c.get(..1) {
        let up = first.to_uppercase();
        c.replace_range(..1, &up);
    }
    c
}

fn flatten(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), x, out);
            }
        }
        Value::String(s) => out.push((path.to_owned(), s.clone())),
        other => out.push((path.to_owned(), other.to_string())),
    }
}

/// The action for the guard's state, as the runbook's on-call would take it.
fn action(r: &Value) -> String {
    let state = text(r, &["state"]).unwrap_or("normal");
    let leak = flag(r, &["leak", "suspected"]) == Some(true);
    let restarts = num(r, &["restart", "restarts_total"]).unwrap_or(0.0);
    let in_progress =
        flag(r, &["restart", "in_progress"]) == Some(true) || flag(r, &["ready"]) == Some(false);
    let mut a = if in_progress {
        "graceful restart in progress: readiness is 503 while in-flight work drains, then the process restarts in place".to_owned()
    } else {
        match state {
            "restart" => "restart threshold reached: graceful restart performed or imminent (readiness turns 503, drain, restart in place)".to_owned(),
            "critical" => "mitigating: purge allocator memory (POST /debug/leakguard/purge), shrink or clear the growing caches, prepare a graceful restart".to_owned(),
            "warn" => "investigating: capture a heap profile (GET /debug/pprof/heap), check the growing caches and handles; no restart yet".to_owned(),
            _ if leak => "investigating: capture a heap profile (GET /debug/pprof/heap) and compare it with the growth above; usage is still under the thresholds, no restart needed yet".to_owned(),
            _ => "none needed: monitoring (usage under the thresholds, no sustained growth)".to_owned(),
        }
    };
    let n = restarts as u64;
    a.push_str(&format!(
        "; {n} graceful restart{} performed so far",
        if n == 1 { "" } else { "s" }
    ));
    a
}

fn status_word(r: &Value) -> &'static str {
    let in_progress =
        flag(r, &["restart", "in_progress"]) == Some(true) || flag(r, &["ready"]) == Some(false);
    match (in_progress, text(r, &["state"]).unwrap_or("normal")) {
        (true, _) | (_, "restart") => "RESTARTING",
        (_, "critical") => "MITIGATING",
        (_, "warn") => "INVESTIGATING",
        _ if flag(r, &["leak", "suspected"]) == Some(true) => "INVESTIGATING",
        _ => "MONITORING",
    }
}

/// The runbook's cause categories (connection leak, cache growth, ...) as far as the
/// attribution tells them apart.
fn cause_category(a: &Value) -> Option<String> {
    let heap = num(a, &["heap_delta"]);
    let retention = num(a, &["retention_delta"]);
    let growth = |key: &str| -> Option<(String, f64)> {
        let g = at(a, &[key]).and_then(Value::as_array)?.first()?;
        Some((show(g, &["name"]), num(g, &["delta"])?))
    };
    let mut parts = Vec::new();
    match (growth("caches"), heap) {
        (Some((name, d)), Some(h)) if h > 0.0 && d >= 0.5 * h => parts.push(format!(
            "cache growth (cache `{name}` {} of {} live heap)",
            signed_bytes(d),
            signed_bytes(h)
        )),
        (_, Some(h)) if h > 0.0 && retention.is_none_or(|r| h >= r) => parts.push(format!(
            "live heap growth outside the named caches ({})",
            signed_bytes(h)
        )),
        _ => {}
    }
    if let Some(r) = retention
        && r > 0.0
        && heap.is_none_or(|h| r > h)
    {
        parts.push(format!(
            "allocator retention / fragmentation ({}): a purge returns it, it is not live heap",
            signed_bytes(r)
        ));
    }
    if let Some((kind, d)) = growth("handles") {
        parts.push(format!("handle leak? `{kind}` handles {d:+} open"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The `incident` format: the runbook's "memory leak update" for the on-call channel.
pub(crate) fn incident(r: &Value, url: &str) -> String {
    let resident = num(r, &["memory", "resident_bytes"]);
    let limit = num(r, &["limit", "bytes"]);
    let mut usage = opt_bytes(resident);
    match (resident, limit) {
        (Some(res), Some(l)) if l > 0.0 => {
            usage.push_str(&format!(" (limit: {}, {})", bytes(l), percent(res / l)));
        }
        _ => usage.push_str(" (limit: none known)"),
    }
    let attribution = at(r, &["leak", "attribution"]);
    if let (Some(res), Some(a)) = (resident, attribution)
        && let Some(delta) = num(a, &["resident_delta"])
    {
        usage.push_str(&format!(
            " (was {} at baseline, {})",
            bytes(res - delta),
            num(a, &["since"]).map_or_else(|| "-".into(), iso)
        ));
    }

    let suspected = flag(r, &["leak", "suspected"]) == Some(true);
    let growth = match num(r, &["leak", "growth_bytes_per_second"]) {
        Some(rate) => {
            let mut g = format!("{:+.1} MB/hour", rate / crate::trend::MB_PER_HOUR);
            if suspected {
                g.push_str(&format!(
                    " (leak suspected, severity {}, confidence {:.0}%",
                    show(r, &["leak", "severity"]),
                    num(r, &["leak", "confidence"]).unwrap_or(0.0) * 100.0
                ));
                if let Some(eta) = num(r, &["leak", "oom_eta_seconds"]) {
                    g.push_str(&format!("; OOM in {} at this rate", span(eta.max(0.0))));
                }
                g.push(')');
            } else {
                g.push_str(" (no sustained growth)");
            }
            g
        }
        None => "unknown yet (the leak detector is warming up)".into(),
    };

    let reason = show(r, &["leak", "reason"]);
    let warming_up = flag(r, &["leak", "warming_up"]) == Some(true);
    let cause = match (suspected, attribution.and_then(|a| text(a, &["summary"]))) {
        (false, _) if warming_up => {
            "not known yet: the leak detector is warming up (it needs 6 minutes of samples near the limit, up to about 50 minutes otherwise)"
                .to_owned()
        }
        (true, Some(summary)) => match attribution.and_then(cause_category) {
            Some(category) => format!("suspected: {category}. {summary}; {reason}"),
            None => format!("suspected: {summary}; {reason}"),
        },
        (true, None) => format!("suspected: {reason}"),
        (false, Some(summary)) => format!("no leak suspected ({reason}); {summary}"),
        (false, None) => format!("no leak suspected ({reason})"),
    };

    format!(
        "📊 MEMORY LEAK UPDATE\n\
         Status: {status}, memory state {state}\n\
         Current Usage: {usage}\n\
         Growth Rate: {growth}\n\
         Root Cause: {cause}\n\
         Action: {action}\n\
         Fix: [to fill in: code change / configuration]\n\
         Testing: [to fill in]\n\
         Source: leakguard {version} report of {when} from {url}\n",
        status = status_word(r),
        state = show(r, &["state"]),
        action = action(r),
        version = show(r, &["version"]),
        when = num(r, &["generated_at"]).map_or_else(|| "-".into(), iso),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;

    /// Paths the view reads that a report may lack, each with why. Reports of older guards may
    /// lack more; the view shows `-` for any missing field.
    const OPTIONAL: &[(&str, &str)] = &[];

    /// A report from a running guard whose sampler reads fixture trees (a process whose memory
    /// floor grows 60 MB/h under a saw-tooth, in a v2 cgroup), after enough samples to fill every
    /// section: the warm-up over, a leak suspected, growth attributed to a cache and to a kind
    /// of handle.
    fn real_report() -> Value {
        use crate::allocator::{Allocator, AllocatorChoice};
        use crate::cgroup::CgroupReader;
        use crate::process::ProcReader;
        use crate::sample::Sampler;
        use crate::{Guard, ManualClock};

        let dir = tempfile::tempdir().unwrap();
        let file = |path: &str, content: &str| {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        };
        file(
            "proc/self/status",
            "Name:\tsvc\nVmHWM:\t    2048 kB\nVmSwap:\t       0 kB\nThreads:\t4\n",
        );
        file(
            "proc/self/stat",
            "42 (svc) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 4 0 100 0 0\n",
        );
        file(
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max open files            1024                 4096                 files     \n",
        );
        file("proc/stat", "btime 1700000000\n");
        fs::create_dir_all(dir.path().join("proc/self/fd")).unwrap();
        file("proc/self/cgroup", "0::/\n");
        file(
            "proc/self/mountinfo",
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n",
        );
        file("sys/fs/cgroup/memory.max", "4294967296\n");
        file("sys/fs/cgroup/memory.high", "max\n");
        file("sys/fs/cgroup/memory.current", "400000000\n");
        file(
            "sys/fs/cgroup/memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        );
        // SAFETY: sysconf only reads a configuration value.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let set_rss = |bytes: f64| {
            let pages = bytes as u64 / page;
            file(
                "proc/self/statm",
                &format!("{} {pages} 0 0 0 0 0\n", pages * 2),
            );
        };
        set_rss(300e6);

        let clock = ManualClock::new(1_700_000_000.0);
        let guard = Guard::builder()
            .ignore_env()
            .no_endpoint()
            .background(false)
            .record_metrics(false)
            .limit(2_000_000_000)
            .clock(std::sync::Arc::new(clock.clone()))
            .sampler(Sampler::with_readers(
                ProcReader::with_root(dir.path().join("proc")),
                Some(CgroupReader::with_root(dir.path())),
                Allocator::new(AllocatorChoice::Auto),
            ))
            .start()
            .unwrap();
        let cache: crate::cache::LruCache<u32, u64> = crate::cache::LruCache::builder(10_000)
            .name("view-paths")
            .build();
        let mut handles = Vec::new();
        let step = 15.0;
        let mut t = 0.0;
        let mut ticks = 0u32;
        // (The report is looked at every 5 minutes of samples: making it is the slow part.)
        while t < 3.0 * 3600.0 && (!ticks.is_multiple_of(20) || !guard.report().leak.suspected) {
            ticks += 1;
            set_rss(300e6 + 60e6 * t / 3600.0 + 40e6 * ((t % 180.0) / 180.0));
            clock.advance(Duration::from_secs_f64(step));
            t += step;
            guard.tick();
            if t > 1200.0 && handles.len() < 3 {
                // After the baseline: growth for the attribution to name.
                handles.push(crate::track("view_paths"));
                for i in 0..100 {
                    cache.insert(handles.len() as u32 * 1000 + i, 0);
                }
            }
        }
        let report = guard.report();
        assert!(
            report.leak.suspected,
            "never suspected: {}",
            report.leak.reason
        );
        serde_json::from_str(&guard.report_json()).unwrap()
    }

    /// The path of every value inside `v`, by address; array elements as `[]`.
    fn paths_by_address(v: &Value, path: &str, out: &mut BTreeMap<usize, String>) {
        out.insert(std::ptr::from_ref(v) as usize, path.to_owned());
        let join = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| paths_by_address(x, &join(k), out)),
            Value::Array(a) => a.iter().for_each(|x| paths_by_address(x, &join("[]"), out)),
            _ => {}
        }
    }

    /// The paths of the report (`r`) written out in this file's code: `num(r, &["a", "b"])`.
    fn literal_paths_from_the_root() -> BTreeSet<String> {
        let source = include_str!("view.rs");
        let code = source
            .split("#[cfg(test)]\n#[allow(clippy::unwrap_used)]")
            .next()
            .unwrap();
        let mut found = BTreeSet::new();
        let opener = concat!("(r", ", &[");
        for piece in code.split(opener).skip(1) {
            let inside = piece.split(']').next().unwrap();
            let keys: Vec<&str> = inside.split(',').map(str::trim).collect();
            if keys
                .iter()
                .all(|k| k.len() >= 2 && k.starts_with('"') && k.ends_with('"'))
            {
                let keys: Vec<&str> = keys.iter().map(|k| &k[1..k.len() - 1]).collect();
                found.insert(keys.join("."));
            }
        }
        found
    }

    #[test]
    fn every_path_the_view_reads_is_in_a_real_report() {
        let report = real_report();
        let mut addresses = BTreeMap::new();
        paths_by_address(&report, "", &mut addresses);

        lookup::READS.with(|r| *r.borrow_mut() = Some(Vec::new()));
        let url = "http://127.0.0.1:1/debug/leakguard";
        frame(&report, url, 1_700_000_000.0, true);
        report_text(&report, url);
        incident(&report, url);
        let reads = lookup::READS.with(|r| r.borrow_mut().take()).unwrap();

        // Each lookup as a path from the report's root: `show(a, &["summary"])` with `a` the
        // attribution is `leak.attribution.summary`.
        let mut read = BTreeSet::new();
        for (address, keys) in &reads {
            let mut full = addresses
                .get(address)
                .unwrap_or_else(|| panic!("{keys:?} was read in a value outside the report"))
                .clone();
            for k in keys {
                if !full.is_empty() {
                    full.push('.');
                }
                full.push_str(k);
            }
            read.insert(full);
        }
        // Check each read path against the real report's keys (arrays: any element).
        fn has(v: &Value, keys: &[&str]) -> bool {
            match keys.split_first() {
                None => true,
                Some((&"[]", rest)) => v.as_array().is_some_and(|a| a.iter().any(|x| has(x, rest))),
                Some((k, rest)) => v.get(*k).is_some_and(|x| has(x, rest)),
            }
        }
        let mut missing = BTreeSet::new();
        for path in &read {
            let keys: Vec<&str> = path.split('.').collect();
            if !has(&report, &keys) {
                missing.insert(path.clone());
            }
        }
        let optional: BTreeSet<String> = OPTIONAL.iter().map(|(p, _)| (*p).to_owned()).collect();
        let unexplained: Vec<&String> = missing.difference(&optional).collect();
        assert!(
            unexplained.is_empty(),
            "the view reads fields a real report does not have (renamed? then rename them in \
             the view too; optional? then list them in OPTIONAL with why): {unexplained:#?}\n\
             the report: {report:#}"
        );
        let stale: Vec<&String> = optional.difference(&read).collect();
        assert!(
            stale.is_empty(),
            "listed as optional but never read: {stale:?}"
        );
        let unexercised: Vec<String> = literal_paths_from_the_root()
            .into_iter()
            .filter(|p| !read.contains(p))
            .collect();
        assert!(
            unexercised.is_empty(),
            "paths written in the view that this test's report never made it read: {unexercised:?}"
        );
        // The relative reads were resolved: inside the attribution and the events.
        for path in [
            "leak.attribution.summary",
            "leak.attribution.caches.[].name",
            "events.[].message",
        ] {
            assert!(read.contains(path), "{path} not read: {read:#?}");
        }
    }

    #[test]
    fn an_older_report_with_fields_missing_still_renders() {
        let url = "http://127.0.0.1:1/debug/leakguard";
        let old = serde_json::json!({"version": "0.0.9", "state": "warn", "ready": true});
        let screen = frame(&old, url, 1_700_000_000.0, false);
        assert!(screen.starts_with("leakguard 0.0.9 at "), "{screen}");
        assert!(
            screen.contains("usage    - resident; no limit known"),
            "{screen}"
        );
        assert!(screen.contains("leak     not in this report"), "{screen}");
        let text = report_text(&old, url);
        assert!(
            text.contains("memory state     warn (ready: yes)"),
            "{text}"
        );
        assert!(text.contains("process          no sample yet"), "{text}");
        let update = incident(&old, url);
        assert!(
            update.contains("Status: INVESTIGATING, memory state warn"),
            "{update}"
        );
        assert!(update.contains("Growth Rate: unknown yet"), "{update}");
        for empty in [serde_json::json!({}), Value::Null] {
            assert!(frame(&empty, url, 0.0, false).starts_with("leakguard - at "));
            assert!(report_text(&empty, url).contains("generated - by leakguard -"));
            assert!(incident(&empty, url).contains("Status: MONITORING"));
        }
    }

    #[test]
    fn bar_fills_to_the_ratio_and_marks_thresholds() {
        assert_eq!(bar(0.5, &[0.8], 10), "[#####...|.]");
        assert_eq!(bar(1.2, &[], 4), "[####]>");
    }

    #[test]
    fn incident_derives_the_action_from_the_state() {
        let report = serde_json::json!({
            "version": "0.1.0", "generated_at": 1_700_000_000.0, "state": "critical",
            "ready": true,
            "memory": {"resident_bytes": 241_172_480u64},
            "limit": {"bytes": 268_435_456u64},
            "leak": {"suspected": true, "severity": "critical", "confidence": 0.99,
                     "growth_bytes_per_second": 2_000_000.0, "oom_eta_seconds": 13.6,
                     "reason": "the memory floor rose 7200.0 MB/h over the last 31 min",
                     "attribution": {"since": 1_699_999_000.0, "resident_delta": 200_000_000,
                                     "summary": "RSS +190.7 MiB since baseline"}},
            "restart": {"restarts_total": 1, "in_progress": false}
        });
        let text = incident(&report, "http://x:1/debug/leakguard");
        assert!(
            text.contains("Current Usage: 230.0 MiB (limit: 256.0 MiB, 89.8%)"),
            "{text}"
        );
        assert!(text.contains("Growth Rate: +7200.0 MB/hour (leak suspected, severity critical"));
        assert!(
            text.contains("Root Cause: suspected: RSS +190.7 MiB since baseline"),
            "{text}"
        );
        assert!(text.contains("Action: mitigating: purge"));
        assert!(text.contains("1 graceful restart performed so far"));
        assert!(text.contains("Status: MITIGATING"));
    }
}
