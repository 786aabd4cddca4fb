"""Simulation settings owned by ``fitness/`` (the ``fitness`` section of a config file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import Strict


class SimConfig(Strict):
    """How the kernel turns signals into fills and money."""

    capital: float = Field(100_000.0, gt=0, description="starting equity of every segment")
    max_leverage: float = Field(1.0, gt=0, le=10, description="notional cap as a multiple of equity")
    fill: Literal["next_open", "close"] = Field(
        "next_open", description="next_open: decide at close t, fill at open t+1 (the rule); "
                                 "close: fill at close t (only for comparisons with vectorbt)")
    sizing: Literal["risk", "full"] = Field(
        "risk", description="risk: volatility-stop risk sizing; full: all equity, no stop "
                            "(only for comparisons)")
    financing: bool = Field(True, description="charge the symbol's annual financing per bar held")
