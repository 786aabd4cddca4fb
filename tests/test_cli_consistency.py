"""CLI conventions (issue 10, item 9) and secrets (item 5), end to end in fresh interpreters:
masked credentials against a real MLflow server, -c/--config everywhere, one progress flag,
--version, help on every option, the packaged default config, quiet third-party logs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from core.secrets import install_log_masking, mask_text, mask_uri
from core.tracking import how_to_open
from emp_cli.main import build_parser, default_config, version, walk_parsers

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PASSWORD = "pw-Zq81-secret"
TINY = {
    "data": {"symbols": {"SP500": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1,
                                   "calendar": "nyse",
                                   "costs": {"unit": "bps", "spread": 1, "commission": 0.5,
                                             "slippage": 1}},
                         "NDX": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1,
                                 "calendar": "nyse"}}},
    "volatility": {"window": 250, "refit_every": 500},
    "evolution": {"symbol": "SP500", "population": 8, "generations": 1, "folds": 2, "seed": 7,
                  "min_trades_per_year": 2, "plot_every": 2, "top_k": 1},
}


def run(*args: str, home: Path, cwd: Path = ROOT, env: dict | None = None,
        module: str = "emp_cli.main") -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT),
            "RAY_AUTH_MODE": "disabled", **(env or {})}
    full.pop("EMP_DEBUG", None)
    return subprocess.run([PY, "-m", module, *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A home with the bundled data and a one-generation config."""
    home = tmp_path_factory.mktemp("cli-home")
    cfg = home / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "home": str(home)}))
    proc = run("data", "bootstrap", "-c", str(cfg), home=home)
    assert proc.returncode == 0, proc.stderr
    return home, cfg


# ---- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "shown"), [
    ("http://user:password@host:5000", "http://user:***@host:5000"),
    ("https://alice:p%40ss@mlflow.example/path?x=1", "https://alice:***@mlflow.example/path?x=1"),
    ("postgresql://emp:hunter2@db/mlflow", "postgresql://emp:***@db/mlflow"),
    ("https://ghp_TOKEN@host", "https://***@host"),
    ("http://host:8265/?token=abc&x=1", "http://host:8265/?token=***&x=1"),
    ("sqlite:////home/u/var/mlflow.db", "sqlite:////home/u/var/mlflow.db"),
    ("ray://10.0.0.1:10001", "ray://10.0.0.1:10001"),
])
def test_mask_uri(uri, shown):
    assert mask_uri(uri) == shown
    assert mask_text(f"API request to {uri}/api failed") == f"API request to {shown}/api failed"


