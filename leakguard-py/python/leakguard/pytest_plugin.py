"""leakguard's pytest plugin: memory and handle regression tests.

Installed with the package (entry point ``pytest11``), so it needs no flag::

    import pytest

    @pytest.mark.leakguard(max_total_growth="1MB", iterations=50)
    def test_cache_stays_bounded() -> None:
        handle_request()  # the body runs 1 + 50 times

A marked test's body runs ``warmup`` times, then ``iterations`` times measured; the test fails
with a short summary (the top growing lines from :mod:`tracemalloc`, the handle kinds left
open and where they were opened) when Python memory or open handles grow per iteration.
``pytest --memcheck`` checks every test function this way, with the default limits, except
those marked ``@pytest.mark.leakguard(enabled=False)``.

Marker arguments (all keywords, all optional):

- ``max_total_growth``: the most traced Python memory may grow in total over all the
  measured iterations (not per iteration), a size (``"1MB"``, ``"64KiB"``) or bytes; default
  64 KiB (``--memcheck-max-total-growth``). ``max_growth`` and ``--memcheck-max-growth`` are
  its deprecated former names: they still work, with a deprecation warning;
- ``iterations``: measured iterations, at least 2; default 20 (``--memcheck-iterations``);
- ``warmup``: iterations run first and not measured (caches filling, lazy imports); default 1;
- ``handles``: also fail when handles tracked with leakguard (``track``, ``tracked``, Rust
  handles) stay open per iteration; default True;
- ``enabled``: False leaves the test alone under ``--memcheck``.

How growth is measured, robust to noise: :mod:`tracemalloc` traces the Python allocations
(glibc's ``mallinfo2`` does not see CPython's small-object allocator). After the warm-up, and
again after each half of the measured iterations, ``gc.collect()`` runs and the traced memory
and open handles are read. Growth counts only when **both halves** grow: a one-off allocation
(a lazily built table, a cache filling up to its bound, a dict resizing) grows one half only.
The growth per iteration is the smaller of the two halves' rates, and the test fails when that
rate times ``iterations`` exceeds ``max_total_growth``, or when some kind's open handles grew in both
halves.

Fixtures are set up once: the body runs repeatedly with the same fixture values, so it must be
repeatable. Output and log records that pytest captures in memory (``capsys``, ``caplog``, the
log capture of pytest's ``logging`` plugin) grow per iteration: don't print or log at WARNING
per iteration in a measured test, or run it with ``-p no:logging``. Synchronous test functions
only.
"""

from __future__ import annotations

import gc
import inspect
import linecache
import tracemalloc
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, List, Mapping, NamedTuple, Optional, Tuple

import pytest

import leakguard
from leakguard import _leakguard

#: Measured iterations when the marker does not say.
DEFAULT_ITERATIONS = 20
#: Unmeasured iterations run first.
DEFAULT_WARMUP = 1
#: Traced memory growth allowed over the measured iterations, bytes (64 KiB).
DEFAULT_MAX_GROWTH = 64 * 1024
#: Growing lines shown in a failure.
TOP_LINES = 5
#: Creation sites shown per handle kind in a failure.
TOP_SITES = 3

_ARGUMENTS = ("max_total_growth", "iterations", "warmup", "handles", "enabled")
#: Former names, still accepted with a deprecation warning: new name -> old name.
_DEPRECATED = {"max_total_growth": "max_growth"}


@dataclass(frozen=True)
class Settings:
    """How one test is checked."""

    max_total_growth: int
    iterations: int
    warmup: int
    handles: bool


class MarkerError(ValueError):
    """Bad arguments of ``@pytest.mark.leakguard`` or of a ``--memcheck-*`` option."""


