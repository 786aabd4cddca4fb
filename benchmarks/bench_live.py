"""``emp bench live``: the live executor's bar-to-order latency, memory and cold start.

The executor runs as its own process against the paper venue (this process: ``live.venue``
behind our acceptor on 127.0.0.1, stepped by hand one bar at a time), trading a planted-edge
champion (short-horizon autocorrelation: it reverses almost every bar, so nearly every bar
sends an order) from a signed bundle whose snapshot ends where the venue's bars begin.

(a) **Bar close -> NewOrderSingle on the wire**, measured inside the executor process on one
    clock (``perf_counter_ns``) without editing ``live/``: the QUOTE session's ``_on_frame``
    is wrapped to stamp each inbound frame before it is parsed (the bar's arrival: the
    refresh that carries its OHLC), and the TRADE session's ``_write`` to stamp the moment the
    NewOrderSingle's bytes were handed to the socket (``transport.write`` sends at once when
    its buffer is empty). The executor's own steps are wrapped the same way for the
    breakdown: the decision (tables + kernel step), the wait for the previous order's fills
    to reach the store (``_settle``), the commit of the bar's state (tables snapshot file +
    kernel state row), the ClOrdID commit (``add_order``) and the FIX message store's commit
    of the outgoing message. The three commits are fsync'd (SQLite WAL ``synchronous=FULL``,
    the snapshot through ``atomic_write_bytes``); ``fsync_us`` is one 4 kB write + fsync in
    the same directory, for scale. The first ``warmup`` bars are left out.
(b) **RSS** of the real ``python -m live.executor.cli`` process after ``warmup`` bars (VmRSS,
    its anonymous and file-backed parts), and what it is made of: RSS of fresh interpreters
    importing the executor's dependencies one group more at a time.
(c) **Cold start**: process start -> ``READY`` (pointer, signature, bundle snapshot, FIX
    logons, reconciliation) and -> the first decision (the venue steps at READY), for the
    real CLI from a bundle with a snapshot. The executor has no start from history (it
    always restores the bundle's snapshot), so there is no replay start to compare with;
    ``replay_in_process_s`` is what rebuilding the snapshot's state from the history takes
    in this process (tables, every GARCH refit, the kernel over every bar), for scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYMBOL, FIX_ID = "EDGE", 7
TARGET_P99_MS = 2.0
TARGET_RSS_MB, GOAL_RSS_MB = 250, 150
WAIT_S = 30.0  # how long the driver waits for something expected
# top-level modules worth naming when they sit in the executor's process
HEAVY = ("numpy", "numba", "llvmlite", "scipy", "pandas", "pyarrow", "sqlalchemy", "pydantic",
         "cryptography", "yaml", "cloudpickle", "arch", "statsmodels", "prometheus_client",
         "ray", "torch", "mlflow", "optuna", "deap", "matplotlib")
# cumulative import groups, each measured in a fresh interpreter
GROUPS = (("python", ()), ("numpy", ("numpy",)), ("numba (+llvmlite, scipy)", ("numba",)),
          ("sqlalchemy", ("sqlalchemy",)),
          ("pydantic, yaml, cryptography", ("pydantic", "yaml", "cryptography")),
          ("EMP modules (live.executor.service)", ("live.executor.service",)))


# ---- the world: a planted-edge champion and the venue that replays the bars after it ----------
@dataclass
class World:
    bars: Any          # market.loader.Bars, history + live part
    meta: Any
    split: int         # the snapshot ends at bar split - 1; the venue replays from split
    bundle: bytes
    private: Any       # Ed25519PrivateKey
    replay_s: float    # time to rebuild the snapshot's state from the history


def build_world(history: int, bars: int, seed: int = 3, refit_every: int = 21) -> World:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from benchmarks.power_data import CALIBRATION_VOL, generate, to_bars
    from champions.bundle import encode
    from champions.snapshot import bare_body, state_after
    from fitness.config import SimConfig
    from market.loader import Bars

    series = generate("autocorr", 2.0, seed, n=history + bars)
    full, meta, genome = to_bars(series), series.meta, series.planted
    hist = Bars(full.symbols, full.timeframe, full.ts[:history], *(x[:, :history] for x in (
        full.open, full.high, full.low, full.close, full.volume)), None)
    # the champion refits every ``refit_every`` bars (the default VolatilityConfig's 21), so
    # the latency run crosses refit bars as a daily champion does
    sim, vol = SimConfig(), CALIBRATION_VOL.model_copy(update={"refit_every": refit_every})
    t0 = time.perf_counter()
    _, snapshot = state_after(genome, hist, meta, sim, vol)
    replay_s = time.perf_counter() - t0
    body = bare_body(genome, hist, meta, sim, vol, symbol=SYMBOL, key="planted",
                     provenance="bench", snapshot=snapshot)
    private = Ed25519PrivateKey.generate()
    return World(full, meta, history, encode(body, private), private, replay_s)


def install(w: World, home: Path) -> dict:
    """Bundle + paper pointer + trusted key under ``home``; returns the executor's config
    (port filled in later)."""
    from cryptography.hazmat.primitives import serialization

    from champions.pointer import store_bundle, write_pointer

    root = home / "champions"
    _, sha = store_bundle(root, SYMBOL, w.bundle)
    sig = json.loads(w.bundle)["signature"]
    write_pointer(root, symbol=SYMBOL, timeframe=w.bars.timeframe, sha256=sha, champion_id=1,
                  run_id="bench", key="planted", signature=sig["value"], key_id=sig["key_id"],
                  stage="paper")
    pub = home / "keys" / "emp-signing.pub"
    pub.parent.mkdir(parents=True, exist_ok=True)
    pub.write_bytes(w.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {"symbol": SYMBOL, "stage": "paper", "home": str(home), "trusted_keys": [str(pub)],
            "account_equity": 100_000.0, "fill_wait_s": 5.0,
            "fix": {"port": 0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
                    "logon_timeout_s": 20},
            "symbols": {SYMBOL: {"id": FIX_ID, "lot_size": 1, "tick_size": 0.01}}}


async def start_venue(w: World, home: Path):
    """The paper venue replaying the bars after the snapshot, listening on a free port."""
    from live.fix.acceptor import start_acceptor
    from live.venue.build import acceptor_settings, build_venue
    from live.venue.config import parse_venue_config
    from live.venue.feed import Feed

    vc = parse_venue_config({"port": 0, "symbols": {SYMBOL: {"id": FIX_ID, "lot_size": 1,
                                                             "tick_size": 0.01}},
                             "replay": {"timeframe": w.bars.timeframe, "speed": 0}})
    b, s = w.bars, w.split
    feed = Feed(b.ts[s:], b.open[0, s:], b.high[0, s:], b.low[0, s:], b.close[0, s:],
                b.volume[0, s:])
    venue = build_venue(vc, {SYMBOL: feed}, {SYMBOL: w.meta})
    return venue, await start_acceptor(acceptor_settings(vc, home), venue)


# ---- the instrumented executor (child process) ------------------------------------------------
class _Probe:
    """Per-bar stamps inside the executor process (one clock: perf_counter_ns)."""

    def __init__(self) -> None:
        self.last_frame = 0
        self.cur: dict[str, int] | None = None
        self.samples: list[dict[str, int]] = []

    def timed(self, obj: Any, name: str, key: str) -> None:
        orig = getattr(obj, name)
        probe = self

        if asyncio.iscoroutinefunction(orig):
            async def wrapper(*a, **kw):
                t = time.perf_counter_ns()
                try:
                    return await orig(*a, **kw)
                finally:
                    probe.add(key, time.perf_counter_ns() - t)
        else:
            def wrapper(*a, **kw):
                t = time.perf_counter_ns()
                try:
                    return orig(*a, **kw)
                finally:
                    probe.add(key, time.perf_counter_ns() - t)
        setattr(obj, name, wrapper)

    def add(self, key: str, ns: int) -> None:
        cur = self.cur
        if cur is not None and "wire" not in cur:  # only what precedes the order's bytes
            cur[key] = cur.get(key, 0) + ns


def instrument(ex: Any, probe: _Probe) -> None:
    """Wrap the executor's path (instance attributes; ``live/`` is not edited)."""
    quote, trade = ex.ini["quote"].session, ex.ini["trade"].session
    on_frame, write, on_bar = quote._on_frame, trade._write, ex.on_bar

    async def stamped_frame(raw: bytes) -> None:
        probe.last_frame = time.perf_counter_ns()
        await on_frame(raw)

    def stamped_write(raw: bytes) -> None:
        write(raw)
        cur = probe.cur
        if cur is not None and "wire" not in cur and b"\x0135=D\x01" in raw:
            cur["wire"] = time.perf_counter_ns()

    async def timed_bar(bar):
        probe.cur = {"arrival": probe.last_frame}
        try:
            return await on_bar(bar)
        finally:
            cur, probe.cur = probe.cur, None
            if "wire" in cur:
                probe.samples.append(cur)

    quote._on_frame, trade._write, ex.on_bar = stamped_frame, stamped_write, timed_bar
    step = ex.runner.step

    def decide(*a, **kw):
        t = time.perf_counter_ns()
        try:
            return step(*a, **kw)
        finally:
            probe.add("decide", time.perf_counter_ns() - t)
            if probe.cur is not None and ex.runner.tables.pending:
                probe.cur["refit"] = 1  # the genome's own variant was fitted before deciding

    ex.runner.step = decide
    probe.timed(ex, "_settle", "settle")
    probe.timed(ex.orders, "plan", "plan_checks")
    probe.timed(ex.store, "commit_bar", "commit")
    probe.timed(trade.store, "save_and_advance", "commit_fix")


