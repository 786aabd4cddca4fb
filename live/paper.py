"""The paper record of a champion and its check against the backtest on the same bars: what a
promotion to live is judged on (``emp promote --to live``).

Why: the gates judge a backtest; the paper run shows that the executor, the venue's fills
and the champion's bundle agree with that backtest on bars nobody had seen. So the record is
read from the executor's state store (the bars it stepped with the target it decided on each
and the champion's sha256, the fills of its orders) and the bundle's strategy is replayed on
the SAME bars: a ``Runner`` from the bundle's snapshot, stepped through every stored bar after
the snapshot, its account part flat at the start of the compared bars (``flatten``, as the
executor's first start does). Compared, bar by bar and fill by fill:

- the target position the kernel decided (the paper kernel's against the replay's);
- the fills: side, the bar they filled on (a market order fills at the open after its
  decision bar; a venue stop-loss/take-profit exit's bar is not in the store and is matched
  by its order only), units and price (bps from the replay's);
- the return of the fills, marked at the last close, from the equity at the start.

Conventions and their reasons:

- **Days** are trading days of the symbol's calendar (the fx day starts at 22:00 UTC, the
  others at UTC midnight), as the executor's daily risk counters count them, among the bars
  compared.
- **The compared bars** are the champion's latest uninterrupted run in the store, from its
  first bar at which the account was flat with nothing pending: the store's first bar (the
  executor's first start), or else the first bar of the run whose previous bar's target was 0
  (a champion hot-reloaded into a position is judged from its first flat bar; the bars before
  only warm its replay up, as the executor's warm-up did).
- **Start equity**: the executor's ``first_start`` audit entry for this champion, or the
  ``sizing_equity`` one after it when the venue reported the account's equity, when the
  compared bars begin with its run (the equity its kernel was flattened to, written exactly
  with ``repr``), else the store's first ``first_start``
  equity plus the cash flows of every fill before the compared bars (financing left out).
- **Returns** of both sides are the fills' P&L marked at the last close; financing is left out
  of both (the store does not record the broker's financing), so the difference measures
  execution and decisions, not carry.

Live-side module: no mlflow, ray, torch, optuna or deap. The state store is opened without
the singleton lock (a running executor may hold it) and only read.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from champions.bundle import Bundle
from core.config import Strict
from core.errors import EmpError
from fitness import simulator_nb as k
from fitness.live import Decision, LiveStrategy
from fitness.simulator import REASONS, market_config
from live.executor.champion import Champion, Runner, flatten
from live.state import BarRow, StateStore, trading_day
from market.calendars import day_start_offset_ns

HOUR_NS = 3_600_000_000_000
AUDIT_ALL = 1 << 40  # audit_log(limit): every entry
LOTS_PER_STEP_DEFAULT = 100.0  # no lot size given: a lot is 100 volume steps (fx: 1000 / 100000)
_FIRST_START = re.compile(r"^(?P<symbol>\S+): champion (?P<sha>[0-9a-f]{12}), flat, "
                          r"equity (?P<equity>[^\s,]+)")
START_EVENTS = ("first_start", "sizing_equity")  # the latter: seeded from the venue's report
_EPS = 1e-9


class PaperError(EmpError, ValueError):
    """The paper record cannot be read or compared; one line naming the store and the reason."""


class PaperPolicy(Strict):
    """How close the paper run must be to the replay, and for how long.

    Defaults: 5 trading days (a week of bars: enough to have seen a session roll, a refit
    phase and fills, short enough not to hold a good champion back); a return difference of
    0.5 percentage points (the fills' price noise at ``max_fill_bps`` over a week's turnover,
    with room for one extra step of sizing); 5 bps per fill (a paper venue fills at the
    kernel's price to the bit, a broker within its spread; 5 bps is half a typical FX spread
    plus slippage); 0.01 lot for targets and fill units: the reconciliation tolerance."""

    min_days: int = Field(5, ge=1, description="trading days of paper results required")
    max_return_diff: float = Field(0.005, ge=0, description="|paper - replay| return")
    max_fill_bps: float = Field(5.0, ge=0, description="fill price deviation, bps")
    max_unit_diff_lots: float = Field(0.01, ge=0, description="target and fill units, lots")
    lot_size: float | None = Field(None, gt=0, description="units per lot (the live config's "
                                   "symbols.<S>.lot_size); None: 100 volume steps")


@dataclass(frozen=True)
class PaperFill:
    """One order's fills (partial fills summed, price volume-weighted)."""

    cl_ord_id: str
    side: str            # buy | sell
    qty: float           # units
    px: float
    decided_ts: int      # the bar the order was decided on (a venue exit: its parent's)
    bar_ts: int | None   # the bar it filled on (None: a venue exit, or not filled yet)
    origin: str          # emp | venue


