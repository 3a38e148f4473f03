//! # leakguard
//!
//! An embeddable, in-process memory-leak guard.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod allocator;
pub mod cgroup;
mod clock;
pub mod endpoint;
mod error;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod process;
pub mod sample;
mod units;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::error::{Error, Result};
pub use self::sample::{MemorySample, Sampler};
pub use self::units::{format_bytes, parse_duration, parse_fraction, parse_size};

/// The jemalloc allocator, for the service's `#[global_allocator]`:
///
/// ```
/// #[global_allocator]
/// static ALLOC: leakguard::Jemalloc = leakguard::Jemalloc;
/// ```
#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use tikv_jemallocator::Jemalloc;
