//! `leakguard analyze --prometheus URL --query PROMQL`: a fleet scan. Fetches the query's
//! series from Prometheus' `/api/v1/query_range` (in chunks of at most [`MAX_POINTS`] steps,
//! Prometheus' own limit per series and request), stitches the chunks, replays every series
//! through the detector as `analyze FILE` does, and prints one row per series, the most urgent
//! first.
//!
//! Every failure (bad arguments, an unreachable server, an error answer, a bad query) is one
//! line on stderr and exit code 2.
//!
//! | bound | value | memory at the bound |
//! | --- | --- | --- |
//! | one answer | [`MAX_ANSWER`], 256 MiB | the body, and while it is parsed 24 bytes a sample (time and a borrowed value) |
//! | samples over all series | [`input::MAX_SAMPLES`], 10,000,000 | 16 bytes a sample: 160 MB, plus each series' labels once |
//! | steps per request and series | [`MAX_POINTS`], 11,000 | none: it sets the number of requests |
//! | samples per series | [`input::MAX_SAMPLES`] (refused before any request) | |
//! | each request | [`TIMEOUT`], 60 s to connect and between reads | |

use super::analyze::{self, Analysis};
use super::args::{self, Spec};
use super::fmt::{iso, mb_per_hour, span};
use super::http::{Endpoint, first_line};
use super::input::{self, Series};
use super::{CliError, EXIT_USAGE, print};
use crate::clock::{Clock, SystemClock};
use serde::Deserialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

const SPECS: &[Spec] = &[
    Spec {
        name: "--prometheus",
        value: true,
    },
    Spec {
        name: "--query",
        value: true,
    },
    Spec {
        name: "--start",
        value: true,
    },
    Spec {
        name: "--end",
        value: true,
    },
    Spec {
        name: "--step",
        value: true,
    },
    Spec {
        name: "--limit",
        value: true,
    },
    Spec {
        name: "--json",
        value: false,
    },
];

/// Most steps per series in one request: Prometheus refuses a range of more than 11,000
/// steps (`exceeded maximum resolution of 11,000 points per timeseries`); a request of
/// 11,000 points spans 10,999 steps.
pub(crate) const MAX_POINTS: u64 = 11_000;
/// Largest answer accepted from Prometheus, bytes.
const MAX_ANSWER: u64 = 256 << 20;
/// The range when `--start` is not given: the day before `--end`.
const DEFAULT_RANGE: f64 = 86_400.0;
/// The steps `--step` defaults to, finest first: the finest that keeps the range within one
/// request of [`MAX_POINTS`]. 15 s is the most common scrape interval: finer steps would only
/// repeat samples.
const NICE_STEPS: [f64; 13] = [
    15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21_600.0, 43_200.0,
    86_400.0,
];
/// Connect and read timeout of each request (Prometheus' own query timeout is 2 min).
const TIMEOUT: Duration = Duration::from_secs(60);

/// What to fetch: the evaluation times `start`, `start + step`, ... up to `end`, in chunks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Unix seconds of the first step.
    pub start: f64,
    /// Unix seconds the range ends at (the last step is at or before it).
    pub end: f64,
    /// Seconds between steps.
    pub step: f64,
    /// Steps per series over the whole range.
    pub points: u64,
    /// (start, end) of each request, on the steps' grid, contiguous, none longer than
    /// [`MAX_POINTS`] points.
    pub chunks: Vec<(f64, f64)>,
}