_SETTINGS = pytest.StashKey[Optional[Settings]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("leakguard", "leakguard: memory and handle growth checks")
    group.addoption(
        "--memcheck",
        action="store_true",
        default=False,
        help="check every test function for growth of Python memory and open handles, as if "
        "marked @pytest.mark.leakguard (opt out with @pytest.mark.leakguard(enabled=False))",
    )
    group.addoption(
        "--memcheck-max-total-growth",
        default=None,
        metavar="SIZE",
        help="traced memory growth allowed in total over the measured iterations, such as "
        "64KiB or 1MB, when the marker does not say (default: 64KiB)",
    )
    group.addoption(
        "--memcheck-max-growth",
        default=None,
        metavar="SIZE",
        help="deprecated: the former name of --memcheck-max-total-growth",
    )
    group.addoption(
        "--memcheck-iterations",
        default=None,
        metavar="N",
        help=f"measured iterations when the marker does not say (default: {DEFAULT_ITERATIONS})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "leakguard(max_total_growth='64KiB', iterations=20, warmup=1, handles=True, enabled=True): "
        "run the test body repeatedly and fail if traced Python memory or open handles grow "
        "per iteration",
    )
    try:
        _defaults(config)
    except MarkerError as e:
        raise pytest.UsageError(str(e)) from None
    if config.getoption("memcheck_max_growth") is not None:
        config.issue_config_time_warning(
            pytest.PytestDeprecationWarning(
                "--memcheck-max-growth is deprecated: it is a total over the measured "
                "iterations, now named --memcheck-max-total-growth"
            ),
            stacklevel=2,
        )


def _defaults(config: pytest.Config) -> Settings:
    """The settings of a test whose marker says nothing, from the command line."""
    growth = config.getoption("memcheck_max_total_growth")
    growth_name = "--memcheck-max-total-growth"
    old = config.getoption("memcheck_max_growth")
    if old is not None:
        if growth is not None:
            raise MarkerError(
                "--memcheck-max-growth is the deprecated name of --memcheck-max-total-growth: "
                "give only the latter"
            )
        growth, growth_name = old, "--memcheck-max-growth"
    iterations = config.getoption("memcheck_iterations")
    return Settings(
        max_total_growth=DEFAULT_MAX_GROWTH
        if growth is None
        else _size(growth_name, growth),
        iterations=DEFAULT_ITERATIONS
        if iterations is None
        else _count("--memcheck-iterations", _int_option("--memcheck-iterations", iterations), 2),
        warmup=DEFAULT_WARMUP,
        handles=True,
    )


def _int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MarkerError(f"{name} takes a whole number; got {value!r}") from None


def _size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MarkerError(
            f"{name} is a size such as '1MB' or a number of bytes; got {value!r}"
        )
    if isinstance(value, int):
        if value < 0:
            raise MarkerError(f"{name} cannot be negative; got {value}")
        return value
    try:
        return leakguard.parse_size(value, name)
    except leakguard.ConfigError as e:
        raise MarkerError(str(e)) from None


def _count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MarkerError(f"{name} is a whole number; got {value!r}")
    if value < least:
        raise MarkerError(f"{name} must be at least {least}; got {value}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise MarkerError(f"{name} is True or False; got {value!r}")
    return value


def settings_for(
    defaults: Settings, memcheck: bool, args: Tuple[Any, ...], kwargs: Mapping[str, Any], marked: bool
) -> Optional[Settings]:
    """The settings of one test (None: not checked), from the defaults and its marker."""
    if not marked and not memcheck:
        return None
    if args:
        raise MarkerError(
            "@pytest.mark.leakguard takes keyword arguments only "
            f"({', '.join(a + '=' for a in _ARGUMENTS)}); got {', '.join(map(repr, args))}"
        )
    given = dict(kwargs)
    for new, old in _DEPRECATED.items():
        if old in given:
            if new in given:
                raise MarkerError(f"{old} is the deprecated name of {new}: give only {new}")
            warnings.warn(
                pytest.PytestDeprecationWarning(
                    f"@pytest.mark.leakguard({old}=...) is deprecated: it is a total over the "
                    f"measured iterations, now named {new}"
                ),
                stacklevel=2,
            )
            given[new] = given.pop(old)
    unknown = sorted(set(given) - set(_ARGUMENTS))
    if unknown:
        raise MarkerError(
            f"@pytest.mark.leakguard has no argument {', '.join(unknown)}; "
            f"it takes {', '.join(_ARGUMENTS)}"
        )
    if not _flag("enabled", given.get("enabled", True)):
        return None
    return Settings(
        max_total_growth=_size("max_total_growth", given["max_total_growth"])
        if "max_total_growth" in given
        else defaults.max_total_growth,
        iterations=_count("iterations", given.get("iterations", defaults.iterations), 2),
        warmup=_count("warmup", given.get("warmup", defaults.warmup), 0),
        handles=_flag("handles", given.get("handles", defaults.handles)),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not isinstance(item, pytest.Function):
        return
    marker = item.get_closest_marker("leakguard")
    try:
        item.stash[_SETTINGS] = settings_for(
            _defaults(item.config),
            bool(item.config.getoption("memcheck")),
            marker.args if marker is not None else (),
            marker.kwargs if marker is not None else {},
            marker is not None,
        )
    except MarkerError as e:
        item.stash[_SETTINGS] = None
        pytest.fail(f"{item.nodeid}: {e}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, None]:
    settings = pyfuncitem.stash.get(_SETTINGS, None)
    if settings is None:
        yield
        return
    original = pyfuncitem.obj
    if inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original):
        pytest.fail(
            f"{pyfuncitem.nodeid}: leakguard repeats synchronous test functions only; "
            "mark this async test @pytest.mark.leakguard(enabled=False)",
            pytrace=False,
        )

    def repeated(**kwargs: Any) -> None:
        failure = measure(lambda: original(**kwargs), settings, pyfuncitem.name)
        if failure is not None:
            pytest.fail(failure, pytrace=False)

    pyfuncitem.obj = repeated
    try:
        yield
    finally:
        pyfuncitem.obj = original


# ---------------------------------------------------------------------------------------------
# The measurement.


class _Checkpoint(NamedTuple):
    traced: int
    open: Dict[str, int]


def _checkpoint(handles: bool) -> _Checkpoint:
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    return _Checkpoint(traced, dict(_leakguard.open_by_kind()) if handles else {})


def format_size(n: float) -> str:
    """Bytes as a short human size: ``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _run(call: Callable[[], object], times: int) -> None:
    for _ in range(times):
        result = call()
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            pytest.fail(
                "leakguard repeats synchronous test functions only; this one returned an "
                "awaitable",
                pytrace=False,
            )


def measure(call: Callable[[], object], settings: Settings, name: str = "the test") -> Optional[str]:
    """Run ``call`` as the settings say; return the failure summary, or None when it passes."""
    own_tracing = not tracemalloc.is_tracing()
    if own_tracing:
        tracemalloc.start(1)
    suspects: List[str] = []
    try:
        _run(call, settings.warmup)
        if settings.handles:
            suspects = _sample_every_open()
        gc.collect()
        baseline = tracemalloc.take_snapshot()
        first = settings.iterations // 2
        second = settings.iterations - first
        start = _checkpoint(settings.handles)
        _run(call, first)
        middle = _checkpoint(settings.handles)
        _run(call, second)
        end = _checkpoint(settings.handles)

        parts: List[str] = []
        rate1 = (middle.traced - start.traced) / first
        rate2 = (end.traced - middle.traced) / second
        per_iteration = min(rate1, rate2)
        projected = per_iteration * settings.iterations
        if projected > settings.max_total_growth:
            parts.append(
                f"traced Python memory grew {format_size(per_iteration)} per iteration "
                f"(first half {format_size(rate1)}, second half {format_size(rate2)} per "
                f"iteration): {format_size(projected)} over {settings.iterations} iterations, "
                f"over max_total_growth {format_size(settings.max_total_growth)}"
            )
            parts.append(_top_lines(baseline, settings.iterations, end.traced - start.traced))
        if settings.handles:
            handles = _handle_growth(start, middle, end, first, second, settings.iterations)
            if handles:
                parts.append(handles)
        if not parts:
            return None
        head = (
            f"leakguard: {name} grew per iteration ({settings.iterations} measured iterations "
            f"after {settings.warmup} warm-up)"
        )
        return "\n".join([head, *parts])
    finally:
        for kind in suspects:
            _leakguard.set_suspect(kind, False)
        if own_tracing:
            tracemalloc.stop()


def _sample_every_open() -> List[str]:
    """Marks the kinds that exist (and are not suspect already) as suspect, so that every
    handle opened while measuring records its site; returns them, to be unmarked."""
    marked = []
    for kind in leakguard.handles():
        if not kind["suspect"] and kind["kind"] != "other":
            if _leakguard.set_suspect(kind["kind"], True):
                marked.append(kind["kind"])
    return marked


#: A line is shown when it grew at least this share of the measured growth: smaller ones are
#: noise (the measurement's own objects, interned strings), not where the leak is.
MIN_LINE_SHARE = 0.01


def _top_lines(baseline: tracemalloc.Snapshot, iterations: int, grown: int) -> str:
    ignore = (
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
        tracemalloc.Filter(False, "<unknown>"),
    )
    final = tracemalloc.take_snapshot().filter_traces(ignore)
    # Lines that grew less than a byte per iteration, or a small share of the whole growth,
    # are noise (the measurement's own objects), not the leak.
    least = max(iterations, int(grown * MIN_LINE_SHARE))
    stats = [
        s
        for s in final.compare_to(baseline.filter_traces(ignore), "lineno")
        if s.size_diff >= least
    ]
    lines = ["top growing lines (tracemalloc, over the measured iterations):"]
    for stat in stats[:TOP_LINES]:
        frame = stat.traceback[0]
        source = linecache.getline(frame.filename, frame.lineno).strip()
        lines.append(
            f"  {frame.filename}:{frame.lineno}: +{format_size(stat.size_diff)} "
            f"({format_size(stat.size_diff / iterations)} per iteration, "
            f"{stat.count_diff:+d} blocks)" + (f": {source}" if source else "")
        )
    if len(lines) == 1:
        lines.append("  (none: the growth is in memory that tracemalloc attributes to no line)")
    return "\n".join(lines)


def _handle_growth(
    start: _Checkpoint, middle: _Checkpoint, end: _Checkpoint, first: int, second: int, n: int
) -> Optional[str]:
    lines = []
    for kind, now in sorted(end.open.items(), key=lambda kv: -kv[1]):
        d1 = middle.open.get(kind, 0) - start.open.get(kind, 0)
        d2 = now - middle.open.get(kind, 0)
        if d1 <= 0 or d2 <= 0:
            continue
        total = now - start.open.get(kind, 0)
        per_iteration = min(d1 / first, d2 / second)
        line = (
            f"  kind {kind!r}: {total:+d} open over {n} iterations "
            f"({per_iteration:.2g} per iteration)"
        )
        # Sites by their innermost frame: stacks that differ further out (the measuring loop's
        # own frames, say) are one place in the code.
        sites: Dict[Tuple[str, str], int] = {}
        for k in leakguard.handles(kind):
            for s in k["sites"]:
                at = (s["location"] or "?", s["function"] or "?")
                sites[at] = sites.get(at, 0) + s["sampled_open"]
        top = sorted(sites.items(), key=lambda kv: -kv[1])[:TOP_SITES]
        if top:
            line += "; opened at " + ", ".join(
                f"{location} in {function} ({count} sampled)"
                for (location, function), count in top
            )
        lines.append(line)
    if not lines:
        return None
    return "\n".join(["handles left open (leakguard.track / tracked / Rust handles):", *lines])
