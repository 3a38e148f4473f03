//! The registry of kinds and their counters: the hot path of [`track`](super::track).
//!
//! # Layout
//!
//! A kind is a `'static` [`Kind`] in a fixed array of [`MAX_KINDS`] + 1 slots (the last one
//! is `other`), created on first use and never freed. Each kind has one [`Shard`] per
//! thread group (a power of two between 8 and 32, from the number of CPUs), each shard
//! 128 bytes and 128-byte aligned so two threads on the same kind never write the same
//! cache line (nor an adjacent pair, which some CPUs prefetch together). A shard holds, for
//! each of [`SLOTS`] *generations*, a count of handles opened and one of handles closed.
//!
//! Opening a handle adds one to `opened[current generation]` in the calling thread's shard;
//! dropping its guard adds one to `closed[its generation]` in the dropping thread's shard:
//! two uncontended atomic additions, no lock, no allocation. Totals are sums over shards
//! and generations, so they are exact.
//!
//! # Generations (the age of the oldest open handle)
//!
//! A generation is a stretch of time, at least [`GENERATION`] long. The registry records
//! when each of the eight generation slots began and ended. When the current generation is
//! old enough, housekeeping (a report, a limit check, a sampled open) starts a new one in a
//! slot that no open handle belongs to any more. When all eight slots still hold open
//! handles, the current generation simply goes on. The oldest open handle was therefore
//! opened during the oldest generation that still has open handles, which bounds its age
//! from both sides: at least `now - end`, at most `now - start`. For a leak (handles that
//! never close) the generations are short and the bound is tight (to [`GENERATION`]); it
//! is loose only when a generation had to be prolonged because every slot was busy.

use super::sites::{self, MAX_DEPTH, NO_ENTRY};
use super::{HandleGuard, KindConfig};
use crate::clock::{Clock, SystemClock};
use parking_lot::{Mutex, RwLock};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

/// Kinds with their own name; more names are counted as [`OTHER`].
pub const MAX_KINDS: usize = 256;
/// The kind that names beyond [`MAX_KINDS`] are folded into.
pub const OTHER: &str = "other";
/// Longest kind name kept, bytes; longer names are cut (at a character boundary).
pub const MAX_NAME_BYTES: usize = 64;
/// Sample one in this many opens of a kind unless configured otherwise.
pub const DEFAULT_SAMPLE_EVERY: u32 = 128;
/// Stack captures a kind sampled at the registry default may make per second, about
/// (see [`set_capture_budget`](super::set_capture_budget)).
pub const DEFAULT_CAPTURES_PER_SECOND: u32 = 10;
/// The capture budget's window: the sampling rate is set anew at least this often.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(1);
/// The budget slows a kind's sampling down by this factor at most.
const MAX_SLOWDOWN_SHIFT: u32 = 16;
/// The shortest generation (see the [module documentation](super#precision)).
pub const GENERATION: Duration = Duration::from_secs(1);
/// Generation slots per kind.
pub(crate) const SLOTS: usize = 8;
/// Distinct folded names remembered (to count them); beyond, the count is a lower bound.
const MAX_FOLDED_NAMES: usize = 4096;
/// Entries of the per-thread cache from `&'static str` to kind.
const CACHE_ENTRIES: usize = 32;
const OTHER_INDEX: usize = MAX_KINDS;
const UNASSIGNED: usize = usize::MAX;

/// One thread group's counters for one kind.
#[repr(align(128))]
pub(crate) struct Shard {
    opened: [AtomicU64; SLOTS],
    closed: [AtomicU64; SLOTS],
}

