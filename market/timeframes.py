"""Bar timeframes and their lengths. Bars are labelled by their open time (``ts`` = bar start)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only where timestamps are parsed: the live executor never loads it
    import pandas as pd

NS_PER_MINUTE = 60 * 1_000_000_000

TIMEFRAME_NS: dict[str, int] = {
    "1m": NS_PER_MINUTE,
    "5m": 5 * NS_PER_MINUTE,
    "15m": 15 * NS_PER_MINUTE,
    "1h": 60 * NS_PER_MINUTE,
    "4h": 240 * NS_PER_MINUTE,
    "1d": 1440 * NS_PER_MINUTE,
}

# Each timeframe is resampled from the one before it, never from raw ticks again.
RESAMPLE_SOURCE: dict[str, str] = {"5m": "1m", "15m": "5m", "1h": "15m", "4h": "1h", "1d": "4h"}


def timeframe_ns(name: str) -> int:
    """Length of a timeframe in nanoseconds; a clear error for an unknown name."""
    try:
        return TIMEFRAME_NS[name]
    except KeyError:
        raise ValueError(f"unknown timeframe {name!r}; known: {list(TIMEFRAME_NS)}") from None


def utc_ns(values: object) -> pd.DatetimeIndex:
    """Timestamps as a UTC, nanosecond DatetimeIndex (pandas 3 defaults to µs; naive means UTC)."""
    import pandas as pd

    idx = pd.DatetimeIndex(values)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx.as_unit("ns")


_SESSIONS_PER_YEAR = {"nyse": 252.0, "business": 252.0, "fx": 260.0, "always": 365.0}
_SESSION_MINUTES = {"nyse": 390.0, "business": 390.0, "fx": 1440.0, "always": 1440.0}


def bars_per_year(timeframe: str, calendar: str) -> float:
    """Bars in a trading year, for annualising per-bar figures (252 daily NYSE bars, 260 FX days
    of 1440 minutes, 365 days for 24x7 markets; intraday equity bars span a 6.5 h session)."""
    if calendar not in _SESSIONS_PER_YEAR:
        raise ValueError(f"unknown calendar {calendar!r}; known: {list(_SESSIONS_PER_YEAR)}")
    days = _SESSIONS_PER_YEAR[calendar]
    if timeframe == "1d":
        return days
    minutes = timeframe_ns(timeframe) / NS_PER_MINUTE
    return days * max(1.0, _SESSION_MINUTES[calendar] / minutes)
