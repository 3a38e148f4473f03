//! Parsing and formatting of the units operators write: sizes, durations, fractions.

use crate::error::{Error, Result};
use std::time::Duration;

/// Parses a memory size as operators write it.
///
/// Accepted: plain bytes (`1048576`), binary units (`512KiB`, `512MiB`, `2GiB`, `1TiB`, and the
/// Kubernetes spelling `512Mi`, `2Gi`), the single-letter units of Docker and the JVM, which are
/// binary too (`512k`, `3584m`, `2G`, `1t`, any case), and decimal SI units (`500KB`, `500MB`,
/// `2GB`, `1TB`). A decimal point is allowed (`1.5GiB`). `name` is the setting being parsed
/// and appears in the error.
///
/// ```
/// use leakguard::parse_size;
/// assert_eq!(parse_size("LEAKGUARD_LIMIT", "512MiB").unwrap(), 512 << 20);
/// assert_eq!(parse_size("LEAKGUARD_LIMIT", "2G").unwrap(), 2 << 30);
/// assert_eq!(parse_size("LEAKGUARD_LIMIT", "3584m").unwrap(), 3584 << 20);
/// assert_eq!(parse_size("LEAKGUARD_LIMIT", "2GB").unwrap(), 2_000_000_000);
/// let err = parse_size("LEAKGUARD_LIMIT", "lots").unwrap_err();
/// assert!(err.to_string().contains("LEAKGUARD_LIMIT"));
/// ```
pub fn parse_size(name: &str, value: &str) -> Result<u64> {
    let bad = |reason: &str| Error::config(name, value, reason);
    let s = value.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad(
            "expected a size such as 512MiB, 2G, 3584m or a number of bytes",
        ));
    }
    let unit = unit.trim();
    let multiplier: u64 = match unit {
        "" | "b" | "B" => 1,
        "k" | "K" | "KiB" | "Ki" | "kib" | "ki" => 1 << 10,
        "m" | "M" | "MiB" | "Mi" | "mib" | "mi" => 1 << 20,
        "g" | "G" | "GiB" | "Gi" | "gib" | "gi" => 1 << 30,
        "t" | "T" | "TiB" | "Ti" | "tib" | "ti" => 1 << 40,
        "kB" | "KB" | "kb" => 1_000,
        "MB" | "mb" => 1_000_000,
        "GB" | "gb" => 1_000_000_000,
        "TB" | "tb" => 1_000_000_000_000,
        _ => {
            return Err(bad(
                "unknown unit (use B, KiB, MiB, GiB, TiB, k, m, g, t, KB, MB, GB or TB)",
            ));
        }
    };
    let bytes = if num.contains('.') {
        let n: f64 = num.parse().map_err(|_| bad("not a number"))?;
        let b = n * multiplier as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(bad("too large"));
        }
        b.round() as u64
    } else {
        let n: u64 = num.parse().map_err(|_| bad("not a number or too large"))?;
        n.checked_mul(multiplier).ok_or_else(|| bad("too large"))?
    };
    Ok(bytes)
}

/// Parses a duration: `250ms`, `1s`, `1.5s`, `10m`, `2h`, `1d`, or a plain number of seconds.
///
/// ```
/// use leakguard::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("LEAKGUARD_INTERVAL", "100ms").unwrap(), Duration::from_millis(100));
/// assert_eq!(parse_duration("LEAKGUARD_MIN_UPTIME", "60").unwrap(), Duration::from_secs(60));
/// assert_eq!(parse_duration("LEAKGUARD_MIN_UPTIME", "10m").unwrap(), Duration::from_secs(600));
/// assert!(parse_duration("LEAKGUARD_INTERVAL", "-1s").is_err());
/// ```
pub fn parse_duration(name: &str, value: &str) -> Result<Duration> {
    let bad = |reason: &str| Error::config(name, value, reason);
    let s = value.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad("expected a duration such as 1s, 250ms, 10m or 2h"));
    }
    let n: f64 = num.parse().map_err(|_| bad("not a number"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => n,
        "ms" => n / 1_000.0,
        "us" | "µs" => n / 1_000_000.0,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3_600.0,
        "d" => n * 86_400.0,
        _ => return Err(bad("unknown unit (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad("out of range"))
}

/// Parses a fraction of the limit: `0.8`, `.95` or `80%`; must lie in (0, 1].
///
/// ```
/// use leakguard::parse_fraction;
/// assert_eq!(parse_fraction("LEAKGUARD_WARN", "0.8").unwrap(), 0.8);
/// assert_eq!(parse_fraction("LEAKGUARD_WARN", "80%").unwrap(), 0.8);
/// assert!(parse_fraction("LEAKGUARD_WARN", "1.5").is_err());
/// ```
pub fn parse_fraction(name: &str, value: &str) -> Result<f64> {
    let bad = |reason: &str| Error::config(name, value, reason);
    let s = value.trim();
    let f = if let Some(p) = s.strip_suffix('%') {
        p.trim().parse::<f64>().map_err(|_| bad("not a number"))? / 100.0
    } else {
        s.parse::<f64>().map_err(|_| bad("not a number"))?
    };
    if !(f > 0.0 && f <= 1.0) {
        return Err(bad(
            "must be a fraction of the limit in (0, 1], e.g. 0.8 or 80%",
        ));
    }
    Ok(f)
}

/// Formats bytes for humans: `512.0 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_documented_spelling() {
        let cases = [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512MiB", 512 << 20),
            ("512Mi", 512 << 20),
            ("2G", 2 << 30),
            ("2g", 2 << 30),
            ("3584m", 3584 << 20),
            ("1.5GiB", 3 << 29),
            ("64k", 64 << 10),
            ("1TiB", 1 << 40),
            ("500MB", 500_000_000),
            ("2GB", 2_000_000_000),
            (" 256 MiB ", 256 << 20),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size("X", text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn bad_sizes_name_the_variable_and_the_value() {
        for text in [
            "",
            "MiB",
            "12 parsecs",
            "-5m",
            "1e9",
            "99999999999999999999",
            "20000000T",
            "1..5G",
        ] {
            let err = parse_size("LEAKGUARD_LIMIT", text).unwrap_err().to_string();
            assert!(err.contains("LEAKGUARD_LIMIT"), "{err}");
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn durations_and_fractions() {
        assert_eq!(parse_duration("X", "1s").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_duration("X", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("X", "2h").unwrap(),
            Duration::from_secs(7200)
        );
        assert!(parse_duration("X", "soon").is_err());
        assert!(parse_duration("X", "1e400").is_err());
        assert_eq!(parse_fraction("X", "0.95").unwrap(), 0.95);
        assert_eq!(parse_fraction("X", "90%").unwrap(), 0.9);
        for bad in ["0", "-0.1", "1.01", "NaN", "inf", "half"] {
            assert!(parse_fraction("X", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_format_for_humans() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(512 << 20), "512.0 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
    }
}
