"""Gates integrity: a changed hold-out or OOS window is refused naming the period; a run that
did not finish is refused before its hold-out is read (unless --allow-incomplete); the hold-out
warning and the progress go to stderr (progress quiet with --json); ``emp backtest`` stays in
the research period unless --include-holdout, and that read is logged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import planted_home

from configs.loader import parse_config
from emp_cli.main import main
from evolution import driver
from gates.judge import judge_run
from gates.policy import GateError
from market.ingest import ingest_bars
from market.readers import SourceRows
from market.store import HistoryStore

SETTINGS = {"volatility": {"window": 250, "refit_every": 500},
            "evolution": {"symbol": "PLANT", "seed": 5, "population": 8, "generations": 2,
                          "folds": 2}}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    home = planted_home(tmp_path_factory.mktemp("gates-integrity"), n=2000)
    cfg = parse_config({"home": str(home), **SETTINGS}, "t")
    finished = driver.run(cfg, local=True, progress=False)
    stopped = driver.run(cfg, local=True, progress=False, stop_after=0)
    return home, cfg, finished, stopped


def _nudge(home, cfg, rows: slice) -> pd.DataFrame:
    """Re-ingest the stored PLANT bars with ``rows`` 1 % higher; the original frame."""
    store = HistoryStore(cfg.store_root())
    frame = store.read_frame("PLANT", "1d")
    changed = frame.copy()
    for col in ("open", "high", "low", "close"):
        changed.loc[changed.index[rows], col] *= 1.01
    _reingest(store, changed)
    return frame


def _reingest(store: HistoryStore, frame: pd.DataFrame) -> None:
    from market.config import QualityConfig

    cols = ["ts", "open", "high", "low", "close", "volume"]
    ingest_bars(store, "PLANT", "1d", SourceRows(frame[cols].reset_index(drop=True),
                                                 np.arange(len(frame))),
                store.meta("PLANT"), QualityConfig(severity={"absurd_return": "off",
                                                             "gap": "off"}))


def test_a_changed_holdout_or_oos_window_is_refused_naming_the_period(planted):
    home, cfg, finished, _ = planted
    original = _nudge(home, cfg, slice(-39, None))  # 39 hold-out bars
    try:
        with pytest.raises(GateError, match=r"the hold-out of PLANT/1d \(.*, 400 bars\) "
                                            r"changed since run"):
            judge_run(home, finished.run_id, log_mlflow=False)
        _reingest(HistoryStore(cfg.store_root()), original)
        lay = json.loads((finished.run_dir / "data.json").read_text())
        _nudge(home, cfg, slice(-lay["holdout_bars"] - 5, -lay["holdout_bars"]))
        with pytest.raises(GateError, match=r"the purge and OOS window of PLANT/1d"):
            judge_run(home, finished.run_id, log_mlflow=False)
    finally:
        _reingest(HistoryStore(cfg.store_root()), original)
    assert not (finished.run_dir / "gates").exists()  # refused before any hold-out read


def test_an_unfinished_run_is_refused_unless_allowed(planted, capsys, monkeypatch):
    home, _, _, stopped = planted
    monkeypatch.setenv("EMP_HOME", str(home))
    monkeypatch.chdir(home)
    assert main(["gates", stopped.run_id, "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "did not finish: it stopped at generation 0 of 2" in err
    assert "--allow-incomplete" in err
    assert not (stopped.run_dir / "gates").exists()
    assert main(["gates", stopped.run_id, "--no-mlflow", "--allow-incomplete"]) == 0
    err = capsys.readouterr().err
    assert "stopped at generation 0 of 2 (--allow-incomplete)" in err


def test_holdout_warning_and_progress_on_stderr_quiet_with_json(planted, capsys, monkeypatch):
    home, _, finished, _ = planted
    monkeypatch.setenv("EMP_HOME", str(home))
    monkeypatch.chdir(home)
    assert main(["gates", finished.run_id, "--no-mlflow"]) == 0
    first = capsys.readouterr()
    for step in ("loading PLANT/1d history", "look-ahead audit", "candidate 1/"):
        assert step in first.err, first.err
    assert "warning" not in first.err and "eligible of" in first.out
    assert main(["gates", finished.run_id, "--no-mlflow", "--json"]) == 0
    second = capsys.readouterr()
    assert second.err.strip().splitlines() == [
        "emp gates: warning: the hold-out had already been read by 1 earlier gate pass(es) "
        "of this run; if the policy or the strategy was changed after seeing it, its figures "
        "are no longer untouched evidence"]
    assert json.loads(second.out)["holdout_reads"] == 2


def test_backtest_stays_in_the_research_period_and_logs_a_holdout_read(planted, capsys,
                                                                        monkeypatch, tmp_path):
    home, _, finished, _ = planted
    genome = tmp_path / "g.json"
    genome.write_text(json.dumps(json.loads((finished.run_dir / "front.json").read_text())
                                 ["front"][0]["genome"]))
    monkeypatch.setenv("EMP_HOME", str(home))
    monkeypatch.chdir(home)
    log = home / "holdout_reads.json"
    before = json.loads(log.read_text()).get("PLANT/1d", []) if log.exists() else []
    assert main(["backtest", str(genome), "--symbol", "PLANT", "--trades", "0"]) == 0
    out = capsys.readouterr().out
    assert "(1600 bars, research period)" in out  # 2000 bars less the 20 % hold-out
    assert (json.loads(log.read_text()).get("PLANT/1d", []) if log.exists() else []) == before
    assert main(["backtest", str(genome), "--symbol", "PLANT", "--include-holdout",
                 "--trades", "0"]) == 0
    res = capsys.readouterr()
    assert "(2000 bars, includes the hold-out)" in res.out
    assert "reading the hold-out of PLANT/1d" in res.err
    reads = json.loads(log.read_text())["PLANT/1d"]
    assert len(reads) == len(before) + 1 and reads[-1]["by"] == "backtest"
    # the gates now warn that a backtest has read this hold-out
    assert main(["gates", finished.run_id, "--no-mlflow", "--json"]) == 0
    assert "1 backtest(s) with --include-holdout" in capsys.readouterr().err


def test_bars_appended_after_a_run_leave_its_judgement_alone(planted):
    """A live executor (or a later ingest) appends bars to the history: the run's periods are
    fractions of the history it was evolved on, so it is judged on those bars, not the
    longer history (whose periods would shift and fail the digest check)."""
    home, cfg, finished, _ = planted
    before = judge_run(home, finished.run_id, log_mlflow=False)
    store = HistoryStore(cfg.store_root())
    frame = store.read_frame("PLANT", "1d")
    tail = frame.iloc[-60:].copy()
    tail["ts"] = tail["ts"] + (frame["ts"].iloc[-1] - frame["ts"].iloc[-61])
    _reingest(store, pd.concat([frame, tail], ignore_index=True))
    assert len(store.read_frame("PLANT", "1d")) == len(frame) + 60
    after = judge_run(home, finished.run_id, log_mlflow=False)
    assert after["history_sha256"] == before["history_sha256"]
    assert after["history_bars"] == before["history_bars"] == len(frame)
    assert after["eligible"] == before["eligible"]
    assert [c["figures"] for c in after["candidates"]] == [
        c["figures"] for c in before["candidates"]]