async def _serve_instrumented(cfg_path: Path, out: Path) -> None:
    from live.executor.config import load_live_config
    from live.executor.service import Executor

    ex = Executor(load_live_config(cfg_path))
    probe = _Probe()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await ex.start()
        instrument(ex, probe)
        print("READY", flush=True)
        await stop.wait()
    finally:
        await ex.stop()
        tops = {m.split(".")[0] for m in sys.modules}
        out.write_text(json.dumps({"samples": probe.samples,
                                   "modules": [m for m in HEAVY if m in tops]}))


def serve_executor() -> None:
    """Child process: ``python -c '...serve_executor()' CONFIG OUT``; SIGTERM stops it."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve_instrumented(Path(sys.argv[1]), Path(sys.argv[2])))


# ---- the driver -------------------------------------------------------------------------------
class Child:
    """An executor process: READY on stdout, ``bar done`` / ``order`` lines in its log."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log
        self.t_start = time.perf_counter()
        self.t_ready: float | None = None
        self.bars: list[tuple[float, int]] = []
        self.orders: list[str] = []
        self.tasks = [asyncio.create_task(self._read(proc.stdout)),
                      asyncio.create_task(self._read(proc.stderr))]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        with self.log.open("ab") as f:
            while line := await stream.readline():
                f.write(line)
                if line.startswith(b"READY"):
                    self.t_ready = time.perf_counter()
                elif b" bar done " in line:
                    self.bars.append((time.perf_counter(), int(line.rsplit(b" ", 1)[1])))
                elif b" emp.live.orders order " in line:
                    self.orders.append(line.split(b" order ", 1)[1].split()[0].decode())

    async def until(self, cond, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not cond():
            if self.proc.returncode is not None or loop.time() > deadline:
                tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
                raise RuntimeError(f"bench live: the executor never got to {what} "
                                   f"(exit {self.proc.returncode}); its log ends:\n{tail}")
            await asyncio.sleep(0.0005)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), WAIT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in self.tasks:
            with contextlib.suppress(Exception):
                await t


