//! Resource-handle tracking: what is open, how long, and who opened it.
//!
//! After caches, the usual suspects of a leak are resources that are opened and never
//! closed: connections, files, clients, listeners, timers, threads. leakguard counts them
//! by *kind*:
//!
//! ```
//! use leakguard::handles::{self, KindConfig};
//! use std::time::Duration;
//!
//! // An RAII guard: the handle counts as open while the guard lives.
//! let conn = leakguard::track("doc_db_conn");
//!
//! // Or wrap the resource itself: `Tracked<T>` derefs to `T`.
//! let file = leakguard::Tracked::new(Vec::<u8>::new(), "doc_file");
//! assert!(file.is_empty());
//!
//! // Limits give warnings (events and metrics) when exceeded.
//! handles::configure(
//!     "doc_db_conn",
//!     KindConfig::new().max_open(100).max_age(Duration::from_secs(300)),
//! )?;
//!
//! let open = handles::open_by_kind();
//! assert!(open.contains(&("doc_db_conn".to_owned(), 1)));
//! drop((conn, file));
//! # Ok::<(), leakguard::Error>(())
//! ```
//!
//! Per kind the registry keeps: open now, opened and closed totals, the peak, the age of
//! the oldest open handle, and the creation sites of the open handles it sampled. The
//! report's `handles` section ([`report`]) and `/metrics` (`leakguard_handles_open{kind}`,
//! `leakguard_handles_opened_total{kind}`, …) show them, together with what the OS says
//! independently of the application: open fds by type against the fd limit, threads, and
//! this process's TCP sockets by state (a pile of `close_wait` sockets is the classic
//! connection leak).
//!
//! # Cost
//!
//! [`track`] followed by dropping the guard is two uncontended atomic additions in a
//! per-thread-group shard, one thread-local read for the kind lookup and one for the
//! shard: about the cost of cloning and dropping an `Arc` (see `BENCHMARKS.md`). One
//! open in [`DEFAULT_SAMPLE_EVERY`] (per kind, configurable, decided by a per-thread
//! random number) is *sampled*: its call stack is captured as raw return addresses (a few
//! microseconds) and kept while the handle is open, in a bounded table. Addresses are
//! turned into function names and lines only when a report asks. On a busy kind the
//! captures are capped: a kind sampled at the registry default makes about
//! [`DEFAULT_CAPTURES_PER_SECOND`] captures a second at most ([`set_capture_budget`]); its
//! sampling slows down when its opens come faster, and each sampled handle is weighted by
//! the rate it was sampled at, so the estimated counts per site stay unbiased (a kind's
//! report gives both rates: `sample_every`, configured, and `sample_every_now`). Marking a
//! kind as suspect at run time ([`set_suspect`]) samples every open of it, without a budget,
//! as does a kind's own [`KindConfig::sample_every`] (at its rate).
//!
//! For the fastest path keep a [`HandleKind`] (from [`kind`]) and call
//! [`HandleKind::track`]; `track("name")` with a string literal finds the kind through a
//! small per-thread cache keyed by the literal's address.
//!
//! A language binding opens handles with [`HandleKind::track_with_site`]: the same
//! counting, but a sampled open asks the binding for its creation site as text (a Python
//! traceback's function, file and line per frame) instead of capturing the native stack.
//! See [`SiteFrames`].
//!
//! # Bounds
//!
//! leakguard must never be the leak, so everything here is bounded:
//! - at most [`MAX_KINDS`] kinds have their own name; further names are counted as
//!   [`OTHER`] (how many were folded is reported). Names are cut at [`MAX_NAME_BYTES`].
//!   Kinds are never freed: use a fixed set of names, not one per request.
//! - each kind takes 128 bytes per shard (8 to 32 shards, from the CPU count): 1 to
//!   4 KiB, allocated when the kind is first used;
//! - at most [`TABLE_CAPACITY`] open sampled handles and [`SITE_CAPACITY`] distinct
//!   creation stacks are recorded (about 280 KiB, allocated on the first sampled open);
//!   sampled opens beyond are counted, not recorded;
//! - symbolization is cached (bounded) and limited per report;
//! - creation sites given as text by a language binding
//!   ([`HandleKind::track_with_site`]) keep at most the capture depth's frames, names cut
//!   at [`MAX_FUNCTION_BYTES`] and [`MAX_FILE_BYTES`], in a table of at most
//!   [`EXTERNAL_FRAME_CAPACITY`] distinct frames;
//! - the process's TCP sockets are counted by asking each of its socket descriptors for its
//!   state (at most [`MAX_FDS_SCANNED`] descriptors), not by reading `/proc/net/tcp`, whose
//!   every read makes the kernel walk the whole machine's connection table. Reports and
//!   `/metrics` reuse one reading for [`TCP_REUSE`], or longer (up to [`TCP_REUSE_MAX`]) when a
//!   reading took long, so that it costs at most 0.1% of one CPU. [`tcp_sockets`], which
//!   reads the tables of a procfs tree, reads them up to a line and byte cap
//!   ([`TCP_MAX_LINES`], [`TCP_MAX_BYTES`]) and says when it cut them.
//!
//! # Precision
//!
//! Counts (open, opened, closed) are exact. The peak is the highest open count *observed*:
//! at every report, limit check (every sampling interval of a running guard) and sampled
//! open; a burst shorter than that can be missed.
//!
//! The age of the oldest open handle comes from *generations*: each kind has eight
//! generation slots, and each handle remembers the generation it was opened in (a number
//! in its guard; no clock is read on the hot path). A new generation starts when the
//! current one is at least [`GENERATION`] old (checked at the same moments as the peak) and
//! a slot no longer holds open handles. The report gives the oldest open handle's age as
//! a range: at least `oldest_age_seconds`, at most `oldest_age_max_seconds`. For leaked
//! handles the range is about one generation wide; it widens only when all eight slots
//! still hold open handles, so the current generation had to go on. A sampled open
//! handle's age is exact and tightens the range. The limit `max_age` compares the lower
//! bound, so it never fires early.
//!
//! Time comes from the registry clock ([`set_clock`]): the system clock by default, a
//! [`ManualClock`](crate::ManualClock) in tests.

