"""GINN (GARCH-informed neural volatility, Xu et al. 2024): inputs, target, the numpy forward
pass and the weights file. numpy only: the live executor imports this module, torch stays in
``workers.ginn_model`` (training).

Inputs at bar t use closes <= t only: the last ``lags`` log returns, log realised variance per
RV window, log GARCH-family forecasts made at the close of t, and the regime one-hot (calm,
normal, storm) of the GARCH(1,1) forecast's annualised sigma. Variances enter as logs (their
scale spans orders of magnitude); a variance <= VAR_FLOOR (a frozen price stretch) is floored
there rather than made -inf.

Target: y[t] = r_{t+1}², the squared next log return (daily index data has no intraday RV), in
the units of ``VolTable.variance`` (per-bar variance of log returns).

The forward pass is torch.nn.LSTM's (one layer, gates i, f, g, o, biases b_ih + b_hh, zero
initial state) over the ``seq_len`` rows ending at t, a linear head and softplus (beta 1,
threshold 20), times ``y_scale``: the torch model's output to ~1e-12 in float64.

The weights file is a plain .npz (no pickle, written with fixed zip timestamps so identical
weights give identical bytes) plus a JSON sidecar ``PATH.json`` holding the format, the npz's
sha256, the spec and the training metadata. The npz embeds the same header, so neither file
can be edited alone without ``load_weights`` refusing it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from market.volatility import (
    GARCH_FAMILY,
    GARCH_VARIANTS,
    RV_WINDOWS,
    VolTable,
    annualised_sigma,
    regime,
)
from market.volatility_nb import log_returns

__all__ = [
    "GINN_FORMAT",
    "VAR_FLOOR",
    "GinnError",
    "GinnSpec",
    "GinnWeights",
    "feature_names",
    "forecast",
    "forecast_last",
    "ginn_inputs",
    "ginn_target",
    "load_weights",
    "save_weights",
    "sidecar_path",
]

GINN_FORMAT = "emp-ginn-v1"
VAR_FLOOR = 1e-12  # per-bar variance floor before the log (daily index variance is ~1e-4)
REGIME_SOURCE = "garch11"  # the forecast whose annualised sigma sets the regime flags
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus: x itself above beta * x > 20
_ARRAYS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out", "x_mean", "x_std")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's epoch: byte-identical files for equal data


class GinnError(EmpError):
    """A GINN spec, input or weights file is unusable; the message names the problem and file."""


@dataclass(frozen=True)
class GinnSpec:
    """The input layout and network size: part of the weights file."""

    lags: int = 5                                  # lagged log returns r_{t-lags+1..t}
    seq_len: int = 20                              # LSTM window ending at bar t
    hidden: int = 16
    rv_windows: tuple[int, ...] = RV_WINDOWS      # realised-variance windows (VolTable rows)
    variants: tuple[str, ...] = GARCH_FAMILY      # GARCH-family forecasts used as inputs
    # (never the ginn row itself: that row is this model's output)
    calm_below: float = 0.10                       # regime flags (annualised sigma)
    storm_above: float = 0.30

    def __post_init__(self) -> None:
        object.__setattr__(self, "rv_windows", tuple(int(w) for w in self.rv_windows))
        object.__setattr__(self, "variants", tuple(str(v) for v in self.variants))
        problems = []
        for name in ("lags", "seq_len", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        bad_w = [w for w in self.rv_windows if w not in RV_WINDOWS]
        if bad_w or len(set(self.rv_windows)) != len(self.rv_windows):
            problems.append(f"rv_windows must be distinct values of {RV_WINDOWS}, "
                            f"got {self.rv_windows}")
        bad_v = [v for v in self.variants if v not in GARCH_FAMILY]
        if bad_v or len(set(self.variants)) != len(self.variants):
            problems.append(f"variants must be distinct names of {GARCH_FAMILY}, "
                            f"got {self.variants}")
        if not (0.0 < self.calm_below < self.storm_above and math.isfinite(self.storm_above)):
            problems.append(f"need 0 < calm_below < storm_above, got {self.calm_below!r}, "
                            f"{self.storm_above!r}")
        if problems:
            raise GinnError("GINN spec: " + "; ".join(problems))

    @property
    def n_features(self) -> int:
        return self.lags + len(self.rv_windows) + len(self.variants) + 3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rv_windows"] = list(self.rv_windows)
        d["variants"] = list(self.variants)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "GINN spec") -> GinnSpec:
        """The spec from ``to_dict``'s output; GinnError naming ``where`` on anything else."""
        names = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or set(d) != names:
            raise GinnError(f"{where}: spec must have exactly the keys {sorted(names)}")
        try:
            return cls(**{**d, "rv_windows": tuple(d["rv_windows"]),
                          "variants": tuple(d["variants"])})
        except GinnError as exc:
            raise GinnError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise GinnError(f"{where}: bad spec: {exc}") from None


