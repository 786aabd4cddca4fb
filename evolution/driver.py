"""The GA driver: NSGA-II generations over islands, a distinct-genome cache, checkpoints after
every generation (each with the run record the gates judge, ``core.run_record``), exact resume,
MLflow tracking and a readable final front.

Evaluation goes through an ``Evaluator`` (the Ray pool in ``workers/``, or in-process); the
driver itself never imports ray.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from configs.models import EmpConfig
from core import run_record
from core.errors import EmpError
from core.integrity import differences, digest, pause_for_test, short
from core.jsonio import json_float, read_json, write_json
from evolution import checkpoint as ckpt
from evolution import ga
from evolution.data import ResearchData, research_data
from evolution.objectives import (
    deap_weights,
    hypervolume,
    objective_values,
    violation,
    weighted_fitness,
)
from fitness.metrics import METRIC_INDEX
from genome.codec import from_json, to_json
from genome.context import BarContext, context_for
from genome.decode import describe
from genome.ops import deap_toolbox_ops, genotype_distance, phenotype_key, random_genome
from market.config import SymbolMeta

# Columns of each trial's return sketch: its net returns on this many training bars, evenly
# spaced. The gates cluster the trials' sketches to count the effectively independent trials
# (float32: 1 KiB a trial; about 10 MiB for population 100 x 100 generations).
SKETCH_BARS = 256


class Evaluator(Protocol):
    def evaluate_trials(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def close(self) -> None: ...


class LocalEvaluator:
    """In-process evaluation with ``fitness.simulator.evaluate`` (no Ray): tests, small runs."""

    def __init__(self, data: ResearchData, cfg: EmpConfig) -> None:
        from fitness.masks import MaskCache

        self.data, self.sim = data, cfg.fitness
        self.masks = MaskCache()  # the run's rule masks, reused across generations

    def evaluate_trials(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from fitness.simulator import evaluate_trials

        d = self.data
        return evaluate_trials(genomes, d.tables, d.bars, d.segments, d.meta, self.sim,
                               n_samples=SKETCH_BARS, cache=self.masks)

    def close(self) -> None:
        return None


@dataclass
class State:
    generation: int
    islands: list[list]
    hof: object  # deap.tools.ParetoFront
    cache: dict[str, np.ndarray] = field(default_factory=dict)     # key -> per-fold metrics
    evaluations: int = 0
    sketches: dict[str, np.ndarray] = field(default_factory=dict)  # key -> return sketch


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    generation: int
    trials: int
    front: pd.DataFrame
    interrupted: bool


# Settings that never change a run's results: they may differ when a run is resumed
# (``evolution.generations`` may too, but not below the checkpoint's generation).
HARMLESS = ("generations", "experiment", "plot_every", "workers", "min_task_ms", "top_k")
RUN_ID = re.compile(r"[0-9a-f]{32}")


class ResumeError(EmpError):
    """A run cannot be resumed as asked; the message says why and what differs."""


def result_inputs(cfg: EmpConfig, meta: SymbolMeta) -> dict[str, object]:
    """Every setting that changes a run's results, by config path: the evolution section (less
    ``HARMLESS``), fitness, volatility, and the run symbol's resolved metadata and costs (from
    the config or the store). A key added to these sections later is covered automatically."""
    return {"data": {"symbols": {cfg.evolution.symbol: meta.model_dump(mode="json")}},
            "evolution": cfg.evolution.model_dump(mode="json", exclude=set(HARMLESS)),
            "fitness": cfg.fitness.model_dump(mode="json"),
            "volatility": cfg.volatility.model_dump(mode="json")}


def config_digest(cfg: EmpConfig, meta: SymbolMeta) -> str:
    """Identifies the result-changing settings a checkpoint belongs to (``result_inputs``)."""
    return digest(result_inputs(cfg, meta))


def saved_config(cfg: EmpConfig, meta: SymbolMeta) -> dict[str, object]:
    """``config.json``: the run's config with the symbol's metadata as resolved, so the gates
    and ``--resume`` see exactly what evolution used even when it came from the store."""
    out = cfg.model_dump(mode="json")
    out["data"]["symbols"] = {**out["data"]["symbols"],
                              cfg.evolution.symbol: meta.model_dump(mode="json")}
    return out


def _first_change(saved: dict, current: dict, prefix: str = "") -> str | None:
    diffs = differences(saved, current, prefix)
    if not diffs:
        return None
    key, old, new = diffs[0]
    more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
    return f"{key}: {short(old)} → {short(new)}{more}"


def resume_dir(cfg: EmpConfig, run_id: str) -> Path:
    """The run directory of ``run_id``, checked: a well-formed id and a run that exists."""
    runs = Path(cfg.home) / "runs"
    if not RUN_ID.fullmatch(run_id):
        raise ResumeError(f"--resume {run_id!r} is not a run id (32 hex characters, as printed "
                          f"at the end of `emp evolve`)")
    run_dir = runs / run_id
    if not (run_dir / "config.json").is_file():
        known = sorted((p.parent.name for p in runs.glob("*/config.json")),
                       key=lambda n: (runs / n / "config.json").stat().st_mtime)
        raise ResumeError(f"no run {run_id} under {runs} (latest there: "
                          f"{', '.join(known[-3:]) or 'none'})")
    return run_dir


def check_resumable(cfg: EmpConfig, run_id: str, run_dir: Path, data: ResearchData
                    ) -> EmpConfig:
    """Refuse to resume unless every result-changing input is what the run started with: the
    settings (``result_inputs``, against ``config.json``, itself checked against the
    checkpoint's digest) and the data (``data.json``, key by key). Returns the saved config."""
    from configs.loader import ConfigError, parse_config

    path = run_dir / "config.json"
    try:
        saved = parse_config(read_json(path, ResumeError), str(path))
    except ConfigError as exc:
        raise ResumeError(f"{path}: {exc}") from None
    snap_digest = ckpt.load_digest(run_dir)
    saved_meta = saved.data.symbols.get(saved.evolution.symbol, data.meta)
    if config_digest(saved, saved_meta) != snap_digest:
        raise ResumeError(f"{path} does not match run {run_id}'s checkpoint (edited after the "
                          f"run started?); it cannot tell what the run was evolved with")
    changed = _first_change(result_inputs(saved, saved_meta), result_inputs(cfg, data.meta))
    if changed:
        raise ResumeError(f"cannot resume run {run_id}: a setting that changes its results "
                          f"differs from the one it started with: {changed}; resume with the "
                          f"run's config ({path}) or start a new run")
    data_path = run_dir / "data.json"
    if data_path.exists():
        changed = _first_change(read_json(data_path, ResumeError), data.fingerprint(), "data.")
        if changed:
            raise ResumeError(
                f"cannot resume run {run_id}: the {cfg.evolution.symbol}/"
                f"{cfg.evolution.timeframe} history differs from the one it was evolved on "
                f"(re-ingested?): {changed}")
    return saved


class RunLock:
    """An exclusive ``flock`` on ``runs/<id>/.lock`` while a process evolves that run, so two
    processes can never write one run's checkpoint (the lock ends with the process)."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl

        self.fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ResumeError(f"run {run_dir.name} is being evolved by another process "
                              f"right now") from None

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---- evaluation --------------------------------------------------------------------------------

def evaluate_individuals(inds: list, state: State, evaluator: Evaluator, cfg: EmpConfig) -> int:
    """Assign fitness to ``inds``; each distinct phenotype is simulated once per run.

    Returns how many new distinct genomes were evaluated (the run's trial count grows by it).
    """
    if not inds:
        return 0
    genes = np.stack([np.asarray(i, dtype=np.float64) for i in inds])
    keys = [phenotype_key(g) for g in genes]
    new: dict[str, int] = {}
    for j, key in enumerate(keys):
        if key not in state.cache and key not in new:
            new[key] = j
    if new:
        metrics, sketches = evaluator.evaluate_trials(genes[list(new.values())])
        for key, row, sketch in zip(new, metrics, sketches, strict=True):
            state.cache[key] = row
            state.sketches[key] = sketch
    stacked = np.stack([state.cache[k] for k in keys])
    ev = cfg.evolution
    values = objective_values(stacked, ev.objectives)
    viol = violation(stacked, ev)
    for ind, v, c in zip(inds, values, viol, strict=True):
        ind.fitness.values = tuple(float(x) for x in v)
        ind.fitness.violation = float(c)
    state.evaluations += len(inds)
    return len(new)


# ---- state <-> checkpoint -------------------------------------------------------------------------

def _island_arrays(pop: list) -> dict[str, np.ndarray]:
    return {"genes": np.stack([np.asarray(i) for i in pop]),
            "values": np.array([i.fitness.values for i in pop]),
            "violation": np.array([i.fitness.violation for i in pop]),
            "crowding": np.array([getattr(i.fitness, "crowding_dist", 0.0) for i in pop])}


def restore_individuals(cls: type, arrays: dict[str, np.ndarray]) -> list:
    pop = []
    for j in range(arrays["genes"].shape[0]):
        ind = ga.make_individual(cls, arrays["genes"][j])
        ind.fitness.values = tuple(arrays["values"][j])
        ind.fitness.violation = float(arrays["violation"][j])
        if "crowding" in arrays:
            ind.fitness.crowding_dist = float(arrays["crowding"][j])
        pop.append(ind)
    return pop


def _snapshot(state: State, rng: np.random.Generator, digest: str) -> ckpt.Snapshot:
    keys = list(state.cache)
    metrics = (np.stack([state.cache[k] for k in keys]) if keys else np.zeros((0, 0, 0)))
    sketches = (np.stack([state.sketches[k] for k in keys]) if keys
                else np.zeros((0, 0), np.float32))
    hof_items = list(state.hof.items)  # type: ignore[attr-defined]
    hof = (_island_arrays(hof_items) if hof_items else
           {"genes": np.zeros((0, 0)), "values": np.zeros((0, 0)), "violation": np.zeros(0)})
    hof.pop("crowding", None)
    return ckpt.Snapshot(state.generation, digest, len(state.cache), state.evaluations,
                         rng.bit_generator.state, ga.python_random_state(),
                         [_island_arrays(isl) for isl in state.islands], hof,
                         np.array(keys, dtype="U64"), metrics, sketches)


def _from_snapshot(snap: ckpt.Snapshot, cls: type, rng: np.random.Generator) -> State:
    from deap import tools

    rng.bit_generator.state = snap.numpy_rng
    ga.set_python_random_state(snap.python_rng)
    islands = [restore_individuals(cls, isl) for isl in snap.islands]
    hof = tools.ParetoFront(similar=np.array_equal)
    if snap.hof["genes"].size:
        for ind in restore_individuals(cls, snap.hof):
            hof.insert(ind)
    cache = {str(k): snap.cache_metrics[i] for i, k in enumerate(snap.cache_keys)}
    sketches = {str(k): snap.cache_sketches[i] for i, k in enumerate(snap.cache_keys)}
    return State(snap.generation, islands, hof, cache, snap.evaluations, sketches)


def save(run_dir: Path, state: State, rng: np.random.Generator, digest: str, cfg: EmpConfig,
         front: pd.DataFrame) -> None:
    """The checkpoint (to resume), then the run record (for the gates), from the same state;
    ``front`` is the ``front_frame`` of its Pareto front."""
    snap = _snapshot(state, rng, digest)
    ckpt.save(run_dir, snap)
    run_record.write(run_dir, *record_of(front, state, snap, cfg))


def record_of(front: pd.DataFrame, state: State, snap: ckpt.Snapshot,
              cfg: EmpConfig) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """``front.json``'s contents and ``trials.npz``'s arrays (``core.run_record``) for ``state``,
    its front frame and its checkpoint ``snap``: the front as the gates judge it, and the
    trials."""
    # genotypes that differ only in unused genes are one strategy: the gates judge it once
    df = front.drop_duplicates("key", ignore_index=True) if not front.empty else front
    specs = cfg.evolution.objectives
    front = [{"phenotype_key": phenotype_key(from_json(row["genome"])), "key": row["key"],
              "genome": json.loads(row["genome"]), "rules": row["rules"],
              "objectives": {s.name: json_float(row[s.name]) for s in specs},
              "weighted": json_float(row["weighted"]), "violation": json_float(row["violation"])}
             for _, row in df.iterrows()]
    distinct: dict[str, np.ndarray] = {}
    for isl in snap.islands:
        for g in isl["genes"]:
            distinct.setdefault(phenotype_key(g), g)
    arrays = {"keys": snap.cache_keys, "metrics": snap.cache_metrics,
              "sketches": snap.cache_sketches,
              "population": np.stack(list(distinct.values())).astype(np.float64)}
    return ({"generation": state.generation, "generations": cfg.evolution.generations,
             "objectives": [{"name": s.name, "direction": s.direction} for s in specs],
             "trials": len(state.cache), "front": front}, arrays)


# ---- reporting ------------------------------------------------------------------------------------

def front_frame(inds: list, state: State, cfg: EmpConfig,
                context: BarContext | None = None) -> pd.DataFrame:
    """One row per front genome: objectives, weighted fitness, constraint, key metrics, rules
    (without the genes that cannot act on ``context``'s bars)."""
    if not inds:
        return pd.DataFrame()
    specs = cfg.evolution.objectives
    keys = [phenotype_key(np.asarray(i)) for i in inds]
    metrics = np.stack([state.cache[k] for k in keys])
    rows: dict[str, object] = {s.name: [i.fitness.values[j] for i in inds]
                               for j, s in enumerate(specs)}
    rows["weighted"] = weighted_fitness(metrics)
    rows["violation"] = [i.fitness.violation for i in inds]
    for m in ("annual_return", "trades_per_year", "exposure"):
        rows[m] = metrics[:, :, METRIC_INDEX[m]].mean(axis=1)
    rows["key"] = [k[:16] for k in keys]
    rows["rules"] = [describe(np.asarray(i), context) for i in inds]
    rows["genome"] = [to_json(np.asarray(i)) for i in inds]
    return pd.DataFrame(rows).sort_values("weighted", ascending=False, ignore_index=True)


def generation_metrics(state: State, cfg: EmpConfig, front: list, new_evals: int,
                       seconds: float) -> dict[str, float]:
    specs = cfg.evolution.objectives
    pop = [i for isl in state.islands for i in isl]
    vals = np.array([i.fitness.values for i in pop])
    out: dict[str, float] = {}
    for j, s in enumerate(specs):
        col = vals[:, j]
        good = col if s.direction == "max" else -col
        out[f"{s.name}_best"] = float(col.max() if s.direction == "max" else col.min())
        out[f"{s.name}_median"] = float(np.median(col))
        out[f"{s.name}_p90"] = float(np.percentile(good, 90) * (1 if s.direction == "max" else -1))
    feasible = [i for i in front if i.fitness.violation == 0.0]
    pts = np.array([i.fitness.values for i in feasible]) if feasible else np.zeros((0, len(specs)))
    out["hypervolume"] = hypervolume(pts, specs)
    out["front_size"] = float(len(front))
    out["feasible_fraction"] = float(np.mean([i.fitness.violation == 0.0 for i in pop]))
    sample = pop[:48]
    dists = [genotype_distance(a, b) for k, a in enumerate(sample) for b in sample[k + 1:]]
    out["diversity"] = float(np.mean(dists)) if dists else 0.0
    out["trials"] = float(len(state.cache))
    out["evaluations_per_s"] = new_evals / seconds if seconds > 0 else 0.0
    out["generation_seconds"] = seconds
    return out


def print_front(df: pd.DataFrame, cfg: EmpConfig, limit: int = 10) -> None:
    if df.empty:
        print("final front: empty")
        return
    names = [s.name for s in cfg.evolution.objectives]
    cols = [*names, "weighted", "trades_per_year", "violation"]
    print(f"final Pareto front: {len(df)} genomes (best {min(limit, len(df))} by weighted fitness)")
    for i, row in df.head(limit).iterrows():
        figures = "  ".join(f"{c}={row[c]:.3f}" for c in cols)
        print(f"[{i + 1}] {figures}\n    {row['rules']}")


# ---- the run ----------------------------------------------------------------------------------------

def _sigterm_as_interrupt() -> Callable[[], None]:
    """``ray job stop`` sends SIGTERM: treat it like Ctrl-C so the run ends cleanly."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM back while the run's final status is written, so a second
    interrupt cannot leave the MLflow run RUNNING; the signals that came are listed."""
    got: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: got.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not in the main thread: nothing to defer
        yield got
        return
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(cfg: EmpConfig, *, resume: str | None = None, stop_after: int | None = None,
        evaluator: Evaluator | None = None, data: ResearchData | None = None,
        progress: bool = True, local: bool = False,
        vol_progress: Callable[[str | None, int, int], None] | None = None) -> RunResult:
    """Evolve until ``cfg.evolution.generations`` (or ``stop_after`` generations this call).
    Without an ``evaluator``, evaluate on Ray, or in this process when ``local``;
    ``vol_progress`` reports the volatility fits while the tables are built.

    ``resume`` continues a run only when its inputs are unchanged (``check_resumable``); every
    check happens before its MLflow status is touched, so a refused resume leaves it as it was.
    Ctrl-C (or SIGTERM) at any moment ends the run KILLED with its last complete generation
    checkpointed; a run stopped after its last generation is completed by ``--resume``.
    """
    from deap import tools

    from evolution.tracking import Tracker, run_name, run_status

    ev = cfg.evolution
    lock: RunLock | None = None
    if resume:
        run_dir = resume_dir(cfg, resume)
        lock = RunLock(run_dir)
        try:
            at = ckpt.generation_of(run_dir)
            if ev.generations < at:
                raise ResumeError(f"run {resume} is at generation {at}: --generations "
                                  f"{ev.generations} is below it; give at least {at}")
            status = run_status(cfg.home, resume)
            if status == "FINISHED" and at >= ev.generations:
                raise ResumeError(f"run {resume} already finished at generation {at} of "
                                  f"{ev.generations}; raise --generations to continue it")
            data = data or research_data(cfg, progress=vol_progress)
            saved = check_resumable(cfg, resume, run_dir, data)
        except BaseException:
            lock.release()
            raise
    else:
        data = data or research_data(cfg, progress=vol_progress)
    digest_ = config_digest(cfg, data.meta)
    cls = ga.individual_class(deap_weights(ev.objectives))
    rng = np.random.default_rng(ev.seed)
    # genes that cannot act on these bars (session hours on daily bars, weekends) neutralised
    bar_ctx = context_for(data.bars.timeframe, data.meta.calendar)
    ops = deap_toolbox_ops(rng, p_semantic=ev.semantic_cx, mut_indpb=ev.mutpb, context=bar_ctx)
    own_evaluator = evaluator is None
    restore_signal = _sigterm_as_interrupt()
    interrupted = False
    tracker = None
    state = State(0, [], tools.ParetoFront(similar=np.array_equal))
    df = pd.DataFrame()
    try:
        tracker = Tracker(cfg.home, ev.experiment, run_id=resume,
                          run_name=run_name(ev.symbol, ev.timeframe, ev.seed))
        run_dir = cfg.home / "runs" / tracker.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        if lock is None:
            lock = RunLock(run_dir)
        if evaluator is None and local:
            evaluator = LocalEvaluator(data, cfg)
        elif evaluator is None:
            from workers.pool import EvalJob, EvaluationPool

            evaluator = EvaluationPool(EvalJob(data.bars, data.tables, data.meta, cfg.fitness,
                                               data.segments, sketch_bars=SKETCH_BARS),
                                       n_workers=ev.workers,
                                       min_task_ms=ev.min_task_ms)
        if resume:
            state = _from_snapshot(ckpt.load(run_dir), cls, rng)
            if saved.evolution.generations != ev.generations:  # the new target, for the gates
                raw = saved_config(saved, data.meta)
                raw["evolution"]["generations"] = ev.generations
                write_json(run_dir / "config.json", raw, indent=2)
        else:
            import random

            random.seed(ev.seed)
            tracker.log_params(cfg.model_dump(mode="json"), data.fingerprint(),
                               {"config_digest": digest_})
            # the exact settings, for `--resume` checks and for the gates that judge this run
            write_json(run_dir / "config.json", saved_config(cfg, data.meta), indent=2)
            # what evolution saw, so resume and the gates can refuse a history that changed
            write_json(run_dir / "data.json", data.fingerprint(), indent=2)
            t0 = time.perf_counter()
            new = 0
            for _ in range(ev.islands):
                pop = [ga.make_individual(cls, random_genome(rng, context=bar_ctx))
                       for _ in range(ev.population)]
                new += evaluate_individuals(pop, state, evaluator, cfg)
                state.islands.append(ga.select(pop, ev.population))
            for isl in state.islands:
                state.hof.update(isl)
            _, front = _log(tracker, state, cfg, new, time.perf_counter() - t0, data)
            save(run_dir, state, rng, digest_, cfg, front)
        last = ev.generations if stop_after is None else min(ev.generations,
                                                              state.generation + stop_after)
        bar = _progress(progress, state.generation, ev.generations)
        while state.generation < last:
            t0 = time.perf_counter()
            new = 0
            for i, pop in enumerate(state.islands):
                offspring = ga.variation(pop, ev.cxpb, ops.mate, ops.mutate, rng)
                new += evaluate_individuals(offspring, state, evaluator, cfg)
                state.islands[i] = ga.select(pop + offspring, ev.population)
            state.generation += 1
            if len(state.islands) > 1 and state.generation % ev.migration_interval == 0:
                ga.migrate(state.islands, ev.migrants)
            for isl in state.islands:
                state.hof.update(isl)
            stats, front = _log(tracker, state, cfg, new, time.perf_counter() - t0, data)
            save(run_dir, state, rng, digest_, cfg, front)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{stats[k]:.3g}" for k in
                                 ("evaluations_per_s", f"{ev.objectives[0].name}_best", "trials")})
        if bar is not None:
            bar.close()
        pause_for_test("after-last-generation")
        df = front_frame(ga.pareto_front(list(state.hof.items)),  # type: ignore[attr-defined]
                         state, cfg, bar_ctx)
        if state.generation >= ev.generations:
            _log_best(tracker, df, data, cfg)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        with _signals_deferred():
            if tracker is not None:
                tracker.finish("FAILED")
        raise
    finally:
        with _signals_deferred():
            restore_signal()
            if own_evaluator and evaluator is not None:
                evaluator.close()
            if lock is not None:
                lock.release()
    if tracker is None:  # stopped before the MLflow run was opened: nothing to mark
        raise KeyboardInterrupt
    with _signals_deferred():  # the status is written whatever the user presses now
        tracker.finish("KILLED" if interrupted else "FINISHED")
        if interrupted and df.empty and state.hof is not None:
            df = front_frame(ga.pareto_front(list(state.hof.items)),  # type: ignore[attr-defined]
                             state, cfg, bar_ctx)
    return RunResult(tracker.run_id, run_dir, state.generation, len(state.cache), df, interrupted)


def _progress(enabled: bool, start: int, total: int):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="generations", unit="gen")


