"""Every Python snippet of README.md and docs/*.md runs as written, and the README's together.

Each ```python block is run in a fresh interpreter (this one: the venv with the installed
wheel), in an empty temporary directory, with a timeout. The guard's snippets bind the HTTP
endpoint; the tests give ``LEAKGUARD_ADDR=127.0.0.1:0`` (the snippets say that the
``LEAKGUARD_*`` variables override their arguments) so that runs in parallel do not fight
over a port.

A snippet that is a pytest test file (it defines ``test_*`` functions) is run by pytest, so
that its test runs too, not only its definition. A snippet that only defines a function
(the prometheus_client ``metrics()`` of docs/python.md) is also run with that function called.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.S | re.M)
TIMEOUT = 60

#: Snippets that cannot run standalone, by their first line, with the reason. Kept short.
NOT_STANDALONE: Dict[str, str] = {}


def snippets() -> List[Tuple[str, int, str]]:
    """(file relative to the repo, line of the fence, code) of every ```python block."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((str(doc.relative_to(REPO_ROOT)), line, m.group(1)))
    return found


SNIPPETS = snippets()


def run(code: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["LEAKGUARD_ADDR"] = "127.0.0.1:0"
    env.pop("PYTHONPATH", None)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    cmd = [sys.executable, *argv, str(script)] if argv else [sys.executable, str(script)]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, (
        f"{what} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def test_the_docs_have_python_snippets() -> None:
    files = {f for f, _, _ in SNIPPETS}
    assert "README.md" in files and "docs/python.md" in files, files
    assert len(SNIPPETS) >= 8, [(f, line) for f, line, _ in SNIPPETS]


@pytest.mark.parametrize(
    "doc,line,code", SNIPPETS, ids=[f"{f}:{line}" for f, line, _ in SNIPPETS]
)
def test_snippet_runs_as_written(doc: str, line: int, code: str, tmp_path: Path) -> None:
    first = code.strip().splitlines()[0]
    if first in NOT_STANDALONE:
        pytest.skip(NOT_STANDALONE[first])
    if re.search(r"^def test_", code, re.M):
        # A test file: pytest runs it; its tests must pass (and there must be some).
        script = tmp_path / "test_snippet.py"
        script.write_text(code, encoding="utf-8")
        env = dict(os.environ, LEAKGUARD_ADDR="127.0.0.1:0")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        check(proc, f"pytest on the snippet at {doc}:{line}")
        assert re.search(r"\b[1-9][0-9]* passed", proc.stdout), proc.stdout
        return
    check(run(code, tmp_path), f"the snippet at {doc}:{line}")


def test_prometheus_multiprocess_snippet_serves_metrics(tmp_path: Path) -> None:
    """docs/python.md's ``metrics()`` called in a process with a running guard."""
    code = next(c for _, _, c in SNIPPETS if "def metrics()" in c)
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    program = (
        "import os\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(mp_dir)!r}\n"
        "import leakguard\n"
        "leakguard.start(limit='512MiB')\n"
        + code
        + "\nout = metrics().decode()\n"
        "assert 'leakguard_' in out, out[:2000]\n"
        "leakguard.stop()\n"
        "print('ok')\n"
    )
    proc = run(program, tmp_path)
    check(proc, "the prometheus_client snippet with metrics() called")
    assert proc.stdout.strip().endswith("ok")


def test_readme_snippets_compose_in_one_process(tmp_path: Path) -> None:
    """The README's guard and cache snippets, one after the other in one interpreter, then
    the caches used under the running guard and seen in its report."""
    readme = [c for f, _, c in SNIPPETS if f == "README.md"]
    start = next(c for c in readme if "leakguard.start(" in c)
    caches = next(c for c in readme if "leakguard.cached(" in c)
    program = (
        caches
        + start.replace("leakguard.stop()\n", "")
        + textwrap.dedent(
            """
            users["ada"] = {"id": 1}
            assert users["ada"] == {"id": 1}
            render(1)
            render(1)
            names = repr(leakguard.report())
            assert "users" in names and "render" in names, names[:3000]
            leakguard.stop()
            print("ok")
            """
        )
    )
    proc = run(program, tmp_path)
    check(proc, "the README's snippets together")
    assert proc.stdout.strip().endswith("ok")
