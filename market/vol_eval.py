"""Out-of-sample evaluation of variance forecasts: losses, the GARCH-family baselines, the model
confidence set and the GINN promotion gate (issue 15). numpy and arch only: no torch here.

Conventions (every function below follows them):

* A forecast ``f[t]`` and a realised value ``y[t]`` refer to the same bar, t+1, in per-bar variance
  of log returns: ``VolTable.variance[:, t]`` and ``market.ginn.ginn_target(close)[t] = r_{t+1}^2``.
* Rows where either side is NaN or infinite are skipped (warm-up, the last bar).
* QLIKE is the normalised form ``y/f - log(y/f) - 1`` (zero for a perfect forecast, minimised in
  expectation by the true variance, robust to noise in the proxy: Patton 2011). It is undefined
  for ``y == 0`` (a flat close-to-close day: the log is -inf), so those rows, and rows with
  ``f <= 0``, are left out of QLIKE only and counted in ``qlike_dropped``; MSE, MAE and R² keep
  them.
* R² is ``1 - SSE/SST`` with SST around the mean of ``y`` over the evaluated rows (the paper's
  out-of-sample R²; a forecast worse than that constant is negative), not the Mincer-Zarnowitz
  regression R², which would forgive a biased forecast.
"""

from __future__ import annotations

import numpy as np

from core.errors import EmpError
from market.volatility import GARCH_FAMILY, GARCH_VARIANTS, VolTable

__all__ = ["VolEvalError", "baseline_forecasts", "ginn_gate", "losses", "mcs", "qlike_series"]

BASELINES = GARCH_FAMILY  # garch11, egarch, gjr, ewma: the VolTable rows, same names
GINN = "ginn"  # the name the gate looks for in the MCS


class VolEvalError(EmpError, ValueError):
    """Forecasts that cannot be compared (shapes, nothing in common)."""


