"""LeakguardCollector in a real prometheus_client registry next to its default collectors."""

from __future__ import annotations

import gc
import re
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import leakguard
from leakguard.prometheus import LeakguardCollector


@pytest.fixture
def running() -> Iterator[None]:
    leakguard.start(limit="2GiB", addr="off", interval=0.1, tracemalloc=1, read_env=False)
    try:
        yield
    finally:
        leakguard.stop()


def default_like_registry() -> CollectorRegistry:
    """What prometheus_client's global REGISTRY holds: process, platform and gc collectors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def scrape(registry: CollectorRegistry) -> Dict[str, float]:
    values: Dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
            assert key not in values, f"{key} twice"
            values[key] = s.value
    return values


def test_registers_next_to_the_default_collectors_without_a_clash(running: None) -> None:
    registry = default_like_registry()
    registry.register(LeakguardCollector())
    values = scrape(registry)
    assert values["leakguard_memory_limit_bytes"] == 2 * 2**30
    assert values["leakguard_allocator_bytes,kind=allocated"] > 0
    assert values["process_resident_memory_bytes"] > 0  # ProcessCollector's, once
    assert values["leakguard_python_tracemalloc_traced_bytes"] > 0


def test_gc_pauses_and_collections_follow_the_interpreter(running: None) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LeakguardCollector())
    before = scrape(registry)
    for _ in range(4):
        gc.collect()
    after = scrape(registry)
    key = "leakguard_python_gc_collections_total,generation=2"
    assert after[key] >= before[key] + 4
    assert after["leakguard_python_gc_pause_seconds_total"] > before["leakguard_python_gc_pause_seconds_total"]


def test_process_families_only_when_asked_and_then_they_would_clash(running: None) -> None:
    alone = CollectorRegistry(auto_describe=True)
    alone.register(LeakguardCollector(include_process=True))
    assert scrape(alone)["process_resident_memory_bytes"] > 0
    registry = default_like_registry()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(LeakguardCollector(include_process=True))


def test_nothing_is_collected_while_the_guard_does_not_run() -> None:
    assert not leakguard.running()
    assert list(LeakguardCollector().collect()) == []


def test_the_scrape_passes_promtool(running: None) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH (`make test` installs it from Debian's prometheus package)")
    registry = default_like_registry()
    registry.register(LeakguardCollector())
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry).decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_reachable_as_an_attribute_after_import_leakguard() -> None:
    code = "import leakguard; print(leakguard.prometheus.LeakguardCollector.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "LeakguardCollector"
    with pytest.raises(AttributeError, match="no attribute 'prometheos'"):
        getattr(leakguard, "prometheos")


# prometheus_client's multiprocess mode as its documentation sets it up, with leakguard's
# collector next to MultiProcessCollector and an application counter.
MULTIPROCESS_APP = """
import os
from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from leakguard.prometheus import LeakguardCollector

REQUESTS = Counter("app_requests", "Requests served.")

def app(environ, start_response):
    REQUESTS.inc()
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(LeakguardCollector())
        body = generate_latest(registry)
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

MULTIPROCESS_CONF = """
from leakguard.gunicorn import child_exit, post_fork, pre_fork, worker_exit  # noqa: F401
"""


def test_one_scrape_shows_every_live_gunicorn_worker_with_a_worker_label(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Callable[[], int]
) -> None:
    (tmp_path / "app.py").write_text(MULTIPROCESS_APP)
    (tmp_path / "gunicorn.conf.py").write_text(MULTIPROCESS_CONF)
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    port = free_port()
    env = dict(
        clean_env,
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        LEAKGUARD_LIMIT="1GiB",
        LEAKGUARD_INTERVAL="100ms",
        LEAKGUARD_ADDR="off",
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
                "app:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def scrape_once() -> Dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        values: Dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
                assert key not in values, f"{key} twice"
                values[key] = s.value
        return values

    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no scrape with both workers:\n" + log.read_text()
            try:
                values = scrape_once()
            except OSError:
                time.sleep(0.05)
                continue
            workers = {k for k in values if k.startswith("leakguard_memory_limit_bytes,")}
            if len(workers) == 2:
                break
            time.sleep(0.05)
        # One scrape: both workers' guards, each with its slot as the worker label, next to
        # the application's multiprocess counter (summed over the workers).
        assert workers == {
            "leakguard_memory_limit_bytes,worker=0",
            "leakguard_memory_limit_bytes,worker=1",
        }
        assert values["leakguard_memory_limit_bytes,worker=0"] == 2**30
        assert values["leakguard_memory_usage_ratio,worker=1"] > 0
        assert values["app_requests_total"] >= 1
        # No process_* family: prometheus_client's own collectors own those names.
        assert not any(k.startswith("process_") for k in values)
        # The scrape passes promtool.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        promtool = shutil.which("promtool")
        assert promtool is not None
        proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        files = sorted(p.name for p in multiproc.glob("leakguard_*.prom"))
        assert len(files) == 2, files
    finally:
        server.terminate()
        server.wait(timeout=60)
    # Workers that exited took their files with them.
    assert sorted(p.name for p in multiproc.glob("leakguard_*")) == []


def test_files_of_processes_that_are_gone_are_skipped(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leakguard.start(limit="2GiB", addr="off", interval=0.1, read_env=False)
    try:
        live = LeakguardCollector(multiprocess_dir="")
        text = generate_latest_of(live)
        (tmp_path / f"leakguard_{dead.pid}_7.prom").write_text(text)
        collector = LeakguardCollector(multiprocess_dir=str(tmp_path))
        labels = {
            s.labels.get("worker")
            for family in collector.collect()
            for s in family.samples
            if s.name == "leakguard_memory_limit_bytes"
        }
        # Only this process (labelled with its pid outside gunicorn), not the dead one.
        assert labels == {str(os.getpid())}
    finally:
        leakguard.stop()


def generate_latest_of(collector: LeakguardCollector) -> str:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_documented_metrics_table_names_every_served_family(repo_root: Path) -> None:
    # A guard with a named cache and a tracked handle serves the cache and handle families too.
    leakguard.start(limit="2GiB", addr="off", interval=0.1, read_env=False)
    try:
        cache: leakguard.LRUCache[str, str] = leakguard.LRUCache(maxsize=4, name="docs_table")
        cache["k"] = "v"
        with leakguard.track("docs_table"):
            served = {f.name for f in text_string_to_metric_families(leakguard.metrics())}
    finally:
        leakguard.stop()
    table = (repo_root / "docs" / "endpoints.md").read_text().split("## Metrics", 1)[1]
    documented = set(re.findall(r"`((?:leakguard|process)_[a-z_]+)", table))
    # The parser names a counter family without its `_total`.
    missing = sorted(n for n in served if n not in documented and n + "_total" not in documented)
    assert missing == [], f"served but not in docs/endpoints.md's metrics table: {missing}"
