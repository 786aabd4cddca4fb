"""The per-dataset tables every genome reads (features, volatility, calendar), built once.

Moved out of ``fitness.simulator`` so the tables can also be *continued*: see ``extend_tables``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genome.features import FeatureTable, build_features
from market.config import SymbolMeta, VolatilityConfig
from market.loader import Bars
from market.timeframes import bars_per_year
from market.volatility import VolTable, build_vol_table

_NS_HOUR = 3_600_000_000_000
_NS_DAY = 24 * _NS_HOUR


@dataclass(frozen=True)
class Tables:
    """Everything computed once per dataset and shared by every genome (one ``ray.put``)."""

    features: FeatureTable
    vol: VolTable
    hour: np.ndarray     # int64 UTC hour of each bar's open
    weekday: np.ndarray  # int64, Monday = 0
    bars_per_year: float


def build_tables(bars: Bars, meta: SymbolMeta, symbol: int = 0, *,
                 vol: VolatilityConfig | None = None, cache_dir: Path | None = None,
                 progress: Callable[[str | None, int, int], None] | None = None) -> Tables:
    """Feature and volatility tables for one symbol of ``bars`` (vol fits cached in cache_dir;
    ``progress``: see ``build_vol_table``)."""
    vc = vol or VolatilityConfig()
    o, h, lo, c, v = (np.ascontiguousarray(getattr(bars, f)[symbol])
                      for f in ("open", "high", "low", "close", "volume"))
    bpy = bars_per_year(bars.timeframe, meta.calendar)
    features = build_features(bars.ts, o, h, lo, c, v)
    vol_table = build_vol_table(c, bpy, window=vc.window, refit_every=vc.refit_every,
                                ewma_lambda=vc.ewma_lambda, min_bars=vc.min_bars,
                                cache_dir=cache_dir, progress=progress)
    hour = (bars.ts // _NS_HOUR) % 24
    weekday = (bars.ts // _NS_DAY + 3) % 7  # 1970-01-01 was a Thursday
    return Tables(features, vol_table, hour.astype(np.int64), weekday.astype(np.int64), bpy)
