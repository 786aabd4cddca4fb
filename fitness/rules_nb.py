"""Rule conditions and entry gates, one definition shared by the batch kernel's bitmasks and the
live step's per-bar evaluation (so the two cannot drift apart).

A **condition** is (lhs row, rhs row or threshold, comparator) over the feature table ``F``:
comparator 0: x > y, 1: x < y, 2: x crosses above y (x > y at t and x <= y at t-1), 3: x
crosses below y (x < y at t, x >= y at t-1). A NaN makes a comparison false; a crossing at the
first bar of the table (t == 0) is false. ``cond_mask`` packs a condition's value at every bar
of the table into uint64 words (bar t is bit t & 63 of word t >> 6).

The **gate** of a genome is its session window (hours [start, end), wrapping midnight when
start > end; always open when start == end) and its weekday bitmask (bit d = weekday d,
Monday = 0). ``gate_mask`` packs it per bar the same way.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "error_model": "numpy"}


@nb.njit(inline="always", **_JIT)
def cond_value(x: float, y: float, x0: float, y0: float, cmp: int, has_prev: bool) -> bool:
    """One condition at one bar from its values at t (x, y) and t-1 (x0, y0)."""
    if cmp == 0:
        return x > y
    if cmp == 1:
        return x < y
    if not has_prev:
        return False
    if cmp == 2:
        return x > y and x0 <= y0
    return x < y and x0 >= y0


@nb.njit(inline="always", **_JIT)
def in_gate(hour: int, weekday: int, ses_start: int, ses_end: int, weekmask: int) -> bool:
    """Whether a bar with this UTC hour and weekday lies in the genome's session and days."""
    if ses_start == ses_end:
        ok = True
    elif ses_start < ses_end:
        ok = ses_start <= hour < ses_end
    else:
        ok = hour >= ses_start or hour < ses_end
    return ok and ((weekmask >> weekday) & 1) == 1


@nb.njit(**_JIT)
def cond_mask(F: np.ndarray, lhs: int, rhs: int, thr: float, cmp: int, out: np.ndarray) -> None:
    """Pack one condition over every bar of ``F`` into ``out`` (uint64, ceil(n/64) words).

    Word-wise: the comparison at t and (for crossings) the complementary one at t-1 are packed
    separately, then the t-1 word is shifted in by one bar, so each bar costs two compares.
    """
    n = F.shape[1]
    n_words = (n + 63) >> 6
    carry = np.uint64(0)  # bit 63 of the previous word's "t-1" comparison
    one = np.uint64(1)
    for w in range(n_words):
        base = w << 6
        m = min(64, n - base)
        now = np.uint64(0)
        before = np.uint64(0)
        for i in range(m):
            x = F[lhs, base + i]
            y = F[rhs, base + i] if rhs >= 0 else thr
            if cmp == 0 or cmp == 2:
                now |= np.uint64(x > y) << np.uint64(i)
            else:
                now |= np.uint64(x < y) << np.uint64(i)
            if cmp == 2:
                before |= np.uint64(x <= y) << np.uint64(i)
            elif cmp == 3:
                before |= np.uint64(x >= y) << np.uint64(i)
        if cmp >= 2:
            # bit i of `prev` is the t-1 comparison of bar base + i; bar 0 has none (false)
            prev = (before << one) | carry
            carry = before >> np.uint64(63)
            now &= prev
        out[w] = now


@nb.njit(parallel=True, **_JIT)
def build_cond_masks(F: np.ndarray, lhs: np.ndarray, rhs: np.ndarray, thr: np.ndarray,
                     cmp: np.ndarray, rows: np.ndarray, pool: np.ndarray) -> None:
    """``cond_mask`` of condition i into ``pool[rows[i]]`` for every i (in parallel)."""
    for i in nb.prange(lhs.shape[0]):
        cond_mask(F, lhs[i], rhs[i], thr[i], cmp[i], pool[rows[i]])


@nb.njit(**_JIT)
def gate_mask(hour: np.ndarray, weekday: np.ndarray, ses_start: int, ses_end: int,
              weekmask: int, out: np.ndarray) -> None:
    """Pack ``in_gate`` over every bar into ``out``."""
    n = hour.shape[0]
    for w in range((n + 63) >> 6):
        base = w << 6
        word = np.uint64(0)
        for i in range(min(64, n - base)):
            if in_gate(hour[base + i], weekday[base + i], ses_start, ses_end, weekmask):
                word |= np.uint64(1) << np.uint64(i)
        out[w] = word
