"""Continued tables equal tables rebuilt from the same origin, bit for bit; snapshots restore.

The live executor must trade what the backtest tested, so it continues the run's tables
(``fitness.tables``) instead of rebuilding them on a recent window. These tests pin the
contract: for any split point and any chunking of the new bars, the continued feature,
volatility and calendar tables equal ``build_tables`` over all the bars (NaN positions and
the fit counts included), and a state saved to disk and restored continues the same way.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import random_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitness.tables import (
    LiveTables,
    SnapshotError,
    Tables,
    advance_tables,
    build_tables,
    build_tables_state,
    extend_tables,
    finish_refit,
    load_state,
    save_state,
)
from genome.features import NAMES, build_features, build_features_state, extend_features
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars
from market.volatility import GARCH_VARIANTS, RV_WINDOWS, due_refits, run_refit

FX = SymbolMeta(asset_class="fx", tick_size=1e-5, value_per_unit=1.0, min_lot=1000.0,
                calendar="always",
                costs=CostModel(unit="pips", pip_size=1e-4, spread=0.8, commission=0.3,
                                slippage=0.2, financing_annual=0.02))
SPX = SymbolMeta(asset_class="index", tick_size=0.01, value_per_unit=1.0, min_lot=0.1,
                 calendar="nyse", costs=CostModel(unit="bps", spread=1, commission=0.5,
                                                  slippage=1, financing_annual=0.03))
# small windows and frequent refits so that short histories cross several refit points
FAST = VolatilityConfig(window=40, refit_every=13, min_bars=5)


def window(bars: Bars, a: int, b: int) -> Bars:
    """Bars [a, b) as their own history (copies)."""
    f = {k: np.array(getattr(bars, k)[:, a:b], order="C")
         for k in ("open", "high", "low", "close", "volume")}
    return Bars(bars.symbols, bars.timeframe, np.array(bars.ts[a:b]), f["open"], f["high"],
                f["low"], f["close"], f["volume"], None)


def ohlcv(seed: int, n: int, tick: float = 0.0, flat_volume: bool = False
          ) -> dict[str, np.ndarray]:
    """Consistent random OHLCV arrays; ``tick`` > 0 quantises prices so ties and flat runs
    (exactly constant windows, equal swing points) occur."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close])[:n] * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.4, n))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.4, n))
    if tick:
        open_, close = np.round(open_ / tick) * tick, np.round(close / tick) * tick
        high = np.maximum(np.round(high / tick) * tick, np.maximum(open_, close))
        low = np.minimum(np.round(low / tick) * tick, np.minimum(open_, close))
    volume = rng.integers(0, 4 if flat_volume else 1000, n).astype(float)
    ts = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(1, 4, n)) * 900 * 10**9
    return {"ts": ts.astype(np.int64), "open_": open_, "high": high, "low": low,
            "close": close, "volume": volume}


def sp500() -> Bars:
    import pandas as pd

    from market.bootstrap import bundled_frame

    f = bundled_frame("sp500")
    arr = {c: f[c].to_numpy()[None].copy() for c in ("open", "high", "low", "close", "volume")}
    return Bars(("SP500",), "1d", pd.DatetimeIndex(f["ts"]).as_unit("ns").asi8.copy(),
                arr["open"], arr["high"], arr["low"], arr["close"], arr["volume"], None)


def assert_tables_equal(got: Tables, want: Tables) -> None:
    """Bit for bit: every row (NaN positions included), the calendar and the fit counts."""
    rows = [(f"feature {n}", got.features.values[i], want.features.values[i])
            for i, n in enumerate(NAMES)]
    rows += [(f"variance {v}", got.vol.variance[i], want.vol.variance[i])
             for i, v in enumerate(GARCH_VARIANTS)]
    rows += [(f"rv {w}", got.vol.rv[i], want.vol.rv[i]) for i, w in enumerate(RV_WINDOWS)]
    for what, a, b in rows:
        assert a.shape == b.shape, what
        assert a.tobytes() == b.tobytes() or np.testing.assert_array_equal(a, b, err_msg=what)
    np.testing.assert_array_equal(got.hour, want.hour)
    np.testing.assert_array_equal(got.weekday, want.weekday)
    assert got.vol.fit_report() == want.vol.fit_report()
    assert got.vol.clamped == want.vol.clamped
    assert got.bars_per_year == want.bars_per_year


def continued(bars: Bars, meta: SymbolMeta, vol: VolatilityConfig, split: int,
              chunks: list[int]) -> Tables:
    """Build on [0, split), then extend chunk by chunk (the last chunk takes the rest)."""
    tables, state = build_tables_state(window(bars, 0, split), meta, vol=vol)
    pos = split
    for size in [*chunks, bars.n_bars]:
        if pos >= bars.n_bars:
            break
        end = min(bars.n_bars, pos + size)
        tables, state = extend_tables(tables, state, window(bars, pos, end))
        pos = end
    assert state.n_bars == bars.n_bars
    return tables


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(2, 700), frac=st.floats(0.0, 1.0),
       chunks=st.lists(st.integers(1, 300), max_size=4), tick=st.sampled_from([0.0, 0.5, 1.0]))
