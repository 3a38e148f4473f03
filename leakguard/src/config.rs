//! Configuration: the builder's settings and the `LEAKGUARD_*` environment variables that
//! override them.

use crate::allocator::AllocatorChoice;
use crate::error::{Error, Result};
use crate::units::{parse_duration, parse_fraction, parse_size};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The debug endpoint's default address: loopback only, port 6464.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6464";

/// What to do when the restart threshold is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartAction {
    /// Replace the process image in place (`execve`), keeping the listening sockets.
    Reexec,
    /// Exit with this code.
    Exit(i32),
    /// Send this signal to the process itself (e.g. `SIGTERM`).
    Signal(String),
    /// Report only.
    None,
    /// Call the callback set with [`GuardBuilder::on_restart`](crate::GuardBuilder::on_restart).
    Callback,
}

impl RestartAction {
    /// Parses `reexec`, `exit[:code]`, `signal[:NAME]` or `none`.
    ///
    /// ```
    /// use leakguard::RestartAction;
    /// assert_eq!(RestartAction::parse("X", "exit:3").unwrap(), RestartAction::Exit(3));
    /// assert_eq!(RestartAction::parse("X", "signal").unwrap(), RestartAction::Signal("SIGTERM".into()));
    /// assert!(RestartAction::parse("X", "reboot").is_err());
    /// ```
    pub fn parse(name: &str, value: &str) -> Result<Self> {
        let v = value.trim();
        let (head, arg) = match v.split_once(':') {
            Some((h, a)) => (h, Some(a.trim())),
            None => (v, None),
        };
        match (head.to_ascii_lowercase().as_str(), arg) {
            ("reexec", None) => Ok(RestartAction::Reexec),
            ("none", None) => Ok(RestartAction::None),
            ("exit", None) => Ok(RestartAction::Exit(0)),
            ("exit", Some(code)) => code
                .parse::<i32>()
                .ok()
                .filter(|c| (0..=255).contains(c))
                .map(RestartAction::Exit)
                .ok_or_else(|| Error::config(name, value, "exit code must be 0..=255")),
            ("signal", None) => Ok(RestartAction::Signal("SIGTERM".into())),
            ("signal", Some(sig)) => {
                let upper = sig.to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                const KNOWN: [&str; 7] = [
                    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL",
                ];
                if KNOWN.contains(&full.as_str()) {
                    Ok(RestartAction::Signal(full))
                } else {
                    Err(Error::config(
                        name,
                        value,
                        format!("unknown signal (use one of {})", KNOWN.join(", ")),
                    ))
                }
            }
            _ => Err(Error::config(
                name,
                value,
                "expected reexec, exit[:code], signal[:NAME] or none",
            )),
        }
    }
}

impl std::fmt::Display for RestartAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartAction::Reexec => f.write_str("reexec"),
            RestartAction::Exit(c) => write!(f, "exit:{c}"),
            RestartAction::Signal(s) => write!(f, "signal:{s}"),
            RestartAction::None => f.write_str("none"),
            RestartAction::Callback => f.write_str("callback"),
        }
    }
}

/// Where the memory limit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSetting {
    /// From the cgroup the process runs in, if any (the default).
    Cgroup,
    /// A fixed number of bytes.
    Bytes(u64),
}

