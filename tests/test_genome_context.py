"""Genes that cannot act on a timeframe: neutralised by repair, one phenotype key, not in the
rule text. Checked with the real kernel on the bundled daily S&P 500 (NYSE) bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitness.simulator import build_tables, evaluate
from genome import ops
from genome import schema as S
from genome.context import ALL_DAYS, ALL_HOURS, BarContext, context_for
from genome.decode import describe
from genome.primitives import PRIMITIVE_IDS
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars

DAILY_NYSE = context_for("1d", "nyse")
HOURLY_FX = context_for("1h", "fx")
SESS = PRIMITIVE_IDS["sess"]
SESSION_GENES = [S.SESSION_START, S.SESSION_END, S.WEEKDAY0 + 5, S.WEEKDAY0 + 6]  # hours, Sa, Su
PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
SESSION_WORDS = ("session", "UTC", "Sat", "Sun", "Asia", "London", "NewYork", "Overlap")


@pytest.fixture(scope="module")
def sp500():
    """1,500 real daily NYSE bars (ts at 00:00 UTC, Monday to Friday) and their tables."""
    from market.bootstrap import bundled_frame

    f = bundled_frame("sp500").iloc[:1500]
    arr = {c: f[c].to_numpy()[None].copy() for c in ("open", "high", "low", "close", "volume")}
    bars = Bars(("SP500",), "1d", pd.DatetimeIndex(f["ts"]).as_unit("ns").asi8.copy(),
                arr["open"], arr["high"], arr["low"], arr["close"], arr["volume"], None)
    meta = SymbolMeta(asset_class="index", tick_size=0.01, value_per_unit=1.0, min_lot=0.1,
                      calendar="nyse", costs=CostModel(unit="bps", spread=1, commission=0.5,
                                                        slippage=1))
    tables = build_tables(bars, meta, vol=VolatilityConfig(window=250, refit_every=250))
    return bars, tables, meta


def kernel(genomes: np.ndarray, sp500) -> np.ndarray:
    bars, tables, meta = sp500
    return evaluate(np.atleast_2d(genomes), tables, bars, np.array([[250, 1500]]), meta)


def with_sess_slots(g: np.ndarray, rng: np.random.Generator, n: int = 2) -> np.ndarray:
    """``g`` with ``n`` random slots turned into session-mask conditions (random params)."""
    g = g.copy()
    for on in rng.choice(ops.SLOT_ON, size=n, replace=False):
        g[on: on + S.SLOT_WIDTH] = (1, SESS, rng.integers(4), rng.integers(4), rng.integers(2),
                                    rng.random(), rng.integers(4))
    return ops.repair(g)


def test_contexts_follow_the_calendar_and_the_timeframe():
    assert BarContext(frozenset({0}), frozenset(range(5))) == DAILY_NYSE
    assert context_for("1d", "fx") == BarContext(frozenset({22}), frozenset({6, 0, 1, 2, 3}))
    assert context_for("4h", "fx").hours == frozenset({22, 2, 6, 10, 14, 18})
    assert BarContext(ALL_HOURS, frozenset({6, 0, 1, 2, 3, 4})) == HOURLY_FX
    assert context_for("1d", "always").weekdays == ALL_DAYS
    # the bars' own clock agrees: real daily S&P bars open at 00:00 UTC, Monday to Friday
    from market.bootstrap import bundled_frame

    ts = pd.DatetimeIndex(bundled_frame("sp500")["ts"])
    assert set(ts.hour) == set(DAILY_NYSE.hours) and set(ts.day_of_week) == DAILY_NYSE.weekdays


@PROPS
@given(seed=st.integers(0, 2**32 - 1))
def test_daily_nyse_genomes_differing_only_in_session_genes_act_alike(seed, sp500):
    """Session hours and weekend days, varied at random: after repair for daily NYSE bars the
    genomes are identical, the kernel gives identical metrics and the key is one."""
    rng = np.random.default_rng(seed)
    a = ops.random_genome(rng)
    b = a.copy()
    b[S.SESSION_START], b[S.SESSION_END] = rng.integers(0, 24, 2)
    b[S.WEEKDAY0 + 5: S.WEEKDAY0 + 7] = rng.integers(0, 2, 2)
    ra, rb = ops.repair(a, DAILY_NYSE), ops.repair(b, DAILY_NYSE)
    assert ops.validate(ra) == [] and ops.validate(rb) == []
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(kernel(ra, sp500), kernel(rb, sp500))
    assert ops.phenotype_key(a, DAILY_NYSE) == ops.phenotype_key(b, DAILY_NYSE)
    assert ops.phenotype_key(ra) == ops.phenotype_key(rb)  # what the driver's cache uses
    assert ops.repair(ra, DAILY_NYSE).tobytes() == ra.tobytes()  # idempotent
    assert ops.repair(ra).tobytes() == ra.tobytes()  # and stable under plain repair


@PROPS
@given(seed=st.integers(0, 2**32 - 1))
def test_neutralising_keeps_the_behaviour_of_genomes_that_can_trade(seed, sp500):
    """Where a genome's window holds the daily bar's hour and it trades some weekday, repair for
    daily NYSE changes nothing the kernel sees, session-mask slots included (they become
    always/never and are simplified away): same metrics as the un-neutralised genome."""
    rng = np.random.default_rng(seed)
    g = with_sess_slots(ops.random_genome(rng, p_slot_on=0.5), rng)
    g[S.SESSION_START], g[S.SESSION_END] = rng.choice([(0, 0), (22, 3), (0, 9), (7, 7)])
    g = ops.repair(g)
    values = DAILY_NYSE.session_values()
    entry_can_fire = any(  # the rule 12 fallback changes a genome that could never open
        ops.rule_set_truth(g, r, values) is not False for r in (0, 1))
    r = ops.repair(g, DAILY_NYSE)
    assert not any(r[on] == 1 and r[on + 1] == SESS and not _is_always(r, on, values)
                   for on in ops.SLOT_ON)  # only canonical always-slots remain
    if entry_can_fire and g[ops.WEEKDAY_IDX[:5]].any():
        np.testing.assert_array_equal(kernel(g, sp500), kernel(r, sp500))


def _is_always(g: np.ndarray, on: int, values) -> bool:
    return ops.constant_truth(g, on, values) is True


def test_rules_on_daily_bars_show_no_session_hours_or_weekend():
    """The issue's example: "session 15-07 UTC (overnight) Mon,Wed-Sat" on daily NYSE bars."""
    g = ops.random_genome(np.random.default_rng(5))
    g[S.SESSION_START], g[S.SESSION_END] = 15, 7
    g[ops.WEEKDAY_IDX] = (1, 0, 1, 1, 1, 1, 0)  # Mon,Wed-Sat
    g = ops.repair(g)
    assert "session 15-07 UTC (overnight) Mon,Wed-Sat" in describe(g)
    text = describe(ops.repair(g, DAILY_NYSE), DAILY_NYSE)
    assert not any(w in text for w in SESSION_WORDS), text
    assert "trades Mon,Wed-Fri" in text  # a real weekday filter still shows
    g[ops.WEEKDAY_IDX[:5]] = 1
    text = describe(ops.repair(g, DAILY_NYSE), DAILY_NYSE)
    assert "trades" not in text and "every day" not in text


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_no_session_words_in_any_daily_rule_text(seed):
    rng = np.random.default_rng(seed)
    g = ops.repair(with_sess_slots(ops.random_genome(rng, p_slot_on=0.6), rng, n=3),
                   DAILY_NYSE)
    text = describe(g, DAILY_NYSE)
    assert not any(w in text for w in SESSION_WORDS), text


