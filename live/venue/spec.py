"""One tradable symbol as the venue sees it: the broker's numeric id, lot and tick size, and
the kernel's cost model, plus the exact conversions between wire quantities (lots) and units.

Why quantities snap to whole volume steps: the kernel sizes positions as ``floor(u / min_lot)
* min_lot`` units, so a position is always ``n * min_lot``. The wire carries lots
(``units / lot_size``) as decimal text, which need not convert back to the same float; the
venue recovers ``n`` and holds ``n * min_lot`` units, the kernel's float bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fitness import simulator_nb as k
from fitness.config import SimConfig
from fitness.simulator import market_config
from live.venue.errors import OrderError
from market.config import SymbolMeta


def fmt(x: float) -> str:
    """A float as FIX decimal text: positional (never ``1e-05``), shortest exact round trip."""
    if not math.isfinite(x):
        raise ValueError(f"cannot send a non-finite number {x!r}")
    return str(np.format_float_positional(float(x), unique=True, trim="-"))


@dataclass(frozen=True)
class SymbolSpec:
    """A symbol's trading facts (costs already in the kernel's per-side form)."""

    name: str              # our symbol (EURUSD)
    fix_id: str            # the broker's numeric id sent in Symbol(55)
    lot_size: float        # units per lot: OrderQty(38) is in lots
    tick_size: float       # price grid of quotes and of absolute StopPx / Price
    step: float            # volume step in units (the kernel's min_lot)
    cost_frac: float       # per-side cost as a fraction of price (bps costs)
    cost_abs: float        # per-side cost in price (pip costs)
    value_per_unit: float  # money per 1.0 price move per unit
    fin_bar: float         # financing per bar held, as a fraction of notional
    half_spread_frac: float = 0.0  # half the quoted spread, fraction of price (bps)
    half_spread_abs: float = 0.0   # half the quoted spread, in price (pips)

    def units(self, qty: str) -> float:
        """OrderQty text (lots) -> units, a whole number of volume steps, or OrderError."""
        try:
            lots = float(qty)
        except (TypeError, ValueError):
            raise OrderError(f"OrderQty(38) {qty!r} is not a number") from None
        if not (math.isfinite(lots) and lots > 0):
            raise OrderError(f"OrderQty(38) must be a positive number of lots, got {qty!r}")
        n = round(lots * self.lot_size / self.step)
        if n < 1 or abs(n * self.step - lots * self.lot_size) > 1e-9 * max(1.0, n * self.step):
            raise OrderError(f"OrderQty(38) {qty} lots of {self.name} is not a whole multiple of "
                             f"the volume step {fmt(self.step / self.lot_size)} lots")
        return n * self.step

    def lots(self, units: float) -> str:
        """Units -> lots as wire text."""
        return fmt(round(abs(units) / self.lot_size, 12))

    def snap(self, units: float) -> float:
        """``units`` (a difference of step multiples) as an exact step multiple."""
        return round(units / self.step) * self.step

    def fill_price(self, raw: float, side: float) -> float:
        """The kernel's effective fill price of a buy (side 1) or sell (-1) at ``raw``."""
        return raw + side * (raw * self.cost_frac + self.cost_abs)

    def quote(self, close: float) -> tuple[float, float]:
        """Bid and offer around ``close``: half the symbol's spread each way, on the tick grid
        (bid rounded down, offer up, so the quoted spread is never narrower than configured)."""
        half = close * self.half_spread_frac + self.half_spread_abs
        bid = math.floor((close - half) / self.tick_size + 1e-9) * self.tick_size
        ask = math.ceil((close + half) / self.tick_size - 1e-9) * self.tick_size
        digits = max(0, -math.floor(math.log10(self.tick_size)) + 1)
        return round(bid, digits), round(ask, digits)

    def on_tick(self, price: float) -> bool:
        """Whether ``price`` lies on the tick grid (to float noise)."""
        n = price / self.tick_size
        return abs(n - round(n)) < 1e-6


def spec_from_meta(name: str, fix_id: int | str, lot_size: float, meta: SymbolMeta,
                   bars_per_year: float, *, tick_size: float | None = None,
                   financing: bool = True) -> SymbolSpec:
    """A SymbolSpec whose costs are the kernel's own numbers (``market_config``), so fills
    match the backtest to the bit."""
    cfg = market_config(meta, bars_per_year, SimConfig(financing=financing))
    c = meta.costs
    half = c.spread / 2.0
    return SymbolSpec(
        name=name, fix_id=str(fix_id), lot_size=float(lot_size),
        tick_size=float(tick_size if tick_size is not None else meta.tick_size),
        step=float(meta.min_lot), cost_frac=float(cfg[k.C_COST_FRAC]),
        cost_abs=float(cfg[k.C_COST_ABS]), value_per_unit=float(cfg[k.C_VPU]),
        fin_bar=float(cfg[k.C_FIN_BAR]),
        half_spread_frac=half / 1e4 if c.unit == "bps" else 0.0,
        half_spread_abs=half * float(c.pip_size or 0.0) if c.unit == "pips" else 0.0)