impl Shard {
    fn new() -> Self {
        Self {
            opened: std::array::from_fn(|_| AtomicU64::new(0)),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A kind of handle: its counters, configuration and generations.
pub(crate) struct Kind {
    shards: Box<[Shard]>,
    mask: usize,
    /// The current generation's slot.
    cur: AtomicUsize,
    /// Sample an open when the thread's 32-bit random number is below this
    /// (`2^32 / sample_every`; 0 = never, `2^32` = always), lowered by the capture budget.
    threshold: AtomicU64,
    /// The threshold of the configured rate, and whether the capture budget applies to it.
    base: AtomicU64,
    budgeted: std::sync::atomic::AtomicBool,
    /// Untagged captures since the budget's window began.
    window_captures: AtomicU64,
    /// Position in the registry (`MAX_KINDS` for `other`).
    pub(crate) index: u16,
    /// The name (at most [`MAX_NAME_BYTES`]).
    pub(crate) name: Box<str>,
    peak: AtomicU64,
    state: Mutex<KindState>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What only housekeeping and configuration touch.
struct KindState {
    config: KindConfig,
    suspect: bool,
    /// Registry-clock nanoseconds at which the capture budget's window began.
    window_start: u64,
    /// Registry-clock nanoseconds at which each slot's generation began.
    starts: [u64; SLOTS],
    /// And ended; `None` for the current one.
    ends: [Option<u64>; SLOTS],
}

/// Counts of one kind at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KindStats {
    pub opened: u64,
    pub closed: u64,
    pub open: u64,
    pub peak: u64,
    /// Lower and upper bound of the oldest open handle's age, nanoseconds.
    pub oldest: Option<(u64, u64)>,
}

/// Per-slot reading of the counters.
struct Reading {
    opened: u64,
    closed: u64,
    slot_open: [u64; SLOTS],
}

impl Kind {
    fn new(index: usize, name: &str, now: u64) -> Self {
        let shards: Box<[Shard]> = (0..*SHARDS).map(|_| Shard::new()).collect();
        let config = KindConfig::default();
        let kind = Self {
            mask: shards.len() - 1,
            shards,
            cur: AtomicUsize::new(0),
            threshold: AtomicU64::new(0),
            base: AtomicU64::new(0),
            budgeted: std::sync::atomic::AtomicBool::new(false),
            window_captures: AtomicU64::new(0),
            index: u16::try_from(index).unwrap_or(u16::MAX),
            name: name.into(),
            peak: AtomicU64::new(0),
            state: Mutex::new(KindState {
                config,
                suspect: false,
                window_start: now,
                starts: [now; SLOTS],
                ends: [Some(now); SLOTS],
            }),
        };
        kind.state.lock().ends[0] = None;
        kind.refresh_threshold();
        kind
    }

    /// Counts one open in the calling thread's shard; samples it one time in N, recording
    /// the native call stack.
    #[inline]
    pub(crate) fn open(&'static self) -> HandleGuard {
        // A closure, not the function itself: called through `FnOnce`, a function item gets a
        // `core::ops::function::FnOnce::call_once` frame (in unoptimized builds), which the
        // report would take for the caller; the closure's frame is leakguard's own.
        #[allow(clippy::redundant_closure)]
        self.open_with(|frames| sites::capture(frames))
    }

    /// Counts one open; when it is sampled, `capture` fills in its creation site (the frames
    /// it wrote, as a count). `capture` is not called on the unsampled path.
    #[inline]
    pub(crate) fn open_with(
        &'static self,
        capture: impl FnOnce(&mut [usize; MAX_DEPTH]) -> usize,
    ) -> HandleGuard {
        let (shard, random, tag) = LOCAL.with(|l| {
            let shard = l.shard();
            (shard, l.random(), l.tag.get())
        });
        let slot = self.cur.load(Ordering::Relaxed) % SLOTS;
        if let Some(s) = self.shards.get(shard & self.mask) {
            s.opened[slot].fetch_add(1, Ordering::Relaxed);
        }
        let threshold = self.threshold.load(Ordering::Relaxed);
        if u64::from(random) < threshold || tag != 0 {
            return self.open_sampled(slot, tag, threshold, capture);
        }
        HandleGuard {
            kind: self,
            slot: slot as u8,
            entry: NO_ENTRY,
        }
    }

    /// Counts one close of a handle of generation `slot`, in the calling thread's shard.
    #[inline]
    pub(crate) fn close(&self, slot: u8) {
        let shard = LOCAL.with(Local::shard);
        if let Some(s) = self.shards.get(shard & self.mask) {
            s.closed[usize::from(slot) % SLOTS].fetch_add(1, Ordering::Release);
        }
    }

    /// The sampled part of an open: capture the stack, record the handle, and do the
    /// kind's housekeeping if nobody else is doing it.
    #[cold]
    #[inline(never)]
    fn open_sampled(
        &'static self,
        slot: usize,
        tag: u32,
        threshold: u64,
        capture: impl FnOnce(&mut [usize; MAX_DEPTH]) -> usize,
    ) -> HandleGuard {
        // The guard exists before `capture` runs: should a binding's capture panic, the
        // unwinding drops it and the open is counted as closed.
        let mut guard = HandleGuard {
            kind: self,
            slot: slot as u8,
            entry: NO_ENTRY,
        };
        let mut frames = [0usize; MAX_DEPTH];
        let depth = capture(&mut frames).min(MAX_DEPTH);
        let now = now_nanos();
        // The weight is the inverse of the probability this open had of being sampled (the
        // threshold it was decided with), so the sum of weights estimates the opens without
        // bias whatever the budget does to the rate.
        let weight = if tag != 0 {
            1
        } else {
            self.window_captures.fetch_add(1, Ordering::Relaxed);
            u32::try_from((1u64 << 32) / threshold.max(1)).unwrap_or(u32::MAX)
        };
        guard.entry = sites::insert(self.index, &frames[..depth], now, weight, tag);
        if let Some(mut state) = self.state.try_lock() {
            self.housekeep(&mut state, now);
        }
        guard
    }

    /// Reads the counters: closes first, then opens, so a handle is never seen closed
    /// without being seen opened.
    fn read(&self) -> Reading {
        let mut closed = [0u64; SLOTS];
        let mut opened = [0u64; SLOTS];
        for shard in self.shards.iter() {
            for (sum, c) in closed.iter_mut().zip(&shard.closed) {
                *sum = sum.wrapping_add(c.load(Ordering::Acquire));
            }
        }
        for shard in self.shards.iter() {
            for (sum, o) in opened.iter_mut().zip(&shard.opened) {
                *sum = sum.wrapping_add(o.load(Ordering::Relaxed));
            }
        }
        let mut slot_open = [0u64; SLOTS];
        for (i, open) in slot_open.iter_mut().enumerate() {
            *open = opened[i].saturating_sub(closed[i]);
        }
        Reading {
            opened: opened.iter().fold(0u64, |a, b| a.wrapping_add(*b)),
            closed: closed.iter().fold(0u64, |a, b| a.wrapping_add(*b)),
            slot_open,
        }
    }

    /// Raises the peak to `open` if it is higher.
    fn raise_peak(&self, open: u64) {
        if open > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(open, Ordering::Relaxed);
        }
    }

    /// Updates the peak and starts a new generation when the current one is old enough and
    /// a slot is free. Returns the reading it made.
    fn housekeep(&self, state: &mut KindState, now: u64) -> Reading {
        self.pace(state, now);
        let reading = self.read();
        self.raise_peak(reading.opened.saturating_sub(reading.closed));
        let cur = self.cur.load(Ordering::Relaxed) % SLOTS;
        if now < state.starts[cur] {
            // The registry clock was replaced by one that reads earlier: start over.
            state.starts[cur] = now;
        }
        if now - state.starts[cur] >= duration_nanos(GENERATION) {
            let free = (1..SLOTS)
                .map(|d| (cur + d) % SLOTS)
                .find(|&s| reading.slot_open[s] == 0);
            if let Some(next) = free {
                state.ends[cur] = Some(now);
                state.starts[next] = now;
                state.ends[next] = None;
                self.cur.store(next, Ordering::Release);
            }
        }
        reading
    }

    /// Housekeeping, then the kind's counts at `now`.
    pub(crate) fn stats(&self, now: u64) -> KindStats {
        let mut state = self.state.lock();
        let reading = self.housekeep(&mut state, now);
        let oldest = (0..SLOTS)
            .filter(|&s| reading.slot_open[s] > 0)
            .min_by_key(|&s| state.starts[s])
            .map(|s| {
                let end = state.ends[s].unwrap_or(now);
                (now.saturating_sub(end), now.saturating_sub(state.starts[s]))
            });
        let open = reading.opened.saturating_sub(reading.closed);
        KindStats {
            opened: reading.opened,
            closed: reading.closed,
            open,
            peak: self.peak.load(Ordering::Relaxed).max(open),
            oldest,
        }
    }

    /// Open handles now (no housekeeping).
    pub(crate) fn open_now(&self) -> u64 {
        let r = self.read();
        r.opened.saturating_sub(r.closed)
    }

    pub(crate) fn config(&self) -> KindConfig {
        self.state.lock().config
    }

    pub(crate) fn suspect(&self) -> bool {
        self.state.lock().suspect
    }

    pub(crate) fn set_config(&self, config: KindConfig) {
        self.state.lock().config = config;
        self.refresh_threshold();
    }

    pub(crate) fn set_suspect(&self, suspect: bool) {
        self.state.lock().suspect = suspect;
        self.refresh_threshold();
    }

    /// The sampling rate in force: 1 for a suspect kind, else the configured one, else the
    /// registry default.
    pub(crate) fn sample_every(&self) -> u32 {
        let state = self.state.lock();
        if state.suspect {
            1
        } else {
            state
                .config
                .sample_every
                .unwrap_or_else(|| DEFAULT_EVERY.load(Ordering::Relaxed) as u32)
        }
    }

    /// The sampling rate in force now: one open in this many is sampled, the capture
    /// budget's slowing included (0: none).
    pub(crate) fn sample_every_now(&self) -> u32 {
        match self.threshold.load(Ordering::Relaxed) {
            0 => 0,
            t => u32::try_from(((1u64 << 32) + t / 2) / t).unwrap_or(u32::MAX),
        }
    }

    fn refresh_threshold(&self) {
        let every = self.sample_every();
        let threshold = match every {
            0 => 0,
            n => (1u64 << 32) / u64::from(n),
        };
        let budgeted = {
            let state = self.state.lock();
            !state.suspect && state.config.sample_every.is_none()
        };
        self.base.store(threshold, Ordering::Relaxed);
        self.budgeted.store(budgeted, Ordering::Relaxed);
        self.threshold.store(threshold, Ordering::Relaxed);
        self.window_captures.store(0, Ordering::Relaxed);
    }

    /// The capture budget: when the budget's window is over (or its captures are spent),
    /// sets the sampling threshold for the next window from the captures of this one.
    fn pace(&self, state: &mut KindState, now: u64) {
        let base = self.base.load(Ordering::Relaxed);
        let budget = CAPTURE_BUDGET.load(Ordering::Relaxed);
        if !self.budgeted.load(Ordering::Relaxed) || budget == 0 || base == 0 {
            self.window_captures.store(0, Ordering::Relaxed);
            state.window_start = now;
            if self.threshold.load(Ordering::Relaxed) != base {
                self.threshold.store(base, Ordering::Relaxed);
            }
            return;
        }
        if now < state.window_start {
            // The registry clock was replaced by one that reads earlier: start over.
            state.window_start = now;
        }
        let elapsed = now - state.window_start;
        let captures = self.window_captures.load(Ordering::Relaxed);
        if let Some(next) = next_threshold(
            self.threshold.load(Ordering::Relaxed),
            base,
            budget,
            captures,
            elapsed,
        ) {
            self.threshold.store(next, Ordering::Relaxed);
            self.window_captures.fetch_sub(captures, Ordering::Relaxed);
            state.window_start = now;
        }
    }
}

/// The capture budget's rule. A window that has lasted `elapsed` nanoseconds at sampling
/// threshold `current` and made `captures` captures ends when it has lasted
/// [`BUDGET_WINDOW`] or spent `budget` (captures per second) in less; the next window's
/// threshold is the one at which the same stream of opens would make `budget` captures a
/// second: `current × budget × elapsed / captures`, at most `base` (the configured rate)
/// and at least `base / 2^16`. `None` while the window goes on.
fn next_threshold(
    current: u64,
    base: u64,
    budget: u32,
    captures: u64,
    elapsed: u64,
) -> Option<u64> {
    let window = duration_nanos(BUDGET_WINDOW);
    let spent = captures >= u64::from(budget) && elapsed > 0;
    if elapsed < window && !spent {
        return None;
    }
    let wanted = u128::from(current.max(1)) * u128::from(budget) * u128::from(elapsed)
        / (u128::from(captures.max(1)) * u128::from(window));
    let floor = (base >> MAX_SLOWDOWN_SHIFT).max(1);
    Some(
        u64::try_from(wanted)
            .unwrap_or(u64::MAX)
            .clamp(floor, base.max(floor)),
    )
}

// ---------------------------------------------------------------------------------------
// Per-thread state.

/// Per-thread state of the hot path: no destructor, so it can be used while the thread
/// exits (a guard kept in another thread-local may drop then).
struct Local {
    shard: Cell<usize>,
    rng: Cell<u32>,
    /// Non-zero while `testing` measures on this thread: every open is recorded with it.
    tag: Cell<u32>,
    cache: [Cell<CacheEntry>; CACHE_ENTRIES],
}

/// Address and length of a `&'static str`, and the kind it names.
type CacheEntry = (usize, usize, Option<&'static Kind>);

thread_local! {
    static LOCAL: Local = const {
        Local {
            shard: Cell::new(UNASSIGNED),
            rng: Cell::new(0),
            tag: Cell::new(0),
            cache: [const { Cell::new((0, 0, None)) }; CACHE_ENTRIES],
        }
    };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Shards per kind: twice the CPUs, a power of two between 8 and 32.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cpus * 2).next_power_of_two().clamp(8, 32)
});

impl Local {
    #[inline]
    fn shard(&self) -> usize {
        let shard = self.shard.get();
        if shard != UNASSIGNED {
            shard
        } else {
            self.assign()
        }
    }

