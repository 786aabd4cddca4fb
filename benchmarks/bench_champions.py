"""Champion bundles: how soon a live host can trade a champion.

Ours: read the bundle as the executor does (canonical form, Ed25519 signature, digests, the
tables' and kernel's state decoded) and build the live tables and strategy from its snapshot.
The comparator: the same state rebuilt by replaying the history from the origin (the feature
tables and every GARCH refit, then the kernel over every bar), which is what an executor
without a snapshot has to do. Both then decide on one new bar, and the two decisions must be
identical (``parity``). Also: the bundle's size and the time to sign one.

Series: the bundled S&P 500 (daily, 1999-2018) and a generated hourly series, both with the
default volatility config (500-bar GARCH windows refitted every 21 bars).
"""

from __future__ import annotations

from dataclasses import astuple

import numpy as np

import market.volatility as market_vol
from benchmarks.bench_kernel import SP500_META, sp500_bars
from benchmarks.timing import best_of
from champions.bundle import encode, read_bundle, snapshot_section
from champions.keys import key_id
from champions.snapshot import bare_body
from fitness.config import SimConfig
from fitness.live import LiveStrategy
from fitness.simulator import new_state, simulate
from fitness.tables import LiveTables, build_tables_state
from genome.ops import random_genome, repair
from market.config import VolatilityConfig
from market.loader import Bars


def hourly_bars(n: int, seed: int = 0) -> Bars:
    """A 24x7 hourly random walk with fat tails and consistent OHLC."""
    rng = np.random.default_rng(seed)
    hour = 3_600_000_000_000
    ts = np.int64(1_577_836_800_000_000_000) + np.arange(n, dtype=np.int64) * hour
    close = 100 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.002))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.001, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.001, n)))
    vol = rng.integers(100, 1000, n).astype(float)
    return Bars(("GEN",), "1h", ts, open_[None], high[None], low[None], close[None], vol[None],
                None)


def _replay(bars: Bars, genome: np.ndarray, vol: VolatilityConfig, sim: SimConfig):
    """The state at the end of ``bars`` the slow way: every table value and refit, every bar."""
    n = bars.n_bars - 1  # the last bar is the "new" one both paths decide on
    hist = Bars(bars.symbols, bars.timeframe, bars.ts[:n], *(a[:, :n] for a in (
        bars.open, bars.high, bars.low, bars.close, bars.volume)), None)
    tables, tstate = build_tables_state(hist, SP500_META, vol=vol)
    kernel = new_state(sim.capital)
    simulate(genome, tables, hist, SP500_META, 0, n, sim, state=kernel, close_out=False)
    return tables, tstate, kernel


def _first_decision(tables: LiveTables, strategy: LiveStrategy, bars: Bars):
    t = bars.n_bars - 1
    col = tables.step(int(bars.ts[t]), *(float(getattr(bars, f)[0, t])
                                         for f in ("open", "high", "low", "close", "volume")))
    return strategy.step(t, bars.open[0, t], bars.high[0, t], bars.low[0, t], bars.close[0, t],
                         col.features, col.variance, col.rv, col.hour, col.weekday)


def measure(bars: Bars, repeat: int, seed: int = 1, vol: VolatilityConfig | None = None) -> dict:
    """``vol``: the volatility config (default: the default one, as the benchmark reports)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    vol, sim = vol or VolatilityConfig(), SimConfig()
    genome = repair(random_genome(np.random.default_rng(seed), p_slot_on=0.5))
    tables, tstate, kernel = _replay(bars, genome, vol, sim)
    body = bare_body(genome, bars, SP500_META, sim, vol, symbol=bars.symbols[0], key="bench",
                     provenance="bench",
                     snapshot=snapshot_section(tstate, kernel, int(bars.ts[-2]), 0))
    private = Ed25519PrivateKey.generate()
    trusted = {key_id(private.public_key()): private.public_key()}
    data = encode(body, private)
    sign_s = best_of(lambda: encode(body, private), repeat)

    def from_bundle():
        b = read_bundle(data, trusted)
        return (LiveTables(b.tables_state),
                LiveStrategy(b.genome, tables.features, b.meta, tables.bars_per_year, b.sim,
                             b.kernel_state))

    def from_history():
        market_vol._FIT_MEMO.clear()  # a fresh process: no fit is memoised yet
        t2, ts2, k2 = _replay(bars, genome, vol, sim)
        return LiveTables(ts2), LiveStrategy(genome, t2.features, SP500_META,
                                             t2.bars_per_year, sim, k2)

    ours_s = best_of(from_bundle, repeat)
    replay_s = best_of(from_history, max(1, repeat // 2))
    a, b = _first_decision(*from_bundle(), bars), _first_decision(*from_history(), bars)
    same = all(x == y or (x != x and y != y) for x, y in zip(astuple(a), astuple(b), strict=True))
    return {"series": f"{bars.symbols[0]}/{bars.timeframe}", "bars": bars.n_bars,
            "bundle_bytes": len(data), "sign_ms": sign_s * 1e3,
            "ready_from_bundle_ms": ours_s * 1e3, "ready_from_replay_ms": replay_s * 1e3,
            "speedup": replay_s / ours_s, "parity": same}


def run(hourly: int = 20_000, repeat: int = 5) -> dict:
    rows = [measure(sp500_bars(), repeat)]
    if hourly > 0:
        rows.append(measure(hourly_bars(hourly), repeat))
    return {"benchmark": "champions", "unit": "ms", "cases": rows}
