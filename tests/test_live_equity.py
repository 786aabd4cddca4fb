"""Sizing equity from the venue (issue 14, item 2): the first start sizes from the equity the
venue reports in its CollateralReport, not from the config; after every bar the venue's equity
is polled, and a divergence beyond ``equity_resync`` re-bases the kernel's shadow equity at the
next bar (its cash moves by the difference; the position stays). Over real TCP against the paper
venue, where the two are equal to the bit unless the account changes behind the kernel."""

from __future__ import annotations

import asyncio

import pytest
from live_rig import install, live_config, make_venue, serving, until, world

from fitness import simulator_nb as k
from live.fix.message import Message
from live.venue.app import TRADE


@pytest.fixture(scope="module")
def w():
    return world()


def test_the_venue_answers_a_collateral_inquiry_with_equity_and_cash(w, tmp_path):
    _vc, venue, _ = make_venue(w, tmp_path)
    venue.exchange.cash = 12_345.5
    ok = venue.handle(TRADE, Message("BB", [(909, "q1"), (1, "1"), (581, "1")]))
    assert [(m.msg_type, m.get(909), m.get(910), float(m.get(900)), float(m.get(901)))
            for m in ok] == [("BA", "q1", "0", 12_345.5, 12_345.5)]
    bad = venue.handle(TRADE, Message("BB", [(909, "q2"), (1, "nope")]))[0]
    assert bad.get(910) == "4" and "unknown Account(1)" in bad.get(58) and bad.get(900) is None


def test_first_start_sizes_from_the_venue_and_a_divergence_is_rebased(w, tmp_path):
    pub = install(w, tmp_path)
    raw = live_config(tmp_path, pub, 0, account_equity=100_000.0, equity_resync=0.001)

    def broker_account(venue) -> None:  # the broker's account, not the config's figure
        venue.exchange.cash = 60_000.0

    async def run():
        async with serving(w, tmp_path, raw, prepare=broker_account) as (ex, venue):
            assert ex.equity() == 60_000.0 and ex.venue_equity == 60_000.0
            assert "sizing_equity" in [e for _, e, _ in ex.store.audit_log(20)]
            # bars go by; the venue's and the kernel's equity stay equal to the bit
            i = 0
            for _ in range(4):
                await venue.step()
                i += 1
                await until(lambda n=i: ex.bars_done >= n, f"bar {i}")
                await until(lambda: ex._account_poll is not None and ex._account_poll.done(),
                            "the account poll")
            assert ex.venue_equity == venue.exchange.equity()
            assert ex._resync_delta is None
            # a deposit behind the kernel's back: re-based at the next bar, in a position
            venue.exchange.cash += 5_000.0
            for _ in range(2):
                await venue.step()
                i += 1
                await until(lambda n=i: ex.bars_done >= n, f"bar {i}")
                await until(lambda: ex._account_poll.done(), "the account poll")
            assert "sizing_equity_resync" in [e for _, e, _ in ex.store.audit_log(10)]
            assert ex.runner.strategy.state[k.ST_UNITS] != 0.0  # the position was kept
            assert ex.equity() == pytest.approx(venue.exchange.equity(), rel=1e-12)
            assert ex._resync_delta is None

    asyncio.run(run())


def test_without_collateral_reports_the_config_equity_is_used(w, tmp_path):
    pub = install(w, tmp_path)
    raw = live_config(tmp_path, pub, 0, account_equity=70_000.0)

    def no_collateral_reports(venue) -> None:
        handle = venue.handle
        venue.handle = lambda role, msg: [] if msg.msg_type == "BB" else handle(role, msg)

    async def run():
        async with serving(w, tmp_path, raw, prepare=no_collateral_reports,
                           request_timeout_s=0.3) as (ex, _venue):
            assert ex.equity() == 70_000.0 and ex.venue_equity is None

    asyncio.run(run())
