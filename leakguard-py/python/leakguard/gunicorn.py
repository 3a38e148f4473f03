"""gunicorn server hooks: each worker runs its own guard and, when it crosses the restart
threshold, exits gracefully (it finishes the request in hand; the master starts a fresh worker).

This is the ``reload-on-rss`` that gunicorn lacks. In ``gunicorn.conf.py``::

    # leakguard: recycle a worker whose memory reaches the restart threshold of its limit.
    from leakguard.gunicorn import child_exit, post_fork, pre_fork, worker_exit  # noqa: F401

or, without a config file of your own, ``gunicorn -c python:leakguard.gunicorn app:app``.
If your config has these hooks already, call ``leakguard.gunicorn.post_fork(server, worker)``
(and the others) from yours.

Settings are the ``LEAKGUARD_*`` environment variables, read in every worker:

* ``LEAKGUARD_LIMIT`` is the limit of one worker (its resident memory is what is compared);
  without it the cgroup's limit is used, which is the limit of all workers together: set it.
* ``LEAKGUARD_RESTART`` (0.95), ``LEAKGUARD_MIN_UPTIME`` (60 s), ``LEAKGUARD_INTERVAL`` (1 s)
  as everywhere. The restart action is the graceful worker exit. ``LEAKGUARD_RESTART_ACTION``
  may only be ``none`` (report, never exit): any other action (``reexec`` would re-execute
  the master's command line in the worker's PID; ``exit`` and ``signal`` would drop the
  requests in hand) makes no sense in a worker, so the hooks refuse it with an error in the
  worker's log and keep the graceful exit. The variable is removed from the worker's
  environment, so that the guard does not read it.
* An application that calls ``leakguard.start(...)`` itself (as a single-process service
  does) composes with the hooks: in a worker, the hooks' guard has started before the
  application is loaded, so the application's ``start()`` does nothing and says so once in the
  log. Its arguments do not apply in a worker; the ``LEAKGUARD_*`` variables do. (With
  ``--preload``, the application is loaded in the master, whose guard then runs in the master
  only: start it under ``if __name__ == "__main__"`` or leave it to the hooks.)
* A setting that cannot be understood is logged as an error in each worker, which then runs
  without a guard (the service is not stopped by it).
* The debug endpoint: several workers cannot all listen on one port, so it is off in workers
  unless ``LEAKGUARD_ADDR`` is set; then the worker in slot ``i`` (0 … workers-1, reused by the
  worker that replaces it) listens on that port plus ``i``. The master runs no guard (a guard's
  threads would not survive the fork).

The guard's events (threshold changes, leak verdicts, restarts) go to the ``logging`` logger
``leakguard``; in a worker, unless logging is configured already, that logger writes through
gunicorn's error log handlers, so they appear in gunicorn's log.

The graceful exit is gunicorn's own: the worker sends itself ``SIGTERM``, which gunicorn's
worker handles by finishing the current request and leaving its loop, exactly as after
``max_requests``.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Optional

from leakguard import _guard
from leakguard._leakguard import LeakguardError

__all__ = ["child_exit", "post_fork", "pre_fork", "worker_exit", "worker_addr", "worker_action"]

#: The attribute of gunicorn's worker object that holds the worker's slot.
SLOT_ATTR = "leakguard_slot"


def pre_fork(server: Any, worker: Any) -> None:
    """In the master, before a worker is forked: give it the lowest slot no live worker holds."""
    taken = {getattr(w, SLOT_ATTR, None) for w in server.WORKERS.values()}
    slot = 0
    while slot in taken:
        slot += 1
    setattr(worker, SLOT_ATTR, slot)


def worker_addr(base: Optional[str], slot: int) -> str:
    """The endpoint address of the worker in ``slot``: ``"off"`` without a base address, else
    the base port plus the slot (``"127.0.0.1:6464"``, slot 2 → ``"127.0.0.1:6466"``)."""
    if base is None or base.strip().lower() in ("", "off", "none"):
        return "off"
    text = base.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if not port.isdigit() or int(port) + slot > 65535:
        raise ValueError(f'LEAKGUARD_ADDR: expected HOST:PORT or PORT, not "{base}"')
    return f"{host or '127.0.0.1'}:{int(port) + slot}"


#: What owns the guard of a worker (the application's own ``start()`` names it in its note).
OWNER = "the gunicorn hooks (leakguard.gunicorn)"


def worker_action(value: Optional[str]) -> Optional[str]:
    """The restart action a worker may take from ``LEAKGUARD_RESTART_ACTION``: None (the
    graceful exit) when unset, ``"none"`` for ``none``.

    Raises:
        ValueError: any other action (it makes no sense in a worker), with the reason.
    """
    if value is None or not value.strip():
        return None
    if value.strip().lower() == "none":
        return "none"
    raise ValueError(
        f'LEAKGUARD_RESTART_ACTION="{value}" is refused in a gunicorn worker: a worker leaves '
        "by gunicorn's graceful exit and the master replaces it (re-executing or exiting on "
        "its own would run the master's command line in the worker or drop the requests in "
        'hand); the graceful exit stays. Only "none" (report only) may replace it'
    )


def _log_to_gunicorn(log: Any) -> None:
    """Sends the ``leakguard`` logger's records to gunicorn's error log, unless the logger or
    the root logger has handlers already (the application's logging setup then decides)."""
    ours = logging.getLogger("leakguard")
    if ours.handlers or logging.getLogger().handlers:
        return
    error_log = getattr(log, "error_log", None)
    if not isinstance(error_log, logging.Logger) or not error_log.handlers:
        return
    for handler in error_log.handlers:
        ours.addHandler(handler)
    ours.setLevel(error_log.level)
    ours.propagate = False


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: start its guard, with the graceful exit as the restart action."""
    slot = int(getattr(worker, SLOT_ATTR, 0) or 0)
    log = getattr(worker, "log", None) or getattr(server, "log", None)
    pid = os.getpid()
    _log_to_gunicorn(log)
    # Read and removed: the guard itself must not take an action a worker cannot use.
    env_action = os.environ.pop("LEAKGUARD_RESTART_ACTION", None)
    try:
        action = worker_action(env_action)
    except ValueError as e:
        action = None
        if log is not None:
            log.error("leakguard: worker %s: %s", pid, e)

    def exit_gracefully(reason: str) -> None:
        if log is not None:
            log.warning("leakguard: worker %s exits gracefully: %s", pid, reason)
        os.kill(pid, signal.SIGTERM)

    try:
        # The core reads LEAKGUARD_ADDR; in this worker it is the worker's own address.
        os.environ["LEAKGUARD_ADDR"] = worker_addr(os.environ.get("LEAKGUARD_ADDR"), slot)
        # A worker is never behind a load balancer's readiness probe: no drain delay.
        # The `worker` label of this worker's metrics (leakguard.prometheus).
        os.environ["LEAKGUARD_WORKER"] = str(slot)
        _guard.start(restart_action=action or exit_gracefully, drain_delay=0)
        _guard._owner = OWNER
        _start_export(log, pid)
    except (LeakguardError, ValueError) as e:
        # A bad setting must not stop every worker from booting: the service runs, unguarded,
        # and says why in every worker's log.
        if log is not None:
            log.error("leakguard is off in worker %s: %s", pid, e)
        return
    if log is not None:
        addr = _guard.endpoint_addr()
        log.info(
            "leakguard: guarding worker %s (slot %s), endpoint %s, restart action %s",
            pid,
            slot,
            f"http://{addr}" if addr else "off",
            "none (report only)" if action == "none" else "graceful exit",
        )


#: This worker's export of its metrics to the multiprocess directory (leakguard.prometheus).
_export: Any = None


def _start_export(log: Any, pid: int) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set: this worker's families go to its file there, for
    ``LeakguardCollector`` in whichever worker answers the scrape."""
    global _export
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    try:
        from leakguard.prometheus import WorkerExport

        _export = WorkerExport(directory).start()
    except (ImportError, OSError) as e:
        if log is not None:
            log.error("leakguard: worker %s cannot export its metrics to %s: %s", pid, directory, e)


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it exits: stop its guard (and its metrics export)."""
    global _export
    export, _export = _export, None
    if export is not None:
        export.stop()
    _guard.stop()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker exited (even killed): with ``PROMETHEUS_MULTIPROC_DIR``
    set, remove its leakguard file and tell prometheus_client that it is dead
    (``multiprocess.mark_process_dead``, which gunicorn configs call here anyway)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    try:
        from prometheus_client import multiprocess

        from leakguard.prometheus import remove_worker_files
    except ImportError:
        return
    remove_worker_files(directory, worker.pid)
    multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
