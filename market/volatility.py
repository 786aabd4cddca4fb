"""Volatility features (Tier 0): rolling GARCH-family forecasts, EWMA and realised variance.

Every value at bar t is a forecast for bar t+1 made at the close of t from returns <= t, so a
genome can index the table without look-ahead. GARCH parameters are refitted every
``refit_every`` bars on the last ``window`` returns (arch, percent returns) and then run forward
with a numba recursion; a failed fit falls back to EWMA for its block and is counted.

The refit grid (bars window, window + refit_every, ...) and the EWMA seed count from the first
close given, the table's origin. ``VolState`` / ``advance_vol`` / ``extend_vol_table`` continue a
table from its state with the batch's exact arithmetic (see "continuation" below).

Rows: the GARCH family (``GARCH_FAMILY``: garch11, egarch, gjr, ewma), then ``ginn``: a GINN
model's forecast from the family rows, RV and returns where a model is given and the bar opens
after its training data, else the garch11 row (``market.ginn_vol``). Without a model the ginn row
is a copy of garch11, so a genome that selects it trades GARCH(1,1).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.atomic import atomic_write_bytes
from core.digest import prefix_sha256
from market.volatility_nb import (
    annualised_sigma,
    arch_backcast,
    blend_variance,
    clamp_to_ewma,
    egarch_variance,
    ewma_variance,
    gjr_variance,
    log_returns,
    recursion_end,
    regime,
    regime_code,
    rolling_rv,
    var95,
    vol_advance,
)

if TYPE_CHECKING:
    from market.ginn_vol import GinnModel

__all__ = [
    "FITTED_VARIANTS",
    "GARCH_FAMILY",
    "GARCH_VARIANTS",
    "GINN_ROW",
    "RV_WINDOWS",
    "VolTable",
    "annualised_sigma",
    "blend_variance",
    "build_vol_table",
    "fit_ladder",
    "fit_variant",
    "one_blas_thread",
    "persistence",
    "regime",
    "regime_code",
    "var95",
    "variant_fits",
    "variant_variance",
]

GARCH_FAMILY = ("garch11", "egarch", "gjr", "ewma")  # the rows GINN reads as inputs
GARCH_VARIANTS = (*GARCH_FAMILY, "ginn")  # the variance rows a genome may select
GINN_ROW = GARCH_VARIANTS.index("ginn")
GARCH11_ROW = GARCH_VARIANTS.index("garch11")  # the ginn row's fallback
RV_WINDOWS = (5, 10, 20, 60)  # bars; realised variance is kept per bar (sum of r² / window)

FITTED_VARIANTS = ("garch11", "egarch", "gjr")
_ARCH_SPEC: dict[str, dict[str, int]] = {
    "garch11": {"p": 1, "o": 0, "q": 1},
    "egarch": {"p": 1, "o": 1, "q": 1},
    "gjr": {"p": 1, "o": 1, "q": 1},
}
SCALE = 100.0  # fit on percent returns: arch's optimiser is tuned for unit-scale data
MAXITER = 500  # warm starts converge in ~10 iterations; hard windows need more
FTOL = None  # SLSQP tolerance: scipy's default; 1e-8 and 1e-9 made EGARCH hit the iteration limit
# Persistence (alpha + gamma/2 + beta; EGARCH: beta) is constrained to <= PERSISTENCE_CAP while
# fitting, and a fit is accepted only if it is < 1. Without the cap, windows whose likelihood
# peaks at an integrated model land on alpha + beta = 1 +- 1e-12, and a last-bit difference
# decides whether the fit passes; with it they land on the cap, a margin of 1e-3 from the test.
PERSISTENCE_CAP = 0.999
BOUNDARY_TOL = 1e-6  # see _project
EGARCH_BOUND = 1.0  # |alpha|, |gamma| <= 1: z = 3 then moves ln sigma² by at most 3 + 3
FIXED_START_PERSISTENCE = 0.95  # the ladder's last start: a typical, well-inside model
CLAMP_RATIO = 10.0  # fitted forecasts are kept within [ewma / C, ewma * C] at the same bar
# 2: fits under one BLAS thread, the start ladder, the persistence cap and FTOL (tables built
# by version 1 depended on the process's BLAS thread count and must not be reused)
# 3: a NaN fitted forecast (EGARCH log-variance run to -inf) is clamped to the EWMA value
# 4: the fifth row, ginn (the model's sha256 and first used bar are part of the key)
CACHE_VERSION = 4  # bump when the table's definition changes, so old caches miss


@dataclass(frozen=True)
class VolTable:
    """Per-bar variance forecasts (rows in GARCH_VARIANTS order) and realised variances."""

    variance: np.ndarray  # float64 [5, n]: forecast for bar t+1 made at the close of t
    rv: np.ndarray  # float64 [len(RV_WINDOWS), n]: mean r² over the last w returns ending at t
    bars_per_year: float
    fits: dict[str, int]  # successful fits per fitted variant
    failures: dict[str, int]  # failed fits per fitted variant (block fell back to EWMA)
    clamped: dict[str, int] = field(default_factory=dict)  # bars clamped to the EWMA band
    # successful fits that needed a later start of the ladder than the first one tried
    retried: dict[str, int] = field(default_factory=dict)
    capped: dict[str, int] = field(default_factory=dict)  # fits on the persistence cap
    ginn_sha256: str = ""  # the GINN model of the ginn row ("": none, the row is garch11's)

    def fit_report(self) -> dict[str, dict[str, float]]:
        """Per fitted variant: refits, failures, failure rate, retried and capped fits."""
        out = {}
        for v in FITTED_VARIANTS:
            n = self.fits[v] + self.failures[v]
            out[v] = {"refits": n, "failures": self.failures[v],
                      "failure_rate": self.failures[v] / n if n else 0.0,
                      "retried": self.retried.get(v, 0), "capped": self.capped.get(v, 0)}
        return out

    def digest(self, n_bars: int | None = None) -> str:
        """sha256 of the variance and RV arrays over the first ``n_bars`` bars (all by default).

        The table is causal, so a table built on a longer history has the same digest over the
        shorter one's bars: the gates compare the full history's table with the run's.
        """
        return prefix_sha256(self.variance, self.rv, n_cols=n_bars,
                             tag=f"vol-v1 bars_per_year={self.bars_per_year!r}")


def variant_fits(variant: str, ginn_active: bool) -> tuple[str, ...]:
    """The fitted variants whose refit a row of ``variant`` waits for on a refit bar: itself
    (garch11, egarch, gjr), none (ewma), all of them (ginn with its model: its inputs are the
    whole family) or garch11 (ginn falling back)."""
    if variant not in GARCH_VARIANTS:
        raise ValueError(f"unknown volatility variant {variant!r}; known: {GARCH_VARIANTS}")
    if variant == "ginn":
        return FITTED_VARIANTS if ginn_active else ("garch11",)
    return (variant,) if variant in FITTED_VARIANTS else ()


def persistence(variant: str, p: np.ndarray) -> float:
    """alpha + gamma/2 + beta for GARCH(1,1)/GJR, beta for EGARCH."""
    if variant == "egarch":
        return float(p[3])
    return float(p[1] + 0.5 * p[2] + p[3]) if variant == "gjr" else float(p[1] + p[2])


def _project(variant: str, p: np.ndarray) -> np.ndarray:
    """Move a fit that violates alpha >= 0, beta >= 0 or alpha + gamma >= 0 by at most
    BOUNDARY_TOL onto the boundary. SLSQP honours inequality constraints only to about its
    tolerance, so a model whose optimum has alpha + gamma = 0 comes back as 0 or -6e-8 by
    accident of its path (NASDAQ, 2006); without this, that accident decided whether the
    window fell back to EWMA."""
    q = np.array(p, dtype=np.float64)
    if variant == "egarch" or not np.all(np.isfinite(q)):
        return q
    for i in (1, 3 if variant == "gjr" else 2):  # alpha, beta
        if -BOUNDARY_TOL < q[i] < 0.0:
            q[i] = 0.0
    if variant == "gjr" and -BOUNDARY_TOL < q[1] + q[2] < 0.0:
        q[2] = -q[1]
    return q


def _stationary(variant: str, p: np.ndarray) -> bool:
    """Parameter checks that a fitted model must pass before its forecasts are used:
    alpha, beta >= 0, alpha + gamma >= 0, omega > 0 and persistence < 1 (EGARCH: |beta| < 1)."""
    if not np.all(np.isfinite(p)):
        return False
    if variant == "egarch":
        return abs(p[3]) < 1.0
    omega, alpha = p[0], p[1]
    gamma, beta = (p[2], p[3]) if variant == "gjr" else (0.0, p[2])
    return bool(
        omega > 0.0
        and alpha >= 0.0
        and beta >= 0.0
        and alpha + gamma >= 0.0
        and alpha + beta + 0.5 * gamma < 1.0
    )


_BLAS = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every loaded BLAS/OpenMP pool at one thread.

    scipy's SLSQP (inside arch's fit) calls BLAS, and OpenBLAS's results change in the last bits
    with its thread count: a Ray job's driver (OMP_NUM_THREADS=1) and a plain process (one
    thread per core) then fitted different parameters, which warm starts carried into different
    tables. One thread everywhere gives the same bits on any core count.
    """
    global _BLAS
    import scipy.optimize  # noqa: F401  (loads scipy's own OpenBLAS before the pools are read)
    from threadpoolctl import ThreadpoolController

    if _BLAS is None:
        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1):
        yield


