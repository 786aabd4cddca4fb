"""Import the real daily S&P 500 and NASDAQ history shipped inside the ``arch`` package.

No network: ``arch.data`` reads CSVs bundled in its wheel. The frames go through the same
check-and-merge path as any user file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from market.config import QualityConfig, SymbolMeta
from market.ingest import IngestError, IngestResult, ingest_bars
from market.readers import SourceRows
from market.store import HistoryStore

BUNDLED = {"SP500": "sp500", "NDX": "nasdaq"}


def bundled_frame(dataset: str) -> pd.DataFrame:
    """One of arch's bundled daily OHLCV sets as a store-shaped frame (ts = session date, UTC)."""
    import importlib

    raw = importlib.import_module(f"arch.data.{dataset}").load()
    ts = pd.DatetimeIndex(raw.index).tz_localize("UTC").as_unit("ns")
    return pd.DataFrame({
        "ts": ts,
        **{c.lower(): raw[c].to_numpy(np.float64) for c in ("Open", "High", "Low", "Close")},
        "volume": raw["Volume"].to_numpy(np.float64),
    })


def bootstrap(store: HistoryStore, symbols: dict[str, SymbolMeta],
              quality: QualityConfig) -> list[IngestResult]:
    """Ingest SP500/1d and NDX/1d; metadata comes from the config's ``data.symbols``."""
    results = []
    for symbol, dataset in BUNDLED.items():
        if symbol not in symbols:
            raise IngestError(f"data.symbols.{symbol} is missing from the config; bootstrap needs "
                           f"its metadata (see configs/default.yaml)")
        frame = bundled_frame(dataset)
        rows = SourceRows(frame, np.arange(2, len(frame) + 2, dtype=np.int64))
        results.append(ingest_bars(store, symbol, "1d", rows, symbols[symbol], quality,
                                   source=f"arch.data.{dataset}"))
    return results
