"""The per-dataset tables every genome reads (features, volatility, calendar), and how to
continue them.

Features and volatility depend on where the history starts: EMA, Wilder and MACD recursions are
seeded at the first bar, rolling sums are re-anchored on a schedule counted from it, and GARCH
refits fall on a grid counted from it and warm-start from the previous fit. Tables rebuilt from a
shorter, later window therefore differ from the run's (measured on S&P 500: the sign of the
position changed on up to 3.9 % of recent bars). So the first bar is a stated **origin**
(``Origin``, recorded with the run), and a consumer that must trade what the backtest tested
(the live executor) *continues* the run's tables instead of rebuilding them:

- ``build_tables_state``: the tables and the ``TablesState`` after their last bar;
- ``advance_tables``: the new bars' columns and the next state (cheap; the live step), with GARCH
  refits done inline or, with ``refit=False``, left to ``market.volatility``'s
  ``due_refits``/``run_refit``/``apply_refits`` so they can run in the background;
- ``extend_tables``: the tables with the new bars appended, equal bit for bit to a build from the
  same origin over all the bars;
- ``save_state`` / ``load_state``: a snapshot (npz arrays + JSON header, no pickle, atomic, with
  a format version and a digest) so live can start from it instead of replaying years of bars.

The ``ginn`` variance row uses the GINN model named by ``VolatilityConfig.ginn_model`` (loaded
and verified by ``ginn_model_of``); the state records its sha256 and the last input rows. The
weights are not in the state: ``advance_tables``, ``extend_tables``, ``finish_refit`` and
``LiveTables`` take the model (``ginn=``) and, given none or another one, continue the ginn row
as garch11's (``market.volatility``'s "continuation").
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from genome.features import (
    N_ROWS,
    NAMES,
    ROW_KIND,
    ROW_PAR,
    FeatureState,
    FeatureTable,
    advance_features,
    build_features,
    build_features_state,
)
from genome.primitives_nb import N_STATE, TAIL, live_step_rows
from market.barset import Bars
from market.config import SymbolMeta, VolatilityConfig
from market.ginn import GinnError
from market.ginn_vol import GinnModel
from market.timeframes import bars_per_year
from market.volatility import (
    CLAMP_RATIO,
    EGARCH_ROW,
    FITTED_VARIANTS,
    GARCH11_ROW,
    GARCH_VARIANTS,
    GINN_ROW,
    RV_ARRAY,
    RV_WINDOWS,
    SCALE,
    RefitJob,
    RefitResult,
    VolSettings,
    VolState,
    VolTable,
    advance_vol,
    apply_refits,
    build_vol_state,
    build_vol_table,
    due_refits,
    ginn_rows_buffer,
    variant_fits,
)
from market.volatility_nb import vol_live_step

_NS_HOUR = 3_600_000_000_000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NS_DAY = 24 * _NS_HOUR


@dataclass(frozen=True)
class Tables:
    """Everything computed once per dataset and shared by every genome (one ``ray.put``)."""

    features: FeatureTable
    vol: VolTable
    hour: np.ndarray     # int64 UTC hour of each bar's open
    weekday: np.ndarray  # int64, Monday = 0
    bars_per_year: float


def ginn_model_of(vol: VolatilityConfig | None) -> GinnModel | None:
    """The verified GINN model ``vol.ginn_model`` names (None when it names none); GinnError
    naming the file when it is missing, altered or lacks meta.data_end, or when its
    out-of-sample gate failed (``emp ginn train`` records it: GINN replaces GARCH only when it
    passed) and ``vol.ginn_ungated`` does not say to use it anyway."""
    if vol is None or vol.ginn_model is None:
        return None
    model = GinnModel.load(vol.ginn_model)
    gate = model.weights.meta.get("gate")
    if isinstance(gate, dict) and gate.get("passed") is False and not vol.ginn_ungated:
        raise GinnError(f"{vol.ginn_model}: this GINN model failed its out-of-sample gate "
                        f"({gate.get('reason') or 'GARCH won'}): GARCH stays. Name a model "
                        "that passed, or set volatility.ginn_ungated to use it anyway")
    return model


def build_tables(bars: Bars, meta: SymbolMeta, symbol: int = 0, *,
                 vol: VolatilityConfig | None = None, cache_dir: Path | None = None,
                 progress: Callable[[str | None, int, int], None] | None = None) -> Tables:
    """Feature and volatility tables for one symbol of ``bars`` (vol fits cached in cache_dir;
    ``progress``: see ``build_vol_table``). ``bars``' first bar is the tables' origin."""
    vc = vol or VolatilityConfig()
    o, h, lo, c, v = _fields(bars, symbol)
    bpy = bars_per_year(bars.timeframe, meta.calendar)
    features = build_features(bars.ts, o, h, lo, c, v)
    vol_table = build_vol_table(c, bpy, window=vc.window, refit_every=vc.refit_every,
                                ewma_lambda=vc.ewma_lambda, min_bars=vc.min_bars,
                                cache_dir=cache_dir, progress=progress, ts=bars.ts,
                                ginn=ginn_model_of(vc))
    hour, weekday = _calendar(bars.ts)
    return Tables(features, vol_table, hour, weekday, bpy)


def _fields(bars: Bars, symbol: int) -> tuple[np.ndarray, ...]:
    return tuple(np.ascontiguousarray(getattr(bars, f)[symbol])
                 for f in ("open", "high", "low", "close", "volume"))


def _calendar(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hour = (ts // _NS_HOUR) % 24
    weekday = (ts // _NS_DAY + 3) % 7  # 1970-01-01 was a Thursday
    return hour.astype(np.int64), weekday.astype(np.int64)


# ---- origin and state ------------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """The first bar of the history a run's tables were built from: its index in the loaded
    bars and its open time (int64 UTC ns). Recursion seeds and refit grids count from it."""

    index: int
    ts: int

    def to_json(self) -> dict[str, object]:
        import pandas as pd

        return {"index": self.index, "ts_ns": self.ts,
                "ts": pd.Timestamp(self.ts, unit="ns", tz="UTC").isoformat()}


def origin_of(bars: Bars, index: int = 0) -> Origin:
    """The origin of tables built from ``bars`` (whose first bar is bar ``index`` of what was
    loaded: 0 unless the caller cut a prefix off)."""
    if bars.n_bars == 0:
        raise ValueError("no bars: an empty history has no origin")
    return Origin(int(index), int(bars.ts[0]))


@dataclass(frozen=True)
class TablesState:
    """Where one symbol's tables stand after ``n_bars`` bars from ``origin``."""

    origin: Origin
    n_bars: int
    bars_per_year: float
    features: FeatureState
    vol: VolState


