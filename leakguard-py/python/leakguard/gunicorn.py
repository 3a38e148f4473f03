"""gunicorn server hooks: each worker runs its own guard and, when it crosses the restart
threshold, exits gracefully (it finishes the request in hand; the master starts a fresh worker).

This is the ``reload-on-rss`` that gunicorn lacks. In ``gunicorn.conf.py``::

    # leakguard: recycle a worker whose memory reaches the restart threshold of its limit.
    from leakguard.gunicorn import post_fork, pre_fork, worker_exit  # noqa: F401

or, without a config file of your own, ``gunicorn -c python:leakguard.gunicorn app:app``.
If your config has these hooks already, call ``leakguard.gunicorn.post_fork(server, worker)``
(and the others) from yours.

Settings are the ``LEAKGUARD_*`` environment variables, read in every worker:

* ``LEAKGUARD_LIMIT`` is the limit of one worker (its resident memory is what is compared);
  without it the cgroup's limit is used, which is the limit of all workers together: set it.
* ``LEAKGUARD_RESTART`` (0.95), ``LEAKGUARD_MIN_UPTIME`` (60 s), ``LEAKGUARD_INTERVAL`` (1 s)
  as everywhere. The restart action is the graceful worker exit; ``LEAKGUARD_RESTART_ACTION``
  replaces it when set (``none`` reports only).
* A setting that cannot be understood is logged as an error in each worker, which then runs
  without a guard (the service is not stopped by it).
* The debug endpoint: several workers cannot all listen on one port, so it is off in workers
  unless ``LEAKGUARD_ADDR`` is set; then the worker in slot ``i`` (0 … workers-1, reused by the
  worker that replaces it) listens on that port plus ``i``. The master runs no guard (a guard's
  threads would not survive the fork).

The graceful exit is gunicorn's own: the worker sends itself ``SIGTERM``, which gunicorn's
worker handles by finishing the current request and leaving its loop, exactly as after
``max_requests``.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Optional

from leakguard import _guard
from leakguard._leakguard import LeakguardError

__all__ = ["post_fork", "pre_fork", "worker_exit", "worker_addr"]

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


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: start its guard, with the graceful exit as the restart action."""
    slot = int(getattr(worker, SLOT_ATTR, 0) or 0)
    log = getattr(worker, "log", None) or getattr(server, "log", None)
    pid = os.getpid()

    def exit_gracefully(reason: str) -> None:
        if log is not None:
            log.warning("leakguard: worker %s exits gracefully: %s", pid, reason)
        os.kill(pid, signal.SIGTERM)

    try:
        # The core reads LEAKGUARD_ADDR; in this worker it is the worker's own address.
        os.environ["LEAKGUARD_ADDR"] = worker_addr(os.environ.get("LEAKGUARD_ADDR"), slot)
        # A worker is never behind a load balancer's readiness probe: no drain delay.
        _guard.start(restart_action=exit_gracefully, drain_delay=0)
    except (LeakguardError, ValueError) as e:
        # A bad setting must not stop every worker from booting: the service runs, unguarded,
        # and says why in every worker's log.
        if log is not None:
            log.error("leakguard is off in worker %s: %s", pid, e)
        return
    if log is not None:
        addr = _guard.endpoint_addr()
        log.info(
            "leakguard: guarding worker %s (slot %s), endpoint %s",
            pid,
            slot,
            f"http://{addr}" if addr else "off",
        )


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it exits: stop its guard."""
    _guard.stop()
