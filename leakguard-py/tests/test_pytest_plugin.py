"""The pytest plugin, in real pytest runs (``pytester``, each in a fresh interpreter) that load
it the way users get it: through the installed package's ``pytest11`` entry point."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

# A small leak and a clean test; the leak is 64 KiB per call, 1.25 MiB over 20 iterations.
LEAKY_AND_CLEAN = '''
import pytest

LEAKED = []

@pytest.mark.leakguard(max_total_growth="512KiB", iterations=20)
def test_leaks():
    LEAKED.append(bytearray(64 * 1024))

@pytest.mark.leakguard(max_total_growth="512KiB", iterations=20)
def test_clean():
    scratch = [bytearray(64 * 1024) for _ in range(4)]
    del scratch
'''


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args, timeout=120)


def test_a_leaking_test_fails_naming_its_line_and_a_clean_one_passes(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leaky=LEAKY_AND_CLEAN)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert re.search(r"FAILED test_leaky.py::test_leaks", out), out
    assert "PASSED test_leaky.py::test_clean" in out
    assert "leakguard: test_leaks grew per iteration (20 measured iterations after 1 warm-up)" in out
    # The growth per iteration, the projection, the limit.
    assert re.search(r"traced Python memory grew 64\.\d KiB per iteration", out), out
    assert "over max_total_growth 512.0 KiB" in out
    # The leaking line, with its source.
    assert re.search(
        r"test_leaky.py:7: \+1\.\d MiB \(64\.\d KiB per iteration, \+40 blocks\): "
        r"LEAKED.append\(bytearray\(64 \* 1024\)\)",
        out,
    ), out
    # A short summary: no traceback of the plugin, and no stray line: the leaking line is the
    # only one listed (the measurement's own small allocations are left out).
    assert "pytest_plugin.py" not in out
    listed = out.split("top growing lines (tracemalloc, over the measured iterations):\n")[1]
    listed_lines = listed.split("\n=")[0].strip().splitlines()
    assert len(listed_lines) == 1, listed_lines


def test_the_body_runs_warmup_plus_iterations_times_with_fixtures_set_up_once(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_count='''
        import pytest

        CALLS = []
        SETUPS = []

        @pytest.fixture
        def resource():
            SETUPS.append(1)
            return "r"

        @pytest.mark.leakguard(iterations=7, warmup=3)
        def test_counted(resource):
            assert resource == "r"
            CALLS.append(1)

        def test_after():
            assert (len(CALLS), len(SETUPS)) == (10, 1)
        '''
    )
    run(pytester).assert_outcomes(passed=2)


def test_one_off_growth_in_the_first_iterations_is_not_a_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_warming='''
        import pytest

        CACHE = []

        @pytest.mark.leakguard(max_total_growth="1KiB", iterations=20, warmup=0)
        def test_fills_a_bounded_cache():
            # Grows in the first iterations only (a cache filling up to its bound).
            if len(CACHE) < 3:
                CACHE.append(bytearray(256 * 1024))
        '''
    )
    run(pytester).assert_outcomes(passed=1)


HANDLES = '''
import leakguard
import pytest

class Conn:
    pass

OPEN = []

def connect():
    return leakguard.tracked(Conn(), "plugin_conn")

@pytest.mark.leakguard(max_total_growth="100MB", iterations=10)
def test_leaks_connections():
    OPEN.append(connect())

@pytest.mark.leakguard(max_total_growth="100MB", iterations=10, handles=False)
def test_leaks_connections_unchecked():
    OPEN.append(connect())

@pytest.mark.leakguard(iterations=10)
def test_closes_what_it_opens():
    conn = connect()
    with leakguard.track("plugin_job"):
        pass
    del conn
'''


def test_handles_left_open_per_iteration_fail_with_kind_and_site(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_conns=HANDLES)
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED test_conns.py::test_leaks_connections" in out
    assert "handles left open" in out
    assert re.search(r"kind 'plugin_conn': \+10 open over 10 iterations \(1 per iteration\)", out)
    # Every open during the measurement is sampled, so the site is known.
    assert re.search(r"opened at \S*test_conns.py:10 in connect \(10 sampled\)", out), out
    # Memory was within its limit: only the handles are reported.
    assert "traced Python memory grew" not in out
    assert "PASSED test_conns.py::test_leaks_connections_unchecked" in out
    assert "PASSED test_conns.py::test_closes_what_it_opens" in out


MEMCHECK = '''
import pytest

LEAKED = []

def test_unmarked_leak():
    LEAKED.append(bytearray(64 * 1024))

@pytest.mark.leakguard(enabled=False)
def test_opted_out_leak():
    LEAKED.append(bytearray(64 * 1024))

def test_unmarked_clean():
    assert sum(range(100)) == 4950
'''


def test_memcheck_applies_the_default_limit_to_unmarked_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_memcheck=MEMCHECK)
    # Without the flag, unmarked tests run once, unmeasured.
    run(pytester).assert_outcomes(passed=3)
    result = run(pytester, "--memcheck")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED test_memcheck.py::test_unmarked_leak" in out
    assert "(20 measured iterations after 1 warm-up)" in out
    assert "over max_total_growth 64.0 KiB" in out
    assert "PASSED test_memcheck.py::test_opted_out_leak" in out
    # The defaults come from the command line.
    result = run(pytester, "--memcheck", "--memcheck-max-total-growth=10MB", "--memcheck-iterations=4")
    result.assert_outcomes(passed=3)


BAD_MARKERS = [
    ("iterations=1", "iterations must be at least 2; got 1"),
    ("iterations='many'", "iterations is a whole number; got 'many'"),
    ("max_total_growth='lots'", 'invalid value "lots" for max_total_growth'),
    ("max_total_growth=-5", "max_total_growth cannot be negative; got -5"),
    ("max_total_growth='1MB', max_growth='1MB'", "max_growth is the deprecated name of max_total_growth"),
    ("handles='yes'", "handles is True or False; got 'yes'"),
    ("itrations=5", "@pytest.mark.leakguard has no argument itrations; it takes max_total_growth"),
    ("'1MB'", "@pytest.mark.leakguard takes keyword arguments only"),
]


def test_bad_marker_arguments_give_a_clear_error(pytester: pytest.Pytester) -> None:
    tests = "".join(
        f"@pytest.mark.leakguard({marker})\ndef test_bad_{i}():\n    pass\n\n"
        for i, (marker, _) in enumerate(BAD_MARKERS)
    )
    pytester.makepyfile(test_bad="import pytest\n\n" + tests)
    result = run(pytester)
    result.assert_outcomes(errors=len(BAD_MARKERS))
    out = result.stdout.str()
    for i, (_, message) in enumerate(BAD_MARKERS):
        assert f"test_bad.py::test_bad_{i}: {message}" in out, out


def test_bad_command_line_options_give_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_any="def test_nothing():\n    pass\n")
    result = run(pytester, "--memcheck", "--memcheck-max-total-growth=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert 'invalid value "lots" for --memcheck-max-total-growth' in result.stderr.str()
    result = run(pytester, "--memcheck-iterations=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--memcheck-iterations must be at least 2; got 1" in result.stderr.str()


def test_a_failure_inside_an_iteration_fails_the_test_as_usual(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_flaky='''
        import pytest

        CALLS = []

        @pytest.mark.leakguard(iterations=10)
        def test_fails_on_the_fifth_call():
            CALLS.append(1)
            assert len(CALLS) < 5, "fifth call"
        '''
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: fifth call*"])


def test_the_former_name_max_growth_still_works_and_says_it_is_deprecated(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leaky=LEAKY_AND_CLEAN.replace("max_total_growth=", "max_growth="))
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1, warnings=2)
    out = result.stdout.str()
    assert "over max_total_growth 512.0 KiB" in out
    assert "leakguard(max_growth=...) is deprecated" in out and "max_total_growth" in out
    pytester.makepyfile(test_any="def test_nothing():\n    pass\n")
    result = run(pytester, "test_any.py", "--memcheck", "--memcheck-max-growth=10MB")
    result.assert_outcomes(passed=1, warnings=1)
    assert "--memcheck-max-growth is deprecated" in result.stdout.str()


def test_a_passing_run_prints_only_pytest_s_own_lines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY_AND_CLEAN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-k", "clean", timeout=120)
    result.assert_outcomes(passed=1, deselected=1)
    lines = [line for line in result.outlines if line.strip()]
    # The progress line and the summary line, nothing of the plugin's or the guard's.
    assert len(lines) == 2, lines
    assert result.errlines == [] or all(not line.strip() for line in result.errlines), result.errlines
