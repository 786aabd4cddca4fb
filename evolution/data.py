"""What evolution may see: the training part of one symbol's research period, its tables and
its training folds.

The period layout (training folds, purge, OOS window, hold-out) is ``gates.layout``'s. Only the
training bars are loaded into the tables that workers receive; the OOS window and the hold-out
are cut off here, before anything reaches the object store. Only ``emp gates`` reads them.

The tables' origin (their first bar: recursion seeds and refit grids count from it) is recorded
in the data description (``data.json``, MLflow params) as ``origin_index`` (in the loaded
history) and ``origin_ts``/``origin_ts_ns``, so a bundle or the live executor can continue the
run's tables from the same origin (``fitness.tables``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from configs.models import EmpConfig
from core.digest import tables_digests
from fitness.simulator import Tables, build_tables
from fitness.tables import origin_of
from gates.layout import layout_for, load_history, period_digests
from market.config import SymbolMeta
from market.loader import Bars, truncate


@dataclass(frozen=True)
class ResearchData:
    bars: Bars            # training bars only: [0, layout.train_end)
    tables: Tables
    meta: SymbolMeta
    segments: np.ndarray  # int64 [folds, 2] training folds
    holdout_start: int    # index of the first hold-out bar in the full history
    n_total: int          # bars in the full history
    oos: np.ndarray | None = None  # int64 [1, 2] OOS window (full-history indexes)
    # sha256 of the purge + OOS window and of the hold-out (``gates.layout.period_digests``):
    # the gates refuse to judge a run whose later periods changed since it was evolved
    periods: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, object]:
        idx = self.bars.index()
        out: dict[str, object] = {
            "symbols": ",".join(self.bars.symbols), "timeframe": self.bars.timeframe,
            "training_first": str(idx[0]), "training_last": str(idx[-1]),
            "training_bars": self.bars.n_bars,
            "holdout_bars": self.n_total - self.holdout_start, "n_total": self.n_total,
            "sha256": self.bars.fingerprint()}
        origin = origin_of(self.bars).to_json()  # training starts at the loaded history's bar 0
        out.update({"origin_index": origin["index"], "origin_ts": origin["ts"],
                    "origin_ts_ns": origin["ts_ns"]})
        if self.oos is not None:
            out["oos_bars"] = int(self.oos[0, 1] - self.oos[0, 0])
        out.update(self.periods)
        out.update(tables_fingerprint(self.tables))
        return out


def tables_fingerprint(tables: Tables) -> dict[str, str]:
    """Digests of the volatility and feature tables (``core.digest.tables_digests``) and the
    volatility fits' outcome per variant (also an MLflow param, ``data.vol_fits``)."""
    fits = "; ".join(f"{v} {d['failures']}/{d['refits']} failed, {d['retried']} retried, "
                     f"{d['capped']} capped" for v, d in tables.vol.fit_report().items())
    return {**tables_digests(tables), "vol_fits": fits}


def research_data(cfg: EmpConfig, progress: Callable[[str | None, int, int], None] | None = None
                  ) -> ResearchData:
    """``progress``: see ``market.volatility.build_vol_table`` (e.g. ``core.progress``)."""
    full, meta = load_history(cfg)
    lay = layout_for(cfg, full.n_bars)
    training = truncate(full, lay.train_end)
    tables = build_tables(training, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache",
                          progress=progress)
    return ResearchData(training, tables, meta, lay.segments, lay.holdout_start, full.n_bars,
                        lay.oos, period_digests(full, lay))