mod external;
mod os;
mod registry;
mod report;
mod sites;

pub use self::external::{
    EXTERNAL_FRAME_CAPACITY, FRAME_NOT_RECORDED, MAX_FILE_BYTES, MAX_FUNCTION_BYTES, SiteFrames,
};
pub use self::os::{
    MAX_FDS_SCANNED, OsHandles, TCP_MAX_BYTES, TCP_MAX_LINES, TCP_REUSE, TCP_REUSE_MAX, TCP_STATES,
    TcpSockets, os_handles, tcp_sockets,
};
pub use self::registry::{
    BUDGET_WINDOW, DEFAULT_CAPTURES_PER_SECOND, DEFAULT_SAMPLE_EVERY, GENERATION, MAX_KINDS,
    MAX_NAME_BYTES, OTHER,
};
// `families` is for the guard's /metrics (the watchdog wires it in).
pub(crate) use self::registry::{now_nanos, swap_tag};
#[allow(deprecated)]
pub use self::report::LimitMonitor;
pub use self::report::{
    FD_REARM_RATIO, FD_WARN_RATIO, HandleLimitMonitor, HandlesReport, KindReport, LimitEvent,
    LimitName, SITES_PER_KIND, SiteReport, open_by_kind, report, report_at,
};
#[allow(unused_imports)]
pub(crate) use self::report::{families, site_reports};
pub use self::sites::{
    DEFAULT_DEPTH, MAX_DEPTH, SITE_CAPACITY, SYMBOLIZE_BUDGET, SamplingStats, TABLE_CAPACITY,
};
pub(crate) use self::sites::{groups as sampled_groups, stats as sampling_stats};

use self::registry::Kind;
use self::sites::NO_ENTRY;
use crate::clock::Clock;
use crate::error::{Error, Result};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

