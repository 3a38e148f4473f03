//! [`MemorySample`]: one reading of every source, and the [`Sampler`] that takes it.

use crate::allocator::{Allocator, AllocatorChoice, AllocatorStats, AllocatorStatus};
use crate::cgroup::{CgroupReader, CgroupStats};
use crate::clock::Clock;
use crate::process::{ProcReader, ProcessStats};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How often a full reading is taken (fd types, fd limit, peak and swap, cgroup limits): these
/// cost about ten times a fast reading and change slowly.
pub const FULL_EVERY: Duration = Duration::from_secs(30);
/// At most this many source errors are kept per sample.
const MAX_ERRORS: usize = 4;

/// One reading of everything leakguard watches, taken by the sampler.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySample {
    /// When it was taken, seconds since the Unix epoch.
    pub unix_seconds: f64,
    /// The sampler clock's monotonic time when it was taken.
    #[serde(skip)]
    pub monotonic: Duration,
    /// `/proc/self` statistics.
    pub process: ProcessStats,
    /// Allocator statistics; `None` when no backend is available.
    pub allocator: Option<AllocatorStats>,
    /// The cgroup memory controller; `None` when none applies.
    pub cgroup: Option<CgroupStats>,
    /// How long taking this sample took.
    #[serde(serialize_with = "ser_micros", rename = "duration_us")]
    pub duration: Duration,
    /// Sources that failed this time, with the reason (bounded).
    pub errors: Vec<String>,
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

/// Takes [`MemorySample`]s from the real system (or from fixture trees).
#[derive(Debug)]
pub struct Sampler {
    process: ProcReader,
    cgroup: Option<CgroupReader>,
    allocator: Allocator,
    taken: u64,
    last_full: Option<Duration>,
}

impl Sampler {
    /// A sampler of this process, with the allocator backend chosen by `choice`.
    pub fn new(choice: AllocatorChoice) -> Self {
        Self::with_readers(
            ProcReader::new(),
            Some(CgroupReader::new()),
            Allocator::new(choice),
        )
    }

    /// A sampler over the given readers (fixture trees in tests).
    pub fn with_readers(
        process: ProcReader,
        cgroup: Option<CgroupReader>,
        allocator: Allocator,
    ) -> Self {
        Self {
            process,
            cgroup,
            allocator,
            taken: 0,
            last_full: None,
        }
    }

    /// What was detected about the allocator.
    pub fn allocator_status(&self) -> &AllocatorStatus {
        self.allocator.status()
    }

    /// Asks the allocator to return free memory to the OS (see [`Allocator::purge`]).
    pub fn purge_allocator(&self) -> crate::Result<()> {
        self.allocator.purge()
    }

    /// How many samples were taken.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Takes one sample: a full reading first and then every [`FULL_EVERY`] of clock time, fast
    /// readings otherwise. Sources that fail are listed in [`MemorySample::errors`]; the rest of
    /// the sample is still filled in.
    pub fn sample(&mut self, clock: &dyn Clock) -> MemorySample {
        let started = Instant::now();
        let now = clock.monotonic();
        let full = self
            .last_full
            .is_none_or(|t| now.saturating_sub(t) >= FULL_EVERY || now < t);
        if full {
            self.last_full = Some(now);
        }
        self.taken += 1;
        let mut errors = Vec::new();
        let mut note = |source: &str, e: &dyn std::fmt::Display| {
            if errors.len() < MAX_ERRORS {
                errors.push(format!("{source}: {e}"));
            }
        };
        let process = self.process.read(full).unwrap_or_else(|e| {
            note("process", &e);
            ProcessStats::default()
        });
        let allocator = self.allocator.read().unwrap_or_else(|e| {
            note("allocator", &e);
            None
        });
        let cgroup = match self.cgroup.as_mut() {
            Some(reader) => reader.read(full).unwrap_or_else(|e| {
                note("cgroup", &e);
                None
            }),
            None => None,
        };
        MemorySample {
            unix_seconds: clock.unix_seconds(),
            monotonic: clock.monotonic(),
            process,
            allocator,
            cgroup,
            duration: started.elapsed(),
            errors,
        }
    }
}
