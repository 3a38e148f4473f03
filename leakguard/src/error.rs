//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in leakguard.
///
/// leakguard never panics the host service on bad input or a failing OS call: every such
/// condition surfaces as one of these variants (or, inside the background sampler, as an
/// event in the report).
///
/// Its `Debug` reads as its `Display` sentence, so that `fn main() -> Result<(), Error>`
/// prints what went wrong, not the variant's fields.
///
/// ```
/// let e = leakguard::parse_size("LEAKGUARD_LIMIT", "lots").unwrap_err();
/// assert_eq!(format!("{e:?}"), e.to_string());
/// assert!(format!("{e:?}").starts_with("invalid value \"lots\" for LEAKGUARD_LIMIT: "));
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (builder or environment variable) could not be understood.
    #[error("invalid value {value:?} for {name}: {reason}")]
    Config {
        /// Name of the setting, e.g. `LEAKGUARD_LIMIT`.
        name: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A file leakguard reads (under `/proc` or the cgroup tree) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content was not in the expected format.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The allocator statistics could not be read.
    #[error("allocator statistics unavailable: {0}")]
    Allocator(String),
    /// A heap profile could not be taken (profiling off, or the dump failed); the message says
    /// how to switch profiling on when that is the cause.
    #[error("heap profile unavailable: {0}")]
    Profile(String),
    /// A restart was asked for and refused: one is under way, or the per-hour limit is
    /// reached.
    #[error("restart refused: {0}")]
    RestartRefused(String),
    /// A socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What leakguard was doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Result alias with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(name: &str, value: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}
