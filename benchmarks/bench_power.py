"""``emp bench power``: how often the gates pass noise, and how often they find a real edge.

Every cell is one generated series (``benchmarks.power_data``: noise families, and planted edges
of four kinds at calibrated strengths), one default evolution (population 100, 30 generations,
4 folds, NSGA-II) on it, and ``emp gates`` on the run. Each cell's judged figures are appended to
``WORKDIR/cells.jsonl`` as it finishes, so an interrupted benchmark resumes where it stopped.

The verdicts are then recomputed from the stored figures, for the default policy and for a grid
of policy knobs (the trade-off curve), and for the comparator: the gates as they were before
(DSR with N = every distinct genome and the variance of all trials' Sharpe ratios, and each
candidate's own bootstrap p-value instead of the family-wise one), on the same runs.

Data preparation uses a lighter GARCH refit schedule (window 250, refit every 500 bars), as the
gate tests do; every GA and gate setting is the default.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from core.jsonio import float_of_json

LIGHT_VOL = {"window": 250, "refit_every": 500}
# the policy knobs of the trade-off curve, each crossed with the others
KNOBS = {"dsr_min": (0.5, 0.9, 0.95, 0.99), "familywise_alpha": (0.01, 0.05, 0.10),
         "trades_per_year_min": (5.0, 10.0)}
# `emp bench power --smoke`: one noise and one edge cell with a tiny GA, to prove the pipeline
SMOKE = {"seeds": 1, "kinds": ("noise_flat", "autocorr"), "strengths": (3.0,),
         "population": 16, "generations": 3, "n": 3000}


@dataclass(frozen=True)
class Cell:
    kind: str
    strength: float | None
    seed: int

    @property
    def name(self) -> str:
        s = "noise" if self.strength is None else f"sr{self.strength:g}"
        return f"{self.kind}-{s}-{self.seed}"


def cells(kinds_noise: tuple[str, ...], kinds_edge: tuple[str, ...],
          strengths: tuple[float, ...], seeds: int, first_seed: int = 1000) -> list[Cell]:
    """Noise cells (``seeds`` per family) and edge cells (``seeds`` per kind and strength).
    Seeds differ from those used for calibration, so no cell reuses a calibration series."""
    out = [Cell(k, None, first_seed + i) for k in kinds_noise for i in range(seeds)]
    out += [Cell(k, s, first_seed + i) for k in kinds_edge for s in strengths
            for i in range(seeds)]
    return out


def run_cell(cell: Cell, workdir: str, n: int | None, population: int | None,
             generations: int | None) -> dict:
    """Generate, ingest, evolve, judge: the cell's judged figures (the run is deleted after)."""
    from benchmarks.power_data import generate, ingest
    from configs.loader import parse_config
    from evolution import driver
    from evolution.data import research_data
    from gates.judge import judge_run

    t0 = time.perf_counter()
    series = generate(cell.kind, cell.strength, cell.seed, n)
    home = Path(workdir) / "runs" / cell.name
    shutil.rmtree(home, ignore_errors=True)
    ev: dict[str, object] = {"symbol": "SYN", "timeframe": series.timeframe, "seed": cell.seed}
    if population:
        ev["population"] = population
    if generations:
        ev["generations"] = generations
    cfg = parse_config({"home": str(home), "volatility": LIGHT_VOL, "evolution": ev,
                        "gates": {"benchmark": series.benchmark}}, "bench power")
    ingest(series, cfg.store_root(), "SYN")
    data = research_data(cfg)
    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    report = judge_run(cfg.home, result.run_id, log_mlflow=False)
    shutil.rmtree(home, ignore_errors=True)
    return {"kind": cell.kind, "strength": cell.strength, "seed": cell.seed,
            "timeframe": series.timeframe, "bars": len(series.frame),
            "benchmark": series.benchmark, "trials": report["trials"],
            "n_eff": report["trial_count"]["effective"],
            "lookahead": bool(report["lookahead"]["passed"]),
            "eligible": len(report["eligible"]),
            "candidates": [c["figures"] for c in report["candidates"]],
            "seconds": round(time.perf_counter() - t0, 1)}


