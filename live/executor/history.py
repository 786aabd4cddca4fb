"""The executor and the history store: start from history, and the live bars back into it.

Everything that touches the parquet store or replays a history runs in a short-lived child
process (``python -m live.executor.history``): pandas and pyarrow alone add ~95 MB, arch
~185 MB, and the executor's own RSS target is 250 MB on a 1 GB VPS. The executor itself
imports only numpy here.

**First start** (``initial_state``; no strategy state in the state store yet):
(a) a bundle with a state snapshot: its tables and kernel state;
(b) a bundle without one: the child loads the store's bars of the bundle's symbol/timeframe
    from the bundle's origin to its last judged bar, checks them against the bundle's history
    digest (``Bars.fingerprint``, what the gates recorded and promote checks: a changed
    history is refused) and computes ``champions.snapshot.state_after`` from the training
    start, as promote does;
(c) then, either way, the store's bars after that last bar (the gap between promotion and
    this start) are stepped through the tables and the kernel (``Runner.step`` with the
    executor's refit worker), so the features and the rule memory are current; the account
    part is then reset (``flatten``): no position from bars nobody traded. No such partition
    in the store: (c) is skipped with a log line.
Child protocol (one request, one answer; ``live.executor.refits``' frames): the request is
``{"op": "start", ...}``, the answer ``{"tables", "kernel", "gap"}`` byte/row counts followed
by the tables' snapshot bytes (``fitness.tables.state_bytes``), the kernel state (float64)
and the gap bars (int64 ts, then open, high, low, close, volume as float64); or
``{"error": text}``. No pickle.

**Live bars into the store** (``append_bars``; the executor's ``BarAppender`` runs it in a
child at each trading-day roll and at stop, one at a time, never on the bar path; operators
and cron: ``emp live append-bars CONFIG``): the state store's bars (read-only) at and after the
partition's last bar. The one at its last bar (the seam) must equal the stored one; a
different one is a conflict: refused with a one-line error, nothing written (the store's bars
are never overwritten by live ones). The newer ones go through the ingest's own path
(``market.ingest.ingest_bars``: timeframe and quality checks with the default rules, merge,
higher timeframes re-derived, one transaction), all under the store's exclusive lock. Only an
existing partition is extended (its metadata and calendar come from an ingest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from core.errors import EmpError
from fitness import simulator_nb as k
from fitness.tables import SnapshotError, TablesState, state_from_bytes
from live.executor.champion import Champion, Fit, Runner, flatten
from live.executor.errors import ExecutorError
from live.executor.refits import ROOT, _read, _write
from market.ginn_vol import GinnModel
from market.volatility import run_refit

if TYPE_CHECKING:
    from live.executor.config import LiveConfig

log = logging.getLogger("emp.live.history")
FIELDS = ("open", "high", "low", "close", "volume")
STOP_TIMEOUT_S = 20.0  # the unit's TimeoutStopSec is 45 s: the append at stop gets this much


class HistoryError(ExecutorError):
    """The history store cannot give the executor what it needs, or refused its live bars."""


def partition_file(root: Path, symbol: str, timeframe: str) -> Path:
    """``market.store.HistoryStore.partition_path`` without importing pandas/pyarrow (a test
    checks the two agree): the executor looks before it starts a child."""
    return Path(root) / f"symbol={symbol}" / f"timeframe={timeframe}" / "bars.parquet"


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _last_line(text: bytes) -> str:
    lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


# ---- first start (executor side) ------------------------------------------------------------
def initial_state(cfg: LiveConfig, champion: Champion, *, fit: Fit = run_refit,
                  before_ts: int | None = None, ginn: GinnModel | None = None
                  ) -> tuple[TablesState, np.ndarray]:
    """The tables and the flat kernel state to start trading ``champion`` with (see the
    module docstring). ``before_ts``: step only the store's bars before it (a restart
    rebuilding what the first start did, before the first live bar)."""
    b = champion.bundle
    replay = b.tables_state is None
    part = partition_file(cfg.history_root, b.symbol, b.timeframe)
    if replay and not part.exists():
        raise HistoryError(f"{champion.path}: the bundle has no state snapshot and the history "
                           f"store {cfg.history_root} holds no {b.symbol}/{b.timeframe} bars to "
                           f"replay it from")
    gap = None
    if part.exists():
        tables, kernel, gap = _ask_child(cfg, champion, before_ts)
    else:
        tables, kernel = b.tables_state, b.kernel_state
        log.info("history: no %s/%s partition in %s: starting from the bundle's snapshot, no "
                 "bars after it", b.symbol, b.timeframe, cfg.history_root)
    kernel = flatten(kernel, cfg.account_equity)
    if gap is None or not len(gap[0]):
        if gap is not None:
            log.info("history: no bars after %s in %s", _iso(_last_ts(tables)), cfg.history_root)
        return tables, kernel
    runner = Runner(champion, tables, kernel, ginn=ginn)  # ginn: the tables' GINN model
    ts, cols = gap
    for j in range(len(ts)):
        runner.step(int(ts[j]), *(float(c[j]) for c in cols), fit)
    runner.finish_refits(fit)
    log.info("history: %d bar(s) of %s/%s stepped after the %s (%s .. %s)", len(ts), b.symbol,
             b.timeframe, "replay" if replay else "snapshot", _iso(int(ts[0])), _iso(int(ts[-1])))
    return runner.tables.state(), flatten(runner.strategy.state, cfg.account_equity)


def _last_ts(tables: TablesState) -> int:
    return int(tables.features.tail["ts"][-1])


def _ask_child(cfg: LiveConfig, champion: Champion, before_ts: int | None
               ) -> tuple[TablesState, np.ndarray, tuple[np.ndarray, list[np.ndarray]]]:
    """(b) when the bundle has no snapshot, and the gap bars of (c), from one child."""
    b = champion.bundle
    replay = b.tables_state is None
    req: dict[str, Any] = {
        "op": "start", "store": str(cfg.history_root), "where": str(champion.path),
        "symbol": b.symbol, "timeframe": b.timeframe, "replay": replay, "before_ts": before_ts,
        "after_ts": None if replay else _last_ts(b.tables_state)}
    if replay:
        req["body"] = {key: b.body[key] for key in ("strategy", "market", "config", "history")}
    head, payload = _run_child(["start"], req)
    n_tab, n_ker, n_gap = int(head["tables"]), int(head["kernel"]), int(head["gap"])
    if len(payload) != n_tab + 8 * n_ker + 48 * n_gap:
        raise HistoryError(f"the history child answered {len(payload)} bytes, its header says "
                           f"{n_tab} + {8 * n_ker} + {48 * n_gap}")
    if replay:
        try:
            tables = state_from_bytes(payload[:n_tab], "the history child's tables")
        except SnapshotError as exc:
            raise HistoryError(str(exc)) from None
        kernel = np.frombuffer(payload[n_tab:n_tab + 8 * n_ker], dtype="<f8").astype(np.float64)
        if kernel.shape != (k.N_STATE,):
            raise HistoryError(f"the history child's kernel state has {kernel.size} values, "
                               f"the kernel's record {k.N_STATE}")
    else:
        tables, kernel = b.tables_state, b.kernel_state
    raw = payload[n_tab + 8 * n_ker:]
    ts = np.frombuffer(raw[:8 * n_gap], dtype="<i8").astype(np.int64)
    cols = [np.frombuffer(raw[8 * n_gap * (i + 1):8 * n_gap * (i + 2)], dtype="<f8")
            for i in range(len(FIELDS))]
    return tables, kernel, (ts, cols)


def _run_child(args: list[str], req: dict[str, Any]) -> tuple[dict, bytes]:
    """One request to ``python -m live.executor.history ARGS``; its answer frame or a
    HistoryError with the child's one-line reason."""
    buf = io.BytesIO()
    _write(buf, req)
    proc = subprocess.run([sys.executable, "-m", "live.executor.history", *args],
                          input=buf.getvalue(), capture_output=True, env=_env(), cwd=ROOT,
                          check=False)
    try:
        frame = _read(io.BytesIO(proc.stdout))
    except ValueError:
        frame = None
    if frame is None:
        raise HistoryError(f"the history child (python -m live.executor.history "
                           f"{' '.join(args)}) exited with code {proc.returncode}: "
                           f"{_last_line(proc.stderr)}")
    if "error" in frame[0]:
        raise HistoryError(str(frame[0]["error"]))
    return frame


