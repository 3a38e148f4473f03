//! The `leakguard` command (feature `cli`): `analyze` replays a recorded memory series through
//! the leak detector (with `--prometheus`, every series a PromQL query gives: a fleet scan),
//! `top` shows a running guard live, `report` renders a guard's report as text, JSON or the
//! on-call incident update.
//!
//! The binary (`src/bin/leakguard.rs`) only calls [`run`]. Everything here is dependency-free
//! on purpose: a hand-written argument parser for three subcommands and a small blocking
//! HTTP/1.1 client for `http://` URLs, so the feature adds no crate to the build.
//!
//! Exit codes: 0 success, 1 an I/O or network failure (file unreadable, endpoint down,
//! non-200 answer), 2 a usage error or bad input (every error is one line on stderr). The fleet
//! scan (`analyze --prometheus`) exits 2 on every failure, an unreachable server included.

pub(crate) mod analyze;
mod args;
mod fmt;
mod http;
mod input;
mod prometheus;
mod view;

use std::ffi::OsString;
use std::io::Write;

/// Exit code of a successful run.
const EXIT_OK: u8 = 0;
/// Exit code of an I/O or network failure.
const EXIT_IO: u8 = 1;
/// Exit code of a usage error or bad input.
const EXIT_USAGE: u8 = 2;

/// An error that ends the command: one line on stderr and an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Bad arguments (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Bad input data (exit 2).
    pub(crate) fn input(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// A failure to read, connect or fetch (exit 1).
    pub(crate) fn io(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_IO,
            message: message.into(),
        }
    }

    /// The reader went away (`leakguard report URL | head`): stop quietly, successfully.
    pub(crate) fn closed() -> Self {
        Self {
            code: EXIT_OK,
            message: String::new(),
        }
    }

    /// The message on one line (newlines and tabs become spaces).
    fn one_line(&self) -> String {
        self.message
            .split(['\n', '\r', '\t'])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The top-level usage text (`leakguard --help`).
const USAGE: &str = "\
leakguard: replay memory series through leakguard's leak detector; watch and report on a
running guard.

Usage:
  leakguard analyze FILE [--limit SIZE] [--json] [--series LABEL=VALUE]... [--allow-gaps]
  leakguard analyze --prometheus URL --query PROMQL [--start T] [--end T] [--step D]
                    [--limit SIZE] [--json]
  leakguard top URL [--interval DURATION] [--once]
  leakguard report URL [--format text|json|incident]
  leakguard help [SUBCOMMAND]
  leakguard --version

Subcommands:
  analyze   the detector's verdict on a recorded series (CSV or a Prometheus query_range answer),
            or on every series of a PromQL query, fetched from Prometheus (a fleet scan)
  top       a live view of a running guard's /debug/leakguard report
  report    a guard's report as text, JSON, or the on-call incident update

URL is the guard's endpoint, e.g. http://127.0.0.1:6464 (plain HTTP only; the path
/debug/leakguard is added unless given). LEAKGUARD_TOKEN, when set, is sent as a bearer token.

Exit codes: 0 done, 1 I/O or network failure, 2 usage error or bad input.
Run `leakguard help SUBCOMMAND` for the details of one.
";

const ANALYZE_HELP: &str = "\
leakguard analyze: replay a recorded memory series through the online leak detector the guard
runs, in time order, and print its verdict.

Usage:
  leakguard analyze FILE [--limit SIZE] [--json] [--series LABEL=VALUE]... [--allow-gaps]
  leakguard analyze --prometheus URL --query PROMQL [--start T] [--end T] [--step D]
                    [--limit SIZE] [--json]

FILE (`-` reads stdin) is recognized by its content:
  CSV         one `unix_seconds,bytes` sample per line; a header line, blank lines and
              `#` comments are allowed; decimals and exponents are accepted.
  Prometheus  the JSON answer of /api/v1/query_range (resultType matrix), e.g.
              curl -G http://prometheus:9090/api/v1/query_range \\
                --data-urlencode 'query=process_resident_memory_bytes{job=\"api\"}' \\
                --data-urlencode start=... --data-urlencode end=... --data-urlencode step=15
              With several series, each is analyzed and named by its labels; --series
              LABEL=VALUE (repeatable, all must match) keeps only the matching ones.

