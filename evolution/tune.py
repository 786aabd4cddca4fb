"""``emp tune``: a multi-objective Optuna study over the GA's own settings.

Each trial is a short evolution (``driver.run``) with one choice of population, crossover,
mutation, islands and migration interval. The study trades the hypervolume the run reached
(maximised) against the distinct genomes it had to simulate (minimised), so the Pareto trials
are the settings that buy the most front for the compute. Trials live in a resumable sqlite
study under ``$EMP_HOME``; every trial's evolution is an MLflow child run of one "tune" run.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from configs.models import EmpConfig
from evolution.config import EvolutionConfig
from evolution.objectives import hypervolume

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from evolution.data import ResearchData
    from evolution.tracking import Tracker

METRICS = ["hypervolume", "evaluations"]
PARENT_ATTR = "mlflow_parent_run_id"   # study user attr: the tune run all trials nest under
RUN_ATTR = "mlflow_run_id"             # trial user attr: that trial's evolution run


def storage_url(cfg: EmpConfig) -> str:
    """One sqlite file per EMP home, so any study there can be resumed or inspected."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(cfg.home / 'optuna.db').resolve()}"


def default_study_name(cfg: EmpConfig) -> str:
    return f"emp-tune-{cfg.evolution.symbol}-{cfg.evolution.timeframe}"


def _four(n: int) -> int:
    return -(-n // 4) * 4


def population_range(ev: EvolutionConfig) -> tuple[int, int]:
    """Half to double the configured population (multiples of 4, above the migrants)."""
    low = max(8, _four(ev.population // 2), _four(ev.migrants + 1))
    return low, max(low + 8, _four(2 * ev.population))


def suggest(trial: optuna.Trial, ev: EvolutionConfig) -> dict[str, float | int]:
    """The tuned GA settings; fixed ranges, so NSGA-II sees one search space across resumes."""
    low, high = population_range(ev)
    return {"population": trial.suggest_int("population", low, high, step=4),
            "cxpb": trial.suggest_float("cxpb", 0.5, 1.0),
            "mutpb": trial.suggest_float("mutpb", 0.01, 0.3, log=True),
            "islands": trial.suggest_int("islands", 1, 4),
            "migration_interval": trial.suggest_int("migration_interval", 1, 10)}


def trial_config(cfg: EmpConfig, params: dict[str, float | int]) -> EmpConfig:
    """A copy of ``cfg`` with the trial's settings, re-validated like a config file."""
    ev = EvolutionConfig.model_validate({**cfg.evolution.model_dump(), **params})
    return cfg.model_copy(update={"evolution": ev})


def front_hypervolume(front: pd.DataFrame, cfg: EmpConfig) -> float:
    """Same figure as the run's last ``hypervolume`` metric: feasible front rows only."""
    specs = cfg.evolution.objectives
    if front.empty:
        return 0.0
    feasible = front[front["violation"] == 0.0]
    return hypervolume(feasible[[s.name for s in specs]].to_numpy(dtype=np.float64), specs)


def _existing_trials(storage: str, name: str) -> int:
    import optuna

    if name not in optuna.get_all_study_names(storage):
        return 0
    return len(optuna.load_study(study_name=name, storage=storage).trials)


def _parent_tracker(cfg: EmpConfig, study: optuna.Study, name: str) -> Tracker:
    """Re-open the study's tune run when it still exists, so resumed trials nest under it."""
    from mlflow.exceptions import MlflowException

    from evolution.tracking import Tracker

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is not None:
        try:
            return Tracker(cfg.home, cfg.evolution.experiment, run_id=run_id)
        except MlflowException:  # another tracking store, or the run was deleted
            pass
    tracker = Tracker(cfg.home, cfg.evolution.experiment, run_name=f"tune {name}")
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    return tracker


def _trial(trial: optuna.Trial, cfg: EmpConfig, data: ResearchData, parent: Tracker,
           name: str, local: bool, progress: bool) -> tuple[float, float]:
    """One short evolution with the trial's settings, nested under the tune run in MLflow."""
    from evolution import driver

    tcfg = trial_config(cfg, suggest(trial, cfg.evolution))
    evaluator = driver.LocalEvaluator(data, tcfg) if local else None
    result = driver.run(tcfg, evaluator=evaluator, data=data, progress=progress)
    trial.set_user_attr(RUN_ATTR, result.run_id)
    # driver.run creates its own run; nesting it afterwards keeps driver and Tracker unchanged
    for key, value in {"mlflow.parentRunId": parent.run_id,
                       "mlflow.runName": f"{name} trial {trial.number}",
                       "optuna.study": name, "optuna.trial": str(trial.number)}.items():
        parent.client.set_tag(result.run_id, key, value)
    if result.interrupted:
        raise KeyboardInterrupt
    hv = front_hypervolume(result.front, tcfg)
    parent.log_generation(trial.number, {"trial_hypervolume": hv,
                                         "trial_evaluations": result.trials})
    return hv, float(result.trials)


def tune(cfg: EmpConfig, n_trials: int, *, study_name: str | None = None, local: bool = False,
         progress: bool = False) -> optuna.Study:
    """Add ``n_trials`` trials to the (possibly existing) study and return it.

    The sampler is seeded with ``evolution.seed`` plus the trials already in the study: runs are
    reproducible, and a resumed study does not re-draw the settings of its first trials.
    Ctrl-C or SIGTERM ends the current trial as FAIL, marks the tune run KILLED and re-raises.
    """
    import optuna

    from evolution.data import research_data
    from evolution.driver import _sigterm_as_interrupt

    name = study_name or default_study_name(cfg)
    storage = storage_url(cfg)
    seed = cfg.evolution.seed + _existing_trials(storage, name)
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=8,
                                                                      seed=seed))
    with warnings.catch_warnings():  # experimental only in name since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRICS)
    data = research_data(cfg)  # shared by every trial: the tuned settings don't alter it
    low, high = population_range(cfg.evolution)
    restore_signal = _sigterm_as_interrupt()  # a job stop between trials ends cleanly too
    try:
        with _parent_tracker(cfg, study, name) as parent:
            parent.log_params(cfg.model_dump(mode="json"), data.fingerprint(),
                              {"tune.study": name, "tune.storage": storage,
                               "tune.population_range": f"{low}..{high}"})
            parent.set_tags({"emp.kind": "tune", "optuna.study": name})
            study.optimize(lambda t: _trial(t, cfg, data, parent, name, local, progress),
                           n_trials=n_trials)
    finally:
        restore_signal()
    return study
