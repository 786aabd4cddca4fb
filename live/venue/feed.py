"""The bars the venue replays: one ``Feed`` per symbol, stepped on the union of their
timestamps.

Why each symbol keeps its own bars (not ``load_bars(align="outer")``): EURUSD trades 24x5 and
SP500 on the NYSE calendar; forward-filled fake bars would create opens to fill at and lows to
stop out on that never traded. A step moves to the next timestamp any symbol has, and only the
symbols with a bar there advance (their bar index t counts that symbol's bars).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.venue.errors import VenueError


@dataclass(frozen=True)
class Feed:
    """One symbol's bars: int64 UTC ns timestamps and float64 OHLCV."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True)
class Bar:
    symbol: str
    t: int        # the symbol's bar index
    ts: int       # UTC ns
    open: float
    high: float
    low: float
    close: float
    volume: float


class Timeline:
    """Steps several feeds in time order; ``next()`` gives the bars of the next timestamp."""

    def __init__(self, feeds: dict[str, Feed]) -> None:
        if not feeds:
            raise VenueError("the venue needs at least one symbol's bars")
        self.feeds = feeds
        self.pos = {s: 0 for s in feeds}
        self.steps = 0

    def done(self) -> bool:
        return all(self.pos[s] >= len(f) for s, f in self.feeds.items())

    def next(self) -> list[Bar]:
        """The bars at the next timestamp (empty when every feed is exhausted)."""
        live = [s for s, f in self.feeds.items() if self.pos[s] < len(f)]
        if not live:
            return []
        ts = min(int(self.feeds[s].ts[self.pos[s]]) for s in live)
        out = []
        for s in live:
            f, i = self.feeds[s], self.pos[s]
            if int(f.ts[i]) == ts:
                out.append(Bar(s, i, ts, float(f.open[i]), float(f.high[i]), float(f.low[i]),
                               float(f.close[i]), float(f.volume[i])))
                self.pos[s] = i + 1
        self.steps += 1
        return out


def load_feeds(symbols: list[str], timeframe: str, start: str | None, end: str | None,
               store: Path) -> dict[str, Feed]:
    """Each symbol's bars from the history store (``market.loader.load_bars``), one by one."""
    from market.loader import load_bars
    from market.store import HistoryStore

    hs = HistoryStore(store)
    out = {}
    for s in symbols:
        try:
            b = load_bars(s, timeframe, start, end, store=hs)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise VenueError(f"replay: cannot load {s}/{timeframe} from {store}: {exc}") from None
        if b.n_bars == 0:
            raise VenueError(f"replay: {s}/{timeframe} has no bars in [{start}, {end}) in {store}")
        out[s] = Feed(b.ts, b.open[0], b.high[0], b.low[0], b.close[0], b.volume[0])
    return out
