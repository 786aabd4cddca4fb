"""Nightly GINN training for one symbol and timeframe: ``emp ginn train -c CONFIG``, or
``python -m workers.ginn_train CONFIG`` under ``ray job submit``.

The pipeline (the driver does the I/O, one Ray task does the torch work):

1. history from the parquet store up to the last close (or ``until``), the volatility table
   (``build_vol_table`` with the config's settings, cached under <home>/cache), GINN inputs and
   the target ``y[t] = r_{t+1}^2``;
2. the split: closes ``[0, R)`` are the research part, ``[R, n)`` the test part. Training and the
   lambda choice see samples whose target close is < R only (``workers.ginn_model`` samples t
   with t + 1 inside the slice); the test scores the forecasts of every test close;
3. a Ray task (``num_gpus=1`` when the cluster has a GPU and the config allows it) chooses
   lambda by walk-forward inside the research part and trains GINN (that lambda), GINN-0
   (lambda 0) and a plain LSTM (lambda 1), each early-stopped on the research part's tail;
4. out of sample: MSE, MAE, QLIKE, R² of the three and of GARCH(1,1), GJR, EGARCH, EWMA on the
   test bars where every model has a forecast; the model confidence set over per-bar QLIKE; the
   gate (``market.vol_eval.ginn_gate``);
5. the chosen model's weights under <home>/ginn/<SYMBOL>/<TF>/<UTC stamp>.npz (+ .json), logged
   to MLflow (params, loss curves with step = epoch, metrics, MCS, gate) and registered as a
   version of ``ginn.<SYMBOL>.<TF>``; then ``latest.json`` moves to it (atomically).

``latest.json`` always names the newest model and carries the gate's verdict (``promoted``): a
consumer uses GINN only when ``promoted`` is true and the file is fresh, and falls back to GARCH
otherwise, so a night whose model loses to GARCH takes GINN out of use at once.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from market.ginn import GinnSpec, GinnWeights, ginn_inputs, ginn_target, save_weights
from market.ginn import forecast as ginn_forecast
from market.vol_eval import GINN, baseline_forecasts, ginn_gate, losses, mcs, qlike_series
from market.volatility import GARCH_FAMILY, GARCH_VARIANTS, VolTable, build_vol_table
from workers.ginn_config import GinnConfig

log = logging.getLogger(__name__)

LATEST = "latest.json"
MODELS = (GINN, "ginn0", "lstm")  # chosen lambda, lambda = 0, lambda = 1
EVALUATED = (*MODELS, *GARCH_FAMILY)
GARCH_ROW = GARCH_VARIANTS.index("garch11")  # the GARCH forecast the loss is informed by


class GinnTrainError(EmpError):
    """The nightly training cannot run on this data or config; the message says why."""


def model_name(symbol: str, timeframe: str) -> str:
    """The MLflow registered model of a symbol and timeframe."""
    return f"ginn.{symbol}.{timeframe}"


def spec_of(cfg: GinnConfig) -> GinnSpec:
    m = cfg.model
    return GinnSpec(lags=m.lags, seq_len=m.seq_len, hidden=m.hidden, calm_below=m.calm_below,
                    storm_above=m.storm_above)


# ---- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """Everything the task and the evaluation need, as plain arrays (Ray ships it once)."""

    symbol: str
    timeframe: str
    ts: np.ndarray        # int64 ns, bar times
    close: np.ndarray
    vol: VolTable
    x: np.ndarray         # ginn_inputs
    y: np.ndarray         # ginn_target
    spec: GinnSpec
    research_end: int     # R: closes [0, R) are the research part

    @property
    def garch(self) -> np.ndarray:
        return self.vol.variance[GARCH_ROW]

    @property
    def n(self) -> int:
        return int(self.close.shape[0])

    def data_end(self) -> str:
        return _iso(self.ts[-1])

    def research_last(self) -> str:
        return _iso(self.ts[self.research_end - 1])


def _iso(ns: np.integer) -> str:
    return datetime.fromtimestamp(int(ns) / 1e9, UTC).isoformat(timespec="seconds")


def research_end(n: int, cfg: GinnConfig) -> int:
    """R: the first test close. ``split.test_bars`` wins over ``split.research_fraction``."""
    s = cfg.split
    r = n - s.test_bars if s.test_bars is not None else math.floor(n * s.research_fraction)
    need = cfg.volatility.min_bars + cfg.model.seq_len + max(cfg.train.folds + 1, 4) * 10
    if r < need or n - r < 20:
        raise GinnTrainError(
            f"{cfg.symbol}/{cfg.timeframe}: {n} bars split into {r} research and {n - r} test; "
            f"need >= {need} research and >= 20 test bars (split.research_fraction, "
            f"split.test_bars, split.max_bars, start, until)")
    return r


def load_close(cfg: GinnConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(ts, close, bars_per_year) of the configured history, last ``split.max_bars`` bars."""
    from market.loader import load_bars
    from market.store import HistoryStore, StoreError
    from market.timeframes import bars_per_year

    store = HistoryStore(cfg.store_root())
    calendar = cfg.calendar
    if calendar is None:
        meta = store.meta(cfg.symbol)
        if meta is None:
            raise GinnTrainError(f"no metadata for {cfg.symbol} in {store.root}: ingest it or "
                                 f"set calendar in the GINN config")
        calendar = meta.calendar
    try:
        bars = load_bars(cfg.symbol, cfg.timeframe, cfg.start, cfg.until, store=store)
    except StoreError as exc:
        raise GinnTrainError(f"{cfg.symbol}/{cfg.timeframe}: {exc}") from None
    except ValueError as exc:  # a bad start/until date
        raise GinnTrainError(f"start/until: {exc}") from None
    ts, close = bars.ts, bars.close[0]
    if cfg.split.max_bars is not None and ts.shape[0] > cfg.split.max_bars:
        ts, close = ts[-cfg.split.max_bars:], close[-cfg.split.max_bars:]
    if ts.shape[0] == 0:
        raise GinnTrainError(f"{cfg.symbol}/{cfg.timeframe}: no bars in {store.root} between "
                             f"start {cfg.start} and until {cfg.until}")
    return np.ascontiguousarray(ts), np.ascontiguousarray(close), bars_per_year(cfg.timeframe,
                                                                                calendar)


