"""The venue behind the FIX acceptor: routes QUOTE and TRADE messages to the exchange and the
market-data subscriptions, steps the bars, and injects faults.

Decisions:
- A session is QUOTE or TRADE by its SubID (the client's TargetSubID(57), which is the venue
  session's SenderSubID): the config's ``quote_sub_id`` / ``trade_sub_id``. A message on the
  wrong session (an order on QUOTE, a MarketDataRequest on TRADE) or of a type the venue does
  not serve gets a BusinessMessageReject (380=3).
- ``step()`` advances the timeline by one timestamp: for each symbol with a bar there, the fills
  due at its open, then stops/take-profits inside it, then financing at its close (the
  exchange); then the ExecutionReports go out on TRADE and one refresh (X) per subscription on
  QUOTE. A subscription made before the first bar gets its snapshot (W) at the first step.
- ExecutionReports made while TRADE is logged out are not queued: the fills happened (the
  venue is the market) and the client reconciles after logon with H / AF / AN, as the live
  executor does after every reconnect.
- Scheduled faults (config ``faults.schedule``) fire at the start of the step that brings bar
  number ``at_bar`` of the run (counted from 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from live.fix.message import Message
from live.venue.config import ScheduledFault
from live.venue.errors import OrderError, VenueError
from live.venue.exchange import CancelReject, Exchange
from live.venue.faults import Faults
from live.venue.feed import Bar, Feed, Timeline
from live.venue.messages import (
    ENTRY_TYPES,
    Reports,
    business_reject,
    incremental,
    md_reject,
    parse_new_order,
    snapshot,
)
from live.venue.spec import SymbolSpec

log = logging.getLogger("emp.venue")

QUOTE, TRADE = "quote", "trade"
TRADE_TYPES = ("D", "F", "H", "AN", "AF", "BB")


class SessionLike(Protocol):
    """What the venue needs of a ``live.fix.session.Session``."""

    id: Any
    logged_on: bool

    async def send(self, msg: Message) -> int: ...


@dataclass
class Subscription:
    req_id: str
    symbols: tuple[str, ...]  # our names
    types: tuple[str, ...]
    updates: bool
    pending_snapshot: set[str]  # symbols whose snapshot waits for their first bar


class Venue:
    """The paper venue: one account, its symbols' feeds, the sessions that are logged on."""

    def __init__(self, specs: Mapping[str, SymbolSpec], feeds: Mapping[str, Feed], *,
                 cash: float, account: str = "1", quote_sub_id: str = "QUOTE",
                 trade_sub_id: str = "TRADE", require_stop: bool = True,
                 faults: Faults | None = None,
                 schedule: list[ScheduledFault] | tuple[ScheduledFault, ...] = ()) -> None:
        missing = sorted(set(specs) - set(feeds))
        if missing:
            raise VenueError(f"no bars for symbol(s) {missing}")
        self.specs = dict(specs)
        self.by_id = {s.fix_id: s for s in self.specs.values()}
        self.faults = faults or Faults()
        self.exchange = Exchange(self.specs, cash, self.faults, require_stop)
        self.timeline = Timeline({s: feeds[s] for s in self.specs})
        self.reports = Reports(self.specs, account)
        self.sub_ids = {quote_sub_id: QUOTE, trade_sub_id: TRADE}
        self.sessions: dict[str, SessionLike] = {}
        self.subs: dict[str, Subscription] = {}   # by MDReqID
        self.latest: dict[str, Bar] = {}
        self.schedule = sorted(schedule, key=lambda f: f.at_bar)
        self.lock = asyncio.Lock()
        self.dropped: list[str] = []               # roles whose link a fault dropped
        self.stale_steps = 0

    # ---- sessions -----------------------------------------------------------------------------
    def role(self, session: SessionLike) -> str | None:
        sid = session.id
        for sub in (getattr(sid, "sender_sub_id", None), getattr(sid, "target_sub_id", None)):
            if sub in self.sub_ids:
                return self.sub_ids[sub]
        return None

    async def on_logon(self, session: SessionLike) -> None:
        role = self.role(session)
        if role is not None:
            self.sessions[role] = session
        log.info("venue: %s session logged on (%s)", role or "unknown", session.id)

    async def on_logout(self, session: SessionLike) -> None:
        role = self.role(session)
        if role is not None and self.sessions.get(role) is session:
            del self.sessions[role]
            if role == QUOTE:
                self.subs.clear()  # market data subscriptions end with the session
        log.info("venue: %s session logged out", role or "unknown")

    async def _send(self, session: SessionLike | None, msg: Message) -> None:
        if session is None or not session.logged_on:
            return
        try:
            await session.send(msg)
        except Exception as exc:  # a link that went away between the check and the send
            log.warning("venue: could not send %s: %s", msg.msg_type, exc)

    async def on_message(self, session: SessionLike, msg: Message) -> None:
        async with self.lock:
            for reply in self.handle(self.role(session), msg):
                await self._send(session, reply)

    # ---- requests -----------------------------------------------------------------------------
    def handle(self, role: str | None, msg: Message) -> list[Message]:
        """The replies to one application message from a session of ``role``."""
        mt = msg.msg_type
        if mt == "V":
            if role != QUOTE:
                return [business_reject(msg, 3, "MarketDataRequest belongs on the QUOTE session")]
            return self._market_data_request(msg)
        if mt in TRADE_TYPES:
            if role != TRADE:
                return [business_reject(msg, 3, f"MsgType {mt} belongs on the TRADE session")]
            return {"D": self._new_order, "F": self._cancel, "H": self._status,
                    "AN": self._positions, "AF": self._mass_status,
                    "BB": self._collateral}[mt](msg)
        return [business_reject(msg, 3, f"MsgType {mt} is not supported by the venue")]

    def _new_order(self, msg: Message) -> list[Message]:
        try:
            req = parse_new_order(msg, self.by_id)
        except OrderError as exc:
            cl = msg.get(11) or ""
            # a duplicate ClOrdID stays a duplicate even when the resend is malformed
            err = OrderError(f"duplicate ClOrdID {cl!r}", 6) if cl in self.exchange.seen else exc
            if cl:
                self.exchange.seen.add(cl)
            return [self._reject_unparsed(msg, err)]
        acct = msg.get(1)
        if acct is not None and acct != self.reports.account:
            return [self._reject_unparsed(msg, OrderError(f"unknown Account(1) {acct!r}", 99))]
        return [self.reports.execution(self.exchange.submit(req))]

    def _reject_unparsed(self, msg: Message, exc: OrderError) -> Message:
        """A rejecting ExecutionReport for an order that could not even be parsed."""
        side = msg.get(54) if msg.get(54) in ("1", "2") else "1"
        self.reports._exec += 1
        return Message("8", [
            (37, "NONE"), (11, msg.get(11) or "NONE"), (17, f"E{self.reports._exec}"),
            (150, "8"), (39, "8"), (103, str(exc.reason)), (1, self.reports.account),
            (55, msg.get(55) or "NONE"), (54, side), (38, msg.get(38) or "0"),
            (151, "0"), (14, "0"), (6, "0"), (60, _now()), (58, str(exc))])

    def _cancel(self, msg: Message) -> list[Message]:
        res = self.exchange.cancel(msg.get(11) or "", msg.get(41) or "", msg.get(37))
        if isinstance(res, CancelReject):
            return [self.reports.cancel_reject(res)]
        return [self.reports.execution(res)]

    def _status(self, msg: Message) -> list[Message]:
        extra = ((790, msg.get(790) or ""),) if msg.get(790) else ()
        order = self.exchange.find(msg.get(11), msg.get(37))
        if order is None:
            return [self.reports.unknown_order(msg, f"unknown order {msg.get(11)!r}", extra)]
        return [self.reports.status(order, extra)]

    def _mass_status(self, msg: Message) -> list[Message]:
        mass_id = msg.get(584) or ""
        open_ = self.exchange.open_orders()
        if not open_:
            return [self.reports.no_open_orders(mass_id)]
        n = len(open_)
        return [self.reports.status(o, ((584, mass_id), (911, str(n)),
                                        (912, "Y" if i == n - 1 else "N")))
                for i, o in enumerate(open_)]

    def _collateral(self, msg: Message) -> list[Message]:
        return [self.reports.collateral(msg, self.exchange.equity(), self.exchange.cash)]

    def _positions(self, msg: Message) -> list[Message]:
        ts = max((b.ts for b in self.latest.values()), default=None)
        day = (dt.datetime.fromtimestamp(ts / 1e9, dt.UTC) if ts is not None
               else dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
        return self.reports.positions(
            msg, self.exchange.positions,
            {s: self.exchange.unrealized(s) for s in self.specs}, day)

    def _market_data_request(self, msg: Message) -> list[Message]:
        req_id = msg.get(262) or ""
        kind = msg.get(263) or ""
        if kind == "2":
            if self.subs.pop(req_id, None) is None:
                return [md_reject(req_id, 0, f"no subscription with MDReqID {req_id!r}")]
            return []
        if kind not in ("0", "1"):
            return [md_reject(req_id, 4, f"SubscriptionRequestType(263) {kind!r} is not "
                                         "supported: 0 snapshot, 1 subscribe, 2 unsubscribe")]
        if kind == "1" and req_id in self.subs:
            return [md_reject(req_id, 1, f"MDReqID {req_id!r} is already subscribed")]
        ids = msg.get_all(55)
        unknown = [i for i in ids if i not in self.by_id]
        if not ids or unknown:
            return [md_reject(req_id, 0, f"unknown Symbol(55) {unknown or ids!r}; known ids "
                                         f"{sorted(self.by_id)}")]
        types = tuple(msg.get_all(269)) or ENTRY_TYPES
        bad = [t for t in types if t not in ENTRY_TYPES]
        if bad:
            return [md_reject(req_id, 8, f"MDEntryType(269) {bad} not supported; the venue "
                                         f"sends {list(ENTRY_TYPES)}")]
        names = tuple(self.by_id[i].name for i in ids)
        out = [snapshot(req_id, self.latest[s], self.specs[s], types)
               for s in names if s in self.latest]
        if kind == "0" and len(out) < len(names):
            out.append(md_reject(req_id, None, "no bar yet for Symbol(55) " + ", ".join(
                self.specs[s].fix_id for s in names if s not in self.latest)))
        if kind == "1":
            self.subs[req_id] = Subscription(req_id, names, types, True,
                                             {s for s in names if s not in self.latest})
        return out

    # ---- time ---------------------------------------------------------------------------------
    async def step(self) -> list[Bar]:
        """One timestamp further: fills, stops, financing, then reports and refreshes.
        Returns the bars of that timestamp (empty at the end of the history)."""
        async with self.lock:
            await self._scheduled(self.timeline.steps)
            bars = self.timeline.next()
            reports = []
            for bar in bars:
                reports += self.exchange.on_bar(bar.symbol, bar.t, bar.open, bar.high,
                                                bar.low, bar.close)
                self.latest[bar.symbol] = bar
            trade = self.sessions.get(TRADE)
            for rep in reports:
                await self._send(trade, self.reports.execution(rep))
            if bars and self.faults.take_stale():
                self.stale_steps += 1
                return bars
            quote = self.sessions.get(QUOTE)
            new = {b.symbol: b for b in bars}
            for sub in list(self.subs.values()):
                first = sub.pending_snapshot & set(new)
                for s in sorted(first):  # the first bar comes as the snapshot, not as a refresh
                    sub.pending_snapshot.discard(s)
                    await self._send(quote, snapshot(sub.req_id, new[s], self.specs[s], sub.types))
                items = [(new[s], self.specs[s]) for s in sub.symbols if s in new and s not in first]
                if items:
                    await self._send(quote, incremental(sub.req_id, items, sub.types))
            return bars

    async def run(self, speed: float, stop: asyncio.Event | None = None) -> None:
        """Replay at ``speed`` bars per second until the history ends or ``stop`` is set."""
        if speed <= 0:
            raise VenueError("replay speed must be > 0 bars per second (0 means: step by hand)")
        period = 1.0 / speed
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while not (stop is not None and stop.is_set()):
            if not await self.step():
                return
            nxt += period
            with contextlib.suppress(TimeoutError):
                if stop is not None:
                    await asyncio.wait_for(stop.wait(), max(0.0, nxt - loop.time()))
                else:
                    await asyncio.sleep(max(0.0, nxt - loop.time()))

    # ---- faults -------------------------------------------------------------------------------
    async def _scheduled(self, step: int) -> None:
        while self.schedule and self.schedule[0].at_bar <= step:
            f = self.schedule.pop(0)
            log.info("venue: scheduled fault %s at bar %d", f.action, step)
            if f.action == "drop_link":
                await self.drop_link(f.session)
            elif f.action == "skip_seq":
                self.skip_seq(f.session, f.n)
            elif f.action == "reject_next":
                self.faults.reject_next(f.n)
            elif f.action == "delay_fills":
                self.faults.delay_fills(f.n)
            elif f.action == "partial_fills":
                self.faults.partial_fills(f.fraction or 0.5, f.n)
            elif f.action == "stale_quotes":
                self.faults.stale_quotes(f.n)

    async def drop_link(self, role: str = TRADE) -> bool:
        """Cut the TCP link of the ``role`` session without a Logout (the client sees a dead
        connection). False when that session is not logged on."""
        session = self.sessions.get(role)
        if session is None:
            return False
        self.dropped.append(role)
        cut = getattr(session, "drop", None)
        if cut is None:
            raise VenueError("drop_link: the FIX session offers no way to cut its link")
        await cut()
        return True

    def skip_seq(self, role: str = TRADE, n: int = 1) -> bool:
        """Advance the ``role`` session's next outbound MsgSeqNum by ``n`` without sending: the
        client sees a gap and must ask for a resend (answered with a GapFill)."""
        session = self.sessions.get(role)
        if session is None:
            return False
        skip = getattr(session, "skip_outbound", None)
        if skip is None:
            raise VenueError("skip_seq: the FIX session offers no way to skip sequence numbers")
        skip(n)
        return True


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]
