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
/// The allocator is read at least this often (seconds of the sampler's clock) when a reading
/// is cheap enough: under [`ALLOCATOR_CEILING_BUDGET`] × this (30 ms) of CPU.
pub const ALLOCATOR_MAX_AGE: Duration = Duration::from_secs(60);
/// What reading the allocator may cost on average, as a fraction of the sampler's clock time:
/// 5 µs per second. jemalloc's `epoch` advance merges the statistics of every arena in use
/// (~6 µs each), so with many arenas the allocator is read less often than every sample: the
/// cadence is the last reading's cost divided by this budget, at most [`ALLOCATOR_MAX_AGE`].
/// One arena (~6 µs): every ~1.2 s; 8 arenas (~50 µs): every ~10 s; 128 arenas (~0.8 ms):
/// every 60 s, i.e. ~13 µs per second.
pub const ALLOCATOR_BUDGET: f64 = 5e-6;
/// What a costly reading may cost on average, whatever the freshness: 0.5 ms per second.
/// glibc's `mallinfo2` walks every free chunk of every arena with the arena's lock held
/// (~0.36 ms per 1,000 free chunks): on a heap fragmented into a million free chunks one
/// reading takes ~0.4 s, during which `malloc` in that arena waits. Such a reading is kept
/// longer than [`ALLOCATOR_MAX_AGE`], for its cost divided by this budget (~13 min there), at
/// most [`ALLOCATOR_LONGEST_AGE`]; `age_seconds` says how old the numbers are.
pub const ALLOCATOR_CEILING_BUDGET: f64 = 5e-4;
/// The longest a reading is ever kept: 30 min.
pub const ALLOCATOR_LONGEST_AGE: Duration = Duration::from_secs(30 * 60);

/// How long an allocator reading that cost `cost` seconds of CPU is kept: its cost over
/// [`ALLOCATOR_BUDGET`], at most [`ALLOCATOR_MAX_AGE`] unless that would spend more than
/// [`ALLOCATOR_CEILING_BUDGET`], and never beyond [`ALLOCATOR_LONGEST_AGE`].
pub fn allocator_cadence(cost: f64) -> Duration {
    let cost = if cost.is_finite() { cost.max(0.0) } else { 0.0 };
    let wanted = cost / ALLOCATOR_BUDGET;
    let ceiling = (cost / ALLOCATOR_CEILING_BUDGET).max(ALLOCATOR_MAX_AGE.as_secs_f64());
    Duration::from_secs_f64(wanted.min(ceiling).min(ALLOCATOR_LONGEST_AGE.as_secs_f64()))
}

/// The reading cost that [`allocator_cadence`] turns into `every` (its inverse below the
/// longest age).
fn allocator_cost_of(every: Duration) -> f64 {
    let every = every.as_secs_f64();
    if every <= ALLOCATOR_MAX_AGE.as_secs_f64() {
        every * ALLOCATOR_BUDGET
    } else {
        every * ALLOCATOR_CEILING_BUDGET
    }
}

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
    /// Sources that failed this time, as `"source: reason"` (bounded): the display form of
    /// [`MemorySample::failures`], kept for the report and for code that reads strings.
    pub errors: Vec<String>,
    /// Sources that failed this time, typed (bounded, same order as `errors`).
    #[serde(skip)]
    pub failures: Vec<SampleError>,
}

/// A source the sampler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `/proc/self`.
    Process,
    /// The allocator's statistics.
    Allocator,
    /// The cgroup memory controller.
    Cgroup,
}

impl Source {
    /// The name used in reports and events: `process`, `allocator`, `cgroup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Process => "process",
            Source::Allocator => "allocator",
            Source::Cgroup => "cgroup",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One source that failed while a sample was taken, and why. Displays (and serializes) as
/// `"source: reason"`, the form [`MemorySample::errors`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleError {
    /// Which source failed.
    pub source: Source,
    /// Why, as the source's error displays.
    pub message: String,
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl Serialize for SampleError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
    /// The last allocator reading and when (clock time) it was taken.
    last_allocator: Option<(Duration, Option<AllocatorStats>)>,
    /// How long to keep the last allocator reading, from what reading it cost.
    allocator_every: Duration,
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
            last_allocator: None,
            allocator_every: Duration::ZERO,
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