/// A kind of handle, resolved once: the fastest way to [`track`](HandleKind::track).
///
/// ```
/// use std::sync::LazyLock;
/// static CONN: LazyLock<leakguard::HandleKind> =
///     LazyLock::new(|| leakguard::handles::kind("doc_kind_conn"));
///
/// let guard = CONN.track();
/// assert_eq!(CONN.open(), 1);
/// drop(guard);
/// assert_eq!(CONN.open(), 0);
/// ```
#[derive(Clone, Copy)]
pub struct HandleKind(&'static Kind);

impl HandleKind {
    /// The kind's name (`other` when its own name did not fit under [`MAX_KINDS`]).
    pub fn name(self) -> &'static str {
        &self.0.name
    }

    /// Opens a handle of this kind: counted as open until the guard is dropped.
    #[inline]
    pub fn track(self) -> HandleGuard {
        self.0.open()
    }

    /// Opens a handle of this kind whose creation site, when this open is sampled, the
    /// caller gives as text: `site` is called (only then) with a [`SiteFrames`] to push the
    /// frames into, innermost first. For language bindings, whose own stack (a Python
    /// traceback, say) tells more than the native one; see [`SiteFrames`] for the bounds.
    ///
    /// The unsampled path is the same as [`track`](HandleKind::track)'s and does not call
    /// `site`. Should `site` panic, the handle is counted as closed and the panic goes on.
    ///
    /// ```
    /// let kind = leakguard::handles::kind("doc_track_with_site");
    /// let guard = kind.track_with_site(|site| {
    ///     site.push("open_client", "client.py", 12);
    /// });
    /// assert_eq!(kind.open(), 1);
    /// drop(guard);
    /// ```
    #[inline]
    pub fn track_with_site(self, site: impl FnOnce(&mut SiteFrames<'_>)) -> HandleGuard {
        self.0.open_with(|frames| {
            let mut frames = SiteFrames::new(frames, sites::depth());
            site(&mut frames);
            frames.len()
        })
    }

    /// Wraps `value` so it counts as an open handle of this kind while it lives.
    #[inline]
    pub fn wrap<T>(self, value: T) -> Tracked<T> {
        Tracked {
            value,
            guard: self.track(),
        }
    }

    /// Handles of this kind open now.
    pub fn open(self) -> u64 {
        self.0.open_now()
    }
}

impl fmt::Debug for HandleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HandleKind").field(&self.name()).finish()
    }
}

impl PartialEq for HandleKind {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for HandleKind {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &'static str {}
    impl Sealed for super::HandleKind {}
    impl Sealed for &super::HandleKind {}
}

/// What names a kind: a `&'static str` (a string literal) or a [`HandleKind`].
///
/// For a name built at run time, register it once with [`kind`] and keep the
/// [`HandleKind`]: the per-thread lookup cache is keyed by the string's address, which only
/// a `'static` string keeps.
pub trait IntoKind: sealed::Sealed {
    /// The kind.
    fn into_kind(self) -> HandleKind;
}

impl IntoKind for &'static str {
    #[inline]
    fn into_kind(self) -> HandleKind {
        HandleKind(registry::lookup_static(self))
    }
}

impl IntoKind for HandleKind {
    #[inline]
    fn into_kind(self) -> HandleKind {
        self
    }
}

impl IntoKind for &HandleKind {
    #[inline]
    fn into_kind(self) -> HandleKind {
        *self
    }
}

/// The kind named `name`, registered on first use. Past [`MAX_KINDS`] distinct names,
/// new names give the [`OTHER`] kind.
///
/// ```
/// let shard = 3;
/// let kind = leakguard::handles::kind(&format!("doc_shard_{shard}_conn"));
/// let _guard = kind.track();
/// assert_eq!(kind.name(), "doc_shard_3_conn");
/// ```
pub fn kind(name: &str) -> HandleKind {
    HandleKind(registry::register(name))
}

/// Opens a handle of `kind`: it counts as open until the returned guard is dropped.
///
/// ```
/// fn connect() -> leakguard::HandleGuard {
///     leakguard::track("doc_track_conn")
/// }
/// let conn = connect();
/// assert_eq!(conn.kind(), "doc_track_conn");
/// drop(conn); // closed
/// ```
#[inline]
pub fn track(kind: impl IntoKind) -> HandleGuard {
    kind.into_kind().track()
}

/// An open handle: counted as open until dropped (on any thread).
#[must_use = "the handle counts as open only while the guard lives; bind it to a variable \
              that lives as long as the resource (`let _conn = track(..)`), not to `_`"]
pub struct HandleGuard {
    kind: &'static Kind,
    slot: u8,
    entry: u32,
}