def test_session_mask_slots_become_always_or_never():
    on = S.slot_offset(0, 0)
    g = ops.random_genome(np.random.default_rng(3))
    g[ops.SLOT_ON] = 0
    london = (1, SESS, 1, 0, 0, 0.5, 0)  # in London session: never on 00:00 UTC bars
    asia = (1, SESS, 0, 0, 0, 0.5, 0)    # in Asia session: always on 00:00 UTC bars
    rsi = (1, PRIMITIVE_IDS["rsi"], 5, 1, 0, 0.3, 0)
    g[on: on + 7], g[on + 7: on + 14] = london, rsi
    g[S.LONG0] = 0  # AND: never
    r = ops.repair(g, DAILY_NYSE)
    assert describe(r, DAILY_NYSE).startswith("LONG always;")  # rule 12: nothing else opens
    g[S.LONG0] = 1  # OR: the London slot drops out
    assert describe(ops.repair(g, DAILY_NYSE), DAILY_NYSE).startswith("LONG when RSI(14) < 32")
    g[on: on + 7] = asia
    assert describe(ops.repair(g, DAILY_NYSE), DAILY_NYSE).startswith("LONG always;")
    g[S.LONG0] = 0  # AND with an always-true slot: only RSI matters
    assert describe(ops.repair(g, DAILY_NYSE), DAILY_NYSE).startswith("LONG when RSI(14) < 32")
    h = g.copy()
    h[on] = 0  # the always-true slot simply absent: the same behaviour, the same key
    assert ops.phenotype_key(g, DAILY_NYSE) == ops.phenotype_key(h, DAILY_NYSE)
    assert ops.phenotype_key(g) != ops.phenotype_key(h)  # without the context they differ


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_hourly_context_changes_nothing_but_closed_days(seed):
    """On hourly FX bars every hour acts and only Saturday never trades; on a context that holds
    every hour and day, repair is the plain repair."""
    rng = np.random.default_rng(seed)
    g = with_sess_slots(ops.random_genome(rng), rng)
    r = ops.repair(g, HOURLY_FX)
    expect = g.copy()
    expect[S.WEEKDAY0 + 5] = 0
    if not expect[ops.WEEKDAY_IDX].any():
        expect[ops.WEEKDAY_IDX[[0, 1, 2, 3, 4, 6]]] = 1
    np.testing.assert_array_equal(r, expect)
    np.testing.assert_array_equal(ops.repair(g, BarContext()), g)
    assert describe(g, BarContext()) == describe(g)


