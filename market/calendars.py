"""Trading calendars: when bars are expected, so that missing history can be told from a closed market.

Pure numpy/pandas on purpose: ingest, quality checks and the live executor all use it, and
the executor must stay lean. Everything works on int64 nanoseconds since the epoch (UTC),
the store's native time unit, and is vectorised so that a million bars take milliseconds.

Conventions: a bar is labelled by its open time. Daily (and 4h) bars are aligned on
``day_start_offset_ns(calendar)``: 22:00 UTC for ``fx`` (the Monday daily bar opens Sunday
22:00), midnight UTC otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple, get_args

import numpy as np

from market.config import CalendarName
from market.timeframes import timeframe_ns

HOUR_NS = 3_600 * 1_000_000_000
DAY_NS = 24 * HOUR_NS
WEEK_NS = 7 * DAY_NS

CALENDARS: tuple[str, ...] = get_args(CalendarName)

# 1970-01-04 22:00 UTC, a Sunday: the open of an fx trading week (the epoch was a Thursday).
_FX_WEEK_OPEN_NS = 3 * DAY_NS + 22 * HOUR_NS
_FX_WEEK_OPEN_LEN_NS = 5 * DAY_NS

# numpy weekmask (Mon..Sun) of the days on which a daily bar *opens*. An fx daily bar opens at
# 22:00 the day before the session it covers, so fx daily bars open Sunday..Thursday.
_DAILY_OPEN_WEEKMASK: dict[str, str] = {
    "fx": "1111001",
    "nyse": "1111100",
    "business": "1111100",
    "always": "1111111",
}

# Unscheduled full-day NYSE closures, which no rule can derive.
NYSE_SPECIAL_CLOSURES: tuple[dt.date, ...] = (
    dt.date(2001, 9, 11),  # September 11 attacks: closed Tue..Fri
    dt.date(2001, 9, 12),
    dt.date(2001, 9, 13),
    dt.date(2001, 9, 14),
    dt.date(2004, 6, 11),  # national day of mourning, President Reagan
    dt.date(2007, 1, 2),  # national day of mourning, President Ford
    dt.date(2012, 10, 29),  # Hurricane Sandy
    dt.date(2012, 10, 30),
    dt.date(2018, 12, 5),  # national day of mourning, President G. H. W. Bush
    dt.date(2025, 1, 9),  # national day of mourning, President Carter
)

GapUnit = Literal["bar", "day"]


@dataclass(frozen=True)
class Gap:
    """Expected bars missing between two consecutive bars.

    ``after_row`` is the position of the bar before the gap; ``start_ns``/``end_ns`` are the
    open times of the first and last missing bar. For intraday ``nyse``/``business`` data a
    whole missing trading day is reported with ``unit='day'``: ``missing`` then counts trading
    days and ``start_ns``/``end_ns`` are the UTC midnights of the first and last missing date.
    """

    after_row: int
    start_ns: int
    end_ns: int
    missing: int
    unit: GapUnit = "bar"


def _check_calendar(calendar: str) -> None:
    if calendar not in CALENDARS:
        raise ValueError(f"unknown calendar {calendar!r}; known: {list(CALENDARS)}")


def day_start_offset_ns(calendar: str) -> int:
    """Nanoseconds after UTC midnight at which a trading day, and so a daily bar, starts."""
    _check_calendar(calendar)
    return 22 * HOUR_NS if calendar == "fx" else 0


def _easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return dt.date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based) given weekday (Mon=0) of a month; n=-1 for the last one."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _weekend_observed(day: dt.date) -> dt.date:
    """Saturday holidays are observed on Friday, Sunday holidays on Monday."""
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


def _nyse_year(year: int) -> list[dt.date]:
    days = []
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() == 6:  # a Saturday New Year is not moved to Friday Dec 31
        days.append(new_year + dt.timedelta(days=1))
    elif new_year.weekday() < 5:
        days.append(new_year)
    if year >= 1998:
        days.append(_nth_weekday(year, 1, 0, 3))  # Martin Luther King Jr. Day
    days.append(_nth_weekday(year, 2, 0, 3))  # Washington's Birthday
    days.append(_easter(year) - dt.timedelta(days=2))  # Good Friday
    days.append(_nth_weekday(year, 5, 0, -1))  # Memorial Day
    if year >= 2022:
        days.append(_weekend_observed(dt.date(year, 6, 19)))  # Juneteenth
    days.append(_weekend_observed(dt.date(year, 7, 4)))  # Independence Day
    days.append(_nth_weekday(year, 9, 0, 1))  # Labor Day
    days.append(_nth_weekday(year, 11, 3, 4))  # Thanksgiving
    days.append(_weekend_observed(dt.date(year, 12, 25)))  # Christmas
    return days


def nyse_holidays(start_year: int, end_year: int) -> set[dt.date]:
    """NYSE full-day closures on weekdays, ``start_year``..``end_year`` inclusive.

    Rule based (modern rules, exact from 1971 when the Monday holidays began) plus the
    unscheduled closures in ``NYSE_SPECIAL_CLOSURES``. Early closes are trading days.
    """
    out: set[dt.date] = set()
    for year in range(start_year, end_year + 1):
        out.update(_nyse_year(year))
    out.update(d for d in NYSE_SPECIAL_CLOSURES if start_year <= d.year <= end_year)
    return out


@lru_cache(maxsize=64)
def _busdaycal(calendar: str, start_year: int, end_year: int) -> np.busdaycalendar:
    """numpy business-day calendar of the days on which a daily bar opens."""
    holidays: list[np.datetime64] = []
    if calendar == "nyse":
        holidays = [np.datetime64(d, "D") for d in sorted(nyse_holidays(start_year, end_year))]
    return np.busdaycalendar(weekmask=_DAILY_OPEN_WEEKMASK[calendar], holidays=holidays)


def _calendar_for_days(calendar: str, days: np.ndarray) -> np.busdaycalendar:
    """A busday calendar covering the given day numbers (days since the epoch)."""
    first = int(days.min()) if days.size else 0
    last = int(days.max()) if days.size else 0
    y0 = int(np.datetime64(first, "D").astype("datetime64[Y]").astype(np.int64)) + 1970 - 1
    y1 = int(np.datetime64(last, "D").astype("datetime64[Y]").astype(np.int64)) + 1970 + 1
    return _busdaycal(calendar, y0, y1)


def trading_days(
    calendar: str, start: str | dt.date | np.datetime64, end: str | dt.date | np.datetime64
) -> np.ndarray:
    """Session dates (``datetime64[D]``) in ``[start, end]``: the dates daily bars cover.

    For ``fx`` a session (Mon..Fri) opens at 22:00 UTC the day before its date.
    """
    _check_calendar(calendar)
    s, e = np.datetime64(start, "D"), np.datetime64(end, "D")
    days = np.arange(s, e + 1, dtype="datetime64[D]")
    shift = 1 if calendar == "fx" else 0
    opens = days - shift
    cal = _calendar_for_days(calendar, opens.astype(np.int64))
    return days[np.is_busday(opens, busdaycal=cal)]


def daily_bar_starts(calendar: str, start_ns: int, end_ns: int) -> np.ndarray:
    """Open times (int64 ns) of the daily bars expected in ``[start_ns, end_ns]``."""
    _check_calendar(calendar)
    off = day_start_offset_ns(calendar)
    d0 = -((off - start_ns) // DAY_NS)  # ceil((start - off) / DAY)
    d1 = (end_ns - off) // DAY_NS
    if d1 < d0:
        return np.empty(0, dtype=np.int64)
    days = np.arange(d0, d1 + 1, dtype=np.int64)
    cal = _calendar_for_days(calendar, days)
    keep = np.is_busday(days.astype("datetime64[D]"), busdaycal=cal)
    return days[keep] * DAY_NS + off


def _slot_count(x: np.ndarray, ref: int, tf: int, n_open: int) -> np.ndarray:
    """Number of open bar starts <= x, counted from ``ref`` (a weekly-periodic schedule).

    Each week from ``ref`` holds ``n_open`` bar starts ``ref + j*tf`` (j < n_open) and then
    closes until the next week. Differences of this count give missing bars between two times.
    """
    r = x - ref
    w = r // WEEK_NS
    k = (r - w * WEEK_NS) // tf
    return w * n_open + np.minimum(k + 1, n_open)


def _slot_time(m: np.ndarray, ref: int, tf: int, n_open: int) -> np.ndarray:
    """Open time of the m-th open bar start: the inverse of ``_slot_count``."""
    w = m // n_open
    return ref + w * WEEK_NS + (m - w * n_open) * tf


class GapTable(NamedTuple):
    """Columnar gaps (one entry per gap, ordered by ``after_row``): cheap however many there are."""

    after_row: np.ndarray  # int64
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    missing: np.ndarray  # int64
    whole_days: np.ndarray  # bool: unit 'day' rather than 'bar'

    @classmethod
    def build(cls, idx: np.ndarray, start: np.ndarray, end: np.ndarray, missing: np.ndarray,
              whole_days: bool) -> GapTable:
        i64 = [np.asarray(x, dtype=np.int64) for x in (idx, start, end, missing)]
        return cls(*i64, np.full(i64[0].size, whole_days))

    @classmethod
    def empty(cls) -> GapTable:
        return cls.build(*(np.empty(0, np.int64) for _ in range(4)), whole_days=False)

    def merge(self, other: GapTable) -> GapTable:
        order = np.argsort(np.concatenate([self.after_row, other.after_row]), kind="stable")
        return GapTable(*(np.concatenate([a, b])[order] for a, b in zip(self, other, strict=True)))

    def to_gaps(self) -> list[Gap]:
        cols = [x.tolist() for x in self]
        return [
            Gap(i, s, e, n, "day" if d else "bar") for i, s, e, n, d in zip(*cols, strict=True)
        ]


def _daily_gaps(ts: np.ndarray, calendar: str, offset: int, whole_days: bool) -> GapTable:
    """Gaps between consecutive bars counted in daily-bar opens (busday arithmetic)."""
    days = (ts - offset) // DAY_NS
    cal = _calendar_for_days(calendar, days)
    a = (days[:-1] + 1).astype("datetime64[D]")
    b = days[1:].astype("datetime64[D]")
    b = np.maximum(a, b)  # duplicates / same-day pairs: empty range
    missing = np.busday_count(a, b, busdaycal=cal)
    idx = np.flatnonzero(missing > 0)
    first = np.busday_offset(a[idx], 0, roll="forward", busdaycal=cal)
    last = np.busday_offset(b[idx], -1, roll="forward", busdaycal=cal)
    start = first.astype(np.int64) * DAY_NS + offset
    end = last.astype(np.int64) * DAY_NS + offset
    return GapTable.build(idx, start, end, missing[idx], whole_days)


def _slot_gaps(ts: np.ndarray, rows: np.ndarray, ref: int, tf: int, n_open: int) -> GapTable:
    """Gaps between pairs (ts[rows], ts[rows + 1]) on a weekly-periodic bar schedule."""
    a, b = ts[rows], ts[rows + 1]
    ca = _slot_count(a, ref, tf, n_open)
    cb = _slot_count(b - 1, ref, tf, n_open)
    missing = cb - ca
    sel = missing > 0
    start = _slot_time(ca[sel], ref, tf, n_open)
    end = _slot_time(cb[sel] - 1, ref, tf, n_open)
    return GapTable.build(rows[sel], start, end, missing[sel], whole_days=False)


def _session_days_ny(ts: np.ndarray) -> np.ndarray:
    """New York local date (days since the epoch) of each UTC time: one NYSE session per date,
    so extended hours running past UTC midnight stay in their session."""
    import pandas as pd  # only for New York session days: the live executor loads no pandas

    local = pd.DatetimeIndex(ts.view("datetime64[ns]")).tz_localize("UTC")
    local = local.tz_convert("America/New_York").tz_localize(None).as_unit("ns")
    return local.asi8 // DAY_NS


def find_gap_table(ts_ns: np.ndarray, timeframe: str, calendar: str) -> GapTable:
    """``find_gaps`` in columnar form, for callers that may meet very many gaps."""
    _check_calendar(calendar)
    tf = timeframe_ns(timeframe)
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.ndim != 1:
        raise ValueError("ts_ns must be one-dimensional")
    if ts.size < 2:
        return GapTable.empty()
    if np.any(ts[1:] < ts[:-1]):
        raise ValueError("ts_ns must be sorted ascending")
    offset = day_start_offset_ns(calendar)
    if tf >= DAY_NS:
        return _daily_gaps(ts, calendar, offset, whole_days=False)
    phase = offset % tf
    pairs = np.arange(ts.size - 1)
    if calendar == "fx":
        return _slot_gaps(ts, pairs, _FX_WEEK_OPEN_NS, tf, _FX_WEEK_OPEN_LEN_NS // tf)
    if calendar == "always":
        return _slot_gaps(ts, pairs, phase, tf, WEEK_NS // tf)
    days = _session_days_ny(ts) if calendar == "nyse" else ts // DAY_NS
    same_day = days[1:] == days[:-1]
    inside = _slot_gaps(ts, pairs[same_day], phase, tf, WEEK_NS // tf)
    return inside.merge(_daily_gaps(days * DAY_NS, calendar, 0, whole_days=True))


def find_gaps(ts_ns: np.ndarray, timeframe: str, calendar: str) -> list[Gap]:
    """Missing bars between consecutive bars of a sorted series of bar open times (int64 ns).

    ``1d``: expected bars are the calendar's daily bar opens. Intraday ``fx``/``always``: every
    multiple of the timeframe (phase-aligned on the day start) while the market is open.
    Intraday ``nyse``/``business`` (session hours unknown to the calendar): holes inside one
    trading day in bars, and whole missing trading days between days (``unit='day'``).
    Vectorised: Python only touches the gaps found.
    """
    return find_gap_table(ts_ns, timeframe, calendar).to_gaps()
