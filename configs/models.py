"""The file-level config schema: one section per owning package, unknown keys rejected."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from core.config import Strict
from evolution.config import EvolutionConfig
from fitness.config import SimConfig
from gates.policy import GatePolicy
from market.config import QualityConfig, SymbolMeta, VolatilityConfig


def default_home() -> Path:
    """``EMP_HOME`` holds the history store, MLflow database, runs and champions."""
    return Path(os.environ.get("EMP_HOME", "./var"))


class DataConfig(Strict):
    """Where history lives and how it is judged (owned by ``market/``)."""

    store: Path | None = Field(None, description="history store root; default $EMP_HOME/history")
    symbols: dict[str, SymbolMeta] = Field(default_factory=dict)
    quality: QualityConfig = Field(default_factory=QualityConfig)


class EmpConfig(Strict):
    """A whole EMP config file. Sections are added as their packages land."""

    home: Path = Field(default_factory=default_home)
    data: DataConfig = Field(default_factory=DataConfig)
    volatility: VolatilityConfig = Field(default_factory=VolatilityConfig)
    fitness: SimConfig = Field(default_factory=SimConfig)
    evolution: EvolutionConfig = Field(default_factory=EvolutionConfig)
    gates: GatePolicy = Field(default_factory=GatePolicy)

    def store_root(self) -> Path:
        return self.data.store if self.data.store is not None else self.home / "history"
