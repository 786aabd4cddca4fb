"""The look-ahead audit: honest tables and kernel pass it, every kind of injected leak fails it."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import random_bars, roc1_genome
from hypothesis import given, settings
from hypothesis import strategies as st

from fitness.simulator import Tables, build_tables, simulate
from fitness.tables import TablesState, build_tables_state
from gates import lookahead
from gates.lookahead import (
    AuditResult,
    ContinuationError,
    LookaheadError,
    audit_lookahead,
    cut_points,
)
from genome.features import NAMES
from genome.ops import random_genome, repair
from genome.primitives import PRIMITIVE_IDS
from genome.schema import INDEX
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars, truncate
from market.volatility import build_vol_table

FX = SymbolMeta(asset_class="fx", tick_size=1e-5, value_per_unit=1.0, min_lot=1000.0,
                calendar="always",
                costs=CostModel(unit="pips", pip_size=1e-4, spread=0.8, commission=0.3,
                                slippage=0.2, financing_annual=0.02))
SPX = SymbolMeta(asset_class="index", tick_size=0.01, value_per_unit=1.0, min_lot=0.1,
                 calendar="nyse", costs=CostModel(unit="bps", spread=1, commission=0.5,
                                                  slippage=1, financing_annual=0.03))
SMALL = VolatilityConfig(window=250, refit_every=500)
NOFIT = VolatilityConfig(window=5000, refit_every=5000)  # EWMA only: for tests about features
ROC1 = NAMES.index("roc(1)")


def sp500_bars(n: int | None = None) -> Bars:
    from market.bootstrap import bundled_frame

    f = bundled_frame("sp500")
    f = f if n is None else f.iloc[:n]
    arr = {c: f[c].to_numpy()[None].copy() for c in ("open", "high", "low", "close", "volume")}
    return Bars(("SP500",), "1d", pd.DatetimeIndex(f["ts"]).as_unit("ns").asi8.copy(),
                arr["open"], arr["high"], arr["low"], arr["close"], arr["volume"], None)


def random_genomes(seed: int, n: int = 20) -> np.ndarray:
    """Random genomes that mostly trade: every regime on, entries at p_slot_on 0.3."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = random_genome(rng, p_slot_on=0.3)
        for r in ("calm", "normal", "storm"):
            g[INDEX[f"regime.{r}"]] = rng.choice([1, 1, 2])
        out.append(repair(g))
    return np.stack(out)


def trades_before(genomes: np.ndarray, tables: Tables, bars: Bars, meta: SymbolMeta, start: int,
                  cut: int) -> int:
    """How many genomes enter a trade before ``cut``: guards the passing audits against vacuity."""
    return sum(int((simulate(g, tables, bars, meta, start).trades.entry_bar < cut).any())
               for g in genomes)


def when(bars: Bars, bar: int) -> str:
    return bars.index()[bar].isoformat()


# ---- leaky table builders and tables ---------------------------------------------------------

def _next_bar(x: np.ndarray) -> np.ndarray:
    """x[t] := x[t + 1]: a value that uses the next bar (the last one has nothing, NaN)."""
    out = np.full_like(x, np.nan)
    out[..., :-1] = x[..., 1:]
    return out


def _centred(x: np.ndarray) -> np.ndarray:
    """A centred 3-bar mean: the plotting habit that quietly reads one bar ahead."""
    out = np.full_like(x, np.nan)
    out[1:-1] = (x[:-2] + x[1:-1] + x[2:]) / 3.0
    return out


def with_row(tables: Tables, row: int, fn) -> Tables:
    values = tables.features.values.copy()
    values[row] = fn(values[row])
    return replace(tables, features=replace(tables.features, values=values))


def with_vol(tables: Tables, what: str, fn) -> Tables:
    return replace(tables, vol=replace(tables.vol, **{what: fn(getattr(tables.vol, what))}))