def prepare_arrays(symbol: str, timeframe: str, ts: np.ndarray, close: np.ndarray,
                   vol: VolTable, spec: GinnSpec, cfg: GinnConfig) -> Prepared:
    x = ginn_inputs(close, vol, spec)
    return Prepared(symbol, timeframe, ts, close, vol, x, ginn_target(close), spec,
                    research_end(close.shape[0], cfg))


def prepare(cfg: GinnConfig) -> Prepared:
    ts, close, bpy = load_close(cfg)
    vc = cfg.volatility
    try:
        vol = build_vol_table(close, bpy, window=vc.window, refit_every=vc.refit_every,
                              ewma_lambda=vc.ewma_lambda, min_bars=vc.min_bars,
                              cache_dir=cfg.home / "cache")
    except ValueError as exc:
        raise GinnTrainError(f"{cfg.symbol}/{cfg.timeframe}: volatility table: {exc}") from None
    return prepare_arrays(cfg.symbol, cfg.timeframe, ts, close, vol, spec_of(cfg), cfg)


# ---- the torch part (runs in the Ray task) ---------------------------------------------------


@dataclass
class Trained:
    """The task's answer: the three fits, the lambda table and where it ran."""

    lam: float
    lambda_table: dict[float, float]
    results: dict[str, Any]              # model -> workers.ginn_model.TrainResult
    device: str
    gpu_reserved: bool
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def pick_device(gpu_reserved: bool, force_cpu: bool = False) -> tuple[str, list[str]]:
    """"cuda" only when torch sees one (and CPU is not forced); a reserved GPU that torch cannot
    see is a warning, not an error: the job still trains, on the CPU."""
    import torch

    if not force_cpu and torch.cuda.is_available():
        return "cuda", []
    if gpu_reserved:
        msg = ("GINN: Ray reserved a GPU for this task but torch sees no CUDA device "
               f"(torch {torch.__version__}); training on the CPU")
        log.warning(msg)
        return "cpu", [msg]
    return "cpu", []


