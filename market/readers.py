"""CSV readers for bar files (generic, MetaTrader) and tick files, keeping source line numbers.

Each reader returns a :class:`SourceRows`: a frame with a UTC ``ts`` column and float64 values,
the 1-based file line of every row, and the rows whose timestamp or numbers could not be parsed
(those are reported by ingest like any other bad row, never dropped silently).
"""

from __future__ import annotations

import csv
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from core.errors import EmpError

BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume", "spread")
TICK_FIELDS = ("ts", "bid", "ask")
_ALIASES = {
    "ts": ("ts", "timestamp", "time", "datetime", "date", "gmt time", "local time"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "last"),
    "volume": ("volume", "vol", "tickvol", "tick_volume", "v"),
    "spread": ("spread",),
    "bid": ("bid",),
    "ask": ("ask", "offer"),
}


class SourceError(EmpError, ValueError):
    """A source file cannot be read at all (missing columns, unreadable CSV)."""


_OFFSET = r"(Z|[+-]\d\d(:?\d\d)?)$"
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")
_SNIFF_BYTES = 64 * 1024


def check_delimiter(delimiter: str) -> str:
    """The delimiter as one character ('\\t' and 'tab' mean a tab), or a clear error."""
    value = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
    if len(value) != 1 or value in "\r\n\"":
        raise SourceError(f"--delimiter must be one character other than a quote or line break "
                          f"(e.g. ',' ';' or '\\t'), not {delimiter!r}")
    return value


def check_tz(tz: str) -> str:
    """An IANA time zone name, or a clear error naming the option."""
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise SourceError(f"--tz: unknown time zone {tz!r}; use an IANA name such as UTC, "
                          f"Europe/London, America/New_York or Etc/GMT-2 (= UTC+2)") from None
    return tz


