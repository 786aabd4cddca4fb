"""Evolution benchmark: bar-evaluations per second end to end through Ray (the generation loop
of a resumed run: variation, evaluation, selection, checkpoints and MLflow logging) against the same genomes evaluated by ``evaluate`` in
one process; scaling from 1 to all local workers; per-worker memory as the data grows."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from configs.loader import parse_config
from evolution import driver
from evolution.data import ResearchData
from fitness.simulator import build_tables, evaluate
from gates.layout import fold_segments
from market.config import CostModel, SymbolMeta
from market.loader import Bars

META = SymbolMeta(asset_class="crypto", tick_size=0.01, min_lot=0.001, calendar="always",
                  costs=CostModel(unit="bps", spread=2.0, commission=1.0, slippage=1.0))
HOUR = 3_600_000_000_000


def synthetic(n: int, seed: int = 3) -> Bars:
    rng = np.random.default_rng(seed)
    ts = np.int64(1_500_000_000_000_000_000) // HOUR * HOUR + np.arange(n, dtype=np.int64) * HOUR
    close = 100 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.004))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0, 0.002, n)) * close
    return Bars(("SYN",), "1h", ts, open_[None], (np.maximum(open_, close) + wick)[None],
                (np.minimum(open_, close) - wick)[None], close[None],
                rng.integers(1, 1000, n).astype(float)[None], None)


def research(n: int, folds: int, cfg) -> ResearchData:  # type: ignore[no-untyped-def]
    bars = synthetic(n)
    tables = build_tables(bars, META, vol=cfg.volatility)
    return ResearchData(bars, tables, META, fold_segments(n, 250, folds), n, n)


class Recording:
    """Wraps an evaluator and keeps every batch it was asked to simulate."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.batches = inner, []

    def evaluate_trials(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(np.array(genomes))
        return self.inner.evaluate_trials(genomes)

    def close(self) -> None:
        self.inner.close()


def run(n_bars: int = 1_000_000, population: int = 64, generations: int = 3,
        small_bars: int = 100_000) -> dict:
    from workers import cluster
    from workers.pool import EvalJob, EvaluationPool

    info = cluster.connect()
    home = Path(tempfile.mkdtemp(prefix="emp-bench-evo-"))
    try:
        cfg = parse_config({"home": str(home),
                            "volatility": {"window": 2000, "refit_every": 10_000_000},
                            "evolution": {"symbol": "SYN", "timeframe": "1h", "folds": 2,
                                          "population": population, "generations": generations,
                                          "min_trades_per_year": 0, "plot_every": 1000,
                                          "top_k": 1}}, "bench")
        data = research(n_bars, 2, cfg)
        seg_bars = int((data.segments[:, 1] - data.segments[:, 0]).sum())
        job = EvalJob(data.bars, data.tables, META, cfg.fitness, data.segments,
                      sketch_bars=driver.SKETCH_BARS)
        with EvaluationPool(job) as pool:
            # setup (MLflow run, initial population) first; then time the resumed loop alone
            first = driver.run(cfg, stop_after=0, evaluator=pool, data=data, progress=False)
            rec = Recording(pool)
            t0 = time.perf_counter()
            driver.run(cfg, resume=first.run_id, evaluator=rec, data=data, progress=False)
            loop_s = time.perf_counter() - t0
            rss_large = pool.worker_info()
            genomes = np.concatenate(rec.batches)
            batch = genomes[: 2 * population]
            t1 = time.perf_counter()
            pool.evaluate(batch)
            all_s = time.perf_counter() - t1
        with EvaluationPool(job, n_workers=1) as one:
            t1 = time.perf_counter()
            one.evaluate(batch)
            one_s = time.perf_counter() - t1
        evaluate(genomes[:2], data.tables, data.bars, data.segments, META, cfg.fitness)
        t2 = time.perf_counter()
        evaluate(genomes, data.tables, data.bars, data.segments, META, cfg.fitness)
        local_s = time.perf_counter() - t2
        small = research(small_bars, 2, cfg)
        with EvaluationPool(EvalJob(small.bars, small.tables, META, cfg.fitness,
                                    small.segments)) as pool_small:
            pool_small.evaluate(batch)
            rss_small = pool_small.worker_info()
        n_workers = len(rss_large)
        ray_rate = len(genomes) * seg_bars / loop_s
        local_rate = len(genomes) * seg_bars / local_s
        return {
            "bench": "evolution", "cluster_cpus": info.get("cpus"), "workers": n_workers,
            "bars": n_bars, "population": population, "generations": generations,
            "genomes_evaluated": len(genomes),
            "ray_end_to_end_bar_evals_per_s": round(ray_rate),
            "in_process_bar_evals_per_s": round(local_rate),
            "ratio_ray_to_in_process": round(ray_rate / local_rate, 3),
            "scaling_efficiency_1_to_all": round(one_s / (n_workers * all_s), 3),
            "worker_rss_mb": {f"{small_bars}_bars": [round(i["rss_mb"]) for i in rss_small],
                              f"{n_bars}_bars": [round(i["rss_mb"]) for i in rss_large]},
            "worker_private_mb": {f"{small_bars}_bars": [round(i.get("private_mb", -1))
                                                         for i in rss_small],
                                  f"{n_bars}_bars": [round(i.get("private_mb", -1))
                                                     for i in rss_large]},
            "feature_table_mb": round(data.tables.features.values.nbytes / 2**20),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)
