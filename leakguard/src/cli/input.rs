//! Reading a recorded memory series: CSV (`unix_seconds,bytes`) or the JSON answer of
//! Prometheus' `/api/v1/query_range`, recognized by content, with every bad input named.
//!
//! Memory is bounded: at most [`MAX_SAMPLES`] samples (16 bytes each, plus a line number for
//! CSV) and [`MAX_INPUT_BYTES`] of input; lines longer than [`MAX_LINE`] are refused. The JSON
//! answer is parsed straight into samples, never into a generic JSON tree.

use super::CliError;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// Most samples read from one input (all series together).
pub(crate) const MAX_SAMPLES: usize = 10_000_000;
/// Most bytes read from one input.
pub(crate) const MAX_INPUT_BYTES: u64 = 1 << 30;
/// Longest CSV line, bytes.
const MAX_LINE: usize = 1024;
/// A gap longer than this many median steps is bad input (unless allowed).
pub(crate) const GAP_STEPS: f64 = 10.0;

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `unix_seconds,bytes` lines.
    Csv,
    /// A Prometheus `query_range` answer.
    Prometheus,
}

impl Format {
    /// `csv` or `prometheus`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Prometheus => "prometheus",
        }
    }
}

/// One series: samples in input order.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// Prometheus labels (empty for CSV).
    pub labels: BTreeMap<String, String>,
    /// (Unix seconds, bytes).
    pub samples: Vec<(f64, u64)>,
    /// CSV: the line of each sample (empty for Prometheus, where samples are named by index).
    lines: Vec<u32>,
    /// For Prometheus: the series' index in `result`.
    index: usize,
}

/// What the input held.
#[derive(Debug)]
pub(crate) struct Input {
    /// Its format.
    pub format: Format,
    /// Its series (exactly one for CSV).
    pub series: Vec<Series>,
}

/// The timing of a series that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timing {
    /// Median step between samples, seconds.
    pub step: f64,
    /// Gaps longer than [`GAP_STEPS`] steps (only when allowed).
    pub gaps: usize,
    /// The longest step, seconds.
    pub longest_gap: f64,
}

impl Series {
    /// How the series is named in messages: its labels `{job="api",instance="a"}`, or `series 2`
    /// when it has none.
    pub(crate) fn name(&self) -> String {
        if self.labels.is_empty() {
            return format!("series {}", self.index);
        }
        let mut out = String::new();
        if let Some(n) = self.labels.get("__name__") {
            out.push_str(n);
        }
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        if !rest.is_empty() || out.is_empty() {
            out.push('{');
            out.push_str(&rest.join(","));
            out.push('}');
        }
        out
    }

    /// Where sample `i` is: `line 7` (CSV) or `values[6] of {…}` (Prometheus).
    fn place(&self, i: usize) -> String {
        match self.lines.get(i) {
            Some(line) => format!("line {line}"),
            None => format!("values[{i}] of {}", self.name()),
        }
    }

