//! Fork safety: a child forked while one of leakguard's threads held a lock must not find that
//! lock held forever (Python `multiprocessing` with fork, Celery prefork, gunicorn `--preload`
//! with the guard started at import), nor a child that goes on using a guard or a cache made
//! in the parent.
//!
//! [`install`] registers `pthread_atfork` handlers once per process (every registry calls it
//! before its lock is first taken). Before a fork, the forking thread takes each of the
//! process-wide locks leakguard's threads use: the cache registry, the handle kinds' names,
//! clock and per-kind state, the handle-site and external-frame tables, both symbol caches, the
//! handover registry, and the section around stack walks and symbol lookups (the `backtrace`
//! crate's own lock is inside it). It also takes the locks of every live guard (its sampler,
//! state, event log, ...) and every live cache (each shard's lock, named caches or not),
//! which [`register`] records weakly when they are made, and the section around the cache
//! registry's calls into caches. So the fork happens at a moment when no other thread is
//! inside any of them, and the data they guard is consistent. After the fork, parent and child
//! release them.
//!
//! The locks are taken outer first, in the order leakguard's threads nest them (see [`locks`]),
//! so the forking thread never waits for a lock whose holder waits for one it took.
//!
//! The child does not release them the usual way: a lock that had waiters in the parent would
//! look them up in parking_lot's table of waiters, the parent's, copied in the middle of its
//! use (a thread that was parking at the moment of the fork left a bucket of it locked for
//! ever). The child stores "free, no waiters" into each lock's word instead
//! ([`ForkLock::reset_in_child`]).
//!
//! Each mutex is waited for at most [`PREPARE_WAIT`], the read-write locks (a cache's shards,
//! the stack-walk section) for at most [`PREPARE_BUDGET`] in all: a lock held longer than that
//! (or held by the forking thread itself, e.g. a fork from inside a callback) is not waited
//! for, and in the child it is freed if it is still marked held (a mutex, or a read-write lock
//! held by readers only; a shard's read-write lock held by a writer is not, and a child would
//! wait on that shard); a mutex's data is then whatever the holder left, which for these
//! tables means at worst a stale or partial entry. A fork therefore costs at
//! most a few microseconds normally (plus a few nanoseconds per shard of every live cache),
//! and never blocks on leakguard for long.

use std::sync::{Arc, Once, Weak};
use std::time::Duration;

/// The longest the forking thread waits for any one mutex before forking without it (the
/// child then releases it).
pub const PREPARE_WAIT: Duration = Duration::from_millis(100);
/// The longest the forking thread waits, in all, for the read-write locks (caches' shards, the
/// section around stack walks), which a child cannot release: a holder descheduled on a busy
/// machine is waited for up to this long, shared among them, before the fork goes on without
/// its lock.
pub const PREPARE_BUDGET: Duration = Duration::from_secs(1);

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
    /// Marks the lock free in a child, without waking anyone: the threads that wait for it
    /// in the parent's records do not exist here, and parking_lot's table of waiters is
    /// the parent's, copied in the middle of its use (a bucket of it may be locked by a thread
    /// that was parking at the moment of the fork; releasing the lock the usual way would look
    /// its waiters up there and wait for that bucket forever).
    ///
    /// # Safety
    /// Only in the child of a fork (one thread left), when the lock was taken by `prepare`
    /// or is held by threads that do not exist there and [`ForkLock::held_and_releasable`].
    unsafe fn reset_in_child(&self);
    /// Whether the lock is marked held and may be made free in a child: a mutex, or a
    /// read-write lock held only by readers (which change nothing but atomics); not a
    /// read-write lock held by a writer, whose data may be half changed.
    fn held_and_releasable(&self) -> bool;
    /// Whether a child can recover the lock if the fork happens without it (a mutex can be
    /// released there; a read-write lock cannot, so the fork waits longer for it).
    fn releasable_in_child(&self) -> bool;
}