def test_extended_features_equal_rebuilt(seed: int, n: int, frac: float, chunks: list[int],
                                         tick: float) -> None:
    b = ohlcv(seed, n, tick=tick, flat_volume=seed % 2 == 0)
    split = min(n - 1, max(1, int(frac * n)))
    want = build_features(**b).values
    part = {k: v[:split] for k, v in b.items()}
    table, state = build_features_state(**part)
    pos = split
    for size in [*chunks, n]:
        if pos >= n:
            break
        end = min(n, pos + size)
        table, state = extend_features(table, state, **{k: v[pos:end] for k, v in b.items()})
        pos = end
    assert table.values.tobytes() == want.tobytes()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), n=st.integers(3, 160), frac=st.floats(0.0, 1.0),
       chunks=st.lists(st.integers(1, 60), max_size=3))
def test_extended_tables_equal_rebuilt(seed: int, n: int, frac: float, chunks: list[int]) -> None:
    bars = random_bars(n, seed)
    split = min(n - 1, max(1, int(frac * n)))
    assert_tables_equal(continued(bars, FX, FAST, split, chunks), build_tables(bars, FX, vol=FAST))


def test_one_bar_at_a_time_across_refits() -> None:
    bars = random_bars(120, 7)
    assert_tables_equal(continued(bars, FX, FAST, 30, [1] * 90), build_tables(bars, FX, vol=FAST))


@pytest.fixture(scope="module")
def spx() -> tuple[Bars, Tables]:
    bars = sp500()
    return bars, build_tables(bars, SPX)


@pytest.mark.parametrize(("split", "chunks"), [(400, [1, 1, 5, 1000]), (3000, [21, 1, 2]),
                                               (5030, [])])
def test_sp500_every_row_continues(spx: tuple[Bars, Tables], split: int,
                                   chunks: list[int]) -> None:
    """Every primitive row and every volatility row, default settings, refits included."""
    bars, want = spx
    assert_tables_equal(continued(bars, SPX, VolatilityConfig(), split, chunks), want)


def test_refit_as_a_separate_step() -> None:
    """Without inline refits, advancing stops on the refit bar; the fits, run apart and applied,
    give the same column and the same continuation."""
    bars = random_bars(140, 3)
    want = build_tables(bars, FX, vol=FAST)
    _, state = build_tables_state(window(bars, 0, 50), FX, vol=FAST)
    # refit bars: 40, 53, 66, ...: bars 50..52 need no refit, bar 53 does
    cols, after = advance_tables(state, window(bars, 50, 60), refit=False)
    assert after.n_bars == 54 and after.vol.pending
    assert np.isnan(cols.variance[:3, -1]).all()
    np.testing.assert_array_equal(cols.variance[:, :3], want.vol.variance[:, 50:53])
    jobs = due_refits(after.vol)
    assert [j.bar for j in jobs] == [53] * 3
    with pytest.raises(ValueError, match="pending"):
        advance_tables(after, window(bars, 54, 60))
    col, done = finish_refit(after, [run_refit(j) for j in jobs])
    np.testing.assert_array_equal(col, want.vol.variance[:, 53])
    cols2, _ = advance_tables(done, window(bars, 54, 140))
    np.testing.assert_array_equal(cols2.variance, want.vol.variance[:, 54:])
    np.testing.assert_array_equal(cols2.features, want.features.values[:, 54:])


def test_extending_leaves_the_old_state_alone() -> None:
    bars = random_bars(200, 11)
    tables, state = build_tables_state(window(bars, 0, 100), FX, vol=FAST)
    a, _ = extend_tables(tables, state, window(bars, 100, 200))
    b, _ = extend_tables(tables, state, window(bars, 100, 200))
    assert_tables_equal(a, b)


def test_bars_must_follow_the_state() -> None:
    bars = random_bars(100, 2)
    tables, state = build_tables_state(window(bars, 0, 60), FX, vol=FAST)
    with pytest.raises(ValueError, match="not after"):
        extend_tables(tables, state, window(bars, 59, 70))


# ---- snapshots -----------------------------------------------------------------------------

@pytest.mark.parametrize("split", [1, 39, 40, 41, 77])
def test_snapshot_restore_then_extend_equals_origin_build(tmp_path: Path, split: int) -> None:
    bars = random_bars(150, 5)
    tables, state = build_tables_state(window(bars, 0, split), FX, vol=FAST)
    save_state(tmp_path / "s.npz", state)
    restored = load_state(tmp_path / "s.npz")
    assert restored.origin == state.origin and restored.n_bars == split
    got, _ = extend_tables(tables, restored, window(bars, split, 150))
    assert_tables_equal(got, build_tables(bars, FX, vol=FAST))


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    bars = random_bars(90, 4)
    _, state = build_tables_state(bars, FX, vol=FAST)
    path = tmp_path / "state.npz"
    save_state(path, state)
    return path


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _header_edit(key: str, value: object):  # type: ignore[no-untyped-def]
    def edit(arrays: dict[str, np.ndarray]) -> None:
        doc = json.loads(str(arrays["header"]))
        doc[key] = value
        arrays["header"] = np.array(json.dumps(doc))
    return edit