impl HandleGuard {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        &self.kind.name
    }

    /// Whether this handle was sampled: its creation site is recorded until it closes.
    pub fn is_sampled(&self) -> bool {
        self.entry != NO_ENTRY
    }
}

impl Drop for HandleGuard {
    #[inline]
    fn drop(&mut self) {
        self.kind.close(self.slot);
        if self.entry != NO_ENTRY {
            sites::remove(self.entry);
        }
    }
}

impl fmt::Debug for HandleGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandleGuard")
            .field("kind", &self.kind())
            .field("sampled", &self.is_sampled())
            .finish()
    }
}

/// A value counted as an open handle of its kind while it lives.
///
/// `Tracked<T>` derefs to `T`, is `Send`/`Sync` when `T` is, and closes the handle when
/// dropped or when the value is taken out with [`into_inner`](Tracked::into_inner).
///
/// ```
/// use leakguard::Tracked;
/// use std::net::TcpListener;
///
/// let listener = Tracked::new(TcpListener::bind("127.0.0.1:0")?, "doc_listener");
/// let addr = listener.local_addr()?; // Deref to TcpListener
/// assert_eq!(leakguard::handles::kind("doc_listener").open(), 1);
/// let listener: TcpListener = Tracked::into_inner(listener);
/// assert_eq!(leakguard::handles::kind("doc_listener").open(), 0);
/// # drop((addr, listener));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Tracked<T> {
    value: T,
    guard: HandleGuard,
}

impl<T> Tracked<T> {
    /// Wraps `value` as an open handle of `kind`.
    #[inline]
    pub fn new(value: T, kind: impl IntoKind) -> Self {
        kind.into_kind().wrap(value)
    }

    /// Takes the value out; the handle counts as closed.
    pub fn into_inner(this: Self) -> T {
        let Tracked { value, guard } = this;
        drop(guard);
        value
    }

    /// The kind's name.
    pub fn kind(this: &Self) -> &'static str {
        this.guard.kind()
    }
}

impl<T> Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> AsRef<T> for Tracked<T> {
    fn as_ref(&self) -> &T {
        &self.value
    }
}

impl<T> AsMut<T> for Tracked<T> {
    fn as_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("kind", &self.guard.kind())
            .field("value", &self.value)
            .finish()
    }
}

impl<T: fmt::Display> fmt::Display for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// Limits and sampling of one kind.
///
/// ```
/// use leakguard::handles::{self, KindConfig};
/// use std::time::Duration;
///
/// handles::configure(
///     "doc_config_conn",
///     KindConfig::new()
///         .max_open(512)                     // warn above 512 open
///         .max_age(Duration::from_secs(600)) // warn when one is open for 10 minutes
///         .sample_every(16),                 // record the creation site of 1 open in 16
/// )?;
/// # Ok::<(), leakguard::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindConfig {
    /// Warn when more handles than this are open.
    pub max_open: Option<u64>,
    /// Warn when a handle has been open longer than this.
    pub max_age: Option<Duration>,
    /// Sample one open in this many (0: never); `None`: the registry default
    /// ([`DEFAULT_SAMPLE_EVERY`], or what [`set_default_sample_every`] set).
    pub sample_every: Option<u32>,
}

impl KindConfig {
    /// No limits, default sampling.
    pub fn new() -> Self {
        Self::default()
    }

    /// Warn when more than `n` handles are open.
    pub fn max_open(mut self, n: u64) -> Self {
        self.max_open = Some(n);
        self
    }

    /// Warn when a handle has been open longer than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sample one open in `n` (0: never, 1: every open).
    pub fn sample_every(mut self, n: u32) -> Self {
        self.sample_every = Some(n);
        self
    }
}

/// Sets the limits and sampling of the kind named `name` (registering it).
///
/// Fails when `name` would be folded into [`OTHER`] because [`MAX_KINDS`] kinds exist
/// already: `other` stands for many names and cannot take one name's limits.
pub fn configure(name: &str, config: KindConfig) -> Result<HandleKind> {
    let kind = registry::register(name);
    if usize::from(kind.index) == MAX_KINDS && name != OTHER {
        return Err(Error::config(
            "handles kind",
            name,
            format!(
                "the capacity of {MAX_KINDS} handle kinds is reached, so this kind is \
                 counted as `{OTHER}`, which cannot take one kind's limits"
            ),
        ));
    }
    kind.set_config(config);
    Ok(HandleKind(kind))
}