async def spawn(args: list[str], log: Path, env_extra: dict[str, str] | None = None) -> Child:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           **(env_extra or {})}
    env.pop("EMP_LIVE_KILL_AT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    return Child(proc, log)


async def step_bar(venue, child: Child) -> None:
    """One venue bar; wait for the executor's decision and for its orders to reach the venue."""
    n = len(child.bars)
    await venue.step()
    await child.until(lambda: len(child.bars) > n, f"bar {n}")
    await child.until(lambda: set(child.orders) <= {o.cl_ord_id for o in
                                                     venue.exchange.orders.values()},
                      f"the orders of bar {n} at the venue")


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def memory(pid: int) -> dict[str, Any]:
    """The executor's memory and its refit worker's (the one child process)."""
    out: dict[str, Any] = rss_of(pid)
    kids = children(pid)
    out["refit_worker"] = rss_of(kids[0]) if kids else None
    if kids:
        out["pss_total_mb"] = round(out["pss_mb"] + out["refit_worker"]["pss_mb"], 1)
    return out


def rss_of(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM, PSS (shared pages divided among their processes) and the anonymous vs
    file-backed split (smaps_rollup), MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0].lower() + "_mb"] = round(int(line.split()[1]) / 1024, 1)
    with contextlib.suppress(OSError):
        roll = {ln.split(":")[0]: int(ln.split()[1]) for ln in
                Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]}
        out["anonymous_mb"] = round(roll.get("Anonymous", 0) / 1024, 1)
        out["pss_mb"] = round(roll.get("Pss", 0) / 1024, 1)
        out["file_backed_mb"] = round((roll.get("Rss", 0) - roll.get("Anonymous", 0)) / 1024, 1)
    return out


