"""A distribution-free confidence interval for a median, shared by the Python benches (the
Rust benches have the same in ``leakguard_benches::median_interval``)."""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

#: The confidence level the benches' verdicts rest on.
LEVEL = 0.95


def median_interval(values: List[float], level: float = LEVEL) -> Optional[Tuple[float, float, float]]:
    """The order statistics x(k) and x(n + 1 - k) of independent measurements, k the largest
    rank with P(Binomial(n, 1/2) < k) <= (1 - level) / 2: they hold the true median with
    probability at least ``level`` whatever the distribution, and narrow as measurements are
    added. Returns (low, high, coverage), the coverage being the interval's exact
    probability; None with too few values (fewer than 6 for 0.95).

    >>> median_interval([float(v) for v in range(1, 11)])[:2]
    (2.0, 9.0)
    >>> median_interval([float(v) for v in range(1, 21)])[:2]
    (6.0, 15.0)
    >>> median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    True
    """
    n = len(values)
    below, k = 0.0, 0
    for i in range(n):
        p = math.comb(n, i) / 2**n
        if below + p > (1 - level) / 2:
            break
        below += p
        k = i + 1
    if k == 0:
        return None
    v = sorted(values)
    return v[k - 1], v[n - k], 1 - 2 * below
