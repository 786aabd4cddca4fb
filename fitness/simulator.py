"""The Python face of the kernel: shared tables, market settings, ``evaluate`` and ``simulate``.

``evaluate`` is a pure function of its inputs and runs without Ray; workers call it on batches.
``simulate`` runs one genome with full records (equity, positions, trade list) for reports and
for the live executor's parity test; it can start from a state record and hand one back.
Both run the same kernel path (``fitness.simulator_nb``) with rule masks from a ``MaskCache``;
pass one cache for a whole run so conditions are packed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np

from fitness import simulator_nb as k
from fitness.compile import compile_genomes
from fitness.config import SimConfig
from fitness.errors import KernelInputError
from fitness.masks import MaskCache
from fitness.metrics import METRIC_NAMES, N_METRICS
from fitness.metrics_nb import SPARSE_SCRATCH, fill_metrics_sparse
from fitness.tables import Tables, build_tables  # noqa: F401 (re-exported)
from genome.schema import K_SLOTS
from market.barset import Bars
from market.config import SymbolMeta

if TYPE_CHECKING:
    import pandas as pd

REASONS = ("signal", "stop", "take_profit", "time", "reverse", "end")


def market_config(meta: SymbolMeta, bpy: float, sim: SimConfig) -> np.ndarray:
    """The kernel's settings vector: capital, per-side costs, financing, lot, leverage, modes."""
    c = meta.costs
    per_side = c.spread / 2.0 + c.commission + c.slippage
    cfg = np.zeros(k.N_CONFIG)
    cfg[k.C_CAPITAL] = sim.capital
    if c.unit == "bps":
        cfg[k.C_COST_FRAC] = per_side / 1e4
    else:
        cfg[k.C_COST_ABS] = per_side * float(c.pip_size or 0.0)
    cfg[k.C_FIN_BAR] = c.financing_annual / bpy if sim.financing else 0.0
    cfg[k.C_VPU] = meta.value_per_unit
    cfg[k.C_MIN_LOT] = meta.min_lot if sim.sizing == "risk" else 0.0
    cfg[k.C_MAX_LEV] = sim.max_leverage
    cfg[k.C_BPY] = bpy
    cfg[k.C_FILL_MODE] = 1.0 if sim.fill == "close" else 0.0
    cfg[k.C_SIZING_MODE] = 1.0 if sim.sizing == "full" else 0.0
    return cfg


def _prices(bars: Bars, symbol: int) -> tuple[np.ndarray, ...]:
    return tuple(np.ascontiguousarray(getattr(bars, f)[symbol])
                 for f in ("open", "high", "low", "close"))


def _segments(segments: np.ndarray | list[tuple[int, int]], n_bars: int,
              min_len: int = 2) -> np.ndarray:
    seg = np.ascontiguousarray(np.asarray(segments, dtype=np.int64).reshape(-1, 2))
    bad = (seg[:, 0] < 0) | (seg[:, 1] > n_bars) | (seg[:, 1] - seg[:, 0] < min_len)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise KernelInputError(f"segment {i} = {tuple(seg[i])} is not a range of >= {min_len} bars in "
                         f"[0, {n_bars})")
    return seg


def evaluate(genomes: np.ndarray, tables: Tables, bars: Bars, segments: np.ndarray,
             meta: SymbolMeta, sim: SimConfig | None = None, symbol: int = 0) -> np.ndarray:
    """Metrics ``[n_genomes, n_segments, N_METRICS]`` (order: ``METRIC_NAMES``); pure."""
    return evaluate_trials(genomes, tables, bars, segments, meta, sim, symbol)[0]


def sketch_columns(segments: np.ndarray, n_bars: int, n_samples: int) -> np.ndarray:
    """int64 ``[n_bars]``: the sketch column of each sampled bar, -1 for every other bar.

    ``n_samples`` bars (fewer if the segments hold fewer) evenly spaced over the segments'
    bars, in time order. A trial's sketch is its net return on exactly those bars: enough to
    estimate the correlation between two trials (standard error ~1/√n_samples) at a fraction
    of the memory of the whole series. Sampled bars, not sums over blocks of bars: block sums
    make two strategies that hold the same average exposure at different times look alike.
    """
    seg = _segments(segments, n_bars)
    bars = np.concatenate([np.arange(a, b) for a, b in seg])
    k = min(int(n_samples), bars.size)
    cols = np.full(n_bars, -1, dtype=np.int64)
    if k > 0:
        cols[bars[np.linspace(0, bars.size - 1, k).round().astype(np.int64)]] = np.arange(k)
    return cols