async def session(w: World, work: Path, bars: int, warmup: int, instrumented: bool,
                  env_extra: dict[str, str] | None = None) -> dict:
    """One fresh home + venue + executor process: READY, ``bars`` bars, then SIGTERM."""
    work.mkdir(parents=True)
    cfg = install(w, work)
    venue, acc = await start_venue(w, work)
    cfg["fix"]["port"] = acc.port
    cfg_path = work / "live.yaml"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
    out = work / "probe.json"
    args = (["-c", "from benchmarks.bench_live import serve_executor; serve_executor()",
             str(cfg_path), str(out)] if instrumented else
            ["-m", "live.executor.cli", str(cfg_path)])
    child = await spawn(args, work / "executor.log", env_extra)
    res: dict[str, Any] = {}
    try:
        await child.until(lambda: child.t_ready is not None, "READY")
        res["ready_s"] = child.t_ready - child.t_start
        await child.until(lambda: bool(venue.subs), "the market data subscription")
        for i in range(bars):
            await step_bar(venue, child)
            if i == 0:
                res["first_decision_s"] = child.bars[0][0] - child.t_start
            if i + 1 == warmup:
                res["rss_after_warmup"] = memory(child.proc.pid)
        res["rss_end"] = memory(child.proc.pid)
        res["orders"] = len(child.orders)
    finally:
        await child.stop()
        await acc.close()
    if instrumented:
        res.update(json.loads(out.read_text()))
    return res


def fsync_us(where: Path, n: int = 200) -> float:
    """Median of one 4 kB write + fsync in ``where`` (the state store's filesystem)."""
    path = where / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            os.pwrite(fd, b"x" * 4096, 0)
            os.fsync(fd)
            times.append(time.perf_counter_ns() - t)
    finally:
        os.close(fd)
        path.unlink()
    return round(statistics.median(times) / 1e3, 1)