    /// Checks the timing: at least two samples, in strictly increasing time order, in Unix
    /// seconds, without gaps longer than [`GAP_STEPS`] median steps (unless `allow_gaps`).
    pub(crate) fn check(&self, allow_gaps: bool) -> Result<Timing, CliError> {
        let n = self.samples.len();
        if n == 0 {
            return Err(CliError::input(match self.lines.is_empty() {
                true => format!("{} has no samples", self.name()),
                false => "no samples".to_owned(),
            }));
        }
        if n == 1 {
            return Err(CliError::input(format!(
                "only one sample ({}): a series over time is needed (a verdict needs from 6 minutes of samples, near the limit, to about 50 minutes)",
                self.place(0)
            )));
        }
        let mut steps = Vec::with_capacity(n - 1);
        for i in 1..n {
            let (t0, t1) = (self.samples[i - 1].0, self.samples[i].0);
            if t1 < t0 {
                return Err(CliError::input(format!(
                    "{}: time {} is earlier than {} on {}: samples must be in time order (sort the file, e.g. `sort -n`)",
                    self.place(i),
                    number(t1),
                    number(t0),
                    self.place(i - 1)
                )));
            }
            if t1 == t0 {
                return Err(CliError::input(format!(
                    "{}: duplicate time {} (also on {}): each time must appear once",
                    self.place(i),
                    number(t1),
                    self.place(i - 1)
                )));
            }
            steps.push(t1 - t0);
        }
        let last = self.samples[n - 1].0;
        if last > 1e11 {
            return Err(CliError::input(format!(
                "times look like milliseconds (last time {}, {}): give Unix seconds",
                number(last),
                self.place(n - 1)
            )));
        }
        let longest_gap = steps.iter().copied().fold(0.0, f64::max);
        let step = median(&mut steps);
        let limit = GAP_STEPS * step;
        let mut gaps = 0;
        let mut first_gap = None;
        for i in 1..n {
            if self.samples[i].0 - self.samples[i - 1].0 > limit {
                gaps += 1;
                first_gap.get_or_insert(i);
            }
        }
        if let Some(i) = first_gap
            && !allow_gaps
        {
            let more = match gaps {
                1 => String::new(),
                g => format!(" ({} more after it)", g - 1),
            };
            return Err(CliError::input(format!(
                "{}: gap of {} after {} ({}), more than {} x the median step of {}{more}: fill or split the series, or pass --allow-gaps",
                self.place(i),
                super::fmt::span(self.samples[i].0 - self.samples[i - 1].0),
                self.place(i - 1),
                super::fmt::iso(self.samples[i - 1].0),
                GAP_STEPS,
                super::fmt::span(step),
            )));
        }
        Ok(Timing {
            step,
            gaps,
            longest_gap,
        })
    }
}

/// The median of `v` (reordered), which is not empty.
fn median(v: &mut [f64]) -> f64 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// A time or value as written: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Cuts `s` for a message.
fn excerpt(s: &str) -> String {
    let mut cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Checks a sample's time: finite and not negative.
fn check_time(raw: &str, t: f64) -> Result<f64, String> {
    if !t.is_finite() {
        return Err(format!("time {raw} is not a finite number"));
    }
    if t < 0.0 {
        return Err(format!("time {raw} is negative"));
    }
    Ok(t)
}

/// Checks a sample's value: a finite number of bytes, not negative.
fn check_value(raw: &str, v: f64) -> Result<u64, String> {
    if v.is_nan() {
        return Err(format!("value {raw} is not a number (NaN)"));
    }
    if !v.is_finite() {
        return Err(format!("value {raw} is infinite"));
    }
    if v < 0.0 {
        return Err(format!("value {raw} is negative: bytes cannot be"));
    }
    Ok(v.round() as u64)
}

/// A reader that refuses to go past [`MAX_INPUT_BYTES`].
#[derive(Debug)]
struct Capped<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.exceeded = true;
                return Err(io::Error::other("input too large"));
            }
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn too_large() -> CliError {
    CliError::input(format!(
        "input larger than {}: analyze a shorter range or a coarser step",
        crate::format_bytes(MAX_INPUT_BYTES)
    ))
}

fn too_many() -> String {
    format!("more than {MAX_SAMPLES} samples: analyze a shorter range or a coarser step")
}

/// Reads an input, recognizing its format by its first non-blank character (`{` or `[`:
/// JSON, anything else: CSV).
pub(crate) fn read(reader: impl Read) -> Result<Input, CliError> {
    read_within(reader, MAX_INPUT_BYTES, MAX_SAMPLES)
}

/// [`read`] with the caps given.
fn read_within(reader: impl Read, max_bytes: u64, max_samples: usize) -> Result<Input, CliError> {
    let mut r = BufReader::with_capacity(
        64 * 1024,
        Capped {
            inner: reader,
            left: max_bytes,
            exceeded: false,
        },
    );
    // The first buffer is far below the cap: a failure here is the reader's own.
    let cannot = |e: io::Error| CliError::io(format!("cannot read: {e}"));
    // A UTF-8 byte-order mark is skipped.
    if r.fill_buf().map_err(cannot)?.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
    }
    let buf = r.fill_buf().map_err(cannot)?;
    let first = buf.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None if buf.is_empty() => Err(CliError::input("no samples: the input is empty")),
        Some(b'{') | Some(b'[') => read_prometheus(r, max_samples),
        _ => read_csv(r, max_samples),
    }
}