/// Marks an existing kind as suspect (every open is sampled, so the report shows where all
/// of its open handles come from), or back to its configured sampling. Returns whether the
/// kind exists; it is never created here, so an operator's typo cannot use up a kind.
///
/// ```
/// let _h = leakguard::track("doc_suspect");
/// assert!(leakguard::handles::set_suspect("doc_suspect", true));
/// assert!(leakguard::track("doc_suspect").is_sampled());
/// assert!(!leakguard::handles::set_suspect("doc_no_such_kind", true));
/// ```
pub fn set_suspect(name: &str, suspect: bool) -> bool {
    match registry::find(name) {
        Some(kind) => {
            kind.set_suspect(suspect);
            true
        }
        None => false,
    }
}

/// The name of the kind at registry position `index`.
pub(crate) fn kind_name(index: u16) -> String {
    registry::at(index).map_or_else(|| format!("#{index}"), |k| k.name.to_string())
}

/// Sets the sampling rate of every kind that has no `sample_every` of its own (0: never).
pub fn set_default_sample_every(n: u32) {
    registry::set_default_sample_every(n);
}

/// Sets how many stack captures per second, about, each kind sampled at the registry
/// default may make ([`DEFAULT_CAPTURES_PER_SECOND`]; 0: no limit).
///
/// A captured stack costs a few microseconds, so on a busy service one open in
/// [`DEFAULT_SAMPLE_EVERY`] can add up (at 60,000 opens a second, ~470 captures). The budget
/// slows a kind's sampling down when its opens come faster: every [`BUDGET_WINDOW`] (or
/// sooner, once the window's captures are spent) the kind's sampling rate is set so that the
/// opens of the last window would have made the budgeted captures, never faster than the
/// configured rate and never more than 65,536 times slower. Each sampled handle carries the
/// inverse of the rate it was sampled at as its weight, so the report's estimated counts per
/// site stay unbiased; they are only coarser (fewer samples) while the budget binds.
///
/// The budget does not apply to a kind with its own [`KindConfig::sample_every`], nor to a
/// kind marked suspect ([`set_suspect`]), which captures every open, nor to opens under
/// [`testing`](crate::testing)'s checks.
pub fn set_capture_budget(per_second: u32) {
    registry::set_capture_budget(per_second);
}

/// The capture budget in force (see [`set_capture_budget`]).
pub fn capture_budget() -> u32 {
    registry::capture_budget()
}

/// Sets how many stack frames a sampled open captures (1 to [`MAX_DEPTH`]; default
/// [`DEFAULT_DEPTH`], of which leakguard's own take two or three). Each frame costs about
/// 0.1 µs per sampled open.
pub fn set_capture_depth(frames: usize) {
    sites::set_depth(frames);
}

/// Replaces the registry clock, which dates generations and sampled handles. For tests and
/// replays: set it before handles are opened, since ages are measured against it.
///
/// ```standalone_crate
/// use leakguard::ManualClock;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new(0.0);
/// leakguard::handles::set_clock(Arc::new(clock.clone()));
/// clock.advance(Duration::from_secs(5));
/// ```
pub fn set_clock(clock: Arc<dyn Clock>) {
    registry::set_clock(clock);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>() {}

    #[test]
    fn guards_and_tracked_values_cross_threads() {
        is_send_sync::<HandleGuard>();
        is_send_sync::<Tracked<String>>();
        is_send_sync::<HandleKind>();
        assert_eq!(std::mem::size_of::<HandleGuard>(), 16);
    }

    #[test]
    fn a_guard_dropped_on_another_thread_closes_the_handle() {
        let kind = kind("unit_cross_thread");
        let guard = kind.track();
        assert_eq!(kind.open(), 1);
        std::thread::spawn(move || drop(guard)).join().ok();
        assert_eq!(kind.open(), 0);
    }

    #[test]
    fn static_and_registered_names_are_one_kind() {
        let a = track("unit_same_kind");
        let k = kind("unit_same_kind");
        assert_eq!(k.open(), 1);
        assert_eq!(k, "unit_same_kind".into_kind());
        drop(a);
        assert_eq!(k.open(), 0);
    }
}
