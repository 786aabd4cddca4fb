"""``load_bars``: history for several symbols as contiguous float64 arrays on one time index.

The arrays are shaped ``(n_symbols, n_bars)`` and C-contiguous, so each symbol's series is one
contiguous row, ready for numba kernels and for a single ``ray.put``. Parquet is read straight
into numpy through pyarrow (no pandas on the way), touching only the row groups in range.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from market.align_nb import intersect_sorted, last_at_or_before
from market.barset import Bars
from market.store import HistoryStore, StoreError

FIELDS = ("open", "high", "low", "close", "volume")


def _read(store: HistoryStore, symbol: str, timeframe: str, start: object, end: object,
          with_spread: bool) -> dict[str, np.ndarray]:
    cols = [*FIELDS, "spread"] if with_spread else list(FIELDS)
    table = store.read_table(symbol, timeframe, start=start, end=end)  # type: ignore[arg-type]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise StoreError(f"{symbol}/{timeframe} has no column(s) {missing}")
    out = {"ts": table.column("ts").to_numpy().view(np.int64)}
    for c in cols:
        out[c] = table.column(c).to_numpy()
    return out


def load_bars(
    symbols: str | list[str] | tuple[str, ...],
    timeframe: str,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    *,
    store: HistoryStore | str | os.PathLike[str] | None = None,
    align: str = "inner",
    spread: bool = False,
) -> Bars:
    """Load ``start <= ts < end`` for each symbol and align them on one time index.

    ``align="inner"`` keeps only timestamps every symbol has. ``align="outer"`` keeps all of
    them and forward-fills a symbol's missing bars from its last close (open = high = low =
    close, volume 0); bars before a symbol's first bar are cut so no NaN is ever returned.
    """
    names = (symbols,) if isinstance(symbols, str) else tuple(symbols)
    if not names:
        raise ValueError("load_bars needs at least one symbol")
    if align not in ("inner", "outer"):
        raise ValueError(f"align must be 'inner' or 'outer', not {align!r}")
    if not isinstance(store, HistoryStore):
        store = HistoryStore(store if store is not None else _default_root())
    with store.reading():  # every symbol from one committed state of the store
        parts = [_read(store, s, timeframe, start, end, spread) for s in names]
    cols = [*FIELDS, "spread"] if spread else list(FIELDS)
    ts = parts[0]["ts"]
    same = all(len(p["ts"]) == len(ts) and np.array_equal(p["ts"], ts) for p in parts[1:])
    if not same and align == "inner":
        for p in parts[1:]:
            ts = intersect_sorted(ts, p["ts"])
    elif not same:
        ts = np.unique(np.concatenate([p["ts"] for p in parts]))
        first = max((p["ts"][0] for p in parts if len(p["ts"])), default=0)
        ts = ts[ts >= first]
    out = {c: np.empty((len(names), len(ts)), dtype=np.float64) for c in cols}
    for i, p in enumerate(parts):
        if same:
            for c in cols:
                out[c][i] = p[c]
            continue
        pos, exact = last_at_or_before(p["ts"], ts)
        if exact.all():
            for c in cols:
                out[c][i] = p[c][pos]
            continue
        for c in cols:  # outer alignment: carry the last close over this symbol's missing bars
            if c in ("open", "high", "low"):
                out[c][i] = np.where(exact, p[c][pos], p["close"][pos])
            elif c == "volume":
                out[c][i] = np.where(exact, p[c][pos], 0.0)
            else:
                out[c][i] = p[c][pos]
    return Bars(names, timeframe, np.ascontiguousarray(ts), out["open"], out["high"], out["low"],
                out["close"], out["volume"], out.get("spread"))


def _default_root() -> Path:
    return Path(os.environ.get("EMP_HOME", "./var")) / "history"


def truncate(bars: Bars, end: int) -> Bars:
    """The history as it was known before bar ``end`` (bars ``[0, end)``), C-contiguous.

    Copies, not views: a kernel indexing past the end of a view would silently read the future.
    """
    if not 1 <= end <= bars.n_bars:
        raise ValueError(f"end={end} outside [1, {bars.n_bars}]")
    cut = {f: np.array(getattr(bars, f)[:, :end], order="C") for f in FIELDS}
    spread = None if bars.spread is None else np.array(bars.spread[:, :end], order="C")
    return Bars(bars.symbols, bars.timeframe, np.array(bars.ts[:end], order="C"), cut["open"],
                cut["high"], cut["low"], cut["close"], cut["volume"], spread)


def holdout_start(n_bars: int, holdout: float) -> int:
    """Index of the first hold-out bar: the last ``holdout`` fraction of ``n_bars`` is kept
    from evolution; only the gates read it."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), not {holdout}")
    cut = round(n_bars * (1.0 - holdout))
    if cut < 2 or cut >= n_bars:
        raise ValueError(f"{n_bars} bars cannot be split with holdout={holdout}")
    return cut