def _vol_settings(vol: VolatilityConfig | None, bpy: float) -> VolSettings:
    vc = vol or VolatilityConfig()
    return VolSettings(float(bpy), vc.window, vc.refit_every, vc.ewma_lambda, vc.min_bars)


def build_tables_state(bars: Bars, meta: SymbolMeta, symbol: int = 0, *,
                       vol: VolatilityConfig | None = None, origin_index: int = 0
                       ) -> tuple[Tables, TablesState]:
    """``build_tables`` (without the on-disk cache: the fits are replayed) and the state after
    the last bar. ``bars``' first bar is the origin, bar ``origin_index`` of what was loaded."""
    o, h, lo, c, v = _fields(bars, symbol)
    bpy = bars_per_year(bars.timeframe, meta.calendar)
    features, fstate = build_features_state(bars.ts, o, h, lo, c, v)
    vol_table, vstate = build_vol_state(c, _vol_settings(vol, bpy), ts=bars.ts,
                                        ginn=ginn_model_of(vol))
    hour, weekday = _calendar(bars.ts)
    state = TablesState(origin_of(bars, origin_index), bars.n_bars, float(bpy), fstate, vstate)
    return Tables(features, vol_table, hour, weekday, float(bpy)), state


@dataclass(frozen=True)
class NewColumns:
    """The tables' columns for bars appended by ``advance_tables``."""

    features: np.ndarray  # float64 [N_ROWS, m]
    variance: np.ndarray  # float64 [len(GARCH_VARIANTS), m]
    rv: np.ndarray        # float64 [len(RV_WINDOWS), m]
    hour: np.ndarray      # int64 [m]
    weekday: np.ndarray   # int64 [m]