def test_printed_links_and_log_records_are_masked(caplog):
    uri = f"http://user:{PASSWORD}@127.0.0.1:9"
    assert PASSWORD not in how_to_open(uri, "1", "abc")
    assert how_to_open("sqlite:////x/mlflow.db").endswith("--backend-store-uri sqlite:////x/mlflow.db")
    install_log_masking()
    with caplog.at_level(logging.INFO):
        logging.getLogger("mlflow.test").info("Connecting to %s", uri)
        logging.getLogger("ray.test").warning(f"address {uri}")
    assert PASSWORD not in caplog.text and "user:***@127.0.0.1:9" in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite behind it) on a free local port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = Path(PY).with_name("mlflow")
    if not mlflow.exists():
        pytest.skip("mlflow CLI not installed next to this interpreter")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/m.db", "--default-artifact-root",
         str(root / "art")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_command_prints_the_tracking_password(tiny, mlflow_server):
    """The issue's three prints: MLflow's "View run at" and "View experiment at" lines (with the
    URI's credentials) and `emp evolve`'s own summary. Also the gates, which log to the run,
    and an unreachable server, whose error quotes the URI."""
    home, cfg = tiny
    env = {"MLFLOW_TRACKING_URI": f"http://emp:{PASSWORD}@127.0.0.1:{mlflow_server}"}
    evolve = run("evolve", "-c", str(cfg), "--local", "--no-progress", home=home, env=env)
    assert evolve.returncode == 0, evolve.stderr[-3000:]
    assert f"http://emp:***@127.0.0.1:{mlflow_server}/#/experiments/" in evolve.stdout
    run_id = evolve.stdout.split("\nrun ")[1].split(":")[0]
    gates = run("gates", run_id, home=home, env=env)
    assert gates.returncode in (0, 3), gates.stderr[-3000:]
    down = run("evolve", "-c", str(cfg), "--local", "--no-progress", home=home,
               env={"MLFLOW_TRACKING_URI": f"http://emp:{PASSWORD}@127.0.0.1:9",
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    assert down.returncode != 0 and "emp:***@127.0.0.1:9" in down.stderr
    logs = "".join(p.read_text(errors="replace") for p in home.rglob("*")
                   if p.is_file() and p.suffix in (".log", ".txt", ".md", ".json", ".err", ".out"))
    for text in (evolve.stdout, evolve.stderr, gates.stdout, gates.stderr, down.stdout,
                 down.stderr, logs):
        assert PASSWORD not in text


# ---- MLflow UI: training view, readable run names ---------------------------------------------

def test_runs_are_named_and_the_experiment_opens_in_the_training_view(tiny):
    from mlflow import MlflowClient

    home, cfg = tiny
    proc = run("evolve", "-c", str(cfg), "--local", "--no-progress", home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Creating initial MLflow database tables" not in proc.stderr  # quiet by default
    run_id = proc.stdout.split("\nrun ")[1].split(":")[0]
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    r = client.get_run(run_id)
    assert r.info.run_name == "SP500-1d-seed7"
    exp = client.get_experiment(r.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_verbose_shows_third_party_info_logs(tmp_path):
    home = tmp_path / "h"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "home": str(home)}))
    assert run("data", "bootstrap", "-c", str(cfg), home=home).returncode == 0
    quiet = run("evolve", "-c", str(cfg), "--local", "--no-progress", home=home)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert " INFO " not in quiet.stderr and "alembic" not in quiet.stderr, quiet.stderr
    (home / "mlflow.db").unlink()
    loud = run("-v", "evolve", "-c", str(cfg), "--local", "--no-progress", home=home)
    assert loud.returncode == 0 and "Creating initial MLflow database tables" in loud.stderr


# ---- one convention everywhere -----------------------------------------------------------------

def test_every_option_of_every_command_has_help():
    missing = [(path, a.option_strings or a.dest)
               for path, p in walk_parsers(build_parser()) for a in p._actions
               if not isinstance(a, argparse._SubParsersAction)
               and (not a.help or a.help == argparse.SUPPRESS)]
    assert missing == []


def test_every_command_takes_short_and_long_config():
    leaves = [(path, p) for path, p in walk_parsers(build_parser())
              if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]
    assert len(leaves) >= 15
    for path, p in leaves:
        assert {"-c", "--config"} <= set(p._option_string_actions), path


def test_progress_is_one_flag_pair():
    parser = build_parser()
    for cmd in ("evolve", "tune"):
        extra = ["--trials", "1"] if cmd == "tune" else []
        assert parser.parse_args([cmd, *extra]).progress is True
        assert parser.parse_args([cmd, *extra, "--no-progress"]).progress is False
        assert parser.parse_args([cmd, *extra, "--progress"]).progress is True
    assert not any("--no-progress" in p._option_string_actions and
                   "--progress" not in p._option_string_actions
                   for _, p in walk_parsers(parser))


def test_version(tmp_path):
    proc = run("--version", home=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"emp {version()}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{version()}"' in pyproject


def test_positional_config_still_works_with_a_deprecation_note(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"evolution": {"generations": 0}}))
    from emp_cli.main import _apply_deprecated_config

    args = build_parser().parse_args(["evolve", str(cfg), "--local"])
    _apply_deprecated_config(args)
    assert args.config == cfg
    both = build_parser().parse_args(["tune", str(cfg), "-c", "other.yaml", "--trials", "1"])
    from core.errors import EmpError

    with pytest.raises(EmpError, match="CONFIG given twice"):
        _apply_deprecated_config(both)


def test_python_m_evolution_positional_form_notes_the_new_form(tiny):
    home, cfg = tiny
    proc = run("run", str(cfg), "--local", "--no-progress", home=home, module="evolution")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "positional CONFIG is deprecated; use: emp evolve -c" in proc.stderr
    assert "generation 1/1" in proc.stdout


# ---- the packaged default config ---------------------------------------------------------------

def test_bootstrap_works_outside_the_repository(tmp_path):
    """No configs/ in the working directory: the packaged default config is used."""
    assert default_config() == ROOT / "configs" / "default.yaml"
    proc = run("data", "bootstrap", home=tmp_path / "h", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = run("data", "list", home=tmp_path / "h", cwd=tmp_path)
    assert "SP500" in listed.stdout and "NDX" in listed.stdout
    shown = json.loads(run("config", "check", home=tmp_path / "h", cwd=tmp_path).stdout)
    assert "EURUSD" in shown["data"]["symbols"]


def test_the_default_config_ships_in_the_wheel(tmp_path):
    pytest.importorskip("setuptools")
    proc = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not available")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("emp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "configs/default.yaml" in names and "configs/quickstart.yaml" in names


# ---- the Ray job's interpreter -----------------------------------------------------------------

def test_entry_point_names_a_wrong_interpreter_and_the_fix(tmp_path):
    """`python -m evolution` under an interpreter without the project's dependencies (the system
    python a Ray job gets when the venv was not activated) says which and what to do."""
    bare = subprocess.run([sys.executable, "-S", "-m", "evolution", "run", "-c", "x.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2
    assert "Traceback" not in bare.stderr
    assert sys.executable in bare.stderr and "cannot import numpy" in bare.stderr
    assert "source /abs/path/to/emp/.venv/bin/activate" in bare.stderr
    assert "/.venv/bin/python -m evolution run" in bare.stderr
