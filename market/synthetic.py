"""Generated bars whose highs and lows a continuous price path could really have reached.

Tests and benchmarks generate close prices from a model (a random walk, an AR(1), a planted
edge). Drawing wicks independently of the path (``high = max(open, close) + |noise|``) invents
prices the market never traded: a take-profit just above the entry is then filled by a wick more
often than the walk would ever reach it, a free edge that the gates rightly pass as real. Here
the high and low of each bar are the maximum and minimum of a Brownian bridge from the bar's open
to its close, with the bar's own volatility: touching a level is exactly as likely as for the
continuous walk, so stop and take-profit fills carry no edge of their own.

For a bridge from 0 to r over one bar with variance σ², P(max >= m) = exp(−2·m·(m − r)/σ²) for
m >= max(0, r), hence m = (r + √(r² − 2σ²·ln U))/2 with U uniform; the minimum mirrors it.
"""

from __future__ import annotations

import numpy as np


def bridge_extremes(log_return: np.ndarray | float, sigma: np.ndarray | float,
                    u_hi: np.ndarray | float, u_lo: np.ndarray | float) -> tuple:
    """Log distances (>= 0) from the bar's open to its high and to its low: the maximum and
    minus the minimum of a Brownian bridge from 0 to ``log_return`` with per-bar vol ``sigma``,
    from uniforms ``u_hi``, ``u_lo`` in (0, 1] (drawn by the caller, so a generator can keep its
    random stream fixed)."""
    r = np.asarray(log_return, dtype=np.float64)
    var = np.square(np.asarray(sigma, dtype=np.float64))
    up = 0.5 * (r + np.sqrt(r * r - 2.0 * var * np.log(u_hi)))
    down = 0.5 * (-r + np.sqrt(r * r - 2.0 * var * np.log(u_lo)))
    return up, down


def ohlc_from_closes(close: np.ndarray, sigma: np.ndarray | float, rng: np.random.Generator,
                     first_open: float | None = None) -> tuple[np.ndarray, ...]:
    """(open, high, low, close): each bar opens at the previous close (the first at
    ``first_open``, default its own close) and its high and low are a bridge's extremes."""
    c = np.asarray(close, dtype=np.float64)
    o = np.concatenate([[c[0] if first_open is None else first_open], c[:-1]])
    up, down = bridge_extremes(np.log(c / o), sigma, 1.0 - rng.random(c.size),
                               1.0 - rng.random(c.size))
    return o, o * np.exp(up), o * np.exp(-down), c
