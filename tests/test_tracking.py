"""Tracker round trip: log to a sqlite store in a temp EMP home, read back via MlflowClient."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from core.tracking import default_tracking_uri
from evolution import plots
from evolution.tracking import Tracker, flatten, is_secret

PNG = plots.PNG_MAGIC

CONFIG = {
    "population": 64,
    "ga": {"mutation": {"rate": 0.2, "sigma": 0.5}, "crossover": 0.9},
    "broker": {"api_key": "AKIA-LEAK-1", "host": "fix.example"},
    "db_password": "hunter2",
    "Auth": {"Token": "tok-LEAK-2"},
    "symbols": ["EURUSD", "GBPUSD"],
    "notes": "x" * 10_000,
}
FINGERPRINT = {"symbols": ["EURUSD", "GBPUSD"],
               "ranges": {"EURUSD": ["2020-01-01", "2024-12-31"]},
               "sha256": "ab" * 32}
LEAKS = ("AKIA-LEAK-1", "hunter2", "tok-LEAK-2", "LEAK")


def _front(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"sharpe": rng.normal(1, 0.3, n), "max_dd": rng.uniform(0.05, 0.3, n),
                         "trades": rng.integers(20, 200, n), "genome_id": [f"g{i}" for i in range(n)]})


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One run with everything logged (shared: creating the sqlite schema costs seconds)."""
    home = tmp_path_factory.mktemp("emp_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        scratch = home / "scratch"
        scratch.mkdir()
        mp.setattr(tempfile, "tempdir", str(scratch))  # to check temp dirs are cleaned up
        tr = Tracker(home, experiment="test-evo", run_name="unit")
        tr.log_params(CONFIG, FINGERPRINT, extra={"seed": 7, "secret_sauce": "LEAK"})
        for g in range(4):
            tr.log_generation(g, {"best_sharpe": 1.0 + g, "mean_sharpe": 0.5 + g / 10,
                                  "hypervolume": float("nan") if g == 2 else g * 0.1,
                                  "bad": float("inf")})
        front = _front()
        tr.log_front(3, front)
        tr.log_pareto_plot(3, front, "max_dd", "sharpe", color="trades")
        idx = pd.date_range("2022-01-03", periods=250, freq="B", tz="UTC")
        equity = 1.0 + np.cumsum(np.random.default_rng(1).normal(0.0005, 0.01, 250))
        tr.log_best(1, json.dumps({"genes": [1, 2, 3]}), "IF rsi(14) < 30 THEN long", equity, idx)
        tr.log_text("hello", "notes/readme.txt")
        tr.set_tags({"island": "0"})
        tr.finish()
        assert list(scratch.iterdir()) == []
        client = MlflowClient(tracking_uri=default_tracking_uri(home))
        yield home, tr, client, front


def test_params_flattened_truncated_and_secrets_dropped(logged):
    _, tr, client, _ = logged
    run = client.get_run(tr.run_id)
    p = run.data.params
    assert p["population"] == "64"
    assert p["ga.mutation.rate"] == "0.2" and p["ga.crossover"] == "0.9"
    assert p["broker.host"] == "fix.example"
    assert json.loads(p["symbols"]) == ["EURUSD", "GBPUSD"]
    assert len(p["notes"]) == 6000
    assert p["seed"] == "7"
    assert p["data.sha256"] == "ab" * 32
    assert json.loads(p["data.ranges.EURUSD"]) == ["2020-01-01", "2024-12-31"]
    assert not any(is_secret(k) for k in p)
    dump = json.dumps([p, run.data.tags])
    assert not any(leak in dump for leak in LEAKS)
    commit = run.data.tags["git_commit"]
    assert commit == "unknown" or len(commit) == 40
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["island"] == "0" and run.info.run_name == "unit"
    assert run.info.status == "FINISHED"


def test_metric_history_by_step(logged):
    _, tr, client, _ = logged
    best = client.get_metric_history(tr.run_id, "best_sharpe")
    assert [(m.step, m.value) for m in sorted(best, key=lambda m: m.step)] == [
        (0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert sorted(m.step for m in client.get_metric_history(tr.run_id, "mean_sharpe")) == [0, 1, 2, 3]
    hv = client.get_metric_history(tr.run_id, "hypervolume")
    assert sorted(m.step for m in hv) == [0, 1, 3]  # NaN at gen 2 skipped
    assert client.get_metric_history(tr.run_id, "bad") == []


def test_artifacts_front_plots_best(logged, tmp_path):
    home, tr, client, front = logged
    ls = lambda p=None: sorted(f.path for f in client.list_artifacts(tr.run_id, p))  # noqa: E731
    assert ls() == ["best", "fronts", "notes", "plots"]
    assert ls("fronts") == ["fronts/gen_0003.parquet"]
    assert ls("plots") == ["plots/pareto_gen_0003.png"]
    assert ls("best/rank_1") == ["best/rank_1/drawdown.png", "best/rank_1/equity.png",
                                 "best/rank_1/genome.json", "best/rank_1/rules.txt"]
    local = Path(client.download_artifacts(tr.run_id, "", str(tmp_path)))
    pd.testing.assert_frame_equal(pd.read_parquet(local / "fronts/gen_0003.parquet"), front)
    for png in ("plots/pareto_gen_0003.png", "best/rank_1/equity.png", "best/rank_1/drawdown.png"):
        assert (local / png).read_bytes()[:8] == PNG
    assert json.loads((local / "best/rank_1/genome.json").read_text()) == {"genes": [1, 2, 3]}
    assert (local / "best/rank_1/rules.txt").read_text() == "IF rsi(14) < 30 THEN long"
    assert (local / "notes/readme.txt").read_text() == "hello"
    # a sqlite store keeps its artifacts inside the EMP home, not in the cwd
    assert (home / "mlflow.db").exists()
    assert Path(client.get_run(tr.run_id).info.artifact_uri.removeprefix("file://")).is_relative_to(
        home.resolve())


def test_resume_appends_steps_to_same_run(logged):
    home, tr, client, _ = logged
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        other = Tracker(home, experiment="test-evo")  # coexists with the resumed one
        again = Tracker(home, run_id=tr.run_id)
        assert again.run_id == tr.run_id
        assert client.get_run(tr.run_id).info.status == "RUNNING"
        # same params again are a no-op; a changed one is recorded as a tag, not an error
        again.log_params({**CONFIG, "population": 128}, FINGERPRINT)
        for g in (4, 5):
            again.log_generation(g, {"best_sharpe": 10.0 + g})
        other.log_generation(0, {"best_sharpe": -1.0})
        again.finish("KILLED")
        other.finish("FAILED")
    hist = client.get_metric_history(tr.run_id, "best_sharpe")
    assert sorted(m.step for m in hist) == [0, 1, 2, 3, 4, 5]
    run = client.get_run(tr.run_id)
    assert run.data.params["population"] == "64"
    assert run.data.tags["resume.population"] == "128"
    assert run.info.status == "KILLED"
    assert [m.value for m in client.get_metric_history(other.run_id, "best_sharpe")] == [-1.0]
    assert client.get_run(other.run_id).info.status == "FAILED"
    with pytest.raises(ValueError):
        again.finish("DONE")


def test_default_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "a" / "home"
    assert default_tracking_uri(home) == f"sqlite:///{home.resolve()}/mlflow.db"
    assert home.is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.local:5000")
    assert default_tracking_uri(home) == "http://mlflow.local:5000"


def test_flatten_and_secret_filter():
    assert dict(flatten({"a": {"b": {"c": 1}}, "d": [1]})) == {"a.b.c": 1, "d": [1]}
    assert all(is_secret(k) for k in ("API_KEY", "x.Password", "refresh_token", "Secret"))
    assert not is_secret("ga.mutation.rate")


def test_plot_helpers_pure(tmp_path):
    idx = pd.date_range("2023-01-02", periods=50, freq="D")
    eq = np.linspace(1.0, 1.5, 50)
    eq[20:30] -= 0.2
    dd, frac = plots.drawdown(eq)
    assert frac and dd.max() == 0.0 and dd.min() < -0.1
    dd_abs, frac_abs = plots.drawdown(np.array([0.0, 1.0, -2.0, 0.5]))
    assert not frac_abs and dd_abs.tolist() == [0.0, 0.0, -3.0, -0.5]
    out = tmp_path / "sub" / "eq.png"
    data = plots.equity_png(eq, idx, path=out)
    assert data[:8] == PNG and out.read_bytes() == data
    assert plots.drawdown_png(eq, idx)[:8] == PNG
    assert plots.pareto_png(_front(), "max_dd", "sharpe")[:8] == PNG


def test_no_torch_and_no_pyplot_import():
    code = ("import sys, evolution.tracking; "
            "assert 'torch' not in sys.modules; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
