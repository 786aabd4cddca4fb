"""Look-ahead audit: rebuild everything on truncated history and demand identical decisions.

The causality tests perturb the future of generated data; this audit replays a run's own genomes
on its own history. For each cut c the history is cut to bars [0, c), every table is rebuilt from
scratch with the production builder, and the results must equal the full-history ones exactly:

- feature rows, GARCH/EWMA variances, the ginn row (the GINN model's forecasts when
  ``vol.ginn_model`` names one, else garch11's), realised variances, hour and weekday over
  [0, c);
- each genome's position and equity after every close from ``start`` to c - 2 (decisions at the
  close of t fill at the open of t + 1, and the truncated run's last bar c - 1 closes out), and
  every trade entered by the open of c - 1 (plus its exit when it left before c - 1).

Anything else means a value at bar t depended on bars after t. Exact equality is the right test:
both runs execute the same deterministic arithmetic on the same inputs, so even a last-bit
difference is a dependence on the future (or on where the series ends, which is the same bug).

Second check, continuation: cutting the end cannot see a dependence on where the history
*starts*, and the live executor continues the run's tables from a saved state instead of
rebuilding them. So for each snapshot point s (by default the cut points) the tables are built
from the origin on [0, s), their state is saved and restored (``fitness.tables``'s snapshot
format), and the restored state is extended by the bars [s, n). The continued tables must equal
the full history's bit for bit, and each genome's positions, equity and trades replayed on them
must equal the full-history replay. The continuation is given the same GINN model, as the live
executor must be.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import EmpError
from fitness.config import SimConfig
from fitness.simulator import REASONS, Backtest, Tables, build_tables, simulate
from fitness.tables import (
    TablesState,
    build_tables_state,
    extend_tables,
    ginn_model_of,
    load_state,
    save_state,
)
from genome.schema import N_GENES
from market.config import SymbolMeta, VolatilityConfig
from market.loader import Bars, truncate
from market.volatility import GARCH_VARIANTS, RV_WINDOWS

Builder = Callable[..., Tables]
StateBuilder = Callable[..., tuple[Tables, TablesState]]
Restorer = Callable[[TablesState], TablesState]


class LookaheadError(EmpError, RuntimeError):
    """A value or decision known at bar t changed when the bars after t were removed (exit 3)."""

    exit_code = 3


class ContinuationError(LookaheadError):
    """Tables or decisions continued from a snapshot differ from those built from the origin."""


@dataclass(frozen=True)
class AuditResult:
    cuts: list[int]  # cut points used
    candidates: int  # genomes replayed
    bars_compared: int  # position comparisons made: sum over cuts x genomes of (c - 1 - start)
    snapshots: list[int] = field(default_factory=list)  # continuation check: snapshot points
    # its position comparisons: snapshots x genomes x (n_bars - start)
    continued_compared: int = 0
    ginn_sha256: str = ""  # the GINN model of the audited ginn row ("": none, garch11's row)


def cut_points(n_bars: int, start: int, n_cuts: int, seed: int) -> list[int]:
    """``n_cuts`` distinct, sorted, seeded cut indexes c with start + 3 <= c <= n_bars - 1.

    start + 3 leaves at least two compared closes (start .. c - 2); c <= n_bars - 1 makes every
    cut remove at least one bar. Random (not evenly spaced) so a leak cannot hide in a pattern
    of cuts, seeded so a failing audit can be rerun.
    """
    lo, hi = start + 3, n_bars - 1
    if n_cuts < 1 or start < 0 or hi < lo:
        raise ValueError(f"no cut point possible: n_bars={n_bars}, start={start}, n_cuts={n_cuts} "
                         f"(need 0 <= start, start + 3 <= n_bars - 1 and n_cuts >= 1)")
    k = min(n_cuts, hi - lo + 1)
    picks = np.random.default_rng(seed).choice(hi - lo + 1, size=k, replace=False)
    return sorted(int(lo + p) for p in picks)


def _when(bars: Bars, bar: int) -> str:
    return pd.Timestamp(int(bars.ts[bar]), unit="ns", tz="UTC").isoformat()


def _first_diff(full: np.ndarray, part: np.ndarray) -> tuple[int, int] | None:
    """(row, bar) of the earliest bar where 2-D ``full`` and ``part`` differ (NaN == NaN)."""
    bad = (full != part) & ~(np.isnan(full) & np.isnan(part))
    if not bad.any():
        return None
    bar = int(np.argmax(bad.any(axis=0)))
    return int(np.argmax(bad[:, bar])), bar


def _table_rows(tables: Tables) -> list[tuple[str, np.ndarray, Sequence[str]]]:
    ft = tables.features
    names = getattr(ft, "names", None) or [f"#{i}" for i in range(ft.values.shape[0])]
    return [
        ("feature row", ft.values, [repr(n) for n in names]),
        ("variance", tables.vol.variance, [f"[{v}]" for v in GARCH_VARIANTS]),
        ("rv", tables.vol.rv, [f"[window {w}]" for w in RV_WINDOWS]),
        ("hour", tables.hour[None].astype(np.float64), [""]),
        ("weekday", tables.weekday[None].astype(np.float64), [""]),
    ]


def _check_tables(full: Tables, part: Tables, cut: int, bars: Bars) -> None:
    """Every table row over [0, cut) must be the same whether or not bars >= cut exist."""
    for (what, a, names), (_, b, _) in zip(_table_rows(full), _table_rows(part), strict=True):
        if b.shape != (a.shape[0], cut):
            raise ValueError(f"{what}: table built on {cut} bars has shape {b.shape}, "
                             f"expected {(a.shape[0], cut)}")
        hit = _first_diff(a[:, :cut], b)
        if hit is not None:
            row, bar = hit
            label = f"{what} {names[row]}".strip()
            raise LookaheadError(
                f"look-ahead in {label} at cut {cut}: bar {bar} ({_when(bars, bar)}) is "
                f"{float(a[row, bar])!r} on the full history but {float(b[row, bar])!r} on "
                f"history truncated to bars [0, {cut})")


_ENTRY = ("entry_bar", "side", "units", "entry_price")
_EXIT = ("exit_bar", "exit_price", "pnl", "reason")


def _trade_matrix(trades: pd.DataFrame, cut: int) -> np.ndarray:
    """Trades entered by the open of bar cut - 1, in entry order, as float rows in
    _ENTRY + _EXIT order."""
    t = trades[trades.entry_bar.to_numpy() < cut]
    side = np.where(np.asarray(t.side) == "long", 1.0, -1.0)
    m = np.column_stack([t.entry_bar, side, t.units, t.entry_price, t.exit_bar,
                         t.exit_price, t.pnl, t.reason.cat.codes]).astype(np.float64)
    return m[np.argsort(m[:, 0], kind="stable")]


def _describe(row: np.ndarray | None, n_cols: int) -> str:
    if row is None:
        return "no trade"
    vals: list[object] = [int(row[0]), "long" if row[1] > 0 else "short", float(row[2]),
                          float(row[3]), int(row[4]), float(row[5]), float(row[6]),
                          REASONS[int(row[7])]]
    return str(dict(zip(_ENTRY + _EXIT, vals, strict=True)) if n_cols > 4
               else dict(zip(_ENTRY, vals[:4], strict=True)))


def _trade_diff(full: pd.DataFrame, part: pd.DataFrame, cut: int) -> tuple[int, str, str] | None:
    """(bar, full, truncated) for the first differing trade entered by the open of bar cut - 1.

    Entries are compared for all of them; exits too when either run left before bar cut - 1,
    the truncated run's close-out bar.
    """
    a, b = _trade_matrix(full, cut), _trade_matrix(part, cut)
    n = min(len(a), len(b))
    entry = len(_ENTRY)
    diff_in = (a[:n, :entry] != b[:n, :entry]).any(axis=1)
    exit_known = np.minimum(a[:n, entry], b[:n, entry]) < cut - 1
    diff_out = exit_known & (a[:n, entry:] != b[:n, entry:]).any(axis=1)
    bad = np.flatnonzero(diff_in | diff_out)
    if bad.size:
        i = int(bad[0])
        cols = len(_ENTRY + _EXIT) if exit_known[i] else entry
        col = 0 if diff_in[i] else entry
        bar = int(min(a[i, col], b[i, col]))
        return bar, f"trade #{i} {_describe(a[i], cols)}", f"trade #{i} {_describe(b[i], cols)}"
    if len(a) != len(b):
        ra, rb = (a[n], None) if len(a) > n else (None, b[n])
        bar = int(a[n, 0]) if ra is not None else int(b[n, 0])
        return bar, f"trade #{n} {_describe(ra, entry)}", f"trade #{n} {_describe(rb, entry)}"
    return None


def _check_replay(i: int, full: Backtest, part: Backtest, cut: int, start: int,
                  bars: Bars) -> None:
    """A genome's positions, equity and trades known before the cut must not depend on it."""
    m = cut - 1 - start
    found: list[tuple[int, str, str, str]] = []
    for what in ("position", "equity"):
        a, b = getattr(full, what)[None, :m], getattr(part, what)[None, :m]
        hit = _first_diff(a, b)
        if hit is not None:
            j = hit[1]
            found.append((start + j, what, repr(float(a[0, j])), repr(float(b[0, j]))))
    t = _trade_diff(full.trades, part.trades, cut)
    if t is not None:
        found.append((t[0], "trade", t[1], t[2]))
    if found:
        bar, what, va, vb = min(found, key=lambda f: f[0])
        raise LookaheadError(
            f"look-ahead in {what} of candidate {i} at cut {cut}: bar {bar} ({_when(bars, bar)}) "
            f"is {va} on the full history but {vb} on history truncated to bars [0, {cut})")


