//! Attribution: of the memory growth since the baseline (taken at the end of the warm-up),
//! how much is live heap, how much allocator retention, which caches and which handle kinds
//! grew, said in one sentence.

use crate::units::format_bytes;
use serde::Serialize;

/// What the guard remembers of the moment its warm-up ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// When, seconds since the Unix epoch.
    pub at: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Live heap (allocator `allocated`), bytes, if known.
    pub heap_bytes: Option<u64>,
    /// Weight of each named cache, bytes.
    pub caches: Vec<(String, u64)>,
    /// Open handles by kind.
    pub handles: Vec<(String, u64)>,
}

/// The same quantities now.
pub type Current = Baseline;

/// Growth of one named thing (a cache's bytes, a handle kind's open count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Growth {
    /// The cache or handle kind.
    pub name: String,
    /// How much it grew (bytes for caches, handles for kinds).
    pub delta: i64,
}

/// Where the growth since the baseline went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// When the baseline was taken, seconds since the Unix epoch.
    pub since: f64,
    /// Resident set size change, bytes.
    pub resident_delta: i64,
    /// Live heap change, bytes (`None` without allocator statistics).
    pub heap_delta: Option<i64>,
    /// Resident growth that is not live heap: fragmentation and memory the allocator retains.
    /// A purge returns it; it is not a leak.
    pub retention_delta: Option<i64>,
    /// Caches that grew, largest first (at most 5).
    pub caches: Vec<Growth>,
    /// Handle kinds whose open count grew, largest first (at most 5).
    pub handles: Vec<Growth>,
    /// One sentence for humans.
    pub summary: String,
}

fn signed(delta: i64) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!("{sign}{}", format_bytes(delta.unsigned_abs()))
}

fn growth(before: &[(String, u64)], now: &[(String, u64)]) -> Vec<Growth> {
    let mut out: Vec<Growth> = now
        .iter()
        .map(|(name, v)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b);
            Growth {
                name: name.clone(),
                delta: *v as i64 - was as i64,
            }
        })
        .filter(|g| g.delta > 0)
        .collect();
    out.sort_by(|a, b| b.delta.cmp(&a.delta).then_with(|| a.name.cmp(&b.name)));
    out.truncate(5);
    out
}

/// Compares `now` with `base`.
///
/// ```
/// use leakguard::attribution::{attribute, Baseline};
/// let base = Baseline { resident_bytes: 100 << 20, heap_bytes: Some(80 << 20),
///     caches: vec![("sessions".into(), 10 << 20)], ..Baseline::default() };
/// let now = Baseline { resident_bytes: 280 << 20, heap_bytes: Some(230 << 20),
///     caches: vec![("sessions".into(), 130 << 20)], ..Baseline::default() };
/// let a = attribute(&base, &now);
/// assert_eq!(a.summary, "RSS +180.0 MiB since baseline: +150.0 MiB live heap, \
///     of which +120.0 MiB in cache `sessions`; +30.0 MiB allocator retention");
/// ```
pub fn attribute(base: &Baseline, now: &Current) -> Attribution {
    let resident_delta = now.resident_bytes as i64 - base.resident_bytes as i64;
    let heap_delta = match (base.heap_bytes, now.heap_bytes) {
        (Some(b), Some(n)) => Some(n as i64 - b as i64),
        _ => None,
    };
    let retention_delta = heap_delta.map(|h| resident_delta - h);
    let caches = growth(&base.caches, &now.caches);
    let handles = growth(&base.handles, &now.handles);

    let mut summary = format!("RSS {} since baseline", signed(resident_delta));
    if let Some(h) = heap_delta {
        summary.push_str(&format!(": {} live heap", signed(h)));
        if !caches.is_empty() {
            let parts: Vec<String> = caches
                .iter()
                .take(3)
                .map(|c| format!("{} in cache `{}`", signed(c.delta), c.name))
                .collect();
            summary.push_str(&format!(", of which {}", parts.join(", ")));
        }
        if let Some(r) = retention_delta {
            summary.push_str(&format!("; {} allocator retention", signed(r)));
        }
    } else if !caches.is_empty() {
        let parts: Vec<String> = caches
            .iter()
            .take(3)
            .map(|c| format!("{} in cache `{}`", signed(c.delta), c.name))
            .collect();
        summary.push_str(&format!(": {}", parts.join(", ")));
    }
    if !handles.is_empty() {
        let parts: Vec<String> = handles
            .iter()
            .take(3)
            .map(|g| format!("{} +{}", g.name, g.delta))
            .collect();
        summary.push_str(&format!("; open handles grew: {}", parts.join(", ")));
    }
    Attribution {
        since: base.at,
        resident_delta,
        heap_delta,
        retention_delta,
        caches,
        handles,
        summary,
    }
}

/// Adds what the leak detector knows from inside the process to the sentence: growth inside
/// registered bounded caches (which cannot outgrow their capacity) or growth that tracks the
/// open tracked handles is load, not a leak; and when a leak is flagged, why.
///
/// ```
/// use leakguard::attribution::{attribute, explain, Baseline};
/// use leakguard::trend::{Context, TrendConfig, TrendDetector};
/// let mut d = TrendDetector::new(TrendConfig::default());
/// for i in 0..(4 * 240) {
///     let t = f64::from(i) * 15.0;
///     let cache = 60e6 * t / 3600.0; // a cache filling at 60 MB/h ...
///     let rss = 200e6 + cache + f64::from(i % 7) * 1e5; // ... is all the growth
///     d.observe_with(t, rss as u64, Context { bounded_cache_bytes: cache as u64, open_handles: 0 });
/// }
/// let mut a = attribute(&Baseline::default(), &Baseline { resident_bytes: 440 << 20, ..Baseline::default() });
/// explain(&mut a, d.verdict());
/// assert!(!d.verdict().leak);
/// assert!(a.summary.contains("growth is inside bounded caches"), "{}", a.summary);
/// ```
pub fn explain(a: &mut Attribution, verdict: &crate::trend::Verdict) {
    let load: Vec<&String> = verdict
        .reasons
        .iter()
        .filter(|r| r.starts_with("growth is inside") || r.starts_with("growth tracks"))
        .collect();
    if !load.is_empty() {
        for r in load {
            a.summary.push_str("; ");
            a.summary.push_str(r);
        }
    } else if let Some(first) = verdict.reasons.first().filter(|_| verdict.leak) {
        a.summary.push_str("; leak: ");
        a.summary.push_str(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_shrinking_things_are_said_right() {
        let base = Baseline {
            resident_bytes: 500 << 20,
            heap_bytes: None,
            caches: vec![("a".into(), 50 << 20)],
            handles: vec![("db_conn".into(), 10), ("file".into(), 3)],
            ..Baseline::default()
        };
        let now = Baseline {
            resident_bytes: 450 << 20,
            heap_bytes: None,
            caches: vec![("a".into(), 10 << 20)],
            handles: vec![
                ("db_conn".into(), 1210),
                ("file".into(), 3),
                ("timer".into(), 4),
            ],
            ..Baseline::default()
        };
        let a = attribute(&base, &now);
        assert_eq!(a.resident_delta, -(50 << 20));
        assert!(a.caches.is_empty());
        assert_eq!(
            a.handles,
            vec![
                Growth {
                    name: "db_conn".into(),
                    delta: 1200
                },
                Growth {
                    name: "timer".into(),
                    delta: 4
                }
            ]
        );
        assert_eq!(
            a.summary,
            "RSS -50.0 MiB since baseline; open handles grew: db_conn +1200, timer +4"
        );
    }
}
