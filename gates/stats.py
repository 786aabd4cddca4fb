"""Selection-bias statistics: PSR, deflated Sharpe and the Sharpe it demands, PBO (CSCV).

Sharpe ratios here are **per observation** (not annualised): divide an annualised Sharpe by
sqrt(periods per year), and an annualised variance of Sharpe ratios by periods per year.
Kurtosis is Pearson kurtosis (3 for a normal distribution), not excess kurtosis.

References: Bailey & López de Prado (2012) "The Sharpe Ratio Efficient Frontier" (PSR);
Bailey & López de Prado (2014) "The Deflated Sharpe Ratio"; Bailey, Borwein, López de Prado &
Zhu (2017) "The Probability of Backtest Overfitting". The family-wise OOS test is in
``gates.familywise``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations

import numpy as np
from scipy.stats import norm

__all__ = [
    "deflated_sharpe",
    "expected_max_sharpe",
    "pbo_cscv",
    "probabilistic_sharpe",
    "sharpe_needed",
    "sharpe_of_block",
]

# Bytes of float64 scratch per chunk of CSCV splits (bounds memory for S=16, C(16, 8)=12870).
_CSCV_CHUNK_BYTES = 64 * 2**20


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def probabilistic_sharpe(
    sr: float, sr_benchmark: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """PSR = Φ((SR − SR*)·√(T−1) / √(1 − γ3·SR + (γ4−1)/4·SR²)).

    ``sr`` and ``sr_benchmark`` are per-observation Sharpe ratios, ``n_obs`` = T the number of
    returns, ``skew`` = γ3, ``kurtosis`` = γ4 (Pearson, 3 for normal).
    """
    for name, v in (
        ("sr", sr),
        ("sr_benchmark", sr_benchmark),
        ("skew", skew),
        ("kurtosis", kurtosis),
    ):
        _check_finite(name, v)
    if int(n_obs) != n_obs or n_obs < 2:
        raise ValueError(f"n_obs must be an integer >= 2, got {n_obs!r}")
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if var <= 0.0:
        raise ValueError(f"non-positive Sharpe variance term {var!r}; check skew/kurtosis")
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)
    return float(norm.cdf(z))


def expected_max_sharpe(n_trials: int, var_trials: float) -> float:
    """SR0 = √V[SR]·((1−γ)·Φ⁻¹(1−1/N) + γ·Φ⁻¹(1−1/(N·e))), γ the Euler–Mascheroni constant.

    Expected maximum of ``n_trials`` per-observation Sharpe ratios with zero true Sharpe and
    cross-trial variance ``var_trials``. N = 1 gives 0 (no selection, no inflation).
    """
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be an integer >= 1, got {n_trials!r}")
    _check_finite("var_trials", var_trials)
    if var_trials < 0.0:
        raise ValueError(f"var_trials must be >= 0, got {var_trials!r}")
    if n_trials == 1:
        return 0.0
    g = np.euler_gamma
    z = (1.0 - g) * norm.ppf(1.0 - 1.0 / n_trials) + g * norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_trials) * z)


def deflated_sharpe(
    sr: float, n_obs: int, skew: float, kurtosis: float, n_trials: int, var_trials: float
) -> float:
    """DSR = PSR(SR0) with SR0 = ``expected_max_sharpe(n_trials, var_trials)``.

    ``n_trials`` is the count of distinct genomes evaluated (DESIGN.md "Count the trials"),
    not the population size.
    """
    sr0 = expected_max_sharpe(n_trials, var_trials)
    return probabilistic_sharpe(sr, sr0, n_obs, skew, kurtosis)


def sharpe_needed(dsr_min: float, sr0: float, n_obs: int, skew: float,
                  kurtosis: float) -> float:
    """The per-observation Sharpe at which PSR(SR0) reaches ``dsr_min``: the deflated bar a
    candidate's training Sharpe must clear, with its own T, skewness and kurtosis.

    Solves SR = SR0 + z·√(1 − γ3·SR + (γ4−1)/4·SR²)/√(T−1), z = Φ⁻¹(dsr_min), by bisection on
    the monotone stretch above SR0; NaN when the moments allow no solution.
    """
    for name, v in (("sr0", sr0), ("skew", skew), ("kurtosis", kurtosis)):
        _check_finite(name, v)
    if not 0.0 < dsr_min < 1.0:
        raise ValueError(f"dsr_min must be in (0, 1), got {dsr_min!r}")

    def gap(sr: float) -> float:
        try:
            return probabilistic_sharpe(sr, sr0, n_obs, skew, kurtosis) - dsr_min
        except ValueError:
            return math.nan

    lo, hi = sr0 - 1.0, sr0 + 1.0
    if not (gap(lo) < 0.0 < gap(hi)):
        return math.nan
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if gap(mid) < 0.0:
            lo = mid
        else:
            hi = mid
    return hi


def sharpe_of_block(x: np.ndarray) -> np.ndarray:
    """Per-observation Sharpe (mean / sample std, ddof=1) over axis −2: [..., t, N] → [..., N].

    Zero where the std is zero or t < 2.
    """
    x = np.asarray(x, dtype=np.float64)
    t = x.shape[-2]
    if t < 2:
        return np.zeros(x.shape[:-2] + x.shape[-1:])
    return _sharpe(x.mean(axis=-2), x.std(axis=-2, ddof=1))


def _sharpe(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """mean / std, 0 where the std is zero or only rounding noise (a constant series)."""
    return np.divide(mu, sd, out=np.zeros_like(mu), where=sd > 1e-14 * np.abs(mu))


def _moment_sharpe(bm: np.ndarray, bm2: np.ndarray, idx: np.ndarray, m: int) -> np.ndarray:
    """Sharpe of the union of the blocks ``idx`` [k, h] from per-block means ``bm`` and sums of
    squared deviations ``bm2`` [S, N] (Chan's parallel combination): [k, N], no data pass."""
    means = bm[idx]
    mu = means.mean(axis=1)
    if idx.shape[1] * m < 2:
        return np.zeros_like(mu)
    m2 = bm2[idx].sum(axis=1) + m * ((means - mu[:, None, :]) ** 2).sum(axis=1)
    return _sharpe(mu, np.sqrt(m2 / (idx.shape[1] * m - 1)))


def pbo_cscv(
    returns: np.ndarray,
    n_blocks: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] = sharpe_of_block,
) -> tuple[float, np.ndarray]:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    ``returns`` is [T, N] (N strategies). The first T mod S rows are dropped so the S blocks
    are equal. For each of the C(S, S/2) choices of in-sample blocks (in
    ``itertools.combinations`` order; the rest is out-of-sample, both kept in time order) the
    IS-best strategy (first on ties) is ranked OOS (1 = worst, N = best, ties get the average
    rank), ω = rank/(N+1), λ = ln(ω/(1−ω)). PBO = share of λ <= 0.

    ``metric`` maps [..., t, N] → [..., N] (higher is better), reducing over axis −2.
    Returns (pbo, logits) with logits in split order.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be 2-D [T, n_strategies], got shape {r.shape}")
    n_t, n_s = r.shape
    if n_s < 2:
        raise ValueError(f"need at least 2 strategies, got {n_s}")
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite")
    if int(n_blocks) != n_blocks or n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be an even integer >= 2, got {n_blocks!r}")
    if n_blocks > n_t:
        raise ValueError(f"n_blocks={n_blocks} exceeds the number of observations {n_t}")
    m = n_t // n_blocks
    blocks = r[n_t - m * n_blocks :].reshape(n_blocks, m, n_s)
    is_idx = np.array(list(combinations(range(n_blocks), n_blocks // 2)), dtype=np.intp)
    in_is = np.zeros((len(is_idx), n_blocks), dtype=bool)
    in_is[np.arange(len(is_idx))[:, None], is_idx] = True
    oos_idx = np.nonzero(~in_is)[1].reshape(len(is_idx), -1)  # the complement, in block order
    n_split = len(is_idx)
    half = n_blocks // 2

    # splits per chunk, so the concatenated blocks never take more than _CSCV_CHUNK_BYTES
    chunk = max(1, _CSCV_CHUNK_BYTES // max(half * m * n_s * 8, 1))

    def exact(sel: np.ndarray) -> np.ndarray:  # the metric over the concatenated data
        out = np.empty((len(sel), n_s))
        for lo in range(0, len(sel), chunk):
            part = sel[lo:lo + chunk]
            out[lo:lo + len(part)] = metric(blocks[part].reshape(len(part), half * m, n_s))
        return out

    logits = np.empty(n_split)
    if metric is sharpe_of_block:
        # Sharpe from block moments: C(16, 8) splits cost no pass over the data. A split whose
        # ranking hinges on a near-tie is recomputed exactly, so ties rank as the plain
        # definition ranks them.
        bm = blocks.mean(axis=1)
        bm2 = ((blocks - bm[:, None, :]) ** 2).sum(axis=1)
        perf_is = _moment_sharpe(bm, bm2, is_idx, m)
        perf_oos = _moment_sharpe(bm, bm2, oos_idx, m)
        flat = (blocks == blocks[:1, :1, :]).all(axis=(0, 1))
        near = _near_ties(perf_is, perf_oos, flat)
        if near.any():
            perf_is[near], perf_oos[near] = exact(is_idx[near]), exact(oos_idx[near])
        logits[:] = _logits(perf_is, perf_oos)
        return float(np.mean(logits <= 0.0)), logits
    logits[:] = _logits(exact(is_idx), exact(oos_idx))
    pbo = float(np.mean(logits <= 0.0))
    return pbo, logits


def _logits(perf_is: np.ndarray, perf_oos: np.ndarray) -> np.ndarray:
    """λ = logit(ω) of the IS-best strategy's OOS rank (average rank on ties), per split."""
    k, n_s = perf_is.shape
    best = np.argmax(perf_is, axis=1)
    v = perf_oos[np.arange(k), best][:, None]
    rank = (perf_oos < v).sum(axis=1) + ((perf_oos == v).sum(axis=1) + 1) / 2.0
    w = rank / (n_s + 1.0)
    return np.log(w / (1.0 - w))


def _near_ties(perf_is: np.ndarray, perf_oos: np.ndarray, flat: np.ndarray,
               tol: float = 1e-9) -> np.ndarray:
    """Splits where rounding could change the IS-best strategy or its OOS rank.

    ``flat`` marks strategies with constant returns: both paths give them a Sharpe of exactly
    0, so a tie between two of them is exact and needs no recomputation (a population holds
    many strategies that never trade; without this every split would be recomputed).
    """
    k = perf_is.shape[0]
    rows = np.arange(k)
    scale = tol * np.maximum(1.0, np.abs(perf_is).max(axis=1))
    order = np.argsort(perf_is, axis=1, kind="stable")
    if perf_is.shape[1] > 1:
        first, second = order[:, -1], order[:, -2]
        near = (perf_is[rows, first] - perf_is[rows, second]) <= scale
        near &= ~(flat[first] & flat[second])
    else:
        near = np.zeros(k, dtype=bool)
    best = np.argmax(perf_is, axis=1)
    v = perf_oos[rows, best][:, None]
    gap = np.abs(perf_oos - v)
    gap[rows, best] = np.inf
    gap[flat[best][:, None] & flat[None, :]] = np.inf  # exact zeros on both sides
    return near | (gap <= tol * np.maximum(1.0, np.abs(v))).any(axis=1)
