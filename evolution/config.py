"""The ``evolution`` config section: data, GA settings, objectives and the trade constraint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config import Strict
from fitness.metrics import METRIC_NAMES


class ObjectiveSpec(Strict):
    """One NSGA-II objective: a kernel metric aggregated over the training folds."""

    name: str
    metric: str
    agg: Literal["mean", "min", "max"] = "mean"
    direction: Literal["max", "min"] = "max"
    ref: float = Field(description="worst value counted by the hypervolume (fixed per run)")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in METRIC_NAMES:
            raise ValueError(f"unknown metric {v!r}; known: {list(METRIC_NAMES)}")
        return v


DEFAULT_OBJECTIVES = [
    ObjectiveSpec(name="sharpe", metric="sharpe", agg="mean", direction="max", ref=-2.0),
    ObjectiveSpec(name="max_drawdown", metric="max_drawdown", agg="max", direction="min", ref=1.0),
    ObjectiveSpec(name="stability", metric="sharpe", agg="min", direction="max", ref=-3.0),
]


class EvolutionConfig(Strict):
    """Defaults follow the design: population 100, crossover 0.8, mutation 0.1, NSGA-II."""

    symbol: str = "SP500"
    timeframe: str = "1d"
    start: str | None = None
    end: str | None = None
    holdout: float = Field(0.2, gt=0.0, lt=0.9, description="last fraction kept for the gates")
    warmup_bars: int = Field(250, ge=0, description="bars before the first fold (indicator warm-up)")
    folds: int = Field(4, ge=1, le=20, description="walk-forward folds: the research period is "
                       "cut into folds + 1 blocks; the last is the OOS window the gates judge, "
                       "the rest (minus the purge) forms this many training folds")
    purge_bars: int | None = Field(None, ge=0, description="bars dropped between training and "
                                   "the OOS window; default: the longest feature lookback")
    embargo: float = Field(0.01, ge=0, lt=0.5, description="fraction of the research period "
                           "embargoed after each walk-forward test window")
    population: int = Field(100, ge=8, description="per island; rounded up to a multiple of 4")
    generations: int = Field(30, ge=1)
    cxpb: float = Field(0.8, ge=0, le=1, description="crossover probability per pair")
    mutpb: float = Field(0.1, ge=0, le=1, description="mutation probability per gene")
    semantic_cx: float = Field(0.5, ge=0, le=1, description="share of section-wise crossovers")
    islands: int = Field(1, ge=1, le=32)
    migration_interval: int = Field(5, ge=1)
    migrants: int = Field(2, ge=1)
    seed: int = 42
    objectives: list[ObjectiveSpec] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    min_trades_per_year: float = Field(5.0, ge=0, description="constraint, by constraint-domination")
    workers: int | None = Field(None, ge=1, description="evaluation actors; default: cluster CPUs")
    min_task_ms: float = Field(20.0, gt=0)
    experiment: str = "emp-evolution"
    plot_every: int = Field(5, ge=1)
    top_k: int = Field(3, ge=1, description="best genomes logged with plots at the end")

    @field_validator("population")
    @classmethod
    def _multiple_of_four(cls, v: int) -> int:
        return -(-v // 4) * 4  # selTournamentDCD draws in fours

    @model_validator(mode="after")
    def _objectives(self) -> EvolutionConfig:
        if not self.objectives:
            raise ValueError("objectives must not be empty")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        if self.migrants >= self.population:
            raise ValueError("migrants must be fewer than the population")
        return self
