"""cachetools' own test suite for LRUCache and TTLCache, run against leakguard's classes.

The tests come from cachetools' sdist on PyPI, of the version installed in the venv (pinned
in requirements-dev.txt); it is downloaded once into the venv (``<venv>/share/``), not kept in
this repository. They run in a child pytest whose conftest replaces ``cachetools.LRUCache``
and ``cachetools.TTLCache`` with leakguard's before the test modules import them, and checks
at the end that the test modules did use leakguard's classes.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

cachetools = pytest.importorskip("cachetools", reason="cachetools (requirements-dev.txt)")

#: The test modules of cachetools' suite that cover LRUCache and TTLCache (both include the
#: generic ``CacheTestMixin`` tests of ``tests/__init__.py``).
SUITE = ["tests/test_lru.py", "tests/test_ttl.py"]

CONFTEST = '''\
"""Written by leakguard's test_cachetools_suite.py: cachetools' classes replaced by leakguard's."""
import sys

import cachetools
import leakguard

cachetools.LRUCache = leakguard.LRUCache
cachetools.TTLCache = leakguard.TTLCache


def pytest_sessionfinish(session, exitstatus):
    used = {
        "tests.test_lru": sys.modules.get("tests.test_lru"),
        "tests.test_ttl": sys.modules.get("tests.test_ttl"),
    }
    wrong = [
        name
        for name, module in used.items()
        if module is None
        or getattr(module, "LRUCache", leakguard.LRUCache) is not leakguard.LRUCache
        or getattr(module, "TTLCache", leakguard.TTLCache) is not leakguard.TTLCache
    ]
    if wrong:
        print("leakguard's classes were not substituted in", wrong)
        session.exitstatus = 3
'''


def _sdist_tests() -> Path:
    """cachetools' sdist of the installed version, unpacked under the venv (once)."""
    version = cachetools.__version__
    home = Path(sys.prefix) / "share" / "leakguard-cachetools-suite"
    root = home / f"cachetools-{version}"
    if (root / "tests" / "__init__.py").exists():
        return root
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(home),
            f"cachetools=={version}",
        ],
        check=True,
        timeout=300,
    )
    archive = home / f"cachetools-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"cachetools-{version}/tests/")]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(home, members=members, filter="data")
        else:  # Python < 3.11.4: PyPI's sdist of a pinned version
            tar.extractall(home, members=members)  # noqa: S202
    return root


@pytest.mark.skipif(sys.version_info < (3, 11), reason="cachetools 8 needs Python >= 3.11")
def test_cachetools_suite_passes_against_leakguard(tmp_path: Path) -> None:
    root = _sdist_tests()
    (root / "conftest.py").write_text(CONFTEST)
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            *SUITE,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    suite = ET.parse(report).getroot()
    counts = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert counts is not None
    tests = int(counts.get("tests", "0"))
    failed = int(counts.get("failures", "0")) + int(counts.get("errors", "0"))
    skipped = int(counts.get("skipped", "0"))
    # cachetools 8.0.1: 31 tests of CacheTestMixin per class, plus LRUCache's 2 and
    # TTLCache's 10: 74.
    assert tests >= 70, proc.stdout[-3000:]
    assert (failed, skipped) == (0, 0), proc.stdout[-6000:]
