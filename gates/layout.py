"""The period layout of a run and the hold-out loading: where evolution may look and where only
the gates may.

The history is cut in three, in time order (see ``walk_forward_layout``):

* **training** ``[0, train_end)``: the purged training set of the last walk-forward fold, cut
  into ``evolution.folds`` equal training folds; the GA's fitness comes only from these;
* **OOS** ``[oos_start, holdout_start)``: the last walk-forward fold's test window, after a purge
  gap. No training fold contains it, so it is the one truly out-of-sample walk-forward window
  for the candidates of a single run (earlier folds' test windows are inside the last fold's
  training set, so a run has seen them);
* **hold-out** ``[holdout_start, n_total)``: the last ``evolution.holdout`` fraction.

``load_history`` returns the whole history, hold-out included: ``evolution.data`` cuts the
training bars from it at once (the one thing evolution takes from the gates is this layout), and
only the gates read the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.errors import EmpError
from gates.splitters import purged_walk_forward
from genome.primitives import LONGEST_LOOKBACK
from market.loader import Bars, holdout_start, load_bars
from market.store import HistoryStore, StoreError

if TYPE_CHECKING:  # configs.models composes every package's section: a type here, no import
    from configs.models import EmpConfig
    from market.config import SymbolMeta


MIN_FOLD_BARS = 20  # training bars per fold, at least


class LayoutError(EmpError, ValueError):
    """The history is too short for the configured folds, warm-up, purge and hold-out."""


@dataclass(frozen=True)
class Layout:
    """Bar indexes of the three periods, all in full-history positions."""

    segments: np.ndarray  # int64 [folds, 2] training folds, inside [warmup, train_end)
    train_end: int        # evolution sees bars [0, train_end)
    oos: np.ndarray       # int64 [1, 2] the last walk-forward fold's test window
    purge: int            # bars dropped between training and the OOS window
    holdout_start: int
    n_total: int


def purge_bars(cfg: EmpConfig) -> int:
    """Explicit ``evolution.purge_bars``, else the longest feature lookback.

    Every training fold is flattened on its last bar, so no training trade's decision-to-exit
    window reaches past the training end; what can still couple the two periods is a feature
    whose lookback spans both, hence the default.
    """
    p = cfg.evolution.purge_bars
    return LONGEST_LOOKBACK if p is None else p


def walk_forward_layout(n_total: int, holdout: float, warmup: int, folds: int, purge: int,
                        embargo: float) -> Layout:
    """Anchored purged walk-forward over the research period ``[warmup, holdout_start)``.

    ``gates.splitters.purged_walk_forward`` cuts it into ``folds + 1`` blocks; the last fold
    tests on the last block (the OOS window) and trains on everything before it minus the purge.
    That training set is cut into ``folds`` equal training folds for the per-fold objectives.
    Too short a history is a ``LayoutError`` saying how many bars these settings need.
    """
    try:
        return _layout(n_total, holdout, warmup, folds, purge, embargo)
    except ValueError as exc:
        need = bars_needed(holdout, warmup, folds, purge, embargo)
        raise LayoutError(
            f"{n_total} bars are too few: {folds} fold(s) with a {warmup}-bar warm-up, a "
            f"{purge}-bar purge, a {embargo * 100:g} % embargo and a {holdout * 100:g} % hold-out need at "
            f"least {need:,} bars ({MIN_FOLD_BARS} training bars per fold) ({exc}); use more "
            f"history, fewer folds, a shorter warm-up or a smaller purge_bars") from None


def _layout(n_total: int, holdout: float, warmup: int, folds: int, purge: int,
            embargo: float) -> Layout:
    research = holdout_start(n_total, holdout)
    try:
        last = purged_walk_forward(research, folds, anchored=True, purge=purge,
                                   embargo=embargo, start=warmup)[-1]
    except ValueError as exc:
        raise ValueError(f"{research} research bars: {exc}") from None
    train_end = int(last.train[-1, 1])
    if (train_end - warmup) // folds < MIN_FOLD_BARS:
        raise ValueError(f"{train_end - warmup} training bars for {folds} folds")
    return Layout(fold_segments(train_end, warmup, folds), train_end, last.test.copy(), purge,
                  research, n_total)


def bars_needed(holdout: float, warmup: int, folds: int, purge: int, embargo: float) -> int:
    """The fewest bars of history these settings can be laid out on (a search over n)."""
    def fits(n: int) -> bool:
        try:
            _layout(n, holdout, warmup, folds, purge, embargo)
        except ValueError:
            return False
        return True

    hi = 16
    while not fits(hi):
        hi *= 2
        if hi > 1 << 40:
            return hi
    lo = hi // 2  # fits(lo) is False (or lo is below any workable size)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def period_digests(bars: Bars, lay: Layout) -> dict[str, str]:
    """sha256 of the bars after training: the purge and OOS window ``[train_end,
    holdout_start)`` and the hold-out ``[holdout_start, n_total)``. With the training sha256
    they cover the whole history, so the gates can name the period that changed."""
    return {"oos_sha256": _span(bars, lay.train_end, lay.holdout_start).fingerprint(),
            "holdout_sha256": _span(bars, lay.holdout_start, lay.n_total).fingerprint()}


def _span(bars: Bars, a: int, b: int) -> Bars:
    def cut(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else np.ascontiguousarray(arr[..., a:b])

    return Bars(bars.symbols, bars.timeframe, cut(bars.ts), cut(bars.open), cut(bars.high),
                cut(bars.low), cut(bars.close), cut(bars.volume), cut(bars.spread))


def fold_segments(n_bars: int, warmup: int, folds: int) -> np.ndarray:
    """``folds`` contiguous, equal training folds of [warmup, n_bars)."""
    edges = warmup + np.linspace(0, n_bars - warmup, folds + 1).round().astype(np.int64)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def load_history(cfg: EmpConfig) -> tuple[Bars, SymbolMeta]:
    """The whole history of the run's symbol (hold-out included): for the gates only."""
    ev = cfg.evolution
    store = HistoryStore(cfg.store_root())
    meta = cfg.data.symbols.get(ev.symbol) or store.meta(ev.symbol)
    if meta is None:
        raise StoreError(f"no metadata for {ev.symbol}: add data.symbols.{ev.symbol} to the config")
    return load_bars(ev.symbol, ev.timeframe, ev.start, ev.end, store=store), meta


def layout_for(cfg: EmpConfig, n_total: int) -> Layout:
    ev = cfg.evolution
    try:
        return walk_forward_layout(n_total, ev.holdout, ev.warmup_bars, ev.folds,
                                   purge_bars(cfg), ev.embargo)
    except LayoutError as exc:
        raise LayoutError(f"{ev.symbol}/{ev.timeframe}: {exc} (evolution.folds, "
                          f"evolution.warmup_bars, evolution.purge_bars, evolution.holdout)"
                          ) from None
