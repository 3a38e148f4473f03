//! The operator's page (`GET /debug/leakguard/ui`) and the history it draws
//! (`GET /debug/leakguard/history`).
//!
//! The page is one static, self-contained HTML file ([`PAGE`]): inline CSS and JavaScript, an
//! inline SVG chart, no external asset, so it works offline and behind any proxy. It carries no
//! data and reflects nothing from the request; its script fetches the JSON report and the
//! history from the same endpoint (paths relative to its own, so a service that mounts the
//! endpoint under a prefix keeps it working) and renders every value with `textContent` or SVG
//! attributes. A strict Content-Security-Policy pins the inline script and style by hash, so no
//! other script can run in the page.
//!
//! Because the page itself holds no data, it is served without the token even with
//! `LEAKGUARD_AUTH=all` (a browser cannot attach a bearer header to a page it navigates to);
//! the data requests it makes carry the token the operator types into it.

use crate::endpoint::{self, EndpointResponse};
use crate::history::HistoryPoint;
use crate::snapshot::Snapshot;
use crate::trend::Severity;
use serde::Serialize;
use std::time::Duration;

/// The page, served as it is.
pub(crate) const PAGE: &str = include_str!("ui.html");

/// SHA-256 (base64) of the page's one inline `<script>` element's content, for the CSP. A test
/// recomputes it from the served page (`tests/python/test_ui_endpoints.py`) and says the right value
/// when the page changes.
const SCRIPT_SHA256: &str = "sha256-e7KrYQlCStGEmaXEl8k4Am6dBVrn/OkX7TioJImB7ys=";
/// SHA-256 (base64) of the page's one inline `<style>` element's content.
const STYLE_SHA256: &str = "sha256-CvUgCk5MhHt846pFn1xItV2uBtj/FmWA4ziTU97/Trc=";

/// `Content-Type` of the page.
const HTML: &str = "text/html; charset=utf-8";

/// Most points of the fine tier (1 s buckets, 10 minutes) the history answers.
const FINE_POINTS: usize = 600;

/// `GET /debug/leakguard/ui`: the page, with headers that let only its own inline script and
/// style run, only same-origin requests be made, and no site frame it.
pub(crate) fn page() -> EndpointResponse {
    let mut r = EndpointResponse::new(200, HTML, PAGE);
    r.headers.push((
        "Content-Security-Policy",
        format!(
            "default-src 'none'; script-src '{SCRIPT_SHA256}'; style-src '{STYLE_SHA256}'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        ),
    ));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    r.headers.push(("X-Frame-Options", "DENY".into()));
    r.headers.push(("Referrer-Policy", "no-referrer".into()));
    r
}

/// Which tiers of the history a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tiers {
    /// The 1 s tier (last 10 minutes).
    pub fine: bool,
    /// The 1 min tier (last 24 hours).
    pub coarse: bool,
}

impl Tiers {
    /// Parses the query of `GET /debug/leakguard/history`: empty, or `tier=fine|coarse|all`.
    /// Anything else is an error that says what is accepted.
    pub(crate) fn parse(query: &str) -> Result<Self, String> {
        let mut tiers = Tiers {
            fine: true,
            coarse: true,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "tier" {
                return Err(format!(
                    "unknown query parameter `{}`: the history takes `tier=fine|coarse|all`",
                    shorten(key)
                ));
            }
            tiers = match value {
                "fine" => Tiers {
                    fine: true,
                    coarse: false,
                },
                "coarse" => Tiers {
                    fine: false,
                    coarse: true,
                },
                "all" => Tiers {
                    fine: true,
                    coarse: true,
                },
                other => {
                    return Err(format!(
                        "bad tier `{}`: use `tier=fine` (1 s, 10 min), `tier=coarse` (1 min, 24 h) or `tier=all`",
                        shorten(other)
                    ));
                }
            };
        }
        Ok(tiers)
    }
}

/// At most 40 characters of what a client sent, for an error message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// One tier of the history as the endpoint answers it.
#[derive(Debug, Clone, Serialize)]
struct TierAnswer {
    /// Bucket width, seconds.
    resolution_seconds: f64,
    /// Points, oldest first.
    points: Vec<HistoryPoint>,
}

/// A point of a line drawn over the history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct LinePoint {
    /// Seconds since the Unix epoch.
    pub t: f64,
    /// Bytes.
    pub bytes: f64,
}