def advance_tables(state: TablesState, new_bars: Bars, symbol: int = 0, *, refit: bool = True,
                   ginn: GinnModel | None = None) -> tuple[NewColumns, TablesState]:
    """The new bars' columns and the state after them (``state`` is not changed).

    With ``refit=False`` the bars are consumed up to and including the first refit bar only;
    its fitted variance rows (and ginn) are NaN and ``state.vol.pending`` is set until
    ``finish_refit`` applies the fits (``market.volatility.due_refits``/``run_refit``).
    ``ginn``: the state's GINN model (none or another: the ginn row falls back to garch11).
    """
    if state.vol.pending:
        raise ValueError("a volatility refit is pending: finish_refit first")
    last = state.features.tail["ts"]
    if new_bars.n_bars and last.shape[0] and int(new_bars.ts[0]) <= int(last[-1]):
        raise ValueError(f"new bar 0 (ts {int(new_bars.ts[0])}) is not after the state's last "
                         f"bar (ts {int(last[-1])})")
    o, h, lo, c, v = _fields(new_bars, symbol)
    variance, rv, vstate = advance_vol(state.vol, c, refit=refit, ts=new_bars.ts, ginn=ginn)
    m = variance.shape[1]
    feats, fstate = advance_features(state.features, new_bars.ts[:m], o[:m], h[:m], lo[:m],
                                     c[:m], v[:m])
    hour, weekday = _calendar(new_bars.ts[:m])
    return (NewColumns(feats, variance, rv, hour, weekday),
            TablesState(state.origin, state.n_bars + m, state.bars_per_year, fstate, vstate))


def finish_refit(state: TablesState, results: list[RefitResult], *,
                 ginn: GinnModel | None = None) -> tuple[np.ndarray, TablesState]:
    """Apply the pending bar's fits (``market.volatility.apply_refits``): that bar's variance
    column (float64 [5]) and the state after it (``ginn``: as ``advance_tables``)."""
    col, vstate = apply_refits(state.vol, results, ginn=ginn)
    return col, TablesState(state.origin, state.n_bars, state.bars_per_year, state.features,
                            vstate)


def extend_tables(tables: Tables, state: TablesState, new_bars: Bars, symbol: int = 0, *,
                  ginn: GinnModel | None = None) -> tuple[Tables, TablesState]:
    """``tables`` with ``new_bars`` appended (refits performed), equal bit for bit to
    ``build_tables`` from the same origin over all the bars (with the same GINN model, passed
    as ``ginn``), and the state after them."""
    if state.n_bars != tables.features.n_bars:
        raise ValueError(f"state is at bar {state.n_bars} but the tables have "
                         f"{tables.features.n_bars} bars")
    cols, after = advance_tables(state, new_bars, symbol, ginn=ginn)
    values = np.concatenate([tables.features.values, cols.features], axis=1)
    values.flags.writeable = False
    ft = tables.features
    features = FeatureTable(values, ft.offsets, ft.grid_len, ft.names)
    vol = VolTable(np.concatenate([tables.vol.variance, cols.variance], axis=1),
                   np.concatenate([tables.vol.rv, cols.rv], axis=1), tables.vol.bars_per_year,
                   **after.vol.count_dicts(), ginn_sha256=after.vol.ginn_sha256)
    return Tables(features, vol, np.concatenate([tables.hour, cols.hour]),
                  np.concatenate([tables.weekday, cols.weekday]), tables.bars_per_year), after


# ---- snapshot ----------------------------------------------------------------------------------

