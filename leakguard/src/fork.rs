//! Fork safety: a child forked while one of leakguard's threads held a lock must not find that
//! lock held forever (Python `multiprocessing` with fork, Celery prefork, gunicorn `--preload`
//! with the guard started at import).
//!
//! [`install`] registers `pthread_atfork` handlers once per process (every registry calls it
//! before its lock is first taken). Before a fork, the forking thread takes each of the
//! process-wide locks leakguard's threads use: the cache registry, the handle kinds' names,
//! clock and per-kind state, the handle-site and external-frame tables, both symbol caches, the
//! handover registry, and the section around stack walks and symbol lookups (the `backtrace`
//! crate's own lock is inside it). So the fork happens at a moment when no other thread is
//! inside any of them, and the data they guard is consistent. After the fork, parent and child
//! release them.
//!
//! Each lock is waited for at most [`PREPARE_WAIT`]: a lock held longer than that (or held by
//! the forking thread itself, e.g. a fork from inside a callback) is not waited for, and in the
//! child it is forcibly released if it is still marked held; its data is then whatever the
//! holder left, which for these tables means at worst a stale or partial entry, never a blocked
//! child. A fork therefore costs at most a few microseconds normally, and never blocks on
//! leakguard for long.

use std::sync::Once;
use std::time::Duration;

/// The longest the forking thread waits for any one lock before forking without it.
pub const PREPARE_WAIT: Duration = Duration::from_millis(100);

/// A lock that can be taken before a fork and released after it.
pub(crate) trait ForkLock: Sync {
    /// Takes the lock within `wait` and keeps it (the guard is forgotten); false if not taken.
    fn acquire(&self, wait: Duration) -> bool;
    /// Releases a lock taken by [`ForkLock::acquire`].
    ///
    /// # Safety
    /// Only after a successful `acquire` on the same thread, or in the child of a fork (one
    /// thread left) when the lock is marked held by a thread that no longer exists.
    unsafe fn release(&self);
    /// Whether the lock is marked held and may be forcibly released in a child (a mutex;
    /// not a read-write lock, whose readers cannot be released one by one).
    fn held_and_releasable(&self) -> bool;
}

impl<T: Send> ForkLock for parking_lot::Mutex<T> {
    fn acquire(&self, wait: Duration) -> bool {
        self.try_lock_for(wait).map(std::mem::forget).is_some()
    }
    unsafe fn release(&self) {
        // SAFETY: by the trait's contract the lock is held and nobody else will release it.
        unsafe { self.force_unlock(Default::default()) }
    }
    fn held_and_releasable(&self) -> bool {
        self.is_locked()
    }
}

impl<R, T> ForkLock for parking_lot::lock_api::RwLock<R, T>
where
    R: parking_lot::lock_api::RawRwLockTimed<Duration = Duration> + Sync,
    R::ExclusiveGuard: Default,
    T: Send + Sync,
{
    fn acquire(&self, wait: Duration) -> bool {
        self.try_write_for(wait).map(std::mem::forget).is_some()
    }
    unsafe fn release(&self) {
        // SAFETY: by the trait's contract the write lock is held by us.
        unsafe { self.force_unlock_write(Default::default()) }
    }
    fn held_and_releasable(&self) -> bool {
        false
    }
}

