"""A child forked (``os.fork``, as ``multiprocessing``'s fork start method, Celery prefork and
gunicorn ``--preload`` do) while the guard samples and threads use leakguard caches goes on
using those caches, starts a guard of its own that reports them, and finishes.

The forks happen in a child interpreter, so that pytest's own threads are not forked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FORKS = 200

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time, warnings
    import leakguard

    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
    FORKS = int(sys.argv[1])
    leakguard.start(
        limit="8GiB", addr="off", interval=0.01, warmup=0.0,
        restart_action="none", read_env=False,
    )
    cache = leakguard.LRUCache(maxsize=256, name="py-fork")
    ttl = leakguard.TTLCache(maxsize=512, ttl=0.05)
    stop = threading.Event()
    rounds = [0]

    def hammer(seed):
        i = seed
        while not stop.is_set():
            k = (i * 2654435761) % 4096
            cache[k] = b"x" * 16
            cache.get(k // 2)
            ttl[k] = k
            ttl.get(k // 2)
            if i % 8192 == 0:
                cache.clear()
            i += 2
            rounds[0] += 1

    def reporter():
        while not stop.is_set():
            leakguard.report()
            leakguard.sample()

    threads = [threading.Thread(target=hammer, args=(s,)) for s in (0, 1)]
    threads.append(threading.Thread(target=reporter))
    for t in threads:
        t.start()
    blocked = failed = 0
    for n in range(FORKS):
        before = rounds[0]
        while rounds[0] == before:
            time.sleep(0)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                cache[-1] = b"child"
                if cache.get(-1) != b"child":
                    code = 2
                # The time frozen: a child descheduled for longer than the TTL on a busy
                # machine must still find the entry it has just set.
                with ttl.timer:
                    ttl[-1] = 1
                    if ttl.get(-1) != 1:
                        code = 3
                # The parent's guard does not run here (its threads are not forked): the
                # child starts its own, which reads the registry of the parent's caches.
                leakguard.start(
                    limit="8GiB", addr="off", interval=0.01, warmup=0.0,
                    restart_action="none", read_env=False,
                )
                names = [c["name"] for c in leakguard.report()["caches"]]
                if "py-fork" not in names:
                    code = 4
                leakguard.stop()
            except BaseException as e:
                print(f"child {n}: {e!r}", file=sys.stderr)
                code = 5
            os._exit(code)
        deadline = time.monotonic() + 10.0
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                if os.waitstatus_to_exitcode(status) != 0:
                    failed += 1
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                blocked += 1
                break
            time.sleep(0.0005)
    stop.set()
    for t in threads:
        t.join()
    leakguard.stop()
    print(f"forks={FORKS} blocked={blocked} failed={failed}")
    """
)


def test_forked_children_use_the_parents_cache_and_guard_while_both_are_busy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(FORKS)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    assert f"forks={FORKS} blocked=0 failed=0" in out.stdout, out.stdout + out.stderr