def end_anchored_build(bars: Bars, meta: SymbolMeta, *, vol: VolatilityConfig,
                       cache_dir=None) -> Tables:
    """The bug the audit exists for: refit blocks laid out backwards from the series' end, so
    where the fits fall (and every forecast after the first) depends on how much history exists."""
    t = build_tables(bars, meta, vol=vol, cache_dir=None)
    close = bars.close[0]
    off = (close.shape[0] - vol.window) % vol.refit_every
    sub = build_vol_table(close[off:], t.bars_per_year, window=vol.window,
                          refit_every=vol.refit_every, ewma_lambda=vol.ewma_lambda,
                          min_bars=vol.min_bars)
    variance = t.vol.variance.copy()
    variance[:, off:] = sub.variance
    return replace(t, vol=replace(t.vol, variance=variance))


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth() -> tuple[Bars, Tables]:
    bars = random_bars(3000, 5)
    return bars, build_tables(bars, FX, vol=SMALL)


@pytest.fixture(scope="module")
def spx() -> tuple[Bars, Tables]:
    bars = sp500_bars()
    return bars, build_tables(bars, SPX, vol=SMALL)


# ---- cut_points and truncate -----------------------------------------------------------------

def test_cut_points_are_seeded():
    assert cut_points(5000, 250, 5, seed=7) == cut_points(5000, 250, 5, seed=7)
    assert len({tuple(cut_points(5000, 250, 5, seed=s)) for s in range(5)}) > 1


@settings(max_examples=200, deadline=None)
@given(n_bars=st.integers(0, 400), start=st.integers(0, 400), n_cuts=st.integers(1, 50),
       seed=st.integers(0, 2**32 - 1))
def test_cut_points_bounds(n_bars, start, n_cuts, seed):
    room = n_bars - 1 - (start + 3) + 1
    if room < 1:
        with pytest.raises(ValueError, match="no cut point"):
            cut_points(n_bars, start, n_cuts, seed)
        return
    cuts = cut_points(n_bars, start, n_cuts, seed)
    assert len(cuts) == min(n_cuts, room)
    assert all(isinstance(c, int) for c in cuts)
    assert cuts == sorted(set(cuts))
    assert start + 3 <= cuts[0] and cuts[-1] <= n_bars - 1


@pytest.mark.parametrize(("n_bars", "start", "n_cuts"),
                         [(10, 7, 1), (10, 8, 3), (0, 0, 1), (100, 0, 0), (100, -1, 2)])
def test_cut_points_impossible(n_bars, start, n_cuts):
    with pytest.raises(ValueError):
        cut_points(n_bars, start, n_cuts, 0)


def test_cut_points_smallest_range_is_the_single_cut():
    assert cut_points(10, 6, 4, 1) == [9]


@pytest.mark.parametrize("end", [1, 17, 299, 300])
def test_truncate_is_the_slice_of_every_field(end):
    bars = random_bars(300, 3)
    bars = replace(bars, spread=np.abs(bars.close) * 1e-4)
    part = truncate(bars, end)
    assert (part.symbols, part.timeframe, part.n_bars) == (bars.symbols, bars.timeframe, end)
    for f in ("ts", "open", "high", "low", "close", "volume", "spread"):
        got, full = getattr(part, f), getattr(bars, f)
        np.testing.assert_array_equal(got, full[..., :end])
        assert got.dtype == full.dtype and got.flags.c_contiguous
        assert not np.shares_memory(got, full), f"{f} must not be a view on the future"
    assert truncate(replace(bars, spread=None), end).spread is None


@pytest.mark.parametrize("end", [0, -1, 301])
def test_truncate_rejects_bad_end(end):
    with pytest.raises(ValueError):
        truncate(random_bars(300, 3), end)


# ---- honest data passes ----------------------------------------------------------------------

def test_audit_passes_on_generated_hourly_bars(synth):
    bars, tables = synth
    genomes = random_genomes(1)
    cuts = cut_points(bars.n_bars, 300, 4, seed=2)
    res = audit_lookahead(genomes, bars, FX, start=300, cuts=cuts, vol=SMALL, full_tables=tables)
    assert res == AuditResult(cuts, 20, sum(c - 1 - 300 for c in cuts) * 20, cuts,
                              len(cuts) * 20 * (bars.n_bars - 300))
    assert trades_before(genomes, tables, bars, FX, 300, cuts[0]) >= 8


