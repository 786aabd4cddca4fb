"""GINN benchmark (issue 15): on the bundled daily S&P 500 and NASDAQ (``arch.data``), the
nightly pipeline's model choice and evaluation in one run, per symbol: out-of-sample QLIKE, MSE,
MAE and R² of GINN (lambda chosen by walk-forward), GINN-0, a plain LSTM, GARCH(1,1), GJR,
EGARCH and EWMA; the model confidence set over per-bar QLIKE; the gate; training seconds per
epoch on the CPU, and on the GPU when torch sees one (the chosen model refitted there, with its
forecasts' largest relative difference from the CPU fit's).

The settings are the packaged configs/ginn.yaml's (default volatility table: 500-bar windows
refitted every 21 bars), so the figures are what the nightly job would decide on this data.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from market.bootstrap import BUNDLED, bundled_frame
from market.timeframes import bars_per_year
from market.volatility import build_vol_table
from workers.ginn_cli import default_ginn_config
from workers.ginn_config import GinnConfig, load_ginn_config
from workers.ginn_train import GINN, evaluate, prepare_arrays, spec_of, train_task


def bench_config(symbol: str, epochs: int | None, mcs_reps: int | None) -> GinnConfig:
    raw = load_ginn_config(default_ginn_config()).model_dump()
    raw.update(symbol=symbol, cpu=True)
    if epochs is not None:
        raw["train"]["epochs"] = epochs
    if mcs_reps is not None:
        raw["gate"]["mcs_reps"] = mcs_reps
    return GinnConfig.model_validate(raw)


def _r(v: float, digits: int = 6) -> float | None:
    return None if not math.isfinite(v) else float(f"{v:.{digits}g}")


def _gpu_refit(prep: Any, cfg: GinnConfig, lam: float, cpu_forecast: np.ndarray) -> dict:
    """The chosen model refitted on the GPU (same seed and data): seconds per epoch and the
    largest relative difference of its test forecasts from the CPU fit's."""
    import torch

    from market.ginn import forecast
    from workers.ginn_model import TrainSettings, train_ginn

    t = cfg.train
    r = prep.research_end
    val_n = max(prep.spec.seq_len + 1, round(r * t.val_fraction))
    settings = TrainSettings(epochs=t.epochs, lr=t.lr, batch=t.batch, seed=t.seed,
                             patience=t.patience, device="cuda", dtype=t.dtype)
    res = train_ginn(prep.x, prep.y, prep.garch, slice(0, r - val_n), slice(r - val_n, r),
                     prep.spec, lam, settings, {})
    f = forecast(res.weights, prep.x)[r - 1:-1]
    c = cpu_forecast[r - 1:-1]
    ok = np.isfinite(f) & np.isfinite(c)
    rel = float(np.max(np.abs(f[ok] - c[ok]) / np.abs(c[ok]))) if ok.any() else math.nan
    return {"device": torch.cuda.get_device_name(0), "seconds_per_epoch":
            _r(res.seconds_per_epoch, 4), "epochs": len(res.curve),
            "max_rel_diff_vs_cpu": _r(rel, 3)}


def bench_symbol(symbol: str, epochs: int | None = None, mcs_reps: int | None = None) -> dict:
    import torch

    from market.ginn import forecast

    cfg = bench_config(symbol, epochs, mcs_reps)
    frame = bundled_frame(BUNDLED[symbol])
    close = frame["close"].to_numpy(np.float64)
    ts = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8.copy()
    v = cfg.volatility
    t0 = time.perf_counter()
    vol = build_vol_table(close, bars_per_year("1d", "nyse"), window=v.window,
                          refit_every=v.refit_every, ewma_lambda=v.ewma_lambda,
                          min_bars=v.min_bars)
    vol_s = time.perf_counter() - t0
    prep = prepare_arrays(symbol, "1d", ts, close, vol, spec_of(cfg), cfg)
    trained = train_task(prep, cfg, False)
    weights = {k: r.weights for k, r in trained.results.items()}
    ev = evaluate(prep, weights, cfg.gate)
    out: dict[str, Any] = {
        "bars": prep.n, "first": str(pd.Timestamp(ts[0]).date()),
        "last": str(pd.Timestamp(ts[-1]).date()), "research_bars": prep.research_end,
        "test_from": prep.research_last(), "test_bars_scored": ev.bars,
        "lambda": trained.lam,
        "lambda_cv_mse": {f"{k:g}": _r(s) for k, s in trained.lambda_table.items()},
        "qlike": {k: _r(m["qlike"]) for k, m in ev.metrics.items()},
        "mse": {k: _r(m["mse"]) for k, m in ev.metrics.items()},
        "mae": {k: _r(m["mae"]) for k, m in ev.metrics.items()},
        "r2": {k: _r(m["r2"], 4) for k, m in ev.metrics.items()},
        "qlike_dropped_bars": ev.metrics[GINN]["qlike_dropped"],
        "mcs": {"included": ev.mcs["included"], "size": ev.mcs["size"],
                "pvalues": {k: _r(p, 3) for k, p in ev.mcs["pvalues"].items()}},
        "gate": {"passed": ev.passed, "qlike_ratio": _r(ev.qlike_ratio, 4),
                 "reason": ev.reason},
        "cpu_seconds_per_epoch": {k: _r(r.seconds_per_epoch, 4)
                                  for k, r in trained.results.items()},
        "epochs_run": {k: len(r.curve) for k, r in trained.results.items()},
        "vol_table_s": round(vol_s, 1), "train_s": round(trained.seconds, 1),
        "gpu": None}
    if torch.cuda.is_available():
        out["gpu"] = _gpu_refit(prep, cfg, trained.lam, forecast(weights[GINN], prep.x))
    return out


def run(epochs: int | None = None, symbols: tuple[str, ...] = ("SP500", "NDX"),
        mcs_reps: int | None = None) -> dict:
    import torch

    cfg = bench_config("SP500", epochs, mcs_reps)
    return {"bench": "ginn", "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "settings": {"epochs": cfg.train.epochs, "lambdas": cfg.train.lambdas,
                         "folds": cfg.train.folds, "seq_len": cfg.model.seq_len,
                         "hidden": cfg.model.hidden,
                         "research_fraction": cfg.split.research_fraction,
                         "vol_window": cfg.volatility.window,
                         "refit_every": cfg.volatility.refit_every,
                         "mcs_reps": cfg.gate.mcs_reps, "torch_threads": 1},
            "symbols": {s: bench_symbol(s, epochs, mcs_reps) for s in symbols}}
