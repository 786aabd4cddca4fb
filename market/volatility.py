"""Volatility features (Tier 0): rolling GARCH-family forecasts, EWMA and realised variance.

Every value at bar t is a forecast for bar t+1 made at the close of t from returns <= t, so a
genome can index the table without look-ahead. GARCH parameters are refitted every
``refit_every`` bars on the last ``window`` returns (arch, percent returns) and then run forward
with a numba recursion; a failed fit falls back to EWMA for its block and is counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.atomic import atomic_write_bytes
from market.volatility_nb import (
    annualised_sigma,
    arch_backcast,
    blend_variance,
    egarch_variance,
    ewma_variance,
    gjr_variance,
    log_returns,
    regime,
    regime_code,
    rolling_rv,
    var95,
)

__all__ = [
    "FITTED_VARIANTS",
    "GARCH_VARIANTS",
    "RV_WINDOWS",
    "VolTable",
    "annualised_sigma",
    "blend_variance",
    "build_vol_table",
    "fit_variant",
    "regime",
    "regime_code",
    "var95",
    "variant_variance",
]

GARCH_VARIANTS = ("garch11", "egarch", "gjr", "ewma")
RV_WINDOWS = (5, 10, 20, 60)  # bars; realised variance is kept per bar (sum of r² / window)

FITTED_VARIANTS = ("garch11", "egarch", "gjr")
_ARCH_SPEC: dict[str, dict[str, object]] = {
    "garch11": {"vol": "GARCH", "p": 1, "o": 0, "q": 1},
    "egarch": {"vol": "EGARCH", "p": 1, "o": 1, "q": 1},
    "gjr": {"vol": "GARCH", "p": 1, "o": 1, "q": 1},
}
SCALE = 100.0  # fit on percent returns: arch's optimiser is tuned for unit-scale data
MAXITER = 500  # warm starts converge in ~10 iterations; hard windows need more
CLAMP_RATIO = 10.0  # fitted forecasts are kept within [ewma / C, ewma * C] at the same bar
CACHE_VERSION = 1  # bump when the table's definition changes, so old caches miss


@dataclass(frozen=True)
class VolTable:
    """Per-bar variance forecasts (rows in GARCH_VARIANTS order) and realised variances."""

    variance: np.ndarray  # float64 [4, n]: forecast for bar t+1 made at the close of t
    rv: np.ndarray  # float64 [len(RV_WINDOWS), n]: mean r² over the last w returns ending at t
    bars_per_year: float
    fits: dict[str, int]  # successful fits per fitted variant
    failures: dict[str, int]  # failed fits per fitted variant (block fell back to EWMA)
    clamped: dict[str, int] = field(default_factory=dict)  # bars clamped to the EWMA band


def _stationary(variant: str, p: np.ndarray) -> bool:
    """Parameter checks that a fitted model must pass before its forecasts are used."""
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


def _fit_once(variant: str, e: np.ndarray, start: np.ndarray | None) -> np.ndarray | None:
    """One arch fit; None on an exception, no convergence, a non-stationary or a bounded fit."""
    from arch import arch_model  # heavy import, only needed when fitting

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = arch_model(
                e, mean="Zero", dist="normal", rescale=False, **_ARCH_SPEC[variant]
            ).fit(
                disp="off",
                show_warning=False,
                starting_values=start,
                options={"maxiter": MAXITER},
            )
    except Exception:  # arch raises many types on degenerate data; all mean "no fit"
        return None
    params = np.asarray(res.params, dtype=np.float64)
    if res.convergence_flag != 0 or not _stationary(variant, params):
        return None
    # arch clips variances to loose bounds while fitting; a fit that leans on them (a runaway
    # optimum) is not the model our unbounded recursion runs forward, so reject it.
    ours = variant_variance(variant, params, e, arch_backcast(e))[:-1]
    theirs = np.asarray(res.conditional_volatility, dtype=np.float64) ** 2
    if not np.allclose(ours, theirs, rtol=1e-6, atol=0.0):
        return None
    return params


_FIT_MEMO: dict[bytes, np.ndarray | None] = {}
_FIT_MEMO_MAX = 200_000


def fit_variant(variant: str, e: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """Fit one variant on scaled residuals ``e``; None when the fit is unusable.

    A warm start that fails is retried cold once, so a stale start point is not counted as a
    failure of the model on this window.

    Results are memoised in-process by their exact inputs (variant, window bytes, start bytes).
    arch's fit is deterministic, so a hit returns what a refit would: the look-ahead audit,
    which rebuilds tables on truncated histories whose fit windows repeat the full history's,
    then refits only windows whose data differ.
    """
    h = hashlib.sha256(variant.encode())
    h.update(np.ascontiguousarray(e, dtype="<f8").tobytes())
    h.update(b"cold" if start is None else np.asarray(start, dtype="<f8").tobytes())
    key = h.digest()
    if key in _FIT_MEMO:
        hit = _FIT_MEMO[key]
        return None if hit is None else hit.copy()
    params = _fit_once(variant, e, start)
    if params is None and start is not None:
        params = _fit_once(variant, e, None)
    if len(_FIT_MEMO) >= _FIT_MEMO_MAX:
        _FIT_MEMO.clear()
    _FIT_MEMO[key] = None if params is None else params.copy()
    return params


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

    A stationary fit can still run away out of sample: an EGARCH with negative size and
    leverage terms drives the variance towards zero in a calm rally, and the next shock then
    multiplies it by e^30 (S&P 500, Feb 2018). The EWMA reference is causal; GARCH(1,1) and GJR
    stay within 0.2x-5.4x of it on the S&P 500, so the band only bites on such runaways.
    """
    ok = ewma > 0.0
    out = np.where(ok, np.clip(v, ewma / CLAMP_RATIO, ewma * CLAMP_RATIO), v)
    return out, int(np.count_nonzero(out != v))


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
        or counts.shape != (3, k)
        or digest != _digest(variance, rv, counts, bpy)
    ):
        return None
    return VolTable(
        variance,
        rv,
        bpy,
        dict(zip(FITTED_VARIANTS, map(int, counts[0]), strict=True)),
        dict(zip(FITTED_VARIANTS, map(int, counts[1]), strict=True)),
        dict(zip(FITTED_VARIANTS, map(int, counts[2]), strict=True)),
    )


