"""Every Python snippet of README.md and docs/*.md runs as written, and the README's together.

Each ```python block is run in a fresh interpreter (this one: the venv with the installed
wheel), in an empty temporary directory, with a timeout. The guard's snippets bind the HTTP
endpoint; the tests give ``LEAKGUARD_ADDR=127.0.0.1:0`` (the snippets say that the
``LEAKGUARD_*`` variables override their arguments) so that runs in parallel do not fight
over a port.

A snippet that is a pytest test file (it defines ``test_*`` functions) is run by pytest, so
that its test runs too, not only its definition. A snippet that only defines a function
(the prometheus_client ``metrics()`` of docs/python.md) is also run with that function called,
and the gunicorn config snippet also serves as the config of a real gunicorn whose app is the
README's snippets. No snippet is exempt: each one runs standalone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```\s*$", re.S | re.M)
TIMEOUT = 60


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


GUNICORN_APP = """
def app(environ, start_response):
    users[environ["PATH_INFO"]] = {"id": 1}
    body = f"{os.getpid()} {render(len(users))}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def test_readme_snippets_as_a_gunicorn_app_with_the_documented_config(
    tmp_path: Path, clean_env: Dict[str, str], free_port: Callable[[], int]
) -> None:
    """The README's guard and cache snippets as the app, docs/python.md's gunicorn config
    snippet as the config file, under a real gunicorn with two workers: both workers boot
    and answer, the app's own start() gives way to the hooks' guard (said in the log)."""
    readme = [c for f, _, c in SNIPPETS if f == "README.md"]
    start = next(c for c in readme if "leakguard.start(" in c)
    caches = next(c for c in readme if "leakguard.cached(" in c)
    conf = next(c for _, _, c in SNIPPETS if "from leakguard.gunicorn import" in c)
    app = "import os\n" + caches + start.replace("leakguard.stop()\n", "") + GUNICORN_APP
    (tmp_path / "app.py").write_text(app, encoding="utf-8")
    (tmp_path / "gunicorn.conf.py").write_text(conf, encoding="utf-8")
    port = free_port()
    env = dict(clean_env, LEAKGUARD_ADDR="off")
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "-c", str(tmp_path / "gunicorn.conf.py"),
                "--workers", "2",
                "--bind", f"127.0.0.1:{port}",
                "--chdir", str(tmp_path),
                "--log-level", "info",
                "app:app",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pids: Dict[int, str] = {}
    try:
        deadline = time.monotonic() + TIMEOUT
        ignored: List[str] = []
        while len(ignored) < 2 or not pids:
            assert server.poll() is None, "gunicorn exited:\n" + log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no answer:\n" + log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/u{len(pids)}", timeout=10) as r:
                    pid, body = r.read().decode().split(" ", 1)
                    pids[int(pid)] = body
            except OSError:
                time.sleep(0.05)
            ignored = re.findall(r"leakguard\.start\(\) ignored in process (\d+)", log.read_text())
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = log.read_text()
    assert "Exception in worker process" not in text and "HaltServer" not in text, text[-3000:]
    assert len(set(ignored)) == len(ignored) == 2, (ignored, text[-3000:])  # once per worker
    assert pids and set(pids) <= {int(p) for p in ignored}, (pids, ignored, text[-3000:])
    assert all(body == "None" for body in pids.values()), pids  # render()'s body is `...`


def test_every_doc_with_rust_snippets_is_a_doctest() -> None:
    """The Rust snippets run as doctests of the core crate: every document with one is
    included in leakguard/src/lib.rs (ReadmeDoctests, GuideDoctests)."""
    lib = (REPO_ROOT / "leakguard" / "src" / "lib.rs").read_text(encoding="utf-8")
    included = set(re.findall(r'include_str!\("\.\./\.\./([^"]+\.md)"\)', lib))
    with_rust = {
        str(doc.relative_to(REPO_ROOT))
        for doc in DOCS
        if re.search(r"^```rust", doc.read_text(encoding="utf-8"), re.M)
    }
    assert with_rust, "no Rust snippet found in the docs"
    assert with_rust <= included, sorted(with_rust - included)