# ---- first start (child side: pandas, pyarrow, arch) ----------------------------------------
def serve_start(req: dict[str, Any]) -> tuple[dict, bytes]:
    """The child's answer to a ``start`` request (see the module docstring)."""
    import pandas as pd

    from market.store import HistoryStore

    store = HistoryStore(req["store"])
    sym, tf = req["symbol"], req["timeframe"]
    with store.reading():
        if req["replay"]:
            tables_raw, kernel, after = _replay(store, req)
        else:
            tables_raw, kernel, after = b"", np.empty(0), int(req["after_ts"])
        gap = b""
        n_gap = 0
        if store.has(sym, tf):
            end = req.get("before_ts")
            t = store.read_table(sym, tf, start=pd.Timestamp(after + 1, tz="UTC"),
                                 end=None if end is None else pd.Timestamp(int(end), tz="UTC"))
            ts = np.ascontiguousarray(t.column("ts").to_numpy().view(np.int64), dtype="<i8")
            n_gap = len(ts)
            gap = ts.tobytes() + b"".join(
                np.ascontiguousarray(t.column(c).to_numpy(), dtype="<f8").tobytes()
                for c in FIELDS)
    kern = np.ascontiguousarray(kernel, dtype="<f8")
    return ({"tables": len(tables_raw), "kernel": int(kern.size), "gap": n_gap},
            tables_raw + kern.tobytes() + gap)