impl Plan {
    /// The plan for `--start`, `--end` and `--step` as given, at wall-clock time `now`, with
    /// at most `chunk_points` points per request.
    pub(crate) fn new(
        start: Option<&str>,
        end: Option<&str>,
        step: Option<&str>,
        now: f64,
        chunk_points: u64,
    ) -> Result<Self, CliError> {
        let end = match end {
            Some(e) => parse_time("--end", e)?,
            None => now.floor(),
        };
        let start = match start {
            Some(s) => parse_time("--start", s)?,
            None => end - DEFAULT_RANGE,
        };
        if start >= end {
            return Err(CliError::usage(format!(
                "analyze: --start {} is not before --end {}",
                iso(start),
                iso(end)
            )));
        }
        if start < 0.0 {
            return Err(CliError::usage(format!(
                "analyze: the range starts before 1970 ({start} s): give a later --start"
            )));
        }
        let range = end - start;
        let step = match step {
            Some(s) => {
                let d = crate::parse_duration("--step", s)
                    .map_err(|e| CliError::usage(format!("analyze: {e}")))?;
                let secs = d.as_secs_f64();
                if secs < 0.001 {
                    return Err(CliError::usage(format!(
                        "analyze: --step {s}: must be at least 1ms, e.g. 15s or 1m"
                    )));
                }
                secs
            }
            None => default_step(range),
        };
        // Whole steps that fit into the range, with a little tolerance for decimal steps.
        let points = ((range / step) * (1.0 + 1e-12)).floor() as u64 + 1;
        if points > input::MAX_SAMPLES as u64 {
            return Err(CliError::usage(format!(
                "analyze: {} at a step of {} is {points} samples per series, more than {}: give a coarser --step or a shorter range",
                span(range),
                span(step),
                input::MAX_SAMPLES
            )));
        }
        let chunk_points = chunk_points.max(1);
        let mut chunks = Vec::new();
        let mut first = 0u64;
        while first < points {
            let last = (first + chunk_points).min(points) - 1;
            chunks.push((start + first as f64 * step, start + last as f64 * step));
            first = last + 1;
        }
        Ok(Self {
            start,
            end,
            step,
            points,
            chunks,
        })
    }
}

/// The finest of [`NICE_STEPS`] that keeps `range` within one request.
fn default_step(range: f64) -> f64 {
    let max_steps = (MAX_POINTS - 1) as f64;
    NICE_STEPS
        .iter()
        .copied()
        .find(|s| range / s <= max_steps)
        .unwrap_or_else(|| (range / max_steps).ceil())
}

/// Parses a time: Unix seconds (`1733500000`, `1733500000.5`) or RFC 3339
/// (`2026-12-06T20:00:00Z`, `2026-12-06T21:00:00.5+01:00`).
pub(crate) fn parse_time(name: &str, value: &str) -> Result<f64, CliError> {
    let s = value.trim();
    let bad = |why: &str| {
        CliError::usage(format!(
            "analyze: {name} {value:?}: {why} (give Unix seconds such as 1733500000, or RFC 3339 such as 2026-12-06T20:00:00Z)"
        ))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let t: f64 = s.parse().map_err(|_| bad("not a number"))?;
        if !t.is_finite() {
            return Err(bad("not a finite number"));
        }
        if t > 1e11 {
            return Err(bad("looks like milliseconds"));
        }
        return Ok(t);
    }
    rfc3339(s).ok_or_else(|| bad("not a time"))
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)` as Unix seconds.
fn rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let year = digits(0, 4)?;
    let month = digits(5, 2)?;
    let day = digits(8, 2)?;
    let hour = digits(11, 2)?;
    let minute = digits(14, 2)?;
    let second = digits(17, 2)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut fraction = 0.0;
    if b.get(i) == Some(&b'.') {
        let from = i + 1;
        i = from;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == from {
            return None;
        }
        fraction = format!("0.{}", &s[from..i]).parse().ok()?;
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    Some(secs as f64 + fraction)
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A query parameter, percent-encoded (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prometheus' API answer: `{"status": ..., "data": {...}}` or an error.
#[derive(Debug, Deserialize)]
struct Answer<'a> {
    status: Option<String>,
    #[serde(borrow)]
    data: Option<Data<'a>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Data<'a> {
    #[serde(rename = "resultType")]
    result_type: Option<String>,
    #[serde(borrow, default)]
    result: Vec<Entry<'a>>,
}

#[derive(Debug, Deserialize)]
struct Entry<'a> {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[time, "value"]` pairs; the values are borrowed from the answer (Prometheus never
    /// escapes them).
    #[serde(borrow, default)]
    values: Vec<(f64, &'a str)>,
}

/// The series of a query, stitched together from the chunks' answers.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// The series, by labels.
    series: BTreeMap<BTreeMap<String, String>, Vec<(f64, u64)>>,
    /// Samples kept over all series.
    samples: usize,
    /// Most samples kept over all series.
    max_samples: usize,
    /// Prometheus' warnings, each once.
    pub warnings: BTreeSet<String>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::with_max_samples(input::MAX_SAMPLES)
    }
}

impl Fleet {
    /// No series yet; at most `max_samples` samples over all series.
    fn with_max_samples(max_samples: usize) -> Self {
        Self {
            series: BTreeMap::new(),
            samples: 0,
            max_samples,
            warnings: BTreeSet::new(),
        }
    }

