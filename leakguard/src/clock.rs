//! Injectable time.
//!
//! Everything in leakguard that depends on time (the sampler's history buckets, thresholds,
//! later the trend detector and TTL caches) reads it through a [`Clock`], so that tests can
//! advance a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time since an arbitrary fixed origin (never goes backwards).
    fn monotonic(&self) -> Duration;
    /// Wall-clock time in seconds since the Unix epoch (may jump).
    fn unix_seconds(&self) -> f64;
}

/// The real clock: [`Instant`] and [`SystemTime`].
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
    fn unix_seconds(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock that moves only when told to: for tests and replays.
///
/// ```
/// use leakguard::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_700_000_000.0);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.monotonic(), Duration::from_secs(90));
/// assert_eq!(clock.unix_seconds(), 1_700_000_090.0);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    start_unix: f64,
    nanos: AtomicU64,
    /// Wall-clock jumps so far, seconds (an `f64`'s bits).
    jumped: AtomicU64,
}

impl ManualClock {
    /// A manual clock at monotonic zero, whose wall clock reads `start_unix` seconds.
    pub fn new(start_unix: f64) -> Self {
        Self {
            inner: Arc::new(ManualInner {
                start_unix,
                nanos: AtomicU64::new(0),
                jumped: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Makes the wall clock jump by `seconds`, back when negative, as when NTP steps it or an
    /// operator sets it; the monotonic clock does not move.
    ///
    /// ```
    /// use leakguard::{Clock, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new(1_700_000_000.0);
    /// clock.jump(-3600.0);
    /// assert_eq!(clock.unix_seconds(), 1_699_996_400.0);
    /// assert_eq!(clock.monotonic(), Duration::ZERO);
    /// ```
    pub fn jump(&self, seconds: f64) {
        let _ = self
            .inner
            .jumped
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::SeqCst))
    }
    fn unix_seconds(&self) -> f64 {
        self.inner.start_unix
            + f64::from_bits(self.inner.jumped.load(Ordering::SeqCst))
            + self.monotonic().as_secs_f64()
    }
}
