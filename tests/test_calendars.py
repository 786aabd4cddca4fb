"""Trading calendars and gap detection."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.calendars import (
    DAY_NS,
    HOUR_NS,
    WEEK_NS,
    Gap,
    daily_bar_starts,
    day_start_offset_ns,
    find_gap_table,
    find_gaps,
    nyse_holidays,
    trading_days,
)
from market.timeframes import TIMEFRAME_NS

MIN_NS = TIMEFRAME_NS["1m"]


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


def fx_week(start: str = "2024-01-07 22:00", timeframe: str = "1m") -> np.ndarray:
    """Every bar of one fx week (Sunday 22:00 to Friday 22:00)."""
    tf = TIMEFRAME_NS[timeframe]
    return ns(start) + np.arange(5 * DAY_NS // tf, dtype=np.int64) * tf


def test_day_start_offsets() -> None:
    assert day_start_offset_ns("fx") == 22 * HOUR_NS
    for cal in ("nyse", "business", "always"):
        assert day_start_offset_ns(cal) == 0
    with pytest.raises(ValueError, match="unknown calendar"):
        day_start_offset_ns("lse")


@pytest.mark.parametrize(
    "day",
    [
        "2008-11-27",  # Thanksgiving
        "2010-04-02",  # Good Friday
        "2004-06-11",  # Reagan
        "2012-10-29",  # Sandy
        "2012-10-30",
        "2016-12-26",  # Christmas on Sunday, observed Monday
        "2017-01-02",  # New Year on Sunday, observed Monday
        "2021-12-24",  # Christmas on Saturday, observed Friday
        "2015-07-03",  # Independence Day on Saturday, observed Friday
        "2022-06-20",  # first Juneteenth, on Sunday, observed Monday
        "1998-01-19",  # first NYSE MLK day
        "2001-09-11",
        "2001-09-14",
        "2007-01-02",
        "2018-12-05",
        "2025-01-09",
        "2024-05-27",  # Memorial Day
        "2024-09-02",  # Labor Day
        "2024-02-19",  # Washington's Birthday
    ],
)
def test_nyse_known_holidays(day: str) -> None:
    d = dt.date.fromisoformat(day)
    assert d in nyse_holidays(d.year, d.year)
    assert np.datetime64(d) not in trading_days("nyse", d - dt.timedelta(days=3), d + dt.timedelta(3))


@pytest.mark.parametrize(
    "day",
    [
        "2010-12-31",  # New Year 2011 falls on Saturday: Friday Dec 31 stays open
        "2021-06-18",  # Juneteenth only from 2022
        "1997-01-20",  # no MLK closure before 1998
        "2008-11-28",  # day after Thanksgiving (early close, still open)
        "2024-12-24",  # Christmas Eve (early close)
    ],
)
def test_nyse_open_days(day: str) -> None:
    d = dt.date.fromisoformat(day)
    assert d not in nyse_holidays(d.year - 1, d.year + 1)
    assert np.datetime64(d) in trading_days("nyse", d, d)


def test_nyse_holidays_are_weekdays_and_about_ten_a_year() -> None:
    hol = nyse_holidays(1999, 2030)
    assert all(d.weekday() < 5 for d in hol)
    per_year = {y: sum(d.year == y for d in hol) for y in range(1999, 2031)}
    assert all(8 <= n <= 14 for n in per_year.values()), per_year


def test_trading_days_fx_and_business() -> None:
    got = trading_days("fx", "2024-01-05", "2024-01-09")
    assert got.astype(str).tolist() == ["2024-01-05", "2024-01-08", "2024-01-09"]
    assert trading_days("business", "2024-12-24", "2024-12-26").size == 3
    assert trading_days("always", "2024-12-24", "2024-12-31").size == 8


def test_daily_bar_starts_fx_open_sunday_to_thursday_22h() -> None:
    starts = daily_bar_starts("fx", ns("2024-01-07"), ns("2024-01-14 23:00"))
    labels = [str(pd.Timestamp(x)) for x in starts]
    assert labels == [f"2024-01-{d:02d} 22:00:00" for d in (7, 8, 9, 10, 11, 14)]


def test_sp500_dates_have_no_gaps_under_nyse() -> None:
    sp500 = pytest.importorskip("arch.data.sp500")
    dates = pd.DatetimeIndex(sp500.load().index).as_unit("ns").tz_localize("UTC")
    assert find_gaps(dates.asi8, "1d", "nyse") == []
    # and no data on a day the calendar calls closed
    days = dates.tz_localize(None).values.astype("datetime64[D]")
    assert np.array_equal(trading_days("nyse", days[0], days[-1]), days)


def test_nyse_daily_missing_day_reported() -> None:
    days = trading_days("nyse", "2008-11-20", "2008-12-05")
    ts = days.astype("datetime64[ns]").astype(np.int64)
    assert find_gaps(ts, "1d", "nyse") == []  # Thanksgiving is not a gap
    drop = int(np.flatnonzero(days == np.datetime64("2008-11-26"))[0])
    got = find_gaps(np.delete(ts, [drop, drop + 1]), "1d", "nyse")  # Wed 26 and Fri 28
    assert got == [Gap(drop - 1, ns("2008-11-26"), ns("2008-11-28"), 2)]


def test_fx_daily_and_4h_complete_weeks() -> None:
    daily = daily_bar_starts("fx", ns("2024-01-01"), ns("2024-03-01"))
    assert find_gaps(daily, "1d", "fx") == []
    h4 = np.concatenate([fx_week(timeframe="4h"), fx_week(timeframe="4h") + WEEK_NS])
    assert pd.Timestamp(h4[1]).hour == 2  # 4h bars are phased on the 22:00 day start
    assert find_gaps(h4, "4h", "fx") == []
    # Friday 18:00 (last of the week) and Sunday 22:00 (first of the next) missing
    got = find_gaps(np.delete(h4, [29, 30]), "4h", "fx")
    assert got == [Gap(28, int(h4[29]), int(h4[30]), 2)]


def test_fx_weekend_is_not_a_gap_but_missing_monday_is() -> None:
    week = fx_week(timeframe="1h")
    two = np.concatenate([week, week + WEEK_NS])
    assert find_gaps(two, "1h", "fx") == []
    cut = np.concatenate([week, week[24:] + WEEK_NS])  # next week's first 24 hours missing
    (g,) = find_gaps(cut, "1h", "fx")
    assert (g.after_row, g.missing) == (week.size - 1, 24)
    assert g.start_ns == week[0] + WEEK_NS and g.end_ns == week[23] + WEEK_NS


def test_always_counts_weekends() -> None:
    ts = ns("2024-01-05") + np.arange(0, 100, dtype=np.int64) * HOUR_NS
    assert find_gaps(ts, "1h", "always") == []
    (g,) = find_gaps(np.delete(ts, np.arange(30, 60)), "1h", "always")
    assert (g.after_row, g.missing, g.start_ns, g.end_ns) == (29, 30, ts[30], ts[59])
    daily = ns("2024-01-01") + np.array([0, 1, 5], dtype=np.int64) * DAY_NS
    assert find_gaps(daily, "1d", "always") == [Gap(1, ns("2024-01-03"), ns("2024-01-05"), 3)]


def nyse_session(day: str, tf: str = "5m") -> np.ndarray:
    """Regular-hours bars of one session in UTC (09:30-16:00 New York)."""
    start = pd.Timestamp(f"{day} 09:30", tz="America/New_York").tz_convert("UTC").value
    step = TIMEFRAME_NS[tf]
    return start + np.arange(390 * MIN_NS // step, dtype=np.int64) * step


def test_nyse_intraday_within_day_and_missing_days() -> None:
    days = ["2024-11-26", "2024-11-27", "2024-11-29", "2024-12-02"]  # Thanksgiving, weekend
    sessions = [nyse_session(d) for d in days]
    ts = np.concatenate(sessions)
    assert find_gaps(ts, "5m", "nyse") == []
    holed = np.delete(ts, [10, 11, 12])
    assert find_gaps(holed, "5m", "nyse") == [Gap(9, int(ts[10]), int(ts[12]), 3)]
    skip = np.concatenate([sessions[0], sessions[3]])  # 27th and 29th missing
    assert find_gaps(skip, "5m", "nyse") == [
        Gap(sessions[0].size - 1, ns("2024-11-27"), ns("2024-11-29"), 2, "day")
    ]
    both = find_gap_table(np.delete(skip, [3]), "5m", "nyse")  # and a hole inside a day
    assert both.after_row.tolist() == [2, sessions[0].size - 2]
    assert both.whole_days.tolist() == [False, True] and both.missing.tolist() == [1, 2]


def test_nyse_extended_hours_past_utc_midnight_stay_in_session() -> None:
    # 04:00-20:00 New York in summer is 08:00-00:00 UTC: the last hour bar opens at 23:00 UTC
    def ext(day: str) -> np.ndarray:
        start = pd.Timestamp(f"{day} 04:00", tz="America/New_York").tz_convert("UTC").value
        return start + np.arange(16, dtype=np.int64) * HOUR_NS

    ts = np.concatenate([ext("2024-07-08"), ext("2024-07-09")])
    assert find_gaps(ts, "1h", "nyse") == []


def test_business_intraday_uses_utc_dates() -> None:
    day = ns("2024-01-05 08:00") + np.arange(8, dtype=np.int64) * HOUR_NS  # a Friday
    ts = np.concatenate([day, day + 3 * DAY_NS, day + 5 * DAY_NS])  # Mon, then Wed
    assert find_gaps(ts, "1h", "business") == [
        Gap(15, ns("2024-01-09"), ns("2024-01-09"), 1, "day")
    ]


def test_find_gaps_input_checks() -> None:
    assert find_gaps(np.array([], dtype=np.int64), "1m", "fx") == []
    assert find_gaps(np.array([5], dtype=np.int64), "1m", "fx") == []
    with pytest.raises(ValueError, match="sorted"):
        find_gaps(np.array([2, 1], dtype=np.int64) * MIN_NS, "1m", "fx")
    with pytest.raises(ValueError, match="timeframe"):
        find_gaps(np.array([1, 2], dtype=np.int64), "3m", "fx")
    with pytest.raises(ValueError, match="calendar"):
        find_gaps(np.array([1, 2], dtype=np.int64), "1m", "lse")


def test_duplicates_are_not_gaps() -> None:
    week = fx_week(timeframe="1h")
    ts = np.sort(np.concatenate([week, week[:5]]))
    assert find_gaps(ts, "1h", "fx") == []


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fx_1m_removed_bars_are_exactly_the_gaps(data: st.DataObject) -> None:
    week = fx_week()
    assert find_gaps(week, "1m", "fx") == []
    k = data.draw(st.integers(1, 300), label="k")
    # inner bars only: a missing first/last bar is not *between* two bars
    drop = data.draw(
        st.lists(st.integers(1, week.size - 2), min_size=k, max_size=k, unique=True), label="drop"
    )
    kept = np.delete(week, drop)
    gaps = find_gaps(kept, "1m", "fx")
    assert sum(g.missing for g in gaps) == k
    rebuilt = np.concatenate([np.arange(g.start_ns, g.end_ns + 1, MIN_NS) for g in gaps])
    assert np.array_equal(rebuilt, np.sort(week[drop]))
    for g in gaps:
        assert kept[g.after_row] == g.start_ns - MIN_NS
        assert kept[g.after_row + 1] == g.end_ns + MIN_NS


def test_fx_many_bars_is_fast_enough() -> None:
    # two million minutes (about 4 years of fx trading) with a few holes
    weeks = 2_000_000 // 7200 + 1
    ts = (fx_week()[None, :] + (np.arange(weeks, dtype=np.int64) * WEEK_NS)[:, None]).ravel()
    holes = np.arange(1000, ts.size - 1, 100_000)
    gaps = find_gaps(np.delete(ts, holes), "1m", "fx")
    assert len(gaps) == holes.size
    assert all(g.missing == 1 for g in gaps)
