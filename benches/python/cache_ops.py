"""Python cache operations: leakguard's LRUCache/TTLCache against cachebox's and cachetools'.

Each workload runs on every contender in one process, interleaved: each round measures every
contender once, in an order that rotates every round, each run once untimed right before it
is timed (so that none is always the first after another workload, with its code and data
the coldest); each figure is the median over the rounds, in nanoseconds per operation. A
measurement is a Python loop over keys (``for k in keys: c[k]``); the loop's own cost (``for
k in keys: pass``, measured at the start and end of every round) is subtracted, so the
figures are the operations' net cost. A ratio (peer / leakguard: above 1 means leakguard is
faster) is the median over the rounds of the ratio of their net figures in the same round,
milliseconds apart (a machine whose speed drifts moves both sides alike). All this runs in
``--processes`` fresh interpreters (11 by default), one after the other: a process's own luck
(where the extension and each cache's memory land, the hash seeds) moves a ratio by several
percent for its whole life, so the figures are medians over the processes of each process's
median, a ratio with a distribution-free 95% confidence interval over the processes
(``intervals.py``).

Workloads, on caches of 1,024 entries (keys are ints, scattered):
- ``get hit``: ``c[k]`` and ``c.get(k)`` of a present key;
- ``set present``: ``c[k] = v`` of a present key;
- ``set new``: ``c[k] = v`` of a new key, which evicts the least recently used;
- ``get miss``: ``c.get(k)`` of absent keys (a miss-heavy read);
- ``cached hit`` / ``cached miss``: a function memoized by each library's ``cached``
  decorator over its LRUCache, called with cached arguments, or with new ones (each call
  computes and stores, evicting).

leakguard's caches take their internal lock on every operation; cachebox's lock too;
cachetools' take none (they are not thread-safe). Build leakguard in release mode first
(``maturin build --release`` and install the wheel). Peers: ``pip install -r
benches/python/requirements.txt``.

``--variant NAME=PATH`` adds a contender: the caches of another build of leakguard's extension
module (``PATH``, e.g. a version-specific ``_leakguard.cpython-311-*.so`` next to the abi3
one that ``import leakguard`` gives), loaded under another package name with the same
``leakguard.cache`` classes on top, so that two builds are compared in one process (its
columns: net ns/op and its ratio to leakguard, above 1 when the installed build is faster).

With ``--check``, exits 1 when leakguard is slower than cachebox on a get or set of LRUCache
or TTLCache (median ratio below ``--min-ratio``, 1.0 by default) or not at least 3x
cachetools there: a benchmark that can fail.

Usage: python benches/python/cache_ops.py [--processes 11] [--rounds 5] [--n 100000] [--check]
                                        [--json] [--variant NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import inspect
import json
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import cachetools

import leakguard
from intervals import median_interval

# A peer, installed from benches/python/requirements.txt (not a dependency of the package).
cachebox: Any = importlib.import_module("cachebox")

SIZE = 1024
Run = Callable[[], None]


def _loop_only(keys: List[int]) -> Run:
    def run() -> None:
        for k in keys:
            pass

    return run


def _filled(cache: Any) -> Any:
    for k in range(SIZE):
        cache[k] = k
    return cache


def _get_item(cache: Any, keys: List[int]) -> Run:
    c = _filled(cache)

    def run() -> None:
        for k in keys:
            c[k]

    return run


def _get_method(cache: Any, keys: List[int]) -> Run:
    get = _filled(cache).get

    def run() -> None:
        for k in keys:
            get(k)

    return run


def _get_miss(cache: Any, keys: List[int]) -> Run:
    get = _filled(cache).get
    absent = [k + 10 * SIZE for k in keys]

    def run() -> None:
        for k in absent:
            get(k)

    return run


def _set_present(cache: Any, keys: List[int]) -> Run:
    c = _filled(cache)

    def run() -> None:
        for k in keys:
            c[k] = k

    return run


def _set_new(cache: Any, keys: List[int]) -> Run:
    c = _filled(cache)
    offset = [10**9]
    fresh: List[List[int]] = [[]]

    def run() -> None:
        # New keys for every round (made before the clock starts: see `prepare`).
        for k in fresh[0]:
            c[k] = k

    def prepare() -> None:
        base = offset[0]
        fresh[0] = [base + k for k in range(len(keys))]
        offset[0] = base + len(keys) + 1

    run.prepare = prepare  # type: ignore[attr-defined]
    return run


def _cached_call(decorator: Callable[[Any], Any], cache: Any, keys: List[int], hit: bool) -> Run:
    def identity(k: int) -> int:
        return k

    f: Callable[[int], int] = decorator(cache)(identity)

    for k in range(SIZE):
        f(k)
    offset = [10**9]
    args: List[List[int]] = [keys]

    def run() -> None:
        for k in args[0]:
            f(k)

    if not hit:

        def prepare() -> None:
            base = offset[0]
            args[0] = [base + k for k in keys]
            offset[0] = base + len(keys) + 1

        run.prepare = prepare  # type: ignore[attr-defined]
    return run


def _ttl(module: Any) -> Any:
    return module.TTLCache(SIZE, 3600)


def load_variant(name: str, path: str) -> Any:
    """leakguard's cache classes over the extension module at ``path``, as package
    ``leakguard_<name>`` (the pure-Python decorators are the installed package's)."""
    package = f"leakguard_{name.replace('-', '_')}"
    pkg = types.ModuleType(package)
    pkg.__path__ = []
    sys.modules[package] = pkg
    spec = importlib.util.spec_from_file_location(f"{package}._leakguard", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--variant {name}: cannot load {path}")
    ext = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ext
    spec.loader.exec_module(ext)
    source = inspect.getsource(importlib.import_module("leakguard.cache"))
    source = source.replace("from leakguard._leakguard import", f"from {package}._leakguard import")
    cache = types.ModuleType(f"{package}.cache")
    sys.modules[cache.__name__] = cache
    exec(compile(source, f"<{package}.cache>", "exec"), cache.__dict__)
    return cache


VARIANTS: Dict[str, Any] = {}


def contenders(keys: List[int]) -> Dict[str, Dict[str, Run]]:
    libs = {"leakguard": leakguard, **VARIANTS, "cachebox": cachebox, "cachetools": cachetools}
    table: Dict[str, Dict[str, Run]] = {}
    for kind in ["LRUCache", "TTLCache"]:

        def make(lib: Any, kind: str = kind) -> Any:
            return lib.LRUCache(SIZE) if kind == "LRUCache" else _ttl(lib)

        for op, build in [
            ("get hit c[k]", _get_item),
            ("get hit c.get(k)", _get_method),
            ("set present c[k] = v", _set_present),
            ("set new (evicts)", _set_new),
            ("get miss c.get(k)", _get_miss),
        ]:
            table[f"{kind} {op}"] = {name: build(make(lib), keys) for name, lib in libs.items()}
    for label, hit in [("cached() hit", True), ("cached() miss (evicts)", False)]:
        table[label] = {
            name: _cached_call(lib.cached, lib.LRUCache(SIZE), keys, hit)
            for name, lib in libs.items()
        }
    return table


Results = Dict[str, Dict[str, float]]
Ratios = Dict[str, Dict[str, Tuple[float, Optional[Tuple[float, float, float]]]]]


def measure(rounds: int, n: int) -> Tuple[Results, Ratios, float]:
    """Net ns per operation (median over the rounds) of every contender on every workload,
    each peer's ratio to leakguard (the median of the rounds' ratios, with its confidence
    interval), and the harness loop's cost."""
    keys = [(i * 7919) % SIZE for i in range(n)]
    table = contenders(keys)
    loop = _loop_only(keys)
    samples: Dict[Tuple[str, str], List[float]] = {}
    harness_by_round: List[float] = []

    def timed(run: Run) -> float:
        prepare = getattr(run, "prepare", None)
        if prepare is not None:
            prepare()
        start = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - start) / n

    gc.disable()
    try:
        for r in range(rounds):
            before = timed(loop)
            for op, runs in table.items():
                # The contenders take turns in an order that rotates every round, and each is
                # run once untimed right before it is timed: none always comes first after
                # another workload, when its code and its cache's entries are the coldest.
                order = list(runs.items())
                order = order[r % len(order):] + order[: r % len(order)]
                for who, run in order:
                    timed(run)
                    samples.setdefault((op, who), []).append(timed(run))
            harness_by_round.append((before + timed(loop)) / 2)
    finally:
        gc.enable()
    harness = statistics.median(harness_by_round)
    out: Results = {}
    ratios: Ratios = {}
    for (op, who), values in samples.items():
        out.setdefault(op, {})[who] = max(statistics.median(values) - harness, 0.1)
    for op, row in out.items():
        lg = samples[(op, "leakguard")]
        for who in row:
            per_round = [
                max(x - h, 0.1) / max(y - h, 0.1)
                for x, y, h in zip(samples[(op, who)], lg, harness_by_round)
            ]
            ratios.setdefault(op, {})[who] = (statistics.median(per_round), median_interval(per_round))
    return out, ratios, harness


def in_processes(args: argparse.Namespace) -> Tuple[Results, Ratios, float]:
    """Runs the measurement in ``--processes`` fresh interpreters, one after the other, and
    combines them: a process's own luck (where the extension and each cache's memory land,
    the hash seeds) moves a ratio by several percent for that process's whole life, which
    its rounds cannot average out. Net figures are the median over the processes of each
    process's median; a ratio is the median over the processes of each process's median
    ratio, with its confidence interval over the processes."""
    runs: List[Dict[str, Any]] = []
    for _ in range(args.processes):
        command = [sys.executable, __file__, "--child", "--rounds", str(args.rounds), "--n", str(args.n)]
        for spec in args.variant:
            command += ["--variant", spec]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out))
    results: Results = {}
    ratios: Ratios = {}
    for op, row in runs[0]["net_ns"].items():
        for who in row:
            results.setdefault(op, {})[who] = statistics.median(r["net_ns"][op][who] for r in runs)
            per_process = [r["ratios"][op][who][0] for r in runs]
            ratios.setdefault(op, {})[who] = (statistics.median(per_process), median_interval(per_process))
    return results, ratios, statistics.median(r["harness_ns"] for r in runs)


