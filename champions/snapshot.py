"""A strategy's state after a history, as a bundle carries it, and a bundle body without a run.

``state_after`` is what ``emp promote`` snapshots (the tables' state and the kernel's state
record after the last judged bar, the kernel left open as live trading leaves it); benchmarks
and tests build bundles for a genome and some bars with ``bare_body``, whose provenance fields
(run, gate report, history digest) name where it came from instead of a judged run.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from champions.bundle import code_identity, snapshot_section, versions
from fitness.config import SimConfig
from fitness.simulator import Tables, new_state, simulate
from fitness.tables import build_tables_state
from genome.codec import to_json
from market.barset import Bars
from market.config import SymbolMeta, VolatilityConfig


def state_after(genome: np.ndarray, bars: Bars, meta: SymbolMeta, sim: SimConfig,
                vol: VolatilityConfig, start: int = 0) -> tuple[Tables, dict[str, Any]]:
    """The tables over ``bars`` and ``body.snapshot`` after their last bar: the kernel runs
    from ``start`` to the end with its last position left open (live semantics)."""
    tables, tstate = build_tables_state(bars, meta, vol=vol)
    kernel = new_state(sim.capital)
    simulate(genome, tables, bars, meta, start, bars.n_bars, sim, state=kernel, close_out=False)
    return tables, snapshot_section(tstate, kernel, int(bars.ts[-1]), start)


def bare_body(genome: np.ndarray, bars: Bars, meta: SymbolMeta, sim: SimConfig,
              vol: VolatilityConfig, *, symbol: str, key: str, provenance: str,
              snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
    """A bundle body for ``genome`` after ``bars`` with no run behind it (benchmarks, tests):
    ``provenance`` stands in for the run id, the gate report and the history digest;
    ``snapshot``: a ``state_after`` section already computed (default: computed here)."""
    if snapshot is None:
        _, snapshot = state_after(genome, bars, meta, sim, vol)
    return {"strategy": {"key": key, "rules": "", "genome": json.loads(to_json(genome))},
            "market": {"symbol": symbol, "timeframe": bars.timeframe,
                       "meta": meta.model_dump(mode="json")},
            "config": {"fitness": sim.model_dump(mode="json"),
                       "volatility": vol.model_dump(mode="json")},
            "history": {"sha256": provenance}, "gates": {"report_sha256": provenance},
            "run": {"run_id": provenance}, "code": code_identity(), "versions": versions(),
            "snapshot": snapshot}
