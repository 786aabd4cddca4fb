"""The Python face of the live step: one strategy stepped bar by bar through the batch kernel's
own loop (``simulator_nb.live_step``), its state record carried between bars.

A ``LiveStrategy`` starts from a state record handed on by ``simulate(..., close_out=False)``
over the history (which carries the rule values crossings need from the bar before) or a saved
snapshot, or flat, in which case its first bar is treated like a history's first bar (no
crossing can fire there). It takes the newest bar with its feature column and volatility rows
and returns the decision taken at that bar's close. Stepping it over a history
gives the batch kernel's positions, fills and equity bit for bit (tests/test_kernel_state.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitness import simulator_nb as k
from fitness.compile import compile_genomes
from fitness.config import SimConfig
from fitness.errors import KernelInputError
from fitness.simulator import REASONS, market_config, new_state
from genome.features import FeatureTable
from market.config import SymbolMeta


@dataclass(frozen=True)
class Decision:
    """What to do at the next open, decided at the close of bar ``t``."""

    t: int
    target_units: float  # signed position wanted after the next open
    exit: bool           # close the position held now at the next open
    reason: str          # why (REASONS), meaningful when ``exit``
    stop: float          # stop level of the position held now (NaN: none)
    take_profit: float   # its take-profit level (NaN: none)
    entry_dist: float    # stop distance of a new entry (stop = fill -/+ dist)
    bar_return: float    # net return of bar t
    equity: float        # equity at the close of t


class LiveStrategy:
    """One compiled genome with its market settings and state record."""

    def __init__(self, genome: np.ndarray, table: FeatureTable, meta: SymbolMeta,
                 bars_per_year: float, sim: SimConfig | None = None,
                 state: np.ndarray | None = None) -> None:
        self.sim = sim or SimConfig()
        self.comp = compile_genomes(genome, table)
        self.cfg = market_config(meta, bars_per_year, self.sim)
        self.n_features = table.values.shape[0]
        if state is None:
            state = new_state(self.sim.capital)
        elif state.shape != (k.N_STATE,) or state.dtype != np.float64:
            raise KernelInputError(f"state must be float64[{k.N_STATE}], got {state.dtype}{state.shape}")
        self.state = np.array(state, dtype=np.float64)
        self.stats = np.zeros(k.N_STATS)
        self._trades = np.empty((0, k.N_TRADE_COLS))
        self._decision = np.empty(k.N_DECISION)

    def step(self, t: int, o: float, h: float, lo: float, c: float, f_col: np.ndarray,
             var_col: np.ndarray, rv_col: np.ndarray, hour: int, weekday: int) -> Decision:
        """Bar t (after the last one stepped): fills at its open, stops inside it, the decision
        at its close. ``f_col`` = feature column ``F[:, t]``; ``var_col`` / ``rv_col`` = the
        volatility table's rows at t."""
        last = int(self.state[k.ST_LAST_BAR])
        if last >= 0 and t != last + 1:
            raise KernelInputError(f"live step: bar {t} does not follow the last bar stepped ({last})")
        if f_col.shape != (self.n_features,):
            raise KernelInputError(f"live step: feature column has shape {f_col.shape}, expected "
                             f"({self.n_features},)")
        c0 = self.comp
        r = k.live_step(self.state, self.stats, self._trades, False, t, o, h, lo, c,
                        np.ascontiguousarray(f_col, np.float64), var_col, rv_col, hour, weekday,
                        c0.slots[0], c0.thr[0], c0.n_active[0], c0.logic[0], c0.fp[0], c0.ip[0],
                        self.cfg, self._decision)
        d = self._decision
        return Decision(t, float(d[k.D_UNITS]), bool(d[k.D_EXIT]), REASONS[int(d[k.D_REASON])],
                        float(d[k.D_STOP]), float(d[k.D_TP]), float(d[k.D_ENTRY_DIST]), float(r),
                        float(self.state[k.ST_PREV_EQ]))
