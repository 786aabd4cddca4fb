"""The live path end to end: the tables continued bar by bar from a saved snapshot
(``LiveTables``, GARCH refits applied as a separate step) feed the live step (``LiveStrategy``),
and together they give the backtest over the whole history: the same decisions, positions and
equity, bit for bit. This is what lets the executor trade exactly the strategy that was tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import random_bars
from test_kernel_state import varied_genome
from test_simulator import META
from test_tables_continue import window

from fitness import simulator_nb as k
from fitness.config import SimConfig
from fitness.errors import KernelInputError
from fitness.live import LiveStrategy
from fitness.simulator import STATE_DTYPE, new_state, simulate, state_record
from fitness.tables import LiveTables, build_tables, build_tables_state, load_state, save_state
from market.config import VolatilityConfig
from market.volatility import FITTED_VARIANTS, GARCH_VARIANTS, run_refit

VOL = VolatilityConfig(window=120, refit_every=37, min_bars=20)  # several refits while live


@pytest.mark.parametrize(("split", "sizing"), [(300, "risk"), (451, "full")])
def test_snapshot_tables_and_live_step_trade_the_backtest(tmp_path: Path, split: int,
                                                          sizing: str) -> None:
    bars = random_bars(640, 5)
    whole = build_tables(bars, META, vol=VOL)
    sim = SimConfig(sizing=sizing)
    # the history up to the split: the tables' state to a snapshot file, the strategies' states
    _, tstate = build_tables_state(window(bars, 0, split), META, vol=VOL)
    save_state(tmp_path / "tables.npz", tstate)
    live_tables = LiveTables(load_state(tmp_path / "tables.npz"))
    genomes = [varied_genome(s) for s in range(8)]
    strategies, backtests = [], []
    for g in genomes:
        st0 = new_state(sim.capital)
        simulate(g, whole, bars, META, 0, split, sim, state=st0, close_out=False)
        strategies.append(LiveStrategy(g, whole.features, META, whole.bars_per_year, sim, st0))
        backtests.append(simulate(g, whole, bars, META, 0, bars.n_bars, sim, close_out=False))
    refits = 0
    traded = set()
    variants = {GARCH_VARIANTS[int(g.comp.ip[0][k.I_VARIANT])] for g in strategies}
    for t in range(split, bars.n_bars):
        col = live_tables.step(int(bars.ts[t]), *(float(getattr(bars, f)[0, t]) for f in
                                                  ("open", "high", "low", "close", "volume")))
        results = None
        if live_tables.pending:  # the executor fits each genome's own variant before deciding
            results = [run_refit(j) for j in live_tables.due_refits()]
            refits += 1
        for i, (live, bt) in enumerate(zip(strategies, backtests, strict=True)):
            variance = col.variance
            if results is not None:
                mine = live_tables.fits_for(GARCH_VARIANTS[int(live.comp.ip[0][k.I_VARIANT])])
                variance = live_tables.preview_refits([r for r in results if r.variant in mine])
            d = live.step(t, bars.open[0, t], bars.high[0, t], bars.low[0, t], bars.close[0, t],
                          col.features, variance, col.rv, col.hour, col.weekday)
            assert d.equity == bt.equity[t], (i, t)
            assert live.state[k.ST_UNITS] == bt.position[t], (i, t)
            if live.state[k.ST_UNITS] != 0.0:
                traded.add(i)
        if results is not None:  # ... and the others after its orders are sent
            full = live_tables.apply_refits(results)
            assert np.array_equal(full, live_tables.last_variance)
            assert np.array_equal(full, whole.vol.variance[:, t]), t
    assert len(variants & set(FITTED_VARIANTS)) >= 2, variants
    assert refits >= 3, "the live stretch must cross refit bars"
    assert len(traded) >= 3, "most strategies must hold positions while live"


def test_state_record_names_every_slot_once() -> None:
    """The structured view covers the flat vector exactly: every byte belongs to one field."""
    assert STATE_DTYPE.itemsize == 8 * k.N_STATE
    covered = np.zeros(k.N_STATE, dtype=int)
    for name in STATE_DTYPE.names:
        dt, off = STATE_DTYPE.fields[name][:2]
        covered[off // 8: off // 8 + dt.itemsize // 8] += 1
        assert off // 8 == getattr(k, f"ST_{name.upper()}")
    assert (covered == 1).all()
    st = new_state(2e4)
    rec = state_record(st)
    assert float(rec["cash"]) == 2e4 and rec["prev_values"].shape == (3, 4, 2)
    rec["units"] = -3.0  # a view: writes reach the kernel's vector
    assert st[k.ST_UNITS] == -3.0
    with pytest.raises(KernelInputError, match="contiguous float64"):
        state_record(np.zeros(k.N_STATE, dtype=np.float32))