def audit_lookahead(genomes: np.ndarray, bars: Bars, meta: SymbolMeta, *, start: int,
                    cuts: Sequence[int], vol: VolatilityConfig | None = None,
                    sim: SimConfig | None = None, full_tables: Tables | None = None,
                    build: Builder = build_tables, snapshots: Sequence[int] | None = None,
                    build_state: StateBuilder = build_tables_state,
                    restore: Restorer | None = None) -> AuditResult:
    """Raise LookaheadError unless tables and replays are identical on every truncated history,
    and ContinuationError unless tables and replays continued from a snapshot at each of
    ``snapshots`` (default: the cuts; ``[]`` skips the check) equal the full history's.

    ``build`` makes the truncated tables (and the full ones when ``full_tables`` is None);
    ``build_state`` the tables and state on [0, s); ``restore`` turns a state into the one the
    continuation starts from (default: save it as a snapshot file and load it back). They are
    parameters so that tests can prove the audit catches a leaky builder or a broken
    continuation. Fits are never read from a cache: a cached table would only prove that the
    cache is consistent with itself.
    """
    g = np.asarray(genomes, dtype=np.float64)
    g = g[None] if g.ndim == 1 else g
    if g.ndim != 2 or g.shape[1] != N_GENES or g.shape[0] == 0:
        raise ValueError(f"genomes must be [n >= 1, {N_GENES}], got shape {np.shape(genomes)}")
    used = sorted({int(c) for c in cuts})
    if not used:
        raise ValueError("no cut points")
    if start < 0 or used[0] < start + 3 or used[-1] > bars.n_bars - 1:
        raise ValueError(f"cuts must lie in [start + 3, n_bars - 1] = [{start + 3}, "
                         f"{bars.n_bars - 1}], got {used[0]} .. {used[-1]}")
    full = full_tables if full_tables is not None else build(bars, meta, vol=vol, cache_dir=None)
    if full.features.values.shape[1] != bars.n_bars:
        raise ValueError(f"full tables cover {full.features.values.shape[1]} bars, "
                         f"the history {bars.n_bars}")
    runs = [simulate(x, full, bars, meta, start, None, sim) for x in g]
    compared = 0
    for cut in used:
        part_bars = truncate(bars, cut)
        part = build(part_bars, meta, vol=vol, cache_dir=None)
        _check_tables(full, part, cut, bars)
        for i, x in enumerate(g):
            _check_replay(i, runs[i], simulate(x, part, part_bars, meta, start, cut, sim), cut,
                          start, bars)
            compared += cut - 1 - start
    points = used if snapshots is None else sorted({int(p) for p in snapshots})
    if points and (points[0] < 1 or points[-1] > bars.n_bars - 1):
        raise ValueError(f"snapshot points must lie in [1, n_bars - 1] = [1, {bars.n_bars - 1}], "
                         f"got {points[0]} .. {points[-1]}")
    continued = 0
    for s in points:
        cont = _continued(bars, meta, s, vol, build_state, restore or roundtrip)
        _check_continued_tables(full, cont, s, bars)
        for i, x in enumerate(g):
            _check_continued_replay(i, runs[i], simulate(x, cont, bars, meta, start, None, sim),
                                    s, bars)
            continued += bars.n_bars - start
    return AuditResult(used, int(g.shape[0]), compared, points, continued,
                       getattr(full.vol, "ginn_sha256", ""))


