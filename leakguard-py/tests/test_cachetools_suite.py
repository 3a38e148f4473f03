"""cachetools' own test suite, run against leakguard's caches, decorators and key functions.

The tests come from cachetools' sdists as published on PyPI, kept in ``tests/vendor/`` (their
SHA-256 is checked here), so they need no network: cachetools 8.0.1 on Python >= 3.11 (what
it supports), 5.5.2 on older Pythons. The sdist is unpacked into a temporary directory and its
``src/`` put first on ``sys.path``, so the suite runs against the cachetools it was written
for, whatever the environment has installed. A child pytest runs it with a conftest that
replaces cachetools' ``LRUCache``, ``TTLCache``, ``cached``, ``cachedmethod`` and the key
functions of ``cachetools.keys`` with leakguard's before the test modules import them, adds
the decorator tests once more with leakguard's ``LRUCache`` as the cache, and checks at the
end that the test modules did use leakguard's objects.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

import pytest

VENDOR = Path(__file__).parent / "vendor"


class Suite(NamedTuple):
    version: str
    sha256: str
    #: Tests of behaviour that this cachetools version has and cachetools 8 changed (leakguard
    #: follows 8), as ``path::class::test`` with the reason.
    deselect: Dict[str, str]
    #: At least this many tests must run (what the version has, to the test).
    min_tests: int


SUITE_8 = Suite(
    "8.0.1",
    "deb1d376d4d28c2f33f3e3058043b005e0af75c35c094bd54053e27d2906ad95",
    {},
    # 74 for LRUCache and TTLCache, 5 of the keys, the decorators' (also with leakguard's
    # LRUCache as the cache): 274 with cachetools 8.0.1.
    270,
)
SUITE_5 = Suite(
    "5.5.2",
    "1a661caa9175d26759571b2e19580f9d6393969e5dfca11fdb1f947a23e640d4",
    {
        "tests/test_cached.py::NoneWrapperTest::test_decorator": "cache=None: TypeError since 8",
        "tests/test_cached.py::NoneWrapperTest::test_decorator_attributes": (
            "cache=None: TypeError since 8"
        ),
        "tests/test_cached.py::NoneWrapperTest::test_decorator_clear": (
            "cache=None: TypeError since 8"
        ),
        "tests/test_cached.py::NoneWrapperTest::test_decorator_info": (
            "cache=None: TypeError since 8"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_nocache": (
            "a cache getter giving None: TypeError since 8"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_locked_nocache": (
            "a cache getter giving None: TypeError since 8"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_attributes": (
            "since 8 the wrapper is per instance: obj.method.cache is the cache itself"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_attributes_lock": (
            "since 8 the wrapper is per instance: obj.method.cache_lock is the lock itself"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_clear": (
            "since 8 the wrapper is per instance: obj.method.cache_clear() takes no argument"
        ),
        "tests/test_cachedmethod.py::CachedMethodTest::test_clear_locked": (
            "since 8 the wrapper is per instance: obj.method.cache_clear() takes no argument"
        ),
        "tests/test_keys.py::CacheKeysTest::test_pickle": (
            "keys are plain tuples since 8 (this white-box test reads the old key class's "
            "__dict__); equality and hash through pickling are tested by 8's test_pickle"
        ),
    },
    # 81 in these modules of cachetools 5.5.2, less the 11 above.
    70,
)

#: The test modules run: the caches (each includes the generic ``CacheTestMixin`` tests of
#: ``tests/__init__.py``), the decorators and the key functions.
MODULES = [
    "tests/test_lru.py",
    "tests/test_ttl.py",
    "tests/test_cached.py",
    "tests/test_cachedmethod.py",
    "tests/test_keys.py",
]

CONFTEST = '''\
"""Written by leakguard's test_cachetools_suite.py: cachetools' objects replaced by leakguard's."""
import sys

import cachetools
import cachetools.keys
import leakguard
import leakguard.keys

REPLACED = {
    "LRUCache": leakguard.LRUCache,
    "TTLCache": leakguard.TTLCache,
    "cached": leakguard.cached,
    "cachedmethod": leakguard.cachedmethod,
}
KEYS = ["hashkey", "methodkey", "typedkey", "typedmethodkey"]
for name, obj in REPLACED.items():
    setattr(cachetools, name, obj)
for name in KEYS:
    if hasattr(cachetools.keys, name):
        setattr(cachetools.keys, name, getattr(leakguard.keys, name))


