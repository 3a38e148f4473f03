//! The child of a fork starts with an empty parking table.
//!
//! parking_lot (every lock of leakguard's, and the caches' locks) keeps one table per process
//! of the threads waiting for a lock or a condition variable, each a record in that thread's
//! thread-local storage linked into a queue. A fork copies the table, but only the forking
//! thread exists in the child: the queues still link the records of the threads that were
//! waiting at that moment (the guard's sampler between two samples always is), and a bucket
//! lock held then stays held. The C library frees a dead thread's thread-local storage when it
//! reuses its stack for a new thread, and the new thread's record can land at the address a
//! queue still links: the queue then loops, and the next thread that walks it (a `stop()` of
//! the child's guard waking its sampler) spins forever. A lock released in the child could
//! also be handed to a waiter that no longer exists.
//!
//! [`install`] registers, at import, a `pthread_atfork` child handler that makes the table
//! anew (parking_lot_core's `reset_after_fork`, added where it is vendored). Registered before
//! the core's fork handlers (they are registered when the first guard or cache is made), it
//! runs before them in the child: the locks they release there find no stale waiter.

use std::sync::Once;

extern "C" fn child() {
    // SAFETY: a `pthread_atfork` child handler: in the child, on its one thread, before any
    // other thread is made and outside any parking_lot call.
    unsafe { parking_lot_core::reset_after_fork() };
}

/// Registers the child handler, once per process.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `child` is an `extern "C"` function that lives as long as the process.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(child)) };
        if rc != 0 {
            eprintln!("leakguard: pthread_atfork failed ({rc}): a forked child may hang on a lock");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot_core::{DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN, ParkResult};
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    /// A child forked while a thread waits in parking_lot finds no waiter there: the dead
    /// thread's record is not in the child's table (without the handler, `unpark_all` finds
    /// it and "wakes" a thread that does not exist, after which its record may be reused).
    #[test]
    fn a_forked_child_inherits_no_parked_thread() {
        install();
        static KEY: AtomicBool = AtomicBool::new(false);
        let key = &KEY as *const AtomicBool as usize;
        let (parked_tx, parked_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // SAFETY: the callbacks neither panic nor call into parking_lot.
            unsafe {
                parking_lot_core::park(
                    key,
                    || true,
                    // Queued by now, with the bucket's lock released.
                    || parked_tx.send(()).unwrap_or(()),
                    |_, _| {},
                    DEFAULT_PARK_TOKEN,
                    None,
                )
            }
        });
        parked_rx.recv().expect("the waiter parks");
        // SAFETY: the child calls only async-signal-safe functions besides parking_lot's
        // unpark (which, after the reset, touches only a fresh table) and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: nothing to uphold.
            let found = unsafe { parking_lot_core::unpark_all(key, DEFAULT_UNPARK_TOKEN) };
            // SAFETY: ends the child without running the test harness's code.
            unsafe { libc::_exit(if found == 0 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        // The parent's table is untouched: its waiter is there and wakes.
        // SAFETY: nothing to uphold.
        assert_eq!(
            unsafe { parking_lot_core::unpark_all(key, DEFAULT_UNPARK_TOKEN) },
            1
        );
        assert!(matches!(waiter.join(), Ok(ParkResult::Unparked(_))));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child found the parent's parked thread (status {status:#x})"
        );
    }
}
