"""Every user error of evolve, resume, tune, gates, audit, backtest and genome ends as one
``emp: error: …`` message naming the problem, exit status 2, and no traceback: each bad
invocation runs as a real ``python -m emp_cli.main`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configs.loader import parse_config
from evolution import checkpoint as ckpt
from evolution import driver
from market.bootstrap import bootstrap
from market.store import HistoryStore

ROOT = Path(__file__).resolve().parents[1]
SP500 = {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1, "calendar": "nyse",
         "costs": {"unit": "bps", "spread": 1.0, "commission": 0.5, "slippage": 1.0}}


def raw_config(home: Path, **evolution) -> dict:
    return {"home": str(home), "data": {"symbols": {"SP500": SP500, "NDX": {**SP500}}},
            "volatility": {"window": 250, "refit_every": 500},
            "evolution": {"symbol": "SP500", "population": 8, "generations": 2, "folds": 2,
                          "seed": 1, "min_trades_per_year": 0, **evolution}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A home with the bundled history, config files and three runs: finished (2 of 2),
    stopped at generation 0 (of 2), and one whose checkpoint was edited."""
    home = tmp_path_factory.mktemp("errors-home")
    cfg = parse_config(raw_config(home), "t")
    bootstrap(HistoryStore(cfg.store_root()), cfg.data.symbols, cfg.data.quality)

    def write(name: str, raw: dict) -> str:
        path = home / name
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    finished = driver.run(cfg, local=True, progress=False)
    stopped = driver.run(cfg, local=True, progress=False, stop_after=0)
    edited = driver.run(cfg, local=True, progress=False, stop_after=0)
    pointer = edited.run_dir / ckpt.POINTER
    pointer.write_text(pointer.read_text().replace('"generation": 0', '"generation": 1'))
    costly = raw_config(home)
    costly["data"]["symbols"]["SP500"] = {**SP500, "costs": {**SP500["costs"], "spread": 80.0}}
    genome = home / "g.json"
    subprocess.run([sys.executable, "-m", "emp_cli.main", "genome", "random", "--seed", "3",
                    "--out", str(genome)], cwd=ROOT, env=_env(home), check=True,
                   capture_output=True)
    return {"home": str(home), "cfg": write("run.yaml", raw_config(home)),
            "costly": write("costly.yaml", costly),
            "short": write("short.yaml", raw_config(home, folds=20, warmup_bars=3000)),
            "nosym": write("nosym.yaml", {**raw_config(home), "evolution": {
                **raw_config(home)["evolution"], "symbol": "NOPE"}}),
            "fin": finished.run_id, "part": stopped.run_id, "edited": edited.run_id,
            "genome": str(genome)}


def _env(home: Path | str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EMP_HOME": str(home),
            "RAY_AUTH_MODE": "disabled"}


# (argv with {placeholders} from `world`, a phrase the message must contain)
CASES = [
    (["evolve", "-c", "{cfg}", "--local", "--resume", "nope"], "is not a run id"),
    (["evolve", "-c", "{cfg}", "--local", "--resume", "../" + "a" * 29], "is not a run id"),
    (["evolve", "-c", "{cfg}", "--local", "--resume", "0" * 32], "no run 000000"),
    (["evolve", "-c", "{cfg}", "--local", "--generations", "0"], "--generations 0"),
    (["evolve", "-c", "{cfg}", "--local", "--generations", "-3", "--resume", "{part}"],
     "--generations -3"),
    (["evolve", "-c", "{short}", "--local"], "need at least"),
    (["evolve", "-c", "{nosym}", "--local"], "NOPE"),
    (["evolve", "-c", "{cfg}", "--local", "--resume", "{fin}"], "already finished at generation 2"),
    (["evolve", "-c", "{cfg}", "--local", "--resume", "{fin}", "--generations", "1"],
     "is at generation 2: --generations 1 is below it"),
    (["evolve", "-c", "{costly}", "--local", "--resume", "{part}"],
     "data.symbols.SP500.costs.spread: 1.0 → 80.0"),
    (["evolve", "-c", "{cfg}", "--local", "--resume", "{edited}"], "was edited"),
    (["tune", "-c", "{cfg}", "--local", "--trials", "0"], "--trials 0"),
    (["tune", "-c", "{cfg}", "--local", "--trials", "1", "--generations", "0"], "--generations 0"),
    (["gates", "nope"], "is not a run id"),
    (["gates", "f" * 32], "no run 'ffff"),
    (["gates", "{part}"], "did not finish: it stopped at generation 0 of 2"),
    (["audit", "lookahead", "{fin}", "--cuts", "0"], "--cuts 0"),
    (["backtest", "{genome}", "--symbol", "SP500", "--start", "2010-01-01", "--end",
      "2005-01-01"], "is not before --end"),
    (["backtest", "{genome}", "--symbol", "SP500", "--start", "yesterday-ish"],
     "--start 'yesterday-ish' is not a date"),
    (["backtest", "{genome}", "--symbol", "SP500", "--end", "2099-13-45"], "is not a date"),
    (["backtest", "{genome}", "--symbol", "SP500", "--end", "2018-06-01"],
     "reaches into the hold-out of SP500/1d"),
    (["backtest", "{genome}", "--symbol", "SP500", "--start", "2030-01-01",
      "--include-holdout"], "no bars of SP500/1d"),
    (["backtest", "{genome}", "--symbol", "SP500", "--trades", "-1"], "--trades -1"),
    (["backtest", "{home}/missing.json", "--symbol", "SP500"], "cannot read"),
    (["genome", "random", "--seed", "-1"], "--seed -1"),
]


@pytest.mark.parametrize(("argv", "phrase"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_bad_invocation_is_one_clean_error(world, argv, phrase):
    args = [a.format(**world) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "emp_cli.main", *args], cwd=ROOT,
                          env=_env(world["home"]), capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.startswith("emp: error: "), proc.stderr[-3000:]
    assert phrase.format(**world) in proc.stderr, proc.stderr


def test_refusals_leave_the_runs_as_they_were(world):
    """After every refusal above, the finished run is still FINISHED and nothing read the
    stopped run's hold-out."""
    from mlflow.tracking import MlflowClient

    from core.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(Path(world["home"])))
    assert client.get_run(world["fin"]).info.status == "FINISHED"
    runs = Path(world["home"]) / "runs"
    assert not (runs / world["part"] / "gates").exists()
    assert json.loads((runs / world["fin"] / ckpt.POINTER).read_text())["generation"] == 2