    /// Adds one chunk's answer (`status` and `body` from `url`) to the series.
    pub(crate) fn add(&mut self, url: &str, status: u16, body: &[u8]) -> Result<(), CliError> {
        let answer = match serde_json::from_slice::<Answer<'_>>(body) {
            Ok(a) => a,
            Err(_) if status != 200 => {
                return Err(CliError::input(format!(
                    "{url} answered {status}: {}",
                    first_line(body)
                )));
            }
            Err(e) => {
                return Err(CliError::input(format!(
                    "{url} answered something that is not a Prometheus query_range answer ({e}): {}",
                    first_line(body)
                )));
            }
        };
        if answer.status.as_deref() == Some("error") || status != 200 {
            return Err(CliError::input(format!(
                "Prometheus at {url} answered {status}{}: {}",
                answer
                    .error_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                answer
                    .error
                    .as_deref()
                    .map_or_else(|| first_line(body), str::to_owned)
            )));
        }
        if answer.status.as_deref() != Some("success") {
            return Err(CliError::input(format!(
                "{url} answered without status \"success\": not a Prometheus query_range answer: {}",
                first_line(body)
            )));
        }
        self.warnings.extend(answer.warnings);
        let Some(data) = answer.data else {
            return Err(CliError::input(format!(
                "{url} answered without `data`: not a Prometheus query_range answer"
            )));
        };
        if let Some(kind) = data.result_type.as_deref().filter(|k| *k != "matrix") {
            return Err(CliError::input(format!(
                "{url} answered resultType {kind:?}, expected \"matrix\""
            )));
        }
        for entry in data.result {
            self.samples = self.samples.saturating_add(entry.values.len());
            if self.samples > self.max_samples {
                return Err(CliError::input(format!(
                    "the query's series hold more than {} samples ({} series so far): narrow the query, shorten the range or give a coarser --step",
                    self.max_samples,
                    self.series.len()
                )));
            }
            let mut samples = Vec::with_capacity(entry.values.len());
            for (t, raw) in entry.values {
                let v: f64 = raw.trim().parse().unwrap_or(f64::NAN);
                if !v.is_finite() || v < 0.0 || !t.is_finite() {
                    let mut s = Series::default();
                    s.labels = entry.metric;
                    return Err(CliError::input(format!(
                        "{}: value {raw:?} at {}: not a number of bytes (the query must give memory in bytes, e.g. process_resident_memory_bytes)",
                        s.name(),
                        iso(t)
                    )));
                }
                samples.push((t, v.round() as u64));
            }
            let kept = self.series.entry(entry.metric).or_default();
            // Chunks are contiguous and do not overlap; a repeated time is dropped all the same.
            let last = kept.last().map_or(f64::NEG_INFINITY, |s| s.0);
            kept.extend(samples.into_iter().filter(|s| s.0 > last));
        }
        Ok(())
    }

    /// The series, in label order.
    pub(crate) fn into_series(self) -> Vec<Series> {
        self.series
            .into_iter()
            .map(|(labels, samples)| {
                let mut s = Series::default();
                s.labels = labels;
                s.samples = samples;
                s
            })
            .collect()
    }
}

/// Fetches every chunk of `plan` for `query` from `server` and stitches the answers.
pub(crate) fn fetch(server: &Endpoint, query: &str, plan: &Plan) -> Result<Fleet, CliError> {
    let mut fleet = Fleet::default();
    let path = "/api/v1/query_range";
    for &(start, end) in &plan.chunks {
        let target = format!(
            "{path}?query={}&start={start}&end={end}&step={}",
            encode(query),
            plan.step
        );
        let (status, body) =
            server
                .get_path(&target, TIMEOUT, MAX_ANSWER)
                .map_err(|e| CliError {
                    code: EXIT_USAGE,
                    ..e
                })?;
        fleet.add(&format!("{}{path}", server.url()), status, &body)?;
    }
    Ok(fleet)
}

/// Urgency order: leaks first; among them the nearest OOM first, then the fastest growth;
/// the rest by growth, fastest first.
fn by_urgency(a: &Analysis, b: &Analysis) -> Ordering {
    let eta = |x: &Analysis| {
        x.oom_eta_seconds
            .filter(|_| x.leak)
            .unwrap_or(f64::INFINITY)
    };
    let growth = |x: &Analysis| x.slope_bytes_per_hour.unwrap_or(f64::NEG_INFINITY);
    b.leak
        .cmp(&a.leak)
        .then_with(|| eta(a).total_cmp(&eta(b)))
        .then_with(|| growth(b).total_cmp(&growth(a)))
}