impl<T: Send> ForkLock for parking_lot::Mutex<T> {
    fn acquire(&self, wait: Duration) -> bool {
        self.try_lock_for(wait).map(std::mem::forget).is_some()
    }
    unsafe fn release(&self) {
        // SAFETY: by the trait's contract the lock is held and nobody else will release it.
        unsafe { self.force_unlock(Default::default()) }
    }
    unsafe fn reset_in_child(&self) {
        // SAFETY: by the trait's contract no other thread exists to use the lock; the raw
        // lock is all interior mutability (an atomic word).
        unsafe {
            reset_raw(self.raw(), |w: &std::sync::atomic::AtomicU8| {
                w.store(0, std::sync::atomic::Ordering::Relaxed)
            })
        }
    }
    fn held_and_releasable(&self) -> bool {
        self.is_locked()
    }
    fn releasable_in_child(&self) -> bool {
        true
    }
}

impl<T: Send + Sync> ForkLock for parking_lot::RwLock<T> {
    fn acquire(&self, wait: Duration) -> bool {
        self.try_write_for(wait).map(std::mem::forget).is_some()
    }
    unsafe fn release(&self) {
        // SAFETY: by the trait's contract the write lock is held by us.
        unsafe { self.force_unlock_write(Default::default()) }
    }
    unsafe fn reset_in_child(&self) {
        // SAFETY: as for the mutex.
        unsafe {
            reset_raw(self.raw(), |w: &std::sync::atomic::AtomicUsize| {
                w.store(0, std::sync::atomic::Ordering::Relaxed)
            })
        }
    }
    fn held_and_releasable(&self) -> bool {
        self.is_locked() && !self.is_locked_exclusive()
    }
    fn releasable_in_child(&self) -> bool {
        false
    }
}

/// parking_lot's raw locks are each one atomic word, 0 when free and unlocked (their `INIT`);
/// these checks stop the build if that changes.
const _: () = {
    use std::mem::{align_of, size_of};
    assert!(size_of::<parking_lot::RawMutex>() == size_of::<std::sync::atomic::AtomicU8>());
    assert!(align_of::<parking_lot::RawMutex>() == align_of::<std::sync::atomic::AtomicU8>());
    assert!(size_of::<parking_lot::RawRwLock>() == size_of::<std::sync::atomic::AtomicUsize>());
    assert!(align_of::<parking_lot::RawRwLock>() == align_of::<std::sync::atomic::AtomicUsize>());
};

/// Stores 0 (free, no waiters) into the word of a raw parking_lot lock, waking nobody.
///
/// # Safety
/// `R` is `parking_lot::RawMutex` (word `A` = `AtomicU8`) or `parking_lot::RawRwLock`
/// (`AtomicUsize`), and no other thread uses the lock (the child of a fork).
unsafe fn reset_raw<R, A>(raw: &R, store_zero: impl FnOnce(&A)) {
    // SAFETY: by the contract and the checks above, the raw lock is exactly its atomic word.
    store_zero(unsafe { &*std::ptr::from_ref(raw).cast::<A>() })
}

/// What the fork in progress took: the objects kept alive until their locks are released, and
/// each lock with whether it was taken. Itself locked from `prepare` to `parent`/`child`,
/// which also serializes forks from several threads.
struct Pending {
    /// Live guards and caches, upgraded in `prepare`: the locks of theirs in `locks` point
    /// into them.
    objects: Vec<Arc<dyn ForkObject>>,
    /// Each lock in the order taken. Pointers into statics or into `objects`.
    locks: Vec<(*const dyn ForkLock, bool)>,
    /// Whether the object registry's lock was taken (it is held through the fork, so that no
    /// guard or cache is created in the middle of one, its locks untaken).
    objects_locked: bool,
}

// SAFETY: the pointers in `locks` point to `Sync` locks in statics or inside `objects` (kept
// alive alongside); they are only used while `PENDING` is held.
unsafe impl Send for Pending {}

static PENDING: parking_lot::Mutex<Pending> = parking_lot::Mutex::new(Pending {
    objects: Vec::new(),
    locks: Vec::new(),
    objects_locked: false,
});

/// Which objects an object's locks come before or after (see [`locks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// A guard: its locks are taken first (its threads take the others while holding none of
    /// its locks or, like the sampler's lock, as the outer lock).
    Guard,
    /// A cache: its shard locks, taken after the section around the registry's calls into
    /// caches (the calls take shard locks) and before the process-wide tables.
    Cache,
}

/// A guard or a cache, whose locks are taken around a fork; held weakly by the registry that
/// [`register`] fills.
pub(crate) trait ForkObject: Send + Sync {
    /// Adds the object's locks to `out`, in the order to take them (outer locks first).
    fn fork_locks<'a>(&'a self, out: &mut Vec<&'a dyn ForkLock>);
}