def pytest_sessionfinish(session, exitstatus):
    wrong = []
    for modname in ["tests.test_lru", "tests.test_ttl", "tests.test_cached",
                    "tests.test_cachedmethod", "tests.test_keys"]:
        module = sys.modules.get(modname)
        if module is None:
            wrong.append(modname + " (not imported)")
            continue
        for name, obj in REPLACED.items():
            if getattr(module, name, obj) is not obj:
                wrong.append(f"{modname}.{name}")
        ct = getattr(module, "cachetools", None)
        if ct is not None and any(getattr(ct, n) is not o for n, o in REPLACED.items()):
            wrong.append(f"{modname}.cachetools")
    if not cachetools.__file__.startswith(SRC):
        wrong.append("cachetools imported from " + cachetools.__file__)
    if wrong:
        print("leakguard's objects were not substituted in", wrong)
        session.exitstatus = 3
'''

#: The decorator tests of the suite once more, with leakguard's LRUCache as the cache.
LEAKGUARD_CACHES = '''\
"""Written by leakguard's test_cachetools_suite.py: the decorator mixins with leakguard's cache."""
import unittest

import cachetools
import leakguard

from .test_cached import DecoratorTestMixin
from .test_cachedmethod import MethodDecoratorTestMixin

# The tests expect cache_info()'s maxsize only from a cachetools.Cache (an ABC): leakguard's
# caches give it too.
cachetools.Cache.register(leakguard.LRUCache)


class LeakguardLRUWrapperTest(unittest.TestCase, DecoratorTestMixin):
    def cache(self, minsize):
        return leakguard.LRUCache(maxsize=minsize)


class LeakguardLRUMethodTest(unittest.TestCase, MethodDecoratorTestMixin):
    def cache(self, minsize):
        return leakguard.LRUCache(maxsize=minsize)
'''


def suite_for_this_python() -> Suite:
    return SUITE_8 if sys.version_info >= (3, 11) else SUITE_5


def _unpack(suite: Suite, into: Path) -> Path:
    archive = VENDOR / f"cachetools-{suite.version}.tar.gz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert digest == suite.sha256, f"{archive.name} is not PyPI's sdist"
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.11.4: the sdist checked above
            tar.extractall(into)  # noqa: S202
    return into / f"cachetools-{suite.version}"


def _run(root: Path, report: Path, deselect: List[str], modules: List[str]) -> Tuple[int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            *[f"--deselect={d}" for d in deselect],
            *modules,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout[-8000:] + proc.stderr[-3000:]


def test_cachetools_suite_passes_against_leakguard(tmp_path: Path) -> None:
    suite = suite_for_this_python()
    root = _unpack(suite, tmp_path)
    src = str(root / "src" / "cachetools")
    (root / "conftest.py").write_text(f"SRC = {src!r}\n" + CONFTEST)
    modules = list(MODULES)
    if suite is SUITE_8:  # 5.x has no mixin for the method decorator's tests
        (root / "tests" / "test_leakguard_caches.py").write_text(LEAKGUARD_CACHES)
        modules.append("tests/test_leakguard_caches.py")
    report = tmp_path / "junit.xml"
    code, output = _run(root, report, list(suite.deselect), modules)
    assert code == 0, output
    tree = ET.parse(report).getroot()
    counts = tree if tree.tag == "testsuite" else tree.find("testsuite")
    assert counts is not None
    tests = int(counts.get("tests", "0"))
    failed = int(counts.get("failures", "0")) + int(counts.get("errors", "0"))
    skipped = int(counts.get("skipped", "0"))
    assert tests >= suite.min_tests, output[-3000:]
    assert (failed, skipped) == (0, 0), output
    cases = {c.get("classname", "") for c in tree.iter("testcase")}
    for module in ["test_lru", "test_ttl", "test_cached", "test_cachedmethod", "test_keys"]:
        assert any(f"tests.{module}." in c for c in cases), (module, sorted(cases)[:20])
    if suite is SUITE_8:
        assert any("LeakguardLRUWrapperTest" in c for c in cases)
        assert any("LeakguardLRUMethodTest" in c for c in cases)


@pytest.mark.parametrize("suite", [SUITE_8, SUITE_5], ids=["8.0.1", "5.5.2"])
def test_the_vendored_sdists_are_the_published_ones(suite: Suite) -> None:
    archive = VENDOR / f"cachetools-{suite.version}.tar.gz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == suite.sha256
