"""sample() and allocator_status(): real readings of this interpreter, glibc backend, no jemalloc."""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import leakguard
import leakguard._leakguard as native

MiB = 2**20

# Markers that jemalloc leaves in any binary it is linked into, stripped or not: its message
# prefix "<jemalloc>" (in .rodata), the "_rjem_" symbol prefix of tikv-jemalloc-sys, and the
# shared library's name when linked dynamically. Checked by hand against a Rust binary with
# tikv-jemallocator as its global allocator (found, also after `strip`). A plain "jemalloc"
# would not do: the core's own strings (`jemalloc_linked`, the allocator kind) contain it.
JEMALLOC_MARKERS = (b"<jemalloc>", b"_rjem_", b"libjemalloc")


def jemalloc_markers(path: Path) -> List[bytes]:
    data = path.read_bytes()
    return [marker for marker in JEMALLOC_MARKERS if marker in data]


def release_free_heap() -> None:
    """Collect garbage and hand glibc's free heap back to the OS (``malloc_trim``), so that what
    earlier tests freed cannot absorb the next allocations without raising resident size."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)


def source_errors(sample: Dict[str, Any]) -> List[str]:
    """Errors of the sources that must work everywhere (the cgroup may be absent)."""
    return [e for e in sample["errors"] if not e.startswith("cgroup")]


def test_allocator_is_glibc_and_jemalloc_is_not_linked() -> None:
    status = leakguard.allocator_status()
    assert status["kind"] == "glibc"
    assert status["jemalloc_linked"] is False


def test_extension_module_contains_no_jemalloc() -> None:
    assert jemalloc_markers(Path(native.__file__)) == []


def test_no_jemalloc_is_mapped_into_the_interpreter() -> None:
    leakguard.sample()
    maps = Path("/proc/self/maps").read_text()
    assert "jemalloc" not in maps


def test_sample_reads_this_process() -> None:
    before = time.time()
    sample = leakguard.sample()
    assert source_errors(sample) == []
    assert abs(sample["unix_seconds"] - before) < 60
    process = sample["process"]
    assert process["resident_bytes"] > MiB
    assert process["virtual_bytes"] >= process["resident_bytes"]
    assert process["peak_resident_bytes"] >= process["resident_bytes"]
    assert process["threads"] >= 1
    assert process["open_fds"] >= 3  # stdin, stdout, stderr at least
    assert 0 < process["start_time_seconds"] <= before
    allocator = sample["allocator"]
    assert allocator is not None
    assert allocator["allocated"] > 0
    assert sample["duration_us"] >= 0


def test_allocated_and_resident_rise_while_64_mib_of_objects_are_held() -> None:
    # CPython's pymalloc serves objects of up to 512 bytes from arenas that it maps itself,
    # which glibc's mallinfo2 does not see; larger objects come from malloc. So 64 MiB is held
    # here in 65,536 bytes objects of 1 KiB each (every one distinct, every page written).
    release_free_heap()
    before = leakguard.sample()
    held = [i.to_bytes(8, "little") * 128 for i in range(64 * 1024)]
    during = leakguard.sample()
    assert len(held) == 65536
    del held
    gc.collect()
    after = leakguard.sample()

    allocated_growth = during["allocator"]["allocated"] - before["allocator"]["allocated"]
    resident_growth = during["process"]["resident_bytes"] - before["process"]["resident_bytes"]
    assert allocated_growth >= 60 * MiB, allocated_growth
    assert allocated_growth <= 96 * MiB, allocated_growth
    assert resident_growth >= 48 * MiB, resident_growth
    # Freed memory leaves the allocator's live bytes (glibc may keep the pages resident).
    released = during["allocator"]["allocated"] - after["allocator"]["allocated"]
    assert released >= 60 * MiB, released


def test_resident_rises_while_500k_small_objects_are_held() -> None:
    release_free_heap()
    before = leakguard.sample()
    held = [i.to_bytes(8, "little") * 12 + b"leakguard" for i in range(500_000)]  # 105 bytes each
    during = leakguard.sample()
    assert len(held) == 500_000
    del held
    growth = during["process"]["resident_bytes"] - before["process"]["resident_bytes"]
    assert growth >= 48 * MiB, growth


def test_samples_from_many_threads_at_once() -> None:
    results: List[Dict[str, Any]] = []
    failures: List[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(leakguard.sample())
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert len(results) == 80
    assert all(r["process"]["threads"] >= 1 for r in results)


def test_each_call_returns_a_fresh_plain_dict() -> None:
    first = leakguard.sample()
    second = leakguard.sample()
    assert type(first) is dict and type(second) is dict
    assert first is not second
    assert second["unix_seconds"] >= first["unix_seconds"]
