"""The primitive library's catalogue: every primitive, its parameter grid and threshold range.

A genome never holds indicator values, only indexes into this catalogue: primitive id and a
parameter index into the primitive's grid. The feature table (``genome/features.py``) holds one
row per (primitive, parameter) pair, computed once per dataset by the kernels in
``genome/primitives_nb.py``. Every value at bar t uses bars <= t only; warm-up bars are NaN,
and a NaN makes any comparison false.

Threshold genes live in [0, 1] and map linearly onto ``[thr_lo, thr_hi]``, so one gene means
something sensible for an RSI (5..95) and for a z-score (-3..3) alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primitive:
    name: str          # stable id used in JSON and feature names
    label: str         # how decoded rules print it, formatted with the parameter
    grid: tuple[tuple[int, ...], ...]  # parameter tuples; a genome picks one by index
    thr_lo: float
    thr_hi: float
    doc: str

    def param_text(self, k: int) -> str:
        return ",".join(str(p) for p in self.grid[k])


MA_GRID = ((5,), (8,), (10,), (13,), (20,), (30,), (50,), (100,), (200,))

PRIMITIVES: tuple[Primitive, ...] = (
    Primitive("sma", "SMA({})", MA_GRID, -0.05, 0.05,
              "SMA(p)/close - 1: where the simple moving average sits relative to price"),
    Primitive("ema", "EMA({})", MA_GRID, -0.05, 0.05,
              "EMA(p)/close - 1, EMA seeded with the SMA of the first p closes"),
    Primitive("rsi", "RSI({})", ((2,), (3,), (5,), (7,), (9,), (14,), (21,), (28,)), 5.0, 95.0,
              "Wilder RSI in 0..100 (Wilder smoothing seeded with the simple mean)"),
    Primitive("roc", "ROC({})", ((1,), (2,), (3,), (5,), (10,), (20,), (50,), (100,)), -0.1, 0.1,
              "close/close[t-p] - 1"),
    Primitive("macd", "MACDh({})", ((12, 26, 9), (5, 35, 5), (8, 17, 9), (19, 39, 9)), -0.01, 0.01,
              "(MACD - signal)/close with MACD = EMA(fast) - EMA(slow), signal = EMA(sig) of MACD"),
    Primitive("bollz", "BollZ({})", ((10,), (20,), (30,), (50,), (100,)), -3.0, 3.0,
              "(close - SMA(p)) / std(close, p), population std"),
    Primitive("donch", "Donchian({})", ((10,), (20,), (50,), (100,)), -0.5, 1.5,
              "(close - min low of the p previous bars) / (max high - min low of those bars); "
              "> 1 is an upside breakout, < 0 a downside one"),
    Primitive("atrr", "ATRratio({})", ((5, 20), (10, 50), (14, 100), (20, 200)), 0.5, 2.0,
              "ATR(fast)/ATR(slow), Wilder ATR on true range: volatility expansion"),
    Primitive("volz", "VolZ({})", ((10,), (20,), (50,), (100,)), -2.0, 4.0,
              "(volume - mean(volume, p)) / std(volume, p)"),
    Primitive("retz", "RetZ({})", ((20,), (50,), (100,)), -4.0, 4.0,
              "log return / std of the p previous log returns: spike (anomaly) filter"),
    Primitive("bos", "BOS({})", ((2,), (3,), (5,), (8,)), -1.0, 1.0,
              "market structure from swing points with n bars each side (a swing is known n bars "
              "after it): +1 after close breaks above the last swing high, -1 after it breaks "
              "below the last swing low, 0 before any break"),
    Primitive("fvg", "FVG({})", ((1,), (3,), (5,), (10,)), -1.0, 1.0,
              "three-candle fair-value gap formed within the last p bars: +1 bullish "
              "(low[t] > high[t-2]), -1 bearish (high[t] < low[t-2]); the most recent wins, 0 none"),
    Primitive("obr", "OBretest({})", ((2,), (3,), (5,)), -1.0, 1.0,
              "order-block retest: +1 when the bar trades back into the last down-candle before "
              "the latest bullish break of structure, -1 for the bearish mirror, else 0"),
    Primitive("sweep", "Sweep({})", ((2,), (3,), (5,), (8,)), -1.0, 1.0,
              "liquidity sweep of the prior swing: +1 when low < last swing low but close above "
              "it, -1 when high > last swing high but close below it, else 0"),
    Primitive("sess", "Session({})", ((0,), (1,), (2,), (3,)), 0.0, 1.0,
              "1 inside the session by bar open time UTC: 0 Asia 00-09, 1 London 07-16, "
              "2 New York 12-21, 3 London/New York overlap 12-16; else 0"),
)

SESSION_NAMES = ("Asia", "London", "NewYork", "Overlap")
PRIMITIVE_IDS: dict[str, int] = {p.name: i for i, p in enumerate(PRIMITIVES)}
MAX_GRID = max(len(p.grid) for p in PRIMITIVES)
# bars of history the slowest feature reads (SMA/EMA 200, ATR 200): the default purge
LONGEST_LOOKBACK = max(v for p in PRIMITIVES if p.name != "sess" for t in p.grid for v in t)