/// The most guards and caches (named or not) made fork-safe at once; further ones work but a
/// child forked while a parent's thread holds one of their locks may block on it (a warning
/// says so, once).
pub(crate) const OBJECT_CAPACITY: usize = 4096;

struct Objects {
    entries: Vec<(Tier, Weak<dyn ForkObject>)>,
    /// Dropped objects are removed from `entries` when it reaches this length (twice the live
    /// ones at the last pruning, at least 64): a dropped cache's allocation is kept only until
    /// then, and pruning costs O(1) per registration, amortized.
    prune_at: usize,
}

static OBJECTS: parking_lot::Mutex<Objects> = parking_lot::Mutex::new(Objects {
    entries: Vec::new(),
    prune_at: 64,
});

static UNCOVERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes `object`'s locks safe across fork: they are taken before every fork while the object
/// lives (the registry holds it weakly and forgets it some time after it is dropped). False
/// when [`OBJECT_CAPACITY`] objects are registered already.
pub(crate) fn register(tier: Tier, object: Weak<dyn ForkObject>) -> bool {
    install_handlers();
    let mut objects = OBJECTS.lock();
    if objects.entries.len() >= objects.prune_at.min(OBJECT_CAPACITY) {
        objects.entries.retain(|(_, o)| o.strong_count() > 0);
        objects.prune_at = (objects.entries.len() * 2).max(64);
    }
    if objects.entries.len() >= OBJECT_CAPACITY {
        drop(objects);
        if UNCOVERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            tracing::warn!(
                capacity = OBJECT_CAPACITY,
                "too many guards and caches alive to make them all fork-safe: a child forked while \
                 a thread holds one of the newer ones' locks may block on it"
            );
        }
        return false;
    }
    objects.entries.push((tier, object));
    true
}

/// Guards and caches not made fork-safe because [`OBJECT_CAPACITY`] were registered already.
#[cfg(test)]
pub(crate) fn uncovered() -> u64 {
    UNCOVERED.load(std::sync::atomic::Ordering::Relaxed)
}

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
    /// The section around the cache registry's calls into caches (taken before the caches'
    /// shard locks: the calls take them).
    CacheCalls,
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

/// Every lock to take before a fork, in order: outer locks first, the order in which
/// leakguard's threads nest them (a thread holding one of these takes only later ones):
/// the guards' locks, the section around the registry's calls into caches, the caches' shard
/// locks, the section around stack walks, then the process-wide tables.
fn locks<'a>(objects: &'a [Arc<dyn ForkObject>], tiers: &[Tier]) -> Vec<&'a dyn ForkLock> {
    let sources = SOURCES.lock().clone();
    let mut out: Vec<&'a dyn ForkLock> = Vec::new();
    let of_tier = |tier: Tier, out: &mut Vec<&'a dyn ForkLock>| {
        for (o, t) in objects.iter().zip(tiers) {
            if *t == tier {
                o.fork_locks(out);
            }
        }
    };
    let add_sources = |early: bool, out: &mut Vec<&'a dyn ForkLock>| {
        for (source, add) in &sources {
            if (*source == Source::CacheCalls) == early {
                let mut statics: Vec<&'static dyn ForkLock> = Vec::new();
                add(&mut statics);
                out.extend(statics);
            }
        }
    };
    of_tier(Tier::Guard, &mut out);
    add_sources(true, &mut out);
    of_tier(Tier::Cache, &mut out);
    out.push(&BACKTRACE);
    add_sources(false, &mut out);
    out
}

