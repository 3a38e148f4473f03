//! Thresholds with confirmation and hysteresis: the memory state of the process.

use serde::Serialize;

/// Where memory usage stands against the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryState {
    /// Below the warning threshold (or no limit is known).
    #[default]
    Normal,
    /// At or over the warning threshold (default 80% of the limit).
    Warn,
    /// At or over the critical threshold (default 90%).
    Critical,
    /// At or over the restart threshold (default 95%).
    Restart,
}

impl MemoryState {
    /// `normal`, `warn`, `critical` or `restart`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryState::Normal => "normal",
            MemoryState::Warn => "warn",
            MemoryState::Critical => "critical",
            MemoryState::Restart => "restart",
        }
    }

    /// 0 for normal up to 3 for restart: the value of `leakguard_threshold_state`.
    pub fn as_number(self) -> u8 {
        self as u8
    }

    const ALL: [MemoryState; 4] = [
        MemoryState::Normal,
        MemoryState::Warn,
        MemoryState::Critical,
        MemoryState::Restart,
    ];
}

impl std::fmt::Display for MemoryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thresholds as fractions of the limit, and how they are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Warning fraction.
    pub warn: f64,
    /// Critical fraction.
    pub critical: f64,
    /// Restart fraction.
    pub restart: f64,
    /// Consecutive samples needed to change state.
    pub consecutive_samples: u32,
    /// Usage must fall this far below a threshold to leave its state.
    pub hysteresis: f64,
}

impl Thresholds {
    fn fraction(&self, state: MemoryState) -> f64 {
        match state {
            MemoryState::Normal => 0.0,
            MemoryState::Warn => self.warn,
            MemoryState::Critical => self.critical,
            MemoryState::Restart => self.restart,
        }
    }

    /// The state whose threshold `ratio` has reached, ignoring confirmation.
    pub fn level(&self, ratio: f64) -> MemoryState {
        MemoryState::ALL
            .into_iter()
            .rev()
            .find(|s| ratio >= self.fraction(*s))
            .unwrap_or(MemoryState::Normal)
    }

    /// The highest state that `ratio` still holds when leaving states: each threshold counts
    /// as `hysteresis` lower.
    fn holding_level(&self, ratio: f64) -> MemoryState {
        MemoryState::ALL
            .into_iter()
            .rev()
            .find(|s| *s == MemoryState::Normal || ratio >= self.fraction(*s) - self.hysteresis)
            .unwrap_or(MemoryState::Normal)
    }
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: MemoryState,
    /// The state after.
    pub to: MemoryState,
}

/// Follows usage ratios sample by sample and decides the [`MemoryState`].
///
/// A state is entered only after `consecutive_samples` samples at or over its threshold (a
/// single spike never raises it; after a run the state becomes the lowest level the run held),
/// and left only after as many samples below the threshold less the hysteresis.
///
/// ```
/// use leakguard::{MemoryState, ThresholdTracker, Thresholds};
/// let mut t = ThresholdTracker::new(Thresholds {
///     warn: 0.8, critical: 0.9, restart: 0.95, consecutive_samples: 3, hysteresis: 0.05,
/// });
/// assert_eq!(t.observe(Some(0.99)), None); // one spike
/// assert_eq!(t.observe(Some(0.50)), None);
/// for _ in 0..2 { assert_eq!(t.observe(Some(0.85)), None); }
/// let up = t.observe(Some(0.85)).unwrap();
/// assert_eq!(up.to, MemoryState::Warn);
/// ```
#[derive(Debug, Clone)]
pub struct ThresholdTracker {
    thresholds: Thresholds,
    state: MemoryState,
    up_run: u32,
    up_min: MemoryState,
    down_run: u32,
    down_max: MemoryState,
}

