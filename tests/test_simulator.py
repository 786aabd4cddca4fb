"""The kernel against the plain reference simulator, its causality, and its documented rules."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import random_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_sim import reference_run

from fitness import simulator_nb as k
from fitness.config import SimConfig
from fitness.metrics import METRIC_NAMES
from fitness.simulator import build_tables, evaluate, evaluate_trials, simulate, sketch_columns
from genome.ops import random_genome, repair
from genome.schema import INDEX, N_GENES
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars

HOUR = 3_600_000_000_000
META = SymbolMeta(asset_class="fx", tick_size=1e-5, value_per_unit=1.0, min_lot=1000.0,
                  calendar="always",
                  costs=CostModel(unit="pips", pip_size=1e-4, spread=0.8, commission=0.3,
                                  slippage=0.2, financing_annual=0.02))


def tables_for(bars: Bars, meta: SymbolMeta = META):
    return build_tables(bars, meta, vol=VolatilityConfig(window=120, refit_every=60))


@pytest.fixture(scope="module")
def synth():
    bars = random_bars(900, 11)
    return bars, tables_for(bars)


@pytest.fixture(scope="module")
def real():
    from market.bootstrap import bundled_frame

    f = bundled_frame("sp500").iloc[:1500]
    arr = {c: f[c].to_numpy()[None].copy() for c in ("open", "high", "low", "close", "volume")}
    bars = Bars(("SP500",), "1d", pd.DatetimeIndex(f["ts"]).as_unit("ns").asi8.copy(), arr["open"],
                arr["high"], arr["low"], arr["close"], arr["volume"], None)
    meta = SymbolMeta(asset_class="index", tick_size=0.01, value_per_unit=1.0, min_lot=0.1,
                      calendar="nyse", costs=CostModel(unit="bps", spread=1, commission=0.5,
                                                        slippage=1, financing_annual=0.03))
    return bars, build_tables(bars, meta, vol=VolatilityConfig(window=250, refit_every=125)), meta


def trading_genome(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = random_genome(rng, p_slot_on=0.3)
    for r in ("calm", "normal", "storm"):
        g[INDEX[f"regime.{r}"]] = rng.choice([1, 1, 2])
    g[INDEX["session.start_hour"]] = g[INDEX["session.end_hour"]] if seed % 3 else g[INDEX["session.start_hour"]]
    return repair(g)


def assert_parity(g, tables, bars, meta, sim, start, end):
    got = simulate(g, tables, bars, meta, start, end, sim)
    ref = reference_run(g, tables, bars, meta, sim, start, end)
    np.testing.assert_allclose(got.returns, ref.returns, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.position, ref.position, rtol=1e-9, atol=1e-9)
    assert len(got.trades) == len(ref.trades)
    for row, want in zip(got.trades.itertuples(), ref.trades, strict=True):
        assert (row.entry_bar, row.exit_bar) == want[:2]
        assert (1 if row.side == "long" else -1) == want[2]
        np.testing.assert_allclose([row.units, row.entry_price, row.exit_price, row.pnl],
                                   want[3:7], rtol=1e-9, atol=1e-9)
        assert ("signal", "stop", "take_profit", "time", "reverse", "end").index(row.reason) == want[7]
    return got


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_parity_with_reference_on_generated_bars(synth, fill):
    bars, tables = synth
    sim = SimConfig(fill=fill)
    traded = 0
    for seed in range(40):
        got = assert_parity(trading_genome(seed), tables, bars, META, sim, 50, 900)
        traded += len(got.trades) > 0
    assert traded >= 15, "too few random genomes traded for the parity check to mean much"


def test_parity_with_reference_on_real_sp500(real):
    bars, tables, meta = real
    traded = 0
    for seed in range(30):
        got = assert_parity(trading_genome(1000 + seed), tables, bars, meta, SimConfig(), 260, 1500)
        traded += len(got.trades) > 0
    assert traded >= 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), a=st.integers(0, 700), span=st.integers(2, 400),
       full=st.booleans(), lev=st.floats(0.2, 5.0))
def test_parity_property(synth, seed, a, span, full, lev):
    bars, tables = synth
    sim = SimConfig(sizing="full" if full else "risk", max_leverage=lev)
    assert_parity(trading_genome(seed), tables, bars, META, sim, a, min(900, a + span))


def test_batch_evaluate_equals_single_runs(synth):
    bars, tables = synth
    genomes = np.stack([trading_genome(s) for s in range(12)])
    segments = np.array([[100, 400], [400, 700], [50, 899]])
    batch = evaluate(genomes, tables, bars, segments, META)
    assert batch.shape == (12, 3, len(METRIC_NAMES))
    for i in range(12):
        for j, (a, b) in enumerate(segments):
            one = simulate(genomes[i], tables, bars, META, int(a), int(b))
            np.testing.assert_allclose(batch[i, j], list(one.metrics.values()), rtol=1e-12)
    assert np.isfinite(batch).all()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(150, 380))
def test_changing_bars_after_t_leaves_decisions_up_to_t_unchanged(seed, cut):
    """Rebuild every feature and volatility table on a future-perturbed copy: positions,
    equity and every fill up to bar t must be identical."""
    bars = random_bars(400, seed % 97)
    rng = np.random.default_rng(seed)
    alt = {f: getattr(bars, f).copy() for f in ("open", "high", "low", "close", "volume")}
    scale = np.exp(np.cumsum(rng.normal(0, 0.01, 400 - cut - 1)))
    for f in ("open", "high", "low", "close"):
        alt[f][0, cut + 1:] *= scale
    alt["volume"][0, cut + 1:] = rng.integers(1, 1000, 400 - cut - 1)
    bars2 = Bars(bars.symbols, bars.timeframe, bars.ts, alt["open"], alt["high"], alt["low"],
                 alt["close"], alt["volume"], None)
    t1, t2 = build_tables(bars, META, vol=VolatilityConfig(window=100, refit_every=40)), build_tables(
        bars2, META, vol=VolatilityConfig(window=100, refit_every=40))
    np.testing.assert_array_equal(t1.features.values[:, :cut + 1], t2.features.values[:, :cut + 1])
    np.testing.assert_array_equal(t1.vol.variance[:, :cut + 1], t2.vol.variance[:, :cut + 1])
    for s in range(6):
        g = trading_genome(seed + s)
        a = simulate(g, t1, bars, META, 0, 400)
        b = simulate(g, t2, bars2, META, 0, 400)
        np.testing.assert_array_equal(a.position[:cut + 1], b.position[:cut + 1])
        np.testing.assert_array_equal(a.equity[:cut + 1], b.equity[:cut + 1])
        ea = a.trades[a.trades.exit_bar <= cut].reset_index(drop=True)
        eb = b.trades[b.trades.exit_bar <= cut].reset_index(drop=True)
        pd.testing.assert_frame_equal(ea, eb)


# ---- hand-built cases for the documented rules ------------------------------------------------

def _flat_bars(n: int = 12, price: float = 100.0) -> Bars:
    ts = np.int64(1_704_067_200_000_000_000) + np.arange(n, dtype=np.int64) * HOUR
    p = np.full((1, n), price)
    return Bars(("X",), "1h", ts, p.copy(), p.copy() + 0.5, p.copy() - 0.5, p.copy(),
                np.ones((1, n)), None)


def _always_long_genome(k_stop=1.0, use_tp=0, tp_mult=2.0) -> np.ndarray:
    """LONG when Session(Asia) > -0.5: true on every bar with a value (no NaN warm-up)."""
    g = np.zeros(N_GENES)
    from genome.primitives import PRIMITIVE_IDS
    g[INDEX["long.s0.on"]] = 1
    g[INDEX["long.s0.prim"]] = PRIMITIVE_IDS["sess"]
    g[INDEX["long.s0.thr"]] = 0.0  # threshold 0.0 and comparator ">=": use "> -0" via cmp 0
    g[INDEX["long.s0.cmp"]] = 0
    g[INDEX["long.s0.param"]] = 0
    for r in ("calm", "normal", "storm"):
        g[INDEX[f"regime.{r}"]] = 1
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        g[INDEX[f"session.{d}"]] = 1
    g[INDEX["risk.k_stop"]] = k_stop
    g[INDEX["risk.use_tp"]] = use_tp
    g[INDEX["risk.tp_mult"]] = tp_mult
    g[INDEX["risk.risk_pct"]] = 0.01
    g[INDEX["risk.max_bars"]] = 1
    g[INDEX["vol.rv_window"]] = 0
    g[INDEX["vol.calm_below"]] = 0.02
    g[INDEX["vol.storm_above"]] = 0.8
    return g


def _tables_const(bars: Bars, sigma: float):
    """Tables with a fixed per-bar σ̂ so stop distances are known exactly."""
    from dataclasses import replace

    t = build_tables(bars, META, vol=VolatilityConfig(window=20, refit_every=20))
    vol = replace(t.vol, variance=np.full_like(t.vol.variance, sigma**2),
                  rv=np.full_like(t.vol.rv, sigma**2))
    return replace(t, vol=vol)


ZERO = SymbolMeta(asset_class="fx", tick_size=1e-5, min_lot=1.0, calendar="always",
                  costs=CostModel(unit="bps", spread=0, commission=0, slippage=0))


def test_decision_at_close_fills_at_next_open_with_costs():
    bars = _flat_bars()
    bars.open[0, 3] = 101.0  # the fill bar's open
    bars.high[0, 3] = 101.5
    g = _always_long_genome()
    # Asia session mask is 1 at 00:00-09:00 UTC; bar 0 opens 00:00 -> signal at close of bar 0
    tables = _tables_const(bars, 0.01)
    meta = ZERO.model_copy(update={"costs": CostModel(unit="bps", spread=2, commission=1, slippage=1)})
    res = simulate(g, tables, bars, meta, 2, 12)
    first = res.trades.iloc[0]
    assert first.entry_bar == 3  # decided at close of bar 2
    assert first.entry_price == pytest.approx(101.0 * (1 + 3e-4))


def test_stop_fills_first_when_stop_and_target_share_a_bar():
    bars = _flat_bars()
    g = _always_long_genome(k_stop=1.0, use_tp=1, tp_mult=1.0)
    tables = _tables_const(bars, 0.004)  # stop distance 0.4 in price at close 100
    bars.high[0, 1], bars.low[0, 1] = 101.0, 99.0  # entry bar 1 touches both stop and target
    res = simulate(g, tables, bars, ZERO, 0, 12)
    t0 = res.trades.iloc[0]
    assert t0.entry_bar == 1 and t0.exit_bar == 1 and t0.reason == "stop"
    assert t0.exit_price == pytest.approx(100.0 - 0.4)


def test_gap_through_stop_fills_at_open():
    bars = _flat_bars()
    g = _always_long_genome(k_stop=1.0)
    tables = _tables_const(bars, 0.01)  # stop 1.0 below the fill at 100
    bars.open[0, 2], bars.high[0, 2], bars.low[0, 2], bars.close[0, 2] = 98.0, 98.2, 97.5, 98.0
    res = simulate(g, tables, bars, ZERO, 0, 12)
    t0 = res.trades.iloc[0]
    assert t0.exit_bar == 2 and t0.reason == "stop" and t0.exit_price == pytest.approx(98.0)


def test_entry_below_minimum_lot_is_skipped():
    bars = _flat_bars()
    g = _always_long_genome(k_stop=1.0)
    tables = _tables_const(bars, 0.004)
    big_lot = ZERO.model_copy(update={"min_lot": 1e9})
    assert simulate(g, tables, bars, big_lot, 0, 12).trades.empty
    sized = simulate(g, tables, bars, ZERO, 0, 12).trades.iloc[0]
    # risk 1 % of 100,000 over a 0.4 stop = 2,500 units, capped by leverage 1 at 1,000 units
    assert sized.units == 1000.0


def test_costs_and_financing_reduce_returns(synth):
    bars, tables = synth
    g = trading_genome(3)
    free = META.model_copy(update={"costs": CostModel(unit="pips", pip_size=1e-4, spread=0,
                                                      commission=0, slippage=0)})
    a = simulate(g, tables, bars, META, 50, 900)
    b = simulate(g, tables, bars, free, 50, 900)
    if not a.trades.empty:
        assert a.equity[-1] < b.equity[-1]


def test_segment_validation(synth):
    bars, tables = synth
    with pytest.raises(ValueError, match="segment 1"):
        evaluate(trading_genome(1)[None], tables, bars, [[0, 100], [100, 99_999]], META)


def test_trade_reason_codes_cover_every_exit():
    assert k.R_END == 5 and k.N_TRADE_COLS == 8


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(30, 870), min_size=1, max_size=4, unique=True),
       n_samples=st.integers(1, 1000))
def test_sketch_columns_sample_the_segments_evenly(cuts, n_samples):
    edges = [20, *sorted(cuts), 880]
    seg = np.array([(a, b) for a, b in itertools.pairwise(edges) if b - a >= 2])
    cols = sketch_columns(seg, 900, n_samples)
    inside = np.zeros(900, bool)
    for a, b in seg:
        inside[a:b] = True
    picked = np.flatnonzero(cols >= 0)
    assert inside[picked].all()                      # only bars of the segments
    assert picked.size == min(n_samples, inside.sum())
    assert np.array_equal(cols[picked], np.arange(picked.size))  # in time order
    pos = np.cumsum(inside)[picked] - 1              # rank among the segments' bars
    if picked.size > 1:
        gaps = np.diff(pos)
        assert gaps.max() - gaps.min() <= 1          # evenly spaced


def test_return_sketch_is_the_returns_on_the_sampled_bars(synth):
    """The sketch is exactly the per-bar returns ``simulate`` reports, on the sampled bars; the
    metrics are unchanged by asking for it."""
    bars, tables = synth
    g = np.stack([random_genome(np.random.default_rng(s)) for s in range(12)])
    seg = np.array([[100, 400], [400, 650], [650, 900]])
    metrics, sketch = evaluate_trials(g, tables, bars, seg, META, n_samples=30)
    assert np.array_equal(metrics, evaluate(g, tables, bars, seg, META), equal_nan=True)
    cols = sketch_columns(seg, bars.n_bars, 30)
    assert sketch.shape == (12, 30) and sketch.dtype == np.float32
    for i in range(12):
        want = np.zeros(30)
        for a, b in seg:
            r = simulate(g[i], tables, bars, META, a, b).returns
            on = cols[a:b] >= 0
            want[cols[a:b][on]] = r[on]
        np.testing.assert_array_equal(sketch[i], want.astype(np.float32))
    assert np.abs(sketch).sum() > 0
    assert evaluate_trials(g, tables, bars, seg, META)[1].shape == (12, 0)
