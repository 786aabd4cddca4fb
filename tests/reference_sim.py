"""A plain, event-driven reference simulator with the kernel's documented semantics.

Used only by tests. It reads genes by name, evaluates rules straight from the feature table
and keeps its state in small objects, so it shares no code path with fitness/compile.py or the
numba kernel beyond the input tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from genome.primitives import PRIMITIVES
from genome.schema import INDEX, K_SLOTS, REGIMES, WEEKDAYS


@dataclass
class Position:
    side: int
    units: float
    entry_px: float
    entry_bar: int
    stop: float
    tp: float
    dist: float
    held: int = 0
    fin_paid: float = 0.0


@dataclass
class Result:
    returns: list[float] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    position: list[float] = field(default_factory=list)
    trades: list[tuple] = field(default_factory=list)  # entry, exit, side, units, in, out, pnl, why
    turnover: float = 0.0
    bars_in_market: int = 0


def _gene(g: np.ndarray, name: str) -> float:
    return float(g[INDEX[name]])


def _rule_holds(g: np.ndarray, rs: str, table, t: int) -> bool:
    values = []
    for k in range(K_SLOTS):
        p = f"{rs}.s{k}"
        if int(_gene(g, f"{p}.on")) != 1:
            continue
        prim = int(_gene(g, f"{p}.prim"))
        spec = PRIMITIVES[prim]
        n = len(spec.grid)
        k1, k2 = int(_gene(g, f"{p}.param")) % n, int(_gene(g, f"{p}.param2")) % n
        lhs = table.values[table.row(prim, k1)]
        if int(_gene(g, f"{p}.rhs")) == 1 and k2 != k1:
            rhs = table.values[table.row(prim, k2)]
        else:
            level = spec.thr_lo + _gene(g, f"{p}.thr") * (spec.thr_hi - spec.thr_lo)
            rhs = np.full(lhs.shape, level)
        cmp = int(_gene(g, f"{p}.cmp"))
        a, b = lhs[t], rhs[t]
        if cmp == 0:
            v = a > b
        elif cmp == 1:
            v = a < b
        elif t == 0:
            v = False
        elif cmp == 2:
            v = a > b and lhs[t - 1] <= rhs[t - 1]
        else:
            v = a < b and lhs[t - 1] >= rhs[t - 1]
        values.append(bool(v))
    if not values:
        return False
    return any(values) if int(_gene(g, f"{rs}.logic")) == 1 else all(values)


def reference_run(g, tables, bars, meta, sim, start: int, end: int, symbol: int = 0) -> Result:
    o, h, lo, c = (getattr(bars, f)[symbol] for f in ("open", "high", "low", "close"))
    costs = meta.costs
    per_side = costs.spread / 2 + costs.commission + costs.slippage
    frac = per_side / 1e4 if costs.unit == "bps" else 0.0
    absc = per_side * (costs.pip_size or 0.0) if costs.unit == "pips" else 0.0
    vpu = meta.value_per_unit
    fin = costs.financing_annual / tables.bars_per_year if sim.financing else 0.0
    full = sim.sizing == "full"
    min_lot = 0.0 if full else meta.min_lot

    def cost(px: float) -> float:
        return px * frac + absc

    res = Result()
    cash = sim.capital
    prev = cash
    pos: Position | None = None
    pending_exit: int | None = None  # reason code
    pending_entry: tuple[int, float, float] | None = None  # side, units, dist

    def close_pos(raw: float, t: int, why: int) -> None:
        nonlocal cash, pos
        assert pos is not None
        px = raw - pos.side * cost(raw)
        eq_now = cash + pos.side * pos.units * raw * vpu
        cash += pos.side * pos.units * px * vpu
        pnl = pos.side * pos.units * (px - pos.entry_px) * vpu - pos.fin_paid
        res.turnover += pos.units * px * vpu / max(eq_now, 1e-12)
        res.trades.append((pos.entry_bar, t, pos.side, pos.units, pos.entry_px, px, pnl, why))
        pos = None

    def open_pos(side: int, units: float, dist: float, raw: float, t: int) -> None:
        nonlocal cash, pos
        px = raw + side * cost(raw)
        if full:  # all equity at the cost-inclusive buy price, for a short as for a long
            units = cash / ((raw + cost(raw)) * vpu)
        res.turnover += units * px * vpu / max(cash, 1e-12)
        cash -= side * units * px * vpu
        pos = Position(side, units, px, t, px - side * dist, px + side * _gene(g, "risk.tp_mult") * dist, dist)

    modes = [int(_gene(g, f"regime.{r}")) for r in REGIMES]
    days = [int(_gene(g, f"session.{d}")) for d in WEEKDAYS]
    start_h, end_h = int(_gene(g, "session.start_hour")), int(_gene(g, "session.end_hour"))
    use_tp = int(_gene(g, "risk.use_tp")) == 1
    trail = int(_gene(g, "risk.trail")) == 1
    max_bars = int(_gene(g, "risk.max_bars")) if int(_gene(g, "risk.use_max_bars")) == 1 else 0
    variant, rvwin = int(_gene(g, "vol.garch_variant")), int(_gene(g, "vol.rv_window"))
    w = _gene(g, "vol.blend_weight")
    close_fill = sim.fill == "close"

    for t in range(start, end):
        last = t == end - 1
        if pending_exit is not None and pos is not None:
            close_pos(o[t], t, pending_exit)
        pending_exit = None
        if pending_entry is not None:
            open_pos(*pending_entry, o[t], t)
            pending_entry = None
        if pos is not None and pos.dist > 0:
            hit = None
            if pos.side > 0:
                if o[t] <= pos.stop:
                    hit = (o[t], 1)
                elif lo[t] <= pos.stop:
                    hit = (pos.stop, 1)
                elif use_tp and o[t] >= pos.tp:
                    hit = (o[t], 2)
                elif use_tp and h[t] >= pos.tp:
                    hit = (pos.tp, 2)
            else:
                if o[t] >= pos.stop:
                    hit = (o[t], 1)
                elif h[t] >= pos.stop:
                    hit = (pos.stop, 1)
                elif use_tp and o[t] <= pos.tp:
                    hit = (o[t], 2)
                elif use_tp and lo[t] <= pos.tp:
                    hit = (pos.tp, 2)
            if hit is not None:
                close_pos(hit[0], t, hit[1])
            elif trail:
                pos.stop = (max(pos.stop, h[t] - pos.dist) if pos.side > 0
                            else min(pos.stop, lo[t] + pos.dist))
        if pos is not None:
            pos.held += 1
        exit_why, new_side, sig = None, 0, 0.0
        if not last:
            s2 = w * tables.vol.variance[variant, t] + (1 - w) * tables.vol.rv[rvwin, t]
            sig = math.sqrt(s2) if s2 > 0 else 0.0
            ann = sig * math.sqrt(tables.bars_per_year)
            regime = 0 if ann < _gene(g, "vol.calm_below") else (
                2 if ann > _gene(g, "vol.storm_above") else 1)
            mode = modes[regime]
            hour = int(tables.hour[t])
            if start_h == end_h:
                in_session = True
            elif start_h < end_h:
                in_session = start_h <= hour < end_h
            else:
                in_session = hour >= start_h or hour < end_h
            allowed = (mode != 0 and in_session and days[int(tables.weekday[t])] == 1
                       and (full or sig > 0))
            go_long = go_short = False
            if allowed:
                long_rs, short_rs = ("long", "short") if mode == 1 else ("short", "long")
                if pos is None or pos.side < 0:
                    go_long = _rule_holds(g, long_rs, tables.features, t)
                if pos is None or pos.side > 0:
                    go_short = _rule_holds(g, short_rs, tables.features, t)
            if pos is None:
                new_side = 1 if (go_long and not go_short) else (-1 if go_short and not go_long else 0)
            elif (pos.side > 0 and go_short) or (pos.side < 0 and go_long):
                exit_why, new_side = 4, -pos.side
            elif _rule_holds(g, "exit", tables.features, t):
                exit_why = 0
            elif max_bars > 0 and pos.held >= max_bars:
                exit_why = 3
        entry = None
        if new_side != 0:
            eq_t = cash + (pos.side * pos.units * c[t] * vpu if pos else 0.0)
            if full:
                entry = (new_side, eq_t / (c[t] * vpu), 0.0)
            else:
                dist = _gene(g, "risk.k_stop") * sig * c[t]
                u = _gene(g, "risk.risk_pct") * eq_t / (dist * vpu)
                u = min(u, sim.max_leverage * eq_t / (c[t] * vpu))
                u = math.floor(u / min_lot) * min_lot
                entry = (new_side, u, dist) if u >= min_lot else None
        if close_fill:
            if exit_why is not None and pos is not None:
                close_pos(c[t], t, exit_why)
            if entry is not None:
                open_pos(*entry, c[t], t)
        else:
            pending_exit, pending_entry = exit_why, entry
        if last and pos is not None:
            close_pos(c[t], t, 5)
        if pos is not None:
            fee = pos.units * c[t] * vpu * fin
            cash -= fee
            pos.fin_paid += fee
            res.bars_in_market += 1
        eq = cash + (pos.side * pos.units * c[t] * vpu if pos else 0.0)
        res.returns.append(eq / prev - 1 if prev > 0 else 0.0)
        prev = eq
        res.equity.append(eq)
        res.position.append(pos.side * pos.units if pos else 0.0)
    return res
