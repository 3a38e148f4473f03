//! wrk (the HTTP load generator, Debian package `wrk`) as the load and overhead benches run
//! it: the command line and what its report says.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

/// What one wrk run printed. A figure wrk did not print is NaN (a count, 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wrk {
    /// Requests completed (`N requests in ...`).
    pub requests: u64,
    /// `Requests/sec:`.
    pub requests_per_sec: f64,
    /// Latency percentiles of `--latency`, in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The largest latency (the `Latency` line's `Max`), ms.
    pub max_ms: f64,
    /// `Non-2xx or 3xx responses:`.
    pub non_2xx: u64,
    /// The sum of `Socket errors:` (connect, read, write, timeout).
    pub socket_errors: u64,
}

impl Default for Wrk {
    fn default() -> Self {
        Wrk {
            requests: 0,
            requests_per_sec: f64::NAN,
            p50_ms: f64::NAN,
            p90_ms: f64::NAN,
            p99_ms: f64::NAN,
            max_ms: f64::NAN,
            non_2xx: 0,
            socket_errors: 0,
        }
    }
}

/// A duration as wrk prints it (`850.00us`, `1.13ms`, `2.00s`, `1.02m`), in milliseconds.
pub fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

/// Reads wrk's report (its standard output).
pub fn parse(out: &str) -> Wrk {
    let mut w = Wrk::default();
    let ms = |v: &str| millis(v).unwrap_or(f64::NAN);
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => w.max_ms = ms(max),
            ["50%", v] => w.p50_ms = ms(v),
            ["90%", v] => w.p90_ms = ms(v),
            ["99%", v] => w.p99_ms = ms(v),
            ["Requests/sec:", v] => w.requests_per_sec = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.socket_errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    w
}

/// The wrk command for `threads` threads holding `conns` connections to `http://{addr}{path}`
/// for `secs` seconds, with a 5 s timeout, the latency distribution, and `script` (Lua) if
/// given.
pub fn command(
    addr: SocketAddr,
    path: &str,
    threads: u32,
    conns: u32,
    secs: u32,
    script: Option<&Path>,
) -> Command {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        "5s".into(),
        "--latency".into(),
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://{addr}{path}"));
    cmd
}

/// The message for a wrk that could not be started.
pub const NOT_FOUND: &str = "cannot run wrk (Debian: apt-get install wrk)";

/// What a finished wrk measured; panics with its output when it failed (a bench stops).
pub fn report(out: &Output) -> Wrk {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What wrk 4.1.0 (Debian) printed with `-t1 -c200 -d3s --timeout 1s --latency` against
    /// Python's `http.server` asked for a missing file (404s, and a few timeouts).
    const REPORT: &str = "Running 3s test @ http://127.0.0.1:18431/missing
  1 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.24ms   36.02ms 838.05ms   99.26%
    Req/Sec     2.29k   142.81     2.41k    90.00%
  Latency Distribution
     50%    2.51ms
     75%    2.83ms
     90%    3.20ms
     99%    6.98ms
  6847 requests in 3.00s, 3.40MB read
  Socket errors: connect 0, read 0, write 0, timeout 4
  Non-2xx or 3xx responses: 6847
Requests/sec:   2281.49
Transfer/sec:      1.13MB
";

    #[test]
    fn a_report_is_read_whole() {
        let w = parse(REPORT);
        assert_eq!(w.requests, 6847);
        assert_eq!(w.requests_per_sec, 2281.49);
        assert_eq!(w.p50_ms, 2.51);
        assert_eq!(w.p90_ms, 3.2);
        assert_eq!(w.p99_ms, 6.98);
        assert_eq!(w.max_ms, 838.05);
        assert_eq!(w.non_2xx, 6847);
        assert_eq!(w.socket_errors, 4);
    }

    #[test]
    fn what_wrk_did_not_print_is_nan_or_zero() {
        let w = parse("Running 1s test @ http://127.0.0.1:1/\n");
        assert!(w.requests_per_sec.is_nan() && w.p99_ms.is_nan() && w.max_ms.is_nan());
        assert_eq!((w.requests, w.non_2xx, w.socket_errors), (0, 0, 0));
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(millis("500.00us"), Some(0.5));
        assert_eq!(millis("1.50ms"), Some(1.5));
        assert_eq!(millis("2.00s"), Some(2000.0));
        assert_eq!(millis("1.00m"), Some(60_000.0));
        assert_eq!(millis("12"), None);
        assert_eq!(millis("x ms"), None);
    }

    #[test]
    fn the_command_line_has_the_script_before_the_url() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let cmd = command(addr, "/x", 1, 32, 4, Some(Path::new("s.lua")));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-t1",
                "-c32",
                "-d4s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                "s.lua",
                "http://127.0.0.1:8080/x"
            ]
        );
    }
}
