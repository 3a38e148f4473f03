"""Handles from Python: ``track`` (block and decorator), ``tracked`` (until collected), their
counts and Python creation sites in the core's registry, read back with ``handles()``."""

from __future__ import annotations

import asyncio
import doctest
import gc
import inspect
import threading
from typing import Any, Dict, Generator, List

import pytest

import leakguard
import leakguard._handles
from leakguard import _leakguard


def kind_report(name: str) -> Dict[str, Any]:
    kinds = leakguard.handles(name)
    assert len(kinds) == 1, kinds
    return kinds[0]


def open_count(name: str) -> int:
    return leakguard.HandleKind(name).open


def this_line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_track_counts_the_block_as_one_open_handle() -> None:
    with leakguard.track("py_block") as t:
        assert t.kind == "py_block"
        assert open_count("py_block") == 1
        with leakguard.track("py_block"):
            assert open_count("py_block") == 2
        assert open_count("py_block") == 1
    assert open_count("py_block") == 0
    report = kind_report("py_block")
    assert (report["open"], report["opened"], report["closed"]) == (0, 2, 2)


def test_track_closes_when_the_block_raises() -> None:
    with pytest.raises(KeyError):
        with leakguard.track("py_raises"):
            raise KeyError("boom")
    assert open_count("py_raises") == 0
    assert kind_report("py_raises")["closed"] == 1


def test_one_track_object_can_be_entered_again_and_nested() -> None:
    t = leakguard.track("py_reentered")
    with t:
        with t:
            assert open_count("py_reentered") == 2
        assert open_count("py_reentered") == 1
    assert open_count("py_reentered") == 0
    with t:
        assert open_count("py_reentered") == 1
    assert open_count("py_reentered") == 0


def test_a_kind_object_tracks_the_same_kind_as_its_name() -> None:
    kind = leakguard.HandleKind("py_kind_object")
    assert kind.name == "py_kind_object"
    assert repr(kind) == "leakguard.HandleKind(\"py_kind_object\")"
    with kind.track(), leakguard.track(kind), leakguard.track("py_kind_object"):
        assert kind.open == 3
    assert kind.open == 0


def test_track_as_a_decorator_counts_each_call_while_it_runs() -> None:
    seen: List[int] = []

    @leakguard.track("py_job")
    def job(x: int, *, y: int = 1) -> int:
        """Does a job."""
        seen.append(open_count("py_job"))
        return x + y

    assert job.__name__ == "job"
    assert job.__doc__ == "Does a job."
    assert job(1, y=2) == 3
    assert job(5) == 6
    assert seen == [1, 1]
    assert open_count("py_job") == 0
    assert kind_report("py_job")["opened"] == 2

    @leakguard.track("py_job_fails")
    def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        fails()
    assert open_count("py_job_fails") == 0


def test_decorated_coroutines_and_generators_count_while_they_run() -> None:
    @leakguard.track("py_async_job")
    async def async_job() -> int:
        await asyncio.sleep(0)
        return open_count("py_async_job")

    assert inspect.iscoroutinefunction(async_job)
    assert asyncio.run(async_job()) == 1
    assert open_count("py_async_job") == 0

    @leakguard.track("py_stream")
    def stream() -> Generator[int, None, None]:
        yield open_count("py_stream")
        yield open_count("py_stream")

    gen = stream()
    assert open_count("py_stream") == 0  # not started
    assert next(gen) == 1
    assert list(gen) == [1]
    assert open_count("py_stream") == 0
    gen = stream()
    next(gen)
    gen.close()  # closed early
    assert open_count("py_stream") == 0


def test_tracked_counts_an_object_until_it_is_collected() -> None:
    class Client:
        pass

    client = Client()
    assert leakguard.tracked(client, "py_client") is client
    assert open_count("py_client") == 1
    del client
    assert open_count("py_client") == 0

    # In a reference cycle, the object goes (and the handle closes) at the next collection.
    cyclic = Client()
    cyclic.me = cyclic  # type: ignore[attr-defined]
    leakguard.tracked(cyclic, leakguard.HandleKind("py_client"))
    del cyclic
    assert open_count("py_client") == 1
    gc.collect()
    assert open_count("py_client") == 0
    report = kind_report("py_client")
    assert (report["opened"], report["closed"]) == (2, 2)


def test_tracked_objects_collected_on_another_thread_close() -> None:
    class Conn:
        pass

    box: List[Any] = [leakguard.tracked(Conn(), "py_thread_conn")]
    assert open_count("py_thread_conn") == 1
    worker = threading.Thread(target=box.clear)
    worker.start()
    worker.join()
    assert open_count("py_thread_conn") == 0


@pytest.mark.parametrize("value", [1, "text", (1, 2), None])
def test_tracked_refuses_objects_without_weak_references(value: object) -> None:
    with pytest.raises(TypeError) as e:
        leakguard.tracked(value, "py_unweakrefable")
    message = str(e.value)
    assert "cannot be weakly referenced" in message
    assert type(value).__qualname__ in message
    assert "with leakguard.track('py_unweakrefable')" in message
    # Nothing was counted.
    assert leakguard.handles("py_unweakrefable") == []