#: The workloads the targets are about: get and set of a present key.
TARGETS = [
    f"{kind} {op}"
    for kind in ["LRUCache", "TTLCache"]
    for op in ["get hit c[k]", "get hit c.get(k)", "set present c[k] = v"]
]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--min-ratio", type=float, default=1.0)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--processes", type=int, default=11)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.processes <= 1:
        for spec in args.variant:
            name, _, path = spec.partition("=")
            VARIANTS[name] = load_variant(name, path)
        results, ratios, harness = measure(args.rounds, args.n)
        if args.child:
            print(json.dumps({"harness_ns": harness, "net_ns": results, "ratios": ratios}))
            return
    else:
        results, ratios, harness = in_processes(args)
        for spec in args.variant:
            VARIANTS[spec.partition("=")[0]] = None

    def span(op: str, who: str) -> str:
        interval = ratios[op][who][1]
        return f"{interval[0]:.2f}-{interval[1]:.2f}" if interval else "-"

    if args.json:
        print(json.dumps({"harness_ns": harness, "net_ns": results, "ratios": ratios}, indent=2))
    else:
        coverage = next(iter(ratios["LRUCache get hit c[k]"].values()))[1]
        print(
            f"Python {sys.version.split()[0]}, leakguard {leakguard.__version__}, cachebox "
            f"{cachebox.__version__}, cachetools {cachetools.__version__}; "
            f"{max(args.processes, 1)} processes of {args.rounds} rounds of {args.n} operations "
            f"on caches of {SIZE} entries; net ns/op (median, loop of {harness:.1f} ns "
            f"subtracted); ratio = peer / leakguard, the median of the "
            + ("processes'" if args.processes > 1 else "rounds'")
            + " ratios and its "
            + (f"{coverage[2]:.1%} confidence interval" if coverage else "interval (too few rounds)")
        )
        extra = "".join(f" {v:>12} {'vs ' + v:>10}" for v in VARIANTS)
        print(f"\n{'workload':32} {'leakguard':>10} {'cachebox':>10} {'cachetools':>10}"
              f" {'vs cachebox':>22} {'vs cachetools':>22}{extra}")
        for op, row in results.items():
            lg, cb, ct = row["leakguard"], row["cachebox"], row["cachetools"]
            cells = "".join(f" {row[v]:12.1f} {ratios[op][v][0]:9.2f}x" for v in VARIANTS)
            print(
                f"{op:32} {lg:10.1f} {cb:10.1f} {ct:10.1f}"
                f" {ratios[op]['cachebox'][0]:8.2f}x ({span(op, 'cachebox'):>9})"
                f" {ratios[op]['cachetools'][0]:8.2f}x ({span(op, 'cachetools'):>9})"
                f"{cells}"
            )
    if args.check:
        misses = []
        for op in TARGETS:
            vs_cb, vs_ct = ratios[op]["cachebox"][0], ratios[op]["cachetools"][0]
            if vs_cb < args.min_ratio:
                misses.append(f"{op}: {vs_cb:.2f}x cachebox ({span(op, 'cachebox')})")
            if vs_ct < 3.0:
                misses.append(f"{op}: {vs_ct:.2f}x cachetools ({span(op, 'cachetools')})")
        if misses:
            print("\nmissed targets:\n  " + "\n  ".join(misses))
            sys.exit(1)
        print("\nall targets met (median ratios)")

if __name__ == "__main__":
    main()