@dataclass(frozen=True)
class PaperRecord:
    """What the state store holds for one champion of one symbol."""

    path: Path
    symbol: str
    sha256: str
    store_bars: tuple[BarRow, ...]  # every stored bar of the symbol (the replay's input)
    run: tuple[int, int]            # [first, last] index into store_bars: the champion's run
    fills: tuple[PaperFill, ...]    # every order fill of the symbol, in time order
    first_start: float | None       # account equity of a first start with this champion
    account_start: float | None     # account equity at the store's first start

    @property
    def bars(self) -> tuple[BarRow, ...]:
        """The bars the champion decided (its latest run)."""
        return self.store_bars[self.run[0]:self.run[1] + 1] if self.store_bars else ()

    @property
    def days(self) -> int:
        """Distinct UTC dates of the champion's bars (``compare_paper`` counts the calendar's
        trading days of the bars it compares)."""
        return len({dt.datetime.fromtimestamp(b.ts / 1e9, dt.UTC).date() for b in self.bars})


@dataclass(frozen=True)
class PaperCheck:
    """The paper run against the replay: ``ok`` when every tolerance holds."""

    sha256: str
    days: int
    bars: int
    trades: int                 # paper order fills compared
    max_target_diff_lots: float
    max_fill_bps: float
    return_diff: float
    paper_return: float
    replay_return: float
    ok: bool
    reasons: tuple[str, ...]    # one line each; empty when ok

    def summary(self) -> str:
        """One line for an audit event."""
        return (f"{self.days} paper days, {self.bars} bars, {self.trades} fills, return "
                f"{self.paper_return:+.4%} vs replay {self.replay_return:+.4%} (diff "
                f"{self.return_diff:.4%}), max fill deviation {self.max_fill_bps:.2f} bps, "
                f"max target diff {self.max_target_diff_lots:g} lots")


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M")


# ---- reading -------------------------------------------------------------------------------
def paper_record(state_path: Path, symbol: str, sha256: str) -> PaperRecord:
    """The bars, fills and start equity of champion ``sha256`` on ``symbol`` in the state
    store at ``state_path``, or a PaperError naming the store (missing, no bars of it)."""
    path = Path(state_path)
    if not path.is_file():
        raise PaperError(f"state store {path}: not found: no paper record (run `emp live` "
                         f"with the paper champion first, or give --paper-state)")
    with StateStore(path) as store:
        bars = tuple(store.bars(symbol))
        rows = store.fills()
        orders = {cl: store.order(cl) for cl in dict.fromkeys(f.cl_ord_id for f in rows)}
        audit = store.audit_log(AUDIT_ALL)
    idx = [i for i, b in enumerate(bars) if b.champion == sha256]
    if not idx:
        raise PaperError(f"state store {path}: no bars of champion {sha256[:12]} on {symbol}: "
                         f"it has not traded on paper here")
    last = idx[-1]
    first = last
    while first > 0 and bars[first - 1].champion == sha256:
        first -= 1
    return PaperRecord(path, symbol, sha256, bars, (first, last),
                       tuple(_order_fills(rows, orders, bars, symbol)),
                       *_start_equities(audit, symbol, sha256))