SNAPSHOT_FORMAT = "emp-tables-state"
# 2: the ginn variance row (header: the model's sha256, the pending bar's time; arrays: the
# last GINN input rows and the pending bar's RV)
SNAPSHOT_VERSION = 2
_K = len(FITTED_VARIANTS)
_FEATURE_FIELDS = ("ts", "open", "high", "low", "close", "volume")
_VOL_ARRAYS = ("returns", "ewma", "params", "active", "start", "s", "ln_s", "counts", "ginn_x",
               "pending_rv")


class SnapshotError(EmpError, ValueError):
    """A tables snapshot that cannot be used: unreadable, of another format or version,
    altered, or inconsistent."""


def _layout_digest() -> str:
    """What the state's arrays mean: the feature rows, the vol rows and the state width."""
    text = json.dumps([list(NAMES), N_STATE, list(GARCH_VARIANTS), list(RV_WINDOWS)])
    return hashlib.sha256(text.encode()).hexdigest()


def _arrays_of(state: TablesState) -> dict[str, np.ndarray]:
    out = {"f_rows": state.features.rows}
    out.update({f"f_{f}": state.features.tail[f] for f in _FEATURE_FIELDS})
    out.update({f"v_{a}": getattr(state.vol, a) for a in _VOL_ARRAYS})
    out["v_last_close"] = np.array([state.vol.last_close])
    out["bars_per_year"] = np.array([state.bars_per_year])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _digest(header: dict[str, object], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _header(state: TablesState) -> dict[str, object]:
    vs = state.vol.settings
    return {"format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION,
            "origin": {"index": state.origin.index, "ts_ns": state.origin.ts},
            "n_bars": state.n_bars, "features_n_bars": state.features.n_bars,
            "vol_n_bars": state.vol.n_bars, "vol_pending": state.vol.pending,
            "vol_settings": {"window": vs.window, "refit_every": vs.refit_every,
                             "ewma_lambda": vs.ewma_lambda.hex(), "min_bars": vs.min_bars},
            "ginn_sha256": state.vol.ginn_sha256, "vol_pending_ts": state.vol.pending_ts,
            "layout": _layout_digest()}


def state_bytes(state: TablesState) -> bytes:
    """``state`` as snapshot bytes: npz arrays and a JSON header (format, version, origin, bar
    counts, settings, layout) with a sha256 over both. No pickle."""
    arrays = _arrays_of(state)
    header = _header(state)
    doc = {**header, "digest": _digest(header, arrays)}
    buf = io.BytesIO()
    np.savez(buf, header=np.array(json.dumps(doc, sort_keys=True)), **arrays)
    return buf.getvalue()


def save_state(path: Path, state: TablesState) -> None:
    """Write ``state``'s snapshot (``state_bytes``) to ``path`` atomically."""
    atomic_write_bytes(Path(path), state_bytes(state))


def load_state(path: Path) -> TablesState:
    """The state saved at ``path``; SnapshotError naming the file and the problem when it is
    missing, unreadable, truncated, of another format or version, or altered."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{path}: tables snapshot not found") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: unreadable: {exc}") from None
    return state_from_bytes(data, str(path))


def state_from_bytes(data: bytes, where: str) -> TablesState:
    """The state in snapshot bytes; SnapshotError naming ``where`` (a file, a bundle field)
    when they are unreadable, truncated, of another format or version, or altered."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: np.array(z[k]) for k in z.files}
    except Exception as exc:  # zip, npy and pickle refusals all mean: not a usable snapshot
        raise SnapshotError(f"{where}: not a readable tables snapshot "
                            f"({type(exc).__name__}: {exc})") from None
    raw = arrays.pop("header", None)
    try:
        doc = json.loads(str(raw)) if raw is not None and raw.shape == () else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise SnapshotError(f"{where}: no JSON header: not a tables snapshot")
    if doc.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{where}: format {doc.get('format')!r}, expected {SNAPSHOT_FORMAT!r}")
    if doc.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"{where}: snapshot version {doc.get('version')!r}; this build reads "
                            f"version {SNAPSHOT_VERSION}")
    digest = doc.pop("digest", None)
    if digest != _digest(doc, arrays):
        raise SnapshotError(f"{where}: digest mismatch: the snapshot was altered or damaged")
    if doc.get("layout") != _layout_digest():
        raise SnapshotError(f"{where}: written for another feature/volatility layout (primitive "
                            "set, state record or RV windows changed)")
    try:
        return _state_of(doc, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{where}: inconsistent snapshot ({exc})") from None


def _state_of(doc: dict, arrays: dict[str, np.ndarray]) -> TablesState:
    expect = {"f_rows": (np.float64, (N_ROWS, N_STATE)), "v_ewma": (np.float64, (1,)),
              "v_params": (np.float64, (_K, 4)), "v_active": (np.bool_, (_K,)),
              "v_start": (np.float64, (_K, 4)), "v_s": (np.float64, (_K,)),
              "v_ln_s": (np.float64, (_K,)), "v_counts": (np.int64, (5, _K)),
              "v_last_close": (np.float64, (1,)), "bars_per_year": (np.float64, (1,)),
              "v_pending_rv": (np.float64, (len(RV_WINDOWS),))}
    for name, (dtype, shape) in expect.items():
        a = arrays[name]
        if a.dtype != dtype or a.shape != shape:
            raise ValueError(f"array {name} is {a.dtype}{a.shape}, expected "
                             f"{np.dtype(dtype)}{shape}")
    n = int(doc["n_bars"])
    tail = {f: arrays[f"f_{f}"] for f in _FEATURE_FIELDS}
    k = min(n, max(t.shape[0] for t in tail.values()))
    if any(t.ndim != 1 or t.shape[0] != k for t in tail.values()) or tail["ts"].dtype != np.int64:
        raise ValueError("the kept bars differ in length or type")
    if int(doc["features_n_bars"]) != n or int(doc["vol_n_bars"]) > n:
        raise ValueError("bar counts disagree")
    sha, gx = doc["ginn_sha256"], arrays["v_ginn_x"]
    if not isinstance(sha, str) or (sha and not _SHA256.fullmatch(sha)):
        raise ValueError(f"ginn_sha256 {sha!r} is neither empty nor 64 lowercase hex digits")
    if gx.dtype != np.float64 or gx.ndim != 2 or (not sha and gx.size):
        raise ValueError(f"GINN input rows are {gx.dtype}{gx.shape}, expected a float64 matrix "
                         "(empty without a model)")
    vs = doc["vol_settings"]
    bpy = float(arrays["bars_per_year"][0])
    settings = VolSettings(bpy, int(vs["window"]), int(vs["refit_every"]),
                           float.fromhex(vs["ewma_lambda"]), int(vs["min_bars"]))
    settings.check()
    vol = VolState(settings, int(doc["vol_n_bars"]), float(arrays["v_last_close"][0]),
                   arrays["v_returns"].astype(np.float64), arrays["v_ewma"], arrays["v_params"],
                   arrays["v_active"], arrays["v_start"], arrays["v_s"], arrays["v_ln_s"],
                   arrays["v_counts"], bool(doc["vol_pending"]), sha, gx,
                   arrays["v_pending_rv"], int(doc["vol_pending_ts"]))
    origin = Origin(int(doc["origin"]["index"]), int(doc["origin"]["ts_ns"]))
    return TablesState(origin, n, bpy, FeatureState(n, arrays["f_rows"], tail), vol)


# ---- the live step ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveColumn:
    """The tables' values at one new bar (views into ``LiveTables``' buffers: copy to keep)."""

    features: np.ndarray  # float64 [N_ROWS]
    variance: np.ndarray  # float64 [len(GARCH_VARIANTS)]
    rv: np.ndarray        # float64 [len(RV_WINDOWS)]
    hour: int
    weekday: int


class LiveTables:
    """The tables' state held in fixed buffers and advanced one bar at a time in place: the live
    executor's per-bar update (two numba calls, no allocation of tables). The values equal
    ``build_tables`` from the state's origin bit for bit, as ``advance_tables`` does; a refit
    bar leaves ``pending`` set and its fitted variance rows (and ginn) NaN until
    ``apply_refits``, so the fits (``due_refits`` -> ``market.volatility.run_refit``) can run in
    the background.

    ``ginn``: the GINN model for the ginn row. It is used only when its sha256 is the one the
    state was built with (``state.vol.ginn_sha256``, recorded in the bundle's snapshot); given
    none or another model, the ginn row is garch11's from the first bar stepped on, and
    ``state()`` records no model (``ginn_active`` says which). Loading the model and refusing a
    stale one is the caller's job (``market.ginn_vol.GinnModel.load(path, max_age_hours=...)``).
    """

    def __init__(self, state: TablesState, ginn: GinnModel | None = None) -> None:
        fs, vs = state.features, state.vol
        self.origin, self.bars_per_year = state.origin, state.bars_per_year
        self._kind, self._par = ROW_KIND, ROW_PAR
        self._rows = fs.rows.copy()
        k = fs.tail["ts"].shape[0]
        self._ts = np.zeros(TAIL + 1, dtype=np.int64)
        self._ts[:k] = fs.tail["ts"]
        self._px = np.zeros((5, TAIL + 1))
        for i, f in enumerate(_FEATURE_FIELDS[1:]):
            self._px[i, :k] = fs.tail[f]
        self._k, self.n_bars = k, state.n_bars
        self._settings = vs.settings
        active = vs.ginn_active(ginn)
        self._vol = vs.copy() if active or not vs.ginn_sha256 else vs.without_ginn()
        self._ginn = ginn if active else None
        self._gx, self._gk = (ginn_rows_buffer(ginn, vs) if self._ginn is not None
                              else (np.empty((0, 0)), 0))
        self._ts1 = np.zeros(1, dtype=np.int64)
        self._g1 = np.empty(1)
        self._pending_rv, self._pending_ts = vs.pending_rv.copy(), vs.pending_ts
        kr = vs.returns.shape[0]
        self._r = np.zeros(vs.settings.keep + 1)
        self._r[:kr] = vs.returns
        self._kr = kr
        self._last_close = vs.last_close
        self._feat = np.empty((N_ROWS, 1))
        self._var = np.full((len(GARCH_VARIANTS), 1), np.nan)
        self._rv = np.full((len(RV_WINDOWS), 1), np.nan)
        self.pending = vs.pending

    def step(self, ts: int, open_: float, high: float, low: float, close: float,
             volume: float) -> LiveColumn:
        """Append one bar (checked like a build's input) and return its column."""
        if self.pending:
            raise ValueError("a volatility refit is pending: apply_refits first")
        if self._k and ts <= self._ts[self._k - 1]:
            raise ValueError(f"bar ts {ts} is not after the last bar (ts {self._ts[self._k - 1]})")
        if not (math.isfinite(open_) and math.isfinite(close) and 0.0 < low <= min(open_, close)
                and max(open_, close) <= high < math.inf and 0.0 <= volume < math.inf):
            raise ValueError(f"bad bar at ts {ts}: open {open_}, high {high}, low {low}, "
                             f"close {close}, volume {volume} (need finite positive prices, "
                             "low <= min(open, close), high >= max(open, close), volume >= 0)")
        self._k = live_step_rows(self._ts, self._px, self._k, self.n_bars, ts, open_, high, low,
                                 close, volume, self._kind, self._par, self._rows, self._feat)
        cfg, v = self._settings, self._vol
        self._kr, refit = vol_live_step(
            self._r, self._kr, self.n_bars, self._last_close, close, cfg.window, cfg.refit_every,
            cfg.ewma_lambda, cfg.min_bars, RV_ARRAY, SCALE, CLAMP_RATIO, EGARCH_ROW, v.ewma, v.params,
            v.active, v.s, v.ln_s, v.counts[2], self._var, self._rv)
        self._last_close = close
        self.n_bars += 1
        if refit:
            self._var[: len(FITTED_VARIANTS), 0] = np.nan
            self._var[GINN_ROW, 0] = np.nan
            self._pending_rv, self._pending_ts = self._rv[:, 0].copy(), int(ts)
            self.pending = True
        elif self._ginn is not None:
            self._ts1[0] = ts
            self._gk = self._ginn.advance(self._r[: self._kr], self._kr - 1, self._var, self._rv,
                                          self._ts1, cfg.bars_per_year, self._gx, self._gk,
                                          self._g1)
            self._var[GINN_ROW, 0] = self._g1[0]
        else:
            self._var[GINN_ROW, 0] = self._var[GARCH11_ROW, 0]
        return LiveColumn(self._feat[:, 0], self._var[:, 0], self._rv[:, 0],
                          int((ts // _NS_HOUR) % 24), int((ts // _NS_DAY + 3) % 7))

    def due_refits(self) -> list[RefitJob]:
        """The pending bar's fit jobs (``market.volatility.RefitJob``; empty if none)."""
        return due_refits(self.state().vol)

    @property
    def ginn_active(self) -> bool:
        """Whether the ginn row is the model's (False: garch11's)."""
        return self._ginn is not None

    @property
    def ginn(self) -> GinnModel | None:
        """The GINN model the ginn row continues with (None: the garch11 row)."""
        return self._ginn

    def fits_for(self, variant: str) -> tuple[str, ...]:
        """The fits a decision reading ``variant``'s row needs on a refit bar before
        ``preview_refits`` gives that row (ginn with its model: all of them)."""
        return variant_fits(variant, self.ginn_active)

    def apply_refits(self, results: list[RefitResult]) -> np.ndarray:
        """Finish the pending bar with the fits' results; its variance column (float64 [5])."""
        col, vs = apply_refits(self.state().vol, results, ginn=self._ginn)
        self._vol = vs
        if self._ginn is not None:
            self._gx, self._gk = ginn_rows_buffer(self._ginn, vs)
        self._pending_rv, self._pending_ts = vs.pending_rv.copy(), vs.pending_ts
        self.pending = False
        self._var[:, 0] = col
        return col

    def preview_refits(self, results: list[RefitResult]) -> np.ndarray:
        """The pending bar's variance column with only ``results``' variants fitted (each
        row equals what ``apply_refits`` will give it: the fitted rows are independent) and the
        other fitted rows NaN; the tables stay pending. A decision that reads one variant's
        row needs only ``fits_for(variant)`` before it is taken: the ginn row is given once
        every fit it reads is (all with a model, garch11 without), NaN before."""
        if not self.pending:
            raise ValueError("no refit is pending")
        vs = self.state().vol
        got = {r.variant for r in results}
        fill = [RefitResult(v, vs.n_bars - 1, None, -1) for v in FITTED_VARIANTS
                if v not in got]
        col, _ = apply_refits(vs, [*results, *fill], ginn=self._ginn)
        for r in fill:
            col[FITTED_VARIANTS.index(r.variant)] = np.nan
        if fill:
            col[GINN_ROW] = np.nan if self._ginn is not None else col[GARCH11_ROW]
        return col

    @property
    def last_variance(self) -> np.ndarray:
        """The last bar's variance forecasts (rows GARCH_VARIANTS; fitted rows NaN while a
        refit is pending), read-only."""
        out = self._var[:, 0].view()
        out.flags.writeable = False
        return out

    @property
    def last_rv(self) -> np.ndarray:
        """The last bar's realised variances (rows RV_WINDOWS), read-only."""
        out = self._rv[:, 0].view()
        out.flags.writeable = False
        return out

    def state(self) -> TablesState:
        """A copy of where the tables stand (for ``save_state``)."""
        k, kr = self._k, self._kr
        tail = {"ts": self._ts[:k].copy()}
        tail.update({f: self._px[i, :k].copy() for i, f in enumerate(_FEATURE_FIELDS[1:])})
        vol = self._vol.copy(n_bars=self.n_bars, last_close=self._last_close,
                             returns=self._r[:kr].copy(), pending=self.pending,
                             ginn_x=self._gx[: self._gk].copy(), pending_rv=self._pending_rv.copy(),
                             pending_ts=self._pending_ts)
        return TablesState(self.origin, self.n_bars, self.bars_per_year,
                           FeatureState(self.n_bars, self._rows.copy(), tail), vol)