/// `leakguard analyze --prometheus URL --query PROMQL ...`.
pub(crate) fn command(rest: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    command_with(rest, out, &SystemClock::new())
}

/// [`command`] with the clock that gives "now" for the default range.
pub(crate) fn command_with(
    rest: &[String],
    out: &mut dyn Write,
    clock: &dyn Clock,
) -> Result<(), CliError> {
    let parsed = args::parse("analyze", rest, SPECS)?;
    if parsed.help {
        return print(out, super::ANALYZE_HELP);
    }
    if let Some(extra) = parsed.positionals.first() {
        return Err(CliError::usage(format!(
            "analyze: unexpected argument {extra:?}: with --prometheus, the series come from --query, not a FILE"
        )));
    }
    let Some(url) = parsed
        .value("--prometheus")
        .filter(|u| !u.trim().is_empty())
    else {
        return Err(CliError::usage(
            "analyze: --prometheus needs Prometheus' URL, e.g. --prometheus http://prometheus:9090",
        ));
    };
    let server = Endpoint::parse_base(url).map_err(|e| CliError {
        message: format!("analyze: --prometheus {}", e.message),
        ..e
    })?;
    let Some(query) = parsed.value("--query").filter(|q| !q.trim().is_empty()) else {
        return Err(CliError::usage(
            "analyze: --prometheus needs --query PROMQL, e.g. --query 'process_resident_memory_bytes{job=\"api\"}'",
        ));
    };
    let limit = parsed
        .value("--limit")
        .map(|v| crate::parse_size("--limit", v))
        .transpose()
        .map_err(|e| CliError::usage(format!("analyze: {e}")))?;
    let plan = Plan::new(
        parsed.value("--start"),
        parsed.value("--end"),
        parsed.value("--step"),
        clock.unix_seconds(),
        MAX_POINTS,
    )?;
    let context = |e: CliError| CliError {
        message: format!("analyze: {}", e.message),
        ..e
    };
    let fleet = fetch(&server, query, &plan).map_err(context)?;
    let mut stderr = std::io::stderr();
    for w in &fleet.warnings {
        let _ = writeln!(stderr, "leakguard: warning: analyze: Prometheus: {w}");
    }
    let all = fleet.into_series();
    if all.is_empty() {
        return Err(CliError::input(format!(
            "analyze: the query {query:?} matched no series from {} to {}",
            iso(plan.start),
            iso(plan.end)
        )));
    }
    let total = all.len();
    let mut results = Vec::with_capacity(total);
    let mut names = Vec::with_capacity(total);
    for series in &all {
        // Gaps are normal in a fleet (a target down for a while): counted, not refused.
        match series.check(true) {
            Ok(timing) => {
                results.push(analyze::analyze_prometheus(series, timing, limit));
                names.push(series.name());
            }
            Err(e) => {
                let _ = writeln!(
                    stderr,
                    "leakguard: warning: analyze: {}: skipped: {}",
                    series.name(),
                    e.one_line()
                );
            }
        }
    }
    if results.is_empty() {
        return Err(CliError::input(format!(
            "analyze: none of the {total} series has two samples or more from {} to {}",
            iso(plan.start),
            iso(plan.end)
        )));
    }
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| by_urgency(&results[a], &results[b]));

    if parsed.flag("--json") {
        let sorted: Vec<&Analysis> = order.iter().map(|&i| &results[i]).collect();
        let json = serde_json::to_string_pretty(&sorted)
            .map_err(|e| CliError::io(format!("analyze: cannot render JSON: {e}")))?;
        return print(out, &(json + "\n"));
    }
    let rows: Vec<(&Analysis, &str)> = order
        .iter()
        .map(|&i| (&results[i], names[i].as_str()))
        .collect();
    let text = table(
        &format!(
            "{}: {query} from {} to {}, step {} ({} request{})",
            server.url(),
            iso(plan.start),
            iso(plan.end),
            span(plan.step),
            plan.chunks.len(),
            if plan.chunks.len() == 1 { "" } else { "s" }
        ),
        &rows,
        limit.is_some(),
    );
    print(out, &text)
}