def fit_models(prep: Prepared, cfg: GinnConfig, device: str) -> tuple[float, dict, dict]:
    """Choose lambda on the research part, then fit GINN, GINN-0 and the plain LSTM on it."""
    from workers.ginn_model import TrainSettings, select_lambda, train_ginn

    t = cfg.train
    settings = TrainSettings(epochs=t.epochs, lr=t.lr, batch=t.batch, seed=t.seed,
                             patience=t.patience, device=device, dtype=t.dtype)
    r = prep.research_end
    lam, table = select_lambda(prep.x, prep.y, prep.garch, slice(0, r), prep.spec, settings,
                               lams=tuple(t.lambdas), folds=t.folds)
    val_n = max(prep.spec.seq_len + 1, round(r * t.val_fraction))
    fit, stop = slice(0, r - val_n), slice(r - val_n, r)
    meta = {"symbol": prep.symbol, "timeframe": prep.timeframe, "data_end": prep.data_end(),
            "research_end": prep.research_last(), "research_bars": r, "test_bars": prep.n - r}
    results: dict[str, Any] = {}
    for name, lam_m in ((GINN, lam), ("ginn0", 0.0), ("lstm", 1.0)):
        same = next((k for k, v in results.items() if v.weights.meta["lam"] == lam_m), None)
        results[name] = results[same] if same is not None else train_ginn(
            prep.x, prep.y, prep.garch, fit, stop, prep.spec, lam_m, settings, meta)
    return lam, table, results


def train_task(prep: Prepared, cfg: GinnConfig, gpu_reserved: bool) -> Trained:
    """The Ray task's body (also callable in-process): device choice, then ``fit_models``."""
    t0 = time.perf_counter()
    device, warnings = pick_device(gpu_reserved, cfg.cpu)
    lam, table, results = fit_models(prep, cfg, device)
    return Trained(lam, table, results, device, gpu_reserved, warnings, time.perf_counter() - t0)


def run_task(prep: Prepared, cfg: GinnConfig) -> Trained:
    """``train_task`` as one Ray task on the cluster ``workers.cluster.connect`` finds: 1 GPU
    when the cluster has one and the config allows it, else CPU only. An ``EmpError`` raised
    inside the task comes back as itself (one line), not as Ray's traceback."""
    import ray
    from ray.exceptions import RayTaskError

    from workers.cluster import connect

    connect()
    gpus = 0 if cfg.cpu or ray.cluster_resources().get("GPU", 0) < 1 else 1
    task = ray.remote(train_task).options(num_gpus=gpus, num_cpus=1, max_retries=0)
    try:
        return ray.get(task.remote(prep, cfg, gpus == 1))
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EmpError):
            raise cause from None
        raise


# ---- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, dict[str, float]]  # model -> mse, mae, qlike, r2, n, qlike_dropped
    mcs: dict
    passed: bool
    reason: str
    qlike_ratio: float
    bars: int                              # test bars scored (every model has a forecast)


def forecasts_of(prep: Prepared, weights: dict[str, GinnWeights]) -> dict[str, np.ndarray]:
    """Every evaluated model's forecast for bar t+1 made at t, over the whole history (the
    GINN ones by the numpy forward pass: what the live side will run)."""
    out = {name: ginn_forecast(w, prep.x) for name, w in weights.items()}
    out.update(baseline_forecasts(prep.close, prep.vol))
    return out


def evaluate(prep: Prepared, weights: dict[str, GinnWeights], gate_cfg: Any) -> Evaluation:
    """Out-of-sample losses over the test samples t in [R - 1, n - 1) where every model has a
    finite forecast and y is finite; MCS over per-bar QLIKE; the gate."""
    f = forecasts_of(prep, weights)
    t = np.arange(prep.research_end - 1, prep.n - 1)
    ok = np.isfinite(prep.y[t])
    for v in f.values():
        ok &= np.isfinite(v[t])
    t = t[ok]
    if t.size < 20:
        raise GinnTrainError(f"{prep.symbol}/{prep.timeframe}: only {t.size} test bars where "
                             f"every model has a forecast; need >= 20")
    y = prep.y[t]
    metrics = {name: losses(v[t], y) for name, v in f.items()}
    conf = mcs({name: qlike_series(v[t], y) for name, v in f.items()}, size=gate_cfg.mcs_size,
               seed=gate_cfg.mcs_seed, reps=gate_cfg.mcs_reps)
    q_g, q_b = metrics[GINN]["qlike"], metrics["garch11"]["qlike"]
    passed, reason = ginn_gate(q_g, q_b, set(conf["included"]), gate_cfg.ratio_max)
    ratio = q_g / q_b if q_b > 0 else math.nan
    return Evaluation(metrics, conf, passed, reason, ratio, int(t.size))