fn read_csv<R: Read>(mut r: BufReader<Capped<R>>, max_samples: usize) -> Result<Input, CliError> {
    let mut series = Series::default();
    let mut buf = Vec::with_capacity(MAX_LINE + 1);
    let mut line_no: u32 = 0;
    let mut content_lines = 0u64;
    let mut header = false;
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| {
                if r.get_ref().exceeded {
                    too_large()
                } else {
                    CliError::io(format!("cannot read: {e}"))
                }
            })?;
        if n == 0 {
            break;
        }
        line_no = line_no.saturating_add(1);
        let at = |msg: String| CliError::input(format!("line {line_no}: {msg}"));
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            return Err(at(format!(
                "longer than {MAX_LINE} bytes: not a CSV of unix_seconds,bytes"
            )));
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            return Err(at(
                "not text (UTF-8): not a CSV of unix_seconds,bytes".into()
            ));
        };
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        content_lines += 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [time, value] = fields.as_slice() else {
            return Err(at(format!(
                "expected two columns `unix_seconds,bytes`, found {}",
                excerpt(line)
            )));
        };
        let t = match time.parse::<f64>() {
            Ok(t) => t,
            // The first line may be a header.
            Err(_) if content_lines == 1 => {
                header = true;
                continue;
            }
            Err(_) => return Err(at(format!("time {} is not a number", excerpt(time)))),
        };
        let Ok(v) = value.parse::<f64>() else {
            return Err(at(format!("value {} is not a number", excerpt(value))));
        };
        let t = check_time(time, t).map_err(at)?;
        let v = check_value(value, v).map_err(at)?;
        if series.samples.len() >= max_samples {
            return Err(at(too_many()));
        }
        series.samples.push((t, v));
        series.lines.push(line_no);
    }
    if series.samples.is_empty() {
        return Err(CliError::input(if header {
            "no samples: only a header line"
        } else {
            "no samples: the input has only blank lines and comments"
        }));
    }
    Ok(Input {
        format: Format::Csv,
        series: vec![series],
    })
}

thread_local! {
    /// Samples the JSON parser may still accept (the cap on memory).
    static BUDGET: Cell<usize> = const { Cell::new(MAX_SAMPLES) };
}

/// A Prometheus API answer.
#[derive(Debug, serde::Deserialize)]
struct Answer {
    status: Option<String>,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: Option<String>,
    result: Option<Vec<Entry>>,
}

