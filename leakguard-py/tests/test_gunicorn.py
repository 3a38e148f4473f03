"""End to end: a leaking WSGI app under a real gunicorn with leakguard's hooks. Workers that
reach the restart threshold exit gracefully and are replaced; a client that sends requests
all along sees no failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest

from leakguard.gunicorn import worker_addr

# Each request leaks 2 MiB (bytes objects, every page written) and takes ~20 ms.
APP = """
import os, time

LEAK = []

def app(environ, start_response):
    LEAK.append(bytes([len(LEAK) % 251]) * (2 << 20))
    time.sleep(0.02)
    body = f"{os.getpid()} {len(LEAK)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

CONF = """
# leakguard: recycle a worker whose memory reaches the restart threshold of its limit.
from leakguard.gunicorn import post_fork, pre_fork, worker_exit  # noqa: F401
"""

RUN_SECONDS = 25
CLIENTS = 3


def test_worker_addresses_are_off_or_one_port_per_slot() -> None:
    assert worker_addr(None, 0) == "off"
    assert worker_addr("off", 3) == "off"
    assert worker_addr("127.0.0.1:6464", 0) == "127.0.0.1:6464"
    assert worker_addr("0.0.0.0:9000", 2) == "0.0.0.0:9002"
    assert worker_addr("7000", 1) == "127.0.0.1:7001"
    with pytest.raises(ValueError, match="LEAKGUARD_ADDR"):
        worker_addr("127.0.0.1:65535", 1)


def test_leaking_workers_are_recycled_without_failed_requests(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Any
) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(CONF))
    port = free_port()
    endpoint_base = free_port()
    env = dict(
        clean_env,
        # A worker starts at ~30-60 MiB; with 2 MiB per request it reaches 95% of 128 MiB
        # after a few dozen requests.
        LEAKGUARD_LIMIT="128MiB",
        LEAKGUARD_INTERVAL="100ms",
        LEAKGUARD_MIN_UPTIME="1s",
        LEAKGUARD_ADDR=f"127.0.0.1:{endpoint_base}",
    )
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "-c", str(tmp_path / "gunicorn.conf.py"),
                "--workers", "2",
                "--bind", f"127.0.0.1:{port}",
                "--chdir", str(tmp_path),
                "--log-level", "info",
                "--graceful-timeout", "30",
                "app:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(url, timeout=10).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer:\n" + log.read_text()
                time.sleep(0.1)

        # The endpoint of worker slot 0 answers with that worker's report (once that worker
        # has booted: the first answer may have come from the other one).
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{endpoint_base}/debug/leakguard", timeout=10
                ) as r:
                    report = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "no worker endpoint:\n" + log.read_text()
                time.sleep(0.1)
        assert report["python"]["pid"] != server.pid
        assert report["limit"]["bytes"] == 128 * 2**20

        pids: Set[int] = set()
        failures: List[str] = []
        served = [0]
        lock = threading.Lock()
        stop_at = time.monotonic() + RUN_SECONDS

        def client() -> None:
            while time.monotonic() < stop_at:
                try:
                    with urllib.request.urlopen(url, timeout=30) as r:
                        body = r.read().decode()
                        status = r.status
                except (OSError, urllib.error.HTTPError) as e:
                    with lock:
                        failures.append(repr(e))
                    continue
                with lock:
                    if status != 200:
                        failures.append(f"status {status}: {body}")
                    else:
                        served[0] += 1
                        pids.add(int(body.split()[0]))

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=RUN_SECONDS + 60)
        assert server.poll() is None, "the master died:\n" + log.read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = log.read_text()
    assert failures == [], f"{len(failures)} failed of {served[0] + len(failures)}: {failures[:5]}"
    recycled = text.count("exits gracefully")
    # Two workers at the start; every recycled worker is replaced by a new pid.
    assert recycled >= 2, text[-3000:]
    # Every recycled worker served requests before it left, and one more serves now.
    assert len(pids) >= recycled + 1, (pids, recycled)
    assert len(pids) >= 4, (pids, text[-3000:])
    assert "WORKER TIMEOUT" not in text
    assert "was sent SIGKILL" not in text
    assert "guarding worker" in text and "(slot 0), endpoint http://" in text


class FakeLog:
    """Collects what the hooks log (the hooks take gunicorn's server and worker objects)."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append("info " + msg % args)

    def warning(self, msg: str, *args: Any) -> None:
        self.lines.append("warning " + msg % args)

    def error(self, msg: str, *args: Any) -> None:
        self.lines.append("error " + msg % args)


class FakeWorker:
    def __init__(self) -> None:
        self.log = FakeLog()


class FakeServer:
    def __init__(self, workers: Dict[int, Any]) -> None:
        self.WORKERS = workers
        self.log = FakeLog()


def test_slots_are_the_lowest_free_and_reused() -> None:
    from leakguard.gunicorn import pre_fork

    workers: Dict[int, Any] = {}
    server = FakeServer(workers)
    for pid in (10, 11, 12):
        w = FakeWorker()
        pre_fork(server, w)
        workers[pid] = w
    assert [getattr(w, "leakguard_slot") for w in workers.values()] == [0, 1, 2]
    del workers[11]  # slot 1 exited
    w = FakeWorker()
    pre_fork(server, w)
    assert getattr(w, "leakguard_slot") == 1


def test_a_bad_setting_is_logged_and_the_worker_runs_unguarded(
    tmp_path: Path, clean_env: Dict[str, str]
) -> None:
    # In a child interpreter: post_fork changes this process's environment.
    code = """
