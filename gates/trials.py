"""How many independent trials a run made: the N the deflated Sharpe ratio deflates by.

A GA's trials are thousands of distinct genomes, many of them near-copies. Counting every
distinct genome (the run's raw counter) overstates N; counting ONC clusters alone understates
it badly here. Measured on a default run (3,099 trials, 5,000 daily bars of noise): the trials'
per-bar returns have a median |correlation| of 0.11, the first principal component (long- vs
short-biased) explains 24 %, and ONC's quality score picks k = 2 (long-ish, short-ish), the
weak spot of silhouette scores on data without cluster structure (``gates.clustering``). Two
"independent trials" for 2,500 mostly unrelated strategies would make the DSR meaningless.

So N_eff is counted in two steps, both on the trials' return sketches (net returns on 256
evenly spaced training bars, ``fitness.simulator.sketch_columns``):

1. **ONC** (``gates.clustering.cluster_trials``): the cluster count chosen by the quality score
   (mean / std of silhouettes), as in López de Prado and Lewis (2019).
2. **Near-copies only.** Inside each ONC cluster, trials are grouped by average linkage on the
   correlation distance and the tree is cut where the groups' average correlation falls below
   ``COHESION`` = 1/√2 (ρ² ≥ 0.5: two trials that share at least half their variance are one
   bet). Each group is one effectively independent trial.

Trials that never traded are not trials of a strategy (their Sharpe ratio is exactly 0) and are
left out; trials that traded but whose sketch holds no exposure on the sampled bars each count as
one independent trial, which errs towards a stricter bar.

**The variance.** The DSR's SR0 is the expected maximum of N_eff Sharpe estimates whose true
value is 0. The paper estimates their spread by the variance of the clusters' Sharpe ratios;
measured here, that variance grows with a *real* edge (strategies that catch part of it have
truly positive Sharpe ratios, those that trade against it truly negative ones): on a planted
AR(1) edge whose best candidate trains at Sharpe 1.97 a year it put SR0 at 1.75, against 1.15
on noise, so the stronger the edge the higher its bar. Under the least favourable null (every
trial's true Sharpe is 0) the spread of the estimates is the estimation variance of a Sharpe
ratio over T bars, 1/(T−1) per bar; trials with negative true Sharpe ratios can only lower the
maximum, so this bar is valid, and it does not move with the edge it is testing. The report
still shows the raw count and the variance of all trials' Sharpe ratios for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from gates.clustering import cluster_trials
from gates.stats import expected_max_sharpe

COHESION = 1.0 / math.sqrt(2.0)  # average correlation of a group of near-copies, at least
_MAX_LINK = 4000  # rows per average-linkage tree (its condensed distances: 64 MB at 4,000)


@dataclass(frozen=True)
class TrialCount:
    """The trial figures a deflated Sharpe ratio needs."""

    raw: int          # distinct genomes evaluated: the run's trial counter
    flat: int         # never traded: no strategy was tried
    unsampled: int    # traded, but flat on every sampled bar: each counted as its own trial
    clusters: int     # ONC clusters of the sketches (the quality score's choice)
    effective: int    # N_eff: groups of near-copies inside the clusters, plus ``unsampled``
    quality: float    # ONC's quality score (mean / std of silhouettes)

    def expected_max_sharpe(self, n_obs: int) -> float:
        """SR0 per bar: the expected best of N_eff Sharpe estimates over ``n_obs`` bars whose
        true value is 0 (estimation variance 1/(n_obs − 1))."""
        return expected_max_sharpe(max(1, self.effective), 1.0 / max(1, n_obs - 1))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows z-scored and scaled to unit length, duplicates removed: dot product = correlation."""
    z = x - x.mean(axis=1, keepdims=True)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    _, first = np.unique(np.round(z, 10), axis=0, return_index=True)
    return z[np.sort(first)]


def near_copy_groups(units: np.ndarray, cohesion: float = COHESION) -> int:
    """Groups of ``units`` (unit rows) whose average pairwise correlation is >= ``cohesion``:
    an average-linkage tree on the correlation distance √((1 − ρ)/2), cut at that level."""
    m = units.shape[0]
    if m <= 1:
        return m
    corr = np.clip(units @ units.T, -1.0, 1.0)
    dist = np.sqrt((1.0 - corr[np.triu_indices(m, 1)]) / 2.0)
    tree = linkage(dist, method="average")
    return int(fcluster(tree, math.sqrt((1.0 - cohesion) / 2.0), criterion="distance").max())


def _effective(units: np.ndarray, seed: int) -> tuple[int, int, float]:
    """(N_eff, ONC clusters, quality) of distinct unit rows."""
    found = cluster_trials(units, seed=seed)
    total = 0
    for k in range(found.n_clusters):
        members = units[found.labels == k]
        if members.shape[0] > _MAX_LINK and found.n_clusters > 1:
            total += _effective(members, seed)[0]  # split big clusters further first
        elif members.shape[0] > _MAX_LINK:  # one cluster too big for a tree: cut it in pieces
            total += sum(near_copy_groups(part) for part in
                         np.array_split(members, math.ceil(members.shape[0] / _MAX_LINK)))
        else:
            total += near_copy_groups(members)
    return total, found.n_clusters, found.quality


def count_trials(sketches: np.ndarray, traded: np.ndarray, *, seed: int = 0) -> TrialCount:
    """N_eff from the run's per-trial return sketches ``[n_trials, B]``; ``traded`` [n_trials]
    says which trials made at least one trade."""
    s = np.asarray(sketches, dtype=np.float64)
    traded = np.asarray(traded, dtype=bool)
    if s.ndim != 2 or traded.shape != (s.shape[0],):
        raise ValueError(f"sketches must be [n_trials, B] with one traded flag per trial; got "
                         f"{s.shape} and {traded.shape}")
    if not np.isfinite(s).all():
        raise ValueError("trial sketches must be finite")
    n = int(s.shape[0])
    live = (np.ptp(s, axis=1) > 1e-12 * np.abs(s).max(axis=1)) if s.shape[1] else np.zeros(n, bool)
    unsampled = int((traded & ~live).sum())
    flat = n - int(live.sum()) - unsampled
    if live.sum() == 0 or s.shape[1] < 3:
        return TrialCount(n, flat, unsampled + int(live.sum()), 0,
                          unsampled + int(live.sum()), math.nan)
    units = _unit_rows(s[live])
    groups, clusters, quality = _effective(units, seed)
    return TrialCount(n, flat, unsampled, clusters, groups + unsampled, quality)
