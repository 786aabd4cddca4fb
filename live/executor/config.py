"""``emp live CONFIG``: the executor's YAML, validated before anything starts.

Paper mode (the default) trades against ``emp venue``; ``mode: live`` needs credentials and an
explicit ``--i-understand-live`` on the first start. ``${VAR}`` / ``${VAR:-default}`` in
string values read the environment; secrets are never written into the config itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import Strict, load_yaml_model, parse_model
from live.executor.errors import LiveConfigError
from live.fix.config import CredentialsSettings
from live.risk import RiskLimits


class FixLink(Strict):
    """The broker's (or the paper venue's) FIX endpoint: one CompID pair, QUOTE and TRADE."""

    host: str = "127.0.0.1"
    port: int = Field(5201, ge=1, le=65535)
    comp_id: str = Field("EMPCLIENT", min_length=1, description="our SenderCompID")
    venue_comp_id: str = Field("EMPVENUE", min_length=1, description="the broker's CompID")
    quote_sub_id: str = "QUOTE"
    trade_sub_id: str = "TRADE"
    heartbeat_s: int = Field(30, ge=1)
    credentials: CredentialsSettings | None = None
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    logon_timeout_s: float = Field(30.0, gt=0, description="how long start waits for a logon")
    request_timeout_s: float = Field(10.0, gt=0, description="reconciliation answers")


class SymbolLink(Strict):
    """Our symbol -> the broker's numeric id, lot size (units per lot) and tick size."""

    id: int = Field(gt=0)
    lot_size: float = Field(gt=0)
    tick_size: float | None = Field(None, gt=0)


class OpsSettings(Strict):
    """/health, /ready, /metrics on loopback (configs/live.yaml uses 9108)."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535,
                             description="None: no HTTP endpoint; 0: any free port")


class LiveConfig(Strict):
    """The executor's settings (see configs/live.yaml)."""

    mode: Literal["paper", "live"] = "paper"
    symbol: str = Field(min_length=1, description="the champion's symbol")
    stage: Literal["paper", "live"] = Field("paper", description="which pointer to follow")
    home: Path = Field(Path("var"), description="EMP home: champions/, keys/, live/")
    champions: Path | None = Field(None, description="champions root; default <home>/champions")
    trusted_keys: list[Path] = Field(default_factory=list,
                                     description="public keys; default <home>/keys/*.pub")
    allow_unsigned: bool = False
    state_path: Path | None = Field(None, description="state store; default <home>/live/state.db")
    history: Path | None = Field(None, description="history store; default <home>/history")
    account_equity: float = Field(100_000.0, gt=0,
                                  description="the account's equity at the first start when "
                                  "the venue sends no collateral report")
    equity_resync: float = Field(0.005, gt=0, description="sizing equity re-based to the "
                                 "venue's when they differ by more than this ratio")
    fix: FixLink = Field(default_factory=FixLink)
    symbols: dict[str, SymbolLink]
    fill_wait_s: float = Field(5.0, gt=0, description="wait for a bar's fills before deciding")
    stale_after_s: float = Field(7200.0, gt=0,
                                 description="no quote this long: no new entries, an alert")
    reconcile_every_s: float = Field(300.0, gt=0, description="periodic reconciliation")
    pointer_poll_s: float = Field(5.0, gt=0)
    bars_from: Literal["refresh", "ticks"] = Field(
        "refresh", description="refresh: the feed's refreshes carry each bar's OHLC (the "
        "paper venue); ticks: bars are built from bid/ask ticks by the store's ingest rules")
    ginn_dir: Path | None = Field(None, description="GINN models (<dir>/<SYMBOL>/<TF>/*.npz); "
                                  "default <home>/ginn")
    ginn_max_age_hours: float = Field(36.0, gt=0, description="a GINN model trained longer "
                                      "ago is refused: the ginn row falls back to GARCH(1,1)")
    refit_worker: bool = Field(True, description="GARCH refits in a worker process (false: in "
                               "the executor, which then loads arch: +185 MB)")
    ops: OpsSettings = Field(default_factory=OpsSettings)
    risk: RiskLimits = Field(default_factory=RiskLimits, description="pre-trade limits and "
                             "the circuit breaker (defaults: DESIGN.md)")

    @model_validator(mode="after")
    def _checks(self) -> LiveConfig:
        if self.symbol not in self.symbols:
            raise ValueError(f"symbols: no broker mapping for the champion's symbol "
                             f"{self.symbol!r}")
        if self.mode == "live" and self.fix.credentials is None:
            raise ValueError("fix.credentials: mode live needs the broker's credentials")
        return self

    @property
    def champions_root(self) -> Path:
        return self.champions if self.champions is not None else self.home / "champions"

    @property
    def state_file(self) -> Path:
        return self.state_path if self.state_path is not None else self.home / "live" / "state.db"

    @property
    def live_dir(self) -> Path:
        return self.state_file.parent

    @property
    def ginn_root(self) -> Path:
        return self.ginn_dir if self.ginn_dir is not None else self.home / "ginn"

    @property
    def history_root(self) -> Path:
        return self.history if self.history is not None else self.home / "history"


def parse_live_config(raw: Any, source: str = "<live config>") -> LiveConfig:
    """A dict (parsed YAML) -> LiveConfig, or a one-line LiveConfigError naming the key."""
    return parse_model(LiveConfig, raw, source, LiveConfigError)


def load_live_config(path: str | os.PathLike[str]) -> LiveConfig:
    return load_yaml_model(LiveConfig, path, "live config", LiveConfigError)