def _worker_init() -> None:
    """In each fresh worker, before numba or BLAS load: one CPU per process (parallelism comes
    from the processes), quiet third-party logs."""
    import logging
    import warnings

    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def run_cells(todo: list[Cell], workdir: Path, workers: int, n: int | None,
              population: int | None, generations: int | None, log: bool = True) -> list[dict]:
    """Run the cells not yet in ``workdir/cells.jsonl``; return every stored record."""
    path = workdir / "cells.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    done = {(r["kind"], r["strength"], r["seed"]) for r in load_records(path)}
    todo = [c for c in todo if (c.kind, c.strength, c.seed) not in done]
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(run_cell, c, str(workdir), n, population, generations): c
                   for c in todo}
        for k, fut in enumerate(as_completed(futures), start=1):
            try:
                rec = fut.result()
            except BrokenProcessPool:
                raise
            except Exception as exc:  # one bad cell is reported; the others still run
                print(f"[{k}/{len(todo)}] {futures[fut].name}: FAILED: {exc}", flush=True)
                continue
            with open(path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if log:
                print(f"[{k}/{len(todo)}] {futures[fut].name}: {rec['eligible']} eligible, "
                      f"{rec['seconds']} s", flush=True)
    return load_records(path)


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- verdicts from stored figures ---------------------------------------------------------------

def eligible(rec: dict, policy, old: bool = False) -> bool:  # type: ignore[no-untyped-def]
    """Whether any candidate of a cell passes ``policy``; ``old``: the comparator's figures."""
    from gates.policy import judge

    for f in rec["candidates"]:
        fig = {k: float_of_json(v) for k, v in f.items()}
        if old:
            fig["dsr"], fig["familywise_p"] = fig["dsr_raw"], fig["own_p"]
        if all(g.passed for g in judge(fig, policy, rec["lookahead"])):
            return True
    return False


def upper_bound(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen k times in n."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(level, k + 1, n - k))


def rates(records: list[dict], policy, old: bool = False) -> dict:  # type: ignore[no-untyped-def]
    noise = [r for r in records if r["strength"] is None]
    k = sum(eligible(r, policy, old) for r in noise)
    det: dict[str, dict[str, float]] = {}
    for r in records:
        if r["strength"] is not None:
            det.setdefault(r["kind"], {}).setdefault(f"{r['strength']:g}", []).append(  # type: ignore[arg-type]
                eligible(r, policy, old))
    detection = {kind: {s: round(float(np.mean(v)), 3) for s, v in sorted(by.items(),
                                                                          key=lambda x: float(x[0]))}
                 for kind, by in det.items()}
    return {"noise_series": len(noise), "false_eligible": k,
            "false_eligible_rate": round(k / len(noise), 4) if noise else None,
            "false_eligible_upper95": round(upper_bound(k, len(noise)), 4) if noise else None,
            "detection": detection}


def tradeoff(records: list[dict], base) -> list[dict]:  # type: ignore[no-untyped-def]
    """False-eligible count and mean detection at planted Sharpe 1.5 and 2.0 (over the edge
    kinds) for every combination of the ``KNOBS``."""
    out = []
    for combo in itertools.product(*KNOBS.values()):
        knobs = dict(zip(KNOBS, combo, strict=True))
        r = rates(records, base.model_copy(update=knobs))
        row: dict[str, object] = {**knobs, "false_eligible": r["false_eligible"]}
        for s in ("1.5", "2"):
            vals = [by[s] for by in r["detection"].values() if s in by]
            row[f"detection_{s}"] = round(float(np.mean(vals)), 3) if vals else None
        out.append(row)
    return out


def plot(records: list[dict], policy, path: Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, old = rates(records, policy)["detection"], rates(records, policy, old=True)["detection"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (kind, by) in enumerate(sorted(ours.items())):
        xs = [float(s) for s in by]
        ax.plot(xs, list(by.values()), "o-", color=f"C{i}", label=f"{kind}")
        ax.plot(xs, [old[kind][s] for s in by], "x--", color=f"C{i}", alpha=0.5)
    ax.axhline(0.8, color="grey", lw=0.5)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("annualised Sharpe of the planted rule (after costs)")
    ax.set_ylabel("detection rate (>= 1 eligible candidate)")
    n = rates(records, policy)
    ax.set_title(f"EMP gates power (solid) vs the old gates (dashed); noise: "
                 f"{n['false_eligible']}/{n['noise_series']} false eligible")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict) -> str:
    """The power table for BENCHMARKS.md."""
    ours, old = summary["ours"], summary["comparator_old_gates"]
    lines = ["| kind | " + " | ".join(f"SR {s}" for s in summary["strengths"]) + " |",
             "|---" * (len(summary["strengths"]) + 1) + "|"]
    for kind, by in ours["detection"].items():
        cells_ = [f"{by.get(f'{s:g}', float('nan')):.0%} ({old['detection'][kind].get(f'{s:g}', float('nan')):.0%})"
                  for s in summary["strengths"]]
        lines.append(f"| {kind} | " + " | ".join(cells_) + " |")
    lines.append(f"| noise: false eligible | {ours['false_eligible']}/{ours['noise_series']} "
                 f"(upper 95 % {ours['false_eligible_upper95']:.3f}); old gates "
                 f"{old['false_eligible']}/{old['noise_series']} |")
    return "\n".join(lines)


def run(workdir: str | None = None, seeds: int = 10, workers: int = 2, n: int | None = None,
        population: int | None = None, generations: int | None = None,
        kinds: tuple[str, ...] | None = None, strengths: tuple[float, ...] | None = None,
        plot_path: str | None = None, log: bool = True) -> dict:
    from benchmarks.power_data import KINDS_EDGE, KINDS_NOISE, STRENGTHS
    from gates.policy import GatePolicy

    t0 = time.perf_counter()
    wd = Path(workdir or "var/bench-power")
    strengths = tuple(strengths or STRENGTHS)
    kn = tuple(k for k in (kinds or KINDS_NOISE + KINDS_EDGE) if k in KINDS_NOISE)
    ke = tuple(k for k in (kinds or KINDS_NOISE + KINDS_EDGE) if k in KINDS_EDGE)
    todo = cells(kn, ke, strengths, seeds)
    records = run_cells(todo, wd, workers, n, population, generations, log)
    wanted = {(c.kind, c.strength, c.seed) for c in todo}
    records = [r for r in records if (r["kind"], r["strength"], r["seed"]) in wanted]
    policy = GatePolicy()
    summary = {"bench": "power", "cells": len(records), "seeds": seeds,
               "population": population or 100, "generations": generations or 30,
               "strengths": list(strengths), "ours": rates(records, policy),
               "comparator_old_gates": rates(records, policy, old=True),
               "tradeoff": tradeoff(records, policy),
               "cell_seconds_mean": round(float(np.mean([r["seconds"] for r in records])), 1)
               if records else None,
               "trials_median": float(np.median([r["trials"] for r in records]))
               if records else None,
               "n_eff_median": float(np.median([r["n_eff"] for r in records]))
               if records else None,
               "seconds": round(time.perf_counter() - t0, 1)}
    out_plot = Path(plot_path) if plot_path else wd / "power_curves.png"
    if any(r["strength"] is not None for r in records):
        plot(records, policy, out_plot)
        summary["plot"] = str(out_plot)
    return summary
