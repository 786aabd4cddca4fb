"""``emp tune``: a resumable multi-objective Optuna study whose trials are MLflow child runs."""

from __future__ import annotations

import pytest
from test_evolution import BASE

from configs.loader import parse_config
from core.tracking import default_tracking_uri
from emp_cli.main import build_parser
from evolution.tune import PARENT_ATTR, RUN_ATTR, population_range, tune
from market.bootstrap import bootstrap
from market.store import HistoryStore


def test_tune_study_resumes_and_nests_trials_in_mlflow(tmp_path):
    import optuna
    from mlflow import MlflowClient

    raw = {**BASE, "home": str(tmp_path),
           "evolution": {**BASE["evolution"], "population": 8, "generations": 2}}
    cfg = parse_config(raw, "test")
    bootstrap(HistoryStore(cfg.store_root()), cfg.data.symbols, cfg.data.quality)

    study = tune(cfg, 3, local=True)
    assert study.study_name == "emp-tune-SP500-1d"
    assert (tmp_path / "optuna.db").is_file()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and all(len(t.values) == 2 for t in done)
    low, high = population_range(cfg.evolution)
    assert all(low <= t.params["population"] <= high for t in done)
    assert study.best_trials

    again = tune(cfg, 1, local=True)  # same name and storage: the same study grows
    assert again._study_id == study._study_id and len(again.trials) == 4
    assert again.trials[3].params != again.trials[0].params  # resumed sampler draws anew

    client = MlflowClient(default_tracking_uri(cfg.home))
    parent = again.user_attrs[PARENT_ATTR]
    assert client.get_run(parent).data.tags["emp.kind"] == "tune"
    for t in again.trials:
        child = client.get_run(t.user_attrs[RUN_ATTR])
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert child.info.experiment_id == client.get_run(parent).info.experiment_id
        hv = client.get_metric_history(child.info.run_id, "hypervolume")[-1].value
        evals = client.get_metric_history(child.info.run_id, "trials")[-1].value
        assert t.values == pytest.approx([hv, evals])


def test_tune_help(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["tune", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: emp tune") and "--trials" in out and "--study" in out
