//! The lock of a Python cache: a mutex that a Python thread waits for with the GIL released,
//! and that tells a thread coming back into it from the holder's own Python callback (a key's
//! `__eq__` using the same cache) instead of deadlocking.
//!
//! Nothing here knows Python: how to wait (with the GIL released) is the caller's closure, so
//! the lock is tested with plain threads (see the tests below).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{
    AtomicBool, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::{Duration, Instant};

/// The lock word. No thread ever sleeps on it in the kernel or queues for it: a waiter polls
/// it ([`wait_until_free`]), so releasing it is a plain store, with no waiter to wake (on
/// x86-64 an ordinary `mov`, where a mutex that queues its waiters, such as parking_lot's,
/// needs a second atomic read-modify-write to see whether any is queued). Taking it is one
/// compare-and-swap.
struct RawLock(AtomicBool);

impl RawLock {
    const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    #[inline(always)]
    fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_ok()
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// Only by the thread that holds it.
    #[inline(always)]
    unsafe fn unlock(&self) {
        self.0.store(false, Release);
    }

    #[inline(always)]
    fn is_locked(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// An identifier of the current thread, never 0, unique among live threads: the address of
/// its thread control block. On x86-64 Linux that is the word at `%fs:0` (the TCB's pointer
/// to itself, what `pthread_self()` returns on glibc and musl), read inline; elsewhere
/// `pthread_self()`, which reads the same thing through a call.
#[inline(always)]
fn thread_tag() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let tcb: usize;
        // SAFETY: on x86-64 Linux `%fs` is the thread pointer and the TCB's first word is
        // its own address (the x86-64 TLS ABI); the read has no side effect.
        unsafe {
            std::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) tcb,
                options(nostack, readonly, preserves_flags, pure)
            );
        }
        tcb
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        // SAFETY: pthread_self has no preconditions and cannot fail.
        unsafe { libc::pthread_self() as usize }
    }
}

/// Returns once `raw` is free, without taking it: spins briefly, then yields, then sleeps
/// for doubling times up to 1 ms (a Python cache's lock is held for microseconds, unless a
/// key's `__eq__` or a `getsizeof` runs long inside it).
fn wait_until_free(raw: &RawLock) {
    wait_until_free_or(raw, None);
}

/// [`wait_until_free`], giving up at `deadline`; whether the lock was seen free.
fn wait_until_free_or(raw: &RawLock, deadline: Option<Instant>) -> bool {
    let mut round = 0u32;
    let mut nap = Duration::from_micros(10);
    while raw.is_locked() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if round < 64 {
            std::hint::spin_loop();
        } else if round < 128 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
        round = round.saturating_add(1);
    }
    true
}

/// The lock was taken by the thread asking for it again (from within one of its own
/// operations): waiting would never end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reentered;

/// A mutex that tells re-entry from the holding thread.
pub(crate) struct PyLock<T> {
    raw: RawLock,
    /// The thread holding `raw` (its tag), 0 when none.
    owner: AtomicUsize,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, which exists while `raw` is held, so one
// thread at a time; `T: Send` lets that thread be any thread.
unsafe impl<T: Send> Sync for PyLock<T> {}

/// Access to the data while the lock is held; unlocks when dropped.
pub(crate) struct PyLockGuard<'a, T> {
    lock: &'a PyLock<T>,
    /// Not Send (a raw pointer is not).
    _not_send: PhantomData<*const ()>,
}

// A PyLockGuard must not be Send: the lock is unlocked by the thread that locked it (`owner`
// tells that thread). This fails to compile when the guard is Send: the call below is then
// ambiguous between the two impls.
const _: fn() = || {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct IsSend;
    impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}
    <PyLockGuard<'static, ()> as AmbiguousIfSend<_>>::some_item();
};

impl<T> PyLock<T> {
    pub(crate) fn new(data: T) -> Self {
        Self {
            raw: RawLock::new(),
            owner: AtomicUsize::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Locks; when another thread holds the lock, `wait` is called with a blocking wait until
    /// the lock is free, which it must run on this thread (a Python thread runs it with the
    /// GIL released), and the lock is tried again once `wait` returns (with the GIL back), as
    /// often as it takes. The waiting thread never holds the lock while it waits for the GIL:
    /// a fork (which the forking thread makes with the GIL held) thus never finds a cache's
    /// lock held by a thread that was only waiting for the GIL, which the child would not
    /// have. Returns `Reentered`, without waiting, when this thread holds the lock.
    pub(crate) fn lock_waiting(
        &self,
        mut wait: impl FnMut(&(dyn Fn() + Sync)),
    ) -> Result<PyLockGuard<'_, T>, Reentered> {
        let me = thread_tag();
        loop {
            if self.raw.try_lock() {
                return Ok(self.locked_by(me));
            }
            // `owner` is this thread's tag only while this thread holds the lock: a value
            // left by another thread cannot equal `me`.
            if self.owner.load(Relaxed) == me {
                return Err(Reentered);
            }
            let raw = &self.raw;
            let waited = AtomicBool::new(false);
            wait(&|| {
                wait_until_free(raw);
                waited.store(true, Relaxed);
            });
            if !waited.load(Relaxed) {
                // `wait` did not run the wait: wait here.
                wait_until_free(raw);
            }
        }
    }

    /// Locks if the lock is free, without waiting.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<PyLockGuard<'_, T>> {
        self.raw.try_lock().then(|| self.locked_by(thread_tag()))
    }

