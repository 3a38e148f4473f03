//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).
//!
//! The parsers of `/proc`, cgroup files and the CLI's input are private; these functions run
//! them on arbitrary input. The public parsers (`parse_size`, `Config::apply_env`, the
//! endpoint's routes, …) are fuzzed directly.

/// Runs every `/proc/self` text parser (`status`, `limits`, `stat`, `/proc/stat`) on `text`.
pub fn proc_files(text: &str) {
    crate::process::fuzz_parsers(text);
}

/// Runs the cgroup parsers (`/proc/self/cgroup`, `mountinfo`, `memory.max`, v1 limits,
/// `memory.events`) on `text`, and the path resolution on what they find.
pub fn cgroup_files(text: &str) {
    crate::cgroup::fuzz_parsers(text);
}

/// Reads `bytes` as `leakguard analyze` reads a file (CSV or a Prometheus `query_range`
/// answer), then checks, replays and renders each series.
pub fn cli_input(bytes: &[u8]) {
    crate::cli::analyze::fuzz_input(bytes);
}
