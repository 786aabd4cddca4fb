"""Purged walk-forward and combinatorial purged cross-validation (CPCV) splitters.

Every range is a half-open ``[start, end)`` pair of bar indexes, stored as int64
arrays of shape ``[k, 2]`` so they can be fed to the kernel as segments. Ranges in
one array are sorted by start and never overlap.

Conventions
-----------
* The span being split is ``[start, n_bars)``; its length ``L = n_bars - start`` is
  the "n_bars_total" used by the embargo. Equal blocks use the boundaries
  ``start + (i * L) // n`` for ``i = 0..n`` (block sizes differ by at most one bar).
* **Purge** (``purge`` bars, supplied by the caller as max holding period + longest
  feature lookback): training bars in ``[s - purge, s)`` before a test window
  ``[s, e)`` are dropped, and so are training bars in ``[e, e + purge)`` after it
  (this only matters when training data lies after the test window, i.e. CPCV).
* **Embargo**: ``ceil(embargo * L)`` training bars right after each test window,
  ``[e, e + ceil(embargo * L))``, are dropped. After a test window the dropped
  zone is therefore ``[e, e + max(purge, embargo_bars))``.

Walk-forward (``purged_walk_forward``)
    Without ``train_min``, ``[start, n_bars)`` is cut into ``n_folds + 1`` equal
    blocks; fold ``i`` tests on block ``i + 1``. With ``train_min``, the first
    ``train_min`` bars form the initial training block and ``[start + train_min,
    n_bars)`` is cut into ``n_folds`` equal test blocks. Either way the test windows
    cover ``[first test start, n_bars)`` exactly once, in time order, and each
    fold's test is one range (``[1, 2]``).
    Anchored: training is ``[start, test_start - purge)``.
    Rolling: training is the ``w`` bars ending at the purge,
    ``[max(start, test_start - purge - w), test_start - purge)``, with
    ``w = train_min`` or, without it, the length of the first block.

CPCV (``cpcv``)
    ``[start, n_bars)`` is cut into ``n_groups`` equal contiguous groups. Every
    combination of ``k_test`` groups (in ``itertools.combinations`` order) is one
    split; its ``test`` has one row per test group, in group order (adjacent test
    groups are not merged, so ``test[j]`` is the j-th test group of the split).
    Training is every other bar minus the purge/embargo zones around every test
    group, as a list of disjoint ranges.

Backtest paths (``cpcv_paths``; López de Prado, AFML ch. 12)
    Each group is tested in ``C(N-1, k-1)`` splits. Path ``p`` takes, for group
    ``g``, the p-th split (in split order) that tests ``g``. There are
    ``n_paths = C(N, k) * k / N = C(N-1, k-1)`` paths and every (split, test group)
    pair is used by exactly one path.

Any configuration that would leave a block or a training set empty raises
``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

__all__ = ["Fold", "cpcv", "cpcv_paths", "n_paths", "purged_walk_forward"]


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # int64 [k, 2] half-open bar ranges
    test: np.ndarray  # int64 [1, 2] (walk-forward) or [m, 2] (CPCV) half-open ranges


def _ranges(pairs: list[tuple[int, int]]) -> np.ndarray:
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _check_common(n_bars: int, purge: int, embargo: float, start: int) -> None:
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if n_bars <= start:
        raise ValueError(f"n_bars ({n_bars}) must exceed start ({start})")
    if purge < 0:
        raise ValueError(f"purge must be >= 0, got {purge}")
    if not (0.0 <= embargo < 0.5):
        raise ValueError(f"embargo must be in [0, 0.5), got {embargo}")


def _boundaries(lo: int, hi: int, n: int) -> list[int]:
    length = hi - lo
    return [lo + (i * length) // n for i in range(n + 1)]


def _train_ranges(
    lo: int, hi: int, tests: list[tuple[int, int]], purge: int, after: int
) -> np.ndarray:
    """[lo, hi) minus [s - purge, e + after) for every test range (s, e)."""
    cuts = sorted((max(lo, s - purge), min(hi, e + after)) for s, e in tests)
    out: list[tuple[int, int]] = []
    cur = lo
    for a, b in cuts:
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < hi:
        out.append((cur, hi))
    return _ranges(out)


def purged_walk_forward(
    n_bars: int,
    n_folds: int,
    *,
    anchored: bool = True,
    train_min: int | None = None,
    purge: int = 0,
    embargo: float = 0.0,
    start: int = 0,
) -> list[Fold]:
    """Purged walk-forward folds over ``[start, n_bars)``; see the module docstring."""
    _check_common(n_bars, purge, embargo, start)
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    total = n_bars - start
    if train_min is None:
        if total < n_folds + 1:
            raise ValueError(
                f"too few bars: {total} bars cannot form {n_folds + 1} non-empty blocks"
            )
        bounds = _boundaries(start, n_bars, n_folds + 1)
        window = bounds[1] - bounds[0]
        bounds = bounds[1:]
    else:
        if train_min < 1:
            raise ValueError(f"train_min must be >= 1, got {train_min}")
        if total - train_min < n_folds:
            raise ValueError(
                f"too few bars: {total - train_min} bars after train_min={train_min} "
                f"cannot form {n_folds} non-empty test blocks"
            )
        bounds = _boundaries(start + train_min, n_bars, n_folds)
        window = train_min
    after = max(purge, math.ceil(embargo * total))
    folds: list[Fold] = []
    for i in range(n_folds):
        s, e = bounds[i], bounds[i + 1]
        lo = start if anchored else max(start, s - purge - window)
        train = _train_ranges(lo, s, [(s, e)], purge, after)
        if len(train) == 0:
            raise ValueError(
                f"fold {i}: purge={purge} leaves no training bars before test [{s}, {e})"
            )
        folds.append(Fold(train=train, test=_ranges([(s, e)])))
    return folds


def cpcv(
    n_bars: int,
    n_groups: int,
    k_test: int,
    *,
    purge: int = 0,
    embargo: float = 0.0,
    start: int = 0,
) -> list[Fold]:
    """Combinatorial purged CV splits over ``[start, n_bars)``; see the module docstring."""
    _check_common(n_bars, purge, embargo, start)
    _check_groups(n_groups, k_test)
    total = n_bars - start
    if total < n_groups:
        raise ValueError(f"too few bars: {total} bars cannot form {n_groups} non-empty groups")
    bounds = _boundaries(start, n_bars, n_groups)
    after = max(purge, math.ceil(embargo * total))
    folds: list[Fold] = []
    for combo in combinations(range(n_groups), k_test):
        tests = [(bounds[g], bounds[g + 1]) for g in combo]
        train = _train_ranges(start, n_bars, tests, purge, after)
        if len(train) == 0:
            raise ValueError(
                f"split {combo}: purge={purge}/embargo={embargo} leave no training bars"
            )
        folds.append(Fold(train=train, test=_ranges(tests)))
    return folds


def _check_groups(n_groups: int, k_test: int) -> None:
    if n_groups < 2:
        raise ValueError(f"n_groups must be >= 2, got {n_groups}")
    if not (1 <= k_test < n_groups):
        raise ValueError(f"k_test must satisfy 1 <= k_test < n_groups, got {k_test}")


def n_paths(n_groups: int, k_test: int) -> int:
    """Number of CPCV backtest paths, ``C(N, k) * k / N`` (= ``C(N-1, k-1)``)."""
    _check_groups(n_groups, k_test)
    return math.comb(n_groups, k_test) * k_test // n_groups


def cpcv_paths(n_groups: int, k_test: int) -> np.ndarray:
    """``[n_paths, n_groups]`` int64: ``out[p, g]`` is the index (into ``cpcv()``'s
    list) of the split whose test results on group ``g`` form part of path ``p``."""
    _check_groups(n_groups, k_test)
    per_group: list[list[int]] = [[] for _ in range(n_groups)]
    for j, combo in enumerate(combinations(range(n_groups), k_test)):
        for g in combo:
            per_group[g].append(j)
    return np.array(per_group, dtype=np.int64).T.copy()
