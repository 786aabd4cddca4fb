"""``emp gates RUN_ID`` and ``emp audit lookahead RUN_ID``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    g = sub.add_parser(
        "gates", help="judge a run's final Pareto front out of sample (and on the hold-out)",
        description="Replay every candidate of the run's final front on the OOS window (the "
                    "last walk-forward test window, never seen by evolution) and, once per "
                    "candidate, on the hold-out; compute the deflated Sharpe (N = the "
                    "effectively independent trials: clusters of near-copies among the run's "
                    "trials), PBO by CSCV, the Romano-Wolf family-wise p-value of each "
                    "candidate against the benchmark over the whole front, and drawdowns; run "
                    "the look-ahead audit; write $EMP_HOME/runs/RUN_ID/gates/report.{md,json} "
                    "and eligible.json, and log them to the run in MLflow. Every rejection is "
                    "explained: the failing gates and what would have passed, and when nothing "
                    "is eligible, the closest candidate. The policy is the gates section of "
                    "--config when given, else the one saved with the run. A run that did not "
                    "reach its last generation is refused (see --allow-incomplete), and so is "
                    "a history whose training, OOS or hold-out bars changed since the run was "
                    "evolved. Each hold-out read is logged; a repeated read is warned about on "
                    "stderr, where the progress of the long steps goes too.")
    g.add_argument("run_id", metavar="RUN_ID",
                   help="an evolution run under $EMP_HOME/runs, or 'latest'")
    add_config(g)  # type: ignore[operator]
    g.add_argument("--json", action="store_true",
                   help="print the JSON report instead (and no progress on stderr)")
    g.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    g.add_argument("--allow-incomplete", action="store_true",
                   help="judge a run that stopped before its last generation (refused "
                        "otherwise, before its hold-out is read)")
    g.set_defaults(func=cmd_gates)

    a = sub.add_parser("audit", help="audits of a run's candidates",
                       description="Audits that a candidate's results are honest.")
    asub = a.add_subparsers(dest="audit_cmd", required=True, metavar="AUDIT")
    la = asub.add_parser(
        "lookahead", help="replay the front with the history cut at random points",
        description="Rebuild the feature and volatility tables from the history truncated at "
                    "random cut points and replay every front candidate: any table value, "
                    "position, equity or trade before a cut that differs from the full-history "
                    "replay is look-ahead, and fails the audit (exit 3) naming where. "
                    "`emp gates` runs it too.")
    la.add_argument("run_id", metavar="RUN_ID", help="a run under $EMP_HOME/runs, or 'latest'")
    add_config(la)  # type: ignore[operator]
    la.add_argument("--cuts", type=int, default=None, help="cut points (default: the policy's)")
    la.add_argument("--seed", type=int, default=None, help="seed of the cut points")
    la.set_defaults(func=cmd_audit)


def _policy(args: argparse.Namespace, cfg: EmpConfig):  # type: ignore[no-untyped-def]
    return cfg.gates if args.config is not None else None


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    """Each long step on stderr with the seconds since the start (none when ``quiet``)."""
    t0 = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    return say


def cmd_gates(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from gates.judge import judge_run
    from gates.report import holdout_warning, verdict_table

    report = judge_run(cfg.home, args.run_id, _policy(args, cfg), log_mlflow=not args.no_mlflow,
                       allow_incomplete=args.allow_incomplete, progress=_progress(args.json))
    warning = holdout_warning(report)
    if warning:
        print(f"emp gates: warning: {warning}", file=sys.stderr)
    if report["generation"] < report["generations"]:
        print(f"emp gates: warning: run {report['run_id']} stopped at generation "
              f"{report['generation']} of {report['generations']} (--allow-incomplete)",
              file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(verdict_table(report))
        print(f"report: {cfg.home / 'runs' / report['run_id'] / 'gates' / 'report.md'} "
              f"({report['seconds']:.1f} s)")
    return 0 if report["lookahead"]["passed"] else 3


def cmd_audit(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from gates.judge import front_genomes, front_of, load_run, run_audit
    from gates.policy import GateError

    for name in ("cuts", "seed"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "cuts" else 0):
            raise GateError(f"--{name} {value}: must be at least {1 if name == 'cuts' else 0}")
    ctx = load_run(cfg.home, args.run_id, progress=_progress(False))
    policy = _policy(args, cfg) or ctx.cfg.gates
    res = run_audit(ctx, front_genomes(front_of(ctx)), args.cuts or policy.lookahead_cuts,
                    policy.lookahead_seed if args.seed is None else args.seed)
    if not res["passed"]:
        print(f"emp audit lookahead: FAILED: {res['error']}", file=sys.stderr)
        return 3
    print(f"look-ahead audit passed: {res['candidates']} candidates, cuts {res['cuts']}, "
          f"{res['bars_compared']} bar comparisons")
    return 0
