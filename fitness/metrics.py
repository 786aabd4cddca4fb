"""Performance metrics, the Python layer: names, slots, directions and a dict wrapper for humans.

The formulas and degenerate-case values are documented in ``fitness.metrics_nb``, which holds the
numba kernels ``fill_metrics`` (dense returns) and ``fill_metrics_sparse`` (nonzero returns at
their offsets, the same metrics in O(nonzero bars)) and the ``M_*`` slot constants (defined there so numba's cache sees
a layout change). Kernels may import the constants from either module; they are plain ints.
"""

from __future__ import annotations

import numpy as np

from fitness.metrics_nb import (
    M_ANNUAL_RETURN,
    M_CALMAR,
    M_ES95,
    M_EXPOSURE,
    M_KURTOSIS,
    M_MAX_DRAWDOWN,
    M_PROFIT_FACTOR,
    M_SHARPE,
    M_SKEWNESS,
    M_SORTINO,
    M_STABILITY,
    M_TOTAL_RETURN,
    M_TRADE_COUNT,
    M_TRADES_PER_YEAR,
    M_TURNOVER,
    M_VAR95,
    M_VOLATILITY,
    M_WIN_RATE,
    N_METRICS,
    PF_CAP,
    RETURN_CAP,
    SPARSE_SCRATCH,
    TAIL_P,
    MetricsInputError,
    fill_metrics,
    fill_metrics_buf,
    fill_metrics_sparse,
)

__all__ = [
    "MAXIMISE",
    "METRIC_INDEX",
    "METRIC_NAMES",
    "MINIMISE",
    "M_ANNUAL_RETURN",
    "M_CALMAR",
    "M_ES95",
    "M_EXPOSURE",
    "M_KURTOSIS",
    "M_MAX_DRAWDOWN",
    "M_PROFIT_FACTOR",
    "M_SHARPE",
    "M_SKEWNESS",
    "M_SORTINO",
    "M_STABILITY",
    "M_TOTAL_RETURN",
    "M_TRADES_PER_YEAR",
    "M_TRADE_COUNT",
    "M_TURNOVER",
    "M_VAR95",
    "M_VOLATILITY",
    "M_WIN_RATE",
    "N_METRICS",
    "PF_CAP",
    "RETURN_CAP",
    "SPARSE_SCRATCH",
    "TAIL_P",
    "MetricsInputError",
    "fill_metrics",
    "fill_metrics_buf",
    "fill_metrics_sparse",
    "metrics_dict",
]

METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "annual_return",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "profit_factor",
    "win_rate",
    "trade_count",
    "trades_per_year",
    "turnover",
    "exposure",
    "stability",
    "var95",
    "es95",
    "skewness",
    "kurtosis",
)
METRIC_INDEX: dict[str, int] = {name: i for i, name in enumerate(METRIC_NAMES)}
assert len(METRIC_NAMES) == N_METRICS

# Better when larger / smaller. The rest (trade_count, trades_per_year, turnover, exposure)
# have no preferred direction on their own: objectives use them as constraints or penalties.
MAXIMISE: frozenset[str] = frozenset({
    "total_return", "annual_return", "sharpe", "sortino", "calmar", "profit_factor",
    "win_rate", "stability", "skewness",
})
MINIMISE: frozenset[str] = frozenset({
    "volatility", "max_drawdown", "var95", "es95", "kurtosis",
})


def metrics_dict(
    returns: np.ndarray,
    *,
    n_trades: int = 0,
    n_wins: int = 0,
    gross_win: float = 0.0,
    gross_loss: float = 0.0,
    turnover: float = 0.0,
    bars_in_market: int = 0,
    bars_per_year: float,
) -> dict[str, float]:
    """All metrics of one return series as ``{name: value}``; validates what the kernel trusts."""
    r = np.ascontiguousarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or inf")
    if not (np.isfinite(bars_per_year) and bars_per_year > 0):
        raise ValueError(f"bars_per_year must be > 0, got {bars_per_year}")
    if not 0 <= n_wins <= n_trades:
        raise ValueError(f"need 0 <= n_wins <= n_trades, got {n_wins}, {n_trades}")
    if not 0 <= bars_in_market <= r.size:
        raise ValueError(f"need 0 <= bars_in_market <= len(returns), got {bars_in_market}")
    out = np.zeros(N_METRICS)
    fill_metrics(
        out, r, int(n_trades), int(n_wins), float(gross_win), float(gross_loss),
        float(turnover), int(bars_in_market), float(bars_per_year),
    )
    return dict(zip(METRIC_NAMES, out.tolist(), strict=True))
