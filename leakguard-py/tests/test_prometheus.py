"""LeakguardCollector in a real prometheus_client registry next to its default collectors."""

from __future__ import annotations

import gc
import shutil
import subprocess
from typing import Dict, Iterator

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
