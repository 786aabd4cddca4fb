"""Typed settings owned by the data layer: symbol metadata, cost model, quality rules.

They live here (not in ``configs/``) because ``market/`` owns them; ``configs/`` only
composes section models into the file-level schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config import Strict

AssetClass = Literal["fx", "equity", "index", "crypto", "future", "commodity"]
CalendarName = Literal["fx", "nyse", "business", "always"]
Severity = Literal["error", "warning", "off"]

QUALITY_RULES: tuple[str, ...] = (
    "duplicate_ts",
    "non_monotonic",
    "gap",
    "ohlc_inconsistent",
    "non_positive",
    "non_finite",
    "absurd_return",
    "zero_volume_run",
    "crossed_quote",
)

DEFAULT_SEVERITY: dict[str, Severity] = {
    "duplicate_ts": "error",
    "non_monotonic": "error",
    "gap": "warning",
    "ohlc_inconsistent": "error",
    "non_positive": "error",
    "non_finite": "error",
    "absurd_return": "warning",
    "zero_volume_run": "warning",
    "crossed_quote": "error",
}


class CostModel(Strict):
    """Per-symbol trading costs. ``unit`` says how spread, commission and slippage are quoted:
    ``pips`` (multiples of ``pip_size`` in price) for FX, ``bps`` (of price) for the rest."""

    unit: Literal["pips", "bps"] = "bps"
    spread: float = Field(1.0, ge=0, description="round-trip quoted spread, in unit")
    commission: float = Field(0.5, ge=0, description="per side, in unit")
    slippage: float = Field(0.5, ge=0, description="per side, in unit")
    pip_size: float | None = Field(None, gt=0, description="price of one pip; required for pips")
    financing_annual: float = Field(0.0, ge=0, le=1, description="annual carry cost of a position")

    @model_validator(mode="after")
    def _pips_need_size(self) -> CostModel:
        if self.unit == "pips" and self.pip_size is None:
            raise ValueError("pip_size is required when unit is 'pips'")
        return self


# The calendar an asset class implies when a symbol's config gives none (as the presets do).
DEFAULT_CALENDAR: dict[str, str] = {"fx": "fx", "equity": "nyse", "index": "nyse",
                                    "crypto": "always"}


class SymbolMeta(Strict):
    """What the store knows about a symbol besides its bars. ``calendar`` may be left out for
    fx (fx), equity and index (nyse) and crypto (always); futures and commodities need one."""

    asset_class: AssetClass
    tick_size: float = Field(gt=0)
    value_per_unit: float = Field(1.0, gt=0, description="account money per 1.0 price move per unit")
    min_lot: float = Field(gt=0)
    calendar: CalendarName = Field(description="trading calendar; default from asset_class")
    costs: CostModel = Field(default_factory=CostModel)

    @model_validator(mode="before")
    @classmethod
    def _calendar_from_class(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("calendar") is None:
            implied = DEFAULT_CALENDAR.get(str(data.get("asset_class")))
            if implied is not None:
                return {**data, "calendar": implied}
            if data.get("asset_class") in ("future", "commodity"):
                raise ValueError(f"calendar is required for asset class "
                                 f"{data['asset_class']!r} (no default); one of "
                                 f"{list(CalendarName.__args__)}")
        return data


class QualityConfig(Strict):
    """Data-quality rule settings. Severity 'error' makes ingest refuse (or quarantine) a row."""

    max_abs_log_return: float = Field(0.10, gt=0, le=10)
    zero_volume_run: int = Field(5, ge=1, description="consecutive zero-volume bars that count as a run")
    severity: dict[str, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY))

    @field_validator("severity", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``off`` as False; treat it as the severity 'off'."""
        if isinstance(value, dict):
            return {k: ("off" if v is False else v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _known_rules(self) -> QualityConfig:
        unknown = sorted(set(self.severity) - set(QUALITY_RULES))
        if unknown:
            raise ValueError(f"unknown quality rule(s) {unknown}; known: {list(QUALITY_RULES)}")
        merged = dict(DEFAULT_SEVERITY)
        merged.update(self.severity)
        object.__setattr__(self, "severity", merged)
        return self

    def level(self, rule: str) -> Severity:
        return self.severity[rule]


_PRESETS: dict[str, dict[str, object]] = {
    "fx": {"asset_class": "fx", "tick_size": 1e-5, "min_lot": 1000, "calendar": "fx",
           "costs": {"unit": "pips", "pip_size": 1e-4, "spread": 1.0, "commission": 0.3,
                     "slippage": 0.2}},
    "equity": {"asset_class": "equity", "tick_size": 0.01, "min_lot": 1, "calendar": "nyse"},
    "index": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1, "calendar": "nyse"},
    "crypto": {"asset_class": "crypto", "tick_size": 0.01, "min_lot": 1e-4, "calendar": "always",
               "costs": {"unit": "bps", "spread": 2.0, "commission": 5.0, "slippage": 2.0}},
}


def preset_meta(asset_class: str) -> SymbolMeta:
    """Reasonable metadata for a symbol the config does not describe (``--asset-class``)."""
    if asset_class not in _PRESETS:
        raise ValueError(f"no metadata preset for asset class {asset_class!r}; "
                         f"known: {sorted(_PRESETS)}")
    return SymbolMeta.model_validate(_PRESETS[asset_class])


class VolatilityConfig(Strict):
    """How the volatility features are fitted (``volatility`` section)."""

    window: int = Field(500, ge=20, description="bars in each GARCH fit window")
    refit_every: int = Field(21, ge=1, description="bars between refits")
    ewma_lambda: float = Field(0.94, gt=0, lt=1, description="EWMA decay; the fallback model")
    min_bars: int = Field(20, ge=2, description="bars before any σ̂ is produced")
    ginn_model: Path | None = Field(
        None, description="GINN weights file (.npz with its .json sidecar) for the 'ginn' "
        "variance row; none: that row is GARCH(1,1)'s. Its sha256 is part of the tables' key.")
    ginn_ungated: bool = Field(
        False, description="use a GINN model whose out-of-sample gate failed (GARCH won; "
        "meta.gate.passed false): refused unless set, for experiments")
