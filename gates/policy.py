"""The gate policy and the verdicts: what a candidate must show before it may become a champion.

The statistics come from ``gates.stats``; this module names the gates, holds their thresholds
(the ``gates`` section of a config file) and turns a candidate's figures into verdicts. A figure
that is NaN fails its gate: a candidate never passes on missing evidence.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from scipy import stats as sps

from core.config import Strict
from core.errors import EmpError
from core.jsonio import json_float


class GateError(EmpError, RuntimeError):
    """A run cannot be judged: missing, unreadable, or its history changed since."""


class BootstrapConfig(Strict):
    """Stationary bootstrap of the family-wise OOS test: an explicit mean block length and a
    fixed seed, so a report is reproducible."""

    block_size: int = Field(10, ge=1, description="mean block length in bars (not the √T default)")
    reps: int = Field(1000, ge=100)
    seed: int = 0


class GatePolicy(Strict):
    """Thresholds of every gate (defaults from the gates issue) and how the figures are made."""

    oos_sharpe_min: float = Field(0.5, description="annualised Sharpe on the OOS window, >=")
    dsr_min: float = Field(0.95, ge=0, le=1, description="deflated Sharpe ratio, >=")
    pbo_max: float = Field(0.5, ge=0, le=1, description="probability of backtest overfitting, <=")
    familywise_alpha: float = Field(
        0.10, gt=0, lt=1, description="family-wise error rate of the OOS test over the front: "
        "a candidate's Romano-Wolf step-down p-value against the benchmark, <=")
    trades_per_year_min: float = Field(10.0, ge=0, description="OOS trades per year, >=")
    oos_max_drawdown_max: float = Field(0.20, gt=0, le=1, description="OOS max drawdown, <=")
    holdout_sharpe_min: float = Field(0.0, description="hold-out annualised Sharpe, > (strictly)")
    holdout_drawdown_ratio_max: float = Field(
        1.5, gt=0, description="hold-out max drawdown / OOS max drawdown, <=")
    pbo_blocks: int = Field(16, ge=2, description="CSCV blocks S (even)")
    benchmark: Literal["flat", "buy_and_hold"] = Field(
        "flat", description="what the OOS test's excess returns are measured against")
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    lookahead_cuts: int = Field(5, ge=1, le=100, description="random cut points of the audit")
    lookahead_seed: int = 0

    @field_validator("pbo_blocks")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"pbo_blocks must be even, got {v}")
        return v


@dataclass(frozen=True)
class Gate:
    name: str
    value: float
    op: str          # ">=", "<=", ">"
    threshold: float
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": json_float(self.value), "op": self.op,
                "threshold": self.threshold, "passed": self.passed}


# name -> (figure key, comparison, policy attribute); the order is the report's column order
GATES: tuple[tuple[str, str, str, str], ...] = (
    ("oos_sharpe", "oos_sharpe", ">=", "oos_sharpe_min"),
    ("dsr", "dsr", ">=", "dsr_min"),
    ("pbo", "pbo", "<=", "pbo_max"),
    ("familywise", "familywise_p", "<=", "familywise_alpha"),
    ("trades_per_year", "oos_trades_per_year", ">=", "trades_per_year_min"),
    ("oos_max_drawdown", "oos_max_drawdown", "<=", "oos_max_drawdown_max"),
    ("holdout_sharpe", "holdout_sharpe", ">", "holdout_sharpe_min"),
    ("holdout_drawdown", "holdout_drawdown_ratio", "<=", "holdout_drawdown_ratio_max"),
)


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt}  # NaN compares False: fails


def judge(figures: dict[str, float], policy: GatePolicy, lookahead_ok: bool) -> list[Gate]:
    """Every gate's value, threshold and verdict for one candidate, then the look-ahead audit."""
    out = [Gate(name, float(figures[key]), op, float(getattr(policy, attr)),
                _OPS[op](float(figures[key]), float(getattr(policy, attr))))
           for name, key, op, attr in GATES]
    out.append(Gate("lookahead", 1.0 if lookahead_ok else 0.0, ">=", 1.0, lookahead_ok))
    return out


def drawdown_ratio(holdout_dd: float, oos_dd: float) -> float:
    """Hold-out over OOS max drawdown; a flat OOS with any hold-out loss is an infinite ratio."""
    if oos_dd > 0:
        return holdout_dd / oos_dd
    return 0.0 if holdout_dd <= 0 else math.inf


def moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-bar Sharpe (mean / sample std), skewness and Pearson kurtosis (3 for a normal) of
    ``returns``, as the PSR/DSR formulas want them. A constant series has Sharpe 0, skew 0 and
    kurtosis 3 (no evidence either way)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return 0.0, 0.0, 3.0
    sd = r.std(ddof=1)
    if not sd > 0:
        return 0.0, 0.0, 3.0
    return (float(r.mean() / sd), float(sps.skew(r)), float(sps.kurtosis(r, fisher=True) + 3.0))
