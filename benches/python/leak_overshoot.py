"""The Python row of the leak-overshoot bench: one leaking Python process under leakguard.

Run by ``cargo bench -p leakguard-benches --bench restart -- --overshoot`` (which interleaves
it with the Rust child at each leak rate), or by hand::

    .venv/bin/python benches/python/leak_overshoot.py RATE_MIB_PER_S LIMIT_BYTES

The process starts ``leakguard`` with the given limit, the default thresholds (warn 80%,
restart 95%) and interval (1 s), a minimum uptime of 15 s, no drain delay and a callable restart
action that prints ``ACTION <resident bytes> <peak resident bytes> <reason>`` when it runs and
ends the process. It jumps to half the limit, holds still for 16 s (past the minimum uptime and
the guard's recent-slope window), then leaks touched memory at the given rate, in ``bytes``
objects it keeps, until the action ends it (or 120 s pass: then it prints ``NOACTION``).
"""

from __future__ import annotations

import os
import sys
import time

import leakguard

PAGE = os.sysconf("SC_PAGE_SIZE")


def status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main() -> None:
    rate = float(sys.argv[1])
    limit = int(sys.argv[2])

    def action(reason: str) -> None:
        print(f"ACTION {resident()} {status_kib('VmHWM') * 1024} {reason}", flush=True)
        os._exit(0)

    leakguard.start(
        limit=limit,
        addr="off",
        min_uptime=15,
        drain_delay=0,
        restart_action=action,
        read_env=False,
    )
    held = [b"\x5a" * max(limit // 2 - resident(), 0)]
    start = time.monotonic()
    while time.monotonic() - start < 16:
        time.sleep(0.1)
    began = time.monotonic()
    leaked = 0.0
    while time.monotonic() - began < 120:
        time.sleep(0.01)
        due = rate * (time.monotonic() - began) * 1048576.0
        step = int(max(due - leaked, 0.0))
        if step > 0:
            held.append(b"\x5a" * step)
            leaked += step
    print("NOACTION", flush=True)


if __name__ == "__main__":
    main()
