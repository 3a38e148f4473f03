//! # leakguard
//!
//! An embeddable, in-process memory-leak guard. A service starts one [`Guard`]; a background
//! thread then samples memory every second ([`Sampler`]: `/proc/self`, the cgroup limit, jemalloc
//! or glibc allocator statistics), follows usage through the threshold states
//! ([`MemoryState`]), runs the online leak detector ([`trend`]), reports tracked handles
//! ([`handles`]) and registered caches ([`cache`]), serves the debug endpoint (feature `http`),
//! records metrics through the `metrics` facade and events through `tracing`, and restarts the
//! process gracefully in place when the restart threshold is held ([`restart`], [`listener`]).
//!
//! ```
//! use leakguard::{Guard, MemoryState};
//!
//! let guard = Guard::builder()
//!     .limit(64 << 30)          // or the cgroup's, when left out
//!     .no_endpoint()            // the built-in endpoint listens on 127.0.0.1:6464 by default
//!     .ignore_env()             // LEAKGUARD_* variables would override the builder
//!     .start()?;
//! assert_eq!(guard.state(), MemoryState::Normal);
//! let report = guard.report();
//! assert!(report.memory.resident_bytes.unwrap() > 0);
//! assert!(guard.render_metrics().contains("process_resident_memory_bytes"));
//! guard.stop();
//! # Ok::<(), leakguard::Error>(())
//! ```
//!
//! Operators configure it with the `LEAKGUARD_*` environment variables (address, limit,
//! thresholds, interval, token, restart action, minimum uptime); see the README.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod allocator;
pub mod attribution;
pub mod cache;
pub mod cgroup;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod clock;
mod config;
pub mod endpoint;
mod error;
mod event;
mod exposition;
pub mod extend;
mod fork;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "jemalloc")]
mod global_alloc;
pub mod handles;
mod handover;
mod history;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod process;
pub mod profile;
mod report;
pub mod restart;
pub mod sample;
mod snapshot;
pub mod testing;
mod threshold;
pub mod trend;
mod ui;
mod units;
mod watchdog;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::config::{Config, DEFAULT_ADDR, LimitSetting, RestartAction, parse_addr};
pub use self::error::{Error, Result};
pub use self::event::{EVENT_CAPACITY, Event, EventKind, EventLog, Level};
pub use self::handles::{HandleGuard, HandleKind, KindConfig, Tracked, track};
pub use self::handover::{RestartRecord, handover_names, keep_for_handover, listener, release};
pub use self::history::{History, HistoryPoint, Tier};
pub use self::report::{
    AllocatorSection, LeakSection, LimitSection, MemorySection, Report, RestartSection,
    SamplerSection,
};
pub use self::sample::{MemorySample, Sampler};
pub use self::snapshot::Limit;
pub use self::threshold::{MemoryState, ThresholdTracker, Thresholds, Transition};
pub use self::units::{format_bytes, parse_duration, parse_fraction, parse_size};
pub use self::watchdog::{Guard, GuardBuilder};

#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use self::global_alloc::Jemalloc;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
