"""``Bars``: aligned history as contiguous float64 arrays, the one type every consumer of bars
takes (backtests, the tables, the live executor).

It lives apart from ``market.loader`` so that holding bars needs numpy only: the live executor
on a 1 GB VPS never loads pandas or pyarrow (``index()`` imports pandas when called).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Bars:
    """Aligned history: ``ts`` is int64 UTC ns; each field is float64 ``(n_symbols, n_bars)``."""

    symbols: tuple[str, ...]
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    spread: np.ndarray | None

    @property
    def n_bars(self) -> int:
        return int(self.ts.shape[0])

    def index(self) -> pd.DatetimeIndex:
        import pandas as pd

        return pd.to_datetime(self.ts, utc=True)

    def fingerprint(self) -> str:
        """sha256 over symbols, timeframe and every array: identifies exactly what was loaded."""
        h = hashlib.sha256()
        h.update(("|".join(self.symbols) + "/" + self.timeframe).encode())
        for arr in (self.ts, self.open, self.high, self.low, self.close, self.volume):
            h.update(np.ascontiguousarray(arr).tobytes())
        if self.spread is not None:
            h.update(self.spread.tobytes())
        return h.hexdigest()
