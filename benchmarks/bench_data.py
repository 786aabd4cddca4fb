"""Data-layer benchmark: tick CSV ingest rate, and load_bars against pandas.read_parquet."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.timing import best_of
from market.config import QualityConfig, preset_meta
from market.ingest import ingest_bars, ingest_ticks
from market.loader import load_bars
from market.readers import SourceRows, read_tick_csv
from market.store import HistoryStore

MINUTE = 60_000_000_000


def fx_open(ts: np.ndarray) -> np.ndarray:
    """True where ``ts`` (UTC ns) lies in FX hours, Sunday 22:00 to Friday 22:00."""
    shifted = (ts + 2 * 3600 * 1_000_000_000) // (86_400 * 1_000_000_000)  # day after 22:00 roll
    weekday = (shifted + 3) % 7  # 1970-01-01 was a Thursday (3)
    return weekday < 5


def write_tick_csv(path: Path, n: int, seed: int = 7) -> None:
    """A random-walk EURUSD tick file in FX hours, about one tick every 0.4 s."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-07 22:00", tz="UTC").value
    ts = start + np.cumsum(rng.integers(1, 800_000_000, size=int(n * 1.4)))
    ts = ts[fx_open(ts)][:n]
    mid = 1.10 * np.exp(np.cumsum(rng.normal(0, 2e-5, size=len(ts))))
    half = rng.uniform(2e-5, 8e-5, size=len(ts)) / 2
    table = pa.table({
        "time": pa.array(ts.astype("datetime64[ns]"), pa.timestamp("ns")),
        "bid": np.round(mid - half, 5),
        "ask": np.round(mid + half, 5),
    })
    pacsv.write_csv(table, path)


def minute_bars(n_days: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-01", tz="UTC").value
    ts = np.arange(start, start + n_days * 1440 * MINUTE, MINUTE)
    ts = ts[fx_open(ts)]
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 3e-4, size=len(ts))))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 2e-4, size=len(ts)))
    return pd.DataFrame({
        "ts": pd.to_datetime(ts, utc=True), "open": open_,
        "high": np.maximum(open_, close) + wick, "low": np.minimum(open_, close) - wick,
        "close": close, "volume": rng.integers(1, 500, size=len(ts)).astype(float),
    })


def pandas_load(root: Path, symbols: list[str], timeframe: str) -> dict[str, np.ndarray]:
    """The comparator: plain pandas.read_parquet per symbol, inner-aligned on ts."""
    frames = []
    for s in symbols:
        df = pd.read_parquet(root / f"symbol={s}" / f"timeframe={timeframe}" / "bars.parquet")
        frames.append(df.set_index("ts")[["open", "high", "low", "close", "volume"]])
    joined = pd.concat(frames, axis=1, keys=symbols, join="inner")
    return {c: np.ascontiguousarray(joined.xs(c, axis=1, level=1).to_numpy().T)
            for c in ("open", "high", "low", "close", "volume")}


def run(n_ticks: int, n_symbols: int, n_days: int, repeat: int, workdir: str | None) -> dict:
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="emp-bench-data-"))
    try:
        meta = preset_meta("fx")
        quality = QualityConfig()
        csv_path = tmp / "ticks.csv"
        write_tick_csv(csv_path, n_ticks)
        warm = HistoryStore(tmp / "warm")  # compile numba kernels outside the timing
        ingest_ticks(warm, "WARM", _head(csv_path, tmp), meta, quality)
        store = HistoryStore(tmp / "store")
        t0 = time.perf_counter()
        rows = read_tick_csv(csv_path)
        result = ingest_ticks(store, "EURUSD", rows, meta, quality)
        ingest_s = time.perf_counter() - t0

        symbols = [f"SYM{i}" for i in range(n_symbols)]
        for i, s in enumerate(symbols):
            frame = minute_bars(n_days, seed=i)
            ingest_bars(store, s, "1m", SourceRows(frame, np.arange(len(frame))), meta, quality,
                        derive=False)
        ours = best_of(lambda: load_bars(symbols, "1m", store=store), repeat)
        theirs = best_of(lambda: pandas_load(store.root, symbols, "1m"), repeat)
        bars = load_bars(symbols, "1m", store=store)
        ref = pandas_load(store.root, symbols, "1m")
        same = all(np.array_equal(getattr(bars, c), ref[c]) for c in ref)
        return {
            "bench": "data",
            "ticks": len(rows.frame),
            "ingest_s": round(ingest_s, 3),
            "ingest_rows_per_s": round(len(rows.frame) / ingest_s),
            "bars_1m_built": result.written["1m"].total,
            "load_symbols": n_symbols,
            "load_bars_per_symbol": bars.n_bars,
            "load_bars_ms": round(ours * 1e3, 2),
            "pandas_read_parquet_ms": round(theirs * 1e3, 2),
            "speedup_vs_pandas": round(theirs / ours, 2),
            "arrays_equal": same,
        }
    finally:
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def _head(csv_path: Path, tmp: Path) -> SourceRows:
    small = tmp / "head.csv"
    with open(csv_path) as src, open(small, "w") as dst:
        for i, line in enumerate(src):
            if i > 2000:
                break
            dst.write(line)
    return read_tick_csv(small)
