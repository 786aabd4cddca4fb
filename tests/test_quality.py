"""Data-quality rules: each one fires on a crafted bad row, with the right row and line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.config import QUALITY_RULES, QualityConfig
from market.quality import Issue, QualityReport, check_bars, check_ticks

N = 200
HEADER = 1  # a CSV with one header line: row r sits on line r + 2


def lines_for(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) + HEADER + 1


def clean_bars(n: int = N, start: str = "2024-01-08 00:00", freq: str = "1h") -> pd.DataFrame:
    """Consistent fx hourly bars inside one trading week, never a zero volume."""
    rng = np.random.default_rng(7)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.r_[1.1, close[:-1]]
    wick = np.abs(rng.normal(0, 5e-4, n))
    return pd.DataFrame({
        "ts": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
        "open": open_,
        "high": np.maximum(open_, close) + wick,
        "low": np.minimum(open_, close) - wick,
        "close": close,
        "volume": rng.integers(1, 100, n).astype(float),
        "spread": np.full(n, 1e-4),
    })


def config(**settings: object) -> QualityConfig:
    """QualityConfig where ``rule="severity"`` keywords become severity overrides (an int
    ``zero_volume_run`` stays the run length setting)."""
    severity = {
        k: settings.pop(k) for k, v in list(settings.items()) if k in QUALITY_RULES and isinstance(v, str)
    }
    return QualityConfig(**settings, severity=severity)


def run(frame: pd.DataFrame, timeframe: str = "1h", calendar: str = "fx",
        **settings: object) -> QualityReport:
    return check_bars(frame, timeframe, calendar, config(**settings), lines_for(len(frame)))


def only(report: QualityReport, rule: str) -> list[Issue]:
    assert set(report.counts()) == {rule}, report.format()
    return [i for i in report.issues if i.rule == rule]


def test_clean_bars_have_no_issues() -> None:
    report = run(clean_bars())
    assert report.issues == [] and report.counts() == {}
    assert report.ok and report.error_rows().size == 0
    assert "no issues" in report.format()


def test_clean_across_fx_weekend() -> None:
    frame = clean_bars(n=120, start="2024-01-11 00:00")
    frame = frame[frame.ts.dt.day_of_week.isin([0, 1, 2, 3, 4, 6])]  # drop Saturdays
    frame = frame[~((frame.ts.dt.day_of_week == 4) & (frame.ts.dt.hour >= 22))]
    frame = frame[~((frame.ts.dt.day_of_week == 6) & (frame.ts.dt.hour < 22))].reset_index(drop=True)
    assert run(frame).counts() == {}


def test_duplicate_ts_reports_later_row_and_names_first() -> None:
    frame = clean_bars()
    frame.loc[50, "ts"] = frame.loc[40, "ts"]
    frame.loc[60, "ts"] = frame.loc[40, "ts"]
    report = run(frame, gap="off", non_monotonic="off")
    issues = only(report, "duplicate_ts")
    assert [(i.row, i.line) for i in issues] == [(50, 52), (60, 62)]
    assert all("row 40, line 42" in i.detail for i in issues)
    assert issues[0].ts == "2024-01-09T16:00:00Z" and issues[0].severity == "error"
    assert report.error_rows().tolist() == [50, 60] and not report.ok


def test_non_monotonic() -> None:
    frame = clean_bars()
    frame.loc[[30, 31], "ts"] = frame.loc[[31, 30], "ts"].to_numpy()
    (issue,) = only(run(frame), "non_monotonic")
    assert (issue.row, issue.line) == (31, 33)
    assert "row 30, line 32" in issue.detail


def test_gap_reported_on_row_before() -> None:
    frame = clean_bars().drop(index=[100, 101, 102]).reset_index(drop=True)
    report = run(frame)
    (issue,) = only(report, "gap")
    assert (issue.row, issue.line, issue.severity) == (99, 101, "warning")
    assert "3 missing 1h bar(s) from 2024-01-12T04:00:00Z to 2024-01-12T06:00:00Z" in issue.detail
    assert report.ok  # a warning does not fail the report


def test_gap_row_maps_through_unsorted_and_duplicated_frames() -> None:
    bars = clean_bars(n=10)
    frame = pd.concat([bars.iloc[[4]], bars.drop(index=[5]).iloc[::-1]]).reset_index(drop=True)
    report = run(frame, non_monotonic="off", duplicate_ts="off")
    (issue,) = only(report, "gap")
    assert issue.row == 0  # the first of the two 04:00 rows
    assert frame.ts[issue.row] == pd.Timestamp("2024-01-08 04:00", tz="UTC")


def test_ohlc_inconsistent() -> None:
    frame = clean_bars()
    frame.loc[10, "high"] = frame.loc[10, ["open", "close"]].max() - 1e-3
    frame.loc[20, "low"] = frame.loc[20, ["open", "close"]].min() + 1e-3
    issues = only(run(frame), "ohlc_inconsistent")
    assert [(i.row, i.line) for i in issues] == [(10, 12), (20, 22)]
    assert "high<max(open,close)" in issues[0].detail
    assert "low>min(open,close)" in issues[1].detail


def test_non_positive_prices_volume_spread() -> None:
    frame = clean_bars()
    frame.loc[5, ["open", "low"]] = [0.0, -1.0]
    frame.loc[6, "volume"] = -3.0
    frame.loc[7, "spread"] = -1e-5
    report = run(frame, ohlc_inconsistent="off", absurd_return="off")
    issues = only(report, "non_positive")
    assert [(i.row, i.line) for i in issues] == [(5, 7), (6, 8), (7, 9)]
    assert issues[0].detail.endswith("open, low")
    assert issues[1].detail.endswith("volume") and issues[2].detail.endswith("spread")


def test_zero_volume_and_spread_are_fine() -> None:
    frame = clean_bars()
    frame.loc[3, ["volume", "spread"]] = 0.0
    assert run(frame).counts() == {}


def test_non_finite_in_any_numeric_column() -> None:
    frame = clean_bars()
    frame.loc[12, "close"] = np.nan
    frame.loc[13, "volume"] = np.inf
    frame.loc[14, "spread"] = -np.inf
    report = run(frame, ohlc_inconsistent="off", non_positive="off")
    issues = only(report, "non_finite")
    assert [(i.row, i.line) for i in issues] == [(12, 14), (13, 15), (14, 16)]
    assert [i.detail.split(": ")[1] for i in issues] == ["close", "volume", "spread"]


def test_nat_timestamp_is_non_finite_and_skipped_by_time_rules() -> None:
    frame = clean_bars()
    frame["ts"] = frame["ts"].astype("datetime64[ns, UTC]")
    frame.loc[50, "ts"] = pd.NaT
    report = run(frame, gap="off")
    (issue,) = only(report, "non_finite")
    assert (issue.row, issue.ts, issue.detail) == (50, None, "not finite: ts")


def test_absurd_return_between_valid_closes() -> None:
    frame = clean_bars()
    frame.loc[80:, ["open", "high", "low", "close"]] *= 1.5  # a 40% jump at row 80
    frame.loc[80, "open"] = frame.loc[79, "close"]
    frame.loc[80, "low"] = frame.loc[80, "open"]
    (issue,) = only(run(frame), "absurd_return")
    assert (issue.row, issue.line, issue.severity) == (80, 82, "warning")
    assert "+0.40" in issue.detail and "row 79, line 81" in issue.detail
    assert run(frame, max_abs_log_return=0.5).counts() == {}


def test_absurd_return_skips_missing_close() -> None:
    frame = clean_bars()
    frame.loc[100, "close"] = np.nan
    report = run(frame, non_finite="off", ohlc_inconsistent="off")
    assert report.counts() == {}


def test_zero_volume_run_one_issue_per_run() -> None:
    frame = clean_bars()
    frame.loc[20:24, "volume"] = 0.0  # 5 bars: a run
    frame.loc[40:43, "volume"] = 0.0  # 4 bars: too short
    frame.loc[150:159, "volume"] = 0.0  # 10 bars
    report = run(frame)
    issues = only(report, "zero_volume_run")
    assert [(i.row, i.line) for i in issues] == [(20, 22), (150, 152)]
    assert issues[0].detail.startswith("5 consecutive") and "until 2024-01-09T00:00:00Z (row 24, line 26)" in issues[0].detail
    assert issues[1].detail.startswith("10 consecutive")
    assert [i.row for i in only(run(frame, zero_volume_run=4), "zero_volume_run")] == [20, 40, 150]


def spoiled(rule: str) -> pd.DataFrame:
    """Clean bars with row 9 broken so that ``rule`` fires."""
    f = clean_bars()
    if rule == "duplicate_ts":
        f.loc[9, "ts"] = f.loc[8, "ts"]
    elif rule == "non_monotonic":
        f.loc[9, "ts"] = f.loc[0, "ts"] - pd.Timedelta("1h")
    elif rule == "gap":
        f = f.drop(index=[9]).reset_index(drop=True)
    elif rule == "ohlc_inconsistent":
        f.loc[9, "high"] = 0.5
    elif rule == "non_finite":
        f.loc[9, "volume"] = np.nan
    elif rule == "non_positive":
        f.loc[9, "volume"] = -1.0
    elif rule == "absurd_return":
        f.loc[9, ["open", "high", "low", "close"]] = 9.0
    elif rule == "zero_volume_run":
        f.loc[:9, "volume"] = 0.0
    return f


@pytest.mark.parametrize("rule", [r for r in QUALITY_RULES if r != "crossed_quote"])
def test_severity_off_disables_rule(rule: str) -> None:
    frame = spoiled(rule)
    assert rule in run(frame).counts()
    assert rule not in run(frame, **{rule: "off"}).counts()


def test_severity_override_changes_ok_and_error_rows() -> None:
    frame = clean_bars().drop(index=[100]).reset_index(drop=True)
    report = run(frame, gap="error")
    assert not report.ok and report.error_rows().tolist() == [99]
    assert report.errors()[0].rule == "gap" and report.warnings() == []


def test_cap_keeps_true_counts_and_all_error_rows() -> None:
    frame = clean_bars(n=5000)
    frame.loc[::2, "high"] = 0.5  # 2500 inconsistent rows
    report = check_bars(frame, "1h", "always", QualityConfig(), max_issues=100)
    assert report.counts()["ohlc_inconsistent"] == 2500
    assert sum(i.rule == "ohlc_inconsistent" for i in report.issues) == 100
    assert report.error_rows().tolist() == list(range(0, 5000, 2))
    assert report.truncated


def test_without_line_numbers() -> None:
    frame = clean_bars()
    frame.loc[3, "low"] = -1.0
    report = check_bars(frame, "1h", "fx", QualityConfig())
    assert {i.line for i in report.issues} == {None}
    assert "row 3 " in report.format()


def test_format_and_to_dict() -> None:
    frame = clean_bars()
    frame.loc[7, "close"] = -1.0
    frame.loc[8, "ts"] = frame.loc[7, "ts"]
    frame = frame.drop(index=[50]).reset_index(drop=True)
    report = run(frame)
    text = report.format(max_rows=2)
    assert text.startswith("quality FAILED")
    for rule in report.counts():
        assert rule in text
    assert "row 7 (line 9)" in text and "... and" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["n_rows"] == len(frame)
    assert data["counts"] == report.counts()
    assert data["issues"][0]["line"] == 9


def test_missing_columns_and_bad_line_numbers() -> None:
    frame = clean_bars()
    with pytest.raises(ValueError, match="close"):
        check_bars(frame.drop(columns=["close"]), "1h", "fx", QualityConfig())
    with pytest.raises(ValueError, match="line_numbers"):
        check_bars(frame, "1h", "fx", QualityConfig(), line_numbers=np.arange(3))


def test_empty_frame() -> None:
    report = run(clean_bars().iloc[:0])
    assert report.ok and report.n_rows == 0 and report.counts() == {}


def test_all_rules_known() -> None:
    report = QualityReport(0)
    assert report.ok and report.counts() == {}
    assert set(QualityConfig().severity) == set(QUALITY_RULES)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, N - 1), min_size=1, max_size=20, unique=True))
def test_any_bad_highs_are_exactly_the_error_rows(rows: list[int]) -> None:
    frame = clean_bars()
    frame.loc[rows, "high"] = frame.loc[rows, "low"] - 1e-4
    report = run(frame)
    assert report.error_rows().tolist() == sorted(rows)
    assert {i.line for i in report.errors()} == {r + 2 for r in rows}


# ---- ticks ---------------------------------------------------------------------------------


def clean_ticks(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    bid = 1.1 + np.cumsum(rng.normal(0, 1e-5, n))
    step = rng.integers(0, 3, n).cumsum() * 1_000_000  # equal timestamps happen
    return pd.DataFrame({
        "ts": pd.to_datetime(pd.Timestamp("2024-01-08", tz="UTC").value + step, utc=True),
        "bid": bid,
        "ask": bid + 1e-4,
        "volume": rng.integers(1, 5, n).astype(float),
    })


def run_ticks(frame: pd.DataFrame, **settings: object) -> QualityReport:
    return check_ticks(frame, config(**settings), lines_for(len(frame)))


def test_clean_ticks_with_equal_timestamps() -> None:
    frame = clean_ticks()
    assert frame.ts.duplicated().any()
    assert run_ticks(frame).counts() == {}


def test_tick_rules() -> None:
    frame = clean_ticks()
    frame.loc[10, "ask"] = frame.loc[10, "bid"] - 1e-4
    frame.loc[20, "bid"] = 0.0
    frame.loc[30, "ask"] = np.nan
    frame.loc[40, "ts"] = frame.loc[0, "ts"] - pd.Timedelta("1ms")
    frame.loc[50, "volume"] = -1.0
    report = run_ticks(frame)
    got = {(i.rule, i.row, i.line) for i in report.issues}
    assert got == {
        ("crossed_quote", 10, 12),
        ("non_positive", 20, 22),
        ("non_finite", 30, 32),
        ("non_monotonic", 40, 42),
        ("non_positive", 50, 52),
    }
    assert report.error_rows().tolist() == [10, 20, 30, 40, 50]
    # a one-tick rewind flags the rewound tick only, not the ones after it
    assert report.counts()["non_monotonic"] == 1
    assert "crossed_quote" not in run_ticks(frame, crossed_quote="off").counts()
