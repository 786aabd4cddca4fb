"""MLflow tracking for evolution runs: params, per-generation metrics, fronts, best genomes.

Uses ``MlflowClient`` with an explicit run id instead of the fluent ``mlflow.start_run``
API, so several trackers (islands, resumed runs, tests) can coexist in one process
without fighting over global "active run" state.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from core.errors import EmpError
from core.secrets import mask_text
from core.tracking import default_tracking_uri
from evolution import plots

log = logging.getLogger(__name__)

_SECRET = re.compile(r"password|secret|token|key", re.IGNORECASE)
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")
_STATUSES = ("FINISHED", "KILLED", "FAILED")
_REPO = Path(__file__).resolve().parents[1]
# MLflow 3 opens an experiment without this tag in its GenAI view ("Evaluation runs"); EMP's
# runs are model development: params, metrics per step, artifacts.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def run_name(symbol: str, timeframe: str, seed: int) -> str:
    """``SP500-1d-seed7``: what the run is, readable in the MLflow UI's run list."""
    return f"{symbol}-{timeframe}-seed{seed}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings -> dotted keys, so every config leaf becomes one searchable param."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from flatten(v, key + ".")
        else:
            yield key, v


def is_secret(key: str) -> bool:
    """Conservative: any key mentioning password/secret/token/key is never logged."""
    return bool(_SECRET.search(key))


def _key(key: str) -> str:
    """MLflow only accepts a limited key alphabet and length."""
    return _BAD_KEY_CHARS.sub("_", key)[:MAX_ENTITY_KEY_LENGTH]


def _value(v: Any) -> str:
    """Stringify (JSON for containers) and truncate to MLflow's param value limit."""
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, set)):
        s = json.dumps(sorted(v, key=str) if isinstance(v, set) else list(v), default=str)
    else:
        s = str(v)
    return mask_text(s)[:MAX_PARAM_VAL_LENGTH]  # a URI in a config value may hold a password


def git_commit(repo: Path = _REPO) -> str:
    """HEAD of the checkout the code runs from; "unknown" outside git (e.g. a Ray working_dir)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def run_status(home: Path, run_id: str) -> str:
    """The MLflow status of ``run_id`` (RUNNING, FINISHED, KILLED, FAILED), read without
    changing it; an unknown run is an ``EmpError``."""
    client = MlflowClient(tracking_uri=default_tracking_uri(Path(home)))
    try:
        return str(client.get_run(run_id).info.status)
    except MlflowException:
        raise EmpError(f"run {run_id} is not in the MLflow store of {home}; was it started "
                       f"with another EMP_HOME or MLFLOW_TRACKING_URI?") from None


class Tracker:
    """One MLflow run of an evolution job; re-open it with ``run_id`` to resume."""

    def __init__(self, home: Path, experiment: str = "emp-evolution",
                 run_id: str | None = None, run_name: str | None = None) -> None:
        """``run_id`` re-opens a run as RUNNING, to resume it."""
        self.home = Path(home)
        self.tracking_uri = default_tracking_uri(self.home)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is not None:
            run = self.client.get_run(run_id)  # raises if the run does not exist
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            exp_id = self._experiment_id(experiment)
            run = self.client.create_run(exp_id, run_name=run_name)
            self.run_id = run.info.run_id

    def _experiment_id(self, name: str) -> str:
        """Get or create; artifacts of a local sqlite store live in the EMP home, not cwd."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            for key, value in EXPERIMENT_KIND.items():  # experiments made before the tag
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:"):
            location = (self.home / "mlartifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags=EXPERIMENT_KIND)
        except MlflowException:  # created concurrently by another tracker
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # -- params / tags -----------------------------------------------------------------
    def log_params(self, config: dict, fingerprint: dict, extra: dict | None = None) -> None:
        """Config, data fingerprint and extras as flat params (secrets dropped), git commit as tag.

        MLflow params are immutable: on resume, identical values are skipped and a changed
        value is kept as a ``resume.<key>`` tag (with a warning) rather than failing the run.
        """
        flat: dict[str, str] = {}
        for prefix, d in (("", config), ("data.", fingerprint), ("", extra or {})):
            for k, v in flatten(d, prefix):
                if not is_secret(k):
                    flat[_key(k)] = _value(v)
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            log.warning("resumed run %s: params changed %s", self.run_id, sorted(changed))
        for batch in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)
        commit = git_commit()
        self.set_tags({"mlflow.source.git.commit": commit, "git_commit": commit,
                       **{_key(f"resume.{k}"): v for k, v in changed.items()}})

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags are mutable (unlike params): status notes, island ids, resume markers."""
        items = [RunTag(_key(k), _value(v)) for k, v in tags.items() if not is_secret(k)]
        for batch in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=batch)

    # -- metrics -----------------------------------------------------------------------
    def log_generation(self, generation: int, metrics: dict[str, float]) -> None:
        """All metrics at ``step=generation`` in one batch; NaN/inf and non-numbers skipped."""
        ts = int(time.time() * 1000)
        items: list[Metric] = []
        for k, v in metrics.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                items.append(Metric(_key(k), f, ts, int(generation)))
        for batch in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)

    # -- artifacts ---------------------------------------------------------------------
    def _log_files(self, files: dict[str, bytes], artifact_dir: str) -> None:
        """Write to a temp dir (removed afterwards) and upload; MLflow copies the files."""
        with tempfile.TemporaryDirectory(prefix="emp-mlflow-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self.client.log_artifacts(self.run_id, tmp, artifact_dir)

    def log_front(self, generation: int, front: pd.DataFrame) -> None:
        """Whole Pareto front as parquet, so any generation can be re-analysed later."""
        with tempfile.TemporaryDirectory(prefix="emp-mlflow-") as tmp:
            path = Path(tmp) / f"gen_{generation:04d}.parquet"
            front.to_parquet(path)
            self.client.log_artifact(self.run_id, str(path), "fronts")

    def log_pareto_plot(self, generation: int, front: pd.DataFrame, x: str, y: str,
                        color: str | None = None) -> None:
        png = plots.pareto_png(front, x, y, color, title=f"Pareto front, generation {generation}")
        self._log_files({f"pareto_gen_{generation:04d}.png": png}, "plots")

    def log_best(self, rank: int, genome_json: str, rules: str, equity: np.ndarray,
                     index: pd.DatetimeIndex) -> None:
        """Everything a human needs to look at one of the best training-front genomes: genome,
        readable rules, curves. Not a champion: only `emp gates` and `emp promote` make one."""
        if len(equity) != len(index):
            raise ValueError(f"equity has {len(equity)} points but index has {len(index)}")
        name = f"training front rank {rank}"
        self._log_files({
            "genome.json": genome_json.encode(),
            "rules.txt": rules.encode(),
            "equity.png": plots.equity_png(equity, index, title=f"Equity, {name}"),
            "drawdown.png": plots.drawdown_png(equity, index, title=f"Drawdown, {name}"),
        }, f"best/rank_{rank}")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    # -- lifecycle ---------------------------------------------------------------------
    def finish(self, status: str = "FINISHED") -> None:
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Ctrl-C marks the run KILLED, any other error FAILED, so the UI never shows it RUNNING."""
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED")
        else:
            self.finish("FAILED")