def _model(variant: str, e: np.ndarray):
    """arch's zero-mean model with a Gaussian likelihood and the capped volatility process."""
    from arch.univariate import EGARCH, GARCH, Normal, ZeroMean

    base = EGARCH if variant == "egarch" else GARCH

    class Capped(base):  # the last constraint row is the persistence one, -sum(...) >= -1
        def constraints(self):
            a, b = super().constraints()
            b = np.array(b, dtype=np.float64)
            b[-1] = -PERSISTENCE_CAP
            return a, b

        def bounds(self, resids):
            out = super().bounds(resids)
            if variant == "egarch":  # arch leaves alpha and gamma unbounded
                out[1:3] = [(-EGARCH_BOUND, EGARCH_BOUND)] * 2
            return out

    return ZeroMean(e, volatility=Capped(**_ARCH_SPEC[variant]), distribution=Normal(),
                    rescale=False)


def fixed_start(variant: str, e: np.ndarray) -> np.ndarray:
    """The ladder's last start: a typical model (persistence 0.95) at the window's variance."""
    k = FIXED_START_PERSISTENCE
    v = max(float(np.mean(e * e)), 1e-12)  # all-zero windows fail later, without a log(0)
    if variant == "garch11":
        return np.array([(1 - k) * v, 0.08, k - 0.08])
    if variant == "gjr":
        return np.array([(1 - k) * v, 0.03, 0.10, k - 0.08])
    return np.array([(1 - k) * np.log(v), 0.10, -0.10, k])


