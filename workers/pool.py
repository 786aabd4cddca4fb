"""Population evaluation on Ray actors over one shared, explicitly passed job.

The job (bars, tables, costs, simulation settings, segments) is ``ray.put`` once per pool; every
actor receives the same ObjectRef and reads the arrays zero-copy from its node's object store, so
a node holds one copy however many workers it runs. Workers get *everything* from the job: no
default costs or objective can leak in, and ``digest`` lets a test prove each worker holds the
driver's exact job.

Genomes go out in batches big enough to amortise Ray's per-task overhead (``min_task_ms``) and
small enough to balance load; a worker killed mid-task is restarted by Ray and its task retried,
so ``evaluate`` returns exactly what ``fitness.simulator.evaluate`` would.
"""

from __future__ import annotations

import hashlib
import math
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from fitness.config import SimConfig
from fitness.masks import MaskCache
from fitness.metrics import N_METRICS
from fitness.simulator import Tables, _segments, evaluate_trials, sketch_columns
from genome.ops import random_genome
from genome.schema import N_GENES
from market.config import SymbolMeta
from market.loader import Bars
from workers import cluster

FIRST_TASKS_PER_WORKER = 2  # first call, cost unknown: split evenly into 2 tasks per worker
TASKS_PER_WORKER = 4        # later calls: at least this many tasks per worker, for load balance
IN_FLIGHT = 2               # tasks queued on each actor, so it never idles between results


