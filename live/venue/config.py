"""``emp venue CONFIG``: the venue's own YAML file, validated before anything starts.

Broker specifics live here (issue 13, part 5): the QUOTE and TRADE sessions as SubIDs of one
pair of CompIDs (cTrader style), the broker's numeric symbol ids, lot size and tick size per
symbol. Costs, value per unit and the volume step come from the symbol's metadata in the
history store (``meta`` here overrides it), so the venue charges what the backtest charged.
``${VAR}`` / ``${VAR:-default}`` in string values read the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from core.config import Strict, load_yaml_model, parse_model
from live.venue.errors import VenueConfigError
from market.config import SymbolMeta


class VenueSymbol(Strict):
    """One tradable symbol: our name (the key) -> the broker's view of it."""

    id: int = Field(gt=0, description="numeric broker symbol id sent in Symbol(55)")
    lot_size: float = Field(gt=0, description="units per lot; OrderQty(38) is in lots")
    tick_size: float | None = Field(None, gt=0, description="price grid; default: the metadata's")
    meta: SymbolMeta | None = Field(None, description="overrides the store's metadata")


class Replay(Strict):
    """Which bars the QUOTE session replays, and how fast."""

    timeframe: str = "1h"
    start: str | None = Field(None, description="first bar (inclusive), e.g. 2024-01-01")
    end: str | None = Field(None, description="end (exclusive)")
    speed: float = Field(1.0, ge=0, description="bars per second; 0: only when stepped")
    store: Path | None = Field(None, description="history store; default: $EMP_HOME/history")


class Account(Strict):
    id: str = Field("1", min_length=1, description="Account(1) of the one account")
    cash: float = Field(100_000.0, gt=0, description="starting cash")
    currency: str = "USD"


class ScheduledFault(Strict):
    """A fault the venue injects when it reaches a bar (counted from 0 per run)."""

    at_bar: int = Field(ge=0)
    action: Literal["drop_link", "skip_seq", "reject_next", "delay_fills", "partial_fills",
                    "stale_quotes"]
    session: Literal["quote", "trade"] = Field("trade", description="for drop_link / skip_seq")
    n: int = Field(1, ge=0, description="count: orders, bars or sequence numbers")
    fraction: float | None = Field(None, gt=0, lt=1, description="for partial_fills")


class FaultConfig(Strict):
    reject_next: int = Field(0, ge=0)
    delay_bars: int = Field(0, ge=0)
    partial_fraction: float | None = Field(None, gt=0, lt=1)
    partial_orders: int = Field(0, ge=0, description="0: every order while set")
    stale_bars: int = Field(0, ge=0)
    schedule: list[ScheduledFault] = Field(default_factory=list)


class Credentials(Strict):
    """Where the Logon's Username/Password(553/554) the venue expects come from (never the
    values themselves): environment variables, or a 0600 secrets file. None: any logon."""

    username_env: str | None = None
    password_env: str | None = None
    secrets_file: Path | None = None


class VenueConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(5201, ge=0, le=65535, description="0: any free port")
    comp_id: str = Field("EMPVENUE", min_length=1, description="the venue's SenderCompID")
    client_comp_id: str = Field("EMPCLIENT", min_length=1, description="the client's CompID")
    quote_sub_id: str = Field("QUOTE", min_length=1)
    trade_sub_id: str = Field("TRADE", min_length=1)
    heartbeat_s: int = Field(30, ge=1)
    store_dir: Path | None = Field(None, description="folder of the QUOTE and TRADE message "
                                   "stores (quote.sqlite, trade.sqlite); default: <home>/venue")
    credentials: Credentials | None = None
    account: Account = Field(default_factory=Account)
    financing: bool = Field(True, description="charge the symbols' financing per bar")
    require_stop: bool = Field(True, description="reject orders that open without a stop")
    symbols: dict[str, VenueSymbol]
    replay: Replay = Field(default_factory=Replay)
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @model_validator(mode="after")
    def _checks(self) -> VenueConfig:
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is needed")
        ids = [s.id for s in self.symbols.values()]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"symbols: broker ids {dup} are used twice")
        if self.quote_sub_id == self.trade_sub_id:
            raise ValueError("quote_sub_id and trade_sub_id must differ")
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host {self.host!r}: the paper venue listens on localhost only")
        return self


def parse_venue_config(raw: Any, source: str = "<venue config>") -> VenueConfig:
    """A dict (parsed YAML) -> VenueConfig, or a one-line VenueConfigError naming the key."""
    return parse_model(VenueConfig, raw, source, VenueConfigError)


def load_venue_config(path: str | os.PathLike[str]) -> VenueConfig:
    return load_yaml_model(VenueConfig, path, "venue config", VenueConfigError)
