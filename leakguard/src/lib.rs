//! # leakguard
//!
//! An embeddable, in-process memory-leak guard. A service starts one [`Guard`]; a background
//! thread then samples memory every second ([`sample::Sampler`]: `/proc/self`, the cgroup
//! limit, jemalloc or glibc allocator statistics), follows usage through the threshold states
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
pub mod config;
pub mod endpoint;
mod error;
pub mod event;
mod exposition;
pub mod extensions;
mod fork;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "jemalloc")]
mod global_alloc;
mod guard;
pub mod handles;
mod handover;
pub mod history;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod panics;
pub mod process;
pub mod profile;
pub mod report;
pub mod restart;
pub mod sample;
mod snapshot;
pub mod testing;
pub mod threshold;
pub mod trend;
mod ui;
pub mod units;

// What a service author uses: the guard, its settings and errors, its report and events, the
// handles to track, the listeners handed over at a restart, and the clocks tests drive.
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::config::{Config, LimitSetting, RestartAction};
pub use self::error::{Error, Result};
pub use self::event::{Event, EventKind, Level};
pub use self::guard::{Guard, GuardBuilder};
pub use self::handles::{HandleGuard, HandleKind, KindConfig, Tracked, track};
pub use self::handover::{keep_for_handover, listener, release};
pub use self::report::Report;
pub use self::sample::MemorySample;
pub use self::threshold::MemoryState;

// Former root names, kept so nothing breaks; each lives in its module now.
#[deprecated(note = "use `leakguard::config::{DEFAULT_ADDR, parse_addr}`")]
#[doc(hidden)]
pub use self::config::{DEFAULT_ADDR, parse_addr};
#[deprecated(note = "use `leakguard::event::{EVENT_CAPACITY, EventLog}`")]
#[doc(hidden)]
pub use self::event::{EVENT_CAPACITY, EventLog};
#[deprecated(note = "renamed `leakguard::extensions`")]
#[doc(hidden)]
pub use self::extensions as extend;
#[deprecated(note = "use `leakguard::history::{History, HistoryPoint, Tier}`")]
#[doc(hidden)]
pub use self::history::{History, HistoryPoint, Tier};
#[deprecated(note = "use `leakguard::report::{Limit, AllocatorSection, …}`")]
#[doc(hidden)]
pub use self::report::{
    AllocatorSection, LeakSection, Limit, LimitSection, MemorySection, RestartSection,
    SamplerSection,
};
#[deprecated(note = "use `leakguard::restart::{RestartRecord, handover_names}`")]
#[doc(hidden)]
pub use self::restart::{RestartRecord, handover_names};
#[deprecated(note = "use `leakguard::sample::Sampler`")]
#[doc(hidden)]
pub use self::sample::Sampler;
#[deprecated(note = "use `leakguard::threshold::{ThresholdTracker, Thresholds, Transition}`")]
#[doc(hidden)]
pub use self::threshold::{ThresholdTracker, Thresholds, Transition};
#[deprecated(note = "use `leakguard::units::{format_bytes, parse_duration, …}`")]
#[doc(hidden)]
pub use self::units::{format_bytes, parse_duration, parse_fraction, parse_size};

#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use self::global_alloc::Jemalloc;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The guides' Rust examples (`docs/*.md`), compiled as doctests like the README's.
#[cfg(doctest)]
#[doc = include_str!("../../docs/restart.md")]
#[doc = include_str!("../../docs/heap-profiles.md")]
#[doc = include_str!("../../docs/endpoints.md")]
#[doc = include_str!("../../docs/operators-guide.md")]
#[doc = include_str!("../../docs/python.md")]
struct GuideDoctests;

/// Links between the README, the guides and the other top-level documents must resolve.
#[cfg(test)]
mod doc_links;

/// The top-level modules depend on each other one way (no import cycles).
#[cfg(test)]
mod module_deps;
