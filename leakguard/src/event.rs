//! Events: what the guard noticed, as `tracing` events and in a bounded ring for the report.

use serde::Serialize;
use std::collections::VecDeque;

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Informational.
    Info,
    /// Needs attention.
    Warn,
    /// Needs action now.
    Error,
}

impl Level {
    /// `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The guard started.
    Started,
    /// The guard stopped.
    Stopped,
    /// Usage crossed a threshold upwards and the state was raised.
    ThresholdRaised,
    /// Usage fell back below a threshold and the state was lowered.
    ThresholdLowered,
    /// The memory limit in force changed (or was found).
    LimitChanged,
    /// A statistics source failed.
    SourceFailed,
    /// A statistics source works again.
    SourceRecovered,
    /// Code running on the sampler thread panicked; the panic was caught.
    SamplerPanicked,
    /// The debug endpoint could not be started or failed.
    EndpointFailed,
    /// Something about the allocator the operator should know.
    Allocator,
    /// The leak detector flagged sustained growth of the memory floor.
    LeakSuspected,
    /// The leak detector no longer sees sustained growth.
    LeakCleared,
    /// Something about a graceful restart: begun, drain hooks, the action, held back.
    Restart,
    /// A handle kind crossed its `max_open` or `max_age`, or open fds crossed 80% of the fd
    /// limit (and back).
    HandleLimit,
    /// Memory pressure: registered caches were asked to shrink.
    Pressure,
    /// The debug endpoint listens beyond loopback without `LEAKGUARD_TOKEN`.
    Exposed,
    /// Heap profiles: the baseline was taken (or not), a post-mortem dump was written (or not).
    Profile,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When, seconds since the Unix epoch.
    pub unix_seconds: f64,
    /// How serious.
    pub level: Level,
    /// What happened.
    pub kind: EventKind,
    /// One human sentence.
    pub message: String,
}

/// The ring of recent events (bounded) and the count of all events by level.
#[derive(Debug, Clone)]
pub struct EventLog {
    capacity: usize,
    recent: VecDeque<Event>,
    totals: [u64; 3],
}

/// Events kept for the report.
pub const EVENT_CAPACITY: usize = 256;
/// Longest message kept, bytes; longer ones are cut.
const MAX_MESSAGE: usize = 1024;

impl Default for EventLog {
    fn default() -> Self {
        Self::new(EVENT_CAPACITY)
    }
}

impl EventLog {
    /// A log that keeps the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            recent: VecDeque::new(),
            totals: [0; 3],
        }
    }

    /// Adds an event, dropping the oldest when full.
    pub fn push(&mut self, mut event: Event) {
        if event.message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !event.message.is_char_boundary(cut) {
                cut -= 1;
            }
            event.message.truncate(cut);
            event.message.push('…');
        }
        self.totals[event.level as usize] += 1;
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(event);
    }

    /// The recent events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.recent.iter().cloned().collect()
    }

    /// How many events of `level` there were since start.
    pub fn total(&self, level: Level) -> u64 {
        self.totals[level as usize]
    }
}

/// Emits `event` as a `tracing` event with target `leakguard`.
pub(crate) fn trace(event: &Event) {
    let kind = serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match event.level {
        Level::Info => tracing::info!(target: "leakguard", kind = %kind, "{}", event.message),
        Level::Warn => tracing::warn!(target: "leakguard", kind = %kind, "{}", event.message),
        Level::Error => tracing::error!(target: "leakguard", kind = %kind, "{}", event.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_and_counts_all() {
        let mut log = EventLog::new(3);
        for i in 0..10 {
            log.push(Event {
                unix_seconds: f64::from(i),
                level: if i % 2 == 0 { Level::Info } else { Level::Warn },
                kind: EventKind::Started,
                message: "x".repeat(5000),
            });
        }
        let recent = log.recent();
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].unix_seconds, 7.0);
        assert_eq!(log.total(Level::Info), 5);
        assert_eq!(log.total(Level::Warn), 5);
        assert!(recent[0].message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
