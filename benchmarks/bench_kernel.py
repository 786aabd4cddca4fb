"""Kernel benchmark: ns per bar per genome (SMA-cross and full genomes) against vectorbt's
``Portfolio.from_signals`` on the same SMA-cross grid, plus a total-return/trade-count parity
check in close-fill mode, the metrics' share of the time, and µs per live decision on the
executor's path (tables update + live step). One core for both sides (numba threads = 1). Rule
masks are built inside every timed call (a fresh mask cache) unless a figure says "warm
cache"."""

from __future__ import annotations

import itertools
import time

import numba
import numpy as np
import pandas as pd

from benchmarks.timing import best_of
from fitness import simulator_nb as k
from fitness.compile import Compiled, compile_genomes
from fitness.config import SimConfig
from fitness.live import LiveStrategy
from fitness.masks import MaskCache
from fitness.metrics import METRIC_NAMES, N_METRICS
from fitness.metrics_nb import SPARSE_SCRATCH, fill_metrics_sparse
from fitness.simulator import build_tables, market_config, new_state, simulate
from fitness.tables import LiveTables, build_tables_state
from genome.ops import random_genome
from genome.primitives_nb import sma_nb
from genome.schema import INDEX
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars, truncate
from market.volatility import run_refit

M_TOTAL = METRIC_NAMES.index("total_return")
M_TRADES = METRIC_NAMES.index("trade_count")
MINUTE = 60_000_000_000

SP500_META = SymbolMeta(asset_class="index", tick_size=0.01, value_per_unit=1.0, min_lot=0.1,
                        calendar="nyse",
                        costs=CostModel(unit="bps", spread=1.0, commission=0.5, slippage=1.0))
FREE = SP500_META.model_copy(update={"costs": CostModel(unit="bps", spread=0, commission=0,
                                                        slippage=0)})


def sp500_bars() -> Bars:
    from market.bootstrap import bundled_frame

    f = bundled_frame("sp500")
    a = {c: np.ascontiguousarray(f[c].to_numpy()[None]) for c in
         ("open", "high", "low", "close", "volume")}
    return Bars(("SP500",), "1d", pd.DatetimeIndex(f["ts"]).as_unit("ns").asi8.copy(), a["open"],
                a["high"], a["low"], a["close"], a["volume"], None)


