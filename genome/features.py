"""The feature table: every primitive at every grid parameter, computed once per dataset.

A genome only indexes into this table (primitive id, grid index) -> row, so a population is
evaluated over one shared, read-only float64 matrix. Rows follow ``PRIMITIVES`` order and each
primitive's grid order; the kernels (``genome.primitives_nb``) write straight into the rows.
Inputs are validated here, once, so the kernels can trust them.

A table can be *continued*: ``build_features_state`` also returns the ``FeatureState`` after the
last bar (every row's carried values and the last ``TAIL`` bars), and ``advance_features`` /
``extend_features`` add new bars from it. The batch build is itself "fresh state, then advance
over every bar" with the same numba code (``primitives_nb.advance_rows``), so a continued table
equals one rebuilt from the same origin bit for bit; a table rebuilt from a *later* first bar
does not (recursion seeds and re-anchoring schedules count from the origin), which is why the
live executor must continue the run's tables rather than rebuild them on a recent window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genome import primitives_nb as pnb
from genome.primitives import LONGEST_LOOKBACK, PRIMITIVES


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

# primitive name -> (one-row kernel, the input arrays it reads); grid parameters follow, then the
# out row. The table itself is built by ``primitives_nb.advance_rows`` from ``ROW_KIND`` and
# ``ROW_PAR``; these one-row kernels run the same advance code from the origin.
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

KIND_OF: dict[str, int] = {
    "sma": pnb.K_SMA, "ema": pnb.K_EMA, "rsi": pnb.K_RSI, "roc": pnb.K_ROC, "macd": pnb.K_MACD,
    "bollz": pnb.K_BOLLZ, "donch": pnb.K_DONCH, "atrr": pnb.K_ATRR, "volz": pnb.K_VOLZ,
    "retz": pnb.K_RETZ, "bos": pnb.K_BOS, "fvg": pnb.K_FVG, "obr": pnb.K_OBR,
    "sweep": pnb.K_SWEEP, "sess": pnb.K_SESS,
}


def _kinds() -> tuple[np.ndarray, np.ndarray]:
    missing = [p.name for p in PRIMITIVES if p.name not in KIND_OF]
    if missing:
        raise KeyError(f"primitives {missing} have no kernel in genome.features.KIND_OF")
    kind = np.array([KIND_OF[p.name] for p in PRIMITIVES for _ in p.grid], dtype=np.int64)
    par = np.zeros((N_ROWS, 3), dtype=np.int64)
    for row, params in enumerate(q for p in PRIMITIVES for q in p.grid):
        par[row, : len(params)] = params
    return kind, par


ROW_KIND, ROW_PAR = _kinds()  # per row: the advance kernel and its parameters
if pnb.TAIL < LONGEST_LOOKBACK + 2:
    raise RuntimeError(f"primitives_nb.TAIL = {pnb.TAIL} is shorter than the longest lookback "
                       f"{LONGEST_LOOKBACK} + 2")
_FIELDS = ("ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class FeatureState:
    """Where a feature table stands after ``n_bars`` bars from its origin: every row's carried
    values (``primitives_nb``'s state record, one row per table row) and the last bars
    (at most ``TAIL``), the only history a continuation reads."""

    n_bars: int             # bars consumed since the origin
    rows: np.ndarray        # float64 [N_ROWS, N_STATE]
    tail: dict[str, np.ndarray]  # _FIELDS -> the last min(n_bars, TAIL) bars


def initial_state() -> FeatureState:
    """The state at the origin: nothing consumed yet."""
    rows = np.empty((N_ROWS, pnb.N_STATE))
    for row in range(N_ROWS):
        pnb.init_state(int(ROW_KIND[row]), int(ROW_PAR[row, 0]), rows[row])
    tail = {f: np.empty(0, dtype=np.int64 if f == "ts" else np.float64) for f in _FIELDS}
    return FeatureState(0, rows, tail)


def advance_features(state: FeatureState, ts: np.ndarray, open_: np.ndarray, high: np.ndarray,
                     low: np.ndarray, close: np.ndarray, volume: np.ndarray
                     ) -> tuple[np.ndarray, FeatureState]:
    """Feature values of the new bars (float64 [N_ROWS, m]) and the state after them; ``state``
    itself is not changed. The new bars are validated like a build's (and must come after the
    state's last bar)."""
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    ts64 = _check_inputs(ts, cols)
    if state.tail["ts"].shape[0] and ts64.shape[0] and ts64[0] <= state.tail["ts"][-1]:
        raise ValueError(f"new bar 0 (ts {int(ts64[0])}) is not after the state's last bar "
                         f"(ts {int(state.tail['ts'][-1])})")
    new = {"ts": ts64, **cols}
    k = state.tail["ts"].shape[0]
    arrays = {f: np.ascontiguousarray(np.concatenate([state.tail[f], new[f]])) for f in _FIELDS}
    m = ts64.shape[0]
    out = np.empty((N_ROWS, m), dtype=np.float64)
    rows = state.rows.copy()
    pnb.advance_rows(arrays["ts"], arrays["open"], arrays["high"], arrays["low"],
                     arrays["close"], arrays["volume"], k, state.n_bars - k, ROW_KIND, ROW_PAR,
                     rows, out)
    keep = min(pnb.TAIL, k + m)
    tail = {f: arrays[f][k + m - keep :].copy() for f in _FIELDS}
    return out, FeatureState(state.n_bars + m, rows, tail)


def _freeze(values: np.ndarray) -> FeatureTable:
    offsets, grid_len = OFFSETS.copy(), GRID_LEN.copy()
    for a in (values, offsets, grid_len):
        a.flags.writeable = False  # one table is shared by every genome: nobody may edit it
    return FeatureTable(values, offsets, grid_len, NAMES)


def build_features_state(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                         close: np.ndarray, volume: np.ndarray
                         ) -> tuple[FeatureTable, FeatureState]:
    """``build_features`` and the state after its last bar (to continue the table)."""
    values, state = advance_features(initial_state(), ts, open_, high, low, close, volume)
    return _freeze(values), state


def build_features(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                   close: np.ndarray, volume: np.ndarray) -> FeatureTable:
    """Compute every (primitive, parameter) row for one symbol's bars (validated first); the
    first bar is the table's origin."""
    return build_features_state(ts, open_, high, low, close, volume)[0]


def extend_features(table: FeatureTable, state: FeatureState, ts: np.ndarray,
                    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                    volume: np.ndarray) -> tuple[FeatureTable, FeatureState]:
    """The table with the new bars appended, equal bit for bit to a build from the same origin
    over all the bars, and the state after them. ``state`` must be the table's own."""
    if state.n_bars != table.n_bars:
        raise ValueError(f"state is at bar {state.n_bars} but the table has {table.n_bars} bars")
    new, after = advance_features(state, ts, open_, high, low, close, volume)
    return _freeze(np.concatenate([table.values, new], axis=1)), after
