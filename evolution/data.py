"""What evolution may see: the research period of one symbol, its tables and its folds.

The hold-out (the last ``evolution.holdout`` fraction) is cut off here, before anything is put
into the object store; only ``emp gates`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configs.models import EmpConfig
from fitness.simulator import Tables, build_tables
from market.config import SymbolMeta
from market.loader import Bars, load_bars, split_holdout
from market.store import HistoryStore, StoreError


@dataclass(frozen=True)
class ResearchData:
    bars: Bars            # research period only
    tables: Tables
    meta: SymbolMeta
    segments: np.ndarray  # int64 [folds, 2] training folds inside the research period
    holdout_start: int    # index of the first hold-out bar in the full history
    n_total: int          # bars in the full history

    def fingerprint(self) -> dict[str, object]:
        idx = self.bars.index()
        return {"symbols": ",".join(self.bars.symbols), "timeframe": self.bars.timeframe,
                "research_first": str(idx[0]), "research_last": str(idx[-1]),
                "research_bars": self.bars.n_bars, "holdout_bars": self.n_total - self.holdout_start,
                "sha256": self.bars.fingerprint()}


def fold_segments(n_bars: int, warmup: int, folds: int) -> np.ndarray:
    """``folds`` contiguous, equal training folds of [warmup, n_bars)."""
    usable = n_bars - warmup
    if usable < 2 * folds:
        raise ValueError(f"{n_bars} research bars leave too few after a {warmup}-bar warm-up "
                         f"for {folds} folds")
    edges = warmup + np.linspace(0, usable, folds + 1).round().astype(np.int64)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def research_data(cfg: EmpConfig) -> ResearchData:
    ev = cfg.evolution
    store = HistoryStore(cfg.store_root())
    meta = cfg.data.symbols.get(ev.symbol) or store.meta(ev.symbol)
    if meta is None:
        raise StoreError(f"no metadata for {ev.symbol}: add data.symbols.{ev.symbol} to the config")
    full = load_bars(ev.symbol, ev.timeframe, ev.start, ev.end, store=store)
    research, cut = split_holdout(full, ev.holdout)
    tables = build_tables(research, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache")
    segments = fold_segments(research.n_bars, ev.warmup_bars, ev.folds)
    return ResearchData(research, tables, meta, segments, cut, full.n_bars)
