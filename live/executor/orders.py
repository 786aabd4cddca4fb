"""Targets -> orders, crash-safe: every ClOrdID is committed to the state store (pending_new)
before its NewOrderSingle leaves, and every ExecutionReport is applied to the store (which is
idempotent on ExecID) before anything acts on it.

An order brings the position to the target: ``target - position - open orders' leaves``,
rounded to the broker's volume step through the wire's lots. An order is sent with the
kernel's own protection when the target is not flat: stop distance (9001), take-profit
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

from live.fix.message import Message
from live.state import FillRow, OrderRow, StateStore
from live.venue.spec import SymbolSpec, fmt

log = logging.getLogger("emp.live.orders")

STOP_DISTANCE, TP_DISTANCE, TRAILING = 9001, 9002, 9003
OPEN_STATUSES = ("pending_new", "sent", "new", "partially_filled")
_STATUS = {"0": "new", "1": "partially_filled", "2": "filled", "4": "canceled", "8": "rejected",
           "A": "pending_new", "6": "canceled", "C": "canceled"}


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
                 send: Callable[[Message], Awaitable[int]], account: str | None = None) -> None:
        self.store, self.symbol, self.spec, self.send = store, symbol, spec, send
        self.account = account

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
    async def to_target(self, target: float, bar_ts: int, entry: tuple[float, float | None, bool]
                        | None, reason: str) -> OrderRow | None:
        """Send the order that brings the position to ``target`` (None: already there).
        ``entry``: (stop distance, take-profit distance or None, trailing) when it opens."""
        delta = self.delta(target)
        if abs(delta) < self.spec.step / 2:
            return None
        lots = self.spec.lots(abs(delta))
        qty = self.spec.units(lots)
        side = "buy" if delta > 0 else "sell"
        stop, tp, trailing = entry if (entry is not None and target != 0.0) else (None, None, False)
        cl = self.store.next_cl_ord_id()
        row = self.store.add_order(cl_ord_id=cl, symbol=self.symbol, side=side, qty=qty,
                                   stop=stop, take_profit=tp, bar_ts=bar_ts,
                                   reason=reason + (" trailing" if trailing else ""))
        msg = Message("D", [(11, cl)])
        if self.account:
            msg.append(1, self.account)
        msg.append(55, self.spec.fix_id).append(54, "1" if side == "buy" else "2")
        msg.append(60, dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3])
        msg.append(38, lots).append(40, "1")
        if stop is not None:
            msg.append(STOP_DISTANCE, fmt(stop))
        if tp is not None:
            msg.append(TP_DISTANCE, fmt(tp))
        if trailing:
            msg.append(TRAILING, "Y")
        crash_point("after_commit")
        await self.send(msg)
        crash_point("after_send")
        self.store.mark_sent(cl)
        log.info("order %s %s %s lots %s (target %s)", cl, side, lots, self.symbol, target)
        return row

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


def status_of(code: str) -> str:
    return _STATUS.get(code, "unknown")