import leakguard
from leakguard.gunicorn import post_fork
class Log:
    def info(self, m, *a): print("info", m % a)
    def warning(self, m, *a): print("warning", m % a)
    def error(self, m, *a): print("error", m % a)
class W:
    log = Log()
    leakguard_slot = 0
post_fork(None, W())
print("running", leakguard.running())
"""
    env = dict(clean_env, LEAKGUARD_LIMIT="lots")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "error leakguard is off in worker" in proc.stdout
    assert "LEAKGUARD_LIMIT" in proc.stdout
    assert "running False" in proc.stdout


# The README's single-process snippet (leakguard.start in the app) next to the hooks, with the
# restart action that the shipped Kubernetes and systemd examples set in the environment.
COMPOSED_APP = """
import os, time
import leakguard

leakguard.start(limit="1GiB", interval="1s")

LEAK = []

def app(environ, start_response):
    LEAK.append(bytes([len(LEAK) % 251]) * (2 << 20))
    time.sleep(0.01)
    body = f"{os.getpid()} {len(LEAK)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def run_until_recycled(
    tmp_path: Path, app: str, env: Dict[str, str], port: int, workers: int
) -> "tuple[str, Set[int], List[str]]":
    """Runs ``app`` under gunicorn with the hooks and sends requests (one at a time) until a
    worker has exited gracefully and its successor answered; returns the log, the pids that
    answered and the failed requests."""
    (tmp_path / "app.py").write_text(textwrap.dedent(app))
    (tmp_path / "gunicorn.conf.py").write_text(textwrap.dedent(CONF))
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "-c", str(tmp_path / "gunicorn.conf.py"),
                "--workers", str(workers),
                "--bind", f"127.0.0.1:{port}",
                "--chdir", str(tmp_path),
                "--log-level", "info",
                "app:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    pids: Set[int] = set()
    failures: List[str] = []
    try:
        deadline = time.monotonic() + 60
        while "exits gracefully" not in log.read_text() or len(pids) < workers + 1:
            assert server.poll() is None, "the master died:\n" + log.read_text()
            assert time.monotonic() < deadline, "no worker was recycled:\n" + log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    pids.add(int(r.read().decode().split()[0]))
            except OSError as e:
                if not pids:  # not up yet
                    time.sleep(0.05)
                else:
                    failures.append(repr(e))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return log.read_text(), pids, failures


# Small and fast to recycle: 128 MiB, sampled every 100 ms, 2 MiB leaked per request.
RECYCLE_ENV = dict(
    LEAKGUARD_LIMIT="128MiB",
    LEAKGUARD_INTERVAL="100ms",
    LEAKGUARD_MIN_UPTIME="1s",
    LEAKGUARD_ADDR="off",
)


def test_reexec_from_the_environment_is_refused_and_the_worker_exits_gracefully(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Any
) -> None:
    # As the shipped Kubernetes and systemd examples set it for single-process services.
    env = dict(clean_env, **RECYCLE_ENV, LEAKGUARD_RESTART_ACTION="reexec")
    text, pids, failures = run_until_recycled(tmp_path, APP, env, free_port(), workers=1)
    assert 'LEAKGUARD_RESTART_ACTION="reexec" is refused in a gunicorn worker' in text, text[-3000:]
    # The graceful exit happened instead of a re-exec of the master's command line in the
    # worker's PID (which would start a second master on the same port).
    assert text.count("Starting gunicorn") == 1, text[-3000:]
    assert "Connection in use" not in text
    assert failures == [], failures[:5]


def test_the_app_s_own_start_composes_with_the_hooks_and_events_reach_the_log(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Any
) -> None:
    env = dict(clean_env, **RECYCLE_ENV)
    text, pids, failures = run_until_recycled(tmp_path, COMPOSED_APP, env, free_port(), workers=2)
    # Every worker booted although the app calls start(): the hooks' guard won, and the app's
    # start() said so once per worker (the two first and each successor that answered).
    assert "Exception in worker process" not in text and "HaltServer" not in text, text[-3000:]
    ignored = [int(pid) for pid in re.findall(r"leakguard\.start\(\) ignored in process (\d+)", text)]
    assert len(ignored) == len(set(ignored)), text[-3000:]  # once per worker
    assert pids <= set(ignored), (pids, ignored, text[-3000:])
    # The worker's limit is LEAKGUARD_LIMIT's (128 MiB), not the app's 1 GiB: it was recycled.
    assert failures == [], failures[:5]
    # The guard's events reach gunicorn's log through the `leakguard` logger.
    assert "started: sampling every" in text, text[-3000:]
    # A warning-level event too: the leak (tens of MiB/s) is fast enough that the restart is
    # wanted on its projection, before or after the warn threshold is crossed.
    assert "graceful restart begins" in text, text[-3000:]


def test_restart_actions_a_worker_may_take() -> None:
    from leakguard.gunicorn import worker_action

    assert worker_action(None) is None
    assert worker_action("  ") is None
    assert worker_action("None") == "none"
    for refused in ("reexec", "exit", "exit:3", "signal:HUP", "bogus"):
        with pytest.raises(ValueError, match="refused in a gunicorn worker"):
            worker_action(refused)