def feature_names(spec: GinnSpec) -> list[str]:
    """Column names of ``ginn_inputs``, in order."""
    return ([f"r_lag{k}" for k in range(spec.lags)]
            + [f"log_rv{w}" for w in spec.rv_windows]
            + [f"log_{v}" for v in spec.variants]
            + ["regime_calm", "regime_normal", "regime_storm"])


def _log_var(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(v), np.nan, np.log(np.maximum(v, VAR_FLOOR)))


def ginn_inputs(close: np.ndarray, vol: VolTable, spec: GinnSpec) -> np.ndarray:
    """float64 [n, n_features]: row t uses only closes <= t (lagged log returns, log RV per
    window, log GARCH-family variance forecasts made at t, regime one-hot); NaN where undefined.

    Column k < lags is r_{t-k}; NaN rows are left to the caller (training skips them, the
    forecast is NaN there).
    """
    close = np.ascontiguousarray(close, dtype=np.float64)
    if close.ndim != 1:
        raise GinnError(f"ginn_inputs: close must be 1-D, got shape {close.shape}")
    n = close.shape[0]
    if vol.variance.shape != (len(GARCH_VARIANTS), n) or vol.rv.shape != (len(RV_WINDOWS), n):
        raise GinnError(f"ginn_inputs: the volatility table covers {vol.variance.shape[-1]} bars, "
                        f"the close series {n}")
    if not (np.all(np.isfinite(close)) and np.all(close > 0.0)):
        bad = int(np.argmin(np.isfinite(close) & (close > 0.0)))
        raise GinnError(f"ginn_inputs: close must be finite and positive: bar {bad} is "
                        f"{close[bad]!r}")
    x = np.full((n, spec.n_features), np.nan)
    r = log_returns(close)
    for k in range(spec.lags):
        x[k:, k] = r[: n - k]
    c = spec.lags
    for w in spec.rv_windows:
        x[:, c] = _log_var(vol.rv[RV_WINDOWS.index(w)])
        c += 1
    for v in spec.variants:
        x[:, c] = _log_var(vol.variance[GARCH_VARIANTS.index(v)])
        c += 1
    g = vol.variance[GARCH_VARIANTS.index(REGIME_SOURCE)]
    code = regime(annualised_sigma(g, vol.bars_per_year), spec.calm_below, spec.storm_above)
    known = code >= 0
    for j in range(3):
        x[known, c + j] = (code[known] == j).astype(np.float64)
    return x


def ginn_target(close: np.ndarray) -> np.ndarray:
    """float64 [n]: y[t] = r_{t+1}^2 (squared next log return: daily index data has no
    intraday RV), NaN at the last bar. Same units as VolTable.variance (per-bar variance of
    log returns)."""
    close = np.ascontiguousarray(close, dtype=np.float64)
    if close.ndim != 1:
        raise GinnError(f"ginn_target: close must be 1-D, got shape {close.shape}")
    y = np.full(close.shape[0], np.nan)
    if close.shape[0] > 1:
        r = log_returns(close)
        y[:-1] = r[1:] ** 2
    return y


