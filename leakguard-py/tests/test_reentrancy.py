"""Re-entrancy and fork: the garbage collector can run inside leakguard's own code (any
allocation may start a collection, whose callbacks and ``__del__`` methods run on the same
thread), and a forked child holds a copy of the parent's guard without its threads.

Each case runs in a child interpreter with a timeout, so that a deadlock fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

#: Seconds a child may take; each finishes in well under a second when nothing hangs.
TIMEOUT = 60.0


def run_child(code: str, env: Dict[str, str], tmp_path: Path) -> "subprocess.CompletedProcess[str]":
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    try:
        return subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"the child hung (killed after {TIMEOUT} s); output so far: {e.stdout!r} {e.stderr!r}"
        ) from None


def test_a_collection_during_the_report_does_not_deadlock_the_gc_callback(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # With threshold 1 nearly every allocation of a container starts a collection, so one
    # starts while the report builds the gc section; the guard's gc callback then runs on
    # the same thread, in the middle of it.
    proc = run_child(
        """
        import gc, leakguard
        leakguard.start(addr="off", read_env=False, restart_action="none")
        before = leakguard._guard.gc_stats()["collections"][0]
        gc.set_threshold(1)
        for _ in range(50):
            leakguard.report()
            leakguard._guard.gc_stats()
        gc.set_threshold(700)
        after = leakguard.report()["python"]["gc"]
        leakguard.stop()
        print(after["collections"][0] - before, len(after["recent_pauses"]))
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    collections, recent = map(int, proc.stdout.split())
    assert collections >= 50, proc.stdout
    assert recent == 16


def test_a_del_that_tracks_a_handle_during_a_sampled_stack_walk_does_not_deadlock(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # A sampled open walks the Python stack; reading a frame allocates, a collection runs and
    # finalizes garbage whose __del__ opens a sampled handle: a second walk on the same thread
    # inside the first. Each __del__ leaves new garbage, so that every collection finds some.
    # (From Python 3.12 a collection waits for the next bytecode, so it no longer runs inside
    # the walk; the test then checks only the counts.)
    proc = run_child(
        """
        import gc, leakguard
        leakguard.configure_handles("reentrant", sample_every=1)
        left = 200
        freed = 0

        class Cycle:
            def __init__(self):
                self.me = self
            def __del__(self):
                global left, freed
                freed += 1
                if left > 0:
                    left -= 1
                    Cycle()
                with leakguard.track("reentrant"):
                    pass

        def deep(n):
            if n == 0:
                with leakguard.track("reentrant"):
                    pass
                return
            deep(n - 1)

        Cycle()
        gc.set_threshold(1)
        for _ in range(100_000):
            if left == 0:
                break
            deep(20)
        gc.set_threshold(700)
        gc.collect()
        print(freed, leakguard.HandleKind("reentrant").open)
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    freed, still_open = map(int, proc.stdout.split())
    assert freed == 201
    assert still_open == 0


def test_a_forked_child_of_a_running_guard_exits_and_the_parent_still_stops(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # As a gunicorn worker forked from a master that started the guard at import: the child
    # lets go of its copy of the parent's guard (freed right after the fork), starts its own,
    # and exits; nothing of the parent's is stopped or joined there.
    proc = run_child(
        """
        import os, sys, leakguard
        leakguard.start(addr="127.0.0.1:0", interval=0.05, read_env=False,
                        restart_action="none")
        pid = os.fork()
        if pid == 0:
            assert not leakguard.running()
            leakguard.start(addr="off", read_env=False, restart_action="none")
            assert leakguard.report()["python"]["pid"] == os.getpid()
            sys.exit(7)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        assert leakguard.running() and leakguard.report()["python"]["pid"] == os.getpid()
        leakguard.stop()
        print(leakguard.running())
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "False"]
    assert "panicked" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr


def test_a_forked_child_can_stop_the_copy_of_the_parents_guard(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    proc = run_child(
        """
        import os, leakguard
        leakguard.start(addr="off", interval=0.05, read_env=False, restart_action="none")
        guard = leakguard._guard._guard
        pid = os.fork()
        if pid == 0:
            guard.stop()
            code = 0 if not guard.running() else 1
            del guard
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), guard.running())
        leakguard.stop()
        """,
        clean_env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True"]
    assert "panicked" not in proc.stderr, proc.stderr
