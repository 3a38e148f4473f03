//! Listening sockets that survive a re-exec, handed over by name with systemd's socket
//! activation convention (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, descriptors from 3),
//! which the `listenfd` crate and most servers read; and the restart record that survives the
//! exec (`LEAKGUARD_RESTART_STATE`).
//!
//! At start, [`take_environment`] reads and removes these variables, so the service's own
//! children never see them, and marks the inherited descriptors close-on-exec. A service then
//! asks for its listeners by name with [`listener`]: inherited if present, bound fresh
//! otherwise; either way leakguard remembers it to hand over at the next re-exec.
//!
//! Leakguard holds no descriptor of its own for a listener until a restart begins: a listener
//! the service closes (or the guard's own endpoint, at [`Guard::stop`](crate::Guard::stop)) is
//! really closed, and connections to it are refused rather than queued. When a restart begins
//! the guard takes a duplicate of every listener still open, so that the service may close its
//! own during the drain while connections keep waiting in the backlog for the next image.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsString};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The first handed-over descriptor (systemd's `SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// At most this many listeners are handed over.
pub const MAX_LISTENERS: usize = 64;
/// The variable that carries the restart record across the exec.
pub const STATE_VAR: &str = "LEAKGUARD_RESTART_STATE";
/// Restart times kept in the record at most (the newest; only those of the last hour count
/// for the per-hour limit, which is therefore capped at this value).
pub const MAX_TIMES: usize = 1024;

/// What survives a re-exec about past restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// Restarts performed by leakguard in this process's lineage.
    pub restarts_total: u64,
    /// Unix times of the restarts of the last hour (at most [`MAX_TIMES`], the newest), oldest
    /// first.
    pub times: Vec<f64>,
    /// Why the last restart happened.
    pub last_reason: Option<String>,
}

/// A listener to hand over: the service's descriptor, known by number and identity (device
/// and inode), and, once a restart began, a duplicate that keeps it open.
#[derive(Debug)]
struct Kept {
    fd: RawFd,
    identity: (u64, u64),
    held: Option<OwnedFd>,
}

/// Device and inode of an open descriptor: a socket keeps its inode while it is open, so a
/// descriptor number reused by another file after the service closed its listener is told
/// apart.
fn identity(fd: RawFd) -> Option<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer or fails; it does not keep the pointer.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so the buffer is initialized.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

impl Kept {
    /// The descriptor to hand over, if the listener is still open.
    fn live(&self) -> Option<RawFd> {
        match &self.held {
            Some(held) => Some(held.as_raw_fd()),
            None => (identity(self.fd) == Some(self.identity)).then_some(self.fd),
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Inherited descriptors not yet claimed, by name.
    inherited: Vec<(String, OwnedFd)>,
    /// The listeners to hand over at the next re-exec, by name.
    handover: Vec<(String, Kept)>,
    record: RestartRecord,
    taken: bool,
    notes: Vec<String>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// The registry's lock, taken around a fork (see [`crate::fork`]).
fn fork_locks(out: &mut Vec<&'static dyn crate::fork::ForkLock>) {
    out.push(&REGISTRY);
}

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    static FORK_SAFE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    crate::fork::install(crate::fork::Source::Handover, fork_locks, &FORK_SAFE);
    let mut guard = REGISTRY.lock();
    f(guard.get_or_insert_with(Registry::default))
}

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let next = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, next) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn remove_var(name: &str) {
    // SAFETY: the guard reads and removes these variables once, at start, before it starts its
    // own threads; std serializes its own environment access. Services should start the guard
    // early in `main`, before they start threads that read the environment through libc.
    unsafe { std::env::remove_var(name) };
}

/// Reads and removes `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` and the restart record, once
/// per process. Descriptors meant for another process (`LISTEN_PID` differs) are left alone.
/// Returns notes about anything malformed (the variables are removed in any case).
pub fn take_environment() -> Vec<String> {
    with(|r| {
        if r.taken {
            return Vec::new();
        }
        r.taken = true;
        let fds = std::env::var("LISTEN_FDS").ok();
        let pid = std::env::var("LISTEN_PID").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let state = std::env::var(STATE_VAR).ok();
        for v in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", STATE_VAR] {
            remove_var(v);
        }
        if let Some(state) = state {
            match serde_json::from_str::<RestartRecord>(&state) {
                Ok(mut rec) => {
                    let excess = rec.times.len().saturating_sub(MAX_TIMES);
                    rec.times.drain(..excess);
                    r.record = rec;
                }
                Err(e) => r
                    .notes
                    .push(format!("ignoring a malformed {STATE_VAR}: {e}")),
            }
        }
        if let Some(fds) = fds {
            let ours = pid
                .as_deref()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|p| p == std::process::id());
            match fds.trim().parse::<usize>() {
                Ok(n) if ours && n <= MAX_LISTENERS => {
                    let names: Vec<String> = names
                        .unwrap_or_default()
                        .split(':')
                        .map(str::to_owned)
                        .collect();
                    for i in 0..n {
                        let fd = LISTEN_FDS_START + i as RawFd;
                        // SAFETY: F_GETFD only checks that the descriptor is open.
                        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                            r.notes.push(format!(
                                "LISTEN_FDS names descriptor {fd}, which is not open"
                            ));
                            continue;
                        }
                        if let Err(e) = set_cloexec(fd, true) {
                            r.notes.push(format!("descriptor {fd}: {e}"));
                            continue;
                        }
                        let name = names
                            .get(i)
                            .filter(|n| !n.is_empty())
                            .cloned()
                            .unwrap_or_else(|| format!("fd{fd}"));
                        // SAFETY: the descriptor is open, was handed to this process by
                        // LISTEN_FDS and nothing else in the process owns it.
                        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                        r.inherited.push((name, owned));
                    }
                }
                Ok(n) if ours => r.notes.push(format!(
                    "LISTEN_FDS={n} is more than the {MAX_LISTENERS} leakguard accepts; ignored"
                )),
                Ok(_) => {}
                Err(_) => r
                    .notes
                    .push(format!("ignoring a malformed LISTEN_FDS={fds:?}")),
            }
        }
        std::mem::take(&mut r.notes)
    })
}