@dataclass(frozen=True, eq=False)
class GinnWeights:
    """A trained GINN: torch.nn.LSTM's parameter layout plus the input scaling and metadata."""

    spec: GinnSpec
    w_ih: np.ndarray    # [4 hidden, n_features], gate rows i, f, g, o
    w_hh: np.ndarray    # [4 hidden, hidden]
    b_ih: np.ndarray    # [4 hidden]
    b_hh: np.ndarray    # [4 hidden]
    w_out: np.ndarray   # [1, hidden] linear head
    b_out: np.ndarray   # [1]
    x_mean: np.ndarray  # [n_features] input standardisation (fit on training rows only)
    x_std: np.ndarray   # [n_features]
    y_scale: float      # output is softplus(head) * y_scale
    meta: dict = field(default_factory=dict)  # trained_at (UTC ISO), data_end, symbol, ...

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape each array must have for ``spec``."""
        h, f = self.spec.hidden, self.spec.n_features
        return {"w_ih": (4 * h, f), "w_hh": (4 * h, h), "b_ih": (4 * h,), "b_hh": (4 * h,),
                "w_out": (1, h), "b_out": (1,), "x_mean": (f,), "x_std": (f,)}

    def problems(self) -> list[str]:
        """What makes these weights unusable (empty when they are fine)."""
        out = []
        for name, shape in self.shapes().items():
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != shape:
                got = a.shape if isinstance(a, np.ndarray) else type(a).__name__
                out.append(f"{name} has shape {got}, the spec needs {shape}")
            elif a.dtype != np.float64 or not np.all(np.isfinite(a)):
                out.append(f"{name} must be finite float64")
        if not out and not np.all(self.x_std > 0.0):
            out.append("x_std must be > 0")
        if not (isinstance(self.y_scale, float) and math.isfinite(self.y_scale)
                and self.y_scale > 0.0):
            out.append(f"y_scale must be a finite float > 0, got {self.y_scale!r}")
        return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow warnings for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(z > SOFTPLUS_THRESHOLD, z, np.log1p(np.exp(np.minimum(z, SOFTPLUS_THRESHOLD))))


def _run(w: GinnWeights, proj: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """LSTM over the windows proj[s .. s+seq_len-1] for each s in ``starts`` (``proj``: input
    projections with both biases, [rows, 4 hidden]) -> forecasts [len(starts)]. Memory is one
    [windows, 4 hidden] block per step, not the stacked windows."""
    h_n = w.spec.hidden
    h = np.zeros((starts.shape[0], h_n))
    c = np.zeros((starts.shape[0], h_n))
    w_hh_t = w.w_hh.T
    for step in range(w.spec.seq_len):
        g = proj[starts + step] + h @ w_hh_t
        i = _sigmoid(g[:, :h_n])
        f = _sigmoid(g[:, h_n : 2 * h_n])
        gg = np.tanh(g[:, 2 * h_n : 3 * h_n])
        o = _sigmoid(g[:, 3 * h_n :])
        c = f * c + i * gg
        h = o * np.tanh(c)
    z = h @ w.w_out[0] + w.b_out[0]
    return _softplus(z) * w.y_scale


def _check_x(w: GinnWeights, x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != w.spec.n_features:
        raise GinnError(f"{what}: inputs must be [rows, {w.spec.n_features}], got shape "
                        f"{x.shape}")
    return x


def forecast(w: GinnWeights, x: np.ndarray) -> np.ndarray:
    """float64 [n]: variance forecast for bar t+1 made at t from rows t-seq_len+1..t (numpy
    LSTM, same math as torch); NaN where the window is incomplete or has NaN.

    All windows run at once: seq_len steps over a [n, hidden] state, each row's input
    projection computed once.
    """
    x = _check_x(w, x, "forecast")
    n, seq = x.shape[0], w.spec.seq_len
    out = np.full(n, np.nan)
    if n < seq:
        return out
    good_row = np.all(np.isfinite(x), axis=1)
    # windows ending at t = seq-1 .. n-1 are complete; all rows finite in each
    bad = np.concatenate([[0], np.cumsum(~good_row)])
    ends = np.arange(seq - 1, n)
    ok = ends[(bad[ends + 1] - bad[ends + 1 - seq]) == 0]
    if ok.size == 0:
        return out
    xs = np.where(good_row[:, None], (x - w.x_mean) / w.x_std, 0.0)
    proj = xs @ w.w_ih.T + (w.b_ih + w.b_hh)
    out[ok] = _run(w, proj, ok - seq + 1)
    return out


def forecast_last(w: GinnWeights, x_window: np.ndarray) -> float:
    """The forecast made at the last row of ``x_window`` (its last seq_len rows are used): the
    live path, O(seq_len). NaN when fewer rows are given or any of them has a NaN."""
    x = _check_x(w, x_window, "forecast_last")
    seq = w.spec.seq_len
    if x.shape[0] < seq:
        return math.nan
    x = x[-seq:]
    if not np.all(np.isfinite(x)):
        return math.nan
    proj = ((x - w.x_mean) / w.x_std) @ w.w_ih.T + (w.b_ih + w.b_hh)
    return float(_run(w, proj, np.zeros(1, dtype=np.int64))[0])


# ---- weights file --------------------------------------------------------------------------


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of weights file ``path``: PATH.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _header(w: GinnWeights) -> dict[str, Any]:
    return {"format": GINN_FORMAT, "spec": w.spec.to_dict(), "meta": w.meta}


def _npz_bytes(w: GinnWeights, header: str) -> bytes:
    """The .npz as bytes: one .npy member per array, fixed timestamps (no pickle anywhere)."""
    arrays = {name: np.ascontiguousarray(getattr(w, name), dtype=np.float64) for name in _ARRAYS}
    arrays["y_scale"] = np.array(w.y_scale, dtype=np.float64)
    arrays["header"] = np.array(header)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            z.writestr(info, member.getvalue())
    return buf.getvalue()


def save_weights(path: Path, w: GinnWeights) -> str:
    """Write ``path`` (.npz, allow_pickle=False) and its sidecar PATH.json {format, sha256 of
    the npz, spec, meta}, each atomically (npz first: a reader never finds a sidecar naming
    bytes that are not there yet, only briefly an older sidecar, which it refuses). Returns
    the npz's sha256."""
    path = Path(path)
    problems = w.problems()
    if problems:
        raise GinnError(f"{path}: not saved: " + "; ".join(problems))
    header = _header(w)
    try:
        text = json.dumps(header, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GinnError(f"{path}: not saved: meta must be plain finite JSON: {exc}") from None
    data = _npz_bytes(w, text)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    side = {**header, "sha256": digest}
    atomic_write_bytes(sidecar_path(path), json.dumps(side, sort_keys=True, indent=1).encode())
    return digest


def meta_time(meta: dict, key: str, where: object) -> datetime:
    """``meta[key]`` as a timezone-aware datetime (ISO text with a zone), or a GinnError."""
    raw = meta.get(key)
    try:
        t = datetime.fromisoformat(str(raw))
    except ValueError:
        raise GinnError(f"{where}: meta.{key} is not an ISO timestamp: {raw!r}") from None
    if t.tzinfo is None:
        raise GinnError(f"{where}: meta.{key} has no time zone: {raw!r}")
    return t


def load_weights(path: Path, *, max_age_hours: float | None = None,
                 now: datetime | None = None) -> GinnWeights:
    """The weights at ``path``, verified: sidecar present and of format GINN_FORMAT, the npz's
    sha256 equal to the sidecar's, the npz's embedded header equal to the sidecar's, every
    array of the spec's shape and finite, and (with ``max_age_hours``) trained no longer ago
    than that before ``now`` (default: the current UTC time). GinnError naming the file
    otherwise."""
    path = Path(path)
    side_path = sidecar_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GinnError(f"{path}: GINN weights file missing") from None
    except OSError as exc:
        raise GinnError(f"{path}: unreadable: {exc.strerror}") from None
    try:
        side = json.loads(side_path.read_bytes())
    except FileNotFoundError:
        raise GinnError(f"{side_path}: GINN sidecar missing") from None
    except (OSError, ValueError) as exc:
        raise GinnError(f"{side_path}: unreadable sidecar: {exc}") from None
    if not isinstance(side, dict) or side.get("format") != GINN_FORMAT:
        got = side.get("format") if isinstance(side, dict) else type(side).__name__
        raise GinnError(f"{side_path}: wrong format {got!r}, expected {GINN_FORMAT!r}")
    if set(side) != {"format", "sha256", "spec", "meta"} or not isinstance(side["meta"], dict):
        raise GinnError(f"{side_path}: sidecar needs exactly format, sha256, spec and meta")
    digest = hashlib.sha256(data).hexdigest()
    if side["sha256"] != digest:
        raise GinnError(f"{path}: sha256 {digest[:16]}... does not match the sidecar's "
                        f"{str(side['sha256'])[:16]}...: file changed or damaged")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: np.array(z[k]) for k in z.files}
    except Exception as exc:  # zipfile, numpy format and pickle refusals all mean "not ours"
        raise GinnError(f"{path}: not a GINN npz: {type(exc).__name__}: {exc}") from None
    expected = set(_ARRAYS) | {"y_scale", "header"}
    if set(arrays) != expected:
        raise GinnError(f"{path}: npz members {sorted(arrays)}, expected {sorted(expected)}")
    try:
        inner = json.loads(str(arrays["header"]))
    except ValueError:
        raise GinnError(f"{path}: embedded header is not JSON") from None
    if inner != {k: side[k] for k in ("format", "spec", "meta")}:
        raise GinnError(f"{side_path}: spec/meta differ from those embedded in {path.name}: "
                        "sidecar edited")
    spec = GinnSpec.from_dict(side["spec"], where=str(side_path))
    y_scale = arrays["y_scale"]
    w = GinnWeights(spec=spec, **{k: arrays[k] for k in _ARRAYS},
                    y_scale=float(y_scale) if y_scale.shape == () and y_scale.dtype.kind == "f"
                    else math.nan, meta=side["meta"])
    problems = w.problems()
    if problems:
        raise GinnError(f"{path}: " + "; ".join(problems))
    if max_age_hours is not None:
        t = meta_time(w.meta, "trained_at", side_path)
        ref = now if now is not None else datetime.now(UTC)
        if ref.tzinfo is None:
            raise GinnError("load_weights: now must carry a time zone")
        age = (ref - t).total_seconds() / 3600.0
        if age > max_age_hours:
            raise GinnError(f"{path}: model too old: trained {t.isoformat()}, {age:.1f} h "
                            f"before now > max_age_hours {max_age_hours:g}")
    return w
