"""Which bar-open hours and weekdays a dataset can hold, so genes that cannot act are known.

On daily NYSE bars every bar opens at 00:00 UTC on a weekday: a session window of 15-07 UTC,
the session masks (London, New York, …) and the Saturday/Sunday genes change nothing, or turn
a strategy off altogether. ``genome.ops.repair`` neutralises such genes when given a context,
``genome.decode.describe`` leaves them out of the rule text, and ``phenotype_key`` treats
genomes that differ only in them as one behaviour (one trial, not several).

The context comes from the timeframe and the symbol's calendar (``market.calendars``), never
from the data slice, so the training run, a resume and the gates agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.calendars import DAY_NS, HOUR_NS, daily_bar_starts, day_start_offset_ns
from market.timeframes import timeframe_ns

ALL_HOURS = frozenset(range(24))
ALL_DAYS = frozenset(range(7))

# Weekdays (Monday = 0) on which an intraday bar can open. fx trades Sunday 22:00 to Friday
# 22:00 UTC; an NYSE evening session can run past UTC midnight into Saturday; a business-day
# calendar's days are UTC dates.
_INTRADAY_DAYS = {"fx": frozenset({6, 0, 1, 2, 3, 4}), "nyse": frozenset(range(6)),
                  "business": frozenset(range(5)), "always": ALL_DAYS}


@dataclass(frozen=True)
class BarContext:
    """The UTC hours and weekdays (Monday = 0) at which a dataset's bars can open."""

    hours: frozenset[int] = ALL_HOURS
    weekdays: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        if not self.hours or not self.hours <= ALL_HOURS:
            raise ValueError(f"hours must be a non-empty subset of 0..23, got {sorted(self.hours)}")
        if not self.weekdays or not self.weekdays <= ALL_DAYS:
            raise ValueError(f"weekdays must be a non-empty subset of 0..6, got "
                             f"{sorted(self.weekdays)}")

    @property
    def trivial(self) -> bool:
        """Every hour and every weekday occurs: nothing to neutralise."""
        return self.hours == ALL_HOURS and self.weekdays == ALL_DAYS

    def in_window(self, start: int, end: int) -> frozenset[int]:
        """The context's hours inside the session window [start, end) (start == end: all day)."""
        if start == end:
            return self.hours
        if start < end:
            return frozenset(h for h in self.hours if start <= h < end)
        return frozenset(h for h in self.hours if h >= start or h < end)

    def session_values(self) -> tuple[float | None, ...]:
        """Per session of the ``sess`` primitive: its constant value on every bar (1.0 inside,
        0.0 outside) when all the context's hours agree, else None (it varies)."""
        from genome.primitives_nb import SESSION_HOURS

        out: list[float | None] = []
        for start, end in SESSION_HOURS:
            inside = {start <= h < end for h in self.hours}
            out.append(float(inside.pop()) if len(inside) == 1 else None)
        return tuple(out)


def context_for(timeframe: str, calendar: str) -> BarContext:
    """The bar-open hours and weekdays of ``timeframe`` bars on ``calendar``.

    Daily bars open at the calendar's day start (00:00 UTC, fx 22:00 the day before) on the
    calendar's trading days; 4h bars on that phase every 4 hours; 1h and shorter at any hour.
    """
    tf = timeframe_ns(timeframe)
    offset = day_start_offset_ns(calendar)
    if tf >= DAY_NS:
        # three weeks of daily bar opens give every weekday the calendar ever trades
        start = int(np.datetime64("2001-01-08", "ns").astype(np.int64))
        opens = daily_bar_starts(calendar, start, start + 21 * DAY_NS)
        days = frozenset(int(d) for d in ((opens // DAY_NS + 3) % 7))  # 1970-01-01: Thursday
        return BarContext(frozenset({offset // HOUR_NS % 24}), days)
    step = tf // HOUR_NS
    hours = (ALL_HOURS if step <= 1 else
             frozenset((offset // HOUR_NS + k * step) % 24 for k in range(24 // step)))
    return BarContext(hours, _INTRADAY_DAYS[calendar])