@dataclass(frozen=True)
class EvalJob:
    """Everything a worker needs, passed explicitly so no worker falls back to defaults."""

    bars: Bars
    tables: Tables
    meta: SymbolMeta        # costs live here
    sim: SimConfig
    segments: np.ndarray    # int64 [n_segments, 2], half-open bar ranges
    symbol: int = 0         # row of ``bars`` that ``tables`` were built for
    sketch_bars: int = 0  # columns of each genome's return sketch (0: none)

    def __post_init__(self) -> None:
        # validate on the driver: a bad segment should fail here, not in every worker
        object.__setattr__(self, "segments", _segments(self.segments, self.bars.n_bars))

    @property
    def n_segments(self) -> int:
        return int(self.segments.shape[0])

    def digest(self) -> str:
        """sha256 over meta/sim JSON, symbol, segments and the bars' fingerprint."""
        h = hashlib.sha256()
        for part in (self.meta.model_dump_json(), self.sim.model_dump_json(), str(self.symbol),
                     str(self.sketch_bars), self.bars.fingerprint()):
            h.update(part.encode() + b"\0")
        h.update(self.segments.tobytes())
        return h.hexdigest()


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB (NaN where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _private_mb() -> float:
    """Anonymous (private) resident memory: what this worker holds itself. Object-store pages it
    reads are shared memory (RssShmem), counted once per node, not per worker."""
    return _status_mb("RssAnon")


def _rss_mb() -> float:
    """Resident set size of this process (current from /proc, else peak from getrusage)."""
    rss = _status_mb("VmRSS")
    return rss if rss == rss else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@ray.remote(num_cpus=1)
class Evaluator:
    """One CPU of evaluation over the shared job; the kernel is warmed before the first task."""

    def __init__(self, job_ref: list[ray.ObjectRef]) -> None:
        import numba

        numba.set_num_threads(1)  # one CPU per actor: parallelism comes from the actors
        self._ref = job_ref[0]    # wrapped in a list so Ray hands over the ref, not a copy
        self.job: EvalJob = ray.get(self._ref)
        self._digest = self.job.digest()
        # the rule-mask cache lives as long as the actor: conditions repeat across generations
        self.masks = MaskCache()
        j = self.job
        evaluate_trials(random_genome(np.random.default_rng(0))[None], j.tables, j.bars,
                        j.segments[:1], j.meta, j.sim, j.symbol, j.sketch_bars,
                        cache=self.masks)

    def run(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Metrics and return sketches for a batch, and the seconds spent (the driver sizes
        batches from it)."""
        t = time.perf_counter()
        j = self.job
        out, sketch = evaluate_trials(genomes, j.tables, j.bars, j.segments, j.meta, j.sim,
                                      j.symbol, j.sketch_bars, cache=self.masks)
        return out, sketch, time.perf_counter() - t

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "digest": self._digest, "ref": self._ref.hex(),
                "rss_mb": _rss_mb(), "private_mb": _private_mb(),
                "masks_cached": len(self.masks), "masks_built": self.masks.built,
                # read-only arrays are views into the object store, not private copies
                "zero_copy": not self.job.tables.features.values.flags.writeable}


class EvaluationPool:
    """A fixed set of ``Evaluator`` actors sharing one ``EvalJob``."""

    def __init__(self, job: EvalJob, n_workers: int | None = None, min_task_ms: float = 20.0,
                 max_restarts: int = 3, start_timeout_s: float | None = 300.0) -> None:
        if not ray.is_initialized():
            cluster.connect()
        self.job = job
        self.digest = job.digest()
        self.min_task_ms = float(min_task_ms)
        # once per pool: every actor gets this same ref. Ray logs that restartable actors with
        # object-store constructor args may fail to restart if the object is lost (ray#53727);
        # the pool owns the ref for its whole life, so it is never evicted while actors need it.
        self._ref: ray.ObjectRef | None = ray.put(job)
        n = n_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # a killed worker is restarted (constructor re-run) and its queued tasks retried on it
        opts = {"max_restarts": max_restarts, "max_task_retries": -1 if max_restarts else 0}
        self._actors = [Evaluator.options(**opts).remote([self._ref]) for _ in range(n)]
        self._per_genome_s: float | None = None
        self._stats: dict[str, Any] = {}
        try:  # block until every worker is up and warm; fail loudly if they cannot be placed
            ray.get([a.info.remote() for a in self._actors], timeout=start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise TimeoutError(
                f"{n} evaluation workers (1 CPU each) did not start within {start_timeout_s} s; "
                f"free resources: {ray.available_resources()}") from None

    @property
    def job_ref(self) -> ray.ObjectRef | None:
        """The one ObjectRef of the job that every actor holds."""
        return self._ref

    @property
    def n_workers(self) -> int:
        return len(self._actors)

    def _check(self, genomes: np.ndarray) -> np.ndarray:
        g = np.asarray(genomes, dtype=np.float64)
        if g.ndim == 1:
            g = g.reshape(0, N_GENES) if g.size == 0 else g[None]
        if g.ndim != 2 or g.shape[1] != N_GENES:
            raise ValueError(f"genomes must be shaped [n, {N_GENES}] (one row per genome); "
                             f"got shape {np.shape(genomes)}")
        if not np.isfinite(g).all():
            raise ValueError("genomes contain NaN or inf; pass them through genome.ops.repair")
        return np.ascontiguousarray(g)

    def task_size(self, n: int) -> int:
        """Genomes per task: >= min_task_ms of measured work, and enough tasks to balance."""
        w = max(1, self.n_workers)
        if self._per_genome_s is None:
            return max(1, math.ceil(n / (FIRST_TASKS_PER_WORKER * w)))
        floor = math.ceil(self.min_task_ms / 1e3 / max(self._per_genome_s, 1e-9))
        return max(1, min(n, max(floor, math.ceil(n / (TASKS_PER_WORKER * w)))))

    def evaluate(self, genomes: np.ndarray) -> np.ndarray:
        """float64 ``[n, n_segments, N_METRICS]`` in input order, as ``fitness.simulator.evaluate``."""
        return self.evaluate_trials(genomes)[0]

    def evaluate_trials(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Metrics and return sketches in input order, as ``fitness.simulator.evaluate_trials``."""
        g = self._check(genomes)
        n = g.shape[0]
        out = np.empty((n, self.job.n_segments, N_METRICS))
        j = self.job
        width = (int(sketch_columns(j.segments, j.bars.n_bars, j.sketch_bars).max()) + 1
                 if j.sketch_bars else 0)
        sketches = np.empty((n, width), dtype=np.float32)
        if n == 0:
            return out, sketches
        if not self._actors:
            raise RuntimeError("the pool is closed")
        size = self.task_size(n)
        todo = [(lo, min(lo + size, n)) for lo in range(0, n, size)][::-1]
        n_tasks, live = len(todo), list(self._actors)
        pending: dict[ray.ObjectRef, tuple[Any, int, int]] = {}

        def submit(actor: Any) -> None:
            lo, hi = todo.pop()
            pending[actor.run.remote(g[lo:hi])] = (actor, lo, hi)

        t0, busy_s = time.perf_counter(), 0.0
        for _ in range(IN_FLIGHT):
            for actor in live:
                if todo:
                    submit(actor)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            actor, lo, hi = pending.pop(done)
            try:
                res, sk, secs = ray.get(done)
            except ray.exceptions.RayActorError:
                # restarts exhausted: drop the actor and hand its batch to a live one
                if actor in live:
                    live.remove(actor)
                if not live:
                    raise
                todo.append((lo, hi))
                actor = live[0]
            else:
                out[lo:hi] = res
                sketches[lo:hi] = sk
                busy_s += secs
            if todo:
                submit(actor)
        wall = time.perf_counter() - t0
        self._actors = live
        self._per_genome_s = busy_s / n
        self._stats = {"genomes": n, "tasks": n_tasks, "batch_size": size, "seconds": wall,
                       "genomes_per_s": n / wall, "worker_seconds": busy_s,
                       "ms_per_genome": 1e3 * self._per_genome_s, "workers": len(live)}
        return out, sketches

    def worker_info(self) -> list[dict[str, Any]]:
        """Per live actor: pid, job digest, job ObjectRef id, RSS in MB, zero-copy flag."""
        return ray.get([a.info.remote() for a in self._actors])

    def worker_digests(self) -> list[str]:
        return [i["digest"] for i in self.worker_info()]

    def worker_pids(self) -> list[int]:
        return [i["pid"] for i in self.worker_info()]

    def worker_rss_mb(self) -> list[float]:
        return [i["rss_mb"] for i in self.worker_info()]

    def stats(self) -> dict[str, Any]:
        """The last ``evaluate`` call: tasks, batch size, seconds, genomes/s, worker seconds."""
        return dict(self._stats)

    def close(self) -> None:
        """Kill the actors and drop the job's ref so the object store can free it."""
        for a in self._actors:
            ray.kill(a)
        self._actors = []
        self._ref = None

    def __enter__(self) -> EvaluationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
