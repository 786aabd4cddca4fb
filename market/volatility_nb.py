"""Numba kernels for the volatility engine: plain functions over float64 arrays.

The GARCH-family recursions reproduce arch's definitions exactly (same backcast start, same
EGARCH E|z| constant and log-variance cap) so that a parameter vector fitted by arch gives the
same conditional variances here. arch's loose variance bounds (1e-6x .. 1e6x an EWMA) are not
applied: they only bind during a failing optimisation, never on a fitted, stationary model.
"""

from __future__ import annotations

import numba as nb
import numpy as np

SQRT2_OV_PI = 0.79788456080286541  # E|z| for z ~ N(0, 1), the constant arch uses
LNSIGMA_MAX = float(np.log(np.finfo(np.float64).max) - 0.1)  # arch's cap on ln sigma²
VAR95_Z = 1.65


@nb.njit(cache=True)
def log_returns(close: np.ndarray) -> np.ndarray:
    """r[t] = log(c[t] / c[t-1]); r[0] is NaN so that index t is the bar whose close ends it."""
    n = close.shape[0]
    r = np.empty(n)
    if n > 0:
        r[0] = np.nan
    for t in range(1, n):
        r[t] = np.log(close[t] / close[t - 1])
    return r


@nb.njit(cache=True)
def arch_backcast(e: np.ndarray) -> float:
    """arch's start value: 0.94-weighted mean of e² over the first min(75, n) residuals."""
    tau = min(75, e.shape[0])
    num = 0.0
    den = 0.0
    w = 1.0
    for i in range(tau):
        num += w * e[i] * e[i]
        den += w
        w *= 0.94
    return num / den


@nb.njit(cache=True)
def gjr_variance(
    omega: float, alpha: float, gamma: float, beta: float, e: np.ndarray, backcast: float
) -> np.ndarray:
    """GJR-GARCH(1,1,1) conditional variances; gamma = 0 gives GARCH(1,1).

    Returns n + 1 values: s[k] is the variance of e[k] given e[:k]; s[n] is the one-step
    forecast after the last residual.
    """
    n = e.shape[0]
    s = np.empty(n + 1)
    s[0] = omega + alpha * backcast + gamma * 0.5 * backcast + beta * backcast
    for k in range(1, n + 1):
        e2 = e[k - 1] * e[k - 1]
        neg = 1.0 if e[k - 1] < 0.0 else 0.0
        s[k] = omega + alpha * e2 + gamma * e2 * neg + beta * s[k - 1]
    return s


@nb.njit(cache=True, error_model="numpy")
def egarch_variance(
    omega: float, alpha: float, gamma: float, beta: float, e: np.ndarray, ln_backcast: float
) -> np.ndarray:
    """EGARCH(1,1,1) as arch defines it:

    ln s[k] = omega + alpha (|z[k-1]| - sqrt(2/pi)) + gamma z[k-1] + beta ln s[k-1],
    z = e / sqrt(s); the first step uses only omega + beta * ln_backcast. Returns n + 1 values.
    """
    n = e.shape[0]
    s = np.empty(n + 1)
    ln_s = min(omega + beta * ln_backcast, LNSIGMA_MAX)
    s[0] = np.exp(ln_s)
    for k in range(1, n + 1):
        z = e[k - 1] / np.sqrt(s[k - 1])
        ln_s = omega + alpha * (abs(z) - SQRT2_OV_PI) + gamma * z + beta * ln_s
        ln_s = min(ln_s, LNSIGMA_MAX)
        s[k] = np.exp(ln_s)
    return s


@nb.njit(cache=True)
def ewma_variance(r: np.ndarray, lam: float, min_bars: int) -> np.ndarray:
    """One-step EWMA forecasts: out[t] = lam out[t-1] + (1 - lam) r[t]².

    r[0] is ignored (no return). out[min_bars] is the seed, the mean of r[1..min_bars]²;
    earlier values are NaN.
    """
    n = r.shape[0]
    out = np.full(n, np.nan)
    if n <= min_bars:
        return out
    acc = 0.0
    for t in range(1, min_bars + 1):
        acc += r[t] * r[t]
    out[min_bars] = acc / min_bars
    for t in range(min_bars + 1, n):
        out[t] = lam * out[t - 1] + (1.0 - lam) * r[t] * r[t]
    return out


@nb.njit(cache=True)
def rolling_rv(r: np.ndarray, window: int) -> np.ndarray:
    """Per-bar realised variance: mean of r² over the last ``window`` returns ending at t.

    Summed directly per bar (w <= a few hundred) so that no running-sum drift builds up.
    """
    n = r.shape[0]
    out = np.full(n, np.nan)
    for t in range(window, n):
        acc = 0.0
        for i in range(t - window + 1, t + 1):
            acc += r[i] * r[i]
        out[t] = acc / window
    return out


@nb.njit(cache=True)
def blend_variance(garch_var, rv, w):
    """sigma_hat² = w garch + (1 - w) rv; both must be per-bar variances."""
    return w * garch_var + (1.0 - w) * rv


@nb.njit(cache=True)
def annualised_sigma(var_per_bar, bars_per_year):
    """Annualised volatility from a per-bar variance."""
    return np.sqrt(var_per_bar * bars_per_year)


@nb.njit(cache=True)
def regime_code(sigma_ann: float, calm_below: float, storm_above: float) -> int:
    """0 calm (< calm_below), 1 normal, 2 storm (> storm_above), -1 unknown (NaN)."""
    if np.isnan(sigma_ann):
        return -1
    if sigma_ann < calm_below:
        return 0
    if sigma_ann > storm_above:
        return 2
    return 1


@nb.njit(cache=True)
def regime(sigma_ann: np.ndarray, calm_below: float, storm_above: float) -> np.ndarray:
    """Array form of regime_code, int8."""
    out = np.empty(sigma_ann.shape[0], dtype=np.int8)
    for i in range(sigma_ann.shape[0]):
        out[i] = regime_code(sigma_ann[i], calm_below, storm_above)
    return out


@nb.njit(cache=True)
def var95(sigma_per_bar, horizon_bars, exposure):
    """One-sided 95 % value at risk: 1.65 sigma sqrt(h) exposure (sigma per bar, h in bars)."""
    return VAR95_Z * sigma_per_bar * np.sqrt(horizon_bars) * exposure