def test_audit_passes_on_real_sp500(spx):
    bars, tables = spx
    genomes = random_genomes(2)
    cuts = cut_points(bars.n_bars, 260, 3, seed=3)
    res = audit_lookahead(genomes, bars, SPX, start=260, cuts=cuts, vol=SMALL)  # builds its own
    assert res.cuts == cuts and res.candidates == 20
    assert trades_before(genomes, tables, bars, SPX, 260, cuts[0]) >= 8


def test_garch_refits_are_causal_under_truncation():
    """Default-like schedule (refit every 21 bars): cuts at, just after and inside refit blocks."""
    bars = sp500_bars(500)
    vc = VolatilityConfig(window=250, refit_every=21)
    tables = build_tables(bars, SPX, vol=vc)
    assert min(tables.vol.fits.values()) >= 9, "the fitted rows must really be fitted"
    fitted = tables.vol.variance[:3, 250:] != tables.vol.variance[3, 250:]
    assert fitted.mean() > 0.8, "GARCH rows must differ from the EWMA fallback"
    cuts = [250 + 21 * 3, 250 + 21 * 7 + 1, 250 + 21 * 8 + 11]  # at, after, inside a refit
    res = audit_lookahead(random_genomes(3, 5), bars, SPX, start=260, cuts=cuts, vol=vc,
                          full_tables=tables)
    assert res.cuts == cuts


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(150, 300), data=st.data())
def test_audit_passes_property(seed, n, data):
    bars = random_bars(n, seed)
    cut = data.draw(st.integers(60 + 3, n - 1), label="cut")
    audit_lookahead(random_genomes(seed, 4), bars, FX, start=60, cuts=[cut],
                    vol=VolatilityConfig(window=60, refit_every=80))


def test_one_dimensional_genome_and_argument_checks(synth):
    bars, tables = synth
    g = roc1_genome(all_week=True)
    res = audit_lookahead(g, bars, FX, start=100, cuts=[2999, 500, 500], full_tables=tables,
                          build=lambda b, m, **kw: build_tables(b, m, vol=SMALL), vol=SMALL)
    assert res == AuditResult([500, 2999], 1, (500 - 101) + (2999 - 101), [500, 2999],
                              2 * (bars.n_bars - 100))
    for cuts in ([], [102], [3000]):
        with pytest.raises(ValueError, match="cut"):
            audit_lookahead(g, bars, FX, start=100, cuts=cuts, full_tables=tables)
    with pytest.raises(ValueError, match="genomes"):
        audit_lookahead(g[:-1], bars, FX, start=100, cuts=[500], full_tables=tables)
    with pytest.raises(ValueError, match="full tables"):
        audit_lookahead(g, truncate(bars, 2000), FX, start=100, cuts=[500], full_tables=tables)


# ---- injected look-ahead fails loudly --------------------------------------------------------

@pytest.mark.parametrize("leak", [_next_bar, _centred])
def test_leaky_feature_row_is_named(synth, leak):
    bars, _ = synth
    row = NAMES.index("sma(20)")

    def build(b, meta, **kw):
        return with_row(build_tables(b, meta, **kw), row, leak)

    cut = 1777
    with pytest.raises(LookaheadError) as err:
        audit_lookahead(roc1_genome(True), bars, FX, start=300, cuts=[cut], vol=NOFIT,
                        build=build)
    msg = str(err.value)
    assert "feature row 'sma(20)'" in msg
    assert f"cut {cut}:" in msg
    assert f"bar {cut - 1} ({when(bars, cut - 1)})" in msg
    assert "candidate" not in msg


@pytest.mark.parametrize(("what", "label"), [("variance", "variance [garch11]"),
                                             ("rv", "rv [window 5]")])
def test_leaky_volatility_is_named(spx, what, label):
    bars, tables = spx
    cut = 3001

    def build(b, meta, **kw):
        return with_vol(build_tables(b, meta, **kw), what, _next_bar)

    with pytest.raises(LookaheadError) as err:
        audit_lookahead(random_genomes(4, 3), bars, SPX, start=260, cuts=[cut], vol=SMALL,
                        full_tables=with_vol(tables, what, _next_bar), build=build)
    msg = str(err.value)
    assert f"look-ahead in {label} at cut {cut}:" in msg
    assert f"bar {cut - 1} ({when(bars, cut - 1)})" in msg