Options:
  --limit SIZE     the memory limit, for the OOM ETA from the last value (512MiB, 2G, 3584m,
                   2GB or bytes)
  --json           print one JSON object instead of text: leak, detected_at (Unix seconds at
                   which the detector first flagged the leak while replaying, or null),
                   slope_bytes_per_hour, oom_eta_seconds, severity, confidence, samples,
                   first_time, last_time, reason, ... With several series: {\"leak\": any,
                   \"series\": [one such object per series]}.
  --series L=V     keep only series whose label L is V (Prometheus answers)
  --allow-gaps     analyze a series with gaps anyway (a warning on stderr instead of an error)

The detector runs with its defaults (warm-up 10 min; normal growth < 10 MB/h, warning 50 MB/h,
critical 100 MB/h) except its window, which is max(2 min, 4 x the median sampling step) so
that 1-minute scrapes still give several samples per window. A verdict needs about 40 minutes
of samples; shorter series are reported as not enough data.

Fleet scan: --prometheus URL (plain http://, e.g. http://prometheus:9090, with any path
prefix) and --query PROMQL (memory in bytes, e.g. process_resident_memory_bytes{job=\"api\"})
fetch /api/v1/query_range and replay every series the query gives:
  --start T, --end T  Unix seconds or RFC 3339 (2026-12-06T20:00:00Z); by default the 24 hours
                      up to now
  --step D            seconds between samples (15s, 1m, ...); by default the finest of 15s,
                      30s, 1m, 2m, 5m, ... that keeps the range under Prometheus' 11,000 points
                      per series. Longer ranges are fetched in chunks of 11,000 points.
  --limit SIZE        the memory limit of every series, for the OOM ETA
  --json              a JSON array, one object per series with its labels and the fields above
One row per series, leaks first, the nearest OOM ETA first, then the fastest growth. Gaps
are counted, not refused; a series with fewer than two samples is skipped with a warning.
Every failure is one line on stderr with exit code 2: an unreachable server, a 5xx answer, a
bad query (Prometheus' error is quoted), a value that is not bytes (NaN, negative).

Bad input is an error (one line on stderr, exit 2): an empty file, a row that is not two
numbers, times out of order or repeated (the line is named), a gap longer than 10 x the median
step (unless --allow-gaps), NaN, infinite or negative values, times in milliseconds, a
Prometheus error answer or one without series, more than 10 000 000 samples or 1 GiB.
";

const TOP_HELP: &str = "\
leakguard top: a live view of a running guard, refreshed every interval: usage against the
limit and thresholds, growth, the leak verdict and its cause, state, threads and fds, and the
last events. Ctrl-C quits.

Usage:
  leakguard top URL [--interval DURATION] [--once]

Options:
  --interval D   time between refreshes (default 2s; 250ms, 1s, 1m, ...)
  --once         print one frame, without terminal control codes, and exit (for scripts)

URL is the guard's endpoint, e.g. http://127.0.0.1:6464 or 127.0.0.1:6464; only plain http://
is supported. LEAKGUARD_TOKEN, when set, is sent as `Authorization: Bearer ...`. While the
endpoint does not answer (e.g. during a graceful restart) the view says so and keeps trying.
";

const REPORT_HELP: &str = "\
leakguard report: fetch a running guard's report (GET /debug/leakguard) and print it.

Usage:
  leakguard report URL [--format text|json|incident]

Formats:
  text       (default) a readable summary, one section per part of the report
  json       the report as fetched, pretty-printed
  incident   the on-call runbook's \"memory leak update\" filled in: current usage against the
             limit, growth rate, suspected cause (attribution and the detector's reason), and
             the action taken or proposed for the guard's state

URL and LEAKGUARD_TOKEN as for `leakguard top`.
";

/// Runs the command with `args` (without the program name) and returns the exit code.
///
/// ```no_run
/// let code = leakguard::cli::run(std::env::args_os().skip(1));
/// std::process::exit(code.into());
/// ```
pub fn run(args: impl IntoIterator<Item = OsString>) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    let mut stdout = std::io::stdout().lock();
    match dispatch(&args, &mut stdout) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if !e.message.is_empty() {
                let _ = writeln!(std::io::stderr(), "leakguard: {}", e.one_line());
            }
            e.code
        }
    }
}

fn dispatch(args: &[OsString], out: &mut dyn Write) -> Result<(), CliError> {
    let mut words = Vec::with_capacity(args.len());
    for a in args {
        match a.to_str() {
            Some(s) => words.push(s.to_owned()),
            None => {
                return Err(CliError::usage(format!(
                    "argument {a:?} is not valid UTF-8"
                )));
            }
        }
    }
    let Some(first) = words.first().map(String::as_str) else {
        return Err(CliError::usage(
            "missing subcommand: analyze, top or report (see `leakguard --help`)",
        ));
    };
    let rest = &words[1..];
    match first {
        "-h" | "--help" => print(out, USAGE),
        "-V" | "--version" => print(out, &format!("leakguard {}\n", env!("CARGO_PKG_VERSION"))),
        "help" => match rest.first().map(String::as_str) {
            None => print(out, USAGE),
            Some(sub) => print(out, help_of(sub)?),
        },
        "analyze" if wants_prometheus(rest) => prometheus::command(rest, out),
        "analyze" => analyze::command(rest, out),
        "top" => view::top_command(rest, out),
        "report" => view::report_command(rest, out),
        other if other.starts_with('-') => Err(CliError::usage(format!(
            "unknown option {other} (see `leakguard --help`)"
        ))),
        other => Err(CliError::usage(format!(
            "unknown subcommand {other:?}: use analyze, top or report (see `leakguard --help`)"
        ))),
    }
}

/// Whether `analyze`'s arguments ask for a fleet scan (`--prometheus` before any `--`).
fn wants_prometheus(rest: &[String]) -> bool {
    rest.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--prometheus" || a.starts_with("--prometheus="))
}

fn help_of(sub: &str) -> Result<&'static str, CliError> {
    match sub {
        "analyze" => Ok(ANALYZE_HELP),
        "top" => Ok(TOP_HELP),
        "report" => Ok(REPORT_HELP),
        "help" => Ok(USAGE),
        other => Err(CliError::usage(format!(
            "no help for {other:?}: the subcommands are analyze, top and report"
        ))),
    }
}

/// Writes `text` to `out`; a failure to write (closed pipe) is an I/O error.
pub(crate) fn print(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                CliError::closed()
            } else {
                CliError::io(format!("cannot write the output: {e}"))
            }
        })
}
