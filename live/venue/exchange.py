"""The venue's matching and account logic: plain, synchronous, no I/O (the FIX glue in
``live.venue.app`` turns messages into calls here and the returned reports into messages).

Fill rules are the backtest kernel's (``fitness/simulator_nb.py``), so an executor replaying a
genome through the venue books the backtest's prices and equity bit for bit:

- A market order received while bar t is the symbol's latest bar fills at the OPEN of bar t+1
  (t+1+n with a fill delay fault) at ``open ± (open·cost_frac + cost_abs)``: spread, commission
  and slippage are folded into the reported price (LastPx/AvgPx); no separate commission.
  Orders due at the same open fill in arrival order.
- One netted position per symbol. A fill against the position closes first (at the same
  price, with the kernel's cash and P&L arithmetic), and any rest opens the other way; adding
  to a position averages its entry price.
- Protection: StopPx(99) is an absolute stop level, Price(44) an absolute take-profit; the
  user-defined tags ``STOP_DISTANCE`` (9001) and ``TP_DISTANCE`` (9002) give them as distances
  from the fill price (costs included), which is how the kernel places them (fill ∓ distance),
  and ``TRAILING`` (9003=Y) makes the stop trail (kernel rule: moved to high − distance, low +
  distance for shorts, at the close of every bar it was not hit, effective from the next).
  An order that opens or adds sets the position's protection (replacing the old); an order
  that only reduces leaves it. An order that opens or adds without a stop is rejected (the
  design: every order carries a stop at the broker), unless the venue was built with
  ``require_stop=False``.
- Stops and take-profits are checked against every bar after the fill, starting with the fill
  bar: a bar that opens beyond the level fills at its open, else at the level; when both lie
  inside one bar the stop fills first. The exit pays the costs like any fill and is reported
  as an unsolicited, filled ExecutionReport (``Report.protective``).
- Financing: ``|units| · close · value_per_unit · fin_bar`` is charged at every close while a
  position is open (the kernel's rule), and booked into the position's next realised P&L.
- Equity = cash + Σ units · close · value_per_unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from live.venue.errors import OrderError
from live.venue.faults import Faults
from live.venue.spec import SymbolSpec

# OrdStatus(39) / ExecType(150) codes used here
NEW, PARTIAL, FILLED, CANCELED, REJECTED = "0", "1", "2", "4", "8"
TRADE, ORDER_STATUS = "F", "I"
MARKET, LIMIT, STOP = "1", "2", "3"


@dataclass
class Order:
    """One order at the venue (client orders and the venue's own stop/take-profit exits)."""

    order_id: str
    cl_ord_id: str
    symbol: str
    side: int                       # 1 buy, -1 sell
    qty: float                      # units
    ord_type: str = MARKET
    stop: float | None = None       # absolute stop level
    stop_dist: float | None = None  # stop distance from the fill price
    tp: float | None = None
    tp_dist: float | None = None
    trailing: bool = False
    received_bar: int = -1
    due_bar: int = 0
    partial: float | None = None    # fraction of the first fill (fault)
    cum_qty: float = 0.0
    avg_px: float = 0.0
    status: str = NEW
    text: str = ""

    @property
    def leaves(self) -> float:
        return max(0.0, self.qty - self.cum_qty) if self.status in (NEW, PARTIAL) else 0.0

    @property
    def is_open(self) -> bool:
        return self.status in (NEW, PARTIAL)


@dataclass(frozen=True)
class Report:
    """One ExecutionReport's content: the order as it stands after the event."""

    exec_type: str
    order: Order
    last_qty: float = 0.0
    last_px: float = 0.0
    text: str = ""
    reject_reason: int | None = None
    protective: bool = False  # a stop-loss / take-profit exit the venue made
    orig_cl_ord_id: str = ""  # OrigClOrdID(41) of a cancel


@dataclass(frozen=True)
class CancelReject:
    """An OrderCancelReject's content."""

    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: str
    status: str
    reason: int  # CxlRejReason(102): 0 too late, 1 unknown order, 6 duplicate ClOrdID
    text: str


@dataclass
class Position:
    """A symbol's netted position and its protection."""

    units: float = 0.0
    entry_px: float = 0.0
    entry_bar: int = -1
    stop: float | None = None
    tp: float | None = None
    dist: float = 0.0          # trailing distance
    trailing: bool = False
    fin_paid: float = 0.0      # financing paid since the position opened
    parent: str = ""           # ClOrdID of the order that set the protection
    realized: float = 0.0      # realised P&L of the symbol, all positions so far
    last_close: float = math.nan


@dataclass(frozen=True)
class NewOrder:
    """A parsed NewOrderSingle (quantities in units)."""

    cl_ord_id: str
    symbol: str
    side: int
    qty: float
    ord_type: str = MARKET
    stop: float | None = None
    stop_dist: float | None = None
    tp: float | None = None
    tp_dist: float | None = None
    trailing: bool = False


@dataclass
class Exchange:
    """The venue's orders, positions and cash for one account."""

    specs: Mapping[str, SymbolSpec]
    cash: float
    faults: Faults = field(default_factory=Faults)
    require_stop: bool = True
    orders: dict[str, Order] = field(default_factory=dict)        # by OrderID
    by_cl: dict[str, Order] = field(default_factory=dict)         # by ClOrdID (accepted ones)
    seen: set[str] = field(default_factory=set)                    # every ClOrdID received
    positions: dict[str, Position] = field(default_factory=dict)
    bar: dict[str, int] = field(default_factory=dict)              # latest bar per symbol
    _n: int = 0

    def __post_init__(self) -> None:
        for s in self.specs:
            self.positions.setdefault(s, Position())
            self.bar.setdefault(s, -1)

    # ---- orders -------------------------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def _rejected(self, req: NewOrder, text: str, reason: int) -> Report:
        order = Order(self._next_id("R"), req.cl_ord_id, req.symbol, req.side, req.qty,
                      req.ord_type, req.stop, req.stop_dist, req.tp, req.tp_dist, req.trailing,
                      status=REJECTED, text=text)
        self.orders[order.order_id] = order
        return Report(REJECTED, replace(order), text=text, reject_reason=reason)

    def submit(self, req: NewOrder) -> Report:
        """Accept (ExecType New) or reject a new order; never raises for a bad order."""
        if req.cl_ord_id in self.seen:
            return self._rejected(req, f"duplicate ClOrdID {req.cl_ord_id!r}", 6)
        self.seen.add(req.cl_ord_id)
        if self.faults.take_reject():
            return self._rejected(req, "rejected by the venue's fault injection (reject_next)", 99)
        try:
            self._check(req)
        except OrderError as exc:
            return self._rejected(req, str(exc), exc.reason)
        t = self.bar[req.symbol]
        order = Order(self._next_id("O"), req.cl_ord_id, req.symbol, req.side, req.qty,
                      req.ord_type, req.stop, req.stop_dist, req.tp, req.tp_dist, req.trailing,
                      received_bar=t, due_bar=t + 1 + self.faults.delay_bars,
                      partial=self.faults.take_partial())
        self.orders[order.order_id] = order
        self.by_cl[order.cl_ord_id] = order
        return Report(NEW, replace(order))

    def _check(self, req: NewOrder) -> None:
        spec = self.specs.get(req.symbol)
        if spec is None:
            raise OrderError(f"unknown symbol {req.symbol!r}", 1)
        if req.ord_type != MARKET:
            raise OrderError(f"OrdType(40) {req.ord_type!r} is not supported: market orders "
                             "(1) only", 11)
        if req.side not in (1, -1) or not (req.qty > 0):
            raise OrderError("an order needs Side(54) 1 or 2 and a positive OrderQty(38)")
        for name, absolute, dist in (("stop", req.stop, req.stop_dist),
                                     ("take-profit", req.tp, req.tp_dist)):
            if absolute is not None and dist is not None:
                raise OrderError(f"the {name} is given both as a level and as a distance")
            if dist is not None and not (math.isfinite(dist) and dist > 0):
                raise OrderError(f"the {name} distance must be a positive price, got {dist}")
            if absolute is not None and not (math.isfinite(absolute) and absolute > 0):
                raise OrderError(f"the {name} level must be a positive price, got {absolute}")
            if absolute is not None and not spec.on_tick(absolute):
                raise OrderError(f"the {name} level {absolute} is not on {req.symbol}'s tick "
                                 f"grid ({spec.tick_size})")
        last = self.positions[req.symbol].last_close
        if math.isfinite(last):
            if req.stop is not None and (req.stop - last) * req.side >= 0:
                raise OrderError(f"StopPx(99) {req.stop} is on the wrong side of the market "
                                 f"({last}) for a {'buy' if req.side > 0 else 'sell'}")
            if req.tp is not None and (req.tp - last) * req.side <= 0:
                raise OrderError(f"take-profit Price(44) {req.tp} is on the wrong side of the "
                                 f"market ({last}) for a {'buy' if req.side > 0 else 'sell'}")
        if req.trailing and req.stop is None and req.stop_dist is None:
            raise OrderError("a trailing stop needs a stop (StopPx(99) or the stop distance)")
        if self.require_stop and req.stop is None and req.stop_dist is None:
            projected = self.positions[req.symbol].units + sum(
                o.side * o.leaves for o in self.orders.values()
                if o.is_open and o.symbol == req.symbol)
            after = projected + req.side * req.qty
            reduces = projected != 0 and abs(after) <= abs(projected) and after * projected >= 0
            if not reduces:
                raise OrderError("an order that opens or adds to a position needs a stop-loss "
                                 "(StopPx(99) or the stop distance)")

    def cancel(self, cl_ord_id: str, orig_cl_ord_id: str,
               order_id: str | None = None) -> Report | CancelReject:
        """Cancel what is left of an open order (OrderCancelRequest)."""
        order = self.orders.get(order_id) if order_id else None
        if order is None or order.status == REJECTED:
            order = self.by_cl.get(orig_cl_ord_id)
        if cl_ord_id in self.seen:
            return CancelReject(cl_ord_id, orig_cl_ord_id, order.order_id if order else "NONE",
                                order.status if order else REJECTED, 6,
                                f"duplicate ClOrdID {cl_ord_id!r}")
        self.seen.add(cl_ord_id)
        if order is None:
            return CancelReject(cl_ord_id, orig_cl_ord_id, "NONE", REJECTED, 1,
                                f"unknown order {orig_cl_ord_id!r}")
        if not order.is_open:
            return CancelReject(cl_ord_id, orig_cl_ord_id, order.order_id, order.status, 0,
                                f"order {orig_cl_ord_id!r} is already "
                                f"{'filled' if order.status == FILLED else 'done'}")
        order.status = CANCELED
        order.cl_ord_id, orig = cl_ord_id, order.cl_ord_id
        self.by_cl[cl_ord_id] = order  # found under both ClOrdIDs from now on
        return Report(CANCELED, replace(order), text="canceled", orig_cl_ord_id=orig)

    def find(self, cl_ord_id: str | None = None, order_id: str | None = None) -> Order | None:
        if order_id and order_id in self.orders:
            return self.orders[order_id]
        return self.by_cl.get(cl_ord_id) if cl_ord_id else None

    def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open]

    # ---- bars ---------------------------------------------------------------------------------
    def on_bar(self, symbol: str, t: int, o: float, h: float, lo: float, c: float) -> list[Report]:
        """Bar t of ``symbol``: fills due at its open, then stops/targets inside it, then
        financing at its close. Returns the ExecutionReports, in order."""
        if t != self.bar[symbol] + 1:
            raise ValueError(f"{symbol}: bar {t} does not follow bar {self.bar[symbol]}")
        self.bar[symbol] = t
        spec = self.specs[symbol]
        pos = self.positions[symbol]
        out: list[Report] = []
        for order in [x for x in self.orders.values() if x.is_open and x.symbol == symbol
                      and x.due_bar <= t]:
            qty = order.leaves
            if order.partial is not None and order.cum_qty == 0.0:
                qty = max(spec.step, math.floor(qty * order.partial / spec.step) * spec.step)
                qty = min(qty, order.leaves)
            px = self._fill(spec, pos, order.side, qty, o, t, order)
            order.avg_px = (order.avg_px * order.cum_qty + px * qty) / (order.cum_qty + qty)
            order.cum_qty = spec.snap(order.cum_qty + qty)
            order.status = FILLED if order.cum_qty >= order.qty else PARTIAL
            out.append(Report(TRADE, replace(order), qty, px))
        if pos.units != 0.0:
            hit = self._protection(pos, o, h, lo)
            if hit is not None:
                out.append(self._exit(spec, pos, symbol, t, *hit))
            elif pos.trailing:
                pos.stop = (max(pos.stop, h - pos.dist) if pos.units > 0  # type: ignore[type-var]
                            else min(pos.stop, lo + pos.dist))            # type: ignore[type-var]
        if pos.units != 0.0:
            fee = abs(pos.units) * c * spec.value_per_unit * spec.fin_bar
            self.cash -= fee
            pos.fin_paid += fee
        pos.last_close = c
        return out

    @staticmethod
    def _protection(pos: Position, o: float, h: float,
                    lo: float) -> tuple[float, str] | None:
        """(raw exit price, 'stop'|'tp') when the bar reaches the stop or target: the kernel's
        order of checks (stop first, an open beyond a level fills at the open)."""
        s, tp = pos.stop, pos.tp
        if pos.units > 0:
            if s is not None and o <= s:
                return o, "stop"
            if s is not None and lo <= s:
                return s, "stop"
            if tp is not None and o >= tp:
                return o, "tp"
            if tp is not None and h >= tp:
                return tp, "tp"
        else:
            if s is not None and o >= s:
                return o, "stop"
            if s is not None and h >= s:
                return s, "stop"
            if tp is not None and o <= tp:
                return o, "tp"
            if tp is not None and lo <= tp:
                return tp, "tp"
        return None

    def _exit(self, spec: SymbolSpec, pos: Position, symbol: str, t: int, raw: float,
              kind: str) -> Report:
        side = -1 if pos.units > 0 else 1
        qty = abs(pos.units)
        order = Order(self._next_id("P"), f"{pos.parent}-{'SL' if kind == 'stop' else 'TP'}",
                      symbol, side, qty, STOP if kind == "stop" else LIMIT,
                      received_bar=t, due_bar=t)
        px = self._fill(spec, pos, side, qty, raw, t, order)
        order.cum_qty, order.avg_px, order.status = qty, px, FILLED
        order.text = "stop-loss hit" if kind == "stop" else "take-profit hit"
        self.orders[order.order_id] = order
        return Report(TRADE, replace(order), qty, px, text=order.text, protective=True)

    def _fill(self, spec: SymbolSpec, pos: Position, side: int, qty: float, raw: float, t: int,
              order: Order) -> float:
        """Book ``qty`` units bought (side 1) or sold at ``raw``: close first, then open/add.
        Returns the effective price. The arithmetic is the kernel's, operation for operation."""
        vpu = spec.value_per_unit
        px = spec.fill_price(raw, float(side))
        closing = 0.0
        if pos.units != 0.0 and (pos.units > 0) != (side > 0):
            closing = min(qty, abs(pos.units))
            s = 1.0 if pos.units > 0 else -1.0
            if closing >= abs(pos.units):  # full close: the kernel's _close_calc
                self.cash += pos.units * px * vpu
                pnl = s * abs(pos.units) * (px - pos.entry_px) * vpu - pos.fin_paid
                pos.realized += pnl
                pos.units, pos.stop, pos.tp, pos.trailing, pos.fin_paid = 0.0, None, None, False, 0.0
            else:
                part = s * closing
                share = pos.fin_paid * closing / abs(pos.units)
                self.cash += part * px * vpu
                pos.realized += s * closing * (px - pos.entry_px) * vpu - share
                pos.fin_paid -= share
                pos.units = spec.snap(pos.units - part)
        rest = spec.snap(qty - closing)
        if rest <= 0.0:
            return px
        units = side * rest
        self.cash = self.cash - units * px * vpu
        if pos.units == 0.0:  # the kernel's _open_calc
            pos.units, pos.entry_px, pos.entry_bar, pos.fin_paid = units, px, t, 0.0
        else:
            total = abs(pos.units) + rest
            pos.entry_px = (abs(pos.units) * pos.entry_px + rest * px) / total
            pos.units = spec.snap(pos.units + units)
        if order.stop is not None or order.stop_dist is not None or order.tp is not None \
                or order.tp_dist is not None:
            pos.parent = order.cl_ord_id
            pos.stop = order.stop if order.stop_dist is None else px - side * order.stop_dist
            pos.tp = order.tp if order.tp_dist is None else px + side * order.tp_dist
            pos.trailing = order.trailing
            pos.dist = (order.stop_dist if order.stop_dist is not None
                        else abs(px - order.stop) if order.stop is not None else 0.0)
        return px

    # ---- account ------------------------------------------------------------------------------
    def equity(self) -> float:
        """Cash plus every position marked at its symbol's last close (the kernel's equity)."""
        eq = self.cash
        for name, pos in self.positions.items():
            if pos.units != 0.0:
                eq = eq + pos.units * pos.last_close * self.specs[name].value_per_unit
        return eq

    def unrealized(self, symbol: str) -> float:
        pos = self.positions[symbol]
        if pos.units == 0.0:
            return 0.0
        return pos.units * (pos.last_close - pos.entry_px) * self.specs[symbol].value_per_unit