def test_end_anchored_refit_schedule_is_caught():
    bars = sp500_bars(700)
    vc = VolatilityConfig(window=250, refit_every=100)
    cut = 577  # (700 - 250) % 100 = 50 but (577 - 250) % 100 = 27: the blocks move
    with pytest.raises(LookaheadError, match=r"look-ahead in variance \[") as err:
        audit_lookahead(roc1_genome(), bars, SPX, start=260, cuts=[cut], vol=vc,
                        build=end_anchored_build)
    assert "cut 577" in str(err.value)


def test_leaky_full_tables_are_caught_by_the_table_check(synth):
    """A stored full-history table with a row computed from the next bar is found before any
    replay, with the row named."""
    bars, tables = synth
    with pytest.raises(LookaheadError, match=r"feature row 'roc\(1\)' at cut 1500: bar 0 "):
        audit_lookahead(roc1_genome(True), bars, FX, start=300, cuts=[1500], vol=SMALL,
                        full_tables=with_row(tables, ROC1, _next_bar))


def test_leaky_kernel_names_candidate_cut_bar_and_values(synth, monkeypatch):
    """A kernel that reads the next bar's roc(1) when the future exists (tables honest, so only
    the replay can see it). Candidate 0 never reads roc(1) and passes; candidate 1 does."""
    bars, tables = synth
    honest = simulate

    def peeking(genome, tabs, b, meta, start=0, end=None, sim=None):
        if b.n_bars == bars.n_bars:
            tabs = with_row(tabs, ROC1, _next_bar)
        return honest(genome, tabs, b, meta, start, end, sim)

    monkeypatch.setattr(lookahead, "simulate", peeking)
    other = roc1_genome(True)
    for side in ("long", "short"):
        other[INDEX[f"{side}.s0.prim"]] = PRIMITIVE_IDS["bollz"]
    genomes = np.stack([repair(other), roc1_genome(True)])
    assert trades_before(genomes[:1], tables, bars, FX, 300, 600) > 0
    cut = 2222
    with pytest.raises(LookaheadError) as err:
        audit_lookahead(genomes, bars, FX, start=300, cuts=[cut], full_tables=tables,
                        build=lambda b, m, **kw: build_tables(b, m, vol=SMALL))
    msg = str(err.value)
    assert "look-ahead in position of candidate 1 at cut 2222:" in msg
    full = peeking(genomes[1], tables, bars, FX, 300)
    part = honest(genomes[1], build_tables(truncate(bars, cut), FX, vol=SMALL),
                  truncate(bars, cut), FX, 300)
    j = int(np.flatnonzero(full.position[: cut - 301] != part.position[: cut - 301])[0])
    assert f"bar {300 + j} ({when(bars, 300 + j)}) is {float(full.position[j])!r} on the full " \
           f"history but {float(part.position[j])!r}" in msg


def test_leak_only_in_the_last_decision_is_caught_through_the_trade_list(synth, monkeypatch):
    """A kernel that peeks only at the close of bar c - 2: positions up to c - 2 agree, but the
    reversal filled at the open of c - 1 does not happen, and the trade check names it."""
    bars, tables = synth
    honest = simulate
    g = roc1_genome(True)
    base = honest(g, tables, bars, FX, 300)
    entries = base.trades.entry_bar.to_numpy()
    long_ = (base.trades.side == "long").to_numpy()
    cut = int(entries[(entries > 1000) & long_][0]) + 1  # short reversed to long at cut - 1

    def flips_one_decision(genome, tabs, b, meta, start=0, end=None, sim=None):
        if b.n_bars == bars.n_bars:  # at the close of cut - 2 stay short instead of reversing
            tabs = with_row(tabs, ROC1, lambda x: np.where(np.arange(x.size) == cut - 2, -1.0, x))
        return honest(genome, tabs, b, meta, start, end, sim)

    monkeypatch.setattr(lookahead, "simulate", flips_one_decision)
    with pytest.raises(LookaheadError) as err:
        audit_lookahead(g, bars, FX, start=300, cuts=[cut], full_tables=tables,
                        build=lambda b, m, **kw: build_tables(b, m, vol=SMALL))
    msg = str(err.value)
    assert f"look-ahead in trade of candidate 0 at cut {cut}: bar {cut - 1}" in msg
    assert "is trade #" in msg and "no trade on the full history" in msg
    assert f"{{'entry_bar': {cut - 1}, 'side': 'long'" in msg