def _log(tracker, state: State, cfg: EmpConfig, new: int, seconds: float,  # type: ignore[no-untyped-def]
         data: ResearchData) -> tuple[dict[str, float], pd.DataFrame]:
    """Log the generation to MLflow; its metrics and the front frame of its Pareto front."""
    front = ga.pareto_front(list(state.hof.items))
    stats = generation_metrics(state, cfg, front, new, seconds)
    df = front_frame(front, state, cfg, context_for(data.bars.timeframe, data.meta.calendar))
    feasible = df[df["violation"] == 0.0] if not df.empty else df
    if not feasible.empty:
        stats["weighted_best"] = float(feasible["weighted"].max())
    tracker.log_generation(state.generation, stats)
    tracker.log_front(state.generation, df.drop(columns=["genome"]))
    ev = cfg.evolution
    if state.generation % ev.plot_every == 0 or state.generation >= ev.generations:
        names = [s.name for s in ev.objectives]
        tracker.log_pareto_plot(state.generation, df, names[0], names[1] if len(names) > 1
                                else "weighted", names[2] if len(names) > 2 else None)
    return stats, df


def _log_best(tracker, df: pd.DataFrame, data: ResearchData, cfg: EmpConfig) -> None:  # type: ignore[no-untyped-def]
    from fitness.simulator import simulate

    feasible = df[df["violation"] == 0.0].head(cfg.evolution.top_k)
    a, b = int(data.segments[0, 0]), int(data.segments[-1, 1])
    for rank, row in enumerate(feasible.itertuples(), start=1):
        genome = from_json(row.genome)
        res = simulate(genome, data.tables, data.bars, data.meta, a, b, cfg.fitness)
        tracker.log_best(rank, row.genome, row.rules, res.equity, data.bars.index()[a:b])
