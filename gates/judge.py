"""``emp gates RUN_ID``: judge the final Pareto front of a run on data it never saw.

For every front candidate this replays the genome on the run's own layout
(``gates.layout.walk_forward_layout``): the training folds (for the deflated Sharpe), the OOS
window (the last walk-forward fold's test window) and, once per candidate, the hold-out. It adds
the run-level statistics (PBO of the final population on the OOS window, the trial count and
the variance of trial Sharpes), runs the look-ahead audit, and writes the gate report.

It reads the run directory only: ``config.json``, ``data.json`` and the run record
(``front.json``, ``trials.npz``; see ``core.run_record``), plus the history store. No DEAP, no
Ray, no GA code: parsing the saved config loads the config schema, whose ``evolution`` section
model (``evolution.config``) is the only part of ``evolution/`` a gate pass imports.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import holdout_log, run_record
from core.atomic import atomic_write_bytes
from core.digest import tables_digests
from core.jsonio import json_float, read_json, write_json
from core.tracking import default_tracking_uri
from fitness.metrics import METRIC_INDEX
from fitness.simulator import Backtest, Tables, build_tables, simulate
from gates import stats
from gates.familywise import both_pvalues
from gates.layout import Layout, layout_for, load_history, period_digests
from gates.lookahead import LookaheadError, audit_lookahead, cut_points
from gates.policy import GATES, GateError, GatePolicy, drawdown_ratio, judge, moments
from gates.trials import TrialCount, count_trials
from genome.codec import from_json
from market.config import SymbolMeta
from market.loader import Bars, truncate

if TYPE_CHECKING:  # configs.models composes every package's section, evolution's included
    from configs.models import EmpConfig


@dataclass
class RunContext:
    """A finished (or stopped) run with the data it was evolved on, rebuilt from disk."""

    run_id: str
    run_dir: Path
    cfg: EmpConfig
    record: run_record.RunRecord  # the final front and the trials, as the GA left them
    bars: Bars          # the whole history, hold-out included
    meta: SymbolMeta
    layout: Layout
    tables: Tables = field(repr=False)


Progress = Callable[[str], None]
RUN_ID = re.compile(r"[0-9a-f]{32}")


def _quiet(message: str) -> None:
    return None


def resolve_run_id(home: Path, run_id: str) -> str:
    """``latest`` names the run started last under ``home`` (by its saved config's time)."""
    if run_id != "latest":
        if not RUN_ID.fullmatch(run_id):
            raise GateError(f"{run_id!r} is not a run id (32 hex characters, as `emp evolve` "
                            f"prints) nor 'latest'")
        return run_id
    runs = sorted((Path(home) / "runs").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise GateError(f"no runs under {Path(home) / 'runs'}")
    return runs[-1].parent.name


# the periods data.json fingerprints, as the refusal names them
PERIODS = (("sha256", "training data"), ("oos_sha256", "purge and OOS window"),
           ("holdout_sha256", "hold-out"))


def load_run(home: Path, run_id: str, *, require_finished: bool = False,
             progress: Progress = _quiet) -> RunContext:
    """The run and its history, checked: with ``require_finished``, a run that stopped before
    its last generation is refused; a history whose training, OOS or hold-out bars changed
    since the run was evolved is refused, naming the period."""
    from configs.loader import ConfigError, parse_config  # the whole schema: only when judging

    run_id = resolve_run_id(home, run_id)
    run_dir = Path(home) / "runs" / run_id
    if not (run_dir / "config.json").exists():
        known = sorted(p.name for p in (Path(home) / "runs").glob("*") if p.is_dir())
        raise GateError(f"no run {run_id!r} under {Path(home) / 'runs'} (runs there: "
                        f"{', '.join(known[-5:]) or 'none'})")
    try:
        cfg = parse_config(read_json(run_dir / "config.json", GateError),
                           str(run_dir / "config.json"))
    except ConfigError as exc:
        raise GateError(f"{run_dir / 'config.json'}: {exc}") from None
    cfg = cfg.model_copy(update={"home": Path(home)})
    record = run_record.read(run_dir)
    generation, target = int(record.front["generation"]), cfg.evolution.generations
    if require_finished and generation < target:
        raise GateError(
            f"run {run_id} did not finish: it stopped at generation {generation} of {target}. "
            f"Continue it with `emp evolve CONFIG --resume {run_id}`, or judge what it has "
            f"with --allow-incomplete (that reads the hold-out too)")
    progress(f"loading {cfg.evolution.symbol}/{cfg.evolution.timeframe} history")
    bars, meta = load_history(cfg)
    saved = run_dir / "data.json"
    want = read_json(saved, GateError) if saved.exists() else {}
    n_run = want.get("n_total")
    if isinstance(n_run, int) and 0 < n_run < bars.n_bars:
        # bars appended since the run (a live executor's, a later ingest): the periods are
        # fractions of the run's history, so it is judged on the bars it was evolved on
        progress(f"the history has {bars.n_bars - n_run} bars newer than run {run_id}: "
                 f"judged on its {n_run}")
        bars = truncate(bars, n_run)
    layout = layout_for(cfg, bars.n_bars)
    if saved.exists():
        got = {"sha256": truncate(bars, layout.train_end).fingerprint(),
               **period_digests(bars, layout)}
        spans = {"sha256": (0, layout.train_end),
                 "oos_sha256": (layout.train_end, layout.holdout_start),
                 "holdout_sha256": (layout.holdout_start, layout.n_total)}
        idx = bars.index()
        for key, name in PERIODS:
            if key in want and want[key] != got[key]:  # runs before 0.x lack the later keys
                a, b = spans[key]
                raise GateError(
                    f"the {name} of {cfg.evolution.symbol}/{cfg.evolution.timeframe} "
                    f"({idx[a].date()}..{idx[b - 1].date()}, {b - a} bars) changed since run "
                    f"{run_id} was evolved (sha256 {str(want[key])[:12]} -> {got[key][:12]}); "
                    f"judge it on the history it was evolved on")
    progress("building the feature and volatility tables")
    tables = build_tables(bars, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache")
    if saved.exists():  # the tables are causal: their training columns are the run's tables
        want = read_json(saved, GateError)
        for key, got in tables_digests(tables, layout.train_end).items():
            if key in want and want[key] != got:
                raise GateError(f"run {run_id}'s tables differ from the ones rebuilt here "
                                f"({key} {got[:12]} != {str(want[key])[:12]}: another arch, "
                                f"BLAS, CPU or fit code); judge it where it was evolved")
    return RunContext(run_id, run_dir, cfg, record, bars, meta, layout, tables)


def front_of(ctx: RunContext) -> list[dict[str, Any]]:
    """The run's final Pareto front (constraint-domination), one entry per distinct strategy,
    best weighted fitness first, as the run record holds it."""
    return list(ctx.record.front["front"])


def _sim(ctx: RunContext, genome: np.ndarray, a: int, b: int) -> Backtest:
    return simulate(genome, ctx.tables, ctx.bars, ctx.meta, a, b, ctx.cfg.fitness)


def front_genomes(front: list[dict[str, Any]]) -> np.ndarray:
    """[n, N_GENES] genomes of front entries, in their order (checked JSON + sha256)."""
    return np.stack([from_json(json.dumps(c["genome"])) for c in front])


def trial_sharpe_variance(ctx: RunContext) -> tuple[int, float]:
    """The raw trial figures, kept for comparison: N = distinct genomes evaluated, and the
    variance of all their per-bar Sharpe ratios (mean over training folds, de-annualised)."""
    m = ctx.record.arrays["metrics"]
    n = int(m.shape[0])
    if n < 2:
        return max(n, 1), 0.0
    sr = m[:, :, METRIC_INDEX["sharpe"]].mean(axis=1) / math.sqrt(ctx.tables.bars_per_year)
    return n, float(np.var(sr[np.isfinite(sr)], ddof=1))


def effective_trials(ctx: RunContext) -> TrialCount:
    """N_eff from the run's per-trial return sketches (``gates.trials``)."""
    arrays = ctx.record.arrays
    traded = arrays["metrics"][:, :, METRIC_INDEX["trade_count"]].sum(axis=1) > 0
    return count_trials(arrays["sketches"], traded)


def population_oos_returns(ctx: RunContext) -> np.ndarray:
    """[T_oos, N] per-bar OOS returns of the final population's distinct genomes."""
    a, b = (int(x) for x in ctx.layout.oos[0])
    return np.stack([_sim(ctx, g, a, b).returns for g in ctx.record.arrays["population"]],
                    axis=1)


def benchmark_returns(ctx: RunContext, kind: str) -> np.ndarray:
    a, b = (int(x) for x in ctx.layout.oos[0])
    if kind == "flat":
        return np.zeros(b - a)
    c = ctx.bars.close[0]
    return c[a:b] / c[a - 1:b - 1] - 1.0


def candidate_figures(ctx: RunContext, genome: np.ndarray, trials: TrialCount,
                      raw: tuple[int, float], policy: GatePolicy
                      ) -> tuple[dict[str, float], np.ndarray]:
    """Every figure of one genome except the family-wise ones, and its OOS returns; the
    hold-out is read here, once."""
    training = np.concatenate([_sim(ctx, genome, int(a), int(b)).returns
                               for a, b in ctx.layout.segments])
    sr, skew, kurt = moments(training)
    sr0 = trials.expected_max_sharpe(training.size)
    annual = math.sqrt(ctx.tables.bars_per_year)
    try:
        dsr = stats.probabilistic_sharpe(sr, sr0, training.size, skew, kurt)
        dsr_raw = stats.deflated_sharpe(sr, training.size, skew, kurt, *raw)
        bar = stats.sharpe_needed(policy.dsr_min, sr0, training.size, skew, kurt) \
            if 0.0 < policy.dsr_min < 1.0 else math.nan
    except ValueError:  # a degenerate moment combination is no evidence: the gate fails
        dsr = dsr_raw = bar = math.nan
    oa, ob = (int(x) for x in ctx.layout.oos[0])
    oos = _sim(ctx, genome, oa, ob)
    hold = _sim(ctx, genome, ctx.layout.holdout_start, ctx.layout.n_total)
    om, hm = oos.metrics, hold.metrics
    figures = {
        "training_sharpe": float(sr * annual), "training_bars": float(training.size),
        "training_skew": skew, "training_kurtosis": kurt,
        "dsr": dsr, "deflated_bar": bar * annual, "dsr_raw": dsr_raw,
        "oos_sharpe": om["sharpe"], "oos_max_drawdown": om["max_drawdown"],
        "oos_trades_per_year": om["trades_per_year"], "oos_annual_return": om["annual_return"],
        "holdout_sharpe": hm["sharpe"], "holdout_max_drawdown": hm["max_drawdown"],
        "holdout_annual_return": hm["annual_return"],
        "holdout_drawdown_ratio": drawdown_ratio(hm["max_drawdown"], om["max_drawdown"]),
    }
    return figures, oos.returns


def familywise_figures(oos: np.ndarray, bench: np.ndarray, policy: GatePolicy
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each front candidate's Romano–Wolf step-down p-value over the whole front, and its own
    bootstrap p-value (reported, not gated), on the OOS excess returns ``[T, K]``."""
    bs = policy.bootstrap
    return both_pvalues(oos - bench[:, None], block_size=min(bs.block_size, bench.size),
                        reps=bs.reps, seed=bs.seed)


def run_audit(ctx: RunContext, genomes: np.ndarray, cuts: int, seed: int) -> dict[str, object]:
    """The look-ahead audit over the whole history; a failure is reported, never swallowed."""
    start = int(ctx.layout.segments[0, 0])
    points = cut_points(ctx.bars.n_bars, start, cuts, seed)
    try:
        res = audit_lookahead(genomes, ctx.bars, ctx.meta, start=start, cuts=points,
                              vol=ctx.cfg.volatility, sim=ctx.cfg.fitness,
                              full_tables=ctx.tables)
    except LookaheadError as exc:
        return {"passed": False, "cuts": points, "error": str(exc)}
    return {"passed": True, "cuts": res.cuts, "candidates": res.candidates,
            "bars_compared": res.bars_compared, "snapshots": res.snapshots,
            "continued_compared": res.continued_compared}


def _holdout_reads(ctx: RunContext, policy_sha: str) -> tuple[int, list[dict]]:
    """Count this gate pass that reads the run's hold-out: in the run's own log
    (``runs/<id>/gates/holdout_reads.json``: its gate passes so far) and in the history's log
    (``core.holdout_log``). Returns this run's count and the history's earlier reads by other
    commands (backtests, other runs' gate passes)."""
    entry = {"time": holdout_log.now(), "policy_sha256": policy_sha}
    mine = holdout_log.append(ctx.run_dir / "gates" / "holdout_reads.json", entry)
    idx = ctx.bars.index()
    series = f"{ctx.cfg.evolution.symbol}/{ctx.cfg.evolution.timeframe}"
    every = holdout_log.record(ctx.cfg.home, series, {
        "by": f"gates {ctx.run_id}", "first": str(idx[ctx.layout.holdout_start].date()),
        "last": str(idx[-1].date())})
    others = [r for r in every[:-1] if r.get("by") != f"gates {ctx.run_id}"]
    return len(mine), others


def judge_run(home: Path, run_id: str, policy: GatePolicy | None = None, *,
              log_mlflow: bool = True, allow_incomplete: bool = False,
              progress: Progress = _quiet) -> dict:
    """Judge a run's final front; write ``runs/<id>/gates/report.{json,md}`` and
    ``eligible.json``; log them to the run in MLflow. Returns the JSON report.

    A run that did not reach its last generation is refused unless ``allow_incomplete``, before
    anything reads its hold-out. ``progress`` hears of each long step."""
    t0 = time.perf_counter()
    ctx = load_run(home, run_id, require_finished=not allow_incomplete, progress=progress)
    run_id = ctx.run_id
    policy = policy or ctx.cfg.gates
    front = front_of(ctx)
    generation = int(ctx.record.front["generation"])
    if not front:
        raise GateError(f"run {run_id} has no front to judge (checkpoint at generation "
                        f"{generation})")
    raw = trial_sharpe_variance(ctx)
    progress(f"counting effectively independent trials among {raw[0]}")
    trials = effective_trials(ctx)
    progress(f"replaying the final population ({len(ctx.record.arrays['population'])} genomes) "
             f"on the OOS window for PBO")
    pop = population_oos_returns(ctx)
    pbo = (stats.pbo_cscv(pop, n_blocks=policy.pbo_blocks)[0]
           if pop.shape[1] >= 2 and pop.shape[0] >= policy.pbo_blocks else math.nan)
    bench = benchmark_returns(ctx, policy.benchmark)
    genomes = front_genomes(front)
    progress(f"look-ahead audit: {len(genomes)} candidates, {policy.lookahead_cuts} cut points")
    audit = run_audit(ctx, genomes, policy.lookahead_cuts, policy.lookahead_seed)
    policy_json = policy.model_dump(mode="json")
    policy_sha = hashlib.sha256(json.dumps(policy_json, sort_keys=True).encode()).hexdigest()
    reads, other_reads = _holdout_reads(ctx, policy_sha)

    def figures_of(i: int, g: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        progress(f"candidate {i + 1}/{len(genomes)}: OOS window and hold-out")
        return candidate_figures(ctx, g, trials, raw, policy)

    figs, oos = zip(*(figures_of(i, g) for i, g in enumerate(genomes)), strict=True)
    fw_p, own_p = familywise_figures(np.stack(oos, axis=1), bench, policy)
    candidates = []
    for rank, entry in enumerate(front, start=1):
        figures = {**figs[rank - 1], "familywise_p": float(fw_p[rank - 1]),
                   "own_p": float(own_p[rank - 1]), "pbo": pbo}
        gates = judge(figures, policy, bool(audit["passed"]))
        candidates.append({
            "rank": rank, "key": entry["key"], "eligible": all(g.passed for g in gates),
            "weighted_fitness": float(entry["weighted"]), "rules": entry["rules"],
            "genome": entry["genome"],
            "figures": {k: json_float(v) for k, v in figures.items()},
            "gates": [g.as_dict() for g in gates]})
    annual = math.sqrt(ctx.tables.bars_per_year)
    training_bars = int((ctx.layout.segments[:, 1] - ctx.layout.segments[:, 0]).sum())
    report = {
        "run_id": run_id, "symbol": ctx.cfg.evolution.symbol,
        "timeframe": ctx.cfg.evolution.timeframe,
        "generation": generation, "generations": ctx.cfg.evolution.generations,
        "periods": _periods(ctx), "policy": policy_json, "policy_sha256": policy_sha,
        # the whole history judged (hold-out included): a champion's bundle carries it
        "history_sha256": ctx.bars.fingerprint(), "history_bars": int(ctx.bars.n_bars),
        "trials": raw[0], "trial_sharpe_variance": raw[1],
        "trial_count": {
            "raw": trials.raw, "flat": trials.flat, "unsampled": trials.unsampled,
            "clusters": trials.clusters, "effective": trials.effective,
            "quality": json_float(trials.quality),
            "expected_max_sharpe_annual": trials.expected_max_sharpe(training_bars) * annual},
        "pbo": json_float(pbo), "population": int(pop.shape[1]), "lookahead": audit,
        "holdout_reads": reads, "holdout_reads_elsewhere": other_reads,
        "seconds": round(time.perf_counter() - t0, 2),
        "candidates": candidates,
        "eligible": [c["key"] for c in candidates if c["eligible"]],
    }
    _write(ctx.run_dir, report)
    if log_mlflow:
        _log_mlflow(ctx.cfg.home, report, ctx.run_dir)
    return report


def _periods(ctx: RunContext) -> dict[str, dict[str, object]]:
    idx = ctx.bars.index()
    lay = ctx.layout
    spans = {"training": (int(lay.segments[0, 0]), lay.train_end),
             "oos": (int(lay.oos[0, 0]), int(lay.oos[0, 1])),
             "holdout": (lay.holdout_start, lay.n_total)}
    return {k: {"first": str(idx[a].date()), "last": str(idx[b - 1].date()), "bars": b - a,
                "start": a, "end": b} for k, (a, b) in spans.items()} | {
        "purge": {"bars": lay.purge}}


REPORT_SHA = "report.sha256"


def _write(run_dir: Path, report: dict) -> None:
    from gates.report import markdown

    out = run_dir / "gates"
    data = json.dumps(report, indent=1).encode()
    sha = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(out / "report.json", data)
    # the report's identity (`sha256sum -c` reads it): `emp promote` refuses a report edited since
    atomic_write_bytes(out / REPORT_SHA, f"{sha}  report.json\n".encode())
    atomic_write_bytes(out / "report.md", markdown(report).encode())
    eligible = [{"key": c["key"], "rank": c["rank"], "rules": c["rules"], "genome": c["genome"],
                 "figures": c["figures"]} for c in report["candidates"] if c["eligible"]]
    write_json(out / "eligible.json", {"run_id": report["run_id"], "report_sha256": sha,
                                       "eligible": eligible}, indent=1)


def _log_mlflow(home: Path, report: dict, run_dir: Path) -> None:
    """Add the gate metrics (at step = the judged generation), the report files and the verdict
    tags to the run's MLflow run, leaving its status as it is."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH

    client = MlflowClient(tracking_uri=default_tracking_uri(home))
    run_id = client.get_run(report["run_id"]).info.run_id  # raises if the run does not exist
    metrics: dict[str, float] = {
        "gates.candidates": len(report["candidates"]), "gates.eligible": len(report["eligible"]),
        "gates.trials": report["trials"],
        "gates.n_eff": report["trial_count"]["effective"], "gates.lookahead_passed": float(
            bool(report["lookahead"]["passed"]))}
    if isinstance(report["pbo"], float):
        metrics["gates.pbo"] = report["pbo"]
    for c in report["candidates"]:
        for name, key, _, _ in GATES:
            v = c["figures"][key]
            if isinstance(v, float):
                metrics[f"gates.c{c['rank']:02d}.{name}"] = v
    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, int(report["generation"])) for k, v in metrics.items()
             if math.isfinite(v)]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i:i + MAX_METRICS_PER_BATCH])
    client.log_artifacts(run_id, str(run_dir / "gates"), "gates")
    tags = {"gates.verdict": f"{len(report['eligible'])} eligible of "
                             f"{len(report['candidates'])}",
            "gates.eligible": ",".join(report["eligible"]) or "none",
            "gates.policy_sha256": report["policy_sha256"],
            "gates.report_sha256": (run_dir / "gates" / REPORT_SHA).read_text().split()[0]}
    client.log_batch(run_id, tags=[RunTag(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in tags.items()])