# ---- continuation from a snapshot ------------------------------------------------------------

def _forget(state: TablesState, row: int | None = None, vol_s: bool = False) -> TablesState:
    """A broken continuation: the restored state loses one recursion value."""
    restored = lookahead.roundtrip(state)
    if row is not None:
        restored.features.rows[row, 0] = 0.0
    if vol_s:
        restored.vol.s[:] = restored.vol.s * 1.5
    return restored


def test_continuation_passes_and_counts(synth):
    bars, tables = synth
    res = audit_lookahead(random_genomes(3, 4), bars, FX, start=300, cuts=[1500],
                          snapshots=[700, 2998], vol=SMALL, full_tables=tables)
    assert res.snapshots == [700, 2998]
    assert res.continued_compared == 2 * 4 * (bars.n_bars - 300)


@pytest.mark.parametrize("name", ["ema(20)", "rsi(14)", "macd(12,26,9)", "atrr(14,100)"])
def test_continuation_that_forgets_a_recursion_fails(synth, name):
    bars, tables = synth
    row = NAMES.index(name)
    with pytest.raises(ContinuationError, match=rf"feature row '{re.escape(name)}'.*snapshot at "
                                                r"bar 1200") as info:
        audit_lookahead(roc1_genome(), bars, FX, start=300, cuts=[1500], snapshots=[1200],
                        vol=SMALL, full_tables=tables, restore=lambda s: _forget(s, row))
    assert "built from the origin" in str(info.value)


def test_continuation_that_forgets_the_garch_recursion_fails(synth):
    bars, tables = synth
    with pytest.raises(ContinuationError, match=r"variance \[garch11\]: bar 1200 "):
        audit_lookahead(roc1_genome(), bars, FX, start=300, cuts=[1500], snapshots=[1200],
                        vol=SMALL, full_tables=tables,
                        restore=lambda s: _forget(s, vol_s=True))


def test_rebuilding_from_a_later_origin_fails(synth):
    """The bug the check exists for: 'continuing' by rebuilding on a recent window."""
    bars, _ = synth

    def rebuilt(b, meta, **kw):  # tables from the origin, state from the last 500 bars only
        full, _ = build_tables_state(b, meta, **kw)
        _, late = build_tables_state(truncate_front(b, b.n_bars - 500), meta, **kw)
        return full, replace(late, n_bars=b.n_bars)

    with pytest.raises(ContinuationError, match="continued from a snapshot at bar 1800"):
        audit_lookahead(roc1_genome(), bars, FX, start=300, cuts=[1500], snapshots=[1800],
                        vol=NOFIT, full_tables=build_tables(bars, FX, vol=NOFIT),
                        build_state=rebuilt, restore=lambda s: replace(
                            s, features=replace(s.features, n_bars=s.n_bars)))


def truncate_front(bars: Bars, start: int) -> Bars:
    f = {k: np.array(getattr(bars, k)[:, start:], order="C")
         for k in ("open", "high", "low", "close", "volume")}
    return Bars(bars.symbols, bars.timeframe, np.array(bars.ts[start:]), f["open"], f["high"],
                f["low"], f["close"], f["volume"], None)


def test_replayed_decisions_are_compared(synth):
    bars, tables = synth
    g = roc1_genome()
    full = simulate(g, tables, bars, FX, 300, None)
    other = with_row(tables, ROC1, lambda v: np.where(np.arange(v.size) >= 2000, -v, v))
    cont = simulate(g, other, bars, FX, 300, None)
    first = 300 + int(np.flatnonzero(full.position != cont.position)[0])
    assert first >= 2000
    with pytest.raises(ContinuationError, match=rf"position of candidate 0: bar {first} .*"
                                                r"snapshot at bar 1900"):
        lookahead._check_continued_replay(0, full, cont, 1900, bars)
