"""Risk limits of the live executor: pre-trade checks that stop an order before it leaves, and
the circuit breaker that halts trading.

Pure functions over plain figures (no I/O, no state store): the executor gathers the account
(equity the venue reports, positions from the state store, reference prices) and asks; the
breaker's trip is persisted by the caller through ``StateStore.trip``.

Definitions (all money in account currency; notional = |units| · price · value_per_unit, the
kernel's own definition, so a backtest's ``max_leverage`` means the same thing here):
- position: the margin of the symbol's position after the order (its notional over
  ``max_leverage``, the account's leverage) as a fraction of equity. DESIGN.md's "one position
  holds at most 25 % of equity" read as notional would forbid what the kernel's own sizing
  does by default (notional up to 1x equity) and contradict the leverage cap of 10; read as
  margin it caps one position at 2.5x equity notional with the defaults;
- leverage: the gross notional of every position after the order, over equity;
- daily loss: (equity at the trading day's start - equity) / equity at day start;
- drawdown: (peak equity - equity) / peak equity;
- VaR: the caller's one-day 95 % VaR of the open positions in money, over equity.
Position and leverage block just above their limit; the daily loss, trades-per-day and the
breaker's limits act once reached (the limit is the last value still tolerated for a count,
the first value that halts for a loss), with a 1e-12 tolerance so 8 % computed as 7.99999…
still trips.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass, field

from pydantic import Field, model_validator

from core.config import Strict
from core.errors import EmpError

SIDES = ("buy", "sell")
_EPS = 1e-12


class RiskError(EmpError, ValueError):
    """An order intent or account that cannot be checked; the message says which field."""


class RiskLimits(Strict):
    """The ``risk:`` section of the live config; defaults are the design's."""

    max_position_frac: float = Field(0.25, gt=0, description="one position's margin (notional / "
                                     "max_leverage) ≤ this × equity")
    max_leverage: float = Field(10, gt=0, description="gross notional ≤ this × equity")
    max_trades_per_day: int = Field(50, ge=0, description="orders a day; the next one is blocked")
    max_daily_loss: float = Field(0.02, gt=0, lt=1, description="no new exposure once lost today")
    breaker_drawdown: float = Field(0.08, gt=0, lt=1, description="drawdown that trips the breaker")
    hard_stop_drawdown: float = Field(0.10, gt=0, le=1, description="drawdown of the hard stop")
    var95_limit: float = Field(0.05, gt=0, description="1-day VaR95 / equity that trips the breaker")
    reject_storm: int = Field(5, ge=1, description="this many rejects within the window trip it")
    reject_window_s: float = Field(60, gt=0, description="the reject storm's window, seconds")
    max_abs_correlation: float = Field(0.7, gt=0, le=1, description="|corr| between open "
                                       "positions that trips the breaker")
    allowed_symbols: list[str] = Field(default_factory=list, description="empty: the "
                                       "champions' symbols (those the account has prices for)")

    @model_validator(mode="after")
    def _ordered(self) -> RiskLimits:
        if self.hard_stop_drawdown < self.breaker_drawdown:
            raise ValueError(f"hard_stop_drawdown {self.hard_stop_drawdown} must be ≥ "
                             f"breaker_drawdown {self.breaker_drawdown}")
        return self


@dataclass(frozen=True)
class OrderIntent:
    """An order about to be sent. ``price``: reference price for its notional; ``opens``: it
    opens or adds exposure (False: it only reduces a position)."""

    symbol: str
    side: str
    qty: float
    price: float
    stop: float | None
    opens: bool

    def __post_init__(self) -> None:
        where = f"order intent {self.symbol} {self.side}"
        if not self.symbol or not isinstance(self.symbol, str):
            raise RiskError(f"order intent: symbol {self.symbol!r} must be a non-empty string")
        if self.side not in SIDES:
            raise RiskError(f"{where}: side {self.side!r} must be buy or sell")
        if not _finite(self.qty) or self.qty <= 0:
            raise RiskError(f"{where}: qty {self.qty!r} must be a positive finite number of units")
        if not _finite(self.price) or self.price <= 0:
            raise RiskError(f"{where}: reference price {self.price!r} must be positive and finite")

    @property
    def signed_qty(self) -> float:
        return self.qty if self.side == "buy" else -self.qty


