"""Timing for benchmarks: best of N runs, the least disturbed by other load on a shared box."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Seconds taken by the fastest of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
