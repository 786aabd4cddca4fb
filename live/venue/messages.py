"""FIX 4.4 messages of the venue, built and parsed without I/O (the glue in ``live.venue.app``
sends them).

Wire decisions (a client of the venue codes against these):
- Symbol(55) is the broker's numeric id from the config; OrderQty(38), LastQty(32), CumQty(14),
  LeavesQty(151), LongQty(704) and ShortQty(705) are in lots (units = lots × lot_size).
- NewOrderSingle: market orders only (OrdType 1). StopPx(99) = absolute stop-loss level,
  Price(44) = absolute take-profit level; or, as distances in price from the fill price, the
  user-defined tags 9001 (stop distance) and 9002 (take-profit distance); 9003=Y makes the stop
  trail. Distances are what the kernel uses, so they reproduce a backtest exactly.
- ExecutionReports use FIX 4.4 ExecTypes: 0 New, F Trade (OrdStatus 1 partially filled or
  2 filled), 4 Canceled, 8 Rejected, I order status. LastPx/AvgPx are effective prices with
  spread, commission and slippage folded in (no separate Commission field).
- A stop-loss or take-profit exit is an unsolicited ExecutionReport (ExecType F, OrdStatus 2)
  of a venue order with ClOrdID ``<opening ClOrdID>-SL`` / ``-TP``, OrdType 3 / 2 and Text
  ``stop-loss hit`` / ``take-profit hit``.
- OrderMassStatusRequest with no open order: one ExecutionReport with OrderID NONE, ExecType I,
  OrdStatus 8, TotNumReports(911)=0, LastRptRequested(912)=Y, Text ``no open orders``.
- Market data: Bid(0)/Offer(1) around the close (half the symbol's spread each way, on the tick
  grid), Opening(4), High(7), Low(8), Close(5), TradeVolume(B, size in MDEntrySize 271);
  MDEntryDate/Time(272/273) = the bar's stored timestamp (its open), UTC.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from live.fix.message import Message
from live.venue.errors import OrderError
from live.venue.exchange import (
    LIMIT,
    ORDER_STATUS,
    REJECTED,
    STOP,
    CancelReject,
    NewOrder,
    Order,
    Position,
    Report,
)
from live.venue.feed import Bar
from live.venue.spec import SymbolSpec, fmt

STOP_DISTANCE, TP_DISTANCE, TRAILING = 9001, 9002, 9003
ENTRY_TYPES = ("0", "1", "4", "7", "8", "5", "B")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def _price(msg: Message, tag: int, name: str) -> float | None:
    raw = msg.get(tag)
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
    except ValueError:
        raise OrderError(f"{name}({tag}) {raw!r} is not a number") from None
    if not math.isfinite(v):
        raise OrderError(f"{name}({tag}) {raw!r} is not a finite number")
    return v


def parse_new_order(msg: Message, by_id: Mapping[str, SymbolSpec]) -> NewOrder:
    """NewOrderSingle -> NewOrder; OrderError (Text of the reject) when it cannot be one."""
    cl = msg.get(11) or ""
    if not cl:
        raise OrderError("ClOrdID(11) is missing")
    sym = msg.get(55) or ""
    spec = by_id.get(sym)
    if spec is None:
        raise OrderError(f"unknown Symbol(55) {sym!r}: known ids {sorted(by_id)}", 1)
    side = {"1": 1, "2": -1}.get(msg.get(54) or "")
    if side is None:
        raise OrderError(f"Side(54) {msg.get(54)!r} is not supported: 1 buy or 2 sell", 11)
    trailing = (msg.get(TRAILING) or "N").upper()
    if trailing not in ("Y", "N"):
        raise OrderError(f"trailing stop ({TRAILING}) must be Y or N, got {trailing!r}")
    return NewOrder(cl, spec.name, side, spec.units(msg.get(38) or ""), msg.get(40) or "",
                    stop=_price(msg, 99, "StopPx"),
                    stop_dist=_price(msg, STOP_DISTANCE, "stop distance"),
                    tp=_price(msg, 44, "Price"), tp_dist=_price(msg, TP_DISTANCE, "TP distance"),
                    trailing=trailing == "Y")


class Reports:
    """Builds ExecutionReports and the other TRADE replies (ExecIDs unique per venue)."""

    def __init__(self, specs: Mapping[str, SymbolSpec], account: str) -> None:
        self.specs = specs
        self.account = account
        self._exec = 0
        self._rpt = 0

    def _exec_id(self) -> str:
        self._exec += 1
        return f"E{self._exec}"

    def execution(self, rep: Report, *, extra: tuple[tuple[int, str], ...] = ()) -> Message:
        return self._er(rep.order, rep.exec_type, rep.last_qty, rep.last_px,
                        rep.text or rep.order.text, rep.reject_reason, rep.orig_cl_ord_id, extra)

    def status(self, order: Order, extra: tuple[tuple[int, str], ...] = ()) -> Message:
        return self._er(order, ORDER_STATUS, 0.0, 0.0, order.text, None, "", extra)

    def _er(self, o: Order, exec_type: str, last_qty: float, last_px: float, text: str,
            reject: int | None, orig: str, extra: tuple[tuple[int, str], ...]) -> Message:
        spec = self.specs.get(o.symbol)
        lots = spec.lots if spec is not None else (lambda u: fmt(u))
        m = Message("8", [(37, o.order_id), (11, o.cl_ord_id)])
        if orig:
            m.append(41, orig)
        m.append(17, self._exec_id()).append(150, exec_type).append(39, o.status)
        if reject is not None:
            m.append(103, reject)
        m.append(1, self.account).append(55, spec.fix_id if spec else o.symbol)
        m.append(54, "1" if o.side > 0 else "2").append(38, lots(o.qty)).append(40, o.ord_type)
        if o.stop is not None:
            m.append(99, fmt(o.stop))
        if o.tp is not None and o.ord_type not in (STOP, LIMIT):
            m.append(44, fmt(o.tp))
        if last_qty > 0:
            m.append(32, lots(last_qty)).append(31, fmt(last_px))
        m.append(151, lots(o.leaves)).append(14, lots(o.cum_qty)).append(6, fmt(o.avg_px))
        m.append(60, utc_now())
        if text:
            m.append(58, text)
        m.fields.extend(extra)
        return m

    def unknown_order(self, msg: Message, text: str,
                      extra: tuple[tuple[int, str], ...] = ()) -> Message:
        """An order status answer for an order the venue does not know (OrdStatus 8)."""
        side = msg.get(54) or "1"
        m = Message("8", [(37, msg.get(37) or "NONE"), (11, msg.get(11) or "NONE"),
                          (17, self._exec_id()), (150, ORDER_STATUS), (39, REJECTED),
                          (1, self.account), (55, msg.get(55) or "NONE"),
                          (54, side if side in ("1", "2") else "1"), (151, "0"), (14, "0"),
                          (6, "0"), (60, utc_now()), (58, text)])
        m.fields.extend(extra)
        return m

    @staticmethod
    def cancel_reject(cr: CancelReject) -> Message:
        return Message("9", [(37, cr.order_id), (11, cr.cl_ord_id), (41, cr.orig_cl_ord_id),
                             (39, cr.status), (434, "1"), (102, cr.reason), (58, cr.text)])

    def positions(self, req: Message, positions: Mapping[str, Position],
                  unrealized: Mapping[str, float], business_date: str) -> list[Message]:
        """RequestForPositions -> the Ack, then one PositionReport per open position."""
        req_id = req.get(710) or ""
        acct = req.get(1)
        self._rpt += 1
        ack = Message("AO", [(721, f"A{self._rpt}"), (710, req_id)])
        if acct is not None and acct != self.account:
            ack.fields += [(727, "0"), (728, "1"), (729, "2"), (1, acct), (581, "1"),
                           (58, f"unknown Account(1) {acct!r}")]
            return [ack]
        open_ = [(s, p) for s, p in positions.items() if p.units != 0.0]
        ack.fields += [(727, str(len(open_))), (728, "0" if open_ else "2"), (729, "0"),
                       (1, self.account), (581, "1")]
        out = [ack]
        for s, p in open_:
            spec = self.specs[s]
            self._rpt += 1
            out.append(Message("AP", [
                (721, f"A{self._rpt}"), (710, req_id), (727, str(len(open_))), (728, "0"),
                (715, business_date), (1, self.account), (581, "1"), (55, spec.fix_id),
                (730, fmt(p.last_close)), (731, "1"), (734, fmt(p.entry_px)),
                (702, "1"), (703, "TOT"),
                (704, spec.lots(p.units) if p.units > 0 else "0"),
                (705, spec.lots(p.units) if p.units < 0 else "0"),
                (753, "1"), (707, "FMTM"), (708, fmt(unrealized[s]))]))
        return out

    def collateral(self, req: Message, equity: float, cash: float) -> Message:
        """CollateralInquiry (BB) -> CollateralReport (BA): the account's equity (TotalNetValue
        900: cash + positions marked at their last close) and cash (CashOutstanding 901)."""
        self._rpt += 1
        out = Message("BA", [(908, f"C{self._rpt}")])
        if req.get(909):
            out.append(909, req.get(909))
        acct = req.get(1)
        if acct is not None and acct != self.account:
            return out.append(910, "4").append(1, acct).append(58, f"unknown Account(1) {acct!r}")
        return (out.append(910, "0").append(1, self.account).append(900, fmt(equity))
                .append(901, fmt(cash)).append(60, utc_now()))

    def no_open_orders(self, mass_id: str) -> Message:
        return Message("8", [(37, "NONE"), (11, "NONE"), (17, self._exec_id()),
                             (150, ORDER_STATUS), (39, REJECTED), (1, self.account),
                             (55, "NONE"), (54, "1"), (151, "0"), (14, "0"), (6, "0"),
                             (60, utc_now()), (58, "no open orders"), (584, mass_id),
                             (911, "0"), (912, "Y")])


def business_reject(msg: Message, reason: int, text: str) -> Message:
    """BusinessMessageReject (j) of an application message."""
    return Message("j", [(45, msg.header.get(34, "0")), (372, msg.msg_type), (380, reason),
                         (58, text)])


# ---- market data -----------------------------------------------------------------------------
def bar_entries(bar: Bar, spec: SymbolSpec, types: tuple[str, ...]) -> list[tuple[str, float]]:
    """The requested MD entries of one bar, in ENTRY_TYPES order: (MDEntryType, value)."""
    bid, ask = spec.quote(bar.close)
    values = {"0": bid, "1": ask, "4": bar.open, "7": bar.high, "8": bar.low, "5": bar.close,
              "B": bar.volume}
    return [(t, values[t]) for t in ENTRY_TYPES if t in types]


def _when(ts_ns: int) -> tuple[str, str]:
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC)
    return t.strftime("%Y%m%d"), t.strftime("%H:%M:%S")


def _entry(tag_type: str, value: float) -> list[tuple[int, str]]:
    return [(269, tag_type), (271 if tag_type == "B" else 270, fmt(value))]


def snapshot(req_id: str, bar: Bar, spec: SymbolSpec, types: tuple[str, ...]) -> Message:
    """MarketDataSnapshotFullRefresh (W) of one symbol's latest bar."""
    day, clock = _when(bar.ts)
    entries = bar_entries(bar, spec, types)
    m = Message("W", [(262, req_id), (55, spec.fix_id), (268, str(len(entries)))])
    for t, v in entries:
        m.fields += [*_entry(t, v), (272, day), (273, clock)]
    return m


def incremental(req_id: str, bars: list[tuple[Bar, SymbolSpec]],
                types: tuple[str, ...]) -> Message:
    """MarketDataIncrementalRefresh (X): the new bars of the subscription's symbols."""
    fields: list[tuple[int, str]] = []
    n = 0
    for bar, spec in bars:
        day, clock = _when(bar.ts)
        for t, v in bar_entries(bar, spec, types):
            fields += [(279, "0"), (269, t), (55, spec.fix_id),
                       (271 if t == "B" else 270, fmt(v)), (272, day), (273, clock)]
            n += 1
    return Message("X", [(262, req_id), (268, str(n)), *fields])


def md_reject(req_id: str, reason: int | None, text: str) -> Message:
    """MarketDataRequestReject (Y): 0 unknown symbol, 1 duplicate MDReqID, 4 unsupported
    SubscriptionRequestType, 8 unsupported MDEntryType; None (no MDReqRejReason, which FIX 4.4
    makes optional): a snapshot asked for before the symbol's first bar."""
    if reason is None:
        return Message("Y", [(262, req_id), (58, text)])
    return Message("Y", [(262, req_id), (281, str(reason)), (58, text)])
