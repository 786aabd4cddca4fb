"""The kernel benchmark's comparison mode (close fills, all-in sizing, no costs) against a plain
numpy SMA-cross backtest, so the vectorbt parity check compares like with like even where the
'bench' extra is not installed."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from benchmarks.bench_kernel import FREE, M_TOTAL, M_TRADES, ours_sma_cross, sp500_bars
from fitness.config import SimConfig
from fitness.simulator import build_tables
from market.config import VolatilityConfig


def plain_sma_cross(close: np.ndarray, fast: int, slow: int) -> tuple[float, int]:
    f = pd.Series(close).rolling(fast).mean().to_numpy()
    s = pd.Series(close).rolling(slow).mean().to_numpy()
    equity, units, cash, trades = 1.0, 0.0, 1.0, 0
    for t in range(1, len(close) - 1):  # no new position on the last bar
        up = f[t] > s[t] and f[t - 1] <= s[t - 1]
        down = f[t] < s[t] and f[t - 1] >= s[t - 1]
        if units == 0.0 and up:
            units, cash = cash / close[t], 0.0
        elif units > 0.0 and down:
            cash, units, trades = units * close[t], 0.0, trades + 1
    if units > 0.0:
        cash, trades = units * close[-1], trades + 1
    equity = cash
    return equity - 1.0, trades


def test_close_fill_mode_matches_a_plain_sma_cross():
    bars = sp500_bars()
    tables = build_tables(bars, FREE, vol=VolatilityConfig(window=500, refit_every=10_000))
    windows = [5, 10, 20, 50, 100, 200]
    pairs = list(itertools.combinations(windows, 2))
    sim = SimConfig(fill="close", sizing="full", financing=False)
    _, out = ours_sma_cross(bars, tables, windows, pairs, sim, FREE, 1)
    for i, (f, s) in enumerate(pairs):
        total, trades = plain_sma_cross(bars.close[0], f, s)
        assert out[i, 0, M_TRADES] == trades, (f, s)
        np.testing.assert_allclose(out[i, 0, M_TOTAL], total, rtol=1e-9, err_msg=str((f, s)))


def test_live_path_benchmark_steps_the_backtest():
    """The live figure times the executor's real path, and that path trades the backtest."""
    from benchmarks.bench_kernel import SP500_META, live_path_us

    bars = sp500_bars()
    tables = build_tables(bars, SP500_META)
    out = live_path_us(bars, tables, SP500_META, 60)
    assert out["decisions"] == out["positions_equal_backtest"] == 60
    assert 0 < out["tables_median_us"] <= out["median_us"] <= out["p99_us"]
