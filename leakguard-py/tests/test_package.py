"""The wheel: it imports in a real interpreter, carries the crate's version, is typed."""

from __future__ import annotations

import doctest
import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import leakguard
import leakguard._leakguard as native


def test_version_is_the_cargo_version(crate_version: str) -> None:
    assert leakguard.__version__ == crate_version
    assert native.__version__ == crate_version
    assert importlib.metadata.version("leakguard-oom") == crate_version


def test_the_distribution_is_leakguard_oom_with_a_readme_and_the_import_name_leakguard() -> None:
    # PyPI's `leakguard` is another project: ours is leakguard-oom, imported as leakguard.
    dist = importlib.metadata.distribution("leakguard-oom")
    assert dist.metadata["Name"] == "leakguard-oom"
    files = [str(f) for f in dist.files or []]
    assert "leakguard/__init__.py" in files
    # The package page's readme.
    assert dist.metadata["Description-Content-Type"].startswith("text/markdown")
    assert "pip install leakguard-oom" in (dist.metadata.get_payload() or "")  # type: ignore[attr-defined]


def test_the_installed_wheel_is_manylinux2014() -> None:
    # The test wheel is the one users of glibc >= 2.17 distributions get (make wheel builds it
    # with zig and checks it with auditwheel show).
    wheel = importlib.metadata.distribution("leakguard-oom").read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]
    assert tags and all("manylinux_2_17_" in tag or "manylinux2014_" in tag for tag in tags), tags


def test_native_module_is_an_abi3_extension_inside_the_package() -> None:
    path = Path(native.__file__)
    assert path.parent == Path(leakguard.__file__).parent
    assert path.name == "_leakguard.abi3.so"
    assert native.__name__ == "leakguard._leakguard"


def test_public_names_are_exported_and_documented() -> None:
    assert sorted(leakguard.__all__) == sorted(
        ["ConfigError", "LeakguardError", "__version__", "allocator_status", "parse_size", "sample"]
        + ["endpoint_addr", "listener", "metrics", "report", "restart_now", "running", "start", "stop"]
        + ["CacheInfo", "LRUCache", "TTLCache", "cached", "cachedmethod"]
        + ["hashkey", "methodkey", "typedkey", "typedmethodkey"]
        + ["HandleKind", "configure_handles", "handles", "track", "tracked"]
        + ["capture_budget", "set_capture_budget"]
    )
    # Submodules with optional dependencies come on first access, not in __all__.
    assert leakguard.gunicorn.post_fork.__doc__
    for name in leakguard.__all__:
        assert hasattr(leakguard, name), name
        if name != "__version__":
            assert getattr(leakguard, name).__doc__, f"{name} has no docstring"


def test_docstring_examples_run() -> None:
    result = doctest.testmod(leakguard, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3
    assert result.failed == 0


def test_package_ships_stubs_and_py_typed() -> None:
    package = Path(leakguard.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "_leakguard.pyi").is_file()


def run(args: List[str], cwd: Path) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_stubs_match_the_native_module(tmp_path: Path) -> None:
    # Run outside the source tree, so that the installed package is what is checked.
    proc = run([sys.executable, "-m", "mypy.stubtest", "leakguard._leakguard"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_type_checkers_see_the_package_as_typed(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            import leakguard

            limit: int = leakguard.parse_size("512MiB", "LEAKGUARD_LIMIT")
            resident: int = leakguard.sample()["process"]["resident_bytes"]
            kind: str = leakguard.allocator_status()["kind"]
            try:
                leakguard.parse_size("lots")
            except leakguard.ConfigError as e:
                message: str = str(e)
            """
        )
    )
    bad = tmp_path / "bad.py"
    bad.write_text('import leakguard\nleakguard.parse_size(512)\nx: str = leakguard.parse_size("1G")\n')
    ok = run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # And the stubs are really used: wrong types are caught.
    wrong = run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(bad)], tmp_path)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "bad.py:2: error" in wrong.stdout
    assert "bad.py:3: error" in wrong.stdout