def _pair(forecast: np.ndarray, realised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(forecast, dtype=np.float64)
    y = np.asarray(realised, dtype=np.float64)
    if f.shape != y.shape or f.ndim != 1:
        raise VolEvalError(f"forecast {f.shape} and realised {y.shape} must be 1-D of one length")
    return f, y


def qlike_series(forecast: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """Per-bar QLIKE ``y/f - log(y/f) - 1``; NaN where undefined (non-finite, y <= 0, f <= 0)."""
    f, y = _pair(forecast, realised)
    ok = np.isfinite(f) & np.isfinite(y) & (f > 0.0) & (y > 0.0)
    out = np.full(f.shape, np.nan)
    ratio = y[ok] / f[ok]
    out[ok] = ratio - np.log(ratio) - 1.0
    return out


def squared_error_series(forecast: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """Per-bar ``(f - y)^2``; NaN where either side is not finite."""
    f, y = _pair(forecast, realised)
    return (f - y) ** 2


def losses(forecast: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """mse, mae, qlike, r2 over the rows where both are finite (see the module docstring), plus
    ``n`` (rows used) and ``qlike_dropped`` (rows left out of QLIKE: y == 0 or f <= 0)."""
    f, y = _pair(forecast, realised)
    both = np.isfinite(f) & np.isfinite(y)
    if not both.any():
        raise VolEvalError("no bar where both the forecast and the realised variance are finite")
    e = f[both] - y[both]
    sst = float(np.sum((y[both] - y[both].mean()) ** 2))
    q = qlike_series(f, y)
    n_q = int(np.isfinite(q).sum())
    return {"mse": float(np.mean(e * e)), "mae": float(np.mean(np.abs(e))),
            "qlike": float(np.nanmean(q)) if n_q else float("nan"),
            "r2": 1.0 - float(np.sum(e * e)) / sst if sst > 0.0 else float("nan"),
            "n": int(both.sum()), "qlike_dropped": int(both.sum()) - n_q}


def baseline_forecasts(close: np.ndarray, vol: VolTable) -> dict[str, np.ndarray]:
    """The GARCH-family forecasts for bar t+1 made at t, one per ``VolTable`` row (garch11,
    egarch, gjr, ewma), aligned with ``close``; copies, so callers may slice freely."""
    n = np.asarray(close).shape[0]
    if vol.variance.shape != (len(GARCH_VARIANTS), n):
        raise VolEvalError(f"volatility table has shape {vol.variance.shape}, expected "
                           f"({len(GARCH_VARIANTS)}, {n}) for {n} closes: built on other data?")
    return {name: np.array(vol.variance[GARCH_VARIANTS.index(name)], dtype=np.float64)
            for name in GARCH_FAMILY}


def mcs(losses_by_model: dict[str, np.ndarray], size: float = 0.10, seed: int = 0,
        reps: int = 1000, block_size: int | None = None) -> dict:
    """Hansen-Lunde-Nason model confidence set (``arch.bootstrap.MCS``, range statistic,
    stationary bootstrap) over per-bar loss series, on the bars where every model's loss is
    finite; models with identical series share one verdict. Returns ``included``/``excluded`` (model names), ``pvalues`` (name -> MCS p-value),
    ``size``, ``bars`` (rows used), ``reps``."""
    from arch.bootstrap import MCS

    names = list(losses_by_model)
    if len(names) < 2:
        raise VolEvalError(f"the MCS needs at least two models, got {names}")
    mat = np.column_stack([np.asarray(losses_by_model[k], dtype=np.float64) for k in names])
    rows = np.all(np.isfinite(mat), axis=1)
    if rows.sum() < 10:
        raise VolEvalError(f"only {int(rows.sum())} bars where every model's loss is finite; "
                           f"the MCS needs at least 10")
    # identical loss series (e.g. a GARCH row that fell back to EWMA on every test bar) give a
    # zero-variance difference the MCS cannot studentise: test one of each, share its verdict
    mat = mat[rows]
    first: dict[bytes, int] = {}
    owner = [first.setdefault(mat[:, j].tobytes(), j) for j in range(len(names))]
    uniq = sorted(set(owner))
    if len(uniq) == 1:
        return {"included": sorted(names), "excluded": [], "pvalues": dict.fromkeys(names, 1.0),
                "size": float(size), "bars": int(rows.sum()), "reps": int(reps)}
    m = MCS(mat[:, uniq], size=size, reps=reps, block_size=block_size, method="R",
            bootstrap="stationary", seed=seed)
    m.compute()
    pv = {uniq[int(i)]: float(p) for i, p in m.pvalues["Pvalue"].items()}
    kept = {uniq[int(i)] for i in m.included}
    return {"included": sorted(k for j, k in enumerate(names) if owner[j] in kept),
            "excluded": sorted(k for j, k in enumerate(names) if owner[j] not in kept),
            "pvalues": {k: pv[owner[j]] for j, k in enumerate(names)},
            "size": float(size), "bars": int(rows.sum()), "reps": int(reps)}


def ginn_gate(qlike_ginn: float, qlike_garch: float, mcs_included: set[str],
              ratio_max: float = 0.95) -> tuple[bool, str]:
    """GINN replaces GARCH(1,1) only if QLIKE(GINN)/QLIKE(GARCH) <= ``ratio_max`` out of sample
    and the model confidence set keeps GINN. Returns (passed, one-line reason)."""
    if not (np.isfinite(qlike_ginn) and np.isfinite(qlike_garch) and qlike_garch > 0.0):
        return False, (f"QLIKE not comparable (ginn {qlike_ginn}, garch11 {qlike_garch}): "
                       f"GARCH stays")
    ratio = qlike_ginn / qlike_garch
    if ratio > ratio_max:
        return False, f"QLIKE ratio ginn/garch11 {ratio:.4f} > {ratio_max}: GARCH stays"
    if GINN not in mcs_included:
        return False, (f"QLIKE ratio {ratio:.4f} <= {ratio_max} but the MCS excludes ginn: "
                       f"GARCH stays")
    return True, f"QLIKE ratio ginn/garch11 {ratio:.4f} <= {ratio_max} and the MCS keeps ginn"
