"""load_bars: alignment across symbols against a plain pandas reference, range and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_bars
from hypothesis import given, settings
from hypothesis import strategies as st

from market.align_nb import intersect_sorted, last_at_or_before
from market.config import QualityConfig, preset_meta
from market.ingest import ingest_bars
from market.loader import load_bars
from market.readers import SourceRows
from market.store import HistoryStore, StoreError

META = preset_meta("crypto")
QUIET = QualityConfig(severity={"gap": "off", "absurd_return": "off"})


def _put(store: HistoryStore, symbol: str, frame: pd.DataFrame) -> None:
    ingest_bars(store, symbol, "1d", SourceRows(frame, np.arange(len(frame))), META, QUIET)


@settings(max_examples=30, deadline=None)
@given(a=st.lists(st.integers(0, 300), min_size=1, max_size=120, unique=True),
       b=st.lists(st.integers(0, 300), min_size=1, max_size=120, unique=True))
def test_alignment_kernels_match_numpy(a, b):
    x, y = np.array(sorted(a), np.int64), np.array(sorted(b), np.int64)
    assert (intersect_sorted(x, y) == np.intersect1d(x, y)).all()
    pos, exact = last_at_or_before(x, y)
    assert (pos == np.searchsorted(x, y, side="right") - 1).all()
    assert (exact == np.isin(y, x)).all()


@pytest.mark.parametrize("align", ["inner", "outer"])
def test_alignment_matches_pandas_reference(tmp_path, align):
    store = HistoryStore(tmp_path / "h")
    full_a, full_b = make_daily_bars(120, seed=1), make_daily_bars(120, seed=2)
    a = full_a.drop(index=[5, 6, 40]).reset_index(drop=True)
    b = full_b.iloc[3:].drop(index=[50, 77]).reset_index(drop=True)
    _put(store, "A", a)
    _put(store, "B", b)
    bars = load_bars(["A", "B"], "1d", store=store, align=align)
    fa, fb = a.set_index("ts"), b.set_index("ts")
    if align == "inner":
        idx = fa.index.intersection(fb.index)
        ref = {"A": fa.loc[idx], "B": fb.loc[idx]}
    else:
        idx = fa.index.union(fb.index)
        idx = idx[idx >= max(fa.index[0], fb.index[0])]
        ref = {}
        for name, f in (("A", fa), ("B", fb)):
            r = f.reindex(idx)
            missing = r["close"].isna()
            r["close"] = r["close"].ffill()
            for c in ("open", "high", "low"):
                r.loc[missing, c] = r.loc[missing, "close"]
            r.loc[missing, "volume"] = 0.0
            ref[name] = r
    assert (bars.ts == idx.as_unit("ns").asi8).all()
    for i, name in enumerate(("A", "B")):
        for c in ("open", "high", "low", "close", "volume"):
            np.testing.assert_array_equal(getattr(bars, c)[i], ref[name][c].to_numpy())
    assert not np.isnan(bars.close).any()


def test_range_and_errors(tmp_path):
    store = HistoryStore(tmp_path / "h")
    frame = make_daily_bars(100)
    _put(store, "A", frame)
    bars = load_bars("A", "1d", frame["ts"].iloc[10], frame["ts"].iloc[20], store=store)
    assert bars.n_bars == 10 and bars.symbols == ("A",)
    with pytest.raises(StoreError, match="no bars for B/1d"):
        load_bars(["A", "B"], "1d", store=store)
    with pytest.raises(ValueError, match="align must be"):
        load_bars("A", "1d", store=store, align="left")
    with pytest.raises(StoreError, match="no column"):
        load_bars("A", "1d", store=store, spread=True)
