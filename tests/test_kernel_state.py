"""The resumable kernel: the live step against the batch kernel bit for bit, segments split and
resumed, the state record, and the symmetric full-equity sizing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulator import META, ZERO, _always_long_genome, _flat_bars, _tables_const, tables_for

from fitness import simulator_nb as k
from fitness.compile import compile_genomes
from fitness.config import SimConfig
from fitness.errors import KernelInputError
from fitness.masks import MaskCache
from fitness.simulator import REASONS, market_config, new_state, simulate
from genome.ops import random_genome, repair
from genome.schema import INDEX, WEEKDAYS

N_BARS = 700


@pytest.fixture(scope="module")
def histories():
    """Three random histories at different price levels (every one trades with 1,000-unit lots)."""
    out = []
    for seed, price in ((23, 1.1), (7, 25.0), (41, 0.9)):
        bars = random_bars(N_BARS, seed, start_price=price)
        out.append((bars, tables_for(bars)))
    return out


@pytest.fixture(scope="module")
def synth(histories):
    return histories[0]


def varied_genome(seed: int) -> np.ndarray:
    """Random rules (crossings included), every regime mode, sessions and days, stops, targets,
    trailing and time exits switched on and off at random."""
    rng = np.random.default_rng(seed)
    g = random_genome(rng, p_slot_on=float(rng.uniform(0.15, 0.7)))
    for r in ("calm", "normal", "storm"):
        g[INDEX[f"regime.{r}"]] = rng.choice([0, 1, 1, 2, 2])
    for name in ("risk.use_tp", "risk.trail", "risk.use_max_bars"):
        g[INDEX[name]] = rng.integers(0, 2)
    if rng.random() < 0.5:
        g[INDEX["session.end_hour"]] = g[INDEX["session.start_hour"]]
    if rng.random() < 0.5:
        for d in WEEKDAYS:
            g[INDEX[f"session.{d}"]] = 1
    g[INDEX["vol.calm_below"]] = rng.uniform(0.0, 0.15)
    g[INDEX["vol.storm_above"]] = rng.uniform(0.1, 0.4)
    return repair(g)


def live_run(g, tables, bars, sim, a: int, b: int, state: np.ndarray | None = None):
    """Step bars [a, b) one at a time through ``live_step``: positions, equity, trades."""
    comp = compile_genomes(g, tables.features)
    cfg = market_config(META, tables.bars_per_year, sim)
    F = tables.features.values
    if state is None:
        state = new_state(sim.capital)
        if a > 0:
            k.store_prev(state, F, comp.slots[0], comp.thr[0], comp.n_active[0], a - 1)
    stats = np.zeros(k.N_STATS)
    trades = np.empty((b - a + 1, k.N_TRADE_COLS))
    decision = np.empty(k.N_DECISION)
    pos, eq = np.empty(b - a), np.empty(b - a)
    var, rv = tables.vol.variance, tables.vol.rv
    for t in range(a, b):
        k.live_step(state, stats, trades, True, t, bars.open[0, t], bars.high[0, t],
                    bars.low[0, t], bars.close[0, t], F[:, t], var[:, t], rv[:, t],
                    int(tables.hour[t]), int(tables.weekday[t]), comp.slots[0], comp.thr[0],
                    comp.n_active[0], comp.logic[0], comp.fp[0], comp.ip[0], cfg, decision)
        pos[t - a], eq[t - a] = state[k.ST_UNITS], state[k.ST_PREV_EQ]
        if decision[k.D_EXIT] == 0.0 and state[k.ST_PEND_UNITS] == 0.0:
            assert decision[k.D_UNITS] == state[k.ST_UNITS]
    return pos, eq, trades[: int(stats[k.S_RECORDED])], state


def trade_array(frame) -> np.ndarray:
    if frame.empty:
        return np.empty((0, k.N_TRADE_COLS))
    return np.column_stack([
        frame.entry_bar, frame.exit_bar, np.where(frame.side == "long", 1.0, -1.0), frame.units,
        frame.entry_price, frame.exit_price, frame.pnl,
        [REASONS.index(r) for r in frame.reason]]).astype(np.float64)


SIMS = st.builds(lambda fill, full, lev: SimConfig(fill=fill, sizing="full" if full else "risk",
                                                   max_leverage=lev),
                 st.sampled_from(["next_open", "close"]), st.booleans(), st.floats(0.3, 4.0))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), a=st.integers(0, N_BARS - 3), span=st.integers(2, 500),
       sim=SIMS, which=st.integers(0, 2))
def test_live_steps_equal_the_batch_kernel_bit_for_bit(histories, seed, a, span, sim, which):
    bars, tables = histories[which]
    b = min(N_BARS, a + span)
    g = varied_genome(seed)
    batch = simulate(g, tables, bars, META, a, b, sim, close_out=False)
    pos, eq, trades, state = live_run(g, tables, bars, sim, a, b)
    np.testing.assert_array_equal(pos, batch.position)
    np.testing.assert_array_equal(eq, batch.equity)
    np.testing.assert_array_equal(trades, trade_array(batch.trades))
    # the batch run hands on the same state record (crossing values at b-1 included)
    st2 = new_state(sim.capital)
    comp = compile_genomes(g, tables.features)
    if a > 0:
        k.store_prev(st2, tables.features.values, comp.slots[0], comp.thr[0], comp.n_active[0], a - 1)
    simulate(g, tables, bars, META, a, b, sim, state=st2, close_out=False)
    np.testing.assert_array_equal(st2, state)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), a=st.integers(0, N_BARS - 4), span=st.integers(3, 500),
       cut=st.floats(0.0, 1.0), sim=SIMS, which=st.integers(0, 2))
def test_a_segment_split_and_resumed_equals_one_run(histories, seed, a, span, cut, sim, which):
    bars, tables = histories[which]
    b = min(N_BARS, a + span)
    m = a + 1 + int(cut * (b - a - 2))
    g = varied_genome(seed)
    cache = MaskCache()
    one = simulate(g, tables, bars, META, a, b, sim, cache=cache)
    state = new_state(sim.capital)
    first = simulate(g, tables, bars, META, a, m, sim, state=state, close_out=False, cache=cache)
    second = simulate(g, tables, bars, META, m, b, sim, state=state, cache=cache)
    np.testing.assert_array_equal(np.concatenate([first.position, second.position]), one.position)
    np.testing.assert_array_equal(np.concatenate([first.equity, second.equity]), one.equity)
    np.testing.assert_array_equal(np.concatenate([first.returns, second.returns]), one.returns)
    np.testing.assert_array_equal(
        np.concatenate([trade_array(first.trades), trade_array(second.trades)]),
        trade_array(one.trades))


def test_live_steps_then_close_out_equal_a_closed_out_batch(synth):
    """The batch closes out at the segment end; live stepping up to the last bar, then the
    batch kernel closing out that bar from the handed-on state, gives the same records."""
    bars, tables = synth
    traded = 0
    for seed in range(20):
        g = varied_genome(seed)
        sim = SimConfig()
        one = simulate(g, tables, bars, META, 40, 600, sim)
        pos, eq, trades, state = live_run(g, tables, bars, sim, 40, 599)
        np.testing.assert_array_equal(pos, one.position[:-1])
        np.testing.assert_array_equal(eq, one.equity[:-1])
        closed = trade_array(one.trades)
        traded += len(closed) > 0
        np.testing.assert_array_equal(trades, closed[: len(trades)])
        last = simulate(g, tables, bars, META, 599, 600, sim, state=state)
        np.testing.assert_array_equal(last.position, one.position[-1:])
        np.testing.assert_array_equal(last.equity, one.equity[-1:])
        np.testing.assert_array_equal(np.concatenate([trades, trade_array(last.trades)]), closed)
    assert traded >= 8


def test_live_decision_names_the_order():
    """Always-long genome: the decision at a flat close is a buy with the stop distance; once
    held, the target is the held position with its stop level."""
    bars = _flat_bars()
    tables = _tables_const(bars, 0.01)  # stop distance 1.0 at close 100: outside the wicks
    g = _always_long_genome(k_stop=1.0, use_tp=1, tp_mult=2.0)
    comp = compile_genomes(g, tables.features)
    sim = SimConfig()
    cfg = market_config(ZERO, tables.bars_per_year, sim)
    state, stats = new_state(sim.capital), np.zeros(k.N_STATS)
    d = np.empty(k.N_DECISION)
    F = tables.features.values
    for t in range(2):
        k.live_step(state, stats, np.empty((0, k.N_TRADE_COLS)), False, t, bars.open[0, t],
                    bars.high[0, t], bars.low[0, t], bars.close[0, t], F[:, t],
                    tables.vol.variance[:, t], tables.vol.rv[:, t], int(tables.hour[t]),
                    int(tables.weekday[t]), comp.slots[0], comp.thr[0], comp.n_active[0],
                    comp.logic[0], comp.fp[0], comp.ip[0], cfg, d)
        if t == 0:
            assert d[k.D_UNITS] == 1000.0 and d[k.D_ENTRY_DIST] == pytest.approx(1.0)
            assert np.isnan(d[k.D_STOP]) and d[k.D_EXIT] == 0.0
    assert state[k.ST_UNITS] == 1000.0
    assert d[k.D_STOP] == pytest.approx(99.0) and d[k.D_TP] == pytest.approx(102.0)


def test_state_layout_is_documented_and_dense():
    names = sorted((v, n) for n, v in vars(k).items() if n.startswith("ST_") and isinstance(v, int))
    assert [v for v, _ in names] == list(range(len(names)))
    assert k.N_STATE == k.ST_PREV_VALUES + 2 * 3 * 4
    st0 = new_state(5e4)
    assert st0[k.ST_CASH] == st0[k.ST_PREV_EQ] == 5e4 and st0[k.ST_UNITS] == 0.0


def test_state_of_the_wrong_shape_is_refused(synth):
    bars, tables = synth
    with pytest.raises(KernelInputError, match="state must be float64"):
        simulate(varied_genome(1), tables, bars, META, 0, 100, state=np.zeros(3))


def _short_genome(g: np.ndarray) -> np.ndarray:
    s = g.copy()
    for f in ("on", "prim", "param", "cmp", "thr"):
        s[INDEX[f"short.s0.{f}"]] = g[INDEX[f"long.s0.{f}"]]
    s[INDEX["long.s0.on"]] = 0
    return s


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_full_equity_sizing_is_symmetric_for_long_and_short(fill):
    """Same price, same equity: a short gets the same number of units as a long (it used to
    get (1 + f) / (1 - f) more, sized on its net proceeds)."""
    bars = _flat_bars()
    tables = _tables_const(bars, 0.004)
    meta = ZERO.model_copy(update={"costs": ZERO.costs.model_copy(
        update={"spread": 20.0, "commission": 5.0})})
    sim = SimConfig(sizing="full", fill=fill, financing=False)
    g = _always_long_genome()
    g[INDEX["risk.use_max_bars"]] = 1
    long_t = simulate(g, tables, bars, meta, 0, 12, sim).trades.iloc[0]
    short_t = simulate(_short_genome(g), tables, bars, meta, 0, 12, sim).trades.iloc[0]
    assert long_t.side == "long" and short_t.side == "short"
    assert long_t.entry_bar == short_t.entry_bar
    assert short_t.units == long_t.units
    assert long_t.units == pytest.approx(sim.capital / (100.0 * (1 + 15e-4)), rel=1e-12)


def test_live_strategy_continues_a_backtest_exactly(synth):
    """Backtest the history without closing out, hand its state to a LiveStrategy, step the
    newer bars: the same positions, equity and decisions as one backtest over everything."""
    from fitness.live import LiveStrategy

    bars, tables = synth
    F, var, rv = tables.features.values, tables.vol.variance, tables.vol.rv
    for seed in range(6):
        g = varied_genome(seed)
        whole = simulate(g, tables, bars, META, 100, 650, close_out=False)
        state = new_state(SimConfig().capital)
        simulate(g, tables, bars, META, 100, 500, state=state, close_out=False)
        live = LiveStrategy(g, tables.features, META, tables.bars_per_year, state=state)
        for t in range(500, 650):
            d = live.step(t, bars.open[0, t], bars.high[0, t], bars.low[0, t], bars.close[0, t],
                          F[:, t], var[:, t], rv[:, t], int(tables.hour[t]),
                          int(tables.weekday[t]))
            assert d.equity == whole.equity[t - 100]
            assert live.state[k.ST_UNITS] == whole.position[t - 100]
        with pytest.raises(ValueError, match="does not follow"):
            live.step(700, 1.0, 1.0, 1.0, 1.0, F[:, 0], var[:, 0], rv[:, 0], 0, 0)
