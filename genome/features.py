"""The feature table: every primitive at every grid parameter, computed once per dataset.

A genome only indexes into this table (primitive id, grid index) -> row, so a population is
evaluated over one shared, read-only float64 matrix. Rows follow ``PRIMITIVES`` order and each
primitive's grid order; the kernels (``genome.primitives_nb``) write straight into the rows.
Inputs are validated here, once, so the kernels can trust them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genome import primitives_nb as pnb
from genome.primitives import PRIMITIVES


@dataclass(frozen=True)
class FeatureTable:
    """One symbol's features: ``values[row(prim, k)]`` is primitive ``prim`` at grid index k."""

    values: np.ndarray      # float64 [n_rows, n_bars], C-contiguous
    offsets: np.ndarray     # int64 [len(PRIMITIVES)]: row of (primitive p, grid index 0)
    grid_len: np.ndarray    # int64 [len(PRIMITIVES)]
    names: tuple[str, ...]  # "sma(20)", "macd(12,26,9)", ...

    def row(self, prim: int, k: int) -> int:
        """Row of (primitive ``prim``, grid index ``k``); IndexError when either is out of range."""
        if not 0 <= prim < self.offsets.shape[0]:
            raise IndexError(f"primitive id {prim} out of range 0..{self.offsets.shape[0] - 1}")
        g = int(self.grid_len[prim])
        if not 0 <= k < g:
            raise IndexError(f"grid index {k} out of range 0..{g - 1} for "
                             f"primitive {PRIMITIVES[prim].name!r}")
        return int(self.offsets[prim]) + k

    @property
    def n_bars(self) -> int:
        return int(self.values.shape[1])


def _layout() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    grid_len = np.array([len(p.grid) for p in PRIMITIVES], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(grid_len)[:-1]]).astype(np.int64)
    names = tuple(f"{p.name}({p.param_text(k)})" for p in PRIMITIVES for k in range(len(p.grid)))
    return offsets, grid_len, names


OFFSETS, GRID_LEN, NAMES = _layout()
N_ROWS = len(NAMES)


def _first_bad(ok: np.ndarray) -> int:
    return int(np.argmin(ok))


def _check_inputs(ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Raise ValueError naming the problem and the first offending bar; return ts as int64.
    ``cols`` values are replaced by their ``np.asarray`` form."""
    ts = np.asarray(ts)
    cols.update({k: np.asarray(v) for k, v in cols.items()})
    arrays = {"ts": ts, **cols}
    for name, a in arrays.items():
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    if ts.dtype.kind == "M":
        ts = ts.astype("datetime64[ns]").view(np.int64)
    if ts.dtype != np.int64:
        raise ValueError(f"ts must be int64 UTC nanoseconds, got dtype {ts.dtype}")
    if ts.shape[0] > 1 and not (ok := np.diff(ts) > 0).all():
        raise ValueError(f"ts must be strictly increasing: bar {_first_bad(ok) + 1} "
                         "is not after the previous one")
    for name, a in cols.items():
        if a.dtype != np.float64:
            raise ValueError(f"{name} must be float64, got dtype {a.dtype}")
        if not (ok := np.isfinite(a)).all():
            raise ValueError(f"{name} is not finite at bar {_first_bad(ok)}")
        if name != "volume" and not (ok := a > 0).all():
            raise ValueError(f"{name} must be positive: bar {_first_bad(ok)} is {a[_first_bad(ok)]}")
    if not (ok := cols["volume"] >= 0).all():
        raise ValueError(f"volume must be >= 0: bar {_first_bad(ok)} is negative")
    o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
    if not (ok := (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c))).all():
        raise ValueError(f"inconsistent OHLC at bar {_first_bad(ok)}: need "
                         "low <= min(open, close) and high >= max(open, close)")
    return ts


Kernel = Callable[..., None]

# primitive name -> (kernel, the input arrays it reads); grid parameters follow, then the out row
KERNELS: dict[str, tuple[Kernel, tuple[str, ...]]] = {
    "sma": (pnb.sma_nb, ("close",)),
    "ema": (pnb.ema_nb, ("close",)),
    "rsi": (pnb.rsi_nb, ("close",)),
    "roc": (pnb.roc_nb, ("close",)),
    "macd": (pnb.macd_nb, ("close",)),
    "bollz": (pnb.bollz_nb, ("close",)),
    "donch": (pnb.donch_nb, ("high", "low", "close")),
    "atrr": (pnb.atrr_nb, ("high", "low", "close")),
    "volz": (pnb.volz_nb, ("volume",)),
    "retz": (pnb.retz_nb, ("close",)),
    "bos": (pnb.bos_nb, ("high", "low", "close")),
    "fvg": (pnb.fvg_nb, ("high", "low")),
    "obr": (pnb.obr_nb, ("open", "high", "low", "close")),
    "sweep": (pnb.sweep_nb, ("high", "low", "close")),
    "sess": (pnb.sess_nb, ("ts",)),
}


def build_features(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                   close: np.ndarray, volume: np.ndarray) -> FeatureTable:
    """Compute every (primitive, parameter) row for one symbol's bars (validated first)."""
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    ts64 = _check_inputs(ts, cols)
    arrays = {k: np.ascontiguousarray(a) for k, a in cols.items()}
    arrays["ts"] = np.ascontiguousarray(ts64)
    values = np.empty((N_ROWS, ts64.shape[0]), dtype=np.float64)
    row = 0
    for prim in PRIMITIVES:
        if prim.name not in KERNELS:
            raise KeyError(f"primitive {prim.name!r} has no kernel in genome.features.KERNELS")
        kernel, fields = KERNELS[prim.name]
        args = tuple(arrays[f] for f in fields)
        for params in prim.grid:
            kernel(*args, *params, values[row])
            row += 1
    offsets, grid_len = OFFSETS.copy(), GRID_LEN.copy()
    for a in (values, offsets, grid_len):
        a.flags.writeable = False  # one table is shared by every genome: nobody may edit it
    return FeatureTable(values, offsets, grid_len, NAMES)