extern "C" fn prepare() {
    // Allocation is fine here: the allocators' own prepare handlers (registered earlier) run
    // after this one.
    let mut pending = PENDING.lock();
    // Held through the fork: no guard or cache is registered in the middle of one.
    let objects = OBJECTS.try_lock_for(PREPARE_WAIT);
    let (live, tiers): (Vec<Arc<dyn ForkObject>>, Vec<Tier>) = match &objects {
        Some(objects) => objects
            .entries
            .iter()
            .filter_map(|(tier, o)| o.upgrade().map(|o| (o, *tier)))
            .unzip(),
        None => (Vec::new(), Vec::new()),
    };
    pending.objects_locked = objects.is_some();
    std::mem::forget(objects);
    let deadline = std::time::Instant::now() + PREPARE_BUDGET;
    let taken: Vec<(*const dyn ForkLock, bool)> = locks(&live, &tiers)
        .into_iter()
        .map(|l| {
            // SAFETY: only the pointer's lifetime bound changes; it is dereferenced only while
            // the object it points into is kept alive in `pending.objects`.
            let p: *const dyn ForkLock = unsafe {
                std::mem::transmute::<*const (dyn ForkLock + '_), *const dyn ForkLock>(l)
            };
            let wait = if l.releasable_in_child() {
                PREPARE_WAIT
            } else {
                deadline.saturating_duration_since(std::time::Instant::now())
            };
            (p, l.acquire(wait))
        })
        .collect();
    pending.locks = taken;
    pending.objects = live;
    std::mem::forget(pending);
}

/// Releases what `prepare` took, in reverse order; in the child also the locks marked held by
/// threads that no longer exist (those that can be). Returns the objects kept alive, to be
/// dropped once `PENDING` is released.
///
/// # Safety
/// Only from `parent` or `child`, with `PENDING` locked by `prepare` on this thread.
unsafe fn release_all(in_child: bool) -> Vec<Arc<dyn ForkObject>> {
    // SAFETY: `prepare` left PENDING locked by this thread.
    let pending = unsafe { &mut *PENDING.data_ptr() };
    if in_child
        && BACKTRACE.is_locked()
        && !pending
            .locks
            .iter()
            .any(|(l, taken)| *taken && std::ptr::addr_eq(*l, &BACKTRACE))
    {
        NO_BACKTRACE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for (lock, taken) in pending.locks.iter().rev() {
        // SAFETY: the lock is in a static or in one of `pending.objects`, alive.
        let lock = unsafe { &**lock };
        if in_child {
            if *taken || lock.held_and_releasable() {
                // SAFETY: the child has one thread; the lock was taken by `prepare` or is
                // marked held by threads that do not exist here.
                unsafe { lock.reset_in_child() };
            }
        } else if *taken {
            // SAFETY: taken by `prepare` on this thread.
            unsafe { lock.release() };
        }
    }
    pending.locks.clear();
    if in_child {
        // SAFETY: the child has one thread; whoever holds the lock, `prepare` or a thread
        // that does not exist here, will not release it.
        unsafe { (&OBJECTS as &dyn ForkLock).reset_in_child() };
    } else if pending.objects_locked {
        // SAFETY: locked by `prepare` on this thread.
        unsafe { OBJECTS.force_unlock(Default::default()) };
    }
    pending.objects_locked = false;
    std::mem::take(&mut pending.objects)
}

extern "C" fn parent() {
    // SAFETY: called by the fork after `prepare`.
    let objects = unsafe { release_all(false) };
    // SAFETY: locked by `prepare` on this thread.
    unsafe { PENDING.force_unlock(Default::default()) };
    // Dropped last: the last handle of a cache may have gone during the fork.
    drop(objects);
}

extern "C" fn child() {
    // SAFETY: called by the fork after `prepare`; the child has one thread.
    let objects = unsafe { release_all(true) };
    // SAFETY: as above (another thread of the parent's may have been waiting to fork).
    unsafe { (&PENDING as &dyn ForkLock).reset_in_child() };
    drop(objects);
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Dummy(parking_lot::Mutex<()>);

    impl ForkObject for Dummy {
        fn fork_locks<'a>(&'a self, out: &mut Vec<&'a dyn ForkLock>) {
            out.push(&self.0);
        }
    }

    /// Reads a parking_lot mutex's state word (bit 0 locked, bit 1 a thread parked on it).
    fn mutex_word(m: &parking_lot::Mutex<()>) -> u8 {
        // SAFETY: the raw mutex is exactly its atomic word (checked at build time above).
        let raw = unsafe { &*std::ptr::from_ref(m.raw()).cast::<std::sync::atomic::AtomicU8>() };
        raw.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A child forked while a thread of the parent was in the middle of parking (holding a
    /// bucket of parking_lot's table) frees a lock with waiters without looking into that
    /// table. Released the usual way, the lock's parked bit sends the release to the table,
    /// where the bucket stays locked forever (found by `fork_safety.rs` once in ~3,000 forks).
    #[test]
    fn a_child_frees_a_lock_whose_waiters_bucket_was_locked_at_the_fork() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let lock: &'static parking_lot::Mutex<()> =
            Box::leak(Box::new(parking_lot::Mutex::new(())));
        // SAFETY: the raw lock is only used for its address, the key parking_lot parks it on.
        let key = std::ptr::from_ref(unsafe { lock.raw() }) as usize;
        std::mem::forget(lock.lock());
        // A waiter: the lock's parked bit is set, as when a thread waits for a lock that
        // `prepare` took.
        let waiter = std::thread::spawn(move || drop(lock.lock()));
        while mutex_word(lock) & 2 == 0 {
            std::thread::yield_now();
        }
        // A thread in the middle of parking on the same key: parking_lot calls `validate`
        // with the key's bucket locked.
        static IN_BUCKET: AtomicBool = AtomicBool::new(false);
        static LEAVE: AtomicBool = AtomicBool::new(false);
        let parker = std::thread::spawn(move || {
            // SAFETY: the callbacks neither panic nor call into parking_lot.
            unsafe {
                parking_lot_core::park(
                    key,
                    || {
                        IN_BUCKET.store(true, Ordering::SeqCst);
                        while !LEAVE.load(Ordering::SeqCst) {
                            std::hint::spin_loop();
                        }
                        false
                    },
                    || {},
                    |_, _| {},
                    parking_lot_core::DEFAULT_PARK_TOKEN,
                    None,
                )
            }
        });
        while !IN_BUCKET.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // SAFETY: the child only frees, takes and frees the lock, then leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: one thread in the child; the lock's holder and waiter are not here.
            unsafe { (lock as &dyn ForkLock).reset_in_child() };
            drop(lock.lock());
            // SAFETY: ends the child without running the test harness's code.
            unsafe { libc::_exit(0) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        let exited = loop {
            // SAFETY: waitpid on our own child, with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break true;
            }
            if std::time::Instant::now() >= deadline {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        LEAVE.store(true, Ordering::SeqCst);
        parker.join().unwrap();
        // SAFETY: locked above by this thread, its guard forgotten.
        unsafe { lock.force_unlock(Default::default()) };
        waiter.join().unwrap();
        assert!(exited, "the child blocked freeing the lock");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn dropped_objects_leave_the_registry_and_it_stays_bounded() {
        let kept: Arc<dyn ForkObject> = Arc::new(Dummy(parking_lot::Mutex::new(())));
        assert!(register(Tier::Cache, Arc::downgrade(&kept)));
        // Far more objects made and dropped than the registry holds: each is forgotten soon
        // after it is dropped, so none is refused.
        for _ in 0..3 * OBJECT_CAPACITY {
            let o: Arc<dyn ForkObject> = Arc::new(Dummy(parking_lot::Mutex::new(())));
            assert!(register(Tier::Cache, Arc::downgrade(&o)));
        }
        assert_eq!(uncovered(), 0);
        let objects = OBJECTS.lock();
        assert!(
            objects.entries.len() < OBJECT_CAPACITY,
            "{}",
            objects.entries.len()
        );
        // The live one is still there.
        assert!(
            objects
                .entries
                .iter()
                .any(|(_, o)| o.upgrade().is_some_and(|o| Arc::ptr_eq(&o, &kept)))
        );
    }

    #[test]
    fn the_locks_are_taken_outer_first() {
        let guard: Arc<dyn ForkObject> = Arc::new(Dummy(parking_lot::Mutex::new(())));
        let cache: Arc<dyn ForkObject> = Arc::new(Dummy(parking_lot::Mutex::new(())));
        // A cache listed before the guard still comes after it.
        let objects = [Arc::clone(&cache), Arc::clone(&guard)];
        let order = locks(&objects, &[Tier::Cache, Tier::Guard]);
        fn at(order: &[&dyn ForkLock], p: &dyn ForkLock) -> usize {
            order
                .iter()
                .position(|l| std::ptr::addr_eq(*l as *const dyn ForkLock, p))
                .unwrap()
        }
        let mut g = Vec::new();
        guard.fork_locks(&mut g);
        let mut c = Vec::new();
        cache.fork_locks(&mut c);
        let (g, c) = (at(&order, g[0]), at(&order, c[0]));
        let backtrace = at(&order, &BACKTRACE);
        assert!(g < c && c < backtrace, "{g} {c} {backtrace}");
    }
}
