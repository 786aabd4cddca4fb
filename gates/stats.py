"""Selection-bias statistics: PSR, deflated Sharpe, PBO (CSCV), Hansen's SPA and Romano–Wolf StepM.

Sharpe ratios here are **per observation** (not annualised): divide an annualised Sharpe by
sqrt(periods per year), and an annualised variance of Sharpe ratios by periods per year.
Kurtosis is Pearson kurtosis (3 for a normal distribution), not excess kurtosis.

Losses convention for ``spa_pvalue`` and ``stepm_superior``: a loss is the negated excess return
over the benchmark (buy-and-hold, or flat = zero returns), so **lower is better**, as
``arch.bootstrap`` expects. With a flat benchmark its losses are all zero.

References: Bailey & López de Prado (2012) "The Sharpe Ratio Efficient Frontier" (PSR);
Bailey & López de Prado (2014) "The Deflated Sharpe Ratio"; Bailey, Borwein, López de Prado &
Zhu (2017) "The Probability of Backtest Overfitting"; Hansen (2005); Romano & Wolf (2005).
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
    "sharpe_of_block",
    "spa_pvalue",
    "stepm_superior",
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

    def exact(sel: np.ndarray) -> np.ndarray:  # the metric over the concatenated data
        return np.asarray(metric(blocks[sel].reshape(len(sel), half * m, n_s)), dtype=np.float64)

    logits = np.empty(n_split)
    if metric is sharpe_of_block:
        # Sharpe from block moments: C(16, 8) splits cost no pass over the data. A split whose
        # ranking hinges on a near-tie is recomputed exactly, so ties rank as the plain
        # definition ranks them.
        bm = blocks.mean(axis=1)
        bm2 = ((blocks - bm[:, None, :]) ** 2).sum(axis=1)
        perf_is = _moment_sharpe(bm, bm2, is_idx, m)
        perf_oos = _moment_sharpe(bm, bm2, oos_idx, m)
        near = _near_ties(perf_is, perf_oos)
        if near.any():
            perf_is[near], perf_oos[near] = exact(is_idx[near]), exact(oos_idx[near])
        logits[:] = _logits(perf_is, perf_oos)
        return float(np.mean(logits <= 0.0)), logits
    per_split = 2 * half * m * n_s * 8
    chunk = max(1, _CSCV_CHUNK_BYTES // max(per_split, 1))
    for lo in range(0, n_split, chunk):
        hi = min(lo + chunk, n_split)
        logits[lo:hi] = _logits(exact(is_idx[lo:hi]), exact(oos_idx[lo:hi]))
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


def _near_ties(perf_is: np.ndarray, perf_oos: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Splits where rounding could change the IS-best strategy or its OOS rank."""
    k = perf_is.shape[0]
    scale = tol * np.maximum(1.0, np.abs(perf_is).max(axis=1))
    top = np.sort(perf_is, axis=1)[:, -2:] if perf_is.shape[1] > 1 else perf_is
    near = (top[:, -1] - top[:, 0]) <= scale
    v = perf_oos[np.arange(k), np.argmax(perf_is, axis=1)][:, None]
    gap = np.abs(perf_oos - v)
    gap[np.arange(k), np.argmax(perf_is, axis=1)] = np.inf
    return near | (gap <= tol * np.maximum(1.0, np.abs(v))).any(axis=1)


def _arch_inputs(
    losses_benchmark: np.ndarray, losses_models: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(losses_benchmark, dtype=np.float64)
    m = np.asarray(losses_models, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"benchmark losses must be 1-D, got shape {b.shape}")
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] != b.shape[0]:
        raise ValueError(
            f"model losses shape {m.shape} does not match benchmark length {b.shape[0]}"
        )
    if not (np.isfinite(b).all() and np.isfinite(m).all()):
        raise ValueError("losses must be finite")
    return b, m


def _check_boot(block_size: int, reps: int, n_obs: int) -> None:
    if int(block_size) != block_size or not 1 <= block_size <= n_obs:
        raise ValueError(f"block_size must be an integer in [1, {n_obs}], got {block_size!r}")
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}")


def spa_pvalue(
    losses_model: np.ndarray,
    losses_benchmark: np.ndarray,
    *,
    block_size: int,
    reps: int = 1000,
    seed: int = 0,
) -> float:
    """Hansen's consistent SPA p-value (``arch.bootstrap.SPA``, stationary bootstrap).

    H0: no model beats the benchmark. ``losses_model`` is [T] or [T, k], ``losses_benchmark``
    is [T]; losses are negated excess returns (lower is better). Fixed ``seed``: reproducible.
    """
    from arch.bootstrap import SPA

    b, m = _arch_inputs(losses_benchmark, losses_model)
    _check_boot(block_size, reps, b.shape[0])
    d = b[:, None] - m
    constant = d.std(axis=0) <= 1e-12 * np.abs(d).max(axis=0)
    if np.all(constant & (d.mean(axis=0) <= 0.0)):
        return 1.0  # never better than the benchmark (e.g. flat against flat): no evidence
    spa = SPA(b, m, block_size=int(block_size), reps=int(reps), bootstrap="stationary", seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def stepm_superior(
    losses_benchmark: np.ndarray,
    losses_models: np.ndarray,
    *,
    block_size: int,
    reps: int = 1000,
    seed: int = 0,
    size: float = 0.05,
) -> list[int]:
    """Column indexes of models superior to the benchmark (``arch.bootstrap.StepM``), sorted.

    Stationary bootstrap, familywise error rate ``size``. Losses as in ``spa_pvalue``.
    """
    from arch.bootstrap import StepM

    b, m = _arch_inputs(losses_benchmark, losses_models)
    _check_boot(block_size, reps, b.shape[0])
    if not 0.0 < size < 1.0:
        raise ValueError(f"size must be in (0, 1), got {size!r}")
    step = StepM(
        b,
        m,
        size=size,
        block_size=int(block_size),
        reps=int(reps),
        bootstrap="stationary",
        seed=seed,
    )
    step.compute()
    return sorted(int(i) for i in step.superior_models)
