"""Reconciliation with the venue: OrderStatusRequest (H) for every order the store holds open,
OrderMassStatusRequest (AF) for the venue's open orders, RequestForPositions (AN) for its
positions. Tolerance 0.01 lot. A mismatch is never "fixed": it is returned, and the caller
trips the breaker with an alert.

A pending_new or sent order the venue does not know never reached it (the link died with the
process, and a 141=Y logon resets sequence numbers, so nothing is resent): it is closed as
lost, audited, and the next to-target order replaces it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from live.executor.orders import OrderManager
from live.fix.message import Message

log = logging.getLogger("emp.live.reconcile")
LOT_TOLERANCE = 0.01


class Requests:
    """Request/answer correlation on the TRADE session (H by 790, AF by 584, AN by 710, BB by
    909)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[tuple[int, str], tuple[asyncio.Future, list[Message]]] = {}

    def new(self, tag: int) -> tuple[str, asyncio.Future]:
        rid = f"R{next(self._ids)}"
        fut = asyncio.get_running_loop().create_future()
        self._waiting[(tag, rid)] = (fut, [])
        return rid, fut

    def offer(self, msg: Message) -> bool:
        """Route an answer to its request; True when it was one."""
        for tag in (790, 584, 710, 909):
            rid = msg.get(tag)
            if rid is None or (tag, rid) not in self._waiting:
                continue
            fut, got = self._waiting[(tag, rid)]
            got.append(msg)
            done = tag in (790, 909) or (tag == 584 and msg.get(912) in ("Y", None)) or (
                tag == 710 and ((msg.msg_type == "AO" and msg.get(727) in ("0", None))
                                or len([m for m in got if m.msg_type == "AP"])
                                >= int(msg.get(727) or 0)))
            if done and not fut.done():
                fut.set_result(list(got))
                del self._waiting[(tag, rid)]
            return True
        return False


async def reconcile(orders: OrderManager, requests: Requests,
                    send: Callable[[Message], Awaitable[int]], timeout: float) -> list[str]:
    """The mismatches found (empty: clean). Open orders' states are brought up to date."""
    spec = orders.spec
    problems: list[str] = []
    for row in orders.open_orders():
        rid, fut = requests.new(790)
        await send(Message("H", [(11, row.cl_ord_id), (55, spec.fix_id),
                                 (54, "1" if row.side == "buy" else "2"), (790, rid)]))
        answer = (await asyncio.wait_for(fut, timeout))[0]
        if answer.get(39) == "8" and (answer.get(58) or "").startswith("unknown order"):
            orders.mark_lost(row, f"the venue does not know it (status {row.status} here)")
            log.warning("order %s never reached the venue: closed as lost", row.cl_ord_id)
        else:
            orders.on_execution(answer)
    rid, fut = requests.new(584)
    await send(Message("AF", [(584, rid), (585, "7")]))
    ours = {o.cl_ord_id for o in orders.open_orders()}
    for m in await asyncio.wait_for(fut, timeout):
        cl = m.get(11)
        if m.get(37) == "NONE" or cl is None:
            continue
        if cl not in ours:
            problems.append(f"the venue holds open order {cl} that the state store does not")
    rid, fut = requests.new(710)
    await send(Message("AN", [(710, rid), (724, "0"), (1, orders.account or "1"), (581, "1"),
                              (715, "20000101"), (60, _now())]))
    venue_units = 0.0
    for m in await asyncio.wait_for(fut, timeout):
        if m.msg_type == "AP" and m.get(55) == spec.fix_id:
            venue_units += orders.units_of(m.get(704)) - orders.units_of(m.get(705))
    ours_units = orders.held()
    if abs(venue_units - ours_units) > LOT_TOLERANCE * spec.lot_size + 1e-12:
        problems.append(f"position mismatch on {orders.symbol}: venue {venue_units:g} units, "
                        f"state store {ours_units:g} (tolerance {LOT_TOLERANCE} lot)")
    return problems


async def account_balance(requests: Requests, send: Callable[[Message], Awaitable[int]],
                          account: str | None, timeout: float) -> tuple[float, float]:
    """(equity, cash) of the account as the venue reports them (CollateralInquiry BB ->
    CollateralReport BA, TotalNetValue 900 and CashOutstanding 901). TimeoutError when the
    venue does not answer (a broker without collateral reports: the caller falls back);
    ValueError when it answers without the figures."""
    rid, fut = requests.new(909)
    await send(Message("BB", [(909, rid), (263, "0"), (1, account or "1"), (581, "1")]))
    answer = (await asyncio.wait_for(fut, timeout))[0]
    try:
        if answer.get(910) != "0":
            raise ValueError(answer.get(58) or f"CollStatus {answer.get(910)}")
        return float(answer.get(900)), float(answer.get(901))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the venue's collateral report is unusable: {exc}") from None


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]