def _save_cache(path: Path, key: str, table: VolTable) -> None:
    counts = np.array(
        [[d[v] for v in FITTED_VARIANTS] for d in (table.fits, table.failures, table.clamped)],
        dtype=np.int64,
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
) -> VolTable:
    """Causal variance table for one close series (see the module docstring).

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

    settings = {
        "bars_per_year": float(bars_per_year),
        "window": window,
        "refit_every": refit_every,
        "ewma_lambda": ewma_lambda,
        "min_bars": min_bars,
    }
    path, key = None, ""
    if cache_dir is not None:
        key = _cache_key(close, settings)
        path = Path(cache_dir) / f"vol-{key}.npz"
        cached = _load_cache(path, key, close.shape[0])
        if cached is not None:
            return cached

    n = close.shape[0]
    r = log_returns(close)
    ewma = ewma_variance(r, ewma_lambda, min_bars)
    variance = np.tile(ewma, (len(GARCH_VARIANTS), 1))
    rv = np.vstack([rolling_rv(r, w) for w in RV_WINDOWS]) if n else np.empty((len(RV_WINDOWS), 0))
    fits = dict.fromkeys(FITTED_VARIANTS, 0)
    failures = dict.fromkeys(FITTED_VARIANTS, 0)
    clamped = dict.fromkeys(FITTED_VARIANTS, 0)
    scaled = r * SCALE
    for row, variant in enumerate(FITTED_VARIANTS):
        if progress is not None:
            progress(variant, row, len(FITTED_VARIANTS))
        start: np.ndarray | None = None
        for t0 in range(window, n, refit_every):
            t1 = min(t0 + refit_every, n)
            seg = scaled[t0 - window + 1 : t1]  # fit window, then the block's returns
            params = fit_variant(variant, seg[:window], start)
            if params is None:
                failures[variant] += 1
                continue
            fits[variant] += 1
            start = params
            s = variant_variance(variant, params, seg, arch_backcast(seg[:window]))
            v, k = _clamp(s[window : window + t1 - t0] / SCALE**2, ewma[t0:t1])
            variance[row, t0:t1] = v
            clamped[variant] += k

    if progress is not None:
        progress(None, len(FITTED_VARIANTS), len(FITTED_VARIANTS))
    table = VolTable(variance, rv, float(bars_per_year), fits, failures, clamped)
    if path is not None:
        _save_cache(path, key, table)
    return table
