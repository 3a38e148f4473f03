//! The bounded memory history: 1 s resolution for the last 10 minutes and 1 min resolution
//! for the last 24 hours, whatever the sampling interval.

use crate::sample::MemorySample;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// One bucket of the history: the samples taken within one second (or one minute).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Time of the bucket's last sample, seconds since the Unix epoch.
    pub t: f64,
    /// Resident set size at the bucket's last sample, bytes.
    pub rss: u64,
    /// Smallest resident set size in the bucket (the floor the leak detector follows).
    pub rss_min: u64,
    /// Largest resident set size in the bucket.
    pub rss_max: u64,
    /// Live allocator bytes at the bucket's last sample (0 without allocator statistics).
    pub heap: u64,
    /// Samples in the bucket.
    pub n: u32,
}

impl HistoryPoint {
    fn from_sample(s: &MemorySample) -> Self {
        let rss = s.process.resident_bytes;
        Self {
            t: s.unix_seconds,
            rss,
            rss_min: rss,
            rss_max: rss,
            heap: s.allocator.as_ref().map_or(0, |a| a.allocated),
            n: 1,
        }
    }

    fn merge(&mut self, s: &MemorySample) {
        let next = Self::from_sample(s);
        self.t = next.t;
        self.rss = next.rss;
        self.heap = next.heap;
        self.rss_min = self.rss_min.min(next.rss);
        self.rss_max = self.rss_max.max(next.rss);
        self.n = self.n.saturating_add(1);
    }
}

/// One resolution: completed buckets in a ring plus the bucket being filled.
#[derive(Debug, Clone)]
pub struct Tier {
    width: Duration,
    capacity: usize,
    done: VecDeque<HistoryPoint>,
    current: Option<(u64, HistoryPoint)>,
}

impl Tier {
    /// A tier of `capacity` buckets of `width` each.
    pub fn new(width: Duration, capacity: usize) -> Self {
        Self {
            width,
            capacity: capacity.max(1),
            done: VecDeque::with_capacity(capacity.max(1)),
            current: None,
        }
    }

    fn push(&mut self, sample: &MemorySample) {
        let width = self.width.as_nanos().max(1);
        let index = u64::try_from(sample.monotonic.as_nanos() / width).unwrap_or(u64::MAX);
        match &mut self.current {
            Some((i, point)) if *i == index => point.merge(sample),
            _ => {
                if let Some((_, point)) = self.current.take() {
                    if self.done.len() == self.capacity {
                        self.done.pop_front();
                    }
                    self.done.push_back(point);
                }
                self.current = Some((index, HistoryPoint::from_sample(sample)));
            }
        }
    }

    /// The points, oldest first, including the bucket being filled; at most `capacity`.
    pub fn points(&self) -> Vec<HistoryPoint> {
        let mut out: Vec<HistoryPoint> = self.done.iter().copied().collect();
        if let Some((_, p)) = &self.current {
            if out.len() == self.capacity {
                out.remove(0);
            }
            out.push(*p);
        }
        out
    }

    /// Bucket width.
    pub fn width(&self) -> Duration {
        self.width
    }

    /// Number of points held (completed buckets plus the current one).
    pub fn len(&self) -> usize {
        (self.done.len() + usize::from(self.current.is_some())).min(self.capacity)
    }

    /// Whether no sample was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.current.is_none()
    }
}

/// The guard's history (see docs/architecture.md): two tiers fed by every sample.
#[derive(Debug, Clone)]
pub struct History {
    /// 1 s buckets, 10 minutes.
    pub fine: Tier,
    /// 1 min buckets, 24 hours.
    pub coarse: Tier,
}

impl Default for History {
    fn default() -> Self {
        Self {
            fine: Tier::new(Duration::from_secs(1), 600),
            coarse: Tier::new(Duration::from_secs(60), 1440),
        }
    }
}

impl History {
    /// Adds one sample to both tiers.
    pub fn push(&mut self, sample: &MemorySample) {
        self.fine.push(sample);
        self.coarse.push(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn sample_at(clock: &ManualClock, rss: u64) -> MemorySample {
        let mut s = MemorySample {
            unix_seconds: clock.unix_seconds(),
            monotonic: clock.monotonic(),
            ..MemorySample::default()
        };
        s.process.resident_bytes = rss;
        s
    }

    #[test]
    fn sub_second_samples_fold_into_one_second_buckets_with_their_floor() {
        let clock = ManualClock::new(1_000.0);
        let mut h = History::default();
        for rss in [50, 40, 60, 55] {
            h.push(&sample_at(&clock, rss));
            clock.advance(Duration::from_millis(250));
        }
        h.push(&sample_at(&clock, 70)); // next second
        let pts = h.fine.points();
        assert_eq!(pts.len(), 2);
        assert_eq!(
            (pts[0].rss_min, pts[0].rss_max, pts[0].rss, pts[0].n),
            (40, 60, 55, 4)
        );
        assert_eq!(pts[1].rss, 70);
        assert_eq!(h.coarse.points().len(), 1);
        assert_eq!(h.coarse.points()[0].rss_min, 40);
    }

    #[test]
    fn a_day_of_one_second_samples_stays_bounded() {
        let clock = ManualClock::new(0.0);
        let mut h = History::default();
        for i in 0..(2 * 86_400u64) {
            h.push(&sample_at(&clock, i));
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(h.fine.len(), 600);
        assert_eq!(h.coarse.len(), 1440);
        let fine = h.fine.points();
        assert_eq!(fine.last().map(|p| p.rss), Some(2 * 86_400 - 1));
        assert_eq!(fine[0].rss, 2 * 86_400 - 600);
        let coarse = h.coarse.points();
        // Oldest minute kept is exactly 24 h before the newest.
        assert_eq!(coarse[1439].t - coarse[0].t, 1439.0 * 60.0);
        assert!(coarse.windows(2).all(|w| w[0].t < w[1].t));
    }
}
