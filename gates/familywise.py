"""A family-wise test on the OOS window: Romano–Wolf step-down adjusted p-values.

Why this test. The gates judge K front candidates on the same OOS window. Gating each one on
its own p-value lets noise through at roughly K times the nominal rate; Holm's correction
controls that but assumes nothing about the candidates' dependence, and a GA's front is a
family of near-copies, so Holm pays for K independent tests it does not have. Romano and
Wolf's step-down procedure (Econometrica 2005; "Efficient computation of adjusted p-values for
resampling-based stepdown multiple testing", Stat. Prob. Letters 2016) bootstraps the *maximum*
statistic over the family, so it controls the family-wise error rate at the nominal level under
any dependence and loses little power when the candidates are correlated. It also gives every
candidate its own adjusted p-value, which the report can show as a distance to pass (StepM in
``arch`` returns only the superior set).

H0 for candidate k: its mean excess return over the benchmark on the OOS window is <= 0
(one-sided). Statistics are studentised by each candidate's sample standard deviation; the
bootstrap is the stationary bootstrap (Politis & Romano 1994) with an explicit mean block
length and a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["both_pvalues", "stationary_bootstrap_counts", "stepdown_pvalues"]


def stationary_bootstrap_counts(n_obs: int, block_size: float, reps: int,
                                seed: int) -> np.ndarray:
    """float64 ``[reps, n_obs]``: how often each observation is drawn in each resample.

    Each resample starts at a uniform position, continues with the next observation (wrapping
    around) and jumps to a new uniform position with probability 1/block_size. Counts instead
    of index arrays let a mean over K series be one matrix product.
    """
    if n_obs < 2 or reps < 1 or not block_size >= 1:
        raise ValueError(f"need n_obs >= 2, reps >= 1 and block_size >= 1; got {n_obs}, "
                         f"{reps}, {block_size}")
    rng = np.random.default_rng(seed)
    idx = np.empty((reps, n_obs), dtype=np.int64)
    idx[:, 0] = rng.integers(0, n_obs, reps)
    jump = rng.random((reps, n_obs)) < 1.0 / block_size
    fresh = rng.integers(0, n_obs, (reps, n_obs))
    for t in range(1, n_obs):
        idx[:, t] = np.where(jump[:, t], fresh[:, t], (idx[:, t - 1] + 1) % n_obs)
    counts = np.zeros((reps, n_obs))
    np.add.at(counts, (np.repeat(np.arange(reps), n_obs), idx.ravel()), 1.0)
    return counts


def _studentised(excess: np.ndarray, counts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Statistics ``[K_live]``, their bootstrap draws centred under H0 ``[reps, K_live]``, and
    the mask of candidates whose excess is not constant."""
    d = np.asarray(excess, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 1:
        raise ValueError(f"excess must be [T >= 2, K >= 1], got shape {np.shape(excess)}")
    if not np.isfinite(d).all():
        raise ValueError("excess returns must be finite")
    if counts.shape[1] != d.shape[0]:
        raise ValueError(f"bootstrap counts cover {counts.shape[1]} bars, excess {d.shape[0]}")
    n_obs = d.shape[0]
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    live = sd > 1e-14 * np.maximum(np.abs(d).max(axis=0), 1e-300)
    scale = math.sqrt(n_obs) / sd[live]
    stat = mean[live] * scale
    boot = (counts @ d[:, live] / n_obs - mean[live]) * scale
    return stat, boot, live


def stepdown_pvalues(excess: np.ndarray, *, block_size: float, reps: int = 1000,
                     seed: int = 0) -> np.ndarray:
    """Romano–Wolf step-down adjusted p-values ``[K]`` for ``excess`` ``[T, K]`` (per-bar
    candidate minus benchmark returns). A candidate whose excess is constant (e.g. flat
    against flat) gets p = 1: it carries no evidence of beating the benchmark.

    Rejecting every candidate with p <= alpha keeps the probability of any false rejection
    <= alpha (asymptotically), whatever the dependence between the candidates.
    """
    return both_pvalues(excess, block_size=block_size, reps=reps, seed=seed)[0]


def both_pvalues(excess: np.ndarray, *, block_size: float, reps: int = 1000,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(family-wise step-down p-values, each candidate's own bootstrap p-value), from one
    set of resamples. The own p-value is what gating each candidate alone would use; the
    report shows it beside the family-wise one."""
    d = np.asarray(excess, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2 or d.shape[0] < 2:
        raise ValueError(f"excess must be [T >= 2, K >= 1], got shape {np.shape(excess)}")
    counts = stationary_bootstrap_counts(d.shape[0], block_size, reps, seed)
    stat, boot, live = _studentised(d, counts)
    fw, own = np.ones(d.shape[1]), np.ones(d.shape[1])
    if not live.any():
        return fw, own
    order = np.argsort(-stat, kind="stable")
    # max over the candidates still in the family at each step: suffix maxima in `order`
    tail_max = np.maximum.accumulate(boot[:, order[::-1]], axis=1)[:, ::-1]
    raw = (1.0 + (tail_max >= stat[order][None, :]).sum(axis=0)) / (1.0 + reps)
    adjusted = np.empty(stat.size)
    adjusted[order] = np.maximum.accumulate(raw)  # step-down: never below an earlier step
    fw[live] = adjusted
    own[live] = (1.0 + (boot >= stat[None, :]).sum(axis=0)) / (1.0 + reps)
    return fw, own