def test_four_hour_windows_narrow_to_the_bars_they_hold():
    ctx = context_for("4h", "fx")  # bars open at 22, 2, 6, 10, 14, 18 UTC
    g = ops.random_genome(np.random.default_rng(1))
    g[S.SESSION_START], g[S.SESSION_END] = 7, 16  # holds the 10:00 and 14:00 bars
    r = ops.repair(g, ctx)
    assert (r[S.SESSION_START], r[S.SESSION_END]) == (10, 15)
    g[S.SESSION_START], g[S.SESSION_END] = 20, 3  # overnight: 22:00 and 02:00
    assert tuple(ops.repair(g, ctx)[[S.SESSION_START, S.SESSION_END]]) == (22, 3)
    g[S.SESSION_START], g[S.SESSION_END] = 3, 5  # no bar opens inside: all day (rule 10)
    assert tuple(ops.repair(g, ctx)[[S.SESSION_START, S.SESSION_END]]) == (0, 0)


def test_operators_keep_genomes_neutralised():
    rng = np.random.default_rng(9)
    deap_ops = ops.deap_toolbox_ops(rng, context=DAILY_NYSE)
    pop = [ops.random_genome(rng, context=DAILY_NYSE) for _ in range(40)]
    for a, b in zip(pop[::2], pop[1::2], strict=True):
        deap_ops.mate(a, b)
        deap_ops.mutate(a)
        for g in (a, b):
            np.testing.assert_array_equal(g, ops.repair(g, DAILY_NYSE))
            assert g[S.SESSION_START] == g[S.SESSION_END] == 0 and not g[S.WEEKDAY0 + 5: S.WEEKDAY0 + 7].any()
