"""``emp ginn train`` end to end on a small generated GARCH history: a real local Ray, a real
MLflow store, real files. Also the GPU request falling back to the CPU, the research/test
separation, one-line errors and the systemd units."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from market.ginn import load_weights, sidecar_path
from workers.ginn_config import parse_ginn_config

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "configs" / "ops"
SHIPPED_EXEC = "/opt/emp/.venv/bin/emp"
SYMBOL = "GSYN"
# small and quick: short GARCH windows, a short LSTM, few epochs, two folds
SMALL = {"symbol": SYMBOL, "timeframe": "1d",
         "volatility": {"window": 120, "refit_every": 60},
         "model": {"lags": 3, "seq_len": 8, "hidden": 6},
         "train": {"epochs": 3, "lambdas": [0.0, 0.5, 1.0], "folds": 2, "batch": 64},
         "split": {"test_bars": 150},
         "gate": {"mcs_reps": 200}}


def garch_close(n: int, seed: int) -> np.ndarray:
    """Closes whose log returns follow a GARCH(1,1): volatility GINN can learn."""
    rng = np.random.default_rng(seed)
    s2, r = np.empty(n), np.empty(n)
    s2[0] = 1e-4
    for t in range(n):
        if t:
            s2[t] = 2e-6 + 0.1 * r[t - 1] ** 2 + 0.88 * s2[t - 1]
        r[t] = np.sqrt(s2[t]) * rng.standard_normal()
    return 100.0 * np.exp(np.cumsum(r))


@pytest.fixture(scope="module")
def ginn_home(tmp_path_factory) -> tuple[Path, Path]:
    """A home holding GSYN/1d (600 generated daily bars) and a GINN config for it."""
    from conftest import ingest_generated

    home = tmp_path_factory.mktemp("ginn-home")
    ingest_generated(home, SYMBOL, "1d", garch_close(600, 0), {"unit": "bps"}, 0)
    cfg = home / "ginn.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "home": str(home)}))
    return home, cfg


def emp(*args: str, capsys) -> tuple[int, str, str]:
    from emp_cli.main import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_emp_ginn_train_end_to_end(ginn_home, ray_cluster, capsys, monkeypatch):
    from mlflow import MlflowClient

    home, cfg = ginn_home
    code, out, err = emp("ginn", "train", "-c", str(cfg), capsys=capsys)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and summary["gpu_reserved"] is False  # no GPU here

    # the exported model: loads with the numpy reader, its sidecar and pointer agree
    path = Path(summary["file"])
    assert path.parent == home / "ginn" / SYMBOL / "1d" and path.suffix == ".npz"
    w = load_weights(path, max_age_hours=1.0)
    side = json.loads(sidecar_path(path).read_text())
    latest = json.loads((path.parent / "latest.json").read_text())
    assert side["sha256"] == summary["sha256"] == latest["sha256"]
    assert latest["file"] == path.name and latest["promoted"] == summary["promoted"]
    assert w.meta["symbol"] == SYMBOL and w.meta["lam"] == summary["lambda"]
    assert summary["lambda"] in (0.0, 0.5, 1.0)
    assert set(w.meta["metrics"]) == {"ginn", "ginn0", "lstm", "garch11", "egarch", "gjr",
                                      "ewma"}
    assert w.meta["gate"]["passed"] == summary["promoted"]
    # the gate's verdict follows from the logged figures
    q = summary["qlike"]
    assert summary["promoted"] == (q["ginn"] / q["garch11"] <= 0.95
                                   and "ginn" in summary["mcs_included"])

    # MLflow: params, curves per epoch, out-of-sample metrics per model, MCS, gate, a version
    client = MlflowClient(f"sqlite:///{home.resolve()}/mlflow.db")
    run = client.get_run(summary["mlflow_run"])
    m = run.data.metrics
    for model in ("ginn", "ginn0", "lstm", "garch11", "gjr", "egarch", "ewma"):
        for k in ("r2", "mse", "mae", "qlike"):
            assert f"oos.{model}.{k}" in m, (model, k)
        assert f"mcs.{model}.pvalue" in m
    assert m["gate.passed"] == float(summary["promoted"])
    assert run.data.params["symbol"] == SYMBOL and run.data.params["train.epochs"] == "3"
    curve = client.get_metric_history(run.info.run_id, "curve.lstm.train_loss")
    assert [p.step for p in curve] == list(range(1, len(curve) + 1)) and len(curve) >= 1
    assert run.data.tags["ginn.gate"] == ("passed" if summary["promoted"] else "failed")
    versions = client.search_model_versions(f"name='ginn.{SYMBOL}.1d'")
    assert [str(v.version) for v in versions] == [summary["model_version"]] == ["1"]
    assert versions[0].tags["sha256"] == summary["sha256"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id,
                                                  f"ginn/{summary['sha256'][:16]}")}
    assert {f"ginn/{summary['sha256'][:16]}/{path.name}",
            f"ginn/{summary['sha256'][:16]}/{path.name}.json"} <= arts

    # emp ginn show: the latest model, verified (the packaged config, EMP_HOME, --symbol)
    monkeypatch.setenv("EMP_HOME", str(home))
    code, out, err = emp("ginn", "show", "--symbol", SYMBOL, "--json", capsys=capsys)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["sha256"] == summary["sha256"] and 0 <= shown["age_hours"] < 1
    assert shown["lambda"] == summary["lambda"] and shown["model_version"] == "1"
    code, out, _ = emp("ginn", "show", str(path), capsys=capsys)
    assert code == 0 and summary["sha256"] in out and "QLIKE" in out

    # a tampered weights file is refused by show in one line
    tampered = path.with_name("tampered.npz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    shutil.copy(sidecar_path(path), sidecar_path(tampered))
    code, _, err = emp("ginn", "show", str(tampered), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "sha256" in err


def test_a_reserved_gpu_that_torch_cannot_see_falls_back_to_cpu(ginn_home):
    """A fresh interpreter starts Ray advertising one GPU: the task asks for it (num_gpus=1),
    torch (CPU build) sees none, and training runs on the CPU with a warning. (The session's
    Ray has no GPU and cannot be restarted with one; export and MLflow are covered above.)"""
    home, _ = ginn_home
    quick = {**SMALL, "home": str(home),  # the volatility table cache of the other tests
             "train": {**SMALL["train"], "epochs": 1, "lambdas": [0.5], "folds": 1}}
    code = (
        "import json, ray\n"
        "ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)\n"
        "from workers.ginn_train import prepare, run_task\n"
        "from workers.ginn_config import parse_ginn_config\n"
        f"cfg = parse_ginn_config({quick!r})\n"
        "r = run_task(prepare(cfg), cfg)\n"
        "import torch\n"
        "print(json.dumps({'device': r.device, 'gpu': r.gpu_reserved, 'warn': r.warnings,\n"
        "                  'cuda': torch.cuda.is_available(), 'models': list(r.results)}))\n"
        "ray.shutdown()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["gpu"] is True
    if out["cuda"]:  # a CUDA build of torch on a GPU machine: the GPU is used, no warning
        assert out["device"] == "cuda" and out["warn"] == []
    else:
        assert out["device"] == "cpu"
        assert len(out["warn"]) == 1 and "torch sees no CUDA device" in out["warn"][0]
    assert "ginn" in out["models"]


def test_the_test_part_never_reaches_training(ginn_home):
    """Changing every close of the test part changes no trained weight and no lambda score:
    training and the lambda choice see the research part only."""
    from workers.ginn_train import fit_models, prepare, prepare_arrays

    home, _ = ginn_home
    cfg = parse_ginn_config({**SMALL, "home": str(home),
                             "train": {**SMALL["train"], "epochs": 2, "lambdas": [0.5]}})
    a = prepare(cfg)
    close = a.close.copy()
    rng = np.random.default_rng(9)
    close[a.research_end:] *= np.exp(np.cumsum(rng.normal(0, 0.05, a.n - a.research_end)))
    from market.volatility import build_vol_table

    v = cfg.volatility
    vol = build_vol_table(close, a.vol.bars_per_year, window=v.window,
                          refit_every=v.refit_every, ewma_lambda=v.ewma_lambda,
                          min_bars=v.min_bars)
    b = prepare_arrays(a.symbol, a.timeframe, a.ts, close, vol, a.spec, cfg)
    assert b.research_end == a.research_end
    lam_a, table_a, res_a = fit_models(a, cfg, "cpu")
    lam_b, table_b, res_b = fit_models(b, cfg, "cpu")
    assert lam_a == lam_b and table_a == table_b
    for name in res_a:
        for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out", "x_mean", "x_std"):
            assert np.array_equal(getattr(res_a[name].weights, k),
                                  getattr(res_b[name].weights, k)), (name, k)


def test_bad_config_key_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SMALL, "home": str(tmp_path), "modle": {"hidden": 4}}))
    code, out, err = emp("ginn", "train", "-c", str(bad), capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "modle" in err and str(bad) in err, err
    code, _, err = emp("ginn", "train", "-c", str(bad.with_name("none.yaml")), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot read" in err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**SMALL, "home": str(tmp_path)}))
    code, _, err = emp("ginn", "train", "-c", str(good), "--epochs", "0", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "train.epochs" in err
    code, _, err = emp("ginn", "train", "-c", str(good), "--local", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and f"no metadata for {SYMBOL}" in err
    code, _, err = emp("ginn", "show", "-c", str(good), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "no GINN model yet" in err


def test_too_little_history_is_a_one_line_error(ginn_home, capsys):
    home, _ = ginn_home
    short = home / "short.yaml"
    short.write_text(yaml.safe_dump({**SMALL, "home": str(home), "until": "1950-04-01"}))
    code, _, err = emp("ginn", "train", "-c", str(short), "--local", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "research" in err and "test" in err, err


def test_an_error_inside_the_ray_task_comes_back_as_one_line(ginn_home, ray_cluster, capsys):
    """20 walk-forward folds leave the first fold too short for one complete window: the
    task's GinnError reaches the user as its one line, not as Ray's remote traceback."""
    home, _ = ginn_home
    cfg = home / "folds.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "home": str(home),
                                   "train": {**SMALL["train"], "folds": 20}}))
    code, out, err = emp("ginn", "train", "-c", str(cfg), capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no complete samples" in err and "Traceback" not in err, err


def test_ray_job_entry_point_reports_one_line(tmp_path):
    """``python -m workers.ginn_train CONFIG`` (what ``ray job submit`` runs)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("symbol: X\ntrain: {epochs: -1}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "workers.ginn_train", str(bad)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "train.epochs" in proc.stderr, proc.stderr


def test_packaged_config_is_valid():
    from workers.ginn_cli import default_ginn_config
    from workers.ginn_config import load_ginn_config

    cfg = load_ginn_config(default_ginn_config())
    assert cfg.symbol == "SP500" and cfg.gate.ratio_max == 0.95 and cfg.train.lambdas[0] == 0.0


# -- systemd ------------------------------------------------------------------------------------

def _units(tmp_path: Path, service: str, timer: str) -> subprocess.CompletedProcess[str]:
    exe = tmp_path / "venv" / "bin" / "emp"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (tmp_path / "emp-ginn.service").write_text(service.replace(SHIPPED_EXEC, str(exe)))
    (tmp_path / "emp-ginn.timer").write_text(timer)
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("EMP_SKIP_SYSTEMD"):
            pytest.skip("systemd-analyze missing and EMP_SKIP_SYSTEMD set")
        pytest.fail("systemd-analyze is missing: apt-get install -y --no-install-recommends "
                    "systemd (or set EMP_SKIP_SYSTEMD=1)", pytrace=False)
    return subprocess.run([tool, "verify", "emp-ginn.service", "emp-ginn.timer"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)


def test_nightly_units_verify(tmp_path):
    service = (OPS / "emp-ginn.service").read_text()
    timer = (OPS / "emp-ginn.timer").read_text()
    res = _units(tmp_path, service, timer)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    assert "\nType=oneshot\n" in service
    assert f"\nExecStart={SHIPPED_EXEC} ginn train -c /etc/emp/ginn.yaml\n" in service
    assert "\nPrivateDevices=" not in service  # the GPU must stay visible
    assert "\nPersistent=true\n" in timer and "\nUnit=emp-ginn.service\n" in timer
    # the check can fail: a misspelt key is reported
    res = _units(tmp_path, service, timer.replace("Persistent=", "Persistant="))
    assert "Persistant" in res.stdout + res.stderr
