"""Ingest bars or ticks into the history store: check, quarantine or refuse, merge, derive.

A file with error-level quality issues is refused as a whole, with its first offending rows and
their line numbers, unless a quarantine file is given: then the bad rows go there, with their
line, rule and original text, and the rest is stored. Nothing is ever dropped silently.
Re-ingesting an overlapping range replaces bars with the same timestamp (the newer file wins).
Higher timeframes are re-derived from the merged lower one over the bins the new data touched.
All partitions and the symbol metadata are published in one store transaction.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from market.bars import higher_timeframes, resample_bars, ticks_to_bars
from market.calendars import day_start_offset_ns
from market.config import QualityConfig, SymbolMeta
from market.quality import QualityReport, check_bars, check_ticks, timeframe_mismatch
from market.readers import SourceRows
from market.store import HistoryStore, Transaction, frame_to_table
from market.timeframes import TIMEFRAME_NS, utc_ns


class IngestError(EmpError, ValueError):
    """Ingest refused a file; nothing in the store changed."""


@dataclass(frozen=True)
class MergeStats:
    added: int
    replaced: int
    total: int


@dataclass
class IngestResult:
    symbol: str
    source: str
    report: QualityReport
    unparseable: list[tuple[int, str]]
    written: dict[str, MergeStats] = field(default_factory=dict)
    quarantined: int = 0
    quarantine_path: Path | None = None

    def summary(self) -> str:
        parts = [f"{tf}: +{s.added} new, {s.replaced} replaced, {s.total} total"
                 for tf, s in self.written.items()]
        text = f"{self.symbol} <- {self.source}\n  " + "\n  ".join(parts)
        if self.quarantined:
            text += f"\n  quarantined {self.quarantined} row(s) -> {self.quarantine_path}"
        if self.report.warnings():
            text += "\n" + self.report.format()
        return text


def _unparseable_lines(unparseable: list[tuple[int, str]], shown: int = 10) -> list[str]:
    """The first ``shown`` unparseable rows with their line numbers, and how many more."""
    lines = [f"  line {line}: unparseable: {reason}" for line, reason in unparseable[:shown]]
    if unparseable[shown:]:
        lines.append(f"  ... {len(unparseable) - shown} more unparseable row(s)")
    return lines


def refusal_text(source: str, report: QualityReport, unparseable: list[tuple[int, str]]) -> str:
    if report.n_rows == 0:
        head = (f"{source}: refused, no row could be parsed (nothing was stored); check "
                f"--columns, --ts-format, --delimiter and --decimal")
        return "\n".join([head, *_unparseable_lines(unparseable)])
    lines = [f"{source}: refused, the file has errors (nothing was stored; "
             f"use --quarantine to set bad rows aside and keep the rest)",
             *_unparseable_lines(unparseable)]
    lines.append(report.format())
    return "\n".join(lines)


def _quarantine(path: Path, source: Path | None, report: QualityReport,
                unparseable: list[tuple[int, str]]) -> int:
    """Write bad rows with line, rule, detail and the original text; returns rows written."""
    entries: dict[int, list[str]] = {}
    for line, reason in unparseable:
        entries.setdefault(line, []).append(f"unparseable: {reason}")
    for issue in report.errors():
        if issue.line is not None:
            entries.setdefault(int(issue.line), []).append(f"{issue.rule}: {issue.detail}")
    raw = _source_lines(source, set(entries)) if source is not None else {}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["line", "problems", "raw"])
    for line in sorted(entries):
        writer.writerow([line, "; ".join(entries[line]), raw.get(line, "")])
    try:
        atomic_write_bytes(path, buf.getvalue().encode())
    except OSError as exc:
        raise IngestError(f"--quarantine: cannot write {path}: {exc.strerror or exc} "
                          f"(nothing was stored)") from None
    return len(entries)


def _source_lines(path: Path, wanted: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    if not wanted:
        return out
    last = max(wanted)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, text in enumerate(fh, start=1):
            if number in wanted:
                out[number] = text.rstrip("\r\n")
            if number >= last:
                break
    return out


def _keep_clean(rows: SourceRows, report: QualityReport, source: str, quarantine: Path | None,
                source_path: Path | None) -> tuple[pd.DataFrame, int]:
    bad = report.error_rows()
    if not len(bad) and not rows.unparseable:
        return rows.frame, 0
    if quarantine is None:
        raise IngestError(refusal_text(source, report, rows.unparseable))
    n = _quarantine(quarantine, source_path, report, rows.unparseable)
    keep = np.ones(len(rows.frame), bool)
    keep[bad] = False
    return rows.frame.loc[keep].reset_index(drop=True), n


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Sorted by ts, unique ts (later rows win), ns UTC."""
    frame = frame.sort_values("ts", kind="stable")
    return frame.drop_duplicates("ts", keep="last").reset_index(drop=True)


def merge_frames(old: pd.DataFrame | None, new: pd.DataFrame, where: str) -> tuple[pd.DataFrame, MergeStats]:
    """Union of two bar frames; rows of ``new`` replace rows of ``old`` with the same ts."""
    new = _normalise(new.assign(ts=utc_ns(new["ts"])))
    if old is None or old.empty:
        return new, MergeStats(len(new), 0, len(new))
    if ("spread" in old.columns) != ("spread" in new.columns):
        has = "has" if "spread" in old.columns else "has no"
        raise IngestError(f"{where}: the stored bars {has} a spread column and the new ones "
                          f"do not match; ingest spread consistently")
    old_ts = utc_ns(old["ts"]).asi8
    new_ts = utc_ns(new["ts"]).asi8
    overlap = np.isin(new_ts, old_ts)
    cols = [c for c in new.columns if c != "ts"]
    replaced = 0
    if overlap.any():
        o = old.set_index("ts").loc[new.loc[overlap, "ts"], cols].to_numpy()
        n = new.loc[overlap, cols].to_numpy()
        replaced = int((~np.isclose(o, n, rtol=0, atol=0, equal_nan=True)).any(axis=1).sum())
    merged = pd.concat([old.loc[~np.isin(old_ts, new_ts)], new], ignore_index=True)
    merged = merged.sort_values("ts", kind="stable").reset_index(drop=True)
    return merged, MergeStats(int((~overlap).sum()), replaced, len(merged))


