"""Instructions per cache operation (valgrind's callgrind): leakguard against cachebox.

Wall-clock figures on a shared machine are noisy; instruction counts are not. For each
library, cache kind and operation, a child Python runs the operation over ``n`` keys under
callgrind twice (``n`` = 20,000 and 60,000); the difference over 40,000 is the cost of one
iteration, setup excluded. The loop alone (``loop``) is measured the same way and subtracted.
Caches of 1,024 entries, int keys, as in cache_ops.py.

Usage: python benches/python/cache_instructions.py [--libs leakguard cachebox] [--ops ...]
[--kinds LRUCache TTLCache]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from typing import Dict, List, Tuple

CHILD = r"""
import importlib, sys
lib, kind, op, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
m = importlib.import_module(lib)
SIZE = 1024
def main():
    c = m.LRUCache(SIZE) if kind == "LRUCache" else m.TTLCache(SIZE, 3600)
    for k in range(SIZE):
        c[k] = k
    keys = [(i * 7919) % SIZE for i in range(n)]
    # Built for every operation (the loop included), so that its cost is subtracted.
    other = [k + 10**9 for k in range(n)]
    if op == "loop":
        for k in keys: pass
    elif op == "get c[k]":
        for k in keys: c[k]
    elif op == "get c.get(k)":
        g = c.get
        for k in keys: g(k)
    elif op == "set present":
        for k in keys: c[k] = k
    elif op == "get miss":
        g = c.get
        for k in other: g(k)
    elif op == "set new":
        for k in other: c[k] = k
main()
"""

OPS = ["get c[k]", "get c.get(k)", "set present", "get miss", "set new"]


def callgrind_instructions(child: str, *args: str) -> int:
    """Instructions the Python program `child`, run with `args`, executes under callgrind."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-c", child, *args],
        capture_output=True, text=True, check=True,
        # A fixed string hash: with a random one the interpreter's own dict lookups (names,
        # attributes) move the counts by tens of instructions from run to run.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise RuntimeError(proc.stderr[-2000:])
    return int(found.group(1))


def instructions(lib: str, kind: str, op: str, n: int) -> int:
    return callgrind_instructions(CHILD, lib, kind, op, str(n))


def per_op(lib: str, kind: str, op: str) -> float:
    return (instructions(lib, kind, op, 60_000) - instructions(lib, kind, op, 20_000)) / 40_000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--libs", nargs="+", default=["leakguard", "cachebox"])
    parser.add_argument("--ops", nargs="+", default=OPS)
    parser.add_argument("--kinds", nargs="+", default=["LRUCache", "TTLCache"],
                        choices=["LRUCache", "TTLCache"])
    args = parser.parse_args()
    table: Dict[Tuple[str, str], Dict[str, float]] = {}
    for kind in args.kinds:
        for lib in args.libs:
            loop = per_op(lib, kind, "loop")
            for op in args.ops:
                table.setdefault((kind, op), {})[lib] = per_op(lib, kind, op) - loop
    libs: List[str] = args.libs
    print(f"Python {sys.version.split()[0]}; instructions per operation, net of the loop")
    print(f"{'workload':28}" + "".join(f"{lib:>12}" for lib in libs) + "   ratio")
    for (kind, op), row in table.items():
        ratio = row[libs[1]] / row[libs[0]] if len(libs) > 1 else 1.0
        cells = "".join(f"{row[lib]:12.0f}" for lib in libs)
        print(f"{kind + ' ' + op:28}{cells}   {ratio:.2f}x")


if __name__ == "__main__":
    main()
