"""Run integrity: resume refuses changed inputs (naming the key) and accepts harmless edits;
checkpoints survive a kill -9 between their two writes and refuse edits; Ctrl-C after the last
generation ends cleanly and resumes; a finished run's MLflow status is never flipped.

Crash and interrupt tests run a real ``python -m emp_cli.main evolve`` process and stop it at
an exact point with the ``EMP_TEST_PAUSE`` hook (``core.integrity.pause_for_test``): the
process touches a marker file there and waits for the test's SIGKILL or SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from configs.loader import parse_config
from core.tracking import default_tracking_uri
from evolution import checkpoint as ckpt
from evolution import driver
from evolution.data import research_data
from market.bootstrap import bootstrap
from market.store import HistoryStore

ROOT = Path(__file__).resolve().parents[1]
SP500 = {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1, "calendar": "nyse",
         "costs": {"unit": "bps", "spread": 1.0, "commission": 0.5, "slippage": 1.0}}
BASE = {
    "data": {"symbols": {"SP500": SP500,
                         "NDX": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1,
                                 "calendar": "nyse"}}},
    "volatility": {"window": 250, "refit_every": 500},
    "evolution": {"symbol": "SP500", "population": 16, "generations": 4, "folds": 2,
                  "seed": 3, "min_trades_per_year": 2, "plot_every": 2, "top_k": 1},
}


def raw_config(home: Path, **evolution) -> dict:
    return {**BASE, "home": str(home), "evolution": {**BASE["evolution"], **evolution}}


def config(home: Path, raw: dict | None = None, **evolution):
    return parse_config(raw or raw_config(home, **evolution), "test")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    h = tmp_path_factory.mktemp("runs-home")
    cfg = config(h)
    bootstrap(HistoryStore(cfg.store_root()), cfg.data.symbols, cfg.data.quality)
    research_data(cfg)  # the volatility cache, once
    return h


def status(home: Path, run_id: str) -> str:
    return MlflowClient(default_tracking_uri(home)).get_run(run_id).info.status


def evolve(cfg, **kw) -> driver.RunResult:
    return driver.run(cfg, local=True, progress=False, **kw)


@pytest.fixture(scope="module")
def whole(home) -> driver.RunResult:
    """The uninterrupted run every resumed one must end on."""
    return evolve(config(home))


# ---- resume: what may change and what may not ----------------------------------------------------

def test_resume_refuses_a_cost_change_naming_the_key_and_accepts_harmless_edits(home, whole):
    first = evolve(config(home), stop_after=2)
    before = status(home, first.run_id)
    ckpt_before = (first.run_dir / ckpt.POINTER).read_bytes()
    costly = raw_config(home)
    costly["data"] = {"symbols": {"SP500": {**SP500, "costs": {**SP500["costs"],
                                                               "spread": 80.0}}}}
    with pytest.raises(driver.ResumeError,
                       match=r"data\.symbols\.SP500\.costs\.spread: 1\.0 → 80\.0"):
        evolve(config(home, costly), resume=first.run_id)
    with pytest.raises(driver.ResumeError, match=r"evolution\.cxpb: 0\.8 → 0\.7"):
        evolve(config(home, cxpb=0.7), resume=first.run_id)
    assert status(home, first.run_id) == before  # refused: MLflow untouched
    assert (first.run_dir / ckpt.POINTER).read_bytes() == ckpt_before
    # experiment name, plots, workers, task size and top_k change nothing of the results
    harmless = config(home, experiment="renamed", plot_every=1, workers=3, min_task_ms=5.0,
                      top_k=2)
    resumed = evolve(harmless, resume=first.run_id)
    assert resumed.generation == 4 and resumed.run_id == first.run_id
    assert list(resumed.front["genome"]) == list(whole.front["genome"])
    assert status(home, first.run_id) == "FINISHED"


def test_resume_refuses_generations_below_the_checkpoint_and_a_finished_run(home, whole):
    assert status(home, whole.run_id) == "FINISHED"
    with pytest.raises(driver.ResumeError, match=r"at generation 4: --generations 2 is below"):
        evolve(config(home, generations=2), resume=whole.run_id)
    with pytest.raises(driver.ResumeError, match="already finished at generation 4 of 4"):
        evolve(config(home), resume=whole.run_id)
    assert status(home, whole.run_id) == "FINISHED"  # never flipped to RUNNING or KILLED
    for bad, why in (("nope", "not a run id"), ("../" + "a" * 29, "not a run id"),
                     ("0" * 32, "no run 0000")):
        with pytest.raises(driver.ResumeError, match=why):
            evolve(config(home), resume=bad)


def test_resume_refuses_re_ingested_training_data_before_resuming(tmp_path):
    from conftest import ingest_generated

    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 2500)))
    costs = {"unit": "bps", "spread": 1.0}
    ingest_generated(tmp_path, "GEN", "1d", close, costs, 4)
    raw = {"home": str(tmp_path), "volatility": {"window": 250, "refit_every": 500},
           "evolution": {"symbol": "GEN", "population": 8, "generations": 3, "folds": 2,
                         "seed": 1, "min_trades_per_year": 0}}
    first = evolve(parse_config(raw, "t"), stop_after=1)
    before = status(tmp_path, first.run_id)
    ingest_generated(tmp_path, "GEN", "1d", close * 1.02, costs, 4)  # the same bars, 2 % higher
    with pytest.raises(driver.ResumeError, match=r"history differs .*: data\.sha256: "):
        evolve(parse_config(raw, "t"), resume=first.run_id)
    assert status(tmp_path, first.run_id) == before
    assert ckpt.generation_of(first.run_dir) == 1


# ---- checkpoints -------------------------------------------------------------------------------

def _pointer(run_dir: Path) -> dict:
    return json.loads((run_dir / ckpt.POINTER).read_text())


def test_an_edited_or_damaged_checkpoint_is_a_clear_error(home, whole):
    run_dir = whole.run_dir
    good = (run_dir / ckpt.POINTER).read_text()
    doc = json.loads(good)

    def refused(edit, match: str) -> None:
        new = dict(doc)
        edit(new)
        (run_dir / ckpt.POINTER).write_text(json.dumps(new))
        with pytest.raises(ckpt.CheckpointError, match=match):
            ckpt.load(run_dir)

    try:
        refused(lambda d: d.update(generation=2), "edited")             # still parses
        refused(lambda d: d["numpy_rng"]["state"].update(state=12345), "edited")
        refused(lambda d: d["python_rng"][1].__setitem__(5, 7), "edited")
        refused(lambda d: d.update(generation="3"), r"generation: Input should be a valid int")
        refused(lambda d: d.pop("trials"), r"trials: Field required")
        refused(lambda d: d.update(islands=None), r"islands: ")
        refused(lambda d: d.update(npz="../../etc.npz"), r"npz: String should match")
        refused(lambda d: d.update(version=2), "version 2")
        (run_dir / ckpt.POINTER).write_text("[1, 2")
        with pytest.raises(ckpt.CheckpointError, match="not JSON"):
            ckpt.load(run_dir)
        (run_dir / ckpt.POINTER).write_text(good)
        npz = run_dir / doc["npz"]
        blob = npz.read_bytes()
        npz.write_bytes(blob[:-7])
        with pytest.raises(ckpt.CheckpointError, match="torn or edited"):
            ckpt.load(run_dir)
        npz.write_bytes(blob)
        ckpt.load(run_dir)
    finally:
        (run_dir / ckpt.POINTER).write_text(good)


def test_only_the_current_and_previous_generations_are_kept(home, whole):
    names = sorted(p.name for p in whole.run_dir.glob("checkpoint-g*.npz"))
    assert [n[:18] for n in names] == ["checkpoint-g000003", "checkpoint-g000004"]
    assert _pointer(whole.run_dir)["npz"] == names[-1]
    assert len(list(whole.run_dir.glob("trials-*.npz"))) == 2
    assert not list(whole.run_dir.glob("*.tmp-*"))


def test_a_second_process_cannot_evolve_the_same_run(home, whole):
    lock = driver.RunLock(whole.run_dir)
    try:
        with pytest.raises(driver.ResumeError, match="another process"):
            driver.RunLock(whole.run_dir)
    finally:
        lock.release()


def _emp(home: Path, cfg_file: Path, *args: str, pause: str | None = None,
         marker: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMP_HOME": str(home),
           "RAY_AUTH_MODE": "disabled"}
    if pause:
        env |= {"EMP_TEST_PAUSE": pause, "EMP_TEST_PAUSE_FILE": str(marker)}
    # Ctrl-C must reach the child even when this test runs in a background job, where the
    # shell starts it with SIGINT ignored (Python keeps an inherited SIG_IGN)
    return subprocess.Popen([sys.executable, "-m", "emp_cli.main", "evolve", "-c",
                             str(cfg_file), "--local", "--no-progress", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"exited {proc.returncode} before the pause: {err[-3000:]}")
        assert time.monotonic() < deadline, "the process never reached the pause point"
        time.sleep(0.05)


def _run_id_of(home: Path, before: set[str]) -> str:
    (new,) = {p.name for p in (home / "runs").iterdir()} - before
    return new


def test_kill_9_between_the_npz_and_the_pointer_resumes_from_the_last_good_generation(
        home, whole, tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(raw_config(home)))
    marker = tmp_path / "paused"
    before = {p.name for p in (home / "runs").iterdir()}
    proc = _emp(home, cfg_file, pause="checkpoint:2", marker=marker)
    _wait_for(marker, proc)
    run_id = _run_id_of(home, before)
    run_dir = home / "runs" / run_id
    os.kill(proc.pid, signal.SIGKILL)  # generation 2's npz is written, the pointer is not
    proc.communicate()
    npz = sorted(p.name for p in run_dir.glob("checkpoint-g*.npz"))
    assert [n[:18] for n in npz] == ["checkpoint-g000000", "checkpoint-g000001",
                                     "checkpoint-g000002"]
    assert _pointer(run_dir)["generation"] == 1 and ckpt.load(run_dir).generation == 1
    assert status(home, run_id) == "RUNNING"  # what a kill -9 leaves
    resumed = evolve(config(home), resume=run_id)
    assert resumed.generation == 4
    assert list(resumed.front["genome"]) == list(whole.front["genome"])
    assert resumed.trials == whole.trials
    assert status(home, run_id) == "FINISHED"


def test_ctrl_c_after_the_last_generation_stops_cleanly_and_resume_finishes(home, whole,
                                                                             tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(raw_config(home)))
    marker = tmp_path / "paused"
    before = {p.name for p in (home / "runs").iterdir()}
    proc = _emp(home, cfg_file, pause="after-last-generation", marker=marker)
    _wait_for(marker, proc)
    run_id = _run_id_of(home, before)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and f"--resume {run_id}" in err
    assert status(home, run_id) == "KILLED"
    assert ckpt.generation_of(home / "runs" / run_id) == 4
    proc = _emp(home, cfg_file, "--resume", run_id)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "generation 4/4" in out and "Traceback" not in err
    assert status(home, run_id) == "FINISHED"
    client = MlflowClient(default_tracking_uri(home))
    assert {a.path for a in client.list_artifacts(run_id, "best")} == {
        a.path for a in client.list_artifacts(whole.run_id, "best")}
    front = json.loads((home / "runs" / run_id / "front.json").read_text())["front"]
    assert [json.dumps(e["genome"]) for e in front] == [
        json.dumps(e["genome"]) for e in json.loads(
            (whole.run_dir / "front.json").read_text())["front"]]