def _existing(store: HistoryStore, symbol: str, timeframe: str) -> pd.DataFrame | None:
    return store.read_frame(symbol, timeframe) if store.has(symbol, timeframe) else None


def _publish(store: HistoryStore, symbol: str, timeframe: str, clean: pd.DataFrame,
             meta: SymbolMeta, derive: bool, source: str) -> dict[str, MergeStats]:
    """Merge ``clean`` into ``timeframe``, re-derive higher timeframes, commit all at once.

    The store's exclusive lock is held from reading the stored bars to the last rename, so a
    concurrent ingest of the same symbol merges onto this one's result instead of racing it."""
    with store.writing(f"ingest {symbol} from {source}"):
        return _merge_and_commit(store, symbol, timeframe, clean, meta, derive)


def _merge_and_commit(store: HistoryStore, symbol: str, timeframe: str, clean: pd.DataFrame,
                      meta: SymbolMeta, derive: bool) -> dict[str, MergeStats]:
    written: dict[str, MergeStats] = {}
    txn: Transaction = store.transaction()
    try:
        merged, stats = merge_frames(_existing(store, symbol, timeframe), clean,
                                     f"{symbol}/{timeframe}")
        txn.put_bars(symbol, timeframe, frame_to_table(merged))
        written[timeframe] = stats
        lo = int(utc_ns(clean["ts"]).asi8.min()) if len(clean) else None
        hi = int(utc_ns(clean["ts"]).asi8.max()) if len(clean) else None
        lower = merged
        for tf in (higher_timeframes(timeframe) if derive and lo is not None else []):
            step, origin = TIMEFRAME_NS[tf], day_start_offset_ns(meta.calendar)
            b0 = origin + ((lo - origin) // step) * step
            b1 = origin + ((hi - origin) // step + 1) * step
            ts = utc_ns(lower["ts"]).asi8
            touched = lower.iloc[int(np.searchsorted(ts, b0)):int(np.searchsorted(ts, b1))]
            derived = resample_bars(touched, tf, meta.calendar)
            merged_tf, stats_tf = merge_frames(_existing(store, symbol, tf), derived, f"{symbol}/{tf}")
            txn.put_bars(symbol, tf, frame_to_table(merged_tf))
            written[tf] = stats_tf
            lower = merged_tf
        txn.put_meta(symbol, meta)
    except BaseException:
        txn.abort()
        raise
    txn.commit()
    return written


def ingest_bars(store: HistoryStore, symbol: str, timeframe: str, rows: SourceRows,
                meta: SymbolMeta, quality: QualityConfig, *, source: str = "<frame>",
                source_path: Path | None = None, quarantine: Path | None = None,
                derive: bool = True) -> IngestResult:
    """Check bars, set aside or refuse bad rows, and merge the rest (plus derived timeframes)."""
    if timeframe not in TIMEFRAME_NS:
        raise IngestError(f"unknown timeframe {timeframe!r}; known: {list(TIMEFRAME_NS)}")
    rows.frame["ts"] = utc_ns(rows.frame["ts"])
    mismatch = timeframe_mismatch(rows.frame["ts"].array.asi8, timeframe, meta.calendar,
                                  rows.lines)
    if mismatch is not None:
        raise IngestError(f"{source}: refused, the bars contradict --timeframe {timeframe} "
                          f"(nothing was stored): {mismatch}")
    report = check_bars(rows.frame, timeframe, meta.calendar, quality, rows.lines)
    clean, n_bad = _keep_clean(rows, report, source, quarantine, source_path)
    result = IngestResult(symbol, source, report, rows.unparseable, quarantined=n_bad,
                          quarantine_path=quarantine if n_bad else None)
    if clean.empty:
        raise IngestError(f"{source}: no valid rows to store")
    result.written = _publish(store, symbol, timeframe, clean, meta, derive, source)
    return result


def ingest_ticks(store: HistoryStore, symbol: str, rows: SourceRows, meta: SymbolMeta,
                 quality: QualityConfig, *, source: str = "<frame>",
                 source_path: Path | None = None, quarantine: Path | None = None) -> IngestResult:
    """Check ticks, build 1m bars, merge them and derive 5m … 1d from the merged 1m bars."""
    rows.frame["ts"] = utc_ns(rows.frame["ts"])
    report = check_ticks(rows.frame, quality, rows.lines)
    clean, n_bad = _keep_clean(rows, report, source, quarantine, source_path)
    if clean.empty:
        raise IngestError(f"{source}: no valid ticks to store")
    clean = clean.sort_values("ts", kind="stable").reset_index(drop=True)
    bars = ticks_to_bars(clean, "1m", meta.calendar)
    result = IngestResult(symbol, source, report, rows.unparseable, quarantined=n_bad,
                          quarantine_path=quarantine if n_bad else None)
    result.written = _publish(store, symbol, "1m", bars, meta, True, source)
    return result
