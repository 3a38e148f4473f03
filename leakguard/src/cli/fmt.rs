//! Formatting for humans: UTC times, spans, rates; and lookups in a JSON report.

use crate::trend::MB_PER_HOUR;
use serde_json::Value;

/// Unix seconds as an ISO-8601 UTC time to the second: `2023-11-14T22:13:20Z`.
pub(crate) fn iso(unix: f64) -> String {
    if !unix.is_finite() {
        return "?".into();
    }
    let secs = unix.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The time of day of `unix`, UTC: `22:13:20Z`.
pub(crate) fn clock(unix: f64) -> String {
    let full = iso(unix);
    match full.split_once('T') {
        Some((_, time)) => time.to_owned(),
        None => full,
    }
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A span of seconds for humans: `45 s`, `12 min`, `2 h 5 min`, `3 d 4 h`.
pub(crate) fn span(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "?".into();
    }
    let s = seconds.abs().round() as u64;
    let sign = if seconds < 0.0 && s > 0 { "-" } else { "" };
    let text = if seconds.abs() < 1.0 && seconds != 0.0 {
        format!("{:.0} ms", seconds.abs() * 1000.0)
    } else if s < 60 {
        if seconds.abs() < 10.0 && seconds.fract() != 0.0 {
            format!("{:.1} s", seconds.abs())
        } else {
            format!("{s} s")
        }
    } else if s < 600 {
        let (m, r) = (s / 60, s % 60);
        if r == 0 {
            format!("{m} min")
        } else {
            format!("{m} min {r} s")
        }
    } else if s < 3600 - 30 {
        format!("{} min", (s + 30) / 60)
    } else if s < 86_400 {
        let m = (s + 30) / 60;
        let (h, m) = (m / 60, m % 60);
        if m == 0 {
            format!("{h} h")
        } else {
            format!("{h} h {m} min")
        }
    } else {
        let (d, h) = (s / 86_400, s % 86_400 / 3600);
        if h == 0 {
            format!("{d} d")
        } else {
            format!("{d} d {h} h")
        }
    };
    format!("{sign}{text}")
}

/// A growth rate in the runbooks' unit: `+62.3 MB/h`.
pub(crate) fn mb_per_hour(bytes_per_second: f64) -> String {
    format!("{:+.1} MB/h", bytes_per_second / MB_PER_HOUR)
}

/// Bytes for humans (`212.3 MiB`), from a JSON number.
pub(crate) fn bytes(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", crate::format_bytes((-v).round() as u64))
    } else {
        crate::format_bytes(v.round() as u64)
    }
}

/// A signed byte change for humans: `+180.0 MiB`, `-2.0 MiB`.
pub(crate) fn signed_bytes(v: f64) -> String {
    if v < 0.0 {
        bytes(v)
    } else {
        format!("+{}", bytes(v))
    }
}

/// Percentage of a ratio: `82.9%`.
pub(crate) fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Looks up a path of object keys.
pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// A number at `path`.
pub(crate) fn num(v: &Value, path: &[&str]) -> Option<f64> {
    at(v, path).and_then(Value::as_f64)
}

/// A string at `path`.
pub(crate) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

/// A boolean at `path`.
pub(crate) fn flag(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

/// A scalar at `path` for display (`-` when missing).
pub(crate) fn show(v: &Value, path: &[&str]) -> String {
    match at(v, path) {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_are_utc_calendar_dates() {
        assert_eq!(iso(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_700_000_000.0), "2023-11-14T22:13:20Z");
        assert_eq!(iso(951_782_400.5), "2000-02-29T00:00:00Z");
        assert_eq!(iso(4_102_444_799.0), "2099-12-31T23:59:59Z");
        assert_eq!(clock(1_700_000_000.0), "22:13:20Z");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(45.0), "45 s");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(2.5), "2.5 s");
        assert_eq!(span(90.0), "1 min 30 s");
        assert_eq!(span(720.0), "12 min");
        assert_eq!(span(3510.0), "59 min");
        assert_eq!(span(3590.0), "1 h");
        assert_eq!(span(7500.0), "2 h 5 min");
        assert_eq!(span(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 4 h");
        assert_eq!(mb_per_hour(62.3 * MB_PER_HOUR), "+62.3 MB/h");
    }
}