def import_groups() -> list[dict[str, Any]]:
    """RSS of fresh interpreters importing the executor's dependencies, one group more each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows, mods, prev = [], [], 0.0
    for name, group in GROUPS:
        mods += group
        code = ("".join(f"import {m}\n" for m in mods) +
                "print([ln.split()[1] for ln in open('/proc/self/status') "
                "if ln.startswith('VmRSS')][0])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, cwd=ROOT, check=True).stdout
        mb = round(int(out.strip()) / 1024, 1)
        rows.append({"group": name, "rss_mb": mb, "added_mb": round(mb - prev, 1)})
        prev = mb
    return rows


def _q(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


PARTS = ("decide", "settle", "plan_checks", "commit", "commit_fix")
COMMITS = ("commit", "commit_fix")


def _dist(tot: list[float]) -> dict[str, Any]:
    if not tot:
        return {"bars": 0}
    return {"bars": len(tot), "p50_ms": round(statistics.median(tot) / 1e3, 3),
            "p99_ms": round(_q(tot, 99) / 1e3, 3) if len(tot) > 1 else round(tot[0] / 1e3, 3),
            "max_ms": round(max(tot) / 1e3, 3)}


def latency(samples: list[dict[str, int]], warmup: int) -> dict[str, Any]:
    keep = samples[warmup:] if len(samples) > warmup else samples
    tot = [(s["wire"] - s["arrival"]) / 1e3 for s in keep]
    d = _dist(tot)
    out: dict[str, Any] = {"bars_with_orders": d["bars"], **{k: d[k] for k in
                                                            ("p50_ms", "p99_ms", "max_ms")}}
    out["refit_bars"] = _dist([t for t, s in zip(tot, keep, strict=True) if s.get("refit")])
    out["other_bars"] = _dist([t for t, s in zip(tot, keep, strict=True) if not s.get("refit")])
    parts = {}
    for key in PARTS:
        v = [s.get(key, 0) / 1e3 for s in keep]
        parts[key] = {"p50_us": round(statistics.median(v), 1), "p99_us": round(_q(v, 99), 1)}
    commits = [sum(s.get(k, 0) for k in COMMITS) / 1e3 for s in keep]
    out["parts"] = parts
    out["commits_p50_us"] = round(statistics.median(commits), 1)
    out["commits_share_of_total"] = round(sum(commits) / sum(tot), 3)
    return out


async def _run(w: World, bars: int, warmup: int, repeat: int, work: Path,
               shm: Path | None, empty_cache: bool) -> dict:
    warm = max(warmup, 1)
    # a first start after installation: numba's on-disk cache is empty, every kernel compiles
    nojit = await session(w, work / "cold-nocache", 1, 1, False,
                          {"NUMBA_CACHE_DIR": str(work / "numba-cache")}) if empty_cache else None
    cold = [await session(w, work / f"cold{i}", warm, warm, False) for i in range(repeat)]
    main = await session(w, work / "latency", bars, warmup, True)
    # the comparator: the same run with the state on tmpfs, where fsync costs nothing
    tmpfs = await session(w, shm, bars, warmup, True) if shm is not None else None
    return {"cold": cold, "nojit": nojit, "main": main, "tmpfs": tmpfs}


def run(bars: int = 1200, history: int = 300, warmup: int = 50, repeat: int = 3,
        empty_cache: bool = True, refit_every: int = 21) -> dict:
    """Every figure of ``emp bench live`` as one JSON-ready dict."""
    with tempfile.TemporaryDirectory(prefix="emp-bench-live-") as tmp:
        work = Path(tmp)
        w = build_world(history, bars, refit_every=refit_every)
        shm_root = Path("/dev/shm")
        with contextlib.ExitStack() as stack:
            shm = None
            if shm_root.is_dir() and os.access(shm_root, os.W_OK):
                shm = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="emp-bench-live-", dir=shm_root))) / "latency"
            r = asyncio.run(_run(w, bars, warmup, repeat, work, shm, empty_cache))
        fs = fsync_us(work)
    groups = import_groups()
    lat = latency(r["main"]["samples"], warmup)
    no_fsync = None if r["tmpfs"] is None else latency(r["tmpfs"]["samples"], warmup)
    rss = min((c["rss_after_warmup"] for c in r["cold"]), key=lambda x: x["vmrss_mb"])
    imports_mb = groups[-1]["rss_mb"]
    ready = [c["ready_s"] for c in r["cold"]]
    first = [c["first_decision_s"] for c in r["cold"]]
    return {
        "bench": "live", "bars": bars, "history_bars": history, "warmup_bars": warmup,
        "refit_every": refit_every,
        "bar_to_order": {**lat, "fsync_us": fs, "target_p99_ms": TARGET_P99_MS,
                         "meets_target": lat["p99_ms"] <= TARGET_P99_MS,
                         "state_on_tmpfs": None if no_fsync is None else {
                             k: no_fsync[k] for k in ("p50_ms", "p99_ms", "commits_p50_us")},
                         "method": "in the executor process: QUOTE frame in (before parse) "
                                   "-> NewOrderSingle bytes written to the TRADE socket"},
        "rss": {**rss, "after_bars": warmup, "instrumented_end": r["main"]["rss_end"],
                "imports": groups, "imports_total_mb": imports_mb,
                "rest_after_imports_mb": round(rss["vmrss_mb"] - imports_mb, 1),
                "modules_in_executor": r["main"]["modules"],
                "target_mb": TARGET_RSS_MB, "goal_mb": GOAL_RSS_MB,
                "meets_target": rss["vmrss_mb"] <= TARGET_RSS_MB},
        "cold_start": {"from_bundle_ready_s": round(min(ready), 3),
                       "from_bundle_ready_all_s": [round(x, 3) for x in ready],
                       "first_decision_s": round(min(first), 3),
                       "first_start_empty_numba_cache": None if r["nojit"] is None else {
                           "ready_s": round(r["nojit"]["ready_s"], 3),
                           "first_decision_s": round(r["nojit"]["first_decision_s"], 3)},
                       "from_replay_ready_s": None,
                       "replay_note": "a bundle without a snapshot starts from history: the "
                                      "replay runs in a child process "
                                      "(live.executor.history); replay_in_process_s is its "
                                      "cost here",
                       "replay_in_process_s": round(w.replay_s, 3),
                       "bundle_bytes": len(w.bundle)},
        "orders": r["main"]["orders"], "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