/// All of the guard's settings. Built by [`GuardBuilder`](crate::GuardBuilder); the
/// environment overrides the builder.
#[derive(Debug, Clone)]
pub struct Config {
    /// The debug endpoint's address; `None` disables it (`LEAKGUARD_ADDR=off`).
    pub addr: Option<SocketAddr>,
    /// The memory limit (`LEAKGUARD_LIMIT`).
    pub limit: LimitSetting,
    /// Where an explicit limit came from (`builder` or `LEAKGUARD_LIMIT`).
    pub limit_origin: &'static str,
    /// Warning threshold as a fraction of the limit (`LEAKGUARD_WARN`, 0.80).
    pub warn: f64,
    /// Critical threshold (`LEAKGUARD_CRITICAL`, 0.90).
    pub critical: f64,
    /// Restart threshold (`LEAKGUARD_RESTART`, 0.95).
    pub restart: f64,
    /// Consecutive samples over a threshold before its state is entered (and under it, less
    /// the hysteresis, before it is left). Default 3.
    pub consecutive_samples: u32,
    /// How far (as a fraction of the limit) usage must fall below a threshold before its state
    /// is left. Default 0.05.
    pub hysteresis: f64,
    /// Sampling interval (`LEAKGUARD_INTERVAL`, 1 s).
    pub interval: Duration,
    /// Bearer token for mutating endpoints (`LEAKGUARD_TOKEN`).
    pub token: Option<String>,
    /// Whether every endpoint requires the token (`LEAKGUARD_AUTH=all`).
    pub auth_all: bool,
    /// The restart action (`LEAKGUARD_RESTART_ACTION`, `reexec`).
    pub restart_action: RestartAction,
    /// No restart before this uptime (`LEAKGUARD_MIN_UPTIME`, 60 s).
    pub min_uptime: Duration,
    /// Which allocator backend to read.
    pub allocator: AllocatorChoice,
    /// Where post-mortem dumps go (`LEAKGUARD_DUMP_DIR`; none: no dumps).
    pub dump_dir: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.parse().ok(),
            limit: LimitSetting::Cgroup,
            limit_origin: "cgroup",
            warn: 0.80,
            critical: 0.90,
            restart: 0.95,
            consecutive_samples: 3,
            hysteresis: 0.05,
            interval: Duration::from_secs(1),
            token: None,
            auth_all: false,
            restart_action: RestartAction::Reexec,
            min_uptime: Duration::from_secs(60),
            allocator: AllocatorChoice::Auto,
            dump_dir: None,
        }
    }
}

/// Parses an endpoint address: `off`, `host:port`, `:port` (loopback) or a bare port
/// (loopback).
pub fn parse_addr(name: &str, value: &str) -> Result<Option<SocketAddr>> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") || v.is_empty() {
        return Ok(None);
    }
    let spelled = if let Ok(port) = v.parse::<u16>() {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = v.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        v.to_owned()
    };
    if let Ok(addr) = spelled.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    // Host names (`localhost:6464`): resolve, without blocking long (local resolution only
    // matters here; a name that needs DNS is an operator error worth reporting).
    match spelled.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(Some)
            .ok_or_else(|| Error::config(name, value, "the name resolves to no address")),
        Err(_) => Err(Error::config(
            name,
            value,
            "expected off, HOST:PORT, :PORT or PORT, e.g. 127.0.0.1:6464",
        )),
    }
}

/// The warning for an endpoint bound to `addr` beyond loopback without a token, if it is.
#[cfg(feature = "http")]
pub(crate) fn exposure_warning(addr: SocketAddr, token: Option<&str>) -> Option<String> {
    if addr.ip().is_loopback() || token.is_some() {
        return None;
    }
    Some(format!(
        "the debug endpoint listens on {addr}, beyond loopback, and LEAKGUARD_TOKEN is not set: \
         anyone who reaches this port reads the report and the metrics (purge and restart stay \
         off). Set LEAKGUARD_TOKEN (and LEAKGUARD_AUTH=all to protect every endpoint), or bind \
         127.0.0.1"
    ))
}

/// A validation error after the environment was applied names the `LEAKGUARD_*` variables
/// that were set for the failing setting (`thresholds` from `LEAKGUARD_WARN`, …).
fn name_the_variables(e: Error, lookup: &impl Fn(&str) -> Option<String>) -> Error {
    let Error::Config {
        name,
        value,
        reason,
    } = e
    else {
        return e;
    };
    let candidates: &[&str] = match name.as_str() {
        "warn" | "critical" | "restart" | "thresholds" => {
            &["LEAKGUARD_WARN", "LEAKGUARD_CRITICAL", "LEAKGUARD_RESTART"]
        }
        "interval" => &["LEAKGUARD_INTERVAL"],
        _ => &[],
    };
    let set: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|v| lookup(v).is_some())
        .collect();
    let name = if set.is_empty() {
        name
    } else {
        format!("{name} (from {})", set.join(", "))
    };
    Error::Config {
        name,
        value,
        reason,
    }
}