/// One element of `result`: a series object, or something else (a scalar answer's parts).
#[derive(Debug)]
enum Entry {
    Series {
        labels: BTreeMap<String, String>,
        values: Option<Vec<(f64, u64)>>,
        instant: bool,
    },
    Other,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a series object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut labels = BTreeMap::new();
        let mut values = None;
        let mut instant = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metric" => labels = map.next_value()?,
                "values" => values = Some(map.next_value::<Values>()?.0),
                "value" => {
                    map.next_value::<IgnoredAny>()?;
                    instant = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Entry::Series {
            labels,
            values,
            instant,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Entry::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Entry, E> {
        Ok(Entry::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Entry, E> {
        Ok(Entry::Other)
    }
}

/// A series' `values`, read straight into samples within the budget.
struct Values(Vec<(f64, u64)>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of [time, \"value\"] samples")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some(Sample(t, v)) = seq.next_element::<Sample>()? {
                    let left = BUDGET.with(Cell::get);
                    if left == 0 {
                        return Err(de::Error::custom(too_many()));
                    }
                    BUDGET.with(|b| b.set(left - 1));
                    out.push((t, v));
                }
                Ok(Values(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One `[time, "value"]` pair, checked.
struct Sample(f64, u64);

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sample;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sample [time, \"value\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Sample, A::Error> {
                let t: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let Number(raw, v) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(
                        "a sample has more than two elements: expected [time, \"value\"]",
                    ));
                }
                let t = check_time(&number(t), t).map_err(de::Error::custom)?;
                let v = check_value(&format!("{raw:?}"), v)
                    .map_err(|e| de::Error::custom(format!("at time {}: {e}", number(t))))?;
                Ok(Sample(t, v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A sample value: Prometheus writes a string (`"123"`, `"NaN"`); numbers are accepted too.
struct Number(String, f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sample value (a string such as \"123\")")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Number, E> {
                match s.trim().parse::<f64>() {
                    Ok(v) => Ok(Number(s.to_owned(), v)),
                    Err(_) => Err(E::custom(format!(
                        "sample value {} is not a number",
                        excerpt(s)
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
                Ok(Number(number(v), v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v.to_string(), v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v.to_string(), v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

fn read_prometheus<R: Read>(
    mut r: BufReader<Capped<R>>,
    max_samples: usize,
) -> Result<Input, CliError> {
    BUDGET.with(|b| b.set(max_samples));
    let answer: Answer = match serde_json::from_reader(&mut r) {
        Ok(a) => a,
        Err(e) => {
            return Err(match e.classify() {
                serde_json::error::Category::Io if r.get_ref().exceeded => too_large(),
                serde_json::error::Category::Io => CliError::io(format!("cannot read: {e}")),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    CliError::input(format!("not valid JSON: {e}"))
                }
                serde_json::error::Category::Data => CliError::input(format!(
                    "not a Prometheus query_range answer as expected: {e}"
                )),
            });
        }
    };
    match answer.status.as_deref() {
        Some("success") => {}
        Some("error") => {
            return Err(CliError::input(format!(
                "Prometheus answered an error ({}): {}",
                answer.error_type.as_deref().unwrap_or("no errorType"),
                answer.error.as_deref().unwrap_or("no message")
            )));
        }
        Some(other) => {
            return Err(CliError::input(format!(
                "status {other:?}: expected a Prometheus answer with status \"success\""
            )));
        }
        None => {
            return Err(CliError::input(
                "no `status`: not a Prometheus query_range answer (expected {\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[...]}})",
            ));
        }
    }
    let Some(data) = answer.data else {
        return Err(CliError::input(
            "no `data`: not a Prometheus query_range answer",
        ));
    };
    match data.result_type.as_deref() {
        Some("matrix") | None => {}
        Some("vector") => {
            return Err(CliError::input(
                "an instant-query answer (resultType vector) has one sample per series: use /api/v1/query_range",
            ));
        }
        Some(other) => {
            return Err(CliError::input(format!(
                "resultType {other:?}: expected \"matrix\" (the answer of /api/v1/query_range)"
            )));
        }
    }
    let entries = data.result.unwrap_or_default();
    if entries.is_empty() {
        return Err(CliError::input(
            "the answer has no series: the query matched nothing in that time range",
        ));
    }
    let mut series = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            Entry::Series {
                labels,
                values: Some(samples),
                ..
            } => series.push(Series {
                labels,
                samples,
                lines: Vec::new(),
                index,
            }),
            Entry::Series { instant: true, .. } => {
                return Err(CliError::input(
                    "an instant-query answer (`value`, not `values`): use /api/v1/query_range",
                ));
            }
            Entry::Series { labels, .. } => {
                let s = Series {
                    labels,
                    index,
                    ..Series::default()
                };
                return Err(CliError::input(format!("{} has no `values`", s.name())));
            }
            Entry::Other => {
                return Err(CliError::input(format!(
                    "result[{index}] is not a series object: expected {{\"metric\":{{...}},\"values\":[...]}}"
                )));
            }
        }
    }
    Ok(Input {
        format: Format::Prometheus,
        series,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Result<Input, CliError> {
        read(text.as_bytes())
    }

    #[test]
    fn csv_with_header_comments_blank_lines_and_crlf() {
        let input =
            csv("\u{feff}unix_seconds,bytes\r\n# note\n\n100,5\r\n115, 6.0\n130,7e1\n").unwrap();
        assert_eq!(input.format, Format::Csv);
        let s = &input.series[0];
        assert_eq!(s.samples, [(100.0, 5), (115.0, 6), (130.0, 70)]);
        assert_eq!(s.lines, [4, 5, 6]);
        assert_eq!(s.check(false).unwrap().step, 15.0);
    }

    #[test]
    fn csv_errors_name_the_line() {
        for (text, needle) in [
            ("", "empty"),
            ("time,bytes\n", "only a header"),
            ("100,5\nabc,6\n", "line 2: time \"abc\" is not a number"),
            (
                "100,5\n115,lots\n",
                "line 2: value \"lots\" is not a number",
            ),
            ("100,5\n115,NaN\n", "line 2: value NaN is not a number"),
            ("100,5\n115,-1\n", "line 2: value -1 is negative"),
            ("100,5\n115,6,7\n", "line 2: expected two columns"),
        ] {
            let e = csv(text).unwrap_err();
            assert_eq!(e.code, 2, "{text:?}");
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
        let long = format!("100,{}\n", "1".repeat(2000));
        assert!(csv(&long).unwrap_err().message.contains("longer than"));
    }

    #[test]
    fn timing_errors_name_the_lines() {
        let check = |text: &str| csv(text).unwrap().series[0].check(false).unwrap_err();
        assert!(check("100,1\n").message.contains("only one sample"));
        let e = check("100,1\n115,1\n110,1\n");
        assert!(
            e.message
                .contains("line 3: time 110 is earlier than 115 on line 2")
        );
        let e = check("100,1\n115,1\n115,1\n");
        assert!(
            e.message
                .contains("line 3: duplicate time 115 (also on line 2)")
        );
        let mut gap = String::new();
        for i in 0..20 {
            gap.push_str(&format!("{},1\n", i * 15));
        }
        gap.push_str("10000,1\n");
        let e = check(&gap);
        assert!(
            e.message.contains("line 21: gap of 2 h 42 min"),
            "{}",
            e.message
        );
        let timing = csv(&gap).unwrap().series[0].check(true).unwrap();
        assert_eq!((timing.step, timing.gaps), (15.0, 1));
        let e = check("1700000000000,1\n1700000015000,1\n");
        assert!(e.message.contains("milliseconds"));
    }

    #[test]
    fn input_is_capped_in_bytes_and_samples() {
        let csv = "100,1\n115,1\n130,1\n";
        assert!(read_within(csv.as_bytes(), 1 << 20, 3).is_ok());
        let e = read_within(csv.as_bytes(), 1 << 20, 2).unwrap_err();
        assert!(
            e.message.contains("line 3: more than 10000000 samples"),
            "{}",
            e.message
        );
        let e = read_within(csv.as_bytes(), 10, 100).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("input larger than 1.0 GiB"),
            "{}",
            e.message
        );
        let json = r#"{"status":"success","data":{"result":[{"metric":{},"values":[[1,"1"],[2,"1"],[3,"1"]]}]}}"#;
        assert!(read_within(json.as_bytes(), 1 << 20, 3).is_ok());
        let e = read_within(json.as_bytes(), 1 << 20, 2).unwrap_err();
        assert!(
            e.message.contains("more than 10000000 samples"),
            "{}",
            e.message
        );
        let e = read_within(json.as_bytes(), 30, 100).unwrap_err();
        assert!(e.message.contains("input larger than"), "{}", e.message);
    }

    #[test]
    fn prometheus_answers() {
        let ok = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"process_resident_memory_bytes","job":"api"},
             "values":[[1700000000,"100"],[1700000015.5,"1.5e2"]]}]}}"#;
        let input = read(ok.as_bytes()).unwrap();
        assert_eq!(input.format, Format::Prometheus);
        let s = &input.series[0];
        assert_eq!(s.samples, [(1_700_000_000.0, 100), (1_700_000_015.5, 150)]);
        assert_eq!(s.name(), "process_resident_memory_bytes{job=\"api\"}");
        for (text, needle) in [
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
                "Prometheus answered an error (bad_data): parse error",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "no series",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                "instant-query",
            ),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
                "resultType \"scalar\"",
            ),
            (
                r#"{"status":"success","data":{"result":[{"metric":{},"values":[[1,"NaN"]]}]}}"#,
                "value \"NaN\" is not a number (NaN) at line 1",
            ),
            (
                r#"{"status":"success","data":{"result":[{"metric":{},"values":[[1,"-5"]]}]}}"#,
                "negative",
            ),
            (r#"{"status":"success","data":"#, "not valid JSON"),
            (r#"[1,2]"#, "not a Prometheus query_range answer"),
        ] {
            let e = read(text.as_bytes()).unwrap_err();
            assert_eq!(e.code, 2, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }
}