# ---- export, MLflow ----------------------------------------------------------------------------


def _finite(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None (the weights' meta must be plain finite JSON)."""
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def export(cfg: GinnConfig, w: GinnWeights, now: datetime) -> tuple[Path, str]:
    """<home>/ginn/<SYMBOL>/<TF>/<stamp>.npz (+ sidecar); returns (path, sha256)."""
    path = cfg.ginn_dir() / f"{stamp(now)}.npz"
    return path, save_weights(path, w)


def write_latest(cfg: GinnConfig, pointer: dict) -> Path:
    path = cfg.ginn_dir() / LATEST
    atomic_write_bytes(path, json.dumps(_finite(pointer), indent=1, sort_keys=True).encode())
    return path


def _flat_metrics(trained: Trained, ev: Evaluation) -> dict[str, float]:
    out: dict[str, float] = {"lambda": trained.lam, "gate.passed": float(ev.passed),
                             "gate.qlike_ratio": ev.qlike_ratio, "oos.bars": ev.bars,
                             "train.seconds": trained.seconds}
    for lam, score in trained.lambda_table.items():
        out[f"lambda_cv.mse.{lam:g}"] = score
    for name, m in ev.metrics.items():
        for k in ("mse", "mae", "qlike", "r2"):
            out[f"oos.{name}.{k}"] = m[k]
    for name, p in ev.mcs["pvalues"].items():
        out[f"mcs.{name}.pvalue"] = p
        out[f"mcs.{name}.included"] = float(name in ev.mcs["included"])
    for name, res in trained.results.items():
        out[f"train.{name}.seconds_per_epoch"] = res.seconds_per_epoch
    return out


def track(cfg: GinnConfig, prep: Prepared, trained: Trained, ev: Evaluation, path: Path,
          sha: str) -> tuple[str, str]:
    """One MLflow run: params, curves (step = epoch), metrics, MCS, gate, the weights as
    artifacts and a new version of ``ginn.<SYMBOL>.<TF>``. Returns (run id, version)."""
    from evolution.tracking import Tracker
    from market.ginn import sidecar_path

    name = model_name(prep.symbol, prep.timeframe)
    with Tracker(cfg.home, experiment=cfg.experiment,
                 run_name=f"ginn-{prep.symbol}-{prep.timeframe}-{path.stem}") as tr:
        cfg_params = cfg.model_dump(mode="json", exclude={"home", "store"})
        tr.log_params(cfg_params, {"bars": prep.n, "first": _iso(prep.ts[0]),
                                   "data_end": prep.data_end(),
                                   "research_end": prep.research_last(),
                                   "research_bars": prep.research_end,
                                   "test_bars": prep.n - prep.research_end,
                                   "vol_digest": prep.vol.digest()},
                      {"chosen_lambda": trained.lam, "device": trained.device,
                       "gpu_reserved": trained.gpu_reserved})
        for model, res in trained.results.items():
            for row in res.curve:
                tr.log_generation(int(row["epoch"]), {f"curve.{model}.train_loss":
                                                      row["train_loss"],
                                                      f"curve.{model}.val_loss": row["val_loss"]})
        tr.log_generation(0, _flat_metrics(trained, ev))
        tr.log_text(json.dumps(_finite({"mcs": ev.mcs, "gate": {"passed": ev.passed,
                                                                  "reason": ev.reason},
                                        "metrics": ev.metrics,
                                        "lambda_table": {f"{k:g}": v for k, v in
                                                         trained.lambda_table.items()}}),
                               indent=1), "ginn/evaluation.json")
        tr.set_tags({"ginn.gate": "passed" if ev.passed else "failed",
                     "ginn.gate_reason": ev.reason, "ginn.sha256": sha,
                     "ginn.symbol": prep.symbol, "ginn.timeframe": prep.timeframe})
        where = f"ginn/{sha[:16]}"
        tr.client.log_artifact(tr.run_id, str(path), where)
        tr.client.log_artifact(tr.run_id, str(sidecar_path(path)), where)
        version = _register(tr.client, name, tr.run_id, where, sha, ev, trained.lam)
        return tr.run_id, version


def _register(client: Any, name: str, run_id: str, where: str, sha: str, ev: Evaluation,
              lam: float) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="GINN volatility models (issue 15): each version is a numpy "
                              "weights file (.npz + sidecar); tag promoted says whether it "
                              "beat GARCH(1,1) out of sample")
    mv = client.create_model_version(
        name, source=f"runs:/{run_id}/{where}", run_id=run_id,
        tags={"sha256": sha, "promoted": str(ev.passed).lower(), "lambda": f"{lam:g}",
              "qlike_ratio": f"{ev.qlike_ratio:.6g}"},
        description=ev.reason[:5000])
    return str(mv.version)


# ---- the whole job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainReport:
    path: Path
    sha256: str
    lam: float
    evaluation: Evaluation
    run_id: str
    version: str
    device: str
    gpu_reserved: bool
    warnings: list[str]
    seconds_per_epoch: dict[str, float]

    def summary(self) -> dict[str, Any]:
        ev = self.evaluation
        return _finite({
            "file": str(self.path), "sha256": self.sha256, "lambda": self.lam,
            "promoted": ev.passed, "gate": ev.reason, "qlike_ratio": ev.qlike_ratio,
            "mcs_included": ev.mcs["included"], "device": self.device,
            "gpu_reserved": self.gpu_reserved, "mlflow_run": self.run_id,
            "model_version": self.version, "test_bars": ev.bars,
            "qlike": {k: m["qlike"] for k, m in ev.metrics.items()},
            "seconds_per_epoch": self.seconds_per_epoch})


def train(cfg: GinnConfig, *, local: bool = False, now: datetime | None = None) -> TrainReport:
    """The whole nightly job for ``cfg``'s symbol and timeframe (see the module docstring).
    ``local``: train in this process instead of a Ray task (debugging, the benchmark)."""
    prep = prepare(cfg)
    trained = train_task(prep, cfg, False) if local else run_task(prep, cfg)
    weights = {k: r.weights for k, r in trained.results.items()}
    ev = evaluate(prep, weights, cfg.gate)
    now = now or datetime.now(UTC)
    chosen = weights[GINN]
    meta = {**chosen.meta, "metrics": {k: {m: v[m] for m in ("mse", "mae", "qlike", "r2")}
                                       for k, v in ev.metrics.items()},
            "gate": {"passed": ev.passed, "reason": ev.reason, "qlike_ratio": ev.qlike_ratio,
                     "mcs_included": ev.mcs["included"]},
            "lambda_table": {f"{k:g}": v for k, v in trained.lambda_table.items()}}
    path, sha = export(cfg, replace(chosen, meta=_finite(meta)), now)
    run_id, version = track(cfg, prep, trained, ev, path, sha)
    write_latest(cfg, {"file": path.name, "sha256": sha, "trained_at": chosen.meta.get(
        "trained_at"), "data_end": prep.data_end(), "symbol": prep.symbol,
        "timeframe": prep.timeframe, "lambda": trained.lam, "promoted": ev.passed,
        "gate": ev.reason, "mlflow_run": run_id, "model_version": version})
    return TrainReport(path, sha, trained.lam, ev, run_id, version, trained.device,
                       trained.gpu_reserved, trained.warnings,
                       {k: r.seconds_per_epoch for k, r in trained.results.items()})


if __name__ == "__main__":  # ray job submit ... -- python -m workers.ginn_train CONFIG
    from workers.ginn_cli import module_main

    sys.exit(module_main(sys.argv[1:]))


__all__ = ["LATEST", "GinnTrainError", "Prepared", "TrainReport", "Trained", "evaluate",
           "export", "fit_models", "model_name", "pick_device", "prepare", "prepare_arrays",
           "research_end", "run_task", "spec_of", "train", "train_task", "write_latest"]
