"""What evolution may see: the training part of one symbol's research period, its tables and
its training folds — and where the windows it may not see lie.

The history is cut in three, in time order (see ``walk_forward_layout``):

* **training** ``[0, train_end)``: the purged training set of the last walk-forward fold, cut
  into ``evolution.folds`` equal training folds; the GA's fitness comes only from these;
* **OOS** ``[oos_start, holdout_start)``: the last walk-forward fold's test window, after a purge
  gap. No training fold contains it, so it is the one truly out-of-sample walk-forward window
  for the candidates of a single run (earlier folds' test windows are inside the last fold's
  training set, so a run has seen them);
* **hold-out** ``[holdout_start, n_total)``: the last ``evolution.holdout`` fraction.

Only the training bars are loaded into the tables that workers receive; the OOS window and the
hold-out are cut off here, before anything reaches the object store. Only ``emp gates`` reads
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configs.models import EmpConfig
from fitness.simulator import Tables, build_tables
from fitness.splitters import purged_walk_forward
from genome.primitives import LONGEST_LOOKBACK
from market.config import SymbolMeta
from market.loader import Bars, holdout_start, load_bars, truncate
from market.store import HistoryStore, StoreError


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

    ``fitness.splitters.purged_walk_forward`` cuts it into ``folds + 1`` blocks; the last fold
    tests on the last block (the OOS window) and trains on everything before it minus the purge.
    That training set is cut into ``folds`` equal training folds for the per-fold objectives.
    """
    research = holdout_start(n_total, holdout)
    try:
        last = purged_walk_forward(research, folds, anchored=True, purge=purge,
                                   embargo=embargo, start=warmup)[-1]
    except ValueError as exc:
        raise ValueError(f"{research} research bars, warm-up {warmup}, {folds} folds, purge "
                         f"{purge}: {exc}") from None
    train_end = int(last.train[-1, 1])
    per_fold = (train_end - warmup) // folds
    if per_fold < 20:
        raise ValueError(
            f"{research} research bars leave {train_end - warmup} training bars after a "
            f"{warmup}-bar warm-up and a {purge}-bar purge: under 20 per fold for {folds} folds; "
            f"use more history, fewer folds, a shorter warm-up or a smaller purge_bars")
    return Layout(fold_segments(train_end, warmup, folds), train_end, last.test.copy(), purge,
                  research, n_total)


def fold_segments(n_bars: int, warmup: int, folds: int) -> np.ndarray:
    """``folds`` contiguous, equal training folds of [warmup, n_bars)."""
    edges = warmup + np.linspace(0, n_bars - warmup, folds + 1).round().astype(np.int64)
    return np.stack([edges[:-1], edges[1:]], axis=1)


@dataclass(frozen=True)
class ResearchData:
    bars: Bars            # training bars only: [0, layout.train_end)
    tables: Tables
    meta: SymbolMeta
    segments: np.ndarray  # int64 [folds, 2] training folds
    holdout_start: int    # index of the first hold-out bar in the full history
    n_total: int          # bars in the full history
    oos: np.ndarray | None = None  # int64 [1, 2] OOS window (full-history indexes)

    def fingerprint(self) -> dict[str, object]:
        idx = self.bars.index()
        out: dict[str, object] = {
            "symbols": ",".join(self.bars.symbols), "timeframe": self.bars.timeframe,
            "training_first": str(idx[0]), "training_last": str(idx[-1]),
            "training_bars": self.bars.n_bars,
            "holdout_bars": self.n_total - self.holdout_start, "sha256": self.bars.fingerprint()}
        if self.oos is not None:
            out["oos_bars"] = int(self.oos[0, 1] - self.oos[0, 0])
        return out


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
    return walk_forward_layout(n_total, ev.holdout, ev.warmup_bars, ev.folds, purge_bars(cfg),
                               ev.embargo)


def research_data(cfg: EmpConfig) -> ResearchData:
    full, meta = load_history(cfg)
    lay = layout_for(cfg, full.n_bars)
    training = truncate(full, lay.train_end)
    tables = build_tables(training, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache")
    return ResearchData(training, tables, meta, lay.segments, lay.holdout_start, full.n_bars,
                        lay.oos)
