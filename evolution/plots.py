"""Plot helpers for run tracking: Pareto scatter, equity and drawdown curves.

Pure functions that return PNG bytes (or write them to a path). They build a bare
``Figure`` on the Agg canvas instead of going through pyplot, so they never need a
display, keep no global figure state and are safe to call from worker threads.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(fig: Figure, path: Path | None) -> bytes:
    """Render on the Agg canvas; optionally also write the bytes to ``path``."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def pareto_png(front: pd.DataFrame, x: str, y: str, color: str | None = None,
               title: str = "Pareto front", path: Path | None = None) -> bytes:
    """Scatter of two objectives, optionally coloured by a third, to compare fronts by eye."""
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    if color is not None:
        sc = ax.scatter(front[x], front[y], c=front[color], cmap="viridis", s=24,
                        edgecolors="k", linewidths=0.3)
        fig.colorbar(sc, ax=ax, label=color)
    else:
        ax.scatter(front[x], front[y], s=24, edgecolors="k", linewidths=0.3)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{title} (n={len(front)})")
    ax.grid(True, alpha=0.3)
    return _png(fig, path)


def drawdown(equity: np.ndarray) -> tuple[np.ndarray, bool]:
    """Drawdown from the running peak: fractional if equity stays positive, else absolute.

    Returns the curve and whether it is fractional, so a P&L curve that starts at 0
    (where a ratio is meaningless) still gets a sensible plot.
    """
    eq = np.asarray(equity, dtype=float)
    peak = np.maximum.accumulate(eq)
    if eq.size and np.all(eq > 0):
        return eq / peak - 1.0, True
    return eq - peak, False


MAX_POINTS = 4000


def _thin(index: pd.DatetimeIndex, values: np.ndarray, reduce: str) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points per curve, as naive UTC datetime64 (matplotlib converts those
    vectorised; tz-aware timestamps go one by one). Each block keeps its first value, or its
    minimum for drawdowns so the worst point always shows."""
    x = pd.DatetimeIndex(index)
    x = (x.tz_convert(None) if x.tz is not None else x).to_numpy()
    v = np.asarray(values, dtype=float)
    if v.size <= MAX_POINTS:
        return x, v
    starts = np.arange(0, v.size, -(-v.size // MAX_POINTS))
    return x[starts], (np.minimum.reduceat(v, starts) if reduce == "min" else v[starts])


def equity_png(equity: np.ndarray, index: pd.DatetimeIndex, title: str = "Equity",
               path: Path | None = None) -> bytes:
    """Equity curve against time."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.plot(*_thin(index, equity, "first"), lw=1.0)
    ax.set_xlabel("time")
    ax.set_ylabel("equity")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig, path)


def drawdown_png(equity: np.ndarray, index: pd.DatetimeIndex, title: str = "Drawdown",
                 path: Path | None = None) -> bytes:
    """Underwater curve (drawdown from the running peak) against time."""
    dd, frac = drawdown(equity)
    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    vals = dd * 100.0 if frac else dd
    x, thin = _thin(index, vals, "min")
    ax.fill_between(x, thin, 0.0, color="tab:red", alpha=0.4, lw=0)
    ax.plot(x, thin, color="tab:red", lw=0.8)
    ax.set_xlabel("time")
    ax.set_ylabel("drawdown (%)" if frac else "drawdown")
    ax.set_title(f"{title} (max {vals.min():.2f}{'%' if frac else ''})" if vals.size else title)
    ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig, path)
