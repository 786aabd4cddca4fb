"""GARCH-family refits in a worker process, off the executor's memory and event loop.

Why: the first fit imports ``arch`` (statsmodels, pandas, scipy.optimize: +185 MB) and a fit
takes 0.1-1 s. In the worker the executor's own RSS stays flat, a crash in a fit cannot take
the executor down, and the fits the bar's decision does not need run while the event loop
goes on (``RefitWorker.run``). The fits are ``market.volatility.run_refit``: deterministic,
the same numbers as in-process (the request carries the window as raw float64 bytes, the
answer the parameters as JSON floats, which round-trip exactly; no pickle).

Protocol on the child's stdin/stdout, one request at a time: a 4-byte big-endian length and a
JSON header ``{"variant", "bar", "n", "start"}`` followed by ``8 n`` bytes (the scaled
residuals, little-endian float64); the answer is a length and JSON
``{"variant", "bar", "params", "used"}`` or ``{"error": text}``.

If the worker dies or answers garbage it is restarted once per job; after that the job runs
in-process (with an ALERT line): a refit is never skipped, since the decision needs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from market.volatility import RefitJob, RefitResult, run_refit

log = logging.getLogger("emp.live.refits")
_LEN = struct.Struct(">I")
MAX_FRAME = 64 << 20
ROOT = Path(__file__).resolve().parents[2]


def _write(stream: BinaryIO, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(header).encode()
    stream.write(_LEN.pack(len(head)) + head + _LEN.pack(len(payload)) + payload)
    stream.flush()


def _read(stream: BinaryIO) -> tuple[dict, bytes] | None:
    """One frame, or None at a clean end of stream; ValueError on a broken one."""
    parts = []
    for _ in range(2):
        raw = stream.read(_LEN.size)
        if not raw and not parts:
            return None
        if len(raw) != _LEN.size:
            raise ValueError("truncated frame")
        (n,) = _LEN.unpack(raw)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes")
        body = stream.read(n)
        if len(body) != n:
            raise ValueError("truncated frame")
        parts.append(body)
    return json.loads(parts[0]), parts[1]


def encode_job(job: RefitJob) -> tuple[dict, bytes]:
    start = None if job.start is None else [float(x) for x in job.start]
    e = np.ascontiguousarray(job.e, dtype="<f8")
    return {"variant": job.variant, "bar": int(job.bar), "n": int(e.shape[0]),
            "start": start}, e.tobytes()


def decode_job(header: dict, payload: bytes) -> RefitJob:
    e = np.frombuffer(payload, dtype="<f8").astype(np.float64)
    if e.shape[0] != header["n"]:
        raise ValueError(f"window of {e.shape[0]} values, header says {header['n']}")
    start = None if header["start"] is None else np.array(header["start"], dtype=np.float64)
    return RefitJob(str(header["variant"]), int(header["bar"]), e, start)


def encode_result(res: RefitResult) -> dict:
    params = None if res.params is None else [float(x) for x in res.params]
    return {"variant": res.variant, "bar": int(res.bar), "params": params, "used": int(res.used)}


def decode_result(header: dict) -> RefitResult:
    if "error" in header:
        raise ValueError(f"the refit worker failed: {header['error']}")
    params = None if header["params"] is None else np.array(header["params"], dtype=np.float64)
    return RefitResult(str(header["variant"]), int(header["bar"]), params, int(header["used"]))


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The worker's loop: one answer per request until stdin closes."""
    from market.volatility import one_blas_thread

    _warm()
    while True:
        frame = _read(stdin)
        if frame is None:
            return 0
        try:
            with one_blas_thread():
                out = encode_result(run_refit(decode_job(*frame)))
        except Exception as exc:  # answered, so the executor can fall back and say why
            out = {"error": f"{type(exc).__name__}: {exc}"}
        _write(stdout, out)


def _warm() -> None:
    """Import arch and compile the recursions before the first real job."""
    from market.volatility import fixed_start

    rng = np.random.default_rng(0)
    e = rng.standard_normal(300)
    run_refit(RefitJob("garch11", 0, e, fixed_start("garch11", e)))


class RefitWorker:
    """One child process serving ``run_refit`` (see the module docstring). ``inline=True``:
    no process (tests, or a host where one more process is not wanted)."""

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child (it imports arch and warms up while the executor connects)."""
        if self.inline or (self._proc is not None and self._proc.poll() is None):
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "live.executor.refits"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, cwd=ROOT)

    def fit(self, job: RefitJob) -> RefitResult:
        """One fit, blocking (the decision waits for it)."""
        if self.inline:
            return run_refit(job)
        with self._lock:
            for attempt in range(2):
                try:
                    self.start()
                    _write(self._proc.stdin, *encode_job(job))
                    frame = _read(self._proc.stdout)
                    if frame is None:
                        raise ValueError("the refit worker exited")
                    res = decode_result(frame[0])
                    if (res.variant, res.bar) != (job.variant, job.bar):
                        raise ValueError(f"answer for {res.variant}@{res.bar}, asked "
                                         f"{job.variant}@{job.bar}")
                    return res
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self._kill()
                    log.warning("refit worker: %s (attempt %d)", exc, attempt + 1)
                    self.restarts += 1
            log.error("ALERT refit worker unavailable: fitting %s in the executor", job.variant)
            return run_refit(job)

    async def run(self, jobs: list[RefitJob]) -> list[RefitResult]:
        """Fits the event loop does not wait on (the worker's thread waits instead)."""
        return await asyncio.to_thread(lambda: [self.fit(j) for j in jobs])

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for s in (self._proc.stdin, self._proc.stdout):
                if s is not None:
                    s.close()
            self._proc = None

    def close(self) -> None:
        """Stop the child: stdin closed, it exits; killed if it does not."""
        with self._lock:
            if self._proc is None:
                return
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill()


def main() -> int:
    """The child: protocol on a private copy of stdout; fd 1 goes to stderr, so a library
    printing cannot corrupt a frame; Ctrl-C is the executor's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