    /// Threads take shards round-robin, so the first threads never share one.
    #[cold]
    fn assign(&self) -> usize {
        let shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % (UNASSIGNED - 1);
        self.shard.set(shard);
        self.rng
            .set(((shard as u32) ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9) | 1);
        shard
    }

    /// xorshift32: never 0 once seeded (by `shard()`, called first).
    #[inline]
    fn random(&self) -> u32 {
        let mut x = self.rng.get() | 1;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.set(x);
        x
    }
}

/// Sets this thread's measurement tag (0 to stop) and returns the previous one.
pub(crate) fn swap_tag(tag: u32) -> u32 {
    LOCAL.with(|l| l.tag.replace(tag))
}

/// The kind named by a `&'static str`, through the per-thread cache keyed by the string's
/// address: one thread-local read on a hit.
#[inline]
pub(crate) fn lookup_static(name: &'static str) -> &'static Kind {
    let key = name.as_ptr() as usize;
    let len = name.len();
    LOCAL.with(|l| {
        let i = ((key >> 3) ^ (key >> 11) ^ len) % CACHE_ENTRIES;
        if let (k, n, Some(kind)) = l.cache[i].get()
            && k == key
            && n == len
        {
            return kind;
        }
        let kind = register(name);
        l.cache[i].set((key, len, Some(kind)));
        kind
    })
}

// ---------------------------------------------------------------------------------------
// The registry.

static KINDS: [OnceLock<Kind>; MAX_KINDS + 1] = [const { OnceLock::new() }; MAX_KINDS + 1];

struct Names {
    by_name: HashMap<Box<str>, u16>,
    registered: usize,
    folded: HashSet<u64>,
    folded_saturated: bool,
}

static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(|| {
    Mutex::new(Names {
        by_name: HashMap::new(),
        registered: 0,
        folded: HashSet::new(),
        folded_saturated: false,
    })
});

static DEFAULT_EVERY: AtomicU64 = AtomicU64::new(DEFAULT_SAMPLE_EVERY as u64);

static CAPTURE_BUDGET: AtomicU32 = AtomicU32::new(DEFAULT_CAPTURES_PER_SECOND);

pub(crate) fn set_capture_budget(per_second: u32) {
    CAPTURE_BUDGET.store(per_second, Ordering::Relaxed);
    for kind in all() {
        kind.refresh_threshold();
    }
}

/// Stack captures per second a kind sampled at the registry default may make (0: no limit).
pub(crate) fn capture_budget() -> u32 {
    CAPTURE_BUDGET.load(Ordering::Relaxed)
}

static CLOCK: LazyLock<RwLock<Arc<dyn Clock>>> =
    LazyLock::new(|| RwLock::new(Arc::new(SystemClock::new())));

/// The registry clock's monotonic time, nanoseconds.
pub(crate) fn now_nanos() -> u64 {
    duration_nanos(CLOCK.read().monotonic())
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn set_clock(clock: Arc<dyn Clock>) {
    *CLOCK.write() = clock;
}

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary; `unnamed` when empty.
fn clip(name: &str) -> &str {
    if name.is_empty() {
        return "unnamed";
    }
    let mut cut = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    &name[..cut]
}

/// The kind named `name`, registering it if it is new and the cap allows; else `other`.
pub(crate) fn register(name: &str) -> &'static Kind {
    let name = clip(name);
    if name == OTHER {
        return other();
    }
    static FORK_SAFE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    crate::fork::install(crate::fork::Source::Handles, fork_locks, &FORK_SAFE);
    let mut names = NAMES.lock();
    if let Some(&i) = names.by_name.get(name)
        && let Some(kind) = KINDS[usize::from(i)].get()
    {
        return kind;
    }
    if names.registered >= MAX_KINDS {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        if names.folded.len() < MAX_FOLDED_NAMES {
            names.folded.insert(hash);
        } else if !names.folded.contains(&hash) {
            names.folded_saturated = true;
        }
        drop(names);
        return other();
    }
    let i = names.registered;
    let now = now_nanos();
    let kind = KINDS[i].get_or_init(|| Kind::new(i, name, now));
    names.registered += 1;
    names.by_name.insert(name.into(), kind.index);
    kind
}

/// The `other` kind.
pub(crate) fn other() -> &'static Kind {
    KINDS[OTHER_INDEX].get_or_init(|| Kind::new(OTHER_INDEX, OTHER, now_nanos()))
}

/// The kind named `name` if it exists (never registers).
pub(crate) fn find(name: &str) -> Option<&'static Kind> {
    let name = clip(name);
    if name == OTHER {
        return KINDS[OTHER_INDEX].get();
    }
    let i = *NAMES.lock().by_name.get(name)?;
    KINDS[usize::from(i)].get()
}