    /// Locks from any thread, waiting at most `wait` (polling, as every waiter does).
    pub(crate) fn lock_for(&self, wait: Duration) -> Option<PyLockGuard<'_, T>> {
        let deadline = Instant::now().checked_add(wait);
        loop {
            if self.raw.try_lock() {
                return Some(self.locked_by(thread_tag()));
            }
            if !wait_until_free_or(&self.raw, deadline) {
                return None;
            }
        }
    }

    /// The guard of a lock this thread has just taken.
    #[inline]
    fn locked_by(&self, me: usize) -> PyLockGuard<'_, T> {
        self.owner.store(me, Relaxed);
        PyLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }
}

impl<T> Deref for PyLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists while the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for PyLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists while the lock is held, and is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for PyLockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.owner.store(0, Relaxed);
        // SAFETY: the guard was made when this thread took the lock, and guards are not Send,
        // so this is that thread.
        unsafe { self.lock.raw.unlock() };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;

    /// Waits as a Python thread would, with the acquisition run on this thread.
    fn block(acquire: &(dyn Fn() + Sync)) {
        acquire();
    }

    #[test]
    fn thread_tags_are_the_threads_own_and_tell_threads_apart() {
        let here = thread_tag();
        assert_ne!(here, 0);
        assert_eq!(here, thread_tag());
        // SAFETY: pthread_self has no preconditions.
        assert_eq!(here, unsafe { libc::pthread_self() } as usize);
        let there = thread::spawn(|| {
            // SAFETY: as above.
            (thread_tag(), unsafe { libc::pthread_self() } as usize)
        })
        .join()
        .unwrap();
        assert_eq!(there.0, there.1);
        assert_ne!(there.0, here);
    }

    #[test]
    fn one_thread_at_a_time_reaches_the_data() {
        // A plain (non-atomic) counter incremented through the guard by 4 threads: any
        // overlap would lose increments.
        let lock = Arc::new(PyLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    for _ in 0..20_000 {
                        let mut n = lock.lock_waiting(block).unwrap();
                        let v = *n;
                        *n = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.try_lock().unwrap(), 80_000);
    }

    #[test]
    fn the_holding_thread_coming_back_is_told_instead_of_deadlocking() {
        let lock = PyLock::new(());
        let held = lock.lock_waiting(block).unwrap();
        let mut waited = false;
        let again = lock.lock_waiting(|_| waited = true);
        assert_eq!(again.err(), Some(Reentered));
        assert!(!waited, "re-entry must not wait");
        assert!(lock.try_lock().is_none());
        drop(held);
        // Released: the same thread locks again without being taken for a re-entry.
        assert!(lock.lock_waiting(block).is_ok());
    }

    #[test]
    fn another_thread_waits_through_the_callback_until_the_holder_releases() {
        let lock = Arc::new(PyLock::new(Vec::<&str>::new()));
        let mut held = lock.lock_waiting(block).unwrap();
        let (waiting_tx, waiting_rx) = mpsc::channel();
        let waiter = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut data = lock
                    .lock_waiting(|acquire| {
                        waiting_tx.send(()).unwrap();
                        acquire();
                    })
                    .unwrap();
                data.push("waiter");
            })
        };
        // The waiter reached its wait (it did not take the lock nor report a re-entry).
        waiting_rx.recv().unwrap();
        held.push("holder");
        drop(held);
        waiter.join().unwrap();
        assert_eq!(*lock.try_lock().unwrap(), ["holder", "waiter"]);
    }

    #[test]
    fn a_waiter_does_not_hold_the_lock_until_its_wait_has_returned() {
        // What a fork needs: a Python thread waiting for the GIL (after its wait) must not
        // hold the lock meanwhile.
        let lock = Arc::new(PyLock::new(0));
        let held = lock.lock_waiting(block).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut free_after_wait = None;
                let mut n = lock
                    .lock_waiting(|wait| {
                        tx.send(()).unwrap();
                        wait();
                        // Back from the wait (where Python would retake the GIL): free.
                        free_after_wait = Some(!lock.raw.is_locked());
                    })
                    .unwrap();
                *n += 1;
                free_after_wait
            })
        };
        rx.recv().unwrap();
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(true));
        assert_eq!(*lock.try_lock().unwrap(), 1);
    }

    #[test]
    fn a_wait_that_does_not_run_the_acquisition_still_locks() {
        let lock = Arc::new(PyLock::new(0));
        let held = lock.lock_waiting(block).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut n = lock.lock_waiting(|_| tx.send(()).unwrap()).unwrap();
                *n += 1;
            })
        };
        rx.recv().unwrap();
        drop(held);
        waiter.join().unwrap();
        assert_eq!(*lock.try_lock().unwrap(), 1);
    }

    #[test]
    fn timed_and_non_blocking_locks_give_up_while_another_thread_holds_it() {
        let lock = Arc::new(PyLock::new(()));
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let _held = lock.lock_waiting(block).unwrap();
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        };
        locked_rx.recv().unwrap();
        assert!(lock.try_lock().is_none());
        assert!(lock.lock_for(Duration::from_millis(5)).is_none());
        // Another thread holds it: this thread is not mistaken for the holder.
        let mut waited = false;
        let (acquire_tx, acquire_rx) = mpsc::channel();
        let got = lock.lock_waiting(|acquire| {
            waited = true;
            release_tx.send(()).unwrap();
            acquire();
            acquire_tx.send(()).unwrap();
        });
        assert!(got.is_ok() && waited);
        acquire_rx.recv().unwrap();
        drop(got);
        holder.join().unwrap();
        assert!(lock.lock_for(Duration::from_millis(5)).is_some());
    }
}