impl ThresholdTracker {
    /// A tracker in state normal.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            state: MemoryState::Normal,
            up_run: 0,
            up_min: MemoryState::Restart,
            down_run: 0,
            down_max: MemoryState::Normal,
        }
    }

    /// The current state.
    pub fn state(&self) -> MemoryState {
        self.state
    }

    /// The thresholds.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Feeds one usage ratio (usage / limit; `None` when no limit is known, which counts as
    /// normal). Returns the transition if the state changed.
    pub fn observe(&mut self, ratio: Option<f64>) -> Option<Transition> {
        let ratio = ratio.filter(|r| r.is_finite()).unwrap_or(0.0);
        let need = self.thresholds.consecutive_samples.max(1);
        let level = self.thresholds.level(ratio);
        let holding = self.thresholds.holding_level(ratio);
        let from = self.state;
        if level > self.state {
            self.down_run = 0;
            self.up_run += 1;
            self.up_min = self.up_min.min(level);
            if self.up_run >= need {
                self.state = self.up_min;
                self.reset_runs();
            }
        } else if holding < self.state {
            self.up_run = 0;
            self.up_min = MemoryState::Restart;
            if self.down_run == 0 {
                self.down_max = holding;
            }
            self.down_run += 1;
            self.down_max = self.down_max.max(holding);
            if self.down_run >= need {
                self.state = self.down_max;
                self.reset_runs();
            }
        } else {
            self.reset_runs();
        }
        (self.state != from).then_some(Transition {
            from,
            to: self.state,
        })
    }

    fn reset_runs(&mut self) {
        self.up_run = 0;
        self.up_min = MemoryState::Restart;
        self.down_run = 0;
        self.down_max = MemoryState::Normal;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tracker() -> ThresholdTracker {
        ThresholdTracker::new(Thresholds {
            warn: 0.8,
            critical: 0.9,
            restart: 0.95,
            consecutive_samples: 3,
            hysteresis: 0.05,
        })
    }

    fn feed(t: &mut ThresholdTracker, ratios: &[f64]) -> Vec<Transition> {
        ratios.iter().filter_map(|r| t.observe(Some(*r))).collect()
    }

    #[test]
    fn single_spikes_never_change_state() {
        let mut t = tracker();
        let changes = feed(&mut t, &[0.5, 0.99, 0.5, 0.99, 0.99, 0.5, 0.97, 0.6]);
        assert!(changes.is_empty());
        assert_eq!(t.state(), MemoryState::Normal);
    }

    #[test]
    fn a_run_enters_the_lowest_level_it_held() {
        let mut t = tracker();
        let changes = feed(&mut t, &[0.85, 0.99, 0.92]);
        assert_eq!(
            changes,
            vec![Transition {
                from: MemoryState::Normal,
                to: MemoryState::Warn
            }]
        );
        let changes = feed(&mut t, &[0.96, 0.96, 0.96]);
        assert_eq!(changes[0].to, MemoryState::Restart);
    }

    #[test]
    fn hysteresis_holds_the_state_until_usage_falls_clearly() {
        let mut t = tracker();
        feed(&mut t, &[0.91, 0.91, 0.91]);
        assert_eq!(t.state(), MemoryState::Critical);
        // Below 0.90 but above 0.85: stays critical.
        assert!(feed(&mut t, &[0.87, 0.86, 0.88, 0.86]).is_empty());
        // Clearly below: 0.80 holds warn (0.80 >= 0.80 - 0.05), so critical -> warn.
        let changes = feed(&mut t, &[0.80, 0.80, 0.80]);
        assert_eq!(changes[0].to, MemoryState::Warn);
        // Down to normal after three samples under 0.75.
        let changes = feed(&mut t, &[0.5, 0.5, 0.5]);
        assert_eq!(changes[0].to, MemoryState::Normal);
    }

    #[test]
    fn no_limit_means_normal() {
        let mut t = tracker();
        feed(&mut t, &[0.85, 0.85, 0.85]);
        for _ in 0..3 {
            t.observe(None);
        }
        assert_eq!(t.state(), MemoryState::Normal);
    }
}