    /// How long the sampler keeps an allocator reading before taking a new one (clock time);
    /// see [`ALLOCATOR_BUDGET`]. Zero before the first reading.
    pub fn allocator_every(&self) -> Duration {
        self.allocator_every
    }

    /// Makes the next [`Sampler::sample`] read the allocator whatever its cadence: for a sample
    /// that someone asked for (a caller comparing two samples around an allocation wants both
    /// fresh), not for the sampler's own ticks.
    pub fn refresh_allocator(&mut self) {
        self.last_allocator = None;
    }

    /// Takes one sample: a full reading first and then every [`FULL_EVERY`] of clock time, fast
    /// readings otherwise. Sources that fail are listed in [`MemorySample::failures`] (and as
    /// strings in [`MemorySample::errors`]); the rest of
    /// the sample is still filled in.
    ///
    /// `/proc` and the cgroup are read every time. The allocator is read on the first sample
    /// and then every [`Sampler::allocator_every`] (between 0 and [`ALLOCATOR_MAX_AGE`],
    /// chosen from what the last reading cost, see [`ALLOCATOR_BUDGET`]); the samples between
    /// carry the last reading with its [`AllocatorStats::age_seconds`].
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
        let mut failures = Vec::new();
        let mut note = |source: Source, e: &dyn std::fmt::Display| {
            if failures.len() < MAX_ERRORS {
                failures.push(SampleError {
                    source,
                    message: e.to_string(),
                });
            }
        };
        let process = self.process.read(full).unwrap_or_else(|e| {
            note(Source::Process, &e);
            ProcessStats::default()
        });
        let allocator = match &self.last_allocator {
            Some((at, stats)) if now >= *at && now - *at < self.allocator_every => {
                stats.clone().map(|mut s| {
                    s.age_seconds = (now - *at).as_secs_f64();
                    s
                })
            }
            _ => {
                // CPU time, not wall time: a reading preempted by other load on the machine
                // must not make the allocator's numbers stale for a minute.
                let read_started = thread_cpu_seconds();
                let stats = self.allocator.read().unwrap_or_else(|e| {
                    note(Source::Allocator, &e);
                    None
                });
                // At least 0.1 µs (a cadence of 20 ms): a coarse CPU clock may see nothing.
                let cost = (thread_cpu_seconds() - read_started).max(1e-7);
                // At most doubling from one reading to the next, against outliers.
                let previous = allocator_cost_of(self.allocator_every);
                let cost = if self.last_allocator.is_some() {
                    cost.min(2.0 * previous.max(1e-6))
                } else {
                    cost
                };
                self.allocator_every = allocator_cadence(cost);
                self.last_allocator = Some((now, stats.clone()));
                stats
            }
        };
        let cgroup = match self.cgroup.as_mut() {
            Some(reader) => reader.read(full).unwrap_or_else(|e| {
                note(Source::Cgroup, &e);
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
            errors: failures.iter().map(ToString::to_string).collect(),
            failures,
        }
    }
}

/// CPU time of the calling thread, seconds (0 if the clock is unavailable).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn allocator_readings_are_kept_on_their_cadence_and_say_how_old_they_are() {
        let clock = ManualClock::new(1_700_000_000.0);
        let mut sampler = Sampler::new(AllocatorChoice::Glibc);
        let first = sampler.sample(&clock).allocator.expect("glibc statistics");
        assert_eq!(first.age_seconds, 0.0);
        let every = sampler.allocator_every();
        assert!(
            every > Duration::ZERO && every <= ALLOCATOR_MAX_AGE,
            "{every:?}"
        );

