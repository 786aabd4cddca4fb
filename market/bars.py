"""Build bars from ticks and resample bars to higher timeframes on a calendar-anchored grid.

Bars are labelled by their open time. Intraday grids are anchored at UTC midnight plus the
calendar's day start (22:00 for FX), so 4h and daily FX bars begin at the 22:00 UTC roll.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from market.bars_nb import aggregate
from market.calendars import day_start_offset_ns
from market.timeframes import RESAMPLE_SOURCE, TIMEFRAME_NS, utc_ns

OHLCV = ("open", "high", "low", "close", "volume")


def _ts_ns(frame: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(utc_ns(frame["ts"]).asi8)


def _f64(frame: pd.DataFrame, col: str) -> np.ndarray:
    return np.ascontiguousarray(frame[col].to_numpy(np.float64))


def _to_frame(parts: tuple[np.ndarray, ...], with_spread: bool) -> pd.DataFrame:
    b_ts, o, h, lo, c, v, sp = parts
    frame = pd.DataFrame({"ts": pd.to_datetime(b_ts, utc=True), "open": o, "high": h,
                          "low": lo, "close": c, "volume": v})
    if with_spread:
        frame["spread"] = sp
    return frame


def ticks_to_bars(ticks: pd.DataFrame, timeframe: str, calendar: str) -> pd.DataFrame:
    """Bars of ``timeframe`` from sorted ticks (``ts``, ``bid``, ``ask``).

    Price is the mid quote, volume is the tick count (MetaTrader's "tick volume"), spread is the
    mean quoted spread of the bar's ticks.
    """
    ts = _ts_ns(ticks)
    bid, ask = _f64(ticks, "bid"), _f64(ticks, "ask")
    mid = np.ascontiguousarray((bid + ask) * 0.5)
    spread = np.ascontiguousarray(ask - bid)
    parts = aggregate(ts, mid, mid, mid, mid, np.ones(len(ts)), spread,
                      TIMEFRAME_NS[timeframe], day_start_offset_ns(calendar))
    return _to_frame(parts, with_spread=True)


def resample_bars(bars: pd.DataFrame, timeframe: str, calendar: str) -> pd.DataFrame:
    """Resample sorted bars to a higher ``timeframe``; spread stays volume-weighted."""
    with_spread = "spread" in bars.columns
    spread = _f64(bars, "spread") if with_spread else np.zeros(len(bars))
    parts = aggregate(_ts_ns(bars), *(_f64(bars, c) for c in OHLCV), spread,
                      TIMEFRAME_NS[timeframe], day_start_offset_ns(calendar))
    return _to_frame(parts, with_spread)


def higher_timeframes(timeframe: str) -> list[str]:
    """Timeframes derived from ``timeframe`` by chained resampling, lowest first."""
    out: list[str] = []
    current = timeframe
    for tf, source in RESAMPLE_SOURCE.items():
        if source == current:
            out.append(tf)
            current = tf
    return out