impl Config {
    /// Applies the `LEAKGUARD_*` variables found by `lookup` (normally `std::env::var`),
    /// which override what is already set. Stops at the first bad value with an error that
    /// names the variable and the value; nothing is changed in that case.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<()> {
        let mut next = self.clone();
        if let Some(v) = lookup("LEAKGUARD_ADDR") {
            next.addr = parse_addr("LEAKGUARD_ADDR", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_LIMIT") {
            next.limit = LimitSetting::Bytes(parse_size("LEAKGUARD_LIMIT", &v)?);
            next.limit_origin = "LEAKGUARD_LIMIT";
        }
        if let Some(v) = lookup("LEAKGUARD_WARN") {
            next.warn = parse_fraction("LEAKGUARD_WARN", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_CRITICAL") {
            next.critical = parse_fraction("LEAKGUARD_CRITICAL", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_RESTART") {
            next.restart = parse_fraction("LEAKGUARD_RESTART", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_INTERVAL") {
            next.interval = parse_duration("LEAKGUARD_INTERVAL", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_TOKEN") {
            let v = v.trim().to_owned();
            if v.chars().any(char::is_control) {
                // The value is a secret: the error does not repeat it.
                return Err(Error::config(
                    "LEAKGUARD_TOKEN",
                    "(hidden)",
                    "must be a string without control characters; leave it unset for no token",
                ));
            }
            next.token = if v.is_empty() { None } else { Some(v) };
        }
        if let Some(v) = lookup("LEAKGUARD_AUTH") {
            next.auth_all = match v.trim().to_ascii_lowercase().as_str() {
                "all" => true,
                "mutating" | "" => false,
                _ => {
                    return Err(Error::config(
                        "LEAKGUARD_AUTH",
                        &v,
                        "expected `all` or `mutating`",
                    ));
                }
            };
        }
        if let Some(v) = lookup("LEAKGUARD_RESTART_ACTION") {
            next.restart_action = RestartAction::parse("LEAKGUARD_RESTART_ACTION", &v)?;
        }
        if let Some(v) = lookup("LEAKGUARD_MIN_UPTIME") {
            next.min_uptime = parse_duration("LEAKGUARD_MIN_UPTIME", &v)?;
        }
        // An empty value leaves the builder's directory in place.
        if let Some(v) = lookup("LEAKGUARD_DUMP_DIR").filter(|v| !v.is_empty()) {
            next.dump_dir = Some(v.into());
        }
        next.validate()
            .map_err(|e| name_the_variables(e, &lookup))?;
        *self = next;
        Ok(())
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let fractions = format!(
            "warn {}, critical {}, restart {}",
            self.warn, self.critical, self.restart
        );
        for (name, f) in [
            ("warn", self.warn),
            ("critical", self.critical),
            ("restart", self.restart),
        ] {
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::config(name, &f.to_string(), "must lie in (0, 1]"));
            }
        }
        if !(self.warn < self.critical && self.critical < self.restart) {
            return Err(Error::config(
                "thresholds",
                &fractions,
                "must satisfy warn < critical < restart",
            ));
        }
        // An empty token would match an empty Basic password (`go tool pprof` credentials).
        if self
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty() || t.chars().any(char::is_control))
        {
            return Err(Error::config(
                "token",
                "(empty)",
                "must be a non-empty string without control characters; leave it unset for no token",
            ));
        }
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(3600) {
            return Err(Error::config(
                "interval",
                &format!("{:?}", self.interval),
                "must lie between 10ms and 1h",
            ));
        }
        if !(0.0..0.5).contains(&self.hysteresis) {
            return Err(Error::config(
                "hysteresis",
                &self.hysteresis.to_string(),
                "must lie in [0, 0.5)",
            ));
        }
        if self.consecutive_samples == 0 || self.consecutive_samples > 3600 {
            return Err(Error::config(
                "consecutive_samples",
                &self.consecutive_samples.to_string(),
                "must lie in 1..=3600",
            ));
        }
        if let LimitSetting::Bytes(0) = self.limit {
            return Err(Error::config(
                self.limit_origin,
                "0",
                "a limit must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_overrides_the_builder() {
        let mut c = Config {
            interval: Duration::from_secs(5),
            ..Config::default()
        };
        c.apply_env(env(&[
            ("LEAKGUARD_ADDR", "0.0.0.0:9000"),
            ("LEAKGUARD_LIMIT", "3584m"),
            ("LEAKGUARD_WARN", "0.7"),
            ("LEAKGUARD_CRITICAL", "85%"),
            ("LEAKGUARD_RESTART", "0.97"),
            ("LEAKGUARD_INTERVAL", "250ms"),
            ("LEAKGUARD_TOKEN", "s3cret"),
            ("LEAKGUARD_AUTH", "all"),
            ("LEAKGUARD_RESTART_ACTION", "signal:term"),
            ("LEAKGUARD_MIN_UPTIME", "5m"),
            ("LEAKGUARD_DUMP_DIR", "/var/tmp/dumps"),
        ]))
        .unwrap();
        assert_eq!(c.addr, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.limit, LimitSetting::Bytes(3584 << 20));
        assert_eq!(c.limit_origin, "LEAKGUARD_LIMIT");
        assert_eq!((c.warn, c.critical, c.restart), (0.7, 0.85, 0.97));
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(c.auth_all);
        assert_eq!(c.restart_action, RestartAction::Signal("SIGTERM".into()));
        assert_eq!(c.min_uptime, Duration::from_secs(300));
        assert_eq!(c.dump_dir, Some("/var/tmp/dumps".into()));

        // An empty LEAKGUARD_DUMP_DIR keeps what the builder set.
        c.apply_env(env(&[("LEAKGUARD_DUMP_DIR", "")])).unwrap();
        assert_eq!(c.dump_dir, Some("/var/tmp/dumps".into()));
    }

    #[test]
    fn defaults_match_the_operator_contract() {
        let mut c = Config::default();
        c.apply_env(env(&[])).unwrap();
        assert_eq!(c.addr, Some("127.0.0.1:6464".parse().unwrap()));
        assert_eq!((c.warn, c.critical, c.restart), (0.80, 0.90, 0.95));
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.restart_action, RestartAction::Reexec);
        assert_eq!(c.min_uptime, Duration::from_secs(60));
        assert_eq!(c.limit, LimitSetting::Cgroup);
        assert!(c.token.is_none());
        assert!(c.dump_dir.is_none());
        for empty in ["", "   ", "\t"] {
            let with_empty = Config {
                token: Some(empty.to_owned()),
                ..Config::default()
            };
            let error = with_empty
                .validate()
                .expect_err("an empty token is refused");
            assert!(error.to_string().contains("token"), "{error}");
        }
    }

    #[test]
    fn addr_off_and_short_forms() {
        assert_eq!(parse_addr("A", "off").unwrap(), None);
        assert_eq!(
            parse_addr("A", "9100").unwrap(),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            parse_addr("A", ":9100").unwrap(),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            parse_addr("A", "[::1]:9100").unwrap(),
            Some("[::1]:9100".parse().unwrap())
        );
        assert!(parse_addr("LEAKGUARD_ADDR", "nowhere:port").is_err());
    }

    /// Found by the `env` fuzz target: thresholds out of order across variables were
    /// refused naming only `thresholds`, not the variables that set them.
    #[test]
    fn settings_invalid_together_name_the_variables_that_set_them() {
        let mut c = Config::default();
        let before = format!("{c:?}");
        let env = [("LEAKGUARD_WARN", "0.9"), ("LEAKGUARD_CRITICAL", "0.8")];
        let e = c
            .apply_env(|k| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("LEAKGUARD_WARN, LEAKGUARD_CRITICAL"), "{e}");
        assert!(e.contains("warn < critical < restart"), "{e}");
        assert_eq!(format!("{c:?}"), before);

        let e = c
            .apply_env(|k| (k == "LEAKGUARD_INTERVAL").then(|| "1ms".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("LEAKGUARD_INTERVAL"), "{e}");
    }

    #[test]
    fn a_bad_variable_is_named_and_changes_nothing() {
        let mut c = Config::default();
        let err = c
            .apply_env(env(&[
                ("LEAKGUARD_LIMIT", "1G"),
                ("LEAKGUARD_INTERVAL", "often"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LEAKGUARD_INTERVAL") && err.contains("\"often\""),
            "{err}"
        );
        assert_eq!(c.limit, LimitSetting::Cgroup, "nothing applied on error");

        let err = c
            .apply_env(env(&[
                ("LEAKGUARD_WARN", "0.95"),
                ("LEAKGUARD_CRITICAL", "0.9"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("warn < critical < restart"), "{err}");
        for (k, v) in [
            ("LEAKGUARD_RESTART_ACTION", "reboot"),
            ("LEAKGUARD_RESTART_ACTION", "exit:999"),
            ("LEAKGUARD_RESTART_ACTION", "signal:FOO"),
            ("LEAKGUARD_AUTH", "some"),
            ("LEAKGUARD_LIMIT", "0"),
            ("LEAKGUARD_INTERVAL", "1ms"),
        ] {
            let err = c.apply_env(env(&[(k, v)])).unwrap_err().to_string();
            assert!(err.contains(v), "{k}={v}: {err}");
        }
        // A token with a control character is named, and its value (a secret) not repeated.
        let err = c
            .apply_env(env(&[("LEAKGUARD_TOKEN", "abc\u{b}AUTH=all")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LEAKGUARD_TOKEN") && !err.contains("abc"),
            "{err}"
        );
        assert_eq!(c.token, None, "nothing applied on error");
    }
}
