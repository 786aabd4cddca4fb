"""Market data -> bars, by the store's tick-to-bar rules.

The venue (and a broker that has them) sends each bar's OHLC in its refreshes: MDEntryType
Opening(4), High(7), Low(8), Close(5), TradeVolume(B), dated by MDEntryDate/Time (272/273, the
bar's open, UTC). Those are used as they are. A broker that sends only Bid(0)/Offer(1) ticks
gets bars built as ``market.bars.ticks_to_bars`` builds them: mid price, volume = tick count,
labelled by open time on the grid anchored at UTC midnight plus the calendar's day start
(22:00 UTC for FX); a bar is complete when the first tick of a later bar arrives.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from live.fix.message import Message
from market.calendars import day_start_offset_ns
from market.timeframes import TIMEFRAME_NS


@dataclass(frozen=True)
class LiveBar:
    symbol: str   # the broker's Symbol(55) id as sent
    ts: int       # open time, UTC ns
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class Quote:
    symbol: str
    ts: int
    bid: float | None
    ask: float | None
    bar: LiveBar | None  # set when the refresh carried the bar's OHLC


def _ts(day: str | None, clock: str | None) -> int | None:
    if not day:
        return None
    try:
        when = dt.datetime.strptime(f"{day} {clock or '00:00:00'}"[:17], "%Y%m%d %H:%M:%S")
    except ValueError:
        return None
    return int(when.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def entries(msg: Message) -> list[dict[int, str]]:
    """The MD entries of a W (symbol from the body) or an X (symbol per entry), each a dict."""
    out: list[dict[int, str]] = []
    body_symbol = msg.get(55) if msg.msg_type == "W" else None
    start = 279 if msg.msg_type == "X" else 269
    cur: dict[int, str] | None = None
    for tag, value in msg.fields:
        if tag == start:
            cur = {} if body_symbol is None else {55: body_symbol}
            out.append(cur)
        if cur is not None:
            cur[tag] = value
    return out


def quotes(msg: Message) -> list[Quote]:
    """One Quote per symbol and timestamp in a market data message."""
    groups: dict[tuple[str, int | None], dict[str, float]] = {}
    for e in entries(msg):
        sym, kind = e.get(55), e.get(269)
        raw = e.get(271) if kind == "B" else e.get(270)
        if sym is None or kind is None or raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value):
            groups.setdefault((sym, _ts(e.get(272), e.get(273))), {})[kind] = value
    out = []
    for (sym, ts), v in groups.items():
        if ts is None:
            continue
        bar = None
        if all(t in v for t in ("4", "7", "8", "5")):
            bar = LiveBar(sym, ts, v["4"], v["7"], v["8"], v["5"], v.get("B", 0.0))
        out.append(Quote(sym, ts, v.get("0"), v.get("1"), bar))
    return out


class TickBars:
    """Bars from bid/ask ticks (mid price, tick count volume) on the store's grid."""

    def __init__(self, symbol: str, timeframe: str, calendar: str) -> None:
        self.symbol = symbol
        self.step = TIMEFRAME_NS[timeframe]
        self.origin = day_start_offset_ns(calendar)
        self._cur: list[float] | None = None  # [start, o, h, l, c, n]

    def add(self, ts: int, bid: float, ask: float) -> LiveBar | None:
        """One tick; returns the bar it completed, if any (ticks must come in time order)."""
        mid = (bid + ask) * 0.5
        start = self.origin + ((ts - self.origin) // self.step) * self.step
        done = None
        cur = self._cur
        if cur is not None and start != cur[0]:
            done = LiveBar(self.symbol, int(cur[0]), cur[1], cur[2], cur[3], cur[4], cur[5])
            cur = None
        if cur is None:
            self._cur = [start, mid, mid, mid, mid, 1.0]
        else:
            cur[2], cur[3], cur[4] = max(cur[2], mid), min(cur[3], mid), mid
            cur[5] += 1.0
        return done
