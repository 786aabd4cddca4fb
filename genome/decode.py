"""Readable rule text for a genome, for reports, champion cards and ``emp genome show``.

Thresholds print in the primitive's own units. MA primitives hold MA/close − 1, so a threshold
v prints as the relation ``SMA(50) > close×1.012`` (v = 0.012), and an MA-vs-MA slot compares
the averages themselves. The session primitive prints as ``in London session``.

With a ``BarContext`` (``genome.context``), what cannot act on those bars is left out: session
hours that hold every bar, weekdays on which no bar opens (Saturday and Sunday on NYSE), and
session masks that are constant (daily bars), which print as ``always`` or ``never``. A user
reading "session 15-07 UTC (overnight) Mon,Wed-Sat" on daily NYSE bars would be misled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genome import schema as S
from genome.context import BarContext
from genome.ops import constant_truth, validate
from genome.primitives import PRIMITIVES, SESSION_NAMES, Primitive

_MA = {"sma", "ema"}


def _label(prim: Primitive, k: int) -> str:
    if prim.name == "sess":
        return f"Session({SESSION_NAMES[prim.grid[k][0]]})"
    return prim.label.format(prim.param_text(k))


def _number(prim: Primitive, v: float) -> str:
    """Enough decimals for the primitive's threshold range (RSI 30.0, ROC 0.012)."""
    span = prim.thr_hi - prim.thr_lo
    return f"{v:.{max(1, math.ceil(-math.log10(span / 100)))}f}"


def _session_slot(prim: Primitive, k: int, cmp_: int, v: float) -> str:
    name = SESSION_NAMES[prim.grid[k][0]]
    text = {0: (v < 1, f"in {name} session"), 1: (v > 0, f"outside {name} session"),
            2: (v < 1, f"{name} session opens"), 3: (v > 0, f"{name} session closes")}[cmp_]
    return text[1] if text[0] else f"never ({_label(prim, k)} {S.CMP_TEXT[cmp_]} {v:.2f})"


def slot_text(g: np.ndarray, on: int) -> str:
    """One condition; ``on`` is the index of the slot's ``on`` gene."""
    pi, k, cmp_, rhs = (int(x) for x in g[on + 1: on + 5])
    prim = PRIMITIVES[pi]
    lhs, op = _label(prim, k), S.CMP_TEXT[cmp_]
    if rhs == 1:
        k2 = int(g[on + 6])
        if prim.name == "sess" and cmp_ < 2:
            a, b = (k, k2) if cmp_ == 0 else (k2, k)
            return (f"in {SESSION_NAMES[prim.grid[a][0]]} session but not "
                    f"{SESSION_NAMES[prim.grid[b][0]]}")
        return f"{lhs} {op} {_label(prim, k2)}"
    v = prim.thr_lo + float(g[on + 5]) * (prim.thr_hi - prim.thr_lo)
    if prim.name == "sess":
        return _session_slot(prim, k, cmp_, v)
    if prim.name in _MA:
        factor = f"{1 + v:.4f}".rstrip("0").rstrip(".")
        return f"{lhs} {op} " + ("close" if abs(v) < 5e-5 else f"close×{factor}")
    return f"{lhs} {op} {_number(prim, v)}"


def _rule_set(g: np.ndarray, r: int, context: BarContext | None = None) -> str:
    head = S.RULE_SETS[r].upper()
    logic = " AND " if g[S.slot_offset(r, 0) - 1] == 0 else " OR "
    values = context.session_values() if context is not None else (None,) * 4
    conds = []
    for k in range(S.K_SLOTS):
        on = S.slot_offset(r, k)
        if g[on] == 1:
            truth = constant_truth(g, on, values)
            conds.append(slot_text(g, on) if truth is None else
                         "always" if truth else "never")
    if not conds:
        return "no EXIT rule" if head == "EXIT" else f"{head} never"
    if set(conds) == {"always"}:
        return f"{head} always"
    return f"{head} when " + logic.join(conds)


def _days(g: np.ndarray, days: frozenset[int] = frozenset(range(7))) -> str:
    """The weekdays on, among ``days`` (those on which bars open); "every day" when all are."""
    on = [i for i in range(7) if g[S.WEEKDAY0 + i] == 1 and i in days]
    if len(on) == len(days):
        return "every day"
    runs: list[list[int]] = []
    for i in on:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    day = [d.title() for d in S.WEEKDAYS]
    parts = [f"{day[r[0]]}-{day[r[-1]]}" if len(r) >= 3 else ",".join(day[i] for i in r)
             for r in runs]
    return ",".join(parts)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _session(g: np.ndarray, context: BarContext | None) -> str | None:
    """The session section; with a context only what acts on its bars, None when nothing."""
    start, end = int(g[S.SESSION_START]), int(g[S.SESSION_END])
    hours = "all day" if start == end else f"{start:02d}-{end:02d} UTC" + (
        " (overnight)" if start > end else "")
    if context is None or context.trivial:
        return f"session {hours} {_days(g)}"
    days = _days(g, context.weekdays)
    if context.in_window(start, end) != context.hours:
        return f"session {hours} {days}"
    return None if days == "every day" else f"trades {days}"


def describe_dict(g: Any, context: BarContext | None = None) -> dict[str, str]:
    """Section name (schema.SECTIONS) → text; raises ValueError on an invalid genome. With a
    ``context``, genes that cannot act on its bars are left out (a section may vanish)."""
    g = np.asarray(g, dtype=np.float64)
    problems = validate(g)
    if problems:
        raise ValueError("invalid genome: " + "; ".join(problems))
    out = {rs: _rule_set(g, r, context) for r, rs in enumerate(S.RULE_SETS)}
    out["regime"] = "regimes " + " ".join(
        f"{name}:{S.REGIME_MODES[int(g[S.REGIME0 + i])]}" for i, name in enumerate(S.REGIMES))
    session = _session(g, context)
    if session is not None:
        out["session"] = session
    risk = [f"stop {g[S.K_STOP]:.1f}σ",
            f"TP {g[S.TP_MULT]:.1f}×stop" if g[S.USE_TP] else "no TP"]
    if g[S.TRAIL]:
        risk.append("trail")
    if g[S.USE_MAX_BARS]:
        risk.append(f"max {int(g[S.MAX_BARS])} bars")
    risk.append(f"risk {g[S.RISK_PCT] * 100:.2f}%")
    out["risk"] = "; ".join(risk)
    w = float(g[S.BLEND_W])
    variant = S.GENES[S.VARIANT].choices[int(g[S.VARIANT])]
    window = S.GENES[S.RV_WIN].choices[int(g[S.RV_WIN])]
    out["vol"] = (f"vol: {w:.2f}·{variant} + {1 - w:.2f}·RV({window}), "
                  f"calm<{_pct(g[S.CALM_BELOW])} storm>{_pct(g[S.STORM_ABOVE])}")
    return out


def describe(g: Any, context: BarContext | None = None) -> str:
    """All sections on one line, e.g. ``LONG when RSI(14) < 30.0 AND SMA(200) < close; …``;
    ``context``: see ``describe_dict``."""
    return "; ".join(describe_dict(g, context).values())
