"""Numba kernels that align sorted, unique int64 time indexes in one linear pass."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def intersect_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Values present in both sorted unique arrays, in order."""
    out = np.empty(min(a.shape[0], b.shape[0]), dtype=np.int64)
    i = j = k = 0
    while i < a.shape[0] and j < b.shape[0]:
        if a[i] == b[j]:
            out[k] = a[i]
            k += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    return out[:k]


@nb.njit(cache=True)
def last_at_or_before(index: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target time, the position in ``index`` of the last value <= it (-1 if none),
    and whether that value equals the target. Both arrays sorted ascending."""
    pos = np.empty(target.shape[0], dtype=np.int64)
    exact = np.empty(target.shape[0], dtype=np.bool_)
    j = -1
    for t in range(target.shape[0]):
        while j + 1 < index.shape[0] and index[j + 1] <= target[t]:
            j += 1
        pos[t] = j
        exact[t] = j >= 0 and index[j] == target[t]
    return pos, exact