def _clip(text: object, limit: int = 120) -> str:
    out = repr(text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _check_file(path: Path) -> None:
    """A readable text file, or a short error: missing, a directory, or binary data."""
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a CSV file")
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise SourceError(f"{path}: empty file")
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"PAR1", b"BZh", b"\xfd7zXZ")):
        raise SourceError(f"{path}: a compressed or binary file (zip, gzip, parquet, …), not a "
                          f"CSV; unpack it first")
    try:  # a multi-byte character may be cut at the end of the sniffed block
        head[: len(head) - 3 if len(head) == _SNIFF_BYTES else len(head)].decode("utf-8")
        utf8 = True
    except UnicodeDecodeError as exc:
        utf8, bad_at = False, exc.start
    text = head.decode("utf-8", errors="replace")
    odd = sum(1 for ch in text if ch == "\ufffd" or (ch < " " and ch not in "\t\r\n"))
    if b"\x00" in head or odd > max(8, len(text) // 100):
        at = next((i for i, b in enumerate(head) if b == 0 or (b < 32 and b not in (9, 10, 13))),
                  0)
        raise SourceError(f"{path}: binary data, not a text CSV (first non-text byte at offset "
                          f"{at}); UTF-16 files must be saved as UTF-8")
    if not utf8:
        line = head[:bad_at].count(b"\n") + 1
        raise SourceError(f"{path}: line {line}: not UTF-8 text (byte 0x{head[bad_at]:02x}); "
                          f"save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


@dataclass
class SourceRows:
    frame: pd.DataFrame
    lines: np.ndarray
    unparseable: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def parse_mapping(spec: str | None) -> dict[str, str]:
    """``"ts=Date+Time,open=Open"`` -> {"ts": "Date+Time", "open": "Open"}."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SourceError(f"bad column mapping {part!r}: expected field=Column")
        out[key.strip().lower()] = value.strip()
    return out


def _resolve(header: list[str], fields: tuple[str, ...], required: tuple[str, ...],
             mapping: dict[str, str], path: Path) -> dict[str, list[str]]:
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise SourceError(f"{path}: unknown field(s) in column mapping: {unknown}; known: {list(fields)}")
    lower = {h.strip().strip("<>").lower(): h for h in header}
    out: dict[str, list[str]] = {}
    for f in fields:
        if f in mapping:
            cols = mapping[f].split("+")
            missing = [c for c in cols if c not in header]
            if missing:
                raise SourceError(f"{path}: column(s) {missing} for field {f!r} not in header {header}")
            out[f] = cols
            continue
        hit = next((lower[a] for a in _ALIASES[f] if a in lower), None)
        if hit is not None:
            out[f] = [hit]
    missing = [f for f in required if f not in out]
    if missing:
        shown = _clip(header if len(header) <= 12 else [*header[:12], "…"], 300)
        hint = "map them with --columns, e.g. --columns ts=Date,close=Last"
        if len(header) == 1:
            found = [d for d in (";", "\t", "|", ",") if d in header[0]]
            if found:
                name = "\\t" if found[0] == "\t" else found[0]
                hint = f"the header has one column but contains {found[0]!r}: pass --delimiter '{name}'"
        raise SourceError(f"{path}: no column for {missing} in header {shown}; {hint}")
    return out


def _header(path: Path, delimiter: str) -> list[str]:
    """The first row; a UTF-8 byte-order mark is dropped (pyarrow drops it too)."""
    _check_file(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        try:
            first = next(csv.reader(fh, delimiter=delimiter), None)
        except csv.Error as exc:
            raise SourceError(f"{path}: unreadable header line: {exc}") from None
    if not first:
        raise SourceError(f"{path}: the first line is empty; a header row is expected")
    return first


def _read_table(path: Path, delimiter: str, names: list[str] | None,
                cols: dict[str, list[str]], decimal: str = ".") -> pa.Table:
    """Read only the mapped columns; time columns stay text so they are parsed in one place."""
    _check_file(path)
    wanted = [c for group in cols.values() for c in group]
    read = pacsv.ReadOptions(column_names=names, block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False)
    convert = pacsv.ConvertOptions(
        include_columns=wanted, strings_can_be_null=True, auto_dict_encode=False,
        decimal_point=decimal, column_types={c: pa.string() for c in cols["ts"]})
    try:
        return pacsv.read_csv(path, read_options=read, parse_options=parse,
                              convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SourceError(f"{path}: unreadable CSV: {_clip(str(exc), 300)}") from None


def _parse_ts(raw: pa.ChunkedArray, fmt: str | None, tz: str,
              lines: np.ndarray | None = None) -> pd.DatetimeIndex:
    """Parse timestamps (NaT where unparseable) and convert them to UTC.

    Times that all carry a UTC offset (``+01:00``, ``Z``) are converted exactly, each with its
    own offset (a CET export switching to CEST is fine); a file mixing times with and without an
    offset is ambiguous and refused, naming a line of each kind."""
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        has = pc.match_substring_regex(pc.utf8_trim_whitespace(raw), _OFFSET)
        has = has.to_numpy(zero_copy_only=False)
        present = raw.is_valid().to_numpy(zero_copy_only=False)
        with_offset, without = present & (has == True), present & (has != True)  # noqa: E712
        if with_offset.any() and without.any():
            i, j = int(np.flatnonzero(with_offset)[0]), int(np.flatnonzero(without)[0])
            where = (lambda k: f"line {lines[k]}") if lines is not None else (lambda k: f"row {k}")
            raise SourceError(
                f"mixed time zones: {where(i)} has a UTC offset ({raw[i].as_py()!r}) but "
                f"{where(j)} has none ({raw[j].as_py()!r}); give every time an offset, or none "
                f"and pass --tz")
        if with_offset.any():
            idx = pd.DatetimeIndex(pd.to_datetime(raw.to_pandas(), errors="coerce", utc=True,
                                                  format=fmt or "ISO8601"))
            return idx.tz_convert("UTC").as_unit("ns")
    if fmt is None:
        try:
            arr = pc.cast(raw, pa.timestamp("ns")) if pa.types.is_string(raw.type) else raw
            idx = pd.DatetimeIndex(arr.to_pandas())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            idx = pd.DatetimeIndex(pd.to_datetime(raw.to_pandas(), errors="coerce",
                                                  format="ISO8601"))
    else:
        idx = pd.DatetimeIndex(pd.to_datetime(raw.to_pandas(), errors="coerce", format=fmt))
    if idx.tz is None:
        idx = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return idx.tz_convert("UTC").as_unit("ns")


def _numeric(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of cells that were present but not numbers."""
    if pa.types.is_decimal(col.type):
        col = pc.cast(col, pa.float64())
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return col.to_numpy().astype(np.float64), np.zeros(len(col), bool)
    if pa.types.is_null(col.type):
        return np.full(len(col), np.nan), np.zeros(len(col), bool)
    values = pd.to_numeric(col.to_pandas(), errors="coerce").to_numpy(np.float64)
    present = col.is_valid().to_numpy(zero_copy_only=False)
    return values, present & np.isnan(values)


def _assemble(table: pa.Table, cols: dict[str, list[str]], fmt: str | None, tz: str,
              first_line: int, path: Path) -> SourceRows:
    n = table.num_rows
    lines = np.arange(first_line, first_line + n, dtype=np.int64)
    ts_cols = cols["ts"]
    if len(ts_cols) == 1:
        raw_ts = table.column(ts_cols[0])
    else:
        parts = [pc.cast(table.column(c), pa.string()) for c in ts_cols]
        raw_ts = pc.binary_join_element_wise(*parts, " ")
    try:
        ts = _parse_ts(raw_ts, fmt, tz, lines)
    except SourceError as exc:
        raise SourceError(f"{path}: column {'+'.join(ts_cols)}: {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise SourceError(f"{path}: cannot parse column {'+'.join(ts_cols)} as time: "
                          f"{_clip(str(exc), 200)}") from None
    bad: dict[int, str] = {}
    raw_text = None
    for i in np.flatnonzero(ts.isna()):
        raw_text = raw_text if raw_text is not None else pc.cast(raw_ts, pa.string())
        bad[int(i)] = f"unparseable timestamp {raw_text[int(i)].as_py()!r}"
    data: dict[str, object] = {"ts": ts}
    for f, names in cols.items():
        if f == "ts":
            continue
        values, not_number = _numeric(table.column(names[0]))
        _refuse_decimal_commas(table.column(names[0]), not_number, f, lines, path)
        for i in np.flatnonzero(not_number):
            bad.setdefault(int(i), f"{f}: not a number {table.column(names[0])[int(i)].as_py()!r}")
        data[f] = values
    frame = pd.DataFrame(data)
    unparseable = [(int(lines[i]), reason) for i, reason in sorted(bad.items())]
    if bad:
        keep = np.ones(n, bool)
        keep[list(bad)] = False
        frame = frame.loc[keep].reset_index(drop=True)
        lines = lines[keep]
    return SourceRows(frame, lines, unparseable)


def _refuse_decimal_commas(col: pa.ChunkedArray, not_number: np.ndarray, field_name: str,
                           lines: np.ndarray, path: Path) -> None:
    """Numbers written with a decimal comma make every row "not a number"; say so once."""
    bad = np.flatnonzero(not_number)
    if bad.size == 0:
        return
    sample = [col[int(i)].as_py() for i in bad[:20]]
    if sum(bool(_DECIMAL_COMMA.match(str(v))) for v in sample) * 2 > len(sample):
        raise SourceError(
            f"{path}: line {lines[bad[0]]}: {field_name} {sample[0]!r} uses a decimal comma "
            f"({bad.size} such cell(s)); pass --decimal ',' (and --delimiter ';' if fields are "
            f"separated by semicolons)")


def read_bar_csv(path: str | Path, mapping: dict[str, str] | None = None, tz: str = "UTC",
                 ts_format: str | None = None, delimiter: str = ",",
                 decimal: str = ".") -> SourceRows:
    """A bar CSV with a header row; columns found by common names or by ``mapping``."""
    p = Path(path)
    delimiter = check_delimiter(delimiter)
    check_tz(tz)
    cols = _resolve(_header(p, delimiter), BAR_FIELDS, ("ts", "open", "high", "low", "close"),
                    mapping or {}, p)
    table = _read_table(p, delimiter, None, cols, decimal)
    rows = _assemble(table, cols, ts_format, tz, first_line=2, path=p)
    if "volume" not in rows.frame.columns:
        rows.frame["volume"] = 0.0
    return rows


def read_metatrader_csv(path: str | Path, tz: str = "UTC", point: float | None = None) -> SourceRows:
    """MetaTrader exports: MT4 history (no header: date,time,o,h,l,c,volume, ``2020.01.02``) or
    MT5 (tab-separated, ``<DATE> <TIME> <OPEN> … <TICKVOL> <VOL> <SPREAD>``, spread in points).

    Times are in the broker's server time; pass its zone as ``tz`` (often ``Etc/GMT-2``/EET).
    """
    p = Path(path)
    check_tz(tz)
    _check_file(p)
    with open(p, encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline()
    if first.startswith("<DATE>"):
        names = {c.strip("<>").lower(): c for c in _header(p, "\t")}
        lacking = [f for f in ("date", "open", "high", "low", "close") if f not in names]
        if lacking:
            raise SourceError(f"{p}: MetaTrader 5 header lacks {['<' + f.upper() + '>' for f in lacking]}"
                              f"; the file must be tab-separated as MT5 exports it")
        cols = {"ts": [names["date"], names["time"]] if "time" in names else [names["date"]],
                "open": [names["open"]], "high": [names["high"]], "low": [names["low"]],
                "close": [names["close"]]}
        vol = names.get("tickvol") or names.get("vol")
        if vol:
            cols["volume"] = [vol]
        if "spread" in names:
            cols["spread"] = [names["spread"]]
        table = _read_table(p, "\t", None, cols)
        rows = _assemble(table, cols, "%Y.%m.%d %H:%M:%S" if "time" in names else "%Y.%m.%d",
                         tz, 2, p)
        if "spread" in rows.frame.columns:
            if point is None:
                raise SourceError(f"{p}: MT5 spread is in points; the symbol's tick size is needed")
            rows.frame["spread"] = rows.frame["spread"] * point
    else:
        header = ["date", "time", "open", "high", "low", "close", "volume"]
        delim = "\t" if "\t" in first else ","
        cols = {f: [f] for f in header[2:]}
        cols["ts"] = ["date", "time"]
        table = _read_table(p, delim, header, cols)
        rows = _assemble(table, cols, "%Y.%m.%d %H:%M", tz, 1, p)
    if "volume" not in rows.frame.columns:
        rows.frame["volume"] = 0.0
    return rows


def read_tick_csv(path: str | Path, mapping: dict[str, str] | None = None, tz: str = "UTC",
                  ts_format: str | None = None, delimiter: str = ",",
                  decimal: str = ".") -> SourceRows:
    """A tick CSV with a header and time, bid and ask columns (extra columns are ignored)."""
    p = Path(path)
    delimiter = check_delimiter(delimiter)
    check_tz(tz)
    cols = _resolve(_header(p, delimiter), TICK_FIELDS, TICK_FIELDS, mapping or {}, p)
    table = _read_table(p, delimiter, None, cols, decimal)
    return _assemble(table, cols, ts_format, tz, first_line=2, path=p)