def _flip_state(arrays: dict[str, np.ndarray]) -> None:
    arrays["f_rows"][3, 0] += 1e-9


@pytest.mark.parametrize(("damage", "match"), [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable"),
    (lambda p: _rewrite(p, _header_edit("version", 99)), "version 99"),
    (lambda p: _rewrite(p, _header_edit("format", "other")), "format 'other'"),
    (lambda p: _rewrite(p, _header_edit("n_bars", 91)), "digest mismatch"),
    (lambda p: _rewrite(p, _flip_state), "digest mismatch"),
    (lambda p: _rewrite(p, lambda a: a.pop("header")), "no JSON header"),
    (lambda p: p.unlink(), "not found"),
])
def test_bad_snapshots_are_refused_by_name(snapshot: Path, damage, match: str) -> None:  # type: ignore[no-untyped-def]
    damage(snapshot)
    with pytest.raises(SnapshotError, match=match) as info:
        load_state(snapshot)
    assert str(snapshot) in str(info.value)


def test_pickled_arrays_are_refused(snapshot: Path) -> None:
    with np.load(snapshot, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    arrays["f_rows"] = np.array([object()], dtype=object)
    with open(snapshot, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(SnapshotError, match="not a readable"):
        load_state(snapshot)


def test_snapshot_is_a_plain_npz(snapshot: Path) -> None:
    with zipfile.ZipFile(snapshot) as z:
        assert "header.npy" in z.namelist()
    doc = json.loads(str(np.load(snapshot, allow_pickle=False)["header"]))
    assert doc["format"] == "emp-tables-state" and doc["origin"]["index"] == 0


# ---- the live step ---------------------------------------------------------------------------

def _step_all(live: LiveTables, bars: Bars, a: int, b: int) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    feats, var, rv = [], [], []
    for t in range(a, b):
        col = live.step(int(bars.ts[t]), *(float(getattr(bars, f)[0, t]) for f in
                                           ("open", "high", "low", "close", "volume")))
        v = col.variance.copy()
        if live.pending:
            v = live.apply_refits([run_refit(j) for j in live.due_refits()])
        feats.append(col.features.copy())
        var.append(v)
        rv.append(col.rv.copy())
    return np.array(feats).T, np.array(var).T, np.array(rv).T


@pytest.mark.parametrize("split", [1, 40, 77])
def test_live_steps_equal_the_batch(tmp_path: Path, split: int) -> None:
    """Bar by bar from a snapshot, refits applied as a separate step: the batch's values."""
    more = random_bars(500, 9)
    bars = window(more, 0, 420)  # more than TAIL bars after the split: the buffers wrap
    want = build_tables(bars, FX, vol=FAST)
    _, state = build_tables_state(window(bars, 0, split), FX, vol=FAST)
    save_state(tmp_path / "s.npz", state)
    live = LiveTables(load_state(tmp_path / "s.npz"))
    feats, var, rv = _step_all(live, bars, split, 420)
    assert feats.tobytes() == want.features.values[:, split:].tobytes()
    assert var.tobytes() == want.vol.variance[:, split:].tobytes()
    assert rv.tobytes() == want.vol.rv[:, split:].tobytes()
    end = live.state()
    assert end.n_bars == 420 and end.vol.count_dicts()["fits"] == want.vol.fits
    # the live state continues like any other
    got, _ = extend_tables(want, end, window(more, 420, 500))
    assert_tables_equal(got, build_tables(more, FX, vol=FAST))


def test_live_step_refuses_bad_bars() -> None:
    bars = random_bars(60, 1)
    _, state = build_tables_state(bars, FX, vol=FAST)
    live = LiveTables(state)
    t = int(bars.ts[-1])
    with pytest.raises(ValueError, match="not after"):
        live.step(t, 1.0, 1.1, 0.9, 1.0, 5.0)
    with pytest.raises(ValueError, match="bad bar"):
        live.step(t + 1, 1.0, 0.95, 0.9, 1.0, 5.0)
    with pytest.raises(ValueError, match="bad bar"):
        live.step(t + 1, float("nan"), 1.1, 0.9, 1.0, 5.0)
    assert live.n_bars == 60


def test_origin_is_recorded_with_the_run_data() -> None:
    from evolution.data import ResearchData
    from fitness.tables import origin_of

    bars = random_bars(80, 3)
    tables, state = build_tables_state(bars, FX, vol=FAST, origin_index=0)
    assert state.origin == origin_of(bars) and state.origin.ts == int(bars.ts[0])
    fp = ResearchData(bars, tables, FX, np.array([[10, 80]]), 80, 100).fingerprint()
    assert fp["origin_index"] == 0 and fp["origin_ts_ns"] == int(bars.ts[0])
    assert fp["origin_ts"].startswith("2024-01-01T00:00:00")
