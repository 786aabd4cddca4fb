"""The ``emp ginn train`` config (configs/ginn.yaml): which history, how the volatility table
and the model are built, how the history is split, how the model is judged.

A file of its own, not a section of the EMP config: the nightly job trains one symbol and
timeframe and needs none of evolution's settings. Unknown keys are errors; ``${VAR}`` and
``${VAR:-default}`` read the environment (``core.config``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.config import Strict, load_yaml_model, parse_model
from core.errors import EmpError
from market.config import CalendarName, VolatilityConfig


class GinnConfigError(EmpError, ValueError):
    """configs/ginn.yaml is unusable; the message names the file and the key."""


def _home() -> Path:
    return Path(os.environ.get("EMP_HOME", "./var"))


class ModelSection(Strict):
    """The network's input layout and size (``market.ginn.GinnSpec``)."""

    lags: int = Field(5, ge=1, le=100, description="lagged log returns per row")
    seq_len: int = Field(20, ge=1, le=500, description="LSTM window (bars) ending at t")
    hidden: int = Field(16, ge=1, le=1024, description="LSTM hidden units")
    calm_below: float = Field(0.10, gt=0, description="regime flag: annualised sigma below")
    storm_above: float = Field(0.30, gt=0, description="regime flag: annualised sigma above")

    @model_validator(mode="after")
    def _ordered(self) -> ModelSection:
        if self.calm_below >= self.storm_above:
            raise ValueError("calm_below must be below storm_above")
        return self


class TrainSection(Strict):
    """Optimiser settings (``workers.ginn_model.TrainSettings``) and the lambda search."""

    epochs: int = Field(30, ge=1, le=10_000)
    lr: float = Field(1e-3, gt=0, le=1)
    batch: int = Field(64, ge=1)
    seed: int = Field(0, ge=0)
    patience: int = Field(5, ge=1, description="epochs without a better validation loss")
    lambdas: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], min_length=1,
                                 description="candidate lambda, chosen by walk-forward")
    folds: int = Field(3, ge=1, le=20, description="walk-forward folds inside the research part")
    dtype: Literal["float64", "float32"] = Field(
        "float64", description="float64: the numpy forward pass matches to ~1e-12; float32 "
                               "trains faster on consumer GPUs (parity ~1e-6)")
    val_fraction: float = Field(0.2, gt=0, lt=0.9,
                                description="last share of the research part used for early "
                                            "stopping of the final fits")

    @model_validator(mode="after")
    def _lambdas_in_range(self) -> TrainSection:
        bad = [x for x in self.lambdas if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"lambdas must lie in [0, 1], got {bad}")
        return self


class SplitSection(Strict):
    """Research part (training, lambda choice) then test part (out-of-sample evaluation only).
    ``test_bars`` wins over ``research_fraction`` when given."""

    research_fraction: float = Field(0.7, gt=0.1, lt=0.99)
    test_bars: int | None = Field(None, ge=20, description="last N bars are the test part")
    max_bars: int | None = Field(None, ge=100, description="keep only the last N bars loaded")


class GateSection(Strict):
    """``market.vol_eval.ginn_gate``: GINN replaces GARCH only when both hold."""

    ratio_max: float = Field(0.95, gt=0, description="QLIKE(GINN)/QLIKE(GARCH) at most")
    mcs_size: float = Field(0.10, gt=0, lt=1, description="MCS size (1 - confidence)")
    mcs_reps: int = Field(1000, ge=100, description="MCS bootstrap replications")
    mcs_seed: int = Field(0, ge=0)


class GinnConfig(Strict):
    """One symbol and timeframe's nightly GINN training."""

    home: Path = Field(default_factory=_home, description="EMP home: history, ginn/, mlflow.db")
    store: Path | None = Field(None, description="history store root; default <home>/history")
    symbol: str = Field(min_length=1)
    timeframe: str = "1d"
    calendar: CalendarName | None = Field(None, description="default: the store's metadata")
    start: str | None = Field(None, description="first bar loaded (inclusive)")
    until: str | None = Field(None, description="last bar loaded is before this; default: all")
    volatility: VolatilityConfig = Field(default_factory=VolatilityConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    split: SplitSection = Field(default_factory=SplitSection)
    gate: GateSection = Field(default_factory=GateSection)
    experiment: str = Field("emp-ginn", min_length=1, description="MLflow experiment")
    cpu: bool = Field(False, description="never ask Ray for a GPU")

    def store_root(self) -> Path:
        return self.store if self.store is not None else self.home / "history"

    def ginn_dir(self) -> Path:
        """<home>/ginn/<SYMBOL>/<TF>: the exported weights and the latest.json pointer."""
        return self.home / "ginn" / self.symbol / self.timeframe


def load_ginn_config(path: str | os.PathLike[str]) -> GinnConfig:
    """The YAML file at ``path`` as a ``GinnConfig``, or a one-line ``GinnConfigError``."""
    return load_yaml_model(GinnConfig, path, "GINN config", GinnConfigError)


def parse_ginn_config(raw: object, source: str = "<ginn config>") -> GinnConfig:
    return parse_model(GinnConfig, raw, source, GinnConfigError)