def evaluate_trials(genomes: np.ndarray, tables: Tables, bars: Bars, segments: np.ndarray,
                    meta: SymbolMeta, sim: SimConfig | None = None, symbol: int = 0,
                    n_samples: int = 0, cache: MaskCache | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate``'s metrics and each genome's return sketch ``float32 [n_genomes, B]``: its
    net returns on ``n_samples`` sampled bars (``sketch_columns``; B = 0 when ``n_samples``
    is 0): what the gates need to count the effectively independent trials.

    ``cache``: the run's rule-mask cache (a fresh one per call when None); results do not
    depend on it."""
    sim = sim or SimConfig()
    comp = compile_genomes(genomes, tables.features)
    seg = _segments(segments, bars.n_bars)
    o, h, lo, c = _prices(bars, symbol)
    out = np.empty((comp.slots.shape[0], seg.shape[0], N_METRICS))
    cols = (sketch_columns(seg, bars.n_bars, n_samples) if n_samples > 0
            else np.full(bars.n_bars, -1, dtype=np.int64))
    sketch = np.zeros((comp.slots.shape[0], int(cols.max()) + 1))
    cache = cache if cache is not None else MaskCache()
    rm = cache.masks(comp, tables.features.values, tables.hour, tables.weekday)
    k.evaluate_batch(rm.pool, rm.crow, rm.grow, comp.n_active, comp.logic, comp.fp, comp.ip,
                     o, h, lo, c, tables.vol.variance, tables.vol.rv,
                     market_config(meta, tables.bars_per_year, sim), seg, out, cols, sketch,
                     4 * numba.get_num_threads())
    return out, sketch.astype(np.float32)


@dataclass(frozen=True)
class Backtest:
    returns: np.ndarray   # per-bar net returns over [start, end)
    equity: np.ndarray    # equity at each close over [start, end)
    position: np.ndarray  # signed units held after each close
    exposure: np.ndarray  # |position notional| / equity at each close
    trades: pd.DataFrame  # entry/exit time and price, side, units, pnl, reason
    metrics: dict[str, float]


def _state_dtype() -> np.dtype:
    """The state record's named, structured layout over the kernel's float64[N_STATE] vector.

    The kernel reads the flat vector (named slots ``simulator_nb.ST_*``: faster in numba than a
    record's field access); ``state_record`` views that same memory through this dtype, so a
    state can be inspected, compared and saved by field name (``np.save`` keeps the names)."""
    slots = sorted((v, n) for n, v in vars(k).items() if n.startswith("ST_") and isinstance(v, int))
    names = [n[3:].lower() for _, n in slots]
    formats: list[object] = ["<f8"] * len(names)
    formats[-1] = ("<f8", (3, K_SLOTS, 2))  # [rule set, slot, lhs/rhs] at the last close
    return np.dtype({"names": names, "formats": formats, "offsets": [8 * v for v, _ in slots],
                     "itemsize": 8 * k.N_STATE})


STATE_DTYPE = _state_dtype()


def state_record(state: np.ndarray) -> np.ndarray:
    """A structured 0-d view (``STATE_DTYPE``) of a state vector: ``rec["cash"]`` etc.
    Writes through the view change the state."""
    if state.shape != (k.N_STATE,) or state.dtype != np.float64 or not state.flags.c_contiguous:
        raise KernelInputError(f"state must be a contiguous float64[{k.N_STATE}], got "
                               f"{state.dtype}{state.shape}")
    return state.view(STATE_DTYPE).reshape(())


def new_state(capital: float) -> np.ndarray:
    """A flat state record (``simulator_nb.ST_*``) with ``capital`` in cash, before any bar."""
    st = np.empty(k.N_STATE)
    k.init_state(st, float(capital))
    return st


def simulate(genome: np.ndarray, tables: Tables, bars: Bars, meta: SymbolMeta,
             start: int = 0, end: int | None = None, sim: SimConfig | None = None,
             symbol: int = 0, *, state: np.ndarray | None = None, close_out: bool = True,
             cache: MaskCache | None = None) -> Backtest:
    """One genome over [start, end) with every record kept.

    ``state``: a state record to continue from (updated in place, so it can be handed to the
    next segment or a live step); default: flat with ``sim.capital``. ``close_out=False``
    leaves a position open at the end and decides on the last bar too (live semantics).
    """
    sim = sim or SimConfig()
    end = bars.n_bars if end is None else end
    # a resumed segment may be a single bar; a fresh one needs a bar to decide and one to fill
    seg = _segments([(start, end)], bars.n_bars, 1 if state is not None else 2)
    comp = compile_genomes(genome, tables.features)
    o, h, lo, c = _prices(bars, symbol)
    cfg = market_config(meta, tables.bars_per_year, sim)
    if state is None:
        state = new_state(sim.capital)
    elif state.shape != (k.N_STATE,) or state.dtype != np.float64:
        raise KernelInputError(f"state must be float64[{k.N_STATE}], got {state.dtype}{state.shape}")
    F = tables.features.values
    rm = (cache if cache is not None else MaskCache()).masks(comp, F, tables.hour, tables.weekday)
    n = end - start
    r, at = np.empty(n), np.empty(n, np.int64)
    stats = np.empty(k.N_STATS)
    equity = np.full(bars.n_bars, np.nan)
    position = np.zeros(bars.n_bars)
    trades = np.empty((n + 1, k.N_TRADE_COLS))
    n_ret = k.run_segment(rm.pool, rm.crow[0], int(rm.grow[0]), comp.n_active[0], comp.logic[0],
                          comp.fp[0], comp.ip[0], o, h, lo, c, tables.vol.variance, tables.vol.rv,
                          cfg, int(seg[0, 0]), int(seg[0, 1]), close_out, state, stats, r, at,
                          True, equity, position, trades)
    k.store_prev(state, F, comp.slots[0], comp.thr[0], comp.n_active[0], end - 1)
    m = np.empty(N_METRICS)
    fill_metrics_sparse(m, r, at, n_ret, n, np.empty(SPARSE_SCRATCH * n + 64), int(stats[k.S_TRADES]),
                        int(stats[k.S_WINS]), stats[k.S_GROSS_WIN], stats[k.S_GROSS_LOSS],
                        stats[k.S_TURNOVER], int(stats[k.S_IN_MARKET]), tables.bars_per_year)
    rets = np.zeros(n)
    rets[at[:n_ret]] = r[:n_ret]
    eq, pos = equity[start:end], position[start:end]
    exposure = np.abs(pos * c[start:end] * meta.value_per_unit) / np.where(eq > 0, eq, np.inf)
    return Backtest(rets, eq, pos, exposure,
                    _trade_frame(trades[: int(stats[k.S_RECORDED])], bars),
                    dict(zip(METRIC_NAMES, m.tolist(), strict=True)))


def _trade_frame(rec: np.ndarray, bars: Bars) -> pd.DataFrame:
    import pandas as pd  # the live step never builds a trade table: no pandas in the executor

    idx = bars.index()
    entry = rec[:, k.T_ENTRY].astype(np.int64)
    exit_ = rec[:, k.T_EXIT].astype(np.int64)
    return pd.DataFrame({
        "entry_bar": entry, "exit_bar": exit_,
        "entry_time": idx[entry], "exit_time": idx[exit_],
        "side": pd.Categorical.from_codes((rec[:, k.T_SIDE] < 0).astype(np.int64),
                                          categories=["long", "short"]),
        "units": rec[:, k.T_UNITS], "entry_price": rec[:, k.T_ENTRY_PX],
        "exit_price": rec[:, k.T_EXIT_PX], "pnl": rec[:, k.T_PNL],
        "reason": pd.Categorical.from_codes(rec[:, k.T_REASON].astype(np.int64),
                                            categories=list(REASONS)),
    })
