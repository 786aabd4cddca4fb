"""Ingest: CSV round trips, refusal with line numbers, quarantine, merging, ticks to bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_bars, write_bar_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from market.bars import resample_bars, ticks_to_bars
from market.config import QualityConfig, preset_meta
from market.ingest import IngestError, ingest_bars, ingest_ticks, merge_frames
from market.loader import load_bars
from market.readers import (
    SourceError,
    SourceRows,
    parse_mapping,
    read_bar_csv,
    read_metatrader_csv,
    read_tick_csv,
)

EQ = preset_meta("equity").model_copy(update={"calendar": "business"})
QUIET = QualityConfig(severity={"gap": "off", "absurd_return": "off"})


def test_csv_round_trip_through_store_and_load_bars(store, tmp_path, quality):
    frame = make_daily_bars(250)
    path = tmp_path / "bars.csv"
    write_bar_csv(path, frame)
    rows = read_bar_csv(path)
    result = ingest_bars(store, "ABC", "1d", rows, EQ, quality, source=str(path))
    assert result.written["1d"].added == 250
    bars = load_bars("ABC", "1d", store=store)
    assert bars.close.shape == (1, 250) and bars.close.flags.c_contiguous
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(getattr(bars, col)[0], frame[col].to_numpy(), rtol=1e-12)
    assert (bars.ts == pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8).all()
    assert store.meta("ABC") == EQ


def test_column_mapping_date_plus_time_and_timezone(store, tmp_path, quality):
    path = tmp_path / "mapped.csv"
    path.write_text("D,T,O,H,L,Last,Vol\n"
                    "2024-03-01,09:30,10,11,9,10.5,100\n"
                    "2024-03-01,09:31,10.5,11,10,10.8,50\n")
    rows = read_bar_csv(path, parse_mapping("ts=D+T,open=O,high=H,low=L,close=Last,volume=Vol"),
                        tz="America/New_York")
    assert list(rows.frame["ts"]) == [pd.Timestamp("2024-03-01 14:30", tz="UTC"),
                                      pd.Timestamp("2024-03-01 14:31", tz="UTC")]
    with pytest.raises(SourceError, match=r"no column for \['ts'\]"):
        read_bar_csv(path)
    with pytest.raises(SourceError, match="unknown field"):
        read_bar_csv(path, {"price": "Last"})


def test_bad_file_is_refused_with_line_numbers_and_store_unchanged(store, tmp_path, quality):
    frame = make_daily_bars(40)
    path = tmp_path / "bad.csv"
    write_bar_csv(path, frame)
    text = path.read_text().splitlines()
    cells = text[10].split(",")  # data row 9 -> file line 11
    cells[2] = str(float(cells[4]) - 5)  # high below close
    text[10] = ",".join(cells)
    text[20] = text[20].split(",", 1)[0] + ",oops,1,1,1,1"  # line 21: not a number
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(IngestError) as err:
        ingest_bars(store, "ABC", "1d", read_bar_csv(path), EQ, quality, source=str(path))
    msg = str(err.value)
    assert "line 11" in msg and "ohlc_inconsistent" in msg
    assert "line 21" in msg and "not a number 'oops'" in msg
    assert "--quarantine" in msg
    assert not store.has("ABC", "1d")


def test_quarantine_keeps_good_rows_and_writes_bad_ones(store, tmp_path, quality):
    frame = make_daily_bars(40)
    frame.loc[5, "close"] = -1.0          # line 7: non_positive (and OHLC)
    frame.loc[12, "ts"] = frame.loc[11, "ts"]  # line 14: duplicate of line 13
    path = tmp_path / "bad.csv"
    write_bar_csv(path, frame)
    qpath = tmp_path / "q" / "bad.quarantine.csv"
    result = ingest_bars(store, "ABC", "1d", read_bar_csv(path), EQ, quality,
                         source=str(path), source_path=path, quarantine=qpath)
    assert result.quarantined == 2
    q = pd.read_csv(qpath)
    assert list(q["line"]) == [7, 14]
    assert "non_positive" in q["problems"][0] and "duplicate_ts" in q["problems"][1]
    assert q["raw"][1] == path.read_text().splitlines()[13]
    stored = store.read_frame("ABC", "1d")
    assert len(stored) == 38 and (stored["close"] > 0).all() and stored["ts"].is_unique


def test_overlapping_ingests_merge_without_duplicates(store, quality):
    full = make_daily_bars(100)
    first, second = full.iloc[:60].copy(), full.iloc[40:].copy()
    second.loc[45, "close"] *= 1.001  # a revised bar inside the overlap
    second.loc[45, "high"] = max(second.loc[45, "high"], second.loc[45, "close"])
    ingest_bars(store, "ABC", "1d", SourceRows(first, np.arange(60)), EQ, quality)
    res = ingest_bars(store, "ABC", "1d", SourceRows(second, np.arange(60)), EQ, quality)
    assert res.written["1d"] == type(res.written["1d"])(added=40, replaced=1, total=100)
    stored = store.read_frame("ABC", "1d")
    assert stored["ts"].is_unique and stored["ts"].is_monotonic_increasing
    assert stored.loc[45, "close"] == second.loc[45, "close"]
    again = ingest_bars(store, "ABC", "1d", SourceRows(second, np.arange(60)), EQ, quality)
    assert again.written["1d"].added == 0 and again.written["1d"].replaced == 0


@settings(max_examples=25, deadline=None)
@given(a=st.integers(0, 80), b=st.integers(0, 80), c=st.integers(0, 80), d=st.integers(0, 80))
def test_merge_is_the_union_of_ranges(a, b, c, d):
    full = make_daily_bars(81)
    x, y = full.iloc[min(a, b):max(a, b) + 1], full.iloc[min(c, d):max(c, d) + 1]
    merged, stats = merge_frames(x, y, "t")
    expected = np.union1d(x["ts"].to_numpy(), y["ts"].to_numpy())
    assert (merged["ts"].to_numpy() == expected).all()
    assert stats.total == len(expected) and stats.replaced == 0


def _ticks(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-08 00:00", tz="UTC").value
    ts = start + np.cumsum(rng.integers(1, 30_000_000_000, n))
    mid = 1.1 + np.cumsum(rng.normal(0, 1e-4, n))
    half = rng.uniform(1e-5, 5e-5, n)
    return pd.DataFrame({"ts": pd.to_datetime(ts, utc=True), "bid": mid - half, "ask": mid + half})


def _pandas_bars(ticks: pd.DataFrame, rule: str, offset: str | None) -> pd.DataFrame:
    s = ticks.set_index("ts")
    mid = (s["bid"] + s["ask"]) / 2
    kw = {"offset": offset} if offset else {}
    grouped = mid.resample(rule, label="left", closed="left", origin="epoch", **kw)
    out = pd.DataFrame({"open": grouped.first(), "high": grouped.max(), "low": grouped.min(),
                        "close": grouped.last(), "volume": grouped.count().astype(float),
                        "spread": (s["ask"] - s["bid"]).resample(
                            rule, label="left", closed="left", origin="epoch", **kw).mean()})
    return out[out["volume"] > 0].reset_index()


@pytest.mark.parametrize("calendar", ["always", "fx"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_ticks_to_bars_matches_pandas_resample(calendar, seed):
    ticks = _ticks(3000, seed)
    offset = "22h" if calendar == "fx" else None
    bars_1m = ticks_to_bars(ticks, "1m", calendar)
    chained = bars_1m
    for tf, rule in (("1m", "1min"), ("5m", "5min"), ("15m", "15min"), ("1h", "1h"),
                     ("4h", "4h"), ("1d", "24h")):
        if tf != "1m":
            chained = resample_bars(chained, tf, calendar)
        expected = _pandas_bars(ticks, rule, offset if tf in ("4h", "1d") else None)
        direct = ticks_to_bars(ticks, tf, calendar)
        for got in (direct, chained):
            assert (pd.DatetimeIndex(got["ts"]) == pd.DatetimeIndex(expected["ts"])).all(), tf
            for col in ("open", "high", "low", "close", "volume", "spread"):
                np.testing.assert_allclose(got[col], expected[col], rtol=1e-12, err_msg=f"{tf} {col}")


def test_fx_daily_bars_start_at_the_22utc_roll(fx_meta):
    ticks = pd.DataFrame({"ts": pd.to_datetime(["2024-01-08 21:59", "2024-01-08 22:00"], utc=True),
                          "bid": [1.0, 1.1], "ask": [1.0002, 1.1002]})
    daily = ticks_to_bars(ticks, "1d", "fx")
    assert list(daily["ts"]) == [pd.Timestamp("2024-01-07 22:00", tz="UTC"),
                                 pd.Timestamp("2024-01-08 22:00", tz="UTC")]


def test_tick_csv_ingest_builds_every_timeframe(store, tmp_path, fx_meta):
    ticks = _ticks(5000, 3)
    path = tmp_path / "ticks.csv"
    out = ticks.copy()
    out["ts"] = pd.DatetimeIndex(out["ts"]).strftime("%Y-%m-%dT%H:%M:%S.%f")
    out.rename(columns={"ts": "time"}).to_csv(path, index=False)
    rows = read_tick_csv(path)
    res = ingest_ticks(store, "EURUSD", rows, fx_meta, QUIET, source=str(path))
    assert set(res.written) == {"1m", "5m", "15m", "1h", "4h", "1d"}
    for tf in res.written:
        stored = store.read_frame("EURUSD", tf)
        assert stored["volume"].sum() == 5000, tf


def test_reingesting_overlapping_ticks_rederives_higher_timeframes(store, fx_meta):
    ticks = _ticks(6000, 4)
    first, second = ticks.iloc[:3500], ticks.iloc[2500:]
    ingest_ticks(store, "EURUSD", SourceRows(first, np.arange(3500)), fx_meta, QUIET)
    ingest_ticks(store, "EURUSD", SourceRows(second, np.arange(3500)), fx_meta, QUIET)
    for tf in ("1m", "1h", "1d"):
        stored = store.read_frame("EURUSD", tf)
        direct = ticks_to_bars(ticks, tf, "fx")
        assert len(stored) == len(direct), tf
        # bars wholly inside one file, or rebuilt from the merged 1m bars, equal the direct build
        np.testing.assert_allclose(stored["close"], direct["close"], rtol=1e-12)


def test_crossed_ticks_are_refused(store, fx_meta, quality):
    ticks = _ticks(100, 5)
    ticks.loc[30, "ask"] = ticks.loc[30, "bid"] - 0.001
    with pytest.raises(IngestError, match="crossed_quote"):
        ingest_ticks(store, "EURUSD", SourceRows(ticks, np.arange(2, 102)), fx_meta, quality)
    assert not store.has("EURUSD", "1m")


def test_metatrader_exports(tmp_path):
    mt4 = tmp_path / "EURUSD1.csv"
    mt4.write_text("2024.01.08,00:00,1.09450,1.09470,1.09440,1.09460,120\n"
                   "2024.01.08,00:01,1.09460,1.09480,1.09455,1.09475,80\n")
    rows = read_metatrader_csv(mt4, tz="Etc/GMT-2")
    assert rows.frame["ts"].iloc[0] == pd.Timestamp("2024-01-07 22:00", tz="UTC")
    assert list(rows.lines) == [1, 2] and rows.frame["volume"].tolist() == [120.0, 80.0]
    mt5 = tmp_path / "EURUSD_M1.csv"
    mt5.write_text("<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\n"
                   "2024.01.08\t00:00:00\t1.09450\t1.09470\t1.09440\t1.09460\t120\t0\t7\n")
    rows = read_metatrader_csv(mt5, point=1e-5)
    assert rows.frame["spread"].iloc[0] == pytest.approx(7e-5)
    assert list(rows.lines) == [2]