/// The restart record inherited from before the last re-exec.
pub fn record() -> RestartRecord {
    with(|r| r.record.clone())
}

/// Adds a restart to the record (kept for the next image): times more than an hour away from
/// `at` are dropped, and of the rest the newest [`MAX_TIMES`] are kept.
pub(crate) fn note_restart(at: f64, reason: &str) -> RestartRecord {
    with(|r| {
        r.record.restarts_total += 1;
        r.record.times.retain(|t| (at - t).abs() < 3600.0);
        r.record.times.push(at);
        let excess = r.record.times.len().saturating_sub(MAX_TIMES);
        r.record.times.drain(..excess);
        r.record.last_reason = Some(reason.chars().take(200).collect());
        r.record.clone()
    })
}

/// Undoes [`note_restart`] when the restart did not happen after all.
pub(crate) fn forget_restart() {
    with(|r| {
        r.record.restarts_total = r.record.restarts_total.saturating_sub(1);
        r.record.times.pop();
    });
}

/// A listening TCP socket named `name`: the one inherited through `LISTEN_FDS` under that name
/// if there is one, else a fresh one bound to `addr`. Either way it is handed over, open, to the
/// new image at a re-exec, so connections that arrive meanwhile wait in its backlog; if the
/// service closes it before a restart begins, it is closed for good.
///
/// The socket is in **non-blocking** mode, as async servers need it
/// (`tokio::net::TcpListener::from_std` requires it); a server that accepts with blocking
/// calls switches it back with `set_nonblocking(false)`.
///
/// ```no_run
/// let listener = leakguard::listener("http", "127.0.0.1:8080")?;
/// # Ok::<(), leakguard::Error>(())
/// ```
pub fn listener(name: &str, addr: impl ToSocketAddrs + std::fmt::Display) -> Result<TcpListener> {
    take_environment();
    let inherited = with(|r| {
        r.inherited
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| r.inherited.remove(i).1)
    });
    let listener = match inherited {
        Some(fd) => TcpListener::from(fd),
        None => TcpListener::bind(&addr).map_err(|source| Error::Io {
            what: format!("binding listener {name:?} to {addr}"),
            source,
        })?,
    };
    listener.set_nonblocking(true).map_err(|source| Error::Io {
        what: format!("making listener {name:?} non-blocking"),
        source,
    })?;
    keep_for_handover(name, &listener)?;
    Ok(listener)
}

