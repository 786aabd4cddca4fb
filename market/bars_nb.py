"""Numba kernel that aggregates sorted samples (ticks or bars) into fixed-length bars.

Plain array functions only. Ticks are passed as bars with open = high = low = close = mid.
A bar's spread is the volume-weighted mean of its samples' spreads (the plain mean when the bar
has no volume). Ticks carry volume 1 each, so resampling stored bars gives the same spread as
building straight from ticks.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def bucket_starts(ts: np.ndarray, step: int, origin: int) -> np.ndarray:
    """Start time of the bar containing each timestamp (floor to the grid anchored at origin)."""
    out = np.empty(ts.shape[0], dtype=np.int64)
    for i in range(ts.shape[0]):
        d = ts[i] - origin
        q = d // step
        out[i] = origin + q * step
    return out


@nb.njit(cache=True)
def aggregate(
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    spread: np.ndarray,
    step: int,
    origin: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group consecutive samples by bar start; ``ts`` must be non-decreasing.

    Returns bar start, open (first), high (max), low (min), close (last), volume (sum) and the
    volume-weighted mean spread.
    """
    n = ts.shape[0]
    starts = bucket_starts(ts, step, origin)
    n_bars = 0
    for i in range(n):
        if i == 0 or starts[i] != starts[i - 1]:
            n_bars += 1
    b_ts = np.empty(n_bars, dtype=np.int64)
    b_o = np.empty(n_bars)
    b_h = np.empty(n_bars)
    b_l = np.empty(n_bars)
    b_c = np.empty(n_bars)
    b_v = np.empty(n_bars)
    b_s = np.empty(n_bars)
    plain = np.empty(n_bars)
    count = np.empty(n_bars)
    j = -1
    for i in range(n):
        if i == 0 or starts[i] != starts[i - 1]:
            j += 1
            b_ts[j] = starts[i]
            b_o[j] = open_[i]
            b_h[j] = high[i]
            b_l[j] = low[i]
            b_v[j] = 0.0
            b_s[j] = 0.0
            plain[j] = 0.0
            count[j] = 0.0
        else:
            if high[i] > b_h[j]:
                b_h[j] = high[i]
            if low[i] < b_l[j]:
                b_l[j] = low[i]
        b_c[j] = close[i]
        b_v[j] += volume[i]
        b_s[j] += spread[i] * volume[i]
        plain[j] += spread[i]
        count[j] += 1.0
    for k in range(n_bars):
        b_s[k] = b_s[k] / b_v[k] if b_v[k] > 0.0 else plain[k] / count[k]
    return b_ts, b_o, b_h, b_l, b_c, b_v, b_s
