"""The Ray evaluation pool: same numbers as the plain kernel, survives a killed worker, carries
the job's exact costs and settings to every worker, and ships the data once."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import random_bars

from fitness.config import SimConfig
from fitness.metrics import N_METRICS
from fitness.simulator import build_tables, evaluate, evaluate_trials
from genome.ops import random_genome
from genome.schema import N_GENES
from market.config import CostModel, SymbolMeta, VolatilityConfig

META = SymbolMeta(asset_class="fx", tick_size=1e-5, value_per_unit=1.0, min_lot=1000.0,
                  calendar="always")  # default costs: 1 bps spread, 0.5 commission, 0.5 slippage
COSTLY = SymbolMeta(asset_class="fx", tick_size=1e-5, value_per_unit=1.0, min_lot=1000.0,
                    calendar="always",
                    costs=CostModel(unit="bps", spread=7.0, commission=0.5, slippage=0.5))
ODD_SIM = SimConfig(max_leverage=2.5, fill="close")
SEGMENTS = np.array([[0, 1000], [1000, 2000], [2000, 3000]], dtype=np.int64)


def genomes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([random_genome(rng) for _ in range(n)])


@pytest.fixture(scope="module")
def data():
    bars = random_bars(3000, 5)
    return bars, build_tables(bars, META, vol=VolatilityConfig(window=100, refit_every=200))


def test_connect_is_idempotent(ray_cluster):
    from workers import cluster

    again = cluster.connect(num_cpus=2)
    assert again["address"] == ray_cluster["address"]
    assert again["cpus"] >= 1 and again["embedded"] == ray_cluster["embedded"]


@pytest.fixture(scope="class")
def pool(ray_cluster, data):
    """One 2-worker pool per test class, closed at the class's end: the test cluster has 2 CPUs,
    so another pool's workers could not start while this one holds them."""
    from workers.pool import EvalJob, EvaluationPool

    p = EvaluationPool(EvalJob(*data, META, SimConfig(), SEGMENTS, sketch_bars=64),
                       n_workers=2, start_timeout_s=120)
    yield p
    p.close()


class TestSharedPool:
    def test_pool_equals_plain_evaluate(self, pool, data):
        bars, tables = data
        g = genomes(50, 1)
        want = evaluate(g, tables, bars, SEGMENTS, META, SimConfig())
        got = pool.evaluate(g)
        assert got.shape == (50, len(SEGMENTS), N_METRICS)
        assert np.array_equal(got, want, equal_nan=True)
        again = pool.evaluate(g[::-1])  # a second call, batched from measured cost, keeps input order
        assert np.array_equal(again, want[::-1], equal_nan=True)
        metrics, sketches = pool.evaluate_trials(g)
        want_m, want_s = evaluate_trials(g, tables, bars, SEGMENTS, META, SimConfig(),
                                         n_samples=64)
        assert np.array_equal(metrics, want_m, equal_nan=True)
        assert sketches.dtype == np.float32 and np.array_equal(sketches, want_s)
        s = pool.stats()
        assert s["genomes"] == 50 and s["tasks"] >= 1 and s["genomes_per_s"] > 0
        assert all(mb > 0 for mb in pool.worker_rss_mb())

    def test_batching_rule(self, pool):
        pool.evaluate(genomes(40, 2))
        per = pool.stats()["ms_per_genome"]
        size = pool.task_size(100_000)
        assert size == int(np.ceil(100_000 / (4 * pool.n_workers)))  # large batch: 4 tasks per worker
        for n in (10, 100, 1000):  # each task does >= min_task_ms of work, or holds the whole batch
            size = pool.task_size(n)
            assert size == n or size * per >= pool.min_task_ms * (1 - 1e-9)

    def test_input_validation(self, pool):
        for empty in (np.empty((0, N_GENES)), []):
            out = pool.evaluate(empty)
            assert out.shape == (0, len(SEGMENTS), N_METRICS) and out.dtype == np.float64
        with pytest.raises(ValueError, match=rf"\[n, {N_GENES}\]"):
            pool.evaluate(np.zeros((3, N_GENES - 1)))
        bad = genomes(2, 3)
        bad[1, 4] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            pool.evaluate(bad)

    def test_worker_killed_mid_generation(self, pool, data, ray_cluster):
        if not ray_cluster["embedded"]:
            pytest.skip("needs the workers' processes on this machine")
        bars, tables = data
        pool.evaluate(genomes(400, 4))  # measure the per-genome cost on this machine, now
        n = max(4000, int(2 * 1500 / pool.stats()["ms_per_genome"]))  # ~1.5 s on 2 workers
        g = genomes(n, 4)
        want = evaluate(g, tables, bars, SEGMENTS, META, SimConfig())
        before = pool.worker_pids()
        result: dict[str, object] = {}

        def run() -> None:
            t = time.perf_counter()
            try:
                result["out"] = pool.evaluate(g)
            except BaseException as e:  # surfaced by the assertions below
                result["err"] = e
            result["seconds"] = time.perf_counter() - t

        th = threading.Thread(target=run)
        th.start()
        time.sleep(0.25)  # first tasks (~1/8 of the work each) are running
        assert th.is_alive(), "the call finished before the kill: make it bigger"
        os.kill(before[0], signal.SIGKILL)
        th.join(timeout=60)
        assert not th.is_alive()
        assert "err" not in result, result.get("err")
        assert result["seconds"] > 1.0
        assert np.array_equal(result["out"], want, equal_nan=True)
        after = pool.worker_pids()
        assert len(after) == 2 and before[0] not in after  # restarted, not dropped
        assert pool.stats()["workers"] == 2


