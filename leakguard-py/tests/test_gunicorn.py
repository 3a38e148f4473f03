"""End to end: a leaking WSGI app under a real gunicorn with leakguard's hooks. Workers that
reach the restart threshold exit gracefully and are replaced; a client that sends requests
all along sees no failure."""

from __future__ import annotations

import json
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
