"""Live bars from bid/ask ticks follow the store's tick-to-bar ingest exactly: mid price,
tick-count volume, labelled by open time on the grid anchored at the calendar's day start
(22:00 UTC for FX); a bar is complete when the first tick of a later bar arrives."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from live_rig import SPLIT, SYMBOL, install, live_config, serving, until, world

from live.executor.bars import TickBars
from market.bars import ticks_to_bars
from market.calendars import CALENDARS

T0 = 1_700_000_000_000_000_000


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(1, 40 * 60_000_000_000), min_size=2, max_size=300),
       timeframe=st.sampled_from(["1m", "5m", "1h", "4h", "1d"]),
       calendar=st.sampled_from(CALENDARS), seed=st.integers(0, 2**16))
def test_tick_bars_equal_the_ingest(gaps, timeframe, calendar, seed):
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(np.array(gaps, dtype=np.int64))
    bid = 1.1 + np.cumsum(rng.normal(0, 1e-4, len(ts)))
    ask = bid + rng.uniform(0, 2e-4, len(ts))
    want = ticks_to_bars(pd.DataFrame({"ts": pd.to_datetime(ts, utc=True), "bid": bid,
                                       "ask": ask}), timeframe, calendar)
    tb = TickBars("X", timeframe, calendar)
    got = [b for t, b_, a in zip(ts, bid, ask, strict=True)
           if (b := tb.add(int(t), float(b_), float(a))) is not None]
    # every bar but the last (it completes only when a later tick comes) as the ingest has it
    assert len(got) == len(want) - 1
    for bar, (_, row) in zip(got, want.iterrows(), strict=False):
        assert bar.ts == row["ts"].value
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            row["open"], row["high"], row["low"], row["close"], row["volume"])


def test_the_executor_builds_its_bars_from_ticks_when_told(tmp_path):
    """``bars_from: ticks``: the executor ignores the refreshes' OHLC and builds bars from the
    bid/ask it is sent (the paper venue quotes once per bar, at its open time): each bar is
    the mid of its one tick, complete when the next bar's tick arrives, and stored."""
    w = world()
    pub = install(w, tmp_path)
    raw = live_config(tmp_path, pub, 0, bars_from="ticks", fill_wait_s=0.3)
    n = 5

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            await until(lambda: bool(venue.subs), "the market data subscription")
            for i in range(n):
                await venue.step()
                if i:
                    await until(lambda i=i: ex.bars_done >= i, f"bar {i - 1}")
            return ex.store.bars(SYMBOL), venue.specs[SYMBOL]

    stored, spec = asyncio.run(run())
    assert [b.ts for b in stored] == [int(t) for t in w.bars.ts[SPLIT:SPLIT + n - 1]]
    for b, close in zip(stored, w.bars.close[0, SPLIT:SPLIT + n - 1], strict=True):
        bid, ask = spec.quote(float(close))
        assert b.open == b.high == b.low == b.close == (bid + ask) * 0.5 and b.volume == 1.0