def roundtrip(state: TablesState) -> TablesState:
    """``state`` written as a snapshot file and read back: what a live start would load."""
    with tempfile.TemporaryDirectory(prefix="emp-audit-") as d:
        path = Path(d) / "state.npz"
        save_state(path, state)
        return load_state(path)


def _continued(bars: Bars, meta: SymbolMeta, s: int, vol: VolatilityConfig | None,
               build_state: StateBuilder, restore: Restorer) -> Tables:
    """Tables built from the origin on [0, s), continued from the restored state to the end."""
    tables, state = build_state(truncate(bars, s), meta, vol=vol)
    rest = {f: np.array(getattr(bars, f)[:, s:], order="C")
            for f in ("open", "high", "low", "close", "volume")}
    new = Bars(bars.symbols, bars.timeframe, np.array(bars.ts[s:]), rest["open"], rest["high"],
               rest["low"], rest["close"], rest["volume"], None)
    return extend_tables(tables, restore(state), new, ginn=ginn_model_of(vol))[0]


def _check_continued_tables(full: Tables, cont: Tables, s: int, bars: Bars) -> None:
    for (what, a, names), (_, b, _) in zip(_table_rows(full), _table_rows(cont), strict=True):
        if b.shape != a.shape:
            raise ContinuationError(f"{what}: tables continued from the snapshot at bar {s} "
                                    f"have shape {b.shape}, expected {a.shape}")
        hit = _first_diff(a, b)
        if hit is not None:
            row, bar = hit
            label = f"{what} {names[row]}".strip()
            raise ContinuationError(
                f"continuation differs in {label}: bar {bar} ({_when(bars, bar)}) is "
                f"{float(a[row, bar])!r} built from the origin but {float(b[row, bar])!r} "
                f"continued from a snapshot at bar {s}")


def _check_continued_replay(i: int, full: Backtest, cont: Backtest, s: int, bars: Bars) -> None:
    """A genome's whole replay on continued tables must equal the one on the origin's."""
    start = bars.n_bars - full.position.shape[0]
    found: list[tuple[int, str, str, str]] = []
    for what in ("position", "equity"):
        hit = _first_diff(getattr(full, what)[None], getattr(cont, what)[None])
        if hit is not None:
            j = hit[1]
            found.append((start + j, what, repr(float(getattr(full, what)[j])),
                          repr(float(getattr(cont, what)[j]))))
    t = _trade_diff(full.trades, cont.trades, bars.n_bars + 1)
    if t is not None:
        found.append((t[0], "trade", t[1], t[2]))
    if found:
        bar, what, va, vb = min(found, key=lambda f: f[0])
        raise ContinuationError(
            f"continuation differs in {what} of candidate {i}: bar {bar} ({_when(bars, bar)}) is "
            f"{va} from the origin but {vb} continued from a snapshot at bar {s}")
