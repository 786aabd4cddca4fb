"""Data-quality rules for bar and tick frames, so bad rows are found before they poison a backtest.

Every rule is a vectorised numpy pass over the whole frame. A report keeps the true count of
each rule and every error row (what ingest refuses or quarantines), but stores at most
``max_issues`` readable ``Issue`` records per rule, so a broken 10M-row file stays cheap.
Row numbers are 0-based positions in the frame; ``line`` is the source file line when the
caller passes ``line_numbers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from market.calendars import day_start_offset_ns, find_gap_table
from market.config import QUALITY_RULES, QualityConfig
from market.timeframes import TIMEFRAME_NS

MAX_ISSUES_PER_RULE = 10_000
BAR_PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
_NAT = np.iinfo(np.int64).min
_ISO_UNITS = (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000))


@dataclass(frozen=True)
class Issue:
    """One rule violation on one row."""

    rule: str
    severity: str  # 'error' | 'warning'
    row: int  # 0-based position in the frame
    line: int | None  # source file line number, if known
    ts: str | None  # ISO-8601 UTC time of the row
    detail: str


@dataclass
class QualityReport:
    """Outcome of a quality check.

    ``issues`` may be truncated per rule; ``totals`` holds the true number of issues per rule and
    ``error_row_positions`` every row with an error-severity issue, so ``error_rows()`` and
    ``counts()`` stay exact whatever the cap.
    """

    n_rows: int
    issues: list[Issue] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    severities: dict[str, str] = field(default_factory=dict)
    error_row_positions: np.ndarray | None = field(default=None, compare=False)

    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def error_rows(self) -> np.ndarray:
        """Sorted unique positions of rows with at least one error-severity issue."""
        if self.error_row_positions is not None:
            return self.error_row_positions
        return np.unique(np.array([i.row for i in self.errors()], dtype=np.int64))

    def counts(self) -> dict[str, int]:
        """Rule -> number of issues found (not capped)."""
        if self.totals:
            return dict(self.totals)
        out: dict[str, int] = {}
        for i in self.issues:
            out[i.rule] = out.get(i.rule, 0) + 1
        return out

    def severity_of(self, rule: str) -> str:
        if rule in self.severities:
            return self.severities[rule]
        return next(i.severity for i in self.issues if i.rule == rule)

    @property
    def truncated(self) -> bool:
        return sum(self.counts().values()) > len(self.issues)

    @property
    def ok(self) -> bool:
        """True when no rule at error severity fired."""
        return not any(self.severity_of(r) == "error" for r, n in self.counts().items() if n)

    def format(self, max_rows: int = 10) -> str:
        """Human report: per-rule counts and severities, then the first offending rows."""
        counts = self.counts()
        n_err = int(self.error_rows().size)
        status = "OK" if self.ok else "FAILED"
        lines = [f"quality {status}: {self.n_rows} rows, {n_err} with errors"]
        if not counts:
            return lines[0] + ", no issues"
        for rule in sorted(counts, key=_rule_order):
            lines.append(f"  {rule:<18} {self.severity_of(rule):<8} {counts[rule]}")
        shown = sorted(self.issues, key=lambda i: (i.row, _rule_order(i.rule)))[:max_rows]
        lines.append(f"first {len(shown)} offending rows:")
        for i in shown:
            where = f"row {i.row}" + (f" (line {i.line})" if i.line is not None else "")
            lines.append(f"  {where} {i.ts or '-'} {i.rule} [{i.severity}]: {i.detail}")
        more = sum(counts.values()) - len(shown)
        if more > 0:
            lines.append(f"  ... and {more} more issue(s)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary with the stored issues."""
        return {
            "n_rows": self.n_rows,
            "ok": self.ok,
            "counts": self.counts(),
            "severities": {r: self.severity_of(r) for r in self.counts()},
            "n_error_rows": int(self.error_rows().size),
            "truncated": self.truncated,
            "issues": [asdict(i) for i in self.issues],
        }


def _rule_order(rule: str) -> int:
    return QUALITY_RULES.index(rule) if rule in QUALITY_RULES else len(QUALITY_RULES)


def _ts_ns(frame: pd.DataFrame) -> np.ndarray:
    """``ts`` as int64 UTC nanoseconds (NaT -> int64 min); naive times are taken as UTC."""
    if "ts" not in frame.columns:
        raise ValueError("frame has no 'ts' column")
    idx = pd.DatetimeIndex(frame["ts"])
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.as_unit("ns").asi8.copy()