/// Remembers `listener` to hand over under `name` at the next re-exec (replacing an earlier
/// one of the same name), as long as it stays open: no duplicate is kept until a restart
/// begins, so closing it closes it.
pub fn keep_for_handover(name: &str, listener: &TcpListener) -> Result<()> {
    if name.is_empty() || name.contains(':') || name.len() > 255 {
        return Err(Error::config(
            "listener name",
            name,
            "must be 1 to 255 characters without ':'",
        ));
    }
    let fd = listener.as_raw_fd();
    let Some(identity) = identity(fd) else {
        return Err(Error::Io {
            what: format!("keeping listener {name:?} for the handover"),
            source: std::io::Error::last_os_error(),
        });
    };
    let kept = Kept {
        fd,
        identity,
        held: None,
    };
    with(|r| {
        r.handover.retain(|(n, _)| n != name);
        if r.handover.len() >= MAX_LISTENERS {
            return Err(Error::config(
                "listener name",
                name,
                "too many listeners kept for the handover (64 at most)",
            ));
        }
        r.handover.push((name.to_owned(), kept));
        Ok(())
    })
}

/// At the start of a restart: takes a duplicate of every listener still open, so that it
/// stays open (and connections wait in its backlog) even if the service closes its own during
/// the drain; forgets the ones the service has closed. Returns the names held.
pub(crate) fn hold_for_restart() -> Vec<String> {
    with(|r| {
        r.handover.retain_mut(|(name, kept)| {
            if kept.held.is_some() {
                return true;
            }
            let Some(fd) = kept.live() else {
                tracing::debug!(listener = %name, "a listener was closed: not handed over");
                return false;
            };
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor that is open (checked just
            // above, under the registry lock) into a new one that we own.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return false;
            }
            // SAFETY: `dup` is a new descriptor nothing else owns.
            kept.held = Some(unsafe { OwnedFd::from_raw_fd(dup) });
            true
        });
        r.handover.iter().map(|(n, _)| n.clone()).collect()
    })
}

/// When a restart did not replace the process after all: drops the duplicates taken by
/// [`hold_for_restart`], so listeners the service closes are closed again.
pub(crate) fn release_held() {
    with(|r| {
        for (_, kept) in &mut r.handover {
            kept.held = None;
        }
    });
}

/// Stops handing over the listener named `name` (e.g. a service that closed it for good).
pub fn release(name: &str) {
    with(|r| r.handover.retain(|(n, _)| n != name));
}

/// The names of the listeners that would be handed over, in order (those still open).
pub fn handover_names() -> Vec<String> {
    with(|r| {
        r.handover
            .iter()
            .filter(|(_, kept)| kept.live().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    })
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("an argument contains a NUL byte"))
}

/// Replaces the process image with `/proc/self/exe`, same argv and environment (less the
/// handover variables of the previous generation, plus this one's), same PID, with the
/// listeners kept for the handover as descriptors 3, 4, … Returns only on failure.
pub(crate) fn reexec(record: &RestartRecord) -> std::io::Error {
    match prepare_and_exec(record) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(record: &RestartRecord) -> std::io::Result<std::convert::Infallible> {
    // Everything that allocates comes before the descriptors are moved.
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<std::io::Result<_>>()?;
    let registry = REGISTRY.lock();
    let handover: Vec<(String, RawFd)> = registry
        .as_ref()
        .map(|r| {
            r.handover
                .iter()
                .filter_map(|(n, kept)| Some((n.clone(), kept.live()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            !matches!(
                k.to_str(),
                Some("LISTEN_FDS" | "LISTEN_PID" | "LISTEN_FDNAMES" | STATE_VAR)
            )
        })
        .collect();
    if !handover.is_empty() {
        env.push(("LISTEN_FDS".into(), handover.len().to_string().into()));
        env.push(("LISTEN_PID".into(), std::process::id().to_string().into()));
        let names: Vec<&str> = handover.iter().map(|(n, _)| n.as_str()).collect();
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
    }
    let state = serde_json::to_string(record).map_err(std::io::Error::other)?;
    env.push((STATE_VAR.into(), state.into()));
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv)
        })
        .collect::<std::io::Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let exe = c"/proc/self/exe";
    // Check first that the image can be executed, so a failure leaves the descriptors alone.
    // SAFETY: `exe` is a valid C string.
    if unsafe { libc::access(exe.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }

    // Move the listeners out of the way (above any target slot), then into 3, 4, …; dup2
    // leaves the targets without close-on-exec, everything else keeps it.
    let floor = LISTEN_FDS_START + handover.len() as RawFd + 16;
    let mut high = Vec::with_capacity(handover.len());
    for (_, fd) in &handover {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor we own a handle to.
        let h = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, floor) };
        if h < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high.push(h);
    }
    for (i, h) in high.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        // SAFETY: dup2 onto a small descriptor number; whatever was there is closed, which is
        // what the exec that follows would have done to it (every descriptor leakguard and std
        // open is close-on-exec).
        if unsafe { libc::dup2(*h, target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: argv and envp are null-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    Err(std::io::Error::last_os_error())
}