def generated_bars(n: int, seed: int = 5) -> Bars:
    rng = np.random.default_rng(seed)
    ts = np.int64(1_577_836_800_000_000_000) + np.arange(n, dtype=np.int64) * MINUTE
    close = 100 * np.exp(np.cumsum(rng.normal(0, 4e-4, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0, 2e-4, n)) * close
    vol = rng.integers(1, 100, n).astype(float)
    return Bars(("GEN",), "1m", ts, open_[None], (np.maximum(open_, close) + wick)[None],
                (np.minimum(open_, close) - wick)[None], close[None], vol[None], None)


def sma_table(close: np.ndarray, windows: list[int]) -> np.ndarray:
    rows = np.empty((len(windows), close.shape[0]))
    for i, w in enumerate(windows):
        sma_nb(close, w, rows[i])
    return rows


def cross_compiled(pairs: list[tuple[int, int]], windows: list[int]) -> Compiled:
    """Long when SMA(fast) crosses above SMA(slow), exit when it crosses below; no shorts."""
    n = len(pairs)
    row = {w: i for i, w in enumerate(windows)}
    slots = np.zeros((n, 3, 4, 3), np.int64)
    for i, (f, s) in enumerate(pairs):
        slots[i, 0, 0] = (row[f], row[s], 2)
        slots[i, 2, 0] = (row[f], row[s], 3)
    n_active = np.zeros((n, 3), np.int64)
    n_active[:, 0] = 1
    n_active[:, 2] = 1
    fp = np.zeros((n, k.N_FPARAMS))
    fp[:, k.P_K_STOP] = 2.0
    fp[:, k.P_RISK] = 0.01
    fp[:, k.P_BLEND] = 0.7
    fp[:, k.P_CALM] = 0.0
    fp[:, k.P_STORM] = 10.0
    ip = np.zeros((n, k.N_IPARAMS), np.int64)
    ip[:, k.I_MODE0:k.I_MODE0 + 3] = 1
    ip[:, k.I_WEEKMASK] = 127
    ip[:, k.I_RVWIN] = 2
    return Compiled(slots, np.zeros((n, 3, 4)), n_active, np.zeros((n, 3), np.int64), fp, ip)


def full_genomes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = random_genome(rng, p_slot_on=1.0)
        for name in ("risk.use_tp", "risk.trail", "risk.use_max_bars"):
            g[INDEX[name]] = 1
        out.append(g)
    return np.stack(out)


def _run(F, comp: Compiled, bars: Bars, tables, cfg: np.ndarray,
         cache: MaskCache | None = None) -> np.ndarray:
    """Metrics of every genome over the whole series; rule masks built in the timed call
    unless a warm ``cache`` (a run's cache across generations) already holds them."""
    seg = np.array([[0, bars.n_bars]], np.int64)
    out = np.empty((comp.slots.shape[0], 1, N_METRICS))
    rm = (cache if cache is not None else MaskCache()).masks(comp, F, tables.hour, tables.weekday)
    k.evaluate_batch(rm.pool, rm.crow, rm.grow, comp.n_active, comp.logic, comp.fp, comp.ip,
                     *(np.ascontiguousarray(getattr(bars, c)[0]) for c in ("open", "high", "low", "close")),
                     tables.vol.variance, tables.vol.rv, cfg, seg, out,
                     np.full(bars.n_bars, -1, np.int64), np.zeros((out.shape[0], 0)),
                     4 * numba.get_num_threads())
    return out


def ours_sma_cross(bars, tables, windows, pairs, sim, meta, repeat) -> tuple[float, np.ndarray]:
    close = np.ascontiguousarray(bars.close[0])
    comp = cross_compiled(pairs, windows)
    cfg = market_config(meta, tables.bars_per_year, sim)

    def go() -> np.ndarray:
        return _run(sma_table(close, windows), comp, bars, tables, cfg)

    go()
    secs = best_of(go, repeat)
    return secs * 1e9 / (bars.n_bars * len(pairs)), go()


def ours_full(bars, tables, meta, n_genomes, repeat) -> tuple[float, float]:
    """ns/bar/genome of full genomes: compile, masks and kernel timed with a fresh mask cache
    (every condition built in the timed call), then with the cache of the previous call (a
    run's later generations, where conditions repeat)."""
    genomes = full_genomes(n_genomes)
    cfg = market_config(meta, tables.bars_per_year, SimConfig())
    cache = MaskCache()

    def go(c: MaskCache | None) -> np.ndarray:
        return _run(tables.features.values, compile_genomes(genomes, tables.features), bars,
                    tables, cfg, c)

    go(cache)
    n = bars.n_bars * n_genomes
    cold = best_of(lambda: go(None), repeat) * 1e9 / n
    return cold, best_of(lambda: go(cache), repeat) * 1e9 / n


@numba.njit(cache=True)
def _metrics_only(r: np.ndarray, at: np.ndarray, n: int, times: int, bpy: float) -> None:
    out = np.empty(N_METRICS)
    scratch = np.empty(SPARSE_SCRATCH * r.shape[0] + 64)
    for _ in range(times):
        fill_metrics_sparse(out, r, at, r.shape[0], n, scratch, 10, 5, 1.0, 1.0, 1.0,
                            r.shape[0], bpy)


def metrics_share(bars, tables, meta, repeat, n_genomes: int = 64) -> float:
    """ns/bar/genome of the metrics alone (``fill_metrics_sparse``) on the sparse returns of
    the full genome with the median count of nonzero returns among the first 9: the part of
    the figures above that the kernel's own loop does not control."""
    runs = [simulate(g, tables, bars, meta).returns for g in full_genomes(9)]
    runs.sort(key=np.count_nonzero)
    at = np.flatnonzero(runs[4]).astype(np.int64)
    bt_returns = runs[4]
    r = np.ascontiguousarray(bt_returns[at])
    _metrics_only(r, at, bars.n_bars, 1, tables.bars_per_year)
    secs = best_of(lambda: _metrics_only(r, at, bars.n_bars, n_genomes, tables.bars_per_year),
                   repeat)
    return secs * 1e9 / (bars.n_bars * n_genomes)


def live_path_us(bars: Bars, tables, meta: SymbolMeta, n_steps: int = 1000
                 ) -> dict[str, float]:
    """µs per live decision of a full genome on the executor's path: ``LiveTables.step`` (every
    feature row and volatility row of the newest bar, continued from a snapshot state) then
    ``LiveStrategy.step`` (fills, stops, the decision), both called from Python. GARCH refits
    are excluded (the executor runs them in the background); the bars that needed one are
    timed without it. Median and 99th percentile over the last ``n_steps`` S&P 500 bars; the
    decisions are checked against the backtest over the whole history."""
    g = full_genomes(1)[0]
    a = bars.n_bars - n_steps
    _, tstate = build_tables_state(truncate(bars, a), meta)
    live_tables = LiveTables(tstate)
    st0 = new_state(SimConfig().capital)
    simulate(g, tables, bars, meta, 0, a, state=st0, close_out=False)
    strategy = LiveStrategy(g, tables.features, meta, tables.bars_per_year, state=st0)
    want = simulate(g, tables, bars, meta, 0, bars.n_bars, close_out=False).position
    fields = [getattr(bars, f)[0] for f in ("open", "high", "low", "close", "volume")]
    total, table_part = np.empty(n_steps), np.empty(n_steps)
    same = 0
    for t in range(a, bars.n_bars):
        o, h, lo, c, v = (float(x[t]) for x in fields)
        t0 = time.perf_counter_ns()
        col = live_tables.step(int(bars.ts[t]), o, h, lo, c, v)
        t1 = time.perf_counter_ns()
        variance = col.variance
        if live_tables.pending:  # background work in the executor: not timed
            variance = live_tables.apply_refits([run_refit(j) for j in live_tables.due_refits()])
        t2 = time.perf_counter_ns()
        strategy.step(t, o, h, lo, c, col.features, variance, col.rv, col.hour, col.weekday)
        t3 = time.perf_counter_ns()
        total[t - a], table_part[t - a] = (t1 - t0 + t3 - t2) / 1e3, (t1 - t0) / 1e3
        same += strategy.state[k.ST_UNITS] == want[t]
    return {"median_us": round(float(np.median(total)), 2),
            "p99_us": round(float(np.quantile(total, 0.99)), 2),
            "tables_median_us": round(float(np.median(table_part)), 2),
            "decisions": n_steps, "positions_equal_backtest": int(same)}


def vbt_sma_cross(bars: Bars, windows: list[int], repeat: int) -> tuple[float, pd.Series, pd.Series]:
    import vectorbt as vbt

    close = pd.Series(bars.close[0], index=bars.index())

    def go():  # type: ignore[no-untyped-def]
        fast, slow = vbt.MA.run_combs(close, window=windows, r=2, short_names=["fast", "slow"])
        pf = vbt.Portfolio.from_signals(close, fast.ma_crossed_above(slow),
                                        fast.ma_crossed_below(slow))
        return pf

    pf = go()
    secs = best_of(go, repeat)
    n_pairs = len(list(itertools.combinations(windows, 2)))
    # vectorbt opens a zero-length trade on a crossing at the very last bar; EMP takes no new
    # position on a segment's last bar (nothing could be held), so those are not compared
    rec = pf.trades.records
    keep = rec["entry_idx"] < bars.n_bars - 1
    counts = np.bincount(rec["col"][keep], minlength=n_pairs)
    return secs * 1e9 / (bars.n_bars * n_pairs), pf.total_return(), pd.Series(counts)


def run(repeat: int = 3, big_bars: int = 1_000_000, n_full: int = 64) -> dict:
    numba.set_num_threads(1)
    result: dict[str, object] = {"bench": "kernel", "threads": 1}
    sp = sp500_bars()
    sp_tables = build_tables(sp, SP500_META)
    grid = list(range(2, 101))
    pairs = list(itertools.combinations(grid, 2))

    ours_ns, _ = ours_sma_cross(sp, sp_tables, grid, pairs, SimConfig(), SP500_META, repeat)
    parity_sim = SimConfig(fill="close", sizing="full", financing=False)
    ours_close_ns, parity_out = ours_sma_cross(sp, sp_tables, grid, pairs, parity_sim, FREE, repeat)
    vbt_ns, vbt_ret, vbt_trades = vbt_sma_cross(sp, grid, repeat)
    sp_full = ours_full(sp, sp_tables, SP500_META, n_full, repeat)
    ret_ok = np.isclose(parity_out[:, 0, M_TOTAL], vbt_ret.to_numpy(), rtol=1e-9, atol=1e-12)
    trades_ok = parity_out[:, 0, M_TRADES] == vbt_trades.to_numpy()
    result["sp500"] = {
        "bars": sp.n_bars, "sma_pairs": len(pairs),
        "sma_cross_ns_per_bar_genome": round(ours_ns, 2),
        "sma_cross_close_fill_ns_per_bar_genome": round(ours_close_ns, 2),
        "full_genome_ns_per_bar_genome": round(sp_full[0], 2),
        "full_genome_warm_cache_ns_per_bar_genome": round(sp_full[1], 2),
        "metrics_ns_per_bar_genome": round(metrics_share(sp, sp_tables, SP500_META, repeat), 2),
        "vectorbt_ns_per_bar_combination": round(vbt_ns, 1),
        "speedup_vs_vectorbt": round(vbt_ns / ours_close_ns, 1),
        "parity_pairs": len(pairs),
        "parity_total_return_equal": int(ret_ok.sum()),
        "parity_trade_count_equal": int(trades_ok.sum()),
    }

    big = generated_bars(big_bars)
    big_meta = SP500_META.model_copy(update={"calendar": "always"})
    big_tables = build_tables(big, big_meta, vol=VolatilityConfig(window=2000, refit_every=100_000))
    small_grid = [5, 10, 20, 50, 100, 200]
    small_pairs = list(itertools.combinations(small_grid, 2))
    big_ours, _ = ours_sma_cross(big, big_tables, small_grid, small_pairs, SimConfig(), big_meta, 1)
    big_close, _ = ours_sma_cross(big, big_tables, small_grid, small_pairs, parity_sim,
                                  FREE.model_copy(update={"calendar": "always"}), 1)
    big_vbt, _, _ = vbt_sma_cross(big, small_grid, 1)
    big_full = ours_full(big, big_tables, big_meta, 8, 1)
    result["generated"] = {
        "bars": big.n_bars, "sma_pairs": len(small_pairs),
        "sma_cross_ns_per_bar_genome": round(big_ours, 2),
        "sma_cross_close_fill_ns_per_bar_genome": round(big_close, 2),
        "full_genome_ns_per_bar_genome": round(big_full[0], 2),
        "full_genome_warm_cache_ns_per_bar_genome": round(big_full[1], 2),
        "metrics_ns_per_bar_genome": round(metrics_share(big, big_tables, big_meta, 1, 8), 2),
        "vectorbt_ns_per_bar_combination": round(big_vbt, 1),
        "speedup_vs_vectorbt": round(big_vbt / big_close, 1),
    }
    # warm-up on a short stretch compiles the live path; then the timed run
    live_path_us(sp, sp_tables, SP500_META, 20)
    result["live_step"] = live_path_us(sp, sp_tables, SP500_META)
    return result