def _replay(store: Any, req: dict[str, Any]) -> tuple[bytes, np.ndarray, int]:
    """(b): the judged history from the store, checked against the bundle's digest, and the
    state after it (``state_after`` from the training start, as promote computes it)."""
    import base64

    import pandas as pd

    from champions.bundle import floats_of_hex
    from champions.snapshot import state_after
    from fitness.config import SimConfig
    from genome.codec import from_json
    from market.config import SymbolMeta, VolatilityConfig
    from market.loader import load_bars

    body, where = req["body"], req["where"]
    sym, tf = req["symbol"], req["timeframe"]
    hist = body["history"]
    try:
        origin = int(hist["origin"]["ts_ns"])
        last = int(pd.Timestamp(hist["last"]).value)
        n_bars, want = int(hist["n_bars"]), str(hist["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HistoryError(f"{where}: body.history lacks the origin, last bar, bar count or "
                           f"digest the replay needs ({type(exc).__name__}: {exc})") from None
    bars = load_bars(sym, tf, pd.Timestamp(origin, tz="UTC"), pd.Timestamp(last + 1, tz="UTC"),
                     store=store)
    got = bars.fingerprint() if bars.n_bars else "none"
    if bars.n_bars != n_bars or got != want:
        raise HistoryError(
            f"the history store {store.root} no longer holds the history {where} was judged on "
            f"({sym}/{tf} {_iso(origin)} .. {_iso(last)}: {bars.n_bars} bars, sha256 "
            f"{got[:12]}; the bundle says {n_bars} bars, sha256 {want[:12]}): promote a "
            f"champion judged on the current history")
    start = int(hist.get("periods", {}).get("training", {}).get("start", 0))
    genome = from_json(json.dumps(body["strategy"]["genome"]))
    meta = SymbolMeta.model_validate(body["market"]["meta"])
    sim = SimConfig.model_validate(body["config"]["fitness"])
    vol = VolatilityConfig.model_validate(body["config"]["volatility"])
    _, section = state_after(genome, bars, meta, sim, vol, start)
    return (base64.b64decode(section["tables"]), floats_of_hex(section["kernel_state"]),
            int(bars.ts[-1]))


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    frame = _read(stdin)
    if frame is None:
        return 2
    try:
        head, payload = serve_start(frame[0])
    except EmpError as exc:
        head, payload = {"error": str(exc)}, b""
    except Exception as exc:  # answered, so the executor says why in one line
        head, payload = {"error": f"history child: {type(exc).__name__}: {exc}"}, b""
    _write(stdout, head, payload)
    return 0 if "error" not in head else 1


# ---- live bars into the store (child side) --------------------------------------------------
@dataclass(frozen=True)
class AppendResult:
    symbol: str
    timeframe: str
    store: Path
    added: int
    last_ts: int | None  # the partition's last bar after the append

    def summary(self) -> str:
        last = "none" if self.last_ts is None else _iso(self.last_ts)
        return (f"{self.symbol}/{self.timeframe}: +{self.added} live bar(s) appended to "
                f"{self.store} (last bar {last})")


def append_bars(state_file: Path, history_root: Path, symbol: str, timeframe: str, *,
                wait: float = 60.0) -> AppendResult:
    """Merge the state store's live bars after the partition's last bar into the history store
    (see the module docstring); a conflict at the seam is refused. Imports pandas/pyarrow:
    run it in a child (``BarAppender``) or an operator's process, never in the executor."""
    from live.state import StateStore
    from market.config import QualityConfig
    from market.ingest import IngestError, ingest_bars
    from market.store import HistoryStore

    state_file, history_root = Path(state_file), Path(history_root)
    if not state_file.exists():
        raise HistoryError(f"append-bars: no state store at {state_file} (the executor never "
                           f"ran with this config)")
    if not partition_file(history_root, symbol, timeframe).exists():  # before opening (mkdir)
        raise _no_partition(history_root, symbol, timeframe)
    store = HistoryStore(history_root, wait=wait)
    with store.writing(f"append live bars of {symbol}/{timeframe}"):
        if not store.has(symbol, timeframe):
            raise _no_partition(history_root, symbol, timeframe)
        meta = store.meta(symbol)
        if meta is None:
            raise HistoryError(f"append-bars: {history_root} has no metadata for {symbol}; "
                               f"re-ingest it")
        seam = _stored_tail(store, symbol, timeframe)
        last = None if seam is None else int(seam["ts"])
        with StateStore(state_file) as st:
            live = st.bars(symbol, since_ts=None if last is None else last - 1)
        if seam is not None and live and live[0].ts == last:
            _check_seam(live[0], seam, state_file, history_root, timeframe)
        new = [b for b in live if last is None or b.ts > last]
        if not new:
            return AppendResult(symbol, timeframe, history_root, 0, last)
        if seam is not None and "spread" in seam:
            raise HistoryError(f"append-bars: {symbol}/{timeframe} in {history_root} has a "
                               f"spread column; live bars (mid prices) carry none, so they "
                               f"cannot extend it")
        try:
            ingest_bars(store, symbol, timeframe, _rows(new), meta, QualityConfig(),
                        source=f"live bars of state store {state_file}")
        except IngestError as exc:
            text = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
            raise HistoryError(f"append-bars: {text}") from None
    return AppendResult(symbol, timeframe, history_root, len(new), new[-1].ts)


def _no_partition(root: Path, symbol: str, timeframe: str) -> HistoryError:
    return HistoryError(f"append-bars: {root} holds no {symbol}/{timeframe} history to extend; "
                        f"ingest it first (emp ingest)")


def _stored_tail(store: Any, symbol: str, timeframe: str) -> dict[str, Any] | None:
    """The partition's last bar as a dict (ts ns, fields, spread when stored), or None."""
    info = [p for p in store.partitions() if (p.symbol, p.timeframe) == (symbol, timeframe)]
    if info and info[0].error:
        raise HistoryError(f"append-bars: {info[0].error}")
    if not info or info[0].end is None:
        return None
    t = store.read_table(symbol, timeframe, start=info[0].end)
    if not t.num_rows:
        return None
    row = {c: t.column(c).to_numpy()[-1] for c in t.column_names if c != "ts"}
    return {**row, "ts": int(t.column("ts").to_numpy().view(np.int64)[-1])}


def _check_seam(bar: Any, seam: dict[str, Any], state_file: Path, root: Path,
                timeframe: str) -> None:
    diff = [f for f in FIELDS if not (getattr(bar, f) == seam[f] or (
        np.isnan(getattr(bar, f)) and np.isnan(seam[f])))]
    if diff:
        f = diff[0]
        raise HistoryError(
            f"append-bars: the live bar {bar.symbol}/{timeframe} {_iso(bar.ts)} in {state_file} "
            f"differs from the stored one in {root} ({', '.join(diff)}; {f} {getattr(bar, f)!r} "
            f"live, {float(seam[f])!r} stored): two price sources disagree; the stored bars are "
            f"kept and nothing was appended")


def _rows(bars: list[Any]) -> Any:
    import pandas as pd

    from market.readers import SourceRows

    frame = pd.DataFrame({"ts": pd.to_datetime([b.ts for b in bars], unit="ns", utc=True),
                          **{f: np.array([getattr(b, f) for b in bars], dtype=np.float64)
                             for f in FIELDS}})
    return SourceRows(frame, np.arange(1, len(bars) + 1))


def append_for_config(cfg: LiveConfig) -> AppendResult:
    """``emp live append-bars CONFIG``: the timeframe is the champion's in use (the state
    store's, else the pointer's), verified as the executor verifies it."""
    return append_bars(cfg.state_file, cfg.history_root, cfg.symbol, _timeframe(cfg))


def _timeframe(cfg: LiveConfig) -> str:
    from live.executor.champion import load_champion, load_champion_sha
    from live.executor.reload import trusted_keys
    from live.state import StateStore

    sha = None
    if cfg.state_file.exists():
        with StateStore(cfg.state_file) as st:
            sha = st.champion(cfg.symbol)
    trusted = trusted_keys(cfg)
    if sha is not None:
        champ = load_champion_sha(cfg.champions_root, cfg.symbol, sha, trusted,
                                  allow_unsigned=cfg.allow_unsigned)
    else:
        champ = load_champion(cfg.champions_root, cfg.symbol, cfg.stage, trusted,
                              allow_unsigned=cfg.allow_unsigned)
    return champ.bundle.timeframe


# ---- live bars into the store (executor side) -----------------------------------------------
class BarAppender:
    """Runs ``append_bars`` in a child (asyncio subprocess), one at a time: a request while
    one runs is folded into one more run after it. ``request`` never waits (the bar path)."""

    def __init__(self, cfg: LiveConfig, timeframe: str) -> None:
        self.cfg, self.timeframe = cfg, timeframe
        self.runs = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self, why: str) -> None:
        """Start an append (or one more after the running one); returns at once."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(why),
                                                             name="emp live append bars")

    async def _loop(self, why: str) -> None:
        while True:
            self._again = False
            await self.run_once(why)
            if not self._again:
                return
            why = "requested while appending"

    async def run_once(self, why: str) -> AppendResult | None:
        """One child; its summary logged (an ALERT line when it fails). None: no partition
        to extend, or the child failed."""
        cfg = self.cfg
        if not partition_file(cfg.history_root, cfg.symbol, self.timeframe).exists():
            log.debug("append-bars: no %s/%s partition in %s", cfg.symbol, self.timeframe,
                      cfg.history_root)
            return None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "live.executor.history", "append", "--state",
            str(cfg.state_file), "--history", str(cfg.history_root), "--symbol", cfg.symbol,
            "--timeframe", self.timeframe, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
            cwd=ROOT)
        out, err = await proc.communicate()
        self.runs += 1
        if proc.returncode != 0:
            self.failures += 1
            log.error("ALERT append-bars (%s) failed: %s", why, _last_line(err))
            return None
        try:
            doc = json.loads(_last_line(out))
            res = AppendResult(doc["symbol"], doc["timeframe"], Path(doc["store"]),
                               int(doc["added"]), doc["last_ts"])
        except (ValueError, KeyError, TypeError):
            log.warning("append-bars (%s): unreadable answer %r", why, _last_line(out))
            return None
        log.info("append-bars (%s): %s", why, res.summary())
        return res

    async def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """At stop: wait for a running append, then append once more (the bars since), both
        within ``timeout``; a child still running then is killed with the loop (the store's
        transaction leaves the store as it was)."""
        async def last() -> None:
            self._again = False  # the run below covers what a queued one would
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await self._task
            await self.run_once("stop")

        try:
            await asyncio.wait_for(last(), timeout)
        except TimeoutError:
            log.warning("append-bars at stop: not done within %g s; the next run appends "
                        "the rest", timeout)


# ---- the child's entry point ----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``start``: the first-start request on stdin, the answer on a private copy of stdout
    (fd 1 goes to stderr, so a library printing cannot corrupt the frame).
    ``append CONFIG`` or ``append --state --history --symbol --timeframe``: one JSON line
    (``AppendResult``) on stdout, or the one-line error on stderr and exit code 1."""
    p = argparse.ArgumentParser(prog="python -m live.executor.history")
    p.add_argument("op", choices=("start", "append"))
    p.add_argument("config", nargs="?", help="append: the executor's YAML")
    for opt in ("state", "history", "symbol", "timeframe"):
        p.add_argument(f"--{opt}")
    args = p.parse_args(argv)
    if args.op == "start":
        out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        return _serve(sys.stdin.buffer, out)
    try:
        if args.config is not None:
            from live.executor.config import load_live_config

            res = append_for_config(load_live_config(args.config))
        else:
            if not all((args.state, args.history, args.symbol, args.timeframe)):
                p.error("append needs CONFIG or all of --state --history --symbol --timeframe")
            res = append_bars(Path(args.state), Path(args.history), args.symbol, args.timeframe)
    except EmpError as exc:
        print(f"emp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"symbol": res.symbol, "timeframe": res.timeframe,
                      "store": str(res.store), "added": res.added, "last_ts": res.last_ts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
