"""The venue fills like the backtest kernel: a genome's decisions, sent to the venue bar by bar
as orders (what the live executor does), give the kernel's positions, equity, fill prices and
P&L bit for bit, with risk sizing, stops, take-profits, trailing stops, reversals and
financing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_bars
from test_kernel_state import varied_genome
from test_simulator import META, tables_for

from fitness import simulator_nb as k
from fitness.config import SimConfig
from fitness.live import LiveStrategy
from fitness.simulator import simulate
from live.venue.exchange import FILLED, NEW, TRADE, Exchange, NewOrder
from live.venue.spec import spec_from_meta

N_BARS = 500


@pytest.fixture(scope="module")
def history():
    bars = random_bars(N_BARS, 5, start_price=1.1)
    return bars, tables_for(bars)


def replay_through_venue(g, bars, tables, sim):
    """Step the live strategy over every bar; send its decisions to the venue as market
    orders with the stop (and target) as distances. Returns per-bar position and equity and
    the venue's fills."""
    ls = LiveStrategy(g, tables.features, META, tables.bars_per_year, sim)
    spec = spec_from_meta("EURUSD", 1, 100_000, META, tables.bars_per_year)
    ex = Exchange({"EURUSD": spec}, cash=sim.capital)
    tp_mult = float(ls.comp.fp[0][k.P_TP_MULT])
    use_tp = int(ls.comp.ip[0][k.I_USE_TP]) == 1
    trail = int(ls.comp.ip[0][k.I_TRAIL]) == 1
    F, var, rv = tables.features.values, tables.vol.variance, tables.vol.rv
    pos, eq, fills = np.empty(N_BARS), np.empty(N_BARS), []
    for t in range(N_BARS):
        o, h, lo, c = (float(x[0, t]) for x in (bars.open, bars.high, bars.low, bars.close))
        for rep in ex.on_bar("EURUSD", t, o, h, lo, c):
            assert rep.exec_type == TRADE and rep.order.status == FILLED
            fills.append((t, rep.order.side, rep.last_qty, rep.last_px, rep.protective))
        d = ls.step(t, o, h, lo, c, F[:, t], var[:, t], rv[:, t], int(tables.hour[t]),
                    int(tables.weekday[t]))
        held = ex.positions["EURUSD"].units
        pos[t], eq[t] = held, ex.equity()
        assert eq[t] == d.equity  # the live step's own equity: same bits
        if d.target_units != held:
            delta = d.target_units - held
            opens = d.target_units != 0.0
            qty = spec.units(spec.lots(abs(delta)))  # through the wire format and back
            rep = ex.submit(NewOrder(
                f"C{t}", "EURUSD", 1 if delta > 0 else -1, qty,
                stop_dist=d.entry_dist if opens else None,
                tp_dist=tp_mult * d.entry_dist if opens and use_tp else None,
                trailing=trail and opens))
            assert rep.exec_type == NEW, rep.text
    return pos, eq, fills, ex


# seeds picked for coverage: trailing stops (3, 43), reversals (51, 109, 142), take-profits
# (87, 142), time exits (111, 209)
SEEDS = [3, 43, 51, 87, 109, 111, 142, 209]


@pytest.mark.parametrize("seed", SEEDS)
def test_venue_replay_equals_the_kernel_bit_for_bit(history, seed):
    bars, tables = history
    g = varied_genome(seed)
    sim = SimConfig()  # risk sizing, next-open fills, financing on
    batch = simulate(g, tables, bars, META, 0, N_BARS, sim, close_out=False)
    pos, eq, fills, ex = replay_through_venue(g, bars, tables, sim)
    np.testing.assert_array_equal(pos, batch.position)
    np.testing.assert_array_equal(eq, batch.equity)
    tr = batch.trades
    entries = {(int(r.entry_bar), r.entry_price) for r in tr.itertuples()}
    exits = {(int(r.exit_bar), r.exit_price) for r in tr.itertuples()}
    venue_px = {(t, px) for t, _, _, px, _ in fills}
    assert entries <= venue_px and exits <= venue_px
    # stops and targets: every kernel stop/tp exit is a protective fill of the venue
    kernel_prot = {(int(r.exit_bar), r.exit_price) for r in tr.itertuples()
                   if r.reason in ("stop", "take_profit")}
    assert kernel_prot == {(t, px) for t, _, _, px, prot in fills if prot}
    assert sum(r.pnl for r in tr.itertuples()) == pytest.approx(ex.positions["EURUSD"].realized,
                                                                rel=1e-12, abs=1e-9)


def test_the_parity_seeds_trade_and_stop_out(history):
    """The parity test is only worth something if the genomes trade, reverse and stop out."""
    bars, tables = history
    reasons: set[str] = set()
    n = 0
    for seed in SEEDS:
        tr = simulate(varied_genome(seed), tables, bars, META, 0, N_BARS, SimConfig(),
                      close_out=False).trades
        n += len(tr)
        reasons |= set(tr.reason.astype(str))
    assert n >= 20
    assert {"stop", "signal", "take_profit", "reverse", "time"} <= reasons