def test_bad_segment_is_refused_on_the_driver(data):
    from workers.pool import EvalJob

    with pytest.raises(ValueError, match="segment"):
        EvalJob(*data, META, SimConfig(), np.array([[0, 5000]]))


def test_non_default_config_reaches_every_worker(ray_cluster, data):
    from workers.pool import EvalJob, EvaluationPool

    bars, tables = data
    job = EvalJob(bars, tables, COSTLY, ODD_SIM, SEGMENTS)
    assert job.digest() != EvalJob(bars, tables, META, SimConfig(), SEGMENTS).digest()
    g = genomes(60, 6)
    with EvaluationPool(job, n_workers=2, start_timeout_s=120) as p:
        assert p.worker_digests() == [job.digest()] * 2
        got = p.evaluate(g)
    assert np.array_equal(got, evaluate(g, tables, bars, SEGMENTS, COSTLY, ODD_SIM),
                          equal_nan=True)
    # the costs and the settings each changed the numbers, so both were really applied
    assert not np.array_equal(got, evaluate(g, tables, bars, SEGMENTS, META, ODD_SIM),
                              equal_nan=True)
    assert not np.array_equal(got, evaluate(g, tables, bars, SEGMENTS, COSTLY, SimConfig()),
                              equal_nan=True)


def test_job_is_put_once_and_shared(ray_cluster, data, monkeypatch):
    import ray

    from workers.pool import EvalJob, EvaluationPool

    puts: list[object] = []
    real_put = ray.put

    def counting_put(value, **kw):
        puts.append(value)
        return real_put(value, **kw)

    monkeypatch.setattr(ray, "put", counting_put)
    job = EvalJob(*data, META, SimConfig(), SEGMENTS)
    p = EvaluationPool(job, n_workers=2, start_timeout_s=120)
    try:
        p.evaluate(genomes(30, 7))
        assert len(puts) == 1 and puts[0] is job
        info = p.worker_info()
        assert {i["ref"] for i in info} == {p.job_ref.hex()}
        assert all(i["zero_copy"] for i in info)  # read from the object store, not copied
    finally:
        p.close()
    assert p.job_ref is None and p.n_workers == 0


def test_dead_worker_without_restarts_is_dropped(ray_cluster, data):
    if not ray_cluster["embedded"]:
        pytest.skip("needs the workers' processes on this machine")
    from workers.pool import EvalJob, EvaluationPool

    bars, tables = data
    g = genomes(80, 8)
    with EvaluationPool(EvalJob(bars, tables, META, SimConfig(), SEGMENTS), n_workers=2,
                        max_restarts=0, start_timeout_s=120) as p:
        victim = p.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        got = p.evaluate(g)  # its batches move to the surviving worker
        assert p.stats()["workers"] == 1 and p.worker_pids() != [victim]
    assert np.array_equal(got, evaluate(g, tables, bars, SEGMENTS, META, SimConfig()),
                          equal_nan=True)