def _order_fills(rows: Iterable, orders: dict, bars: tuple[BarRow, ...],
                 symbol: str) -> list[PaperFill]:
    """The store's fills summed per order, in the order of each order's first fill."""
    ts = np.array([b.ts for b in bars], dtype=np.int64)
    grouped: dict[str, list] = {}
    for f in rows:
        if f.symbol == symbol:
            grouped.setdefault(f.cl_ord_id, []).append(f)
    out = []
    for cl, fs in grouped.items():
        order = orders.get(cl)
        qty = sum(f.qty for f in fs)
        px = sum(f.qty * f.px for f in fs) / qty
        decided = int(order.bar_ts) if order is not None else -1
        origin = order.origin if order is not None else "venue"
        bar = None
        if origin == "emp":  # a market order fills at the open after its decision bar
            j = int(np.searchsorted(ts, decided, side="right"))
            bar = int(ts[j]) if j < ts.size else None
        out.append(PaperFill(cl, fs[0].side, qty, px, decided, bar, origin))
    return out


def _start_equities(audit: list, symbol: str, sha256: str) -> tuple[float | None, float | None]:
    mine = account = None
    seeded = False  # the store's first start sized from the venue's report: that figure counts
    for _, event, detail in audit:
        m = _FIRST_START.match(detail) if event in START_EVENTS else None
        if m is None or m["symbol"] != symbol:
            continue
        try:
            eq = float(m["equity"])
        except ValueError:
            continue
        if account is None:
            account = eq
        elif event == "sizing_equity" and not seeded:
            account, seeded = eq, True
        if m["sha"] == sha256[:12]:
            mine = eq
    return mine, account


# ---- the replay ----------------------------------------------------------------------------
class _Recording(LiveStrategy):
    """A ``LiveStrategy`` whose steps keep the kernel's trade rows (the fills to compare)."""

    def __init__(self, base: LiveStrategy, capacity: int) -> None:
        self.__dict__.update(base.__dict__)
        self.trades = np.zeros((capacity, k.N_TRADE_COLS))

    def start_recording(self) -> None:
        self.stats[:] = 0.0
        self.trades[:] = 0.0

    def recorded(self) -> np.ndarray:
        return self.trades[: int(self.stats[k.S_RECORDED])]

    def step(self, t: int, o: float, h: float, lo: float, c: float, f_col: np.ndarray,
             var_col: np.ndarray, rv_col: np.ndarray, hour: int, weekday: int) -> Decision:
        c0, d = self.comp, np.empty(k.N_DECISION)
        r = k.live_step(self.state, self.stats, self.trades, True, t, o, h, lo, c,
                        np.ascontiguousarray(f_col, np.float64), var_col, rv_col, hour, weekday,
                        c0.slots[0], c0.thr[0], c0.n_active[0], c0.logic[0], c0.fp[0], c0.ip[0],
                        self.cfg, d)
        return Decision(t, float(d[k.D_UNITS]), bool(d[k.D_EXIT]), REASONS[int(d[k.D_REASON])],
                        float(d[k.D_STOP]), float(d[k.D_TP]), float(d[k.D_ENTRY_DIST]), float(r),
                        float(self.state[k.ST_PREV_EQ]))


@dataclass(frozen=True)
class _Fill:
    bar_ts: int
    side: str
    qty: float
    px: float
    order: int  # within a bar: 0 exit at the open, 1 entry at the open, 2 stop/take-profit


