"""Faults on demand: what a paper venue must be able to do to an executor so its recovery paths
get exercised (config ``faults`` sets the initial state and a schedule; tests call the setters).

Order-level faults live here and are applied by the exchange (pure logic). Link-level faults
(drop a session, skip outbound sequence numbers) need a session and are carried out by the FIX
glue (``live.venue.app``); this module only counts them down.

Decisions:
- ``reject_next(n)``: the next n NewOrderSingles are rejected (OrdRejReason 99, Text says it was
  injected); their ClOrdIDs are used up like any other.
- ``delay_fills(n)``: every order accepted while set fills n bars later than the rule (open of
  bar t+1+n). 0 switches it off.
- ``partial_fills(fraction, orders)``: the first fill of the next ``orders`` orders (0: every
  order while set) is ``fraction`` of the quantity, rounded down to whole volume steps but at
  least one step; the rest fills at the next bar's open.
- ``stale_quotes(n)``: the next n bars send no market-data refresh (fills, stops and P&L go on:
  the market moves while the feed is stale).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Faults:
    """The venue's current fault state (mutable; one per venue)."""

    rejects: int = 0
    delay_bars: int = 0
    partial_fraction: float | None = None
    partial_orders: int = 0
    stale_bars: int = 0

    def reject_next(self, n: int = 1) -> None:
        self.rejects = _count(n, "reject_next")

    def delay_fills(self, bars: int) -> None:
        self.delay_bars = _count(bars, "delay_fills")

    def partial_fills(self, fraction: float | None, orders: int = 0) -> None:
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise ValueError(f"partial_fills: fraction must be in (0, 1), got {fraction}")
        self.partial_fraction = fraction
        self.partial_orders = _count(orders, "partial_fills orders")

    def stale_quotes(self, bars: int) -> None:
        self.stale_bars = _count(bars, "stale_quotes")

    # ---- consumed by the exchange / feed ------------------------------------------------------
    def take_reject(self) -> bool:
        if self.rejects > 0:
            self.rejects -= 1
            return True
        return False

    def take_partial(self) -> float | None:
        frac = self.partial_fraction
        if frac is None:
            return None
        if self.partial_orders > 0:
            self.partial_orders -= 1
            if self.partial_orders == 0:
                self.partial_fraction = None
        return frac

    def take_stale(self) -> bool:
        if self.stale_bars > 0:
            self.stale_bars -= 1
            return True
        return False


def _count(n: int, what: str) -> int:
    if int(n) != n or n < 0:
        raise ValueError(f"{what}: expected a count >= 0, got {n!r}")
    return int(n)
