"""``emp evolve -c CONFIG`` and ``python -m evolution run -c CONFIG``: run or resume an evolution."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    ev = sub.add_parser(
        "evolve", help="evolve strategies (NSGA-II on Ray, tracked in MLflow)",
        description="Run an evolution on the research period of the configured symbol. Uses "
                    "the Ray cluster at $RAY_ADDRESS, or an embedded local Ray. Every generation "
                    "is checkpointed under $EMP_HOME/runs/RUN_ID and logged to MLflow "
                    "(sqlite:///$EMP_HOME/mlflow.db unless $MLFLOW_TRACKING_URI). Ctrl-C or a job "
                    "stop ends cleanly; --resume RUN_ID continues exactly.")
    from emp_cli.main import add_deprecated_config_positional, add_progress

    add_config(ev)  # type: ignore[operator]
    add_deprecated_config_positional(ev)
    ev.add_argument("--resume", metavar="RUN_ID",
                    help="continue a stopped run from its last complete generation; refused, "
                         "naming the key, when a setting that changes results, the symbol's "
                         "costs or the data differ from the run's start (experiment, "
                         "plot_every, workers, min_task_ms, top_k and generations may change)")
    ev.add_argument("--generations", type=int, metavar="N",
                    help="override evolution.generations (at least 1; on --resume, not below "
                         "the checkpoint's generation)")
    ev.add_argument("--local", action="store_true",
                    help="evaluate in this process without Ray (small runs, debugging)")
    add_progress(ev, what="a progress bar of the generations on stderr")
    ev.set_defaults(func=cmd_evolve)


def cmd_evolve(args: argparse.Namespace, cfg: EmpConfig) -> int:
    try:
        return _evolve(args, cfg)
    except KeyboardInterrupt:  # before the run opened, or while printing its result
        again = f" -c {args.config}" if args.config is not None else ""
        print("stopped" + (f"; continue with: emp evolve{again} --resume {args.resume}"
                           if args.resume else ""), file=sys.stderr)
        return 130


def _evolve(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core.errors import EmpError
    from core.progress import vol_fit_progress
    from core.tracking import default_tracking_uri, how_to_open
    from evolution.driver import print_front, run

    # main() has already loaded and validated args.config (the positional CONFIG) into cfg
    if args.generations is not None:
        if args.generations < 1:
            raise EmpError(f"--generations {args.generations}: a run needs at least 1 "
                           f"generation")
        cfg.evolution.generations = args.generations
    result = run(cfg, resume=args.resume, local=args.local, progress=args.progress,
                 vol_progress=vol_fit_progress() if args.progress else None)
    print_front(result.front, cfg)
    uri = default_tracking_uri(cfg.home)
    print(f"\nrun {result.run_id}: generation {result.generation}/{cfg.evolution.generations}, "
          f"{result.trials} distinct genomes evaluated")
    exp_id = None
    if uri.startswith(("http://", "https://")):  # a server: link straight to the run
        from mlflow import MlflowClient

        exp_id = MlflowClient(uri).get_run(result.run_id).info.experiment_id
    print(f"MLflow: experiment '{cfg.evolution.experiment}', run {result.run_id}\n"
          f"  {how_to_open(uri, exp_id, result.run_id)}")
    if result.interrupted:
        again = f" -c {args.config}" if args.config is not None else ""
        print(f"stopped; continue with: emp evolve{again} --resume {result.run_id}",
              file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m evolution run -c CONFIG [options]`` is ``emp evolve -c CONFIG [options]`` (the
    Ray job entry point); one parser, so the two can never drift apart."""
    from emp_cli.main import main as emp_main

    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] != "run":
        print("usage: python -m evolution run -c CONFIG [--resume RUN_ID] [--generations N] "
              "[--local] [--no-progress]", file=sys.stderr)
        return 2
    return emp_main(["evolve", *args[1:]])


def register_tune(sub: argparse._SubParsersAction, add_config: object) -> None:
    p = sub.add_parser(
        "tune", help="tune the GA's own settings with a multi-objective Optuna study",
        description="Search population, crossover, mutation, islands and migration interval: "
                    "each trial is a short evolution (the config's generations) on the research "
                    "period. Objectives: maximise the final hypervolume, minimise the distinct "
                    "genomes evaluated. The study lives in sqlite:///$EMP_HOME/optuna.db; "
                    "running again with the same --study adds trials to it. Each trial is an "
                    "MLflow child run of one 'tune' run in the config's experiment.")
    from emp_cli.main import add_deprecated_config_positional, add_progress

    add_config(p)  # type: ignore[operator]
    add_deprecated_config_positional(p)
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="trials to add to the study this call")
    p.add_argument("--study", metavar="NAME",
                   help="study name (default: emp-tune-SYMBOL-TIMEFRAME)")
    p.add_argument("--generations", type=int, help="override evolution.generations per trial")
    p.add_argument("--local", action="store_true",
                   help="evaluate in this process without Ray (small runs, debugging)")
    add_progress(p, what="a progress bar of each trial's generations on stderr")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace, cfg: EmpConfig) -> int:
    import optuna

    from core.errors import EmpError
    from core.tracking import default_tracking_uri, display_uri, how_to_open
    from evolution.tune import METRICS, PARENT_ATTR, RUN_ATTR, default_study_name, storage_url
    from evolution.tune import tune as run_tune

    if args.trials < 1:
        raise EmpError(f"--trials {args.trials}: add at least 1 trial")
    if args.generations is not None:
        if args.generations < 1:
            raise EmpError(f"--generations {args.generations}: a run needs at least 1 "
                           f"generation")
        cfg.evolution.generations = args.generations
    name = args.study or default_study_name(cfg)
    interrupted = False
    try:
        run_tune(cfg, args.trials, study_name=name, local=args.local, progress=args.progress)
    except KeyboardInterrupt:
        interrupted = True
    study = optuna.load_study(study_name=name, storage=storage_url(cfg))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = sorted(study.best_trials, key=lambda t: -t.values[0]) if done else []
    print(f"\nstudy '{name}': {len(done)} complete trials of {len(study.trials)}; "
          f"{len(best)} Pareto-optimal ({METRICS[0]} up, {METRICS[1]} down):")
    for t in best:
        values = "  ".join(f"{m}={v:.4g}" for m, v in zip(METRICS, t.values, strict=True))
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in t.params.items())
        print(f"[trial {t.number}] {values}\n    {params}  (run {t.user_attrs.get(RUN_ATTR)})")
    uri = default_tracking_uri(cfg.home)
    print(f"\nMLflow: experiment '{cfg.evolution.experiment}', tune run "
          f"{study.user_attrs.get(PARENT_ATTR)} (trials nested under it)\n"
          f"  {how_to_open(uri)}\n"
          f"Optuna storage: {display_uri(storage_url(cfg))}")
    if interrupted:
        again = f" -c {args.config}" if args.config is not None else ""
        print(f"stopped; add trials with: emp tune{again} --trials N --study {name}",
              file=sys.stderr)
        return 130
    return 0