def _replay_fills(trades: np.ndarray, state: np.ndarray, bar_of: dict[int, int]) -> list[_Fill]:
    out = []
    for row in trades:
        side = "buy" if row[k.T_SIDE] > 0 else "sell"
        back = "sell" if side == "buy" else "buy"
        units = float(row[k.T_UNITS])
        out.append(_Fill(bar_of[int(row[k.T_ENTRY])], side, units, float(row[k.T_ENTRY_PX]), 1))
        intrabar = int(row[k.T_REASON]) in (k.R_STOP, k.R_TP)
        out.append(_Fill(bar_of[int(row[k.T_EXIT])], back, units, float(row[k.T_EXIT_PX]),
                         2 if intrabar else 0))
    if state[k.ST_UNITS] != 0.0:  # the position still open at the last bar
        out.append(_Fill(bar_of[int(state[k.ST_ENTRY_BAR])],
                         "buy" if state[k.ST_UNITS] > 0 else "sell", abs(float(state[k.ST_UNITS])),
                         float(state[k.ST_ENTRY_PX]), 1))
    return sorted(out, key=lambda f: (f.bar_ts, f.order))


def _start(record: PaperRecord) -> int:
    """Index (into store_bars) of the first bar compared: the run's first bar when it is the
    store's first (the executor's first start: flat), else the run's first bar whose previous
    bar's target was 0 (the account flat, nothing pending)."""
    first, last = record.run
    if first == 0:
        return first
    for i in range(first, last + 1):
        if record.store_bars[i - 1].target == 0.0:
            return i
    raise PaperError(f"state store {record.path}: champion {record.sha256[:12]} never had a "
                     f"flat account in its paper run (it took over a position and kept one): "
                     f"nothing to compare from a flat start")


def _start_equity(record: PaperRecord, s: int, before: list[PaperFill], vpu: float) -> float:
    """The equity the compared run starts from (see the module docstring)."""
    if record.first_start is not None and s == record.run[0]:
        return record.first_start
    if record.account_start is None:
        raise PaperError(f"state store {record.path}: no first_start entry in its audit log: "
                         f"the account's starting equity is unknown")
    return record.account_start + sum(_flow(f, vpu) for f in before)


def _flow(f: PaperFill | _Fill, vpu: float) -> float:
    """Cash in (+) or out (-) of a fill."""
    return (-1.0 if f.side == "buy" else 1.0) * f.qty * f.px * vpu


def _signed(f: PaperFill | _Fill) -> float:
    return f.qty if f.side == "buy" else -f.qty


def _marked_return(fills: list, close: float, vpu: float, equity: float) -> float:
    pnl = sum(_flow(f, vpu) for f in fills) + sum(_signed(f) for f in fills) * close * vpu
    return pnl / equity