/// The kind at registry position `index`.
pub(crate) fn at(index: u16) -> Option<&'static Kind> {
    KINDS.get(usize::from(index))?.get()
}

/// Every kind that exists, in registry order (`other` last).
/// The names', clock's and every kind's locks, and those of the site and frame tables, taken
/// around a fork (see [`crate::fork`]).
fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&*NAMES);
    out.push(&*CLOCK);
    out.extend(all().map(|kind| &kind.state as &dyn crate::fork::ForkLock));
    super::sites::fork_locks(out);
    super::external::fork_locks(out);
    super::os::fork_locks(out);
}

pub(crate) fn all() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().filter_map(OnceLock::get)
}

/// Names folded into `other` (distinct, counted up to 4096) and whether the count
/// saturated.
pub(crate) fn folded() -> (u64, bool) {
    let names = NAMES.lock();
    (names.folded.len() as u64, names.folded_saturated)
}

pub(crate) fn set_default_sample_every(every: u32) {
    DEFAULT_EVERY.store(u64::from(every), Ordering::Relaxed);
    for kind in all() {
        kind.refresh_threshold();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_clipped_at_a_char_boundary() {
        let long = "é".repeat(40);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_NAME_BYTES);
        assert_eq!(clipped.chars().count(), MAX_NAME_BYTES / 2);
        assert_eq!(clip(""), "unnamed");
    }

    #[test]
    fn a_shard_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Shard>(), 128);
        assert_eq!(std::mem::align_of::<Shard>(), 128);
        assert!(SHARDS.is_power_of_two());
    }

    const SECOND: u64 = 1_000_000_000;
    const BASE: u64 = (1u64 << 32) / DEFAULT_SAMPLE_EVERY as u64;

    /// Within a millionth (the rule rounds down).
    #[track_caller]
    fn assert_near(got: Option<u64>, want: u64) {
        let got = got.unwrap_or(0);
        assert!(
            got.abs_diff(want) <= want / 1_000_000 + 1,
            "{got} vs {want}"
        );
    }

    #[test]
    fn a_budget_window_goes_on_until_a_second_passed_or_its_captures_are_spent() {
        assert_eq!(next_threshold(BASE, BASE, 10, 9, SECOND - 1), None);
        assert!(next_threshold(BASE, BASE, 10, 9, SECOND).is_some());
        assert!(next_threshold(BASE, BASE, 10, 10, SECOND / 100).is_some());
        // A clock that does not move never ends a window early.
        assert_eq!(next_threshold(BASE, BASE, 10, 1000, 0), None);
    }

    #[test]
    fn the_next_rate_makes_the_budgeted_captures_of_the_same_opens() {
        // 100 captures in a second at 1 in 128: 12,800 opens a second; 10 a second is 1 in
        // 1,280.
        assert_near(next_threshold(BASE, BASE, 10, 100, SECOND), BASE / 10);
        // 10 captures spent in 10 ms: 1,000 captures a second at that rate.
        assert_near(next_threshold(BASE, BASE, 10, 10, SECOND / 100), BASE / 100);
        // Fewer captures than the budget: back up, never above the configured rate.
        assert_near(next_threshold(BASE / 100, BASE, 10, 2, SECOND), BASE / 20);
        assert_eq!(next_threshold(BASE / 2, BASE, 10, 2, SECOND), Some(BASE));
        // No capture in 3 s: counted as one, 30 times faster.
        assert_near(
            next_threshold(BASE / 100, BASE, 10, 0, 3 * SECOND),
            BASE / 100 * 30,
        );
        // Never more than 2^16 times slower than configured.
        let floor = BASE >> MAX_SLOWDOWN_SHIFT;
        assert_eq!(
            next_threshold(BASE, BASE, 1, 1_000_000, SECOND),
            Some(floor)
        );
        // Every open sampled when configured so stays reachable: a base of 2^32.
        assert_eq!(
            next_threshold(1 << 31, 1 << 32, 10, 5, SECOND),
            Some(1 << 32)
        );
    }

    /// A kind of its own, with its clock given explicitly to `housekeep`.
    fn leaked_kind(name: &str) -> &'static Kind {
        Box::leak(Box::new(Kind::new(OTHER_INDEX, name, 0)))
    }

    #[test]
    fn a_budgeted_kind_slows_down_and_recovers_on_the_clock_it_is_given() {
        let kind = leaked_kind("unit_budget_pace");
        assert!(
            kind.budgeted.load(Ordering::Relaxed) || DEFAULT_EVERY.load(Ordering::Relaxed) == 0
        );
        let base = kind.base.load(Ordering::Relaxed);
        // 50 captures in the first half second: 100 a second, ten times the budget.
        kind.window_captures.store(50, Ordering::Relaxed);
        kind.housekeep(&mut kind.state.lock(), SECOND / 2);
        let slowed = kind.threshold.load(Ordering::Relaxed);
        let budget = u64::from(capture_budget());
        assert_near(Some(slowed), base * budget / 100);
        assert_eq!(kind.window_captures.load(Ordering::Relaxed), 0);
        // The opens stop: a report a second later finds no capture and restores the rate.
        kind.housekeep(&mut kind.state.lock(), SECOND / 2 + SECOND);
        assert_near(Some(kind.threshold.load(Ordering::Relaxed)), base);
    }

    #[test]
    fn suspect_and_configured_kinds_are_not_budgeted() {
        let suspect = leaked_kind("unit_budget_suspect");
        suspect.set_suspect(true);
        assert_eq!(suspect.threshold.load(Ordering::Relaxed), 1 << 32);
        suspect.window_captures.store(1_000_000, Ordering::Relaxed);
        suspect.housekeep(&mut suspect.state.lock(), SECOND);
        assert_eq!(suspect.threshold.load(Ordering::Relaxed), 1 << 32);

        let configured = leaked_kind("unit_budget_configured");
        configured.set_config(KindConfig {
            sample_every: Some(4),
            ..KindConfig::default()
        });
        configured
            .window_captures
            .store(1_000_000, Ordering::Relaxed);
        configured.housekeep(&mut configured.state.lock(), SECOND);
        assert_eq!(configured.threshold.load(Ordering::Relaxed), 1 << 30);
    }

    #[test]
    fn random_numbers_hit_one_in_n() {
        let local = Local {
            shard: Cell::new(UNASSIGNED),
            rng: Cell::new(0),
            tag: Cell::new(0),
            cache: [const { Cell::new((0, 0, None)) }; CACHE_ENTRIES],
        };
        local.shard();
        let threshold = (1u64 << 32) / 64;
        let hits = (0..64_000)
            .filter(|_| u64::from(local.random()) < threshold)
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