/// The detector's view, ready to draw.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrendAnswer {
    /// Whether a leak is suspected.
    suspected: bool,
    /// none, slow, warning, critical.
    severity: Severity,
    /// Whether the detector is still warming up.
    warming_up: bool,
    /// The floor's growth rate, bytes per second, once there is enough data.
    slope_bytes_per_second: Option<f64>,
    /// The horizon the verdict comes from, seconds.
    horizon_seconds: Option<f64>,
    /// The detector's sentence.
    reason: String,
    /// The floor's line over the horizon: start and end (the newest point's time).
    line: Option<[LinePoint; 2]>,
    /// While a leak is suspected and a limit is known: from the resident size now to the limit
    /// at the growth rate.
    projection: Option<[LinePoint; 2]>,
    /// Seconds until the limit at the growth rate (as in the report).
    oom_eta_seconds: Option<f64>,
    /// When that is, seconds since the Unix epoch.
    oom_at: Option<f64>,
}

/// The limit and thresholds in bytes.
#[derive(Debug, Clone, Serialize)]
struct LimitAnswer {
    bytes: u64,
    source: String,
    warn_bytes: u64,
    critical_bytes: u64,
    restart_bytes: u64,
}

/// The answer of `GET /debug/leakguard/history`.
#[derive(Debug, Clone, Serialize)]
struct HistoryAnswer {
    generated_at: f64,
    limit: Option<LimitAnswer>,
    trend: TrendAnswer,
    fine: Option<TierAnswer>,
    coarse: Option<TierAnswer>,
}

/// `GET /debug/leakguard/history`: the bounded history (at most 600 + 1440 points), the limit
/// and thresholds in bytes, and the detector's trend line and projection.
pub(crate) fn history(
    snapshot: &Snapshot,
    tiers: Tiers,
    fine: Vec<HistoryPoint>,
    coarse: Vec<HistoryPoint>,
    window: Duration,
) -> EndpointResponse {
    let trend = trend_answer(snapshot, &fine, &coarse, window);
    let threshold = |bytes: u64, f: f64| (bytes as f64 * f).floor() as u64;
    let t = snapshot.thresholds;
    let answer = HistoryAnswer {
        generated_at: snapshot.now_unix,
        limit: snapshot.limit.as_ref().map(|l| LimitAnswer {
            bytes: l.bytes,
            source: l.source.clone(),
            warn_bytes: threshold(l.bytes, t.warn),
            critical_bytes: threshold(l.bytes, t.critical),
            restart_bytes: threshold(l.bytes, t.restart),
        }),
        trend,
        fine: tiers.fine.then(|| TierAnswer {
            resolution_seconds: 1.0,
            points: tail(fine, FINE_POINTS),
        }),
        coarse: tiers.coarse.then_some(TierAnswer {
            resolution_seconds: 60.0,
            points: coarse,
        }),
    };
    match serde_json::to_string(&answer) {
        Ok(body) => EndpointResponse::new(200, endpoint::JSON, body),
        Err(e) => EndpointResponse::error(500, &format!("history could not be rendered: {e}")),
    }
}

fn tail(mut points: Vec<HistoryPoint>, n: usize) -> Vec<HistoryPoint> {
    if points.len() > n {
        points.drain(..points.len() - n);
    }
    points
}

fn trend_answer(
    s: &Snapshot,
    fine: &[HistoryPoint],
    coarse: &[HistoryPoint],
    window: Duration,
) -> TrendAnswer {
    let v = &s.verdict;
    let line = v.slope_bytes_per_second.and_then(|slope| {
        let horizon = v.horizon_seconds.unwrap_or(3600.0);
        // The 1 s tier when it reaches back over the whole horizon, else the 1 min one.
        let newest = fine.last().or(coarse.last())?.t;
        let fine_covers = fine.first().is_some_and(|p| p.t <= newest - horizon);
        let points = if fine_covers || coarse.len() < 2 {
            fine
        } else {
            coarse
        };
        floor_line(points, slope, horizon, window.as_secs_f64())
    });
    let latest = fine.last().or(coarse.last());
    let projection = match (s.oom_eta_seconds, &s.limit, latest) {
        (Some(eta), Some(limit), Some(p)) if eta.is_finite() => Some([
            LinePoint {
                t: p.t,
                bytes: p.rss as f64,
            },
            LinePoint {
                t: p.t + eta,
                bytes: limit.bytes as f64,
            },
        ]),
        _ => None,
    };
    TrendAnswer {
        suspected: v.leak,
        severity: v.severity,
        warming_up: v.warming_up,
        slope_bytes_per_second: v.slope_bytes_per_second,
        horizon_seconds: v.horizon_seconds,
        reason: v.reason.clone(),
        line,
        projection,
        oom_eta_seconds: s.oom_eta_seconds,
        oom_at: projection.map(|p| p[1].t),
    }
}

