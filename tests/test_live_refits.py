"""The refit worker process: the same fits as in-process to the bit, restarted when it dies,
the executor's own fallback when it cannot be, and a protocol that refuses broken frames."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest

from live.executor.refits import (
    RefitWorker,
    _read,
    _write,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
)
from market.volatility import FITTED_VARIANTS, RefitJob, fixed_start, run_refit


def _jobs(seed: int = 1, n: int = 250) -> list[RefitJob]:
    rng = np.random.default_rng(seed)
    s2, e = 1.0, np.empty(n)
    for t in range(n):  # a GARCH(1,1) path, percent scale
        e[t] = rng.standard_normal() * np.sqrt(s2)
        s2 = 0.05 + 0.08 * e[t] ** 2 + 0.9 * s2
    return [RefitJob(v, 400, e, None if i == 0 else fixed_start(v, e))
            for i, v in enumerate(FITTED_VARIANTS)]


def _same(a, b) -> bool:
    return (a.variant, a.bar, a.used) == (b.variant, b.bar, b.used) and (
        (a.params is None and b.params is None) or np.array_equal(a.params, b.params))


def test_frames_round_trip_exactly_and_broken_ones_are_refused():
    for job in _jobs():
        buf = io.BytesIO()
        _write(buf, *encode_job(job))
        back = decode_job(*_read(io.BytesIO(buf.getvalue())))
        assert back.variant == job.variant and np.array_equal(back.e, job.e)
        assert (back.start is None) == (job.start is None)
        res = run_refit(job)
        assert _same(decode_result(encode_result(res)), res)
    assert _read(io.BytesIO(b"")) is None  # a clean end
    whole = io.BytesIO()
    _write(whole, {"variant": "garch11"}, b"x" * 16)
    for cut in (3, 10, len(whole.getvalue()) - 1):
        with pytest.raises(ValueError, match="truncated"):
            _read(io.BytesIO(whole.getvalue()[:cut]))
    with pytest.raises(ValueError, match="frame of"):
        _read(io.BytesIO(b"\xff\xff\xff\xff"))
    with pytest.raises(ValueError, match="the refit worker failed: boom"):
        decode_result({"error": "boom"})


def test_the_worker_fits_what_the_executor_would_and_survives_a_kill():
    jobs = _jobs()
    w = RefitWorker()
    try:
        w.start()
        first = w.pid
        for job in jobs:
            assert _same(w.fit(job), run_refit(job))
        os.kill(first, signal.SIGKILL)  # the worker dies between two fits
        assert _same(w.fit(jobs[0]), run_refit(jobs[0]))
        assert w.pid != first and w.restarts == 1
    finally:
        w.close()
    assert w.pid is None


def test_without_a_worker_the_fit_runs_in_the_executor(monkeypatch):
    import sys

    w = RefitWorker()
    # a worker that cannot start: every attempt fails, the fit still comes back (in-process)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    job = _jobs(2)[1]
    assert _same(w.fit(job), run_refit(job)) and w.restarts == 2
    assert _same(RefitWorker(inline=True).fit(job), run_refit(job))
