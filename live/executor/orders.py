"""Targets -> orders, crash-safe: every ClOrdID is committed to the state store (pending_new)
before its NewOrderSingle leaves, and every ExecutionReport is applied to the store (which is
idempotent on ExecID) before anything acts on it.

Orders bring the position to the target: ``target - position - open orders' leaves``,
rounded to the broker's volume step through the wire's lots, split into a reducing and an
opening leg on a reversal; each leg passes the pre-trade risk check (``live.risk``) before its
ClOrdID exists. An opening leg is sent with the kernel's own protection: stop distance (9001), take-profit
distance (9002) and trailing (9003=Y), which the venue places from the fill price exactly as
the kernel does. The venue's stop-loss / take-profit exits (``<ClOrdID>-SL`` / ``-TP``) are
recorded as orders of their own when their first report arrives.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from live.fix.message import Message
from live.ops.metrics import Metrics
from live.risk import OrderIntent
from live.state import FillRow, NewOrder, OrderRow, StateStore
from live.venue.spec import SymbolSpec, fmt

log = logging.getLogger("emp.live.orders")
Check = Callable[[OrderIntent], list[str]]  # the limits an order would break ([]: it may go)

STOP_DISTANCE, TP_DISTANCE, TRAILING = 9001, 9002, 9003
OPEN_STATUSES = ("pending_new", "sent", "new", "partially_filled")
_STATUS = {"0": "new", "1": "partially_filled", "2": "filled", "4": "canceled", "8": "rejected",
           "A": "pending_new", "6": "canceled", "C": "canceled"}


@dataclass(frozen=True)
class Leg:
    """One order of a plan toward a target: what the NewOrderSingle will carry."""

    side: str
    lots: str          # the wire quantity
    qty: float         # units
    stop: float | None
    take_profit: float | None
    trailing: bool
    reason: str
    target: float

    @property
    def order(self) -> NewOrder:
        return NewOrder(self.side, self.qty, self.stop, self.take_profit, self.reason)


def _utc(text: str | None) -> dt.datetime:
    if text:
        for f in ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S"):
            try:
                return dt.datetime.strptime(text, f).replace(tzinfo=dt.UTC)
            except ValueError:
                pass
    return dt.datetime.now(dt.UTC)


class OrderManager:
    """One symbol's orders: to target, and execution reports into the state store."""

    def __init__(self, store: StateStore, symbol: str, spec: SymbolSpec,
                 send: Callable[[Message], Awaitable[int]], account: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.store, self.symbol, self.spec, self.send_msg = store, symbol, spec, send
        self.account = account
        self.metrics = metrics
        self.on_sent: Callable[[], None] | None = None  # after each NewOrderSingle is written

    # ---- quantities ------------------------------------------------------------------------
    def units_of(self, lots: str | None) -> float:
        """Wire lots -> units (0 for an empty or zero quantity)."""
        if lots is None or lots == "" or float(lots) == 0.0:
            return 0.0
        return self.spec.units(lots)

    def held(self) -> float:
        return self.store.position(self.symbol)

    def open_orders(self) -> list[OrderRow]:
        return [o for o in self.store.open_orders() if o.symbol == self.symbol]

    def leaves(self) -> float:
        """Signed units still to fill on our open orders."""
        return sum((1.0 if o.side == "buy" else -1.0) * max(0.0, o.qty - o.filled_qty)
                   for o in self.open_orders())

    def delta(self, target: float) -> float:
        """Signed units to order now for the position to reach ``target``."""
        return self.spec.snap(target - self.held() - self.leaves())

    # ---- sending ---------------------------------------------------------------------------
    def legs(self, target: float) -> list[tuple[float, bool]]:
        """The signed orders that bring the position (with open orders' leaves) to ``target``,
        each with whether it opens exposure. A reversal is two legs: the reducing one (to
        flat) and the opening one, so each passes its own risk check and the opening one
        alone carries the stop-loss."""
        cur = self.spec.snap(self.held() + self.leaves())
        half = self.spec.step / 2
        if abs(cur) < half:
            return [(self.spec.snap(target), True)]
        if target == 0.0 or target * cur < 0:
            return [(-cur, False), (self.spec.snap(target), True)]
        delta = self.spec.snap(target - cur)
        return [(delta, abs(target) > abs(cur))]

    def plan(self, target: float, entry: tuple[float, float | None, bool] | None, reason: str,
             *, price: float | None = None, check: Check | None = None) -> list[Leg]:
        """The orders that bring the position to ``target`` ([]: already there).
        ``entry``: (stop distance, take-profit distance or None, trailing) of an opening leg;
        ``check`` (with ``price``, the reference price) vets each leg: a leg it blocks is
        audited and never gets a ClOrdID."""
        out: list[Leg] = []
        for delta, opens in self.legs(target):
            if abs(delta) < self.spec.step / 2:
                continue
            lots = self.spec.lots(abs(delta))
            qty = self.spec.units(lots)
            side = "buy" if delta > 0 else "sell"
            stop, tp, trailing = entry if (entry is not None and opens) else (None, None, False)
            if check is not None and price is not None:
                level = None if stop is None else (price - stop if side == "buy"
                                                   else price + stop)
                problems = check(OrderIntent(self.symbol, side, qty, price, level, opens))
                if problems:
                    self._blocked(side, qty, problems)
                    continue
            out.append(Leg(side, lots, qty, stop, tp, trailing,
                           reason + (" trailing" if trailing else ""), target))
        return out

    async def to_target(self, target: float, bar_ts: int, entry: tuple[float, float | None, bool]
                        | None, reason: str, *, price: float | None = None,
                        check: Check | None = None) -> list[OrderRow]:
        """Plan, commit (one transaction) and send the orders toward ``target``."""
        legs = self.plan(target, entry, reason, price=price, check=check)
        rows = self.store.add_orders(self.symbol, bar_ts, [leg.order for leg in legs])
        await self.send(rows, legs)
        return rows

    def _blocked(self, side: str, qty: float, problems: list[str]) -> None:
        text = "; ".join(problems)
        self.store.audit("order_blocked", f"{self.symbol} {side} {qty:g}: {text}")
        log.warning("order blocked before sending: %s %s %g: %s", self.symbol, side, qty, text)
        if self.metrics is not None:
            for p in problems:
                self.metrics.order_blocked(self.symbol, _check_name(p))

    async def send(self, rows: list[OrderRow], legs: list[Leg]) -> None:
        """NewOrderSingles for committed ``rows`` (made from ``legs``), then all marked sent."""
        if not rows:
            return
        crash_point("after_commit")
        for row, leg in zip(rows, legs, strict=True):
            await self.send_msg(self._message(row.cl_ord_id, leg))
            if self.on_sent is not None:
                self.on_sent()
            crash_point("after_send")
            log.info("order %s %s %s lots %s (target %s)", row.cl_ord_id, leg.side, leg.lots,
                     self.symbol, leg.target)
        self.store.mark_sent(*(r.cl_ord_id for r in rows))

    def _message(self, cl: str, leg: Leg) -> Message:
        msg = Message("D", [(11, cl)])
        if self.account:
            msg.append(1, self.account)
        msg.append(55, self.spec.fix_id).append(54, "1" if leg.side == "buy" else "2")
        msg.append(60, dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3])
        msg.append(38, leg.lots).append(40, "1")
        if leg.stop is not None:
            msg.append(STOP_DISTANCE, fmt(leg.stop))
        if leg.take_profit is not None:
            msg.append(TP_DISTANCE, fmt(leg.take_profit))
        if leg.trailing:
            msg.append(TRAILING, "Y")
        return msg

    # ---- reports ---------------------------------------------------------------------------
    def on_execution(self, msg: Message) -> FillRow | None:
        """Apply one ExecutionReport (a fill, an ack, a status answer) to the store."""
        cl = msg.get(11) or ""
        row = self.store.order(cl)
        if row is None and not cl.endswith(("-SL", "-TP")):
            log.warning("execution report for an order we never sent: %s", cl)
            return None
        filled = row.filled_qty if row is not None else 0.0
        known = (row.avg_px or 0.0) * filled if row is not None else 0.0
        exec_type, status = msg.get(150) or "", msg.get(39) or ""
        cum = self.units_of(msg.get(14))
        avg = float(msg.get(6) or 0.0)
        last_qty = self.units_of(msg.get(32))
        last_px = float(msg.get(31) or 0.0)
        exec_id = msg.get(17) or ""
        if exec_type != "F" and cum > filled + self.spec.step / 2:
            # a status answer shows fills we never saw (we were down): book the difference
            missing = self.spec.snap(cum - filled)
            last_qty, last_px = missing, (avg * cum - known) / missing
            exec_type, exec_id = "F", f"{exec_id}-catchup-{cl}-{fmt(cum)}"
        return self.store.apply_execution(
            cl_ord_id=cl, exec_id=exec_id, exec_type=exec_type, ord_status=status,
            last_qty=last_qty, last_px=last_px, cum_qty=cum, avg_px=avg, ts=_utc(msg.get(60)))

    def mark_lost(self, row: OrderRow, why: str) -> None:
        """An order the venue never received: closed as rejected, audited, never resent
        under its ClOrdID (the next to-target order replaces it)."""
        self.store.apply_execution(cl_ord_id=row.cl_ord_id, exec_id=f"LOST-{row.cl_ord_id}",
                                   exec_type="8", ord_status="8", last_qty=0.0, last_px=0.0,
                                   cum_qty=0.0, avg_px=0.0, ts=dt.datetime.now(dt.UTC))
        self.store.audit("order_lost", f"{row.cl_ord_id}: {why}")


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: ``EMP_LIVE_KILL_AT=name`` makes the process
    SIGKILL itself here (a real kill -9 at an exact point; nothing runs on the way out)."""
    if os.environ.get("EMP_LIVE_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _check_name(problem: str) -> str:
    """The limit's name a ``pre_trade`` sentence starts with (``max_leverage: ...``)."""
    name = problem.split(":", 1)[0].strip().lower()
    return name if name.replace("_", "").isalnum() and name[:1].isalpha() else "other"


def status_of(code: str) -> str:
    return _STATUS.get(code, "unknown")
