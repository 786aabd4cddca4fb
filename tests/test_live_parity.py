"""Acceptance 1, parity: the executor, started from a signed champion bundle through its
pointer, trading the paper venue over FIX while the venue replays the bars after the bundle's
split, makes exactly the backtest's trades on the same bars: entry and exit bars, sides, fill
prices, units and equity, bar for bar. The backtest continues the bundle's kernel state
flattened to the account's equity (``champion.flatten``): what the executor does at a first
start (the account holds no position of the backtest)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from live_rig import SPLIT, SYMBOL, N, install, live_config, make_venue, until, world

from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor


@pytest.fixture(scope="module")
def w():
    return world()


def test_the_planted_edge_trades_after_the_split(w):
    tr = w.batch.trades
    assert len(tr) >= 4, "the parity test needs trades to compare"
    assert {"time", "reverse"} <= set(tr.reason.astype(str))


def test_executor_trades_equal_the_backtest(w, tmp_path):
    pub = install(w, tmp_path)

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        acc = await start_acceptor(acc_settings, venue)
        cfg = parse_live_config(live_config(tmp_path, pub, acc.port))
        ex = Executor(cfg)
        await ex.start()
        pos, eq = [], []
        try:
            for i in range(N - SPLIT):
                await venue.step()
                await until(lambda i=i: ex.bars_done == i + 1, f"bar {i} processed")
                await until(lambda: not [o for o in ex.orders.open_orders()
                                         if o.status in ("pending_new", "sent")], "order acks")
                p = venue.exchange.positions[SYMBOL]
                pos.append(p.units)
                eq.append(venue.exchange.equity())
            fills = [(o.received_bar, o.side, o.cum_qty, o.avg_px, o.cl_ord_id)
                     for o in venue.exchange.orders.values() if o.cum_qty > 0]
            store_fills = ex.store.positions()
            return np.array(pos), np.array(eq), fills, store_fills, venue
        finally:
            await ex.stop()
            await acc.close()

    pos, eq, fills, store_pos, _venue = asyncio.run(run())
    b = w.batch
    np.testing.assert_array_equal(pos, b.position[SPLIT:N] if len(b.position) == N
                                  else b.position)
    np.testing.assert_array_equal(eq, b.equity[SPLIT:N] if len(b.equity) == N else b.equity)
    # the venue's AvgPx of a one-fill order is px*qty/qty: equal to its LastPx within 1 ulp
    venue_px: dict[int, list[float]] = {}
    for t, _, _, px, cl in fills:
        venue_px.setdefault(SPLIT + t + (0 if cl.endswith(("-SL", "-TP")) else 1), []).append(px)
    for r in b.trades.itertuples():
        for bar, px in ((int(r.entry_bar), r.entry_price), (int(r.exit_bar), r.exit_price)):
            assert any(v == pytest.approx(px, rel=1e-14) for v in venue_px.get(bar, [])), (
                f"kernel fill at bar {bar} price {px!r}: venue filled {venue_px.get(bar)}")
    sides = {int(r.entry_bar): 1 if r.side == "long" else -1 for r in b.trades.itertuples()}
    for bar, side in sides.items():
        assert np.sign(pos[bar - SPLIT]) == side
    assert store_pos.get(SYMBOL, 0.0) == pytest.approx(pos[-1])