/// The locks taken before the fork in progress, and whether each was taken. Itself locked
/// from `prepare` to `parent`/`child`, which also serializes forks from several threads.
static PENDING: parking_lot::Mutex<Vec<(&'static dyn ForkLock, bool)>> =
    parking_lot::Mutex::new(Vec::new());

/// Held (shared) around every stack walk and symbol lookup of leakguard's, so that no fork
/// happens inside the `backtrace` crate's global lock.
/// Fair: a fork waiting for it holds back new sections, so a stream of them cannot starve
/// the fork (sections never nest).
static BACKTRACE: parking_lot::RwLock<()> = parking_lot::RwLock::new(());

/// Set in a child forked while a stack walk or symbol lookup ran on another thread (one that
/// outlasted [`PREPARE_WAIT`], such as the first lookup, which reads the debug information):
/// the unwinder's and symbolizer's own locks may be held by a thread that no longer exists,
/// so the child does no more of them (its handle sites stay unresolved addresses).
static NO_BACKTRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` (a stack walk or symbol lookup) where a fork cannot interrupt it; `None` (without
/// running it) in a child forked in the middle of one.
pub(crate) fn backtrace_section<R>(f: impl FnOnce() -> R) -> Option<R> {
    install_handlers();
    if NO_BACKTRACE.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let _section = BACKTRACE.read();
    Some(f())
}

/// A module whose locks are taken around a fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The cache registry.
    Caches,
    /// Handle kinds, their sites and external frames.
    Handles,
    /// The profile's symbol cache.
    Symbols,
    /// The handover registry.
    Handover,
}

/// Adds a module's locks to `out`.
pub(crate) type Locks = fn(&mut Vec<&'static dyn ForkLock>);

/// The modules in use, each once, in the order they first took a lock.
static SOURCES: parking_lot::Mutex<Vec<(Source, Locks)>> = parking_lot::Mutex::new(Vec::new());

/// Every lock to take before a fork, in order.
fn locks() -> Vec<&'static dyn ForkLock> {
    let mut out: Vec<&'static dyn ForkLock> = vec![&BACKTRACE];
    let sources = SOURCES.lock().clone();
    for (_, add) in sources {
        add(&mut out);
    }
    out
}

extern "C" fn prepare() {
    // Allocation is fine here: the allocators' own prepare handlers (registered earlier) run
    // after this one.
    let locks = locks();
    let mut pending = PENDING.lock();
    pending.clear();
    pending.extend(locks.into_iter().map(|l| (l, l.acquire(PREPARE_WAIT))));
    std::mem::forget(pending);
}

extern "C" fn parent() {
    // SAFETY: `prepare` left PENDING locked by this thread.
    let pending = unsafe { &mut *PENDING.data_ptr() };
    for (lock, taken) in pending.iter().rev() {
        if *taken {
            // SAFETY: taken by `prepare` on this thread.
            unsafe { lock.release() };
        }
    }
    pending.clear();
    // SAFETY: locked by `prepare` on this thread.
    unsafe { PENDING.force_unlock(Default::default()) };
}

extern "C" fn child() {
    // SAFETY: `prepare` left PENDING locked by this thread, the only one in the child.
    let pending = unsafe { &mut *PENDING.data_ptr() };
    if BACKTRACE.is_locked() && !pending.first().is_some_and(|(_, taken)| *taken) {
        NO_BACKTRACE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for (lock, taken) in pending.iter().rev() {
        if *taken || lock.held_and_releasable() {
            // SAFETY: the child has one thread: a lock marked held is held by `prepare` on
            // this thread or by a thread that does not exist here.
            unsafe { lock.release() };
        }
    }
    pending.clear();
    // SAFETY: as above.
    unsafe { PENDING.force_unlock(Default::default()) };
}

static INSTALL: Once = Once::new();

/// Makes `source`'s locks safe across fork: registers the fork handlers (once per process) and
/// adds the module's locks to those taken. Modules call it before they first take a lock;
/// cheap after the first call (one atomic flag per module).
pub(crate) fn install(source: Source, locks: Locks, installed: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    if installed.load(Ordering::Acquire) {
        return;
    }
    install_handlers();
    let mut sources = SOURCES.lock();
    if !sources.iter().any(|(s, _)| *s == source) {
        sources.push((source, locks));
    }
    installed.store(true, Ordering::Release);
}

/// Registers the fork handlers, once per process.
fn install_handlers() {
    INSTALL.call_once(|| {
        // SAFETY: the handlers are `extern "C"` functions that live as long as the process.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "pthread_atfork failed: a child forked while leakguard holds a lock may block"
            );
        }
    });
}