@dataclass(frozen=True)
class Account:
    """What the checks look at: equity figures, signed positions (units), reference prices and
    account money per 1.0 price move per unit, by symbol."""

    equity: float
    day_start_equity: float
    peak_equity: float
    trades_today: int
    positions: dict[str, float] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    value_per_unit: dict[str, float] = field(default_factory=dict)


def _finite(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _money(x: float) -> str:
    return f"{x:,.2f}"


def _pct(x: float) -> str:
    return f"{x * 100:.6g} %"


def allowed_symbols(account: Account, limits: RiskLimits) -> list[str]:
    """The configured list, or when empty the symbols the account has prices and values for
    (the executor builds the account from its champions' symbols)."""
    if limits.allowed_symbols:
        return list(limits.allowed_symbols)
    return sorted(s for s in account.value_per_unit if s in account.prices)


def _notional(units: float, price: float, vpu: float) -> float:
    return abs(units) * price * vpu


def pre_trade(intent: OrderIntent, account: Account, limits: RiskLimits) -> list[str]:
    """The limits the order would break, each a sentence naming the limit and the figures;
    [] = it may go. A reducing order (``opens=False``) is blocked only by the symbol (and when
    it does not in fact reduce: it would then add or reverse exposure unchecked)."""
    sym = intent.symbol
    out: list[str] = []
    allowed = allowed_symbols(account, limits)
    if sym not in allowed:
        out.append(f"allowed_symbols: {sym} is not an allowed symbol (allowed: "
                   f"{', '.join(allowed) or 'none'})")
    held = float(account.positions.get(sym, 0.0))
    after = held + intent.signed_qty
    if not intent.opens:
        if abs(after) > abs(held) + _EPS * max(1.0, abs(held)) or after * held < 0:
            out.append(f"opens: a {intent.side} of {intent.qty:g} {sym} is marked reducing but "
                       f"takes the position from {held:g} to {after:g} units")
        return out
    out += _stop_violations(intent)
    if not _finite(account.equity) or account.equity <= 0:
        out.append(f"equity: {account.equity!r} is not positive: no new exposure")
        return out
    eq = account.equity
    vpu = account.value_per_unit.get(sym)
    if vpu is None or not _finite(vpu) or vpu <= 0:
        out.append(f"value_per_unit: none known for {sym}: cannot size its notional")
        return out
    pos_notional = _notional(after, intent.price, vpu)
    margin = pos_notional / limits.max_leverage
    if margin > limits.max_position_frac * eq:
        out.append(f"max_position_frac: {sym} position {after:g} units × {intent.price:g} = "
                   f"{_money(pos_notional)}, margin at {limits.max_leverage:g}:1 "
                   f"{_money(margin)} is {_pct(margin / eq)} of equity {_money(eq)} > "
                   f"{_pct(limits.max_position_frac)}")
    out += _leverage_violations(intent, after, pos_notional, account, limits)
    if account.trades_today >= limits.max_trades_per_day:
        out.append(f"max_trades_per_day: {account.trades_today} trades today, limit "
                   f"{limits.max_trades_per_day}")
    dse = account.day_start_equity
    if _finite(dse) and dse > 0:
        loss = (dse - eq) / dse
        if loss >= limits.max_daily_loss - _EPS:
            out.append(f"max_daily_loss: equity {_money(eq)} is {_pct(loss)} below the day's "
                       f"start {_money(dse)}, limit {_pct(limits.max_daily_loss)}")
    else:
        out.append(f"max_daily_loss: day-start equity {dse!r} is unknown or not positive")
    peak = account.peak_equity
    if _finite(peak) and peak > 0 and (peak - eq) / peak >= limits.breaker_drawdown - _EPS:
        out.append(f"breaker_drawdown: equity {_money(eq)} is {_pct((peak - eq) / peak)} below "
                   f"the peak {_money(peak)}, limit {_pct(limits.breaker_drawdown)}")
    return out


def _stop_violations(intent: OrderIntent) -> list[str]:
    stop = intent.stop
    if stop is None or not _finite(stop) or stop <= 0:
        return [f"stop: an opening {intent.side} of {intent.symbol} carries no stop-loss "
                f"(stop {stop!r}); every entry needs one at the broker"]
    if (intent.side == "buy" and stop >= intent.price) or (
            intent.side == "sell" and stop <= intent.price):
        where = "below" if intent.side == "buy" else "above"
        return [f"stop: the stop-loss {stop:g} of a {intent.side} of {intent.symbol} must lie "
                f"{where} the price {intent.price:g}"]
    return []


def _leverage_violations(intent: OrderIntent, after: float, pos_notional: float,
                         account: Account, limits: RiskLimits) -> list[str]:
    gross = pos_notional
    for s, units in account.positions.items():
        if s == intent.symbol or units == 0:
            continue
        px, vpu = account.prices.get(s), account.value_per_unit.get(s)
        if px is None or vpu is None or not (_finite(px) and _finite(vpu)):
            return [f"max_leverage: no price or value per unit for the open {s} position: "
                    "cannot compute leverage"]
        gross += _notional(units, px, vpu)
    lev = gross / account.equity
    if lev > limits.max_leverage:
        return [f"max_leverage: gross notional {_money(gross)} is {lev:.6g}× equity "
                f"{_money(account.equity)} > {limits.max_leverage:g}×"]
    return []


def drawdown(account: Account) -> float:
    """(peak - equity) / peak, 0 without a positive peak; 1.0 when equity is not finite."""
    if not _finite(account.equity):
        return 1.0
    peak = max(account.peak_equity, account.equity) if _finite(account.peak_equity) \
        else account.equity
    return 0.0 if peak <= 0 else max(0.0, (peak - account.equity) / peak)


class Breaker:
    """Trips on drawdown ≥ breaker_drawdown, a VaR breach, |correlation| past the limit or a
    reject storm; reports a hard stop at hard_stop_drawdown (``self.hard`` is then True).

    It only says why; the caller flattens, alerts and persists (``StateStore.trip``). ``now``
    is any monotonic clock in seconds (``time.monotonic()``)."""

    def __init__(self, limits: RiskLimits) -> None:
        self.limits = limits
        self.hard = False
        self._rejects: deque[float] = deque()

    def check(self, account: Account, var95: float | None, now: float, *,
              correlation: float | None = None) -> str | None:
        """The reason to trip now, or None. ``var95``: one-day 95 % VaR in money (None or NaN:
        not known yet); ``correlation``: the largest |correlation| between open positions."""
        lim = self.limits
        self._prune(now)
        dd = drawdown(account)
        figures = f"equity {_money(account.equity)}, peak {_money(account.peak_equity)}"
        if dd >= lim.hard_stop_drawdown - _EPS:
            self.hard = True
            return (f"hard stop: drawdown {_pct(dd)} ≥ hard_stop_drawdown "
                    f"{_pct(lim.hard_stop_drawdown)} ({figures})")
        if dd >= lim.breaker_drawdown - _EPS:
            return (f"breaker_drawdown: drawdown {_pct(dd)} ≥ {_pct(lim.breaker_drawdown)} "
                    f"({figures})")
        if var95 is not None and _finite(var95) and account.equity > 0:
            frac = var95 / account.equity
            if frac > lim.var95_limit:
                return (f"var95_limit: VaR95 {_money(var95)} is {_pct(frac)} of equity "
                        f"{_money(account.equity)} > {_pct(lim.var95_limit)}")
        if correlation is not None and _finite(correlation) and (
                abs(correlation) > lim.max_abs_correlation):
            return (f"max_abs_correlation: |correlation| {abs(correlation):.4g} between open "
                    f"positions > {lim.max_abs_correlation:g}")
        return None

    def on_reject(self, now: float) -> str | None:
        """Count one order reject at ``now``; the reason when ``reject_storm`` of them fall
        within ``reject_window_s``."""
        self._rejects.append(now)
        self._prune(now)
        n = len(self._rejects)
        if n >= self.limits.reject_storm:
            span = now - self._rejects[0]
            return (f"reject_storm: {n} order rejects within {span:.3g} s (limit "
                    f"{self.limits.reject_storm} within {self.limits.reject_window_s:g} s)")
        return None

    def _prune(self, now: float) -> None:
        while self._rejects and now - self._rejects[0] > self.limits.reject_window_s:
            self._rejects.popleft()

    def reset(self) -> None:
        """Forget counted rejects and the hard flag (after an operator's reset)."""
        self._rejects.clear()
        self.hard = False