/// The rows for humans: a title line, a header, one row per series, a summary.
fn table(title: &str, rows: &[(&Analysis, &str)], limit: bool) -> String {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|(a, name)| {
            let leak = if a.warming_up {
                "unknown".to_owned()
            } else if a.leak {
                serde_json::to_value(a.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "yes".into())
            } else {
                "no".to_owned()
            };
            let growth = a
                .slope_bytes_per_hour
                .map_or_else(|| "-".to_owned(), |r| mb_per_hour(r / 3600.0));
            let eta = match a.oom_eta_seconds {
                Some(eta) if a.leak && eta <= 0.0 => "over limit".to_owned(),
                Some(eta) if a.leak => span(eta),
                _ => "-".to_owned(),
            };
            let detected = a.detected_at.map_or_else(|| "-".to_owned(), iso);
            [
                leak,
                growth,
                eta,
                crate::format_bytes(a.last_bytes),
                detected,
                (*name).to_owned(),
            ]
        })
        .collect();
    let header = ["LEAK", "GROWTH", "OOM ETA", "LAST", "DETECTED", "SERIES"];
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i < 6 {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                s.push_str(c);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut text = format!("{title}\n");
    let [h0, h1, h2, h3, h4, h5] = header;
    text.push_str(&line([h0, h1, h2, h3, h4, h5, "REASON"]));
    for ((a, _), row) in rows.iter().zip(&cells) {
        let [c0, c1, c2, c3, c4, c5] = row;
        text.push_str(&line([c0, c1, c2, c3, c4, c5, &a.reason]));
    }
    let leaking = rows.iter().filter(|(a, _)| a.leak).count();
    text.push_str(&format!(
        "{leaking} of {} series {} a leak.{}\n",
        rows.len(),
        if leaking == 1 { "shows" } else { "show" },
        if limit || leaking == 0 {
            ""
        } else {
            " Give --limit for the OOM ETA."
        }
    ));
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const NOW: f64 = 1_796_580_000.5;

    #[test]
    fn default_range_is_the_day_before_now_at_15_s() {
        let clock = ManualClock::new(NOW);
        let plan = Plan::new(None, None, None, clock.unix_seconds(), MAX_POINTS).unwrap();
        assert_eq!(plan.end, NOW.floor());
        assert_eq!(plan.start, NOW.floor() - 86_400.0);
        assert_eq!(plan.step, 15.0);
        assert_eq!(plan.points, 5761);
        assert_eq!(plan.chunks, [(plan.start, plan.end)]);
        clock.advance(Duration::from_secs(3600));
        let later = Plan::new(None, None, None, clock.unix_seconds(), MAX_POINTS).unwrap();
        assert_eq!(later.end, plan.end + 3600.0);
        // Only --end: the day before it; only --start: up to now.
        let plan = Plan::new(None, Some("1796500000"), None, NOW, MAX_POINTS).unwrap();
        assert_eq!((plan.start, plan.end), (1_796_413_600.0, 1_796_500_000.0));
        let plan = Plan::new(Some("1796570000"), None, None, NOW, MAX_POINTS).unwrap();
        assert_eq!((plan.start, plan.end), (1_796_570_000.0, NOW.floor()));
    }

    #[test]
    fn default_step_keeps_the_range_in_one_request() {
        for (range, step) in [
            (3600.0, 15.0),
            (86_400.0, 15.0),
            (2.0 * 86_400.0, 30.0),
            (7.0 * 86_400.0, 60.0),
            (30.0 * 86_400.0, 300.0),
            (400.0 * 86_400.0, 3600.0),
        ] {
            let plan =
                Plan::new(Some("0"), Some(&range.to_string()), None, NOW, MAX_POINTS).unwrap();
            assert_eq!(plan.step, step, "{range}");
            assert!(plan.points <= MAX_POINTS, "{range}: {}", plan.points);
            assert_eq!(plan.chunks.len(), 1, "{range}");
        }
    }

    #[test]
    fn long_ranges_are_chunked_on_the_step_grid_without_gaps_or_overlaps() {
        // 6 h at 1 s: 21,601 points, Prometheus takes at most 11,000 per request.
        let plan = Plan::new(
            Some("1796500000"),
            Some("1796521600"),
            Some("1s"),
            NOW,
            MAX_POINTS,
        )
        .unwrap();
        assert_eq!(plan.points, 21_601);
        assert_eq!(
            plan.chunks,
            [
                (1_796_500_000.0, 1_796_510_999.0),
                (1_796_511_000.0, 1_796_521_600.0)
            ]
        );
        for (s, e) in &plan.chunks {
            // Prometheus refuses (end - start) / step > 11,000.
            assert!((e - s) / plan.step < MAX_POINTS as f64);
        }
        // Small chunks, a step that does not divide the range: the last step is before --end.
        let plan = Plan::new(Some("0"), Some("100"), Some("30s"), NOW, 2).unwrap();
        assert_eq!(plan.points, 4);
        assert_eq!(plan.chunks, [(0.0, 30.0), (60.0, 90.0)]);
        let plan = Plan::new(Some("0"), Some("0.3"), Some("100ms"), NOW, 3).unwrap();
        assert_eq!(plan.points, 4);
    }

    #[test]
    fn bad_ranges_and_steps_are_usage_errors() {
        for (start, end, step, needle) in [
            (Some("200"), Some("100"), None, "is not before --end"),
            (Some("100"), Some("100"), None, "is not before --end"),
            (
                Some("yesterday"),
                None,
                None,
                "--start \"yesterday\": not a time",
            ),
            (None, Some("1796580000000"), None, "milliseconds"),
            (Some("0"), Some("100"), Some("0s"), "at least 1ms"),
            (Some("0"), Some("100"), Some("fast"), "--step"),
            (
                Some("0"),
                Some("86400000"),
                Some("1s"),
                "more than 10000000: give a coarser --step",
            ),
        ] {
            let e = Plan::new(start, end, step, NOW, MAX_POINTS).unwrap_err();
            assert_eq!(e.code, 2, "{needle}");
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }

    #[test]
    fn times_in_unix_seconds_and_rfc_3339() {
        for (text, want) in [
            ("1796580000", 1_796_580_000.0),
            ("1796580000.25", 1_796_580_000.25),
            ("1970-01-01T00:00:00Z", 0.0),
            ("2023-11-14T22:13:20Z", 1_700_000_000.0),
            ("2023-11-14t22:13:20.5z", 1_700_000_000.5),
            ("2023-11-14 23:13:20+01:00", 1_700_000_000.0),
            ("2023-11-14T20:13:20.125-02:00", 1_700_000_000.125),
            ("2024-02-29T00:00:00Z", 1_709_164_800.0),
        ] {
            assert_eq!(parse_time("--start", text).unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "-5",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20Zjunk",
            "now",
        ] {
            let e = parse_time("--end", bad).unwrap_err();
            assert_eq!(e.code, 2, "{bad:?}");
            assert!(e.message.contains("RFC 3339"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("max by (instance) (mem{job=\"a b\"})"),
            "max%20by%20%28instance%29%20%28mem%7Bjob%3D%22a%20b%22%7D%29"
        );
        assert_eq!(encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(encode("é"), "%C3%A9");
    }

    fn answer(series: &[(&str, &[(f64, &str)])]) -> Vec<u8> {
        let result: Vec<serde_json::Value> = series
            .iter()
            .map(|(instance, values)| {
                serde_json::json!({
                    "metric": {"__name__": "mem", "instance": instance},
                    "values": values.iter().map(|(t, v)| serde_json::json!([t, v])).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "status": "success",
            "data": {"resultType": "matrix", "result": result}
        }))
        .unwrap()
    }

    #[test]
    fn chunks_are_stitched_by_labels() {
        let mut fleet = Fleet::default();
        let one = answer(&[("a", &[(0.0, "1"), (15.0, "2")]), ("b", &[(15.0, "7")])]);
        // `b` is missing from the second chunk, `c` appears in it; `a`'s first sample repeats.
        let two = answer(&[
            ("a", &[(15.0, "2"), (30.0, "3"), (45.0, "4e0")]),
            ("c", &[(45.0, "9")]),
        ]);
        fleet.add("u", 200, &one).unwrap();
        fleet.add("u", 200, &two).unwrap();
        let series = fleet.into_series();
        let got: Vec<(String, Vec<(f64, u64)>)> = series
            .iter()
            .map(|s| (s.name(), s.samples.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "mem{instance=\"a\"}".to_owned(),
                    vec![(0.0, 1), (15.0, 2), (30.0, 3), (45.0, 4)]
                ),
                ("mem{instance=\"b\"}".to_owned(), vec![(15.0, 7)]),
                ("mem{instance=\"c\"}".to_owned(), vec![(45.0, 9)]),
            ]
        );
    }

    #[test]
    fn error_answers_are_one_clear_line() {
        let bad_query = br#"{"status":"error","errorType":"bad_data","error":"1:11: parse error: unexpected end of input inside braces"}"#;
        for (status, body, needle) in [
            (
                400,
                &bad_query[..],
                "Prometheus at u answered 400 (bad_data): 1:11: parse error",
            ),
            (500, b"oops\nmore", "u answered 500: oops"),
            (503, b"", "u answered 503: (empty body)"),
            (200, b"<html>", "not a Prometheus query_range answer"),
            (
                200,
                br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "resultType \"vector\"",
            ),
            (
                200,
                br#"{"status":"success","data":{"result":[{"metric":{"job":"x"},"values":[[1,"NaN"]]}]}}"#,
                "{job=\"x\"}: value \"NaN\" at 1970-01-01T00:00:01Z: not a number of bytes",
            ),
            (
                200,
                br#"{"status":"success","data":{"result":[{"metric":{},"values":[[1,"-1"]]}]}}"#,
                "not a number of bytes",
            ),
        ] {
            let e = Fleet::default().add("u", status, body).unwrap_err();
            assert_eq!(e.code, 2, "{needle}");
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
        // The cap on samples counts every series of every chunk.
        let mut fleet = Fleet::with_max_samples(4);
        let two = answer(&[("a", &[(0.0, "1"), (15.0, "2")])]);
        fleet.add("u", 200, &two).unwrap();
        fleet.add("u", 200, &two).unwrap();
        let e = fleet.add("u", 200, &two).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message
                .contains("more than 4 samples (1 series so far): narrow the query"),
            "{}",
            e.message
        );
        let mut fleet = Fleet::default();
        let warned = br#"{"status":"success","warnings":["slow query"],"data":{"resultType":"matrix","result":[]}}"#;
        fleet.add("u", 200, warned).unwrap();
        fleet.add("u", 200, warned).unwrap();
        assert_eq!(fleet.warnings.len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a server answers, the answer is taken or refused with a code-2 error,
        /// never a panic.
        #[test]
        fn any_answer_is_taken_or_refused(
            status in proptest::prelude::prop_oneof![
                proptest::prelude::Just(200u16),
                proptest::prelude::Just(400u16),
                100u16..600
            ],
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            values in proptest::collection::vec((-1e12f64..1e12, "[-+]?[0-9a-zA-Z.]{0,8}"), 0..8),
        ) {
            let _ = Fleet::default().add("u", status, &body);
            let values: Vec<serde_json::Value> =
                values.iter().map(|(t, v)| serde_json::json!([t, v])).collect();
            let json = serde_json::json!({
                "status": "success",
                "data": {"resultType": "matrix", "result": [{"metric": {"a": "b"}, "values": values}]}
            });
            let mut fleet = Fleet::default();
            if let Err(e) = fleet.add("u", status, json.to_string().as_bytes()) {
                proptest::prop_assert_eq!(e.code, 2);
            } else {
                for s in fleet.into_series() {
                    let _ = s.check(true);
                }
            }
        }

        /// Any text as --start, --end or --step gives a plan or a usage error, never a panic;
        /// a plan's chunks are contiguous on the step grid and within Prometheus' limit.
        #[test]
        fn any_range_is_planned_or_refused(
            start in "[0-9T:.Z+-]{0,26}",
            end in proptest::option::of("[0-9]{1,11}(\\.[0-9]{1,3})?"),
            step in proptest::option::of("[0-9]{1,5}(ms|s|m|h|d)?"),
            chunk in 1000u64..20_000,
        ) {
            match Plan::new(Some(&start), end.as_deref(), step.as_deref(), NOW, chunk) {
                Ok(plan) => {
                    proptest::prop_assert!(plan.start < plan.end);
                    let mut next = plan.start;
                    let mut points = 0u64;
                    for (s, e) in &plan.chunks {
                        proptest::prop_assert!((s - next).abs() <= 1e-6 * next.abs().max(1.0));
                        let n = ((e - s) / plan.step).round() as u64 + 1;
                        proptest::prop_assert!(n <= chunk);
                        proptest::prop_assert!(*e <= plan.end + 1e-6 * plan.end.abs().max(1.0));
                        points += n;
                        next = e + plan.step;
                    }
                    proptest::prop_assert_eq!(points, plan.points);
                }
                Err(e) => proptest::prop_assert_eq!(e.code, 2),
            }
        }
    }
}