/// The memory floor's line over the last `horizon` seconds of `points` with the detector's
/// `slope`: the floor is the minimum of each `window` (as the detector takes it), and the line
/// goes through the median of the floor's offsets from the slope (Theil–Sen's intercept).
pub(crate) fn floor_line(
    points: &[HistoryPoint],
    slope: f64,
    horizon: f64,
    window: f64,
) -> Option<[LinePoint; 2]> {
    if !slope.is_finite() || !horizon.is_finite() || horizon <= 0.0 {
        return None;
    }
    let newest = points.last()?.t;
    let start = newest - horizon;
    let window = window.max(1.0);
    // Minimum per window, windows counted back from the newest point.
    let mut floor: Vec<(i64, f64, f64)> = Vec::new();
    for p in points.iter().filter(|p| p.t >= start) {
        let index = ((newest - p.t) / window).floor() as i64;
        let value = p.rss_min as f64;
        match floor.last_mut() {
            Some((i, t, min)) if *i == index => {
                if value <= *min {
                    *min = value;
                    *t = p.t;
                }
            }
            _ => floor.push((index, p.t, value)),
        }
    }
    let first = floor.first()?.1;
    let mut offsets: Vec<f64> = floor
        .iter()
        .map(|(_, t, min)| min - slope * (t - newest))
        .collect();
    offsets.sort_by(f64::total_cmp);
    let n = offsets.len();
    let intercept = if n % 2 == 1 {
        offsets[n / 2]
    } else {
        (offsets[n / 2 - 1] + offsets[n / 2]) / 2.0
    };
    Some([
        LinePoint {
            t: first,
            bytes: intercept + slope * (first - newest),
        },
        LinePoint {
            t: newest,
            bytes: intercept,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, rss: u64) -> HistoryPoint {
        HistoryPoint {
            t,
            rss,
            rss_min: rss,
            rss_max: rss,
            heap: 0,
            n: 1,
        }
    }

    #[test]
    fn floor_line_follows_the_floor_of_a_saw_tooth_not_its_middle() {
        // A floor rising 1000 B/s with a 50 kB saw-tooth (period 20 s) on top, for 10 minutes.
        let points: Vec<HistoryPoint> = (0..600)
            .map(|i| {
                let t = 1_000.0 + f64::from(i);
                let saw = f64::from(i % 20) * 2_500.0;
                point(t, (1e8 + 1000.0 * f64::from(i) + saw) as u64)
            })
            .collect();
        let [a, b] = floor_line(&points, 1000.0, 300.0, 20.0).expect("a line");
        assert_eq!(b.t, 1_599.0);
        assert!((a.t - 1_299.0).abs() <= 1.0, "{a:?}");
        // The floor at the newest point is 1e8 + 599 000 minus at most one saw period's rise.
        let floor_now = 1e8 + 599_000.0;
        assert!(
            (b.bytes - floor_now).abs() < 25_000.0,
            "{} vs {floor_now}",
            b.bytes
        );
        assert!(((b.bytes - a.bytes) / (b.t - a.t) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn floor_line_needs_points_and_a_finite_slope() {
        assert_eq!(floor_line(&[], 1.0, 60.0, 1.0), None);
        assert_eq!(floor_line(&[point(1.0, 5)], f64::NAN, 60.0, 1.0), None);
        assert_eq!(floor_line(&[point(1.0, 5)], 1.0, 0.0, 1.0), None);
        let one = floor_line(&[point(10.0, 500)], 2.0, 60.0, 1.0).expect("a line");
        assert_eq!(
            one[1],
            LinePoint {
                t: 10.0,
                bytes: 500.0
            }
        );
    }

    #[test]
    fn history_query_takes_a_tier_and_refuses_anything_else() {
        let all = Tiers {
            fine: true,
            coarse: true,
        };
        assert_eq!(Tiers::parse(""), Ok(all));
        assert_eq!(Tiers::parse("tier=all"), Ok(all));
        assert_eq!(
            Tiers::parse("tier=fine"),
            Ok(Tiers {
                fine: true,
                coarse: false
            })
        );
        assert_eq!(
            Tiers::parse("tier=coarse"),
            Ok(Tiers {
                fine: false,
                coarse: true
            })
        );
        let bad = Tiers::parse("tier=hourly").expect_err("bad tier");
        assert!(bad.contains("bad tier `hourly`"), "{bad}");
        let unknown = Tiers::parse(&format!("{}=1", "x".repeat(100))).expect_err("unknown");
        assert!(unknown.contains("unknown query parameter"), "{unknown}");
        assert!(unknown.len() < 150, "the echo is bounded: {unknown}");
    }

    #[test]
    fn the_page_is_self_contained() {
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        for external in [
            "src=\"http",
            "href=\"http",
            "src='http",
            "@import",
            "url(http",
        ] {
            assert!(!PAGE.contains(external), "external asset: {external}");
        }
        // Data goes in through textContent and attributes, never as markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!PAGE.contains(sink), "{sink} in the page");
        }
        let r = page();
        assert_eq!(r.content_type, "text/html; charset=utf-8");
        let csp = &r
            .headers
            .iter()
            .find(|(k, _)| *k == "Content-Security-Policy")
            .expect("a CSP")
            .1;
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