def test_bad_kinds_get_clear_errors() -> None:
    with pytest.raises(TypeError, match="a str or a leakguard.HandleKind, not int"):
        leakguard.track(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a name"):
        leakguard.track("")
    with pytest.raises(ValueError, match="needs a name"):
        leakguard.configure_handles("")
    with pytest.raises(ValueError, match="max_age is a number of seconds"):
        leakguard.configure_handles("py_bad_age", max_age=-1.0)
    with pytest.raises(TypeError, match="decorates a function"):
        leakguard.track("py_not_a_function")(3)  # type: ignore[type-var]


def test_a_sampled_open_records_its_python_creation_site() -> None:
    leakguard.configure_handles("py_sited", sample_every=1)
    with leakguard.track("py_sited"):
        line = this_line() - 1
        report = kind_report("py_sited")
    assert report["sample_every"] == 1
    assert report["sampled_open"] == 1
    site = report["sites"][0]
    assert site["function"] == "test_a_sampled_open_records_its_python_creation_site"
    assert site["location"] == f"{__file__}:{line}"
    assert site["frames"][0] == f"{site['function']} ({__file__}:{line})"
    assert site["oldest_age_seconds"] >= 0
    # Closed: the site goes with it.
    assert kind_report("py_sited")["sites"] == []


def open_client_for_test() -> object:
    class Client:
        pass

    return leakguard.tracked(Client(), "py_sited_tracked")


def test_sites_leave_out_leakguards_own_frames() -> None:
    leakguard.configure_handles("py_sited_tracked", sample_every=1)
    client = open_client_for_test()
    frames = kind_report("py_sited_tracked")["sites"][0]["frames"]
    # tracked() itself (in leakguard._handles) is not the site: its caller is.
    assert frames[0].startswith("open_client_for_test (")
    assert frames[1].startswith("test_sites_leave_out_leakguards_own_frames (")
    assert not any("leakguard/_handles.py" in f for f in frames)
    del client

    leakguard.configure_handles("py_sited_job", sample_every=1)
    sites: List[Dict[str, Any]] = []

    @leakguard.track("py_sited_job")
    def job() -> None:
        sites.extend(kind_report("py_sited_job")["sites"])

    job()
    line = this_line() - 1
    assert sites[0]["function"] == "test_sites_leave_out_leakguards_own_frames"
    assert sites[0]["location"] == f"{__file__}:{line}"


def test_unsampled_opens_record_no_site_and_sampling_follows_sample_every() -> None:
    leakguard.configure_handles("py_never_sampled", sample_every=0)
    blocks = [leakguard.track("py_never_sampled") for _ in range(500)]
    for b in blocks:
        b.__enter__()
    report = kind_report("py_never_sampled")
    assert (report["open"], report["sampled_open"], report["sites"]) == (500, 0, [])
    for b in blocks:
        b.__exit__(None, None, None)

    # The default: one open in 128.
    many = [leakguard.track("py_default_sampling") for _ in range(4000)]
    for b in many:
        b.__enter__()
    report = kind_report("py_default_sampling")
    assert report["sample_every"] == 128
    assert 5 <= report["sampled_open"] <= 80, report["sampled_open"]
    # Each sampled open stands for 128 opens, or more once the capture budget slowed the
    # kind's sampling down (it starts after about 10 captures in a second).
    estimated = sum(s["estimated_open"] for s in report["sites"])
    assert estimated >= 128 * report["sampled_open"]
    for b in many:
        b.__exit__(None, None, None)
    assert open_count("py_default_sampling") == 0


def test_limits_show_in_the_report() -> None:
    leakguard.configure_handles("py_limited", max_open=1, max_age=3600)
    with leakguard.track("py_limited"), leakguard.track("py_limited"):
        report = kind_report("py_limited")
        assert report["max_open"] == 1
        assert report["max_age_seconds"] == 3600
        assert report["max_open_exceeded"] is True
        assert report["max_age_exceeded"] is False
        assert report["oldest_age_seconds"] is not None
    assert kind_report("py_limited")["max_open_exceeded"] is False


def test_handles_lists_every_kind_most_open_first() -> None:
    with leakguard.track("py_listed_a"), leakguard.track("py_listed_b"):
        with leakguard.track("py_listed_b"):
            kinds = leakguard.handles()
            names = [k["kind"] for k in kinds]
            assert names.index("py_listed_b") < names.index("py_listed_a")
            opens = [k["open"] for k in kinds]
            assert opens == sorted(opens, reverse=True)
            by_kind = dict(_leakguard.open_by_kind())
            assert by_kind["py_listed_a"] == 1
            assert by_kind["py_listed_b"] == 2


def test_an_explicit_handle_counts_until_closed() -> None:
    handle = _leakguard.open_handle("py_explicit")
    assert (handle.kind, handle.closed) == ("py_explicit", False)
    assert open_count("py_explicit") == 1
    handle.close()
    handle.close()  # again: nothing
    assert handle.closed
    assert open_count("py_explicit") == 0


def test_handles_module_examples_run() -> None:
    result = doctest.testmod(leakguard._handles, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def test_the_capture_budget_can_be_set_and_slows_a_busy_kinds_sampling() -> None:
    assert leakguard.capture_budget() == 10
    leakguard.set_capture_budget(1)
    try:
        assert leakguard.capture_budget() == 1
        kind = leakguard.HandleKind("py_budget_busy")
        # Tens of thousands of opens within a second or two, at the default 1 in 128: far
        # more captures than one a second, so the kind's sampling slows down.
        for _ in range(60_000):
            with leakguard.track(kind):
                pass
        (report,) = [k for k in leakguard.handles() if k["kind"] == "py_budget_busy"]
        assert report["sample_every"] == 128
        assert report["sample_every_now"] > 128, report
    finally:
        leakguard.set_capture_budget(10)
    with pytest.raises(OverflowError):
        leakguard.set_capture_budget(-1)
    assert leakguard.capture_budget() == 10