        // Between two readings: the last one again, aged by the clock.
        let half = every / 2;
        clock.advance(half);
        let kept = sampler.sample(&clock).allocator.expect("kept");
        assert!(
            (kept.age_seconds - half.as_secs_f64()).abs() < 1e-6,
            "{kept:?}"
        );
        assert_eq!(kept.allocated, first.allocated);

        // Once the cadence has passed: a new reading.
        clock.advance(every);
        let fresh = sampler.sample(&clock).allocator.expect("fresh");
        assert_eq!(fresh.age_seconds, 0.0);

        // A reading as cheap as this one is never kept longer than ALLOCATOR_MAX_AGE.
        clock.advance(ALLOCATOR_MAX_AGE);
        let again = sampler.sample(&clock).allocator.expect("read again");
        assert_eq!(again.age_seconds, 0.0);
    }

    #[test]
    fn costly_readings_are_kept_longer_so_their_average_cost_stays_bounded() {
        let secs = |cost: f64| allocator_cadence(cost).as_secs_f64();
        // Cheap: cost over the budget (one jemalloc arena, ~6 µs: every ~1.2 s).
        assert!((secs(6e-6) - 1.2).abs() < 1e-9);
        // 128 jemalloc arenas (~0.8 ms): the usual ceiling, 60 s.
        assert_eq!(allocator_cadence(0.8e-3), ALLOCATOR_MAX_AGE);
        // Up to 30 ms a reading is still taken every minute.
        assert_eq!(allocator_cadence(0.03), ALLOCATOR_MAX_AGE);
        // mallinfo2 over a million free chunks (~0.4 s): kept ~13 min, 0.5 ms per second.
        let every = secs(0.4);
        assert!((every - 800.0).abs() < 1e-6, "{every}");
        for cost in [0.05, 0.1, 0.4, 0.8] {
            assert!(
                cost / secs(cost) <= ALLOCATOR_CEILING_BUDGET + 1e-12,
                "{cost}"
            );
        }
        // Never beyond the longest age, and nonsense costs do not panic.
        assert_eq!(allocator_cadence(10.0), ALLOCATOR_LONGEST_AGE);
        assert_eq!(allocator_cadence(f64::INFINITY), Duration::ZERO);
        assert_eq!(allocator_cadence(f64::NAN), Duration::ZERO);
        assert_eq!(allocator_cadence(-1.0), Duration::ZERO);
        // The cost each cadence stands for maps back to it.
        for cost in [6e-6, 1e-4, 0.2, 0.4] {
            let every = allocator_cadence(cost);
            assert!((allocator_cost_of(every) - cost).abs() < 1e-9, "{cost}");
        }
    }

    #[test]
    fn a_failing_source_is_named_by_type_and_in_the_same_words_as_before() {
        let missing =
            std::env::temp_dir().join(format!("leakguard-no-proc-{}", std::process::id()));
        let mut sampler = Sampler::with_readers(
            ProcReader::with_root(&missing),
            None,
            Allocator::new(AllocatorChoice::Glibc),
        );
        let sample = sampler.sample(&ManualClock::new(0.0));
        let process: Vec<&SampleError> = sample
            .failures
            .iter()
            .filter(|f| f.source == Source::Process)
            .collect();
        assert_eq!(process.len(), 1, "{:?}", sample.failures);
        let shown: Vec<String> = sample.failures.iter().map(ToString::to_string).collect();
        assert_eq!(shown, sample.errors);
        assert!(
            sample.errors[0].starts_with("process: "),
            "{:?}",
            sample.errors
        );
        let json = serde_json::to_value(&sample).expect("serializes");
        assert_eq!(json["errors"], serde_json::json!(sample.errors));
        assert!(json.get("failures").is_none(), "{json}");
        assert_eq!(
            serde_json::to_value(process[0]).expect("serializes"),
            serde_json::json!(sample.errors[0])
        );
    }
}
