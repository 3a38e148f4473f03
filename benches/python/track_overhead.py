"""The cost of leakguard's Python handles, side by side with plain Python peers, in one run.

    python benches/python/track_overhead.py [--repeat 15] [--number 200000]

Run it against a release build of the extension (``maturin develop --release`` or an installed
release wheel): a debug build measures the debug Rust code. Prints one Markdown table: per case
the median over ``--repeat`` rounds of the time per operation (ns; a round is the mean over
``--number`` operations), the range over the rounds, and the ratio to the peer named in the row. Rounds of all cases are interleaved, so a
busy spell of the machine hits every case alike.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import timeit
from typing import Callable, Dict, List, Optional, Tuple

import leakguard


class Noop:
    """The peer: a plain Python context manager that does nothing."""

    def __enter__(self) -> "Noop":
        return self

    def __exit__(self, *args: object) -> None:
        return None


def plain() -> int:
    return 1


@leakguard.track("bench_job")
def decorated() -> int:
    return 1


class Obj:
    pass


KIND = leakguard.HandleKind("bench_conn_kind")
leakguard.configure_handles("bench_sampled", sample_every=1)
NOOP = Noop()

# (name, statement, peer name or None). Each statement is one operation.
CASES: List[Tuple[str, str, Optional[str]]] = [
    ("`with Noop():` (plain Python class, nothing done)", "with Noop(): pass", None),
    ("`with contextlib.nullcontext():`", "with nullcontext(): pass", "`with Noop():` (plain Python class, nothing done)"),
    ("`with leakguard.track(\"bench_conn\"):` (1 in 128 sampled)", "with track('bench_conn'): pass", "`with Noop():` (plain Python class, nothing done)"),
    ("`with KIND.track():` (a kept `HandleKind`)", "with KIND.track(): pass", "`with Noop():` (plain Python class, nothing done)"),
    ("`with leakguard.track(\"bench_sampled\"):`, every open sampled (traceback taken)", "with track('bench_sampled'): pass", "`with Noop():` (plain Python class, nothing done)"),
    ("plain function call", "plain()", None),
    ("`@leakguard.track(\"bench_job\")` function call", "decorated()", "plain function call"),
    ("`Obj()` created and dropped", "Obj()", None),
    ("`leakguard.tracked(Obj(), \"bench_obj\")` created and collected", "tracked(Obj(), 'bench_obj')", "`Obj()` created and dropped"),
]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds per case")
    parser.add_argument("--number", type=int, default=200_000, help="operations per round")
    args = parser.parse_args(argv)
    env: Dict[str, object] = {
        "Noop": Noop,
        "nullcontext": contextlib.nullcontext,
        "track": leakguard.track,
        "KIND": KIND,
        "plain": plain,
        "decorated": decorated,
        "Obj": Obj,
        "tracked": leakguard.tracked,
    }
    def ns_per_op(timer: timeit.Timer, number: int) -> Callable[[], float]:
        return lambda: timer.timeit(number) / number * 1e9

    timers: Dict[str, Callable[[], float]] = {}
    for name, stmt, _ in CASES:
        # The sampled case captures a traceback per operation: fewer of them.
        number = args.number
        if "every open sampled" in name:
            number //= 20
        elif "tracked(" in stmt:
            number //= 4
        timers[name] = ns_per_op(timeit.Timer(stmt, globals=env), number)
    rounds: Dict[str, List[float]] = {name: [] for name, _, _ in CASES}
    for run in timers.values():  # warm up
        run()
    for _ in range(args.repeat):
        for name, run in timers.items():
            rounds[name].append(run())
    medians = {name: statistics.median(r) for name, r in rounds.items()}
    print(f"Python {sys.version.split()[0]}, leakguard {leakguard.__version__}, "
          f"{args.repeat} rounds of {args.number} operations (fewer for the slow cases)\n")
    print("| case | median ns/op | range over rounds | × peer |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, peer in CASES:
        r = rounds[name]
        ratio = f"{medians[name] / medians[peer]:.2f}" if peer else "(peer)"
        print(f"| {name} | {medians[name]:.0f} | {min(r):.0f}–{max(r):.0f} | {ratio} |")


if __name__ == "__main__":
    main()