def compare_paper(record: PaperRecord, bundle: Bundle,
                  policy: PaperPolicy | None = None) -> PaperCheck:
    """Replay ``bundle`` on the record's bars and compare (see the module docstring)."""
    policy = policy or PaperPolicy()
    b = bundle
    if b.tables_state is None or b.kernel_state is None:
        raise PaperError(f"bundle {b.sha256[:12]} has no state snapshot: it cannot be replayed")
    bars = record.store_bars
    s = _start(record)
    last = record.run[1]
    snap_ts = int(b.tables_state.features.tail["ts"][-1])
    if bars[s].ts <= snap_ts:
        raise PaperError(f"bundle {b.sha256[:12]}: its snapshot ends at {_iso(snap_ts)}, after "
                         f"the paper record in {record.path} begins ({_iso(bars[s].ts)})")
    bpy = b.tables_state.bars_per_year
    vpu = float(market_config(b.meta, bpy, b.sim)[k.C_VPU])
    lot = policy.lot_size or LOTS_PER_STEP_DEFAULT * b.meta.min_lot
    window_ts = bars[s].ts
    before = [f for f in record.fills if f.decided_ts < window_ts]
    fills = [f for f in record.fills
             if window_ts <= f.decided_ts <= bars[last].ts
             and (f.origin != "emp" or (f.bar_ts is not None and f.bar_ts <= bars[last].ts))]
    equity = _start_equity(record, s, before, vpu)

    runner = Runner(Champion(None, b, Path(f"<bundle {b.sha256[:12]}>")), b.tables_state,
                    flatten(b.kernel_state, equity))
    rec = _Recording(runner.strategy, 2 * (last - s + 2))
    runner.strategy = rec
    bar_of: dict[int, int] = {}
    targets = []
    for i, row in enumerate(bars[: last + 1]):
        if row.ts <= snap_ts:
            continue
        if i == s:  # the compared run starts flat, as the executor's first start does
            rec.state[:] = flatten(rec.state, equity)
            rec.start_recording()
        bar_of[runner.tables.n_bars] = row.ts
        d = runner.step(row.ts, row.open, row.high, row.low, row.close, row.volume)
        if i >= s:
            targets.append(d.target_units)
    runner.finish_refits()
    replay = _replay_fills(rec.recorded(), rec.state, bar_of)

    compared = bars[s: last + 1]
    reasons: list[str] = []
    roll = day_start_offset_ns(b.meta.calendar) // HOUR_NS
    days = len({trading_day(dt.datetime.fromtimestamp(r.ts / 1e9, dt.UTC), roll)
                for r in compared})
    if days < policy.min_days:
        reasons.append(f"{days} of {policy.min_days} paper days")
    diffs = [abs(r.target - t) / lot for r, t in zip(compared, targets, strict=True)]
    max_target = max(diffs, default=0.0)
    if max_target > policy.max_unit_diff_lots + _EPS:
        i = int(np.argmax(diffs))
        reasons.append(f"target at bar {_iso(compared[i].ts)}: paper {compared[i].target:g} "
                       f"units, replay {targets[i]:g} ({max_target:.4g} lots apart, tolerance "
                       f"{policy.max_unit_diff_lots:g})")
    max_bps = 0.0
    if len(fills) != len(replay):
        reasons.append(f"{len(fills)} paper fills, {len(replay)} in the replay")
    found: dict[str, list[str]] = {}  # kind -> its lines (the first is reported, then a count)
    for p, q in zip(fills, replay, strict=False):
        bps = abs(p.px - q.px) / abs(q.px) * 1e4 if q.px else math.inf
        max_bps = max(max_bps, bps)
        if p.side != q.side:
            found.setdefault("side", []).append(
                f"fill {p.cl_ord_id}: paper {p.side}, replay {q.side} at bar {_iso(q.bar_ts)}")
        elif p.bar_ts is not None and p.bar_ts != q.bar_ts:
            found.setdefault("bar", []).append(
                f"fill {p.cl_ord_id}: at bar {_iso(p.bar_ts)}, replay at {_iso(q.bar_ts)}")
        if abs(p.qty - q.qty) / lot > policy.max_unit_diff_lots + _EPS:
            found.setdefault("qty", []).append(
                f"fill {p.cl_ord_id}: {p.qty:g} units, replay {q.qty:g} (tolerance "
                f"{policy.max_unit_diff_lots:g} lot)")
        if bps > policy.max_fill_bps:
            found.setdefault("px", []).append(
                f"fill {p.cl_ord_id}: price {p.px:.6g}, replay {q.px:.6g} ({bps:.2f} bps, "
                f"tolerance {policy.max_fill_bps:g})")
    for lines in found.values():
        reasons.append(lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""))
    close = compared[-1].close
    paper_ret = _marked_return(fills, close, vpu, equity)
    replay_ret = _marked_return(replay, close, vpu, equity)
    diff = abs(paper_ret - replay_ret)
    if diff > policy.max_return_diff:
        reasons.append(f"paper return {paper_ret:+.4%}, replay {replay_ret:+.4%} (differ by "
                       f"{diff:.4%}, tolerance {policy.max_return_diff:.4%})")
    return PaperCheck(record.sha256, days, len(compared), len(fills), max_target, max_bps, diff,
                      paper_ret, replay_ret, not reasons, tuple(reasons))