def _iso(ts_ns: np.ndarray) -> list[str | None]:
    """ISO-8601 UTC strings ('...Z'), to the second or finer where needed; None for NaT."""
    real = ts_ns[ts_ns != _NAT]
    unit = next((u for u, q in _ISO_UNITS if not np.any(real % q)), "ns")
    s = np.datetime_as_string(ts_ns.view("datetime64[ns]"), unit=unit, timezone="UTC")
    out: list[str | None] = s.tolist()
    if real.size < ts_ns.size:
        out = [None if v == _NAT else x for v, x in zip(ts_ns.tolist(), out, strict=True)]
    return out


def _floats(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in columns}


class _Collector:
    """Builds a report: applies severities, caps stored issues, keeps exact totals."""

    def __init__(self, n: int, ts: np.ndarray, quality: QualityConfig,
                 line_numbers: np.ndarray | None, cap: int) -> None:
        if line_numbers is not None:
            line_numbers = np.asarray(line_numbers, dtype=np.int64)
            if line_numbers.shape != (n,):
                raise ValueError(f"line_numbers has shape {line_numbers.shape}, expected ({n},)")
        self.n, self.ts, self.quality, self.lines, self.cap = n, ts, quality, line_numbers, cap
        self.issues: list[Issue] = []
        self.totals: dict[str, int] = {}
        self.severities: dict[str, str] = {}
        self.error_parts: list[np.ndarray] = []

    def on(self, rule: str) -> bool:
        return self.quality.level(rule) != "off"

    def line(self, row: int) -> str:
        return f"row {row}" + (f", line {self.lines[row]}" if self.lines is not None else "")

    def add(self, rule: str, rows: np.ndarray, detail: Callable[[np.ndarray], list[str]]) -> None:
        """Record issues of ``rule`` on ``rows``; ``detail(k)`` describes ``rows[k]``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        sev = self.quality.level(rule)
        if sev == "off":
            return
        self.totals[rule] = self.totals.get(rule, 0) + int(rows.size)
        self.severities[rule] = sev
        if sev == "error":
            self.error_parts.append(rows)
        keep = np.argsort(rows, kind="stable")[: self.cap]
        sel = rows[keep]
        iso = _iso(self.ts[sel])
        lines = self.lines[sel].tolist() if self.lines is not None else [None] * sel.size
        self.issues.extend(
            Issue(rule, sev, r, ln, t, d)
            for r, ln, t, d in zip(sel.tolist(), lines, iso, detail(keep), strict=True)
        )

    def report(self) -> QualityReport:
        self.issues.sort(key=lambda i: (i.row, _rule_order(i.rule)))
        bad = np.zeros(self.n, dtype=bool)
        for rows in self.error_parts:
            bad[rows] = True
        err = np.flatnonzero(bad).astype(np.int64)
        return QualityReport(self.n, self.issues, self.totals, self.severities, err)


def _check_columns(frame: pd.DataFrame, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}")


def _flag_columns(c: _Collector, rule: str, masks: dict[str, np.ndarray], what: str) -> None:
    """One issue per row, naming every column whose mask is set on that row."""
    if not masks:
        return
    stacked = np.column_stack(list(masks.values()))
    rows = np.flatnonzero(stacked.any(axis=1))
    names = np.array(list(masks))

    def detail(k: np.ndarray) -> list[str]:
        return [f"{what}: {', '.join(names[stacked[rows[j]]])}" for j in k]

    c.add(rule, rows, detail)


def _check_ts(c: _Collector, duplicates: bool) -> np.ndarray:
    """non_monotonic (and duplicate_ts for bars); returns the positions of rows with a valid ts."""
    ts = c.ts
    valid = np.flatnonzero(ts != _NAT)
    vts = ts[valid]
    if c.on("non_monotonic") and vts.size > 1:
        k = np.flatnonzero(vts[1:] < vts[:-1])
        rows, prev = valid[k + 1], valid[k]
        c.add("non_monotonic", rows,
              lambda j: [f"ts earlier than previous {c.line(int(prev[i]))}" for i in j])
    if duplicates and c.on("duplicate_ts") and vts.size > 1:
        order = np.argsort(vts, kind="stable")
        s = vts[order]
        dup = np.r_[False, s[1:] == s[:-1]]
        group_start = np.maximum.accumulate(np.where(dup, 0, np.arange(s.size)))
        rows, first = valid[order[dup]], valid[order[group_start[dup]]]
        c.add("duplicate_ts", rows,
              lambda j: [f"same ts as {c.line(int(first[i]))}" for i in j])
    return valid


def _check_gaps(c: _Collector, valid: np.ndarray, timeframe: str, calendar: str) -> None:
    order = valid[np.argsort(c.ts[valid], kind="stable")]
    s = c.ts[order]
    first = np.r_[True, s[1:] != s[:-1]]  # stable sort: the first row of equal timestamps
    gaps = find_gap_table(s[first], timeframe, calendar)
    rows = order[first][gaps.after_row]

    def detail(k: np.ndarray) -> list[str]:
        start, end = _iso(gaps.start_ns[k]), _iso(gaps.end_ns[k])
        unit = np.where(gaps.whole_days[k], "trading day(s)", f"{timeframe} bar(s)")
        return [
            f"{n} missing {u} from {a} to {b}"
            for n, u, a, b in zip(gaps.missing[k].tolist(), unit, start, end, strict=True)
        ]

    c.add("gap", rows, detail)


def _check_returns(c: _Collector, valid: np.ndarray, close: np.ndarray, limit: float) -> None:
    """|log return| between consecutive finite positive closes, in time order."""
    order = valid[np.argsort(c.ts[valid], kind="stable")]
    order = order[np.isfinite(close[order]) & (close[order] > 0)]
    if order.size < 2:
        return
    lr = np.diff(np.log(close[order]))
    k = np.flatnonzero(np.abs(lr) > limit)
    rows, prev = order[k + 1], order[k]
    c.add("absurd_return", rows, lambda j: [
        f"log return {lr[k[i]]:+.4f} (|r| > {limit:g}) from close {close[prev[i]]:g} "
        f"at {c.line(int(prev[i]))} to {close[rows[i]]:g}" for i in j])


def _check_zero_volume(c: _Collector, valid: np.ndarray, volume: np.ndarray, min_run: int) -> None:
    """Runs of >= min_run consecutive (time-ordered) bars with volume exactly 0."""
    order = valid[np.argsort(c.ts[valid], kind="stable")]
    z = np.r_[False, volume[order] == 0, False].astype(np.int8)
    edges = np.diff(z)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # run = [start, end)
    lengths = ends - starts
    long = lengths >= min_run
    starts, ends, lengths = starts[long], ends[long], lengths[long]
    end_iso = _iso(c.ts[order[ends - 1]]) if ends.size else []
    c.add("zero_volume_run", order[starts], lambda j: [
        f"{lengths[i]} consecutive zero-volume bars, until {end_iso[i]} "
        f"({c.line(int(order[ends[i] - 1]))})" for i in j])


def check_bars(frame: pd.DataFrame, timeframe: str, calendar: str, quality: QualityConfig,
               line_numbers: np.ndarray | None = None,
               max_issues: int = MAX_ISSUES_PER_RULE) -> QualityReport:
    """Run the bar rules (see ``QUALITY_RULES``) over a frame of ts + OHLC(V, spread) bars."""
    _check_columns(frame, ("ts", *BAR_PRICE_COLUMNS))
    ts = _ts_ns(frame)
    c = _Collector(len(frame), ts, quality, line_numbers, max_issues)
    extra = [x for x in ("volume", "spread") if x in frame.columns]
    col = _floats(frame, [*BAR_PRICE_COLUMNS, *extra])
    o, h, lo, cl = (col[x] for x in BAR_PRICE_COLUMNS)

    if c.on("non_finite"):
        masks = {x: ~np.isfinite(v) for x, v in col.items()}
        masks = {"ts": ts == _NAT, **masks}
        _flag_columns(c, "non_finite", masks, "not finite")
    if c.on("non_positive"):
        masks = {x: col[x] <= 0 for x in BAR_PRICE_COLUMNS}
        masks.update({x: col[x] < 0 for x in extra})
        _flag_columns(c, "non_positive", masks, "non-positive price or negative volume/spread")
    if c.on("ohlc_inconsistent"):
        with np.errstate(invalid="ignore"):
            masks = {"high<max(open,close)": h < np.fmax(o, cl),
                     "low>min(open,close)": lo > np.fmin(o, cl),
                     "high<low": h < lo}
        stacked = np.column_stack(list(masks.values()))
        rows = np.flatnonzero(stacked.any(axis=1))
        names = np.array(list(masks))
        c.add("ohlc_inconsistent", rows, lambda j: [
            f"{', '.join(names[stacked[rows[i]]])} (o={o[rows[i]]:g} h={h[rows[i]]:g} "
            f"l={lo[rows[i]]:g} c={cl[rows[i]]:g})" for i in j])

    valid = _check_ts(c, duplicates=True)
    if c.on("gap") and valid.size > 1:
        _check_gaps(c, valid, timeframe, calendar)
    if c.on("absurd_return"):
        _check_returns(c, valid, cl, quality.max_abs_log_return)
    if c.on("zero_volume_run") and "volume" in col:
        _check_zero_volume(c, valid, col["volume"], quality.zero_volume_run)
    return c.report()


def check_ticks(frame: pd.DataFrame, quality: QualityConfig,
                line_numbers: np.ndarray | None = None,
                max_issues: int = MAX_ISSUES_PER_RULE) -> QualityReport:
    """Run the tick rules over ts, bid, ask (volume optional). Equal timestamps are normal."""
    _check_columns(frame, ("ts", "bid", "ask"))
    ts = _ts_ns(frame)
    c = _Collector(len(frame), ts, quality, line_numbers, max_issues)
    extra = ["volume"] if "volume" in frame.columns else []
    col = _floats(frame, ["bid", "ask", *extra])
    bid, ask = col["bid"], col["ask"]

    if c.on("non_finite"):
        masks = {"ts": ts == _NAT, **{x: ~np.isfinite(v) for x, v in col.items()}}
        _flag_columns(c, "non_finite", masks, "not finite")
    if c.on("non_positive"):
        masks = {"bid": bid <= 0, "ask": ask <= 0}
        masks.update({x: col[x] < 0 for x in extra})
        _flag_columns(c, "non_positive", masks, "non-positive price or negative volume")
    if c.on("crossed_quote"):
        rows = np.flatnonzero(ask < bid)
        c.add("crossed_quote", rows,
              lambda j: [f"ask {ask[rows[i]]:g} < bid {bid[rows[i]]:g}" for i in j])
    _check_ts(c, duplicates=False)
    return c.report()


def _span(ns: int) -> str:
    for name, step in sorted(TIMEFRAME_NS.items(), key=lambda kv: -kv[1]):
        if ns % step == 0:
            return f"{ns // step}×{name}" if ns != step else name
    return f"{ns / 1e9:g} s"


def timeframe_mismatch(ts_ns: np.ndarray, timeframe: str, calendar: str,
                       line_numbers: np.ndarray | None = None, max_rows: int = 5) -> str | None:
    """Why these bar times cannot be ``timeframe`` bars, or None when they can.

    A bar must open on the timeframe's grid (anchored at the calendar's day start, 22:00 UTC for
    fx) and, with three or more bars, at least two consecutive bars must be one timeframe apart.
    Hourly bars declared as daily fail the first test, daily bars declared as hourly the second.
    This is a property of the whole file, so ingest refuses it even with --quarantine."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    keep = ts != _NAT
    rows = np.flatnonzero(keep)
    ts = ts[keep]
    if ts.size == 0:
        return None
    step, origin = TIMEFRAME_NS[timeframe], day_start_offset_ns(calendar)
    phase = (ts - origin) % step
    off = np.flatnonzero(phase != 0)

    def at(k: int) -> str:
        r = int(rows[k])
        where = f"line {line_numbers[r]}" if line_numbers is not None else f"row {r}"
        return f"{where} ({_iso(ts[k:k + 1])[0]})"

    uniq = np.unique(ts)
    diffs = np.diff(uniq)
    looks = ""
    if diffs.size:
        vals, counts = np.unique(diffs, return_counts=True)
        common = int(vals[np.argmax(counts)])
        guess = [tf for tf, ns in TIMEFRAME_NS.items() if ns == common]
        looks = (f"; the most common spacing is {_span(common)}"
                 + (f": pass --timeframe {guess[0]}" if guess and guess[0] != timeframe else ""))
    anchor = "UTC midnight" if origin == 0 else f"{origin // 3_600_000_000_000:02d}:00 UTC"
    if off.size:
        shown = ", ".join(at(int(k)) for k in off[:max_rows])
        text = (f"{off.size} of {ts.size} bar(s) do not open on the {timeframe} grid "
                f"(anchored at {anchor} for calendar {calendar}); first: {shown}")
        if off.size == ts.size:
            text += ("; no bar is on the grid: if the times are in another zone, pass it with "
                     "--tz (daily files dated by session date need --tz UTC)")
        return text + looks
    if uniq.size >= 3 and not np.any(diffs == step):
        k = int(np.searchsorted(ts, uniq[int(np.argmin(diffs))]))
        return (f"no two consecutive bars are {timeframe} apart (smallest spacing "
                f"{_span(int(diffs.min()))}, after {at(k)}){looks}")
    return None