def _fit_once(variant: str, e: np.ndarray, start: np.ndarray | None) -> np.ndarray | None:
    """One arch fit; None on an exception, no convergence (the iteration limit included), a
    non-stationary fit, or one that leans on arch's variance bounds."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = _model(variant, e).fit(
                disp="off",
                show_warning=False,
                starting_values=start,
                tol=FTOL,
                options={"maxiter": MAXITER},
            )
    except Exception:  # arch raises many types on degenerate data; all mean "no fit"
        return None
    params = _project(variant, np.asarray(res.params, dtype=np.float64))
    if res.convergence_flag != 0 or not _stationary(variant, params):
        return None
    # arch clips variances to loose bounds while fitting; a fit that leans on them (a runaway
    # optimum) is not the model our unbounded recursion runs forward, so reject it.
    ours = variant_variance(variant, params, e, arch_backcast(e))[:-1]
    theirs = np.asarray(res.conditional_volatility, dtype=np.float64) ** 2
    if not (np.all(np.isfinite(ours)) and np.allclose(ours, theirs, rtol=1e-6, atol=0.0)):
        return None
    return params


_FIT_MEMO: dict[bytes, tuple[np.ndarray | None, int]] = {}
_FIT_MEMO_MAX = 200_000


def fit_ladder(
    variant: str, e: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray | None, int]:
    """Fit one variant on scaled residuals ``e``: (params or None, index of the start used).

    Starts, in order, until one gives a usable fit: ``start`` (a warm start, when given), arch's
    own starting values, then ``fixed_start``. A stale warm start or an unlucky optimiser path
    (SLSQP's "inequality constraints incompatible", the iteration limit, a runaway to arch's
    variance bounds) is thus not counted as a failure of the model on this window; only a window
    where all three fail falls back to EWMA.

    Results are memoised in-process by their exact inputs (variant, window bytes, start bytes).
    The fits run under one BLAS thread and are deterministic, so a hit returns what a refit
    would: the look-ahead audit, which rebuilds tables on truncated histories whose fit windows
    repeat the full history's, then refits only windows whose data differ.
    """
    h = hashlib.sha256(variant.encode())
    h.update(np.ascontiguousarray(e, dtype="<f8").tobytes())
    h.update(b"cold" if start is None else np.asarray(start, dtype="<f8").tobytes())
    key = h.digest()
    if key in _FIT_MEMO:
        hit, used = _FIT_MEMO[key]
        return (None if hit is None else hit.copy()), used
    starts = [] if start is None else [np.asarray(start, dtype=np.float64)]
    starts += [None, fixed_start(variant, e)]
    params, used = None, -1
    with one_blas_thread():
        for i, s in enumerate(starts):
            params = _fit_once(variant, e, s)
            if params is not None:
                used = i
                break
    if len(_FIT_MEMO) >= _FIT_MEMO_MAX:
        _FIT_MEMO.clear()
    _FIT_MEMO[key] = (None if params is None else params.copy(), used)
    return params, used


def fit_variant(variant: str, e: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """Fit one variant on scaled residuals ``e``; None when every start of the ladder fails."""
    return fit_ladder(variant, e, start)[0]


def variant_variance(
    variant: str, params: np.ndarray, e: np.ndarray, backcast: float
) -> np.ndarray:
    """Conditional variances of ``e`` plus the one-step forecast (n + 1 values, e's units).

    ``backcast`` is arch's start value computed on the fit window (raw, not logged).
    """
    if variant == "garch11":
        return gjr_variance(params[0], params[1], 0.0, params[2], e, backcast)
    if variant == "gjr":
        return gjr_variance(params[0], params[1], params[2], params[3], e, backcast)
    if variant == "egarch":
        return egarch_variance(params[0], params[1], params[2], params[3], e, np.log(backcast))
    raise ValueError(f"not a fitted variant: {variant}")


def _cache_key(close: np.ndarray, settings: dict[str, object]) -> str:
    """sha256 of the closes and everything the table depends on (``settings`` carries the GINN
    model's sha256 and the first bar it is used at: the only way the bar times enter)."""
    import arch

    h = hashlib.sha256(close.astype("<f8").tobytes())
    meta = {
        **settings,
        "arch": arch.__version__,
        "cache_version": CACHE_VERSION,
        "variants": GARCH_VARIANTS,
        "rv_windows": RV_WINDOWS,
        "scale": SCALE,
        "maxiter": MAXITER,
        "ftol": FTOL,
        "persistence_cap": PERSISTENCE_CAP,
        "fixed_start": FIXED_START_PERSISTENCE,
        "clamp": CLAMP_RATIO,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def _digest(variance: np.ndarray, rv: np.ndarray, counts: np.ndarray, bpy: float) -> str:
    """Checksum of the payload, so a damaged or edited cache file is detected and rebuilt."""
    h = hashlib.sha256()
    for a in (variance, rv, counts, np.array([bpy])):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _clamp(v: np.ndarray, ewma: np.ndarray) -> tuple[np.ndarray, int]:
    """Keep a fitted forecast within CLAMP_RATIO of the EWMA forecast at the same bar.

    A NaN forecast (an EGARCH whose log-variance ran to -inf) takes the EWMA value.
    A stationary fit can still run away out of sample: an EGARCH with negative size and
    leverage terms drives the variance towards zero in a calm rally, and the next shock then
    multiplies it by e^30 (S&P 500, Feb 2018). The EWMA reference is causal; GARCH(1,1) and GJR
    stay within 0.2x-5.4x of it on the S&P 500, so the band only bites on such runaways.
    """
    ok = ewma > 0.0
    band = np.where(np.isnan(v), ewma, np.clip(v, ewma / CLAMP_RATIO, ewma * CLAMP_RATIO))
    out = np.where(ok, band, v)
    return out, int(np.count_nonzero((out != v) & ~(np.isnan(out) & np.isnan(v))))


_COUNTS = ("fits", "failures", "clamped", "retried", "capped")


def _load_cache(path: Path, key: str, n: int) -> VolTable | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            variance = np.array(z["variance"], dtype=np.float64)
            rv = np.array(z["rv"], dtype=np.float64)
            counts = np.array(z["counts"], dtype=np.int64)
            bpy = float(z["bars_per_year"])
            digest = str(z["digest"])
    except Exception:  # missing, truncated or not an npz: rebuild
        return None
    k = len(FITTED_VARIANTS)
    if (
        variance.shape != (len(GARCH_VARIANTS), n)
        or rv.shape != (len(RV_WINDOWS), n)
        or counts.shape != (len(_COUNTS), k)
        or digest != _digest(variance, rv, counts, bpy)
    ):
        return None
    per = {name: dict(zip(FITTED_VARIANTS, map(int, row), strict=True))
           for name, row in zip(_COUNTS, counts, strict=True)}
    return VolTable(variance, rv, bpy, **per)


def _save_cache(path: Path, key: str, table: VolTable) -> None:
    counts = np.array(
        [[getattr(table, name)[v] for v in FITTED_VARIANTS] for name in _COUNTS], dtype=np.int64
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        key=np.array(key),
        variance=table.variance,
        rv=table.rv,
        counts=counts,
        bars_per_year=np.array(table.bars_per_year),
        digest=np.array(_digest(table.variance, table.rv, counts, table.bars_per_year)),
    )
    atomic_write_bytes(path, buf.getvalue())


def _check_ginn(ginn: GinnModel | None, ts: np.ndarray | None, n: int, keep: int
                ) -> np.ndarray | None:
    """``ts`` as int64 [n] when a GINN model needs it (GinnError naming the problem)."""
    if ginn is None:
        return None if ts is None else np.ascontiguousarray(ts, dtype=np.int64)
    from market.ginn import GinnError

    ginn.check_keep(keep)
    if ts is None:
        raise GinnError(f"GINN model {ginn.sha256[:12]}: the bars' times are needed to tell the "
                        "bars after its training data end (data_end), none were given")
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    if ts.shape != (n,):
        raise GinnError(f"GINN row: {ts.shape} bar times for {n} closes")
    return ts


def _ginn_columns(ginn: GinnModel | None, r: np.ndarray, t0: int, variance: np.ndarray,
                  rv: np.ndarray, ts: np.ndarray | None, bpy: float, xbuf: np.ndarray | None,
                  k: int) -> int:
    """Fill ``variance[GINN_ROW]`` (its family rows final; column j's return is r[t0 + j]):
    the model's forecasts (``GinnModel.advance``, ``xbuf`` holding the last ``k`` input rows),
    or the garch11 row without a model. Returns the new fill count."""
    if ginn is None or variance.shape[1] == 0:
        variance[GINN_ROW] = variance[GARCH11_ROW]
        return k
    assert ts is not None and xbuf is not None
    out = np.empty(variance.shape[1])
    k = ginn.advance(r, t0, np.ascontiguousarray(variance), np.ascontiguousarray(rv), ts, bpy,
                     xbuf, k, out)
    variance[GINN_ROW] = out
    return k


def build_vol_table(
    close: np.ndarray,
    bars_per_year: float,
    *,
    window: int = 500,
    refit_every: int = 21,
    ewma_lambda: float = 0.94,
    min_bars: int = 20,
    cache_dir: Path | None = None,
    progress: Callable[[str | None, int, int], None] | None = None,
    ts: np.ndarray | None = None,
    ginn: GinnModel | None = None,
) -> VolTable:
    """Causal variance table for one close series (see the module docstring).

    ``ginn``: the model of the ginn row (None: the row is garch11's); it needs ``ts``, the bars'
    open times (int64 UTC ns), to tell the bars after its training data.

    ``progress(variant, i, n)`` is called before fitting the i-th of n variants, and with
    ``(None, n, n)`` when all are fitted (not on a cache hit): the fits take tens of seconds.

    Refit points are t = window, window + refit_every, ...; the fit at t uses returns
    r[t-window+1 .. t] and serves bars t .. t+refit_every-1. Bars before the first fit, and
    blocks whose fit failed, carry the EWMA forecast (NaN before ``min_bars``).
    """
    close = np.ascontiguousarray(close, dtype=np.float64)
    if close.ndim != 1:
        raise ValueError("close must be 1-D")
    if not (np.all(np.isfinite(close)) and np.all(close > 0.0)):
        raise ValueError("close must be finite and positive")
    if not (bars_per_year > 0.0 and 0.0 < ewma_lambda < 1.0):
        raise ValueError("bars_per_year must be > 0 and ewma_lambda in (0, 1)")
    if min_bars < 1 or window < max(10, min_bars) or refit_every < 1:
        raise ValueError("need min_bars >= 1, window >= max(10, min_bars), refit_every >= 1")

    n = close.shape[0]
    ts = _check_ginn(ginn, ts, n, max(window, max(RV_WINDOWS)))
    settings = {
        "bars_per_year": float(bars_per_year),
        "window": window,
        "refit_every": refit_every,
        "ewma_lambda": ewma_lambda,
        "min_bars": min_bars,
        "ginn": None if ginn is None else ginn.sha256,
        "ginn_from": None if ginn is None else int(np.count_nonzero(ts <= ginn.data_end_ns)),
    }
    path, key = None, ""
    if cache_dir is not None:
        key = _cache_key(close, settings)
        path = Path(cache_dir) / f"vol-{key}.npz"
        cached = _load_cache(path, key, n)
        if cached is not None:
            return replace(cached, ginn_sha256=settings["ginn"] or "")

    r = log_returns(close)
    ewma = ewma_variance(r, ewma_lambda, min_bars)
    variance = np.tile(ewma, (len(GARCH_VARIANTS), 1))
    rv = np.vstack([rolling_rv(r, w) for w in RV_WINDOWS]) if n else np.empty((len(RV_WINDOWS), 0))
    fits = dict.fromkeys(FITTED_VARIANTS, 0)
    failures = dict.fromkeys(FITTED_VARIANTS, 0)
    clamped = dict.fromkeys(FITTED_VARIANTS, 0)
    retried = dict.fromkeys(FITTED_VARIANTS, 0)
    capped = dict.fromkeys(FITTED_VARIANTS, 0)
    scaled = r * SCALE
    for row, variant in enumerate(FITTED_VARIANTS):
        if progress is not None:
            progress(variant, row, len(FITTED_VARIANTS))
        start: np.ndarray | None = None
        for t0 in range(window, n, refit_every):
            t1 = min(t0 + refit_every, n)
            seg = scaled[t0 - window + 1 : t1]  # fit window, then the block's returns
            params, used = fit_ladder(variant, seg[:window], start)
            if params is None:
                failures[variant] += 1
                continue
            fits[variant] += 1
            retried[variant] += used > 0
            capped[variant] += persistence(variant, params) > PERSISTENCE_CAP - 1e-6
            start = params
            s = variant_variance(variant, params, seg, arch_backcast(seg[:window]))
            v, k = _clamp(s[window : window + t1 - t0] / SCALE**2, ewma[t0:t1])
            variance[row, t0:t1] = v
            clamped[variant] += k

    if progress is not None:
        progress(None, len(FITTED_VARIANTS), len(FITTED_VARIANTS))
    _ginn_columns(ginn, r, 0, variance, rv, ts, float(bars_per_year),
                  None if ginn is None else ginn.empty_rows(), 0)
    table = VolTable(variance, rv, float(bars_per_year), fits, failures, clamped, retried,
                     capped, "" if ginn is None else ginn.sha256)
    if path is not None:
        _save_cache(path, key, table)
    return table


# ---- continuation ------------------------------------------------------------------------------
#
# A VolTable can be extended by new bars without recomputing the past. The refit grid is
# origin + window + j * refit_every (the origin is the first bar of the close series the table was
# built from) and every fit warm-starts from the previous successful one, so the state carries the
# grid phase (``n_bars``), the warm starts, the current block's parameters and recursion values,
# the EWMA value, the returns the next fit and the RV windows read, and the fit counts. Advancing
# runs ``volatility_nb.vol_advance``; at a refit bar it stops, and the refit is a separate,
# deterministic step (``due_refits`` -> ``run_refit`` -> ``apply_refits``) that a live executor
# can run in the background. The result equals ``build_vol_table`` over all the bars, bit for bit.
#
# The ginn row: the state records the sha256 of the GINN model it was built with and the last
# seq_len input rows (``ginn_x``); a pending refit bar also keeps its RV column and open time,
# which its ginn value needs once the fits are applied. The weights are not part of the state:
# each call that advances it takes the model (``ginn=``). Given no model, or one of another
# sha256, the ginn row falls back to garch11 from that bar on and the state forgets the model
# (sha256 "", no rows): continuing it later with the model would not equal a build with it.

VOL_STATE_VERSION = 2
EGARCH_ROW = FITTED_VARIANTS.index("egarch")  # the fitted row run by the EGARCH step
RV_ARRAY = np.array(RV_WINDOWS, dtype=np.int64)
_N_PARAMS = {"garch11": 3, "egarch": 4, "gjr": 4}


@dataclass(frozen=True)
class VolSettings:
    bars_per_year: float
    window: int = 500
    refit_every: int = 21
    ewma_lambda: float = 0.94
    min_bars: int = 20

    def check(self) -> None:
        """ValueError naming the bad setting (the same rules as ``build_vol_table``)."""
        if not (self.bars_per_year > 0.0 and 0.0 < self.ewma_lambda < 1.0):
            raise ValueError("bars_per_year must be > 0 and ewma_lambda in (0, 1)")
        if self.min_bars < 1 or self.window < max(10, self.min_bars) or self.refit_every < 1:
            raise ValueError("need min_bars >= 1, window >= max(10, min_bars), refit_every >= 1")

    @property
    def keep(self) -> int:
        """Returns a continuation must keep: the fit window and the longest RV window."""
        return max(self.window, max(RV_WINDOWS))


@dataclass(frozen=True)
class VolState:
    """The volatility engine after ``n_bars`` bars from its origin (arrays are never shared
    between two states: every step returns a new one)."""

    settings: VolSettings
    n_bars: int
    last_close: float      # NaN before the first bar
    returns: np.ndarray    # float64: the last min(n_bars, keep) log returns (r at bar 0 is NaN)
    ewma: np.ndarray       # float64 [1]: the EWMA forecast (the running sum while seeding)
    params: np.ndarray     # float64 [3, 4]: current block's omega, alpha, gamma, beta per variant
    active: np.ndarray     # bool [3]: the current block's fit succeeded
    start: np.ndarray      # float64 [3, 4]: warm start per variant (NaN: none yet)
    s: np.ndarray          # float64 [3]: recursion variance, scaled units
    ln_s: np.ndarray       # float64 [3]: EGARCH's ln variance (NaN for the others)
    counts: np.ndarray     # int64 [5, 3]: fits, failures, clamped, retried, capped per variant
    pending: bool = False  # the last bar is a refit bar whose fits are not applied yet
    ginn_sha256: str = ""  # the GINN model the ginn row continues with ("": garch11's row)
    # float64 [min(bars, seq_len), n_features]: the last GINN input rows, oldest first (the
    # pending bar's excluded); [0, 0] without a model
    ginn_x: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    # the pending refit bar's RV column (float64 [len(RV_WINDOWS)]) and open time (UTC ns):
    # its ginn value is computed when the fits are applied. NaN / 0 otherwise.
    pending_rv: np.ndarray = field(default_factory=lambda: np.full(len(RV_WINDOWS), np.nan))
    pending_ts: int = 0

    def copy(self, **changes: object) -> VolState:
        arrays = {k: getattr(self, k).copy() for k in
                  ("returns", "ewma", "params", "active", "start", "s", "ln_s", "counts",
                   "ginn_x", "pending_rv")}
        return replace(self, **{**arrays, **changes})

    def ginn_active(self, ginn: GinnModel | None) -> bool:
        """Whether ``ginn`` is the model this state's ginn row continues with."""
        return bool(self.ginn_sha256) and ginn is not None and ginn.sha256 == self.ginn_sha256

    def without_ginn(self) -> VolState:
        """This state with the ginn row falling back to garch11 from here on."""
        return self.copy(ginn_sha256="", ginn_x=np.empty((0, 0)))

    def count_dicts(self) -> dict[str, dict[str, int]]:
        return {name: dict(zip(FITTED_VARIANTS, map(int, row), strict=True))
                for name, row in zip(_COUNTS, self.counts, strict=True)}


def initial_vol_state(settings: VolSettings, ginn: GinnModel | None = None) -> VolState:
    """The state at the origin: no bar consumed; its ginn row uses ``ginn`` (None: garch11)."""
    settings.check()
    if ginn is not None:
        ginn.check_keep(settings.keep)
    k = len(FITTED_VARIANTS)
    return VolState(settings, 0, float("nan"), np.empty(0), np.zeros(1), np.full((k, 4), np.nan),
                    np.zeros(k, dtype=bool), np.full((k, 4), np.nan), np.full(k, np.nan),
                    np.full(k, np.nan), np.zeros((len(_COUNTS), k), dtype=np.int64),
                    ginn_sha256="" if ginn is None else ginn.sha256,
                    ginn_x=np.empty((0, 0 if ginn is None else ginn.n_features)))


@dataclass(frozen=True)
class RefitJob:
    """One fit due at a refit bar: plain arrays, so it can run in another thread or process."""

    variant: str
    bar: int               # the refit bar, counted from the origin
    e: np.ndarray          # scaled returns of the fit window, ending at ``bar``
    start: np.ndarray | None  # warm start (the previous successful fit)


@dataclass(frozen=True)
class RefitResult:
    variant: str
    bar: int
    params: np.ndarray | None  # None: every start failed, the block falls back to EWMA
    used: int                  # index of the ladder start that worked (-1: none)


def due_refits(state: VolState) -> list[RefitJob]:
    """The fits the state waits for (empty unless ``state.pending``)."""
    if not state.pending:
        return []
    w = state.settings.window
    e = np.ascontiguousarray(state.returns[-w:] * SCALE)
    return [RefitJob(v, state.n_bars - 1, e, None if np.isnan(state.start[i, 0])
                     else state.start[i, : _N_PARAMS[v]].copy())
            for i, v in enumerate(FITTED_VARIANTS)]


def run_refit(job: RefitJob) -> RefitResult:
    """Fit one job (``fit_ladder``: deterministic, memoised); pure, safe to run anywhere."""
    params, used = fit_ladder(job.variant, job.e, job.start)
    return RefitResult(job.variant, job.bar, params, used)


def _normalised(variant: str, p: np.ndarray) -> np.ndarray:
    """(omega, alpha, gamma, beta); GARCH(1,1) has gamma = 0.0 as ``variant_variance`` runs it."""
    return np.array([p[0], p[1], 0.0, p[2]]) if variant == "garch11" else np.array(p[:4])


def apply_refits(state: VolState, results: list[RefitResult], *, ginn: GinnModel | None = None
                 ) -> tuple[np.ndarray, VolState]:
    """Finish the pending refit bar with the fits' results: its variance column (float64 [5])
    and the state after it. Each fitted variant needs exactly one result for this bar. The
    ginn value uses ``ginn`` when it is the state's model (see "continuation")."""
    if not state.pending:
        raise ValueError("no refit is pending")
    bar = state.n_bars - 1
    by = {r.variant: r for r in results}
    if sorted(by) != sorted(FITTED_VARIANTS) or any(r.bar != bar for r in results):
        raise ValueError(f"apply_refits needs one result per variant {FITTED_VARIANTS} for "
                         f"bar {bar}, got {[(r.variant, r.bar) for r in results]}")
    st = state.copy(pending=False)
    w = st.settings.window
    e = np.ascontiguousarray(st.returns[-w:] * SCALE)
    ew = float(st.ewma[0])
    col = np.full(len(GARCH_VARIANTS), ew)
    fits, failures, clamped, retried, capped = range(len(_COUNTS))
    for i, variant in enumerate(FITTED_VARIANTS):
        res = by[variant]
        if res.params is None:
            st.counts[failures, i] += 1
            st.active[i] = False
            continue
        p = np.asarray(res.params, dtype=np.float64)
        st.counts[fits, i] += 1
        st.counts[retried, i] += res.used > 0
        st.counts[capped, i] += persistence(variant, p) > PERSISTENCE_CAP - 1e-6
        st.start[i] = np.append(p, [np.nan] * (4 - p.shape[0]))
        st.params[i] = _normalised(variant, p)
        st.active[i] = True
        bc = arch_backcast(e)
        code = 1 if variant == "egarch" else 0
        s, ln_s = recursion_end(code, st.params[i], e, np.log(bc) if code else bc)
        st.s[i], st.ln_s[i] = s, ln_s
        raw = s / SCALE**2
        col[i] = clamp_to_ewma(raw, ew, CLAMP_RATIO)
        st.counts[clamped, i] += col[i] != raw
    if not st.ginn_active(ginn):
        col[GINN_ROW] = col[GARCH11_ROW]
        return col, (st.without_ginn() if st.ginn_sha256 else st)
    assert ginn is not None
    xbuf, k = ginn_rows_buffer(ginn, st)
    var = np.ascontiguousarray(col[:, None])
    k = _ginn_columns(ginn, st.returns, st.returns.shape[0] - 1, var,
                      np.ascontiguousarray(st.pending_rv[:, None]),
                      np.array([st.pending_ts], dtype=np.int64), st.settings.bars_per_year, xbuf, k)
    col[GINN_ROW] = var[GINN_ROW, 0]
    return col, st.copy(ginn_x=xbuf[:k].copy(), pending_rv=np.full(len(RV_WINDOWS), np.nan),
                        pending_ts=0)


def ginn_rows_buffer(ginn: GinnModel, state: VolState) -> tuple[np.ndarray, int]:
    """A full-size input-row buffer holding the state's rows, and their count."""
    xbuf = ginn.empty_rows()
    k = state.ginn_x.shape[0]
    if k > xbuf.shape[0] or (k and state.ginn_x.shape[1] != xbuf.shape[1]):
        raise ValueError(f"the state's GINN input rows have shape {state.ginn_x.shape}, the "
                         f"model {ginn.sha256[:12]} takes at most {xbuf.shape}")
    xbuf[:k] = state.ginn_x
    return xbuf, k


def advance_vol(state: VolState, close: np.ndarray, *, refit: bool = True,
                ts: np.ndarray | None = None, ginn: GinnModel | None = None
                ) -> tuple[np.ndarray, np.ndarray, VolState]:
    """Variance (float64 [5, m]) and RV (float64 [len(RV_WINDOWS), m]) of the new bars and the
    state after them; ``state`` is not changed.

    With ``refit=False`` it stops after the first refit bar it meets (m may then be less than
    the bars given): that bar's fitted rows (and ginn) are NaN and the state is ``pending``
    until ``apply_refits`` supplies them. The EWMA row and RV of that bar are final.

    ``ginn``: the state's GINN model (see "continuation"); with it, ``ts`` (the new bars' open
    times, int64 UTC ns) is required.
    """
    close = np.ascontiguousarray(close, dtype=np.float64)
    if close.ndim != 1:
        raise ValueError("close must be 1-D")
    if not (np.all(np.isfinite(close)) and np.all(close > 0.0)):
        bad = int(np.argmin(np.isfinite(close) & (close > 0.0)))
        raise ValueError(f"close must be finite and positive: new bar {bad} is {close[bad]!r}")
    if state.pending:
        raise ValueError("a refit is pending: apply_refits before advancing")
    cfg = state.settings
    active = state.ginn_active(ginn)
    model = ginn if active else None
    ts = _check_ginn(model, ts, close.shape[0], cfg.keep)
    if state.n_bars == 0:
        new_r = log_returns(close)
    else:
        new_r = log_returns(np.concatenate([[state.last_close], close]))[1:]
    k = state.returns.shape[0]
    r = np.ascontiguousarray(np.concatenate([state.returns, new_r]))
    m = close.shape[0]
    variance = np.full((len(GARCH_VARIANTS), m), np.nan)
    rv = np.full((len(RV_WINDOWS), m), np.nan)
    st = state.copy() if active or not state.ginn_sha256 else state.without_ginn()
    xbuf, gk = ginn_rows_buffer(model, st) if model is not None else (None, 0)

    def ginn_block(a: int, b: int) -> None:  # columns [a, b) are final: their ginn values
        nonlocal gk
        block = variance[:, a:b]
        gk = _ginn_columns(model, r, k + a, block, rv[:, a:b],
                           None if ts is None else ts[a:b], cfg.bars_per_year, xbuf, gk)

    base = state.n_bars - k
    t = k
    while t < k + m:
        stop = vol_advance(r, t, base, cfg.window, cfg.refit_every, cfg.ewma_lambda,
                           cfg.min_bars, RV_ARRAY, SCALE, CLAMP_RATIO, EGARCH_ROW, st.ewma,
                           st.params, st.active, st.s, st.ln_s, st.counts[2],
                           variance[:, t - k:], rv[:, t - k:])
        ginn_block(t - k, min(stop, k + m) - k)
        if stop >= k + m:
            break
        done = stop + 1  # bars of r consumed
        keep = r[max(0, done - cfg.keep) : done]
        st = st.copy(n_bars=base + done, last_close=float(close[stop - k]), returns=keep.copy(),
                     pending=True, pending_rv=rv[:, stop - k].copy(),
                     pending_ts=0 if ts is None else int(ts[stop - k]))
        if model is not None:
            st = st.copy(ginn_x=xbuf[:gk].copy())
        if not refit:
            return variance[:, : done - k], rv[:, : done - k], st
        col, st = apply_refits(st, [run_refit(j) for j in due_refits(st)], ginn=model)
        variance[:, stop - k] = col
        if model is not None:
            xbuf, gk = ginn_rows_buffer(model, st)
        t = done
    keep = r[max(0, k + m - cfg.keep) :]
    st = st.copy(n_bars=state.n_bars + m, last_close=float(close[-1]) if m else state.last_close,
                 returns=keep.copy())
    if model is not None:
        st = st.copy(ginn_x=xbuf[:gk].copy())
    return variance, rv, st


def extend_vol_table(table: VolTable, state: VolState, close: np.ndarray, *,
                     ts: np.ndarray | None = None, ginn: GinnModel | None = None
                     ) -> tuple[VolTable, VolState]:
    """``table`` with the new bars appended (refits performed), equal bit for bit to
    ``build_vol_table`` from the same origin over all the bars, and the state after them
    (``ts``, ``ginn``: as ``advance_vol``)."""
    if state.n_bars != table.variance.shape[1]:
        raise ValueError(f"state is at bar {state.n_bars} but the table has "
                         f"{table.variance.shape[1]} bars")
    variance, rv, st = advance_vol(state, close, ts=ts, ginn=ginn)
    return _table_of(np.concatenate([table.variance, variance], axis=1),
                     np.concatenate([table.rv, rv], axis=1), st), st


def _table_of(variance: np.ndarray, rv: np.ndarray, state: VolState) -> VolTable:
    return VolTable(variance, rv, float(state.settings.bars_per_year), **state.count_dicts(),
                    ginn_sha256=state.ginn_sha256)


def build_vol_state(close: np.ndarray, settings: VolSettings, *, ts: np.ndarray | None = None,
                    ginn: GinnModel | None = None) -> tuple[VolTable, VolState]:
    """The table from the origin (``close[0]``) by the continuation path, and its state
    (``ginn``: the ginn row's model, which needs the bars' open times ``ts``)."""
    variance, rv, st = advance_vol(initial_vol_state(settings, ginn), close, ts=ts, ginn=ginn)
    return _table_of(variance, rv, st), st
