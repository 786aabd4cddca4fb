"""Hot reload of the champion, and rollback, without losing the position.

Triggers: the stage's pointer file changes (read every ``pointer_poll_s``; its bytes are compared,
so a rewrite naming the same bundle is no reload) or SIGHUP (re-read the pointer even if it did
not change). A rollback is asked for with a request file, ``<live dir>/requests/rollback-SYMBOL
.json`` (``request_rollback``, what ``emp live rollback CONFIG --reason`` calls), read at the
same poll. Why a file and not a signal: the running service holds the state store exclusively,
a request must survive a service that is down or starting (it is honoured at the next start),
and a signal sent before the handler is installed would kill the process.

A reload, in order:
1. the new bundle is read and verified as at start (pointer hash, canonical form, Ed25519
   signature by a trusted key, gene-schema and catalogue digests, kernel version) and must fit
   the running executor: same symbol, timeframe, bars per year and broker contract;
2. warm-up, in a worker thread: its tables from its snapshot, brought to the executor's last
   bar with the bars the executor has seen since (the current tables' tail: the last
   ``primitives_nb.TAIL`` bars, restored from the per-bar snapshot after a restart); its kernel
   steps them too, for its rule memory;
3. the swap, at the next bar boundary (``at_boundary``, at the start of ``on_bar``): bars that
   closed during the warm-up are stepped, then the new kernel state takes the account part of
   the one it replaces (``champion.adopt``: position, entry, stops, bars held, the order pending
   for the next open, cash), so the position and the open orders are kept and sizing continues;
   the bar is then stepped by the new champion, whose target is reached by ordinary orders;
4. the record (``committed``, after the bar's commit): the bar's strategy state carries the
   champion's sha256 (``sha_floats``, its last 32 values), so a crash between the commit and
   the champion row still restarts the right champion; the champion row and an audit entry
   follow.
A refused bundle or request leaves an audit entry (``reload_refused`` / ``rollback_refused``)
and an ``ALERT`` log line; the current champion keeps trading.

The replaced champion stays loaded (its tables and kernel frozen at the swap) for ``rollback``,
which brings it to the current bar the same way. After a restart the previous champion is the
last other sha256 in the state store's champion history, warmed from its bundle's snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from champions.keys import load_trusted_keys, trusted_key_sources
from champions.pointer import (
    MAX_POINTER_BYTES,
    PointerError,
    champion_dir,
    parse_pointer,
    pointer_path,
    read_regular,
)
from core.atomic import atomic_write_bytes
from core.errors import EmpError
from core.secrets import mask_text
from fitness import simulator_nb as k
from fitness.tables import TablesState
from live.executor.champion import (
    Champion,
    Fit,
    Runner,
    adopt,
    flatten,
    load_champion,
    load_champion_sha,
)
from live.executor.config import LiveConfig
from live.executor.errors import ChampionError
from live.state import StateStore
from live.venue.spec import spec_from_meta
from market.ginn_vol import GinnModel
from market.volatility import run_refit

if TYPE_CHECKING:
    from live.executor.service import Executor

log = logging.getLogger("emp.live.reload")
SHA_FLOATS = 32  # a sha256 as 32 byte values at the end of the saved strategy state
REQUEST_FORMAT = "emp-live-rollback"
MAX_REQUEST_BYTES = 16 * 1024


class ReloadError(ChampionError):
    """A champion that cannot be swapped in; the current one keeps trading."""


# ---- the champion's identity in the strategy state --------------------------------------------
def sha_floats(sha256: str) -> np.ndarray:
    """A sha256 as 32 float64 byte values (exact), appended to the saved strategy state."""
    return np.frombuffer(bytes.fromhex(sha256), dtype=np.uint8).astype(np.float64)


def sha_of_state(saved: np.ndarray) -> str | None:
    """The sha256 at the end of a saved strategy state (None: a state saved without one)."""
    arr = np.asarray(saved, dtype=np.float64).ravel()
    if arr.size < k.N_STATE + SHA_FLOATS:
        return None
    tail = arr[-SHA_FLOATS:]
    if not np.all((tail >= 0) & (tail <= 255) & (tail == np.round(tail))):
        return None
    return bytes(tail.astype(np.uint8)).hex()


def trusted_keys(cfg: LiveConfig) -> dict:
    """The trusted public keys, read again at each use (a key removed from disk is revoked)."""
    return load_trusted_keys(cfg.trusted_keys or trusted_key_sources(cfg.home))


def champion_at_start(store: StateStore, cfg: LiveConfig) -> Champion:
    """The champion to start with: the one the state store's strategy state was saved by (a
    reload or rollback may have moved it away from the pointer's), else the pointer's. The
    champion history is repaired when a crash fell between a swap's commit and its row."""
    trusted = trusted_keys(cfg)
    saved = store.strategy_state(cfg.symbol)
    sha = None
    if saved is not None:
        sha = sha_of_state(saved[1]) or store.champion(cfg.symbol)
    if sha is None:
        return load_champion(cfg.champions_root, cfg.symbol, cfg.stage, trusted,
                             allow_unsigned=cfg.allow_unsigned)
    try:
        champ = load_champion_sha(cfg.champions_root, cfg.symbol, sha, trusted,
                                  allow_unsigned=cfg.allow_unsigned)
    except ChampionError as exc:
        raise ChampionError(f"the champion in use per the state store ({sha[:12]}): {exc}"
                            ) from None
    if store.champion(cfg.symbol) != sha:
        store.set_champion(sha256=sha, symbol=cfg.symbol, stage=cfg.stage)
        store.audit("champion_recovered", f"{cfg.symbol}: {sha[:12]} per the strategy state "
                                          "(a crash fell between a swap's commit and its record)")
    return champ


# ---- warm-up ------------------------------------------------------------------------------------
def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%d %H:%M")


def bars_after(source: TablesState, last_ts: int) -> list[tuple[int, float, float, float,
                                                                float, float]]:
    """The bars of ``source``'s tail after bar ``last_ts`` (which must be one of them)."""
    tail = source.features.tail
    ts = tail["ts"]
    if ts.size == 0:
        raise ReloadError("the executor has no bars yet to warm a champion with")
    if last_ts > ts[-1]:
        raise ReloadError(f"its snapshot ends at bar {_iso(last_ts)}, after the executor's last "
                          f"bar {_iso(int(ts[-1]))}: it was judged on bars not seen here yet")
    i = int(np.searchsorted(ts, last_ts))
    if i >= ts.size or ts[i] != last_ts:
        raise ReloadError(f"its snapshot ends at bar {_iso(last_ts)}, which is not among the "
                          f"executor's last {ts.size} bars ({_iso(int(ts[0]))} .. "
                          f"{_iso(int(ts[-1]))}): promote a bundle judged on recent history")
    f = [tail[n] for n in ("open", "high", "low", "close", "volume")]
    return [(int(ts[j]), *(float(x[j]) for x in f)) for j in range(i + 1, ts.size)]


def catch_up(runner: Runner, source: TablesState, fit: Fit = run_refit) -> int:
    """Step ``runner`` through the bars of ``source`` after its own last bar (refits
    completed); their count."""
    rows = bars_after(source, runner.last_ts)
    for row in rows:
        runner.step(*row, fit)
    runner.finish_refits(fit)
    return len(rows)


def warm_new(champ: Champion, source: TablesState, equity: float,
             fit: Fit = run_refit, ginn: GinnModel | None = None) -> Runner:
    """A runner for ``champ`` from its bundle's snapshot, brought to ``source``'s last bar
    (its account part is replaced at the swap; ``equity`` only keeps the warm-up sane)."""
    b = champ.bundle
    runner = Runner(champ, b.tables_state, flatten(b.kernel_state, equity), ginn=ginn)
    catch_up(runner, source, fit)
    return runner


@dataclass
class Candidate:
    """A warmed champion waiting for the next bar boundary."""

    champion: Champion
    runner: Runner
    kind: str    # "reload" | "rollback"
    detail: str  # why, for the audit log


# ---- rollback requests ---------------------------------------------------------------------
def request_path(cfg: LiveConfig) -> Path:
    return cfg.live_dir / "requests" / f"rollback-{cfg.symbol}.json"


def request_rollback(cfg: LiveConfig, reason: str | None, who: str | None = None) -> Path:
    """Ask the executor of ``cfg`` to roll back to its previous champion (``emp live rollback
    CONFIG --reason``): an atomic request file the service reads within ``pointer_poll_s``
    (at once on SIGHUP; at its next start if it is down). The outcome is in the audit log."""
    if not reason or not reason.strip():
        raise ReloadError("rollback needs --reason (it is recorded in the audit log)")
    doc = {"format": REQUEST_FORMAT, "symbol": cfg.symbol, "reason": reason.strip(),
           "who": who or getpass.getuser(),
           "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    path = request_path(cfg)
    atomic_write_bytes(path, json.dumps(doc, sort_keys=True).encode() + b"\n")
    return path


def read_request(path: Path, symbol: str) -> dict[str, str]:
    """A rollback request file, validated (ReloadError naming the file otherwise)."""
    data = read_regular(path, ReloadError, "rollback request", MAX_REQUEST_BYTES)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ReloadError(f"{path}: rollback request is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != REQUEST_FORMAT:
        raise ReloadError(f"{path}: not a rollback request (format {REQUEST_FORMAT!r})")
    if doc.get("symbol") != symbol:
        raise ReloadError(f"{path}: rollback request is for {doc.get('symbol')!r}, not {symbol}")
    for name in ("reason", "who"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise ReloadError(f"{path}: rollback request lacks a {name!r}")
    return {"reason": doc["reason"], "who": doc["who"]}


# ---- the watcher and the swap ---------------------------------------------------------------
class Reloader:
    """Watches the pointer and the rollback requests of one executor; warms candidates in the
    background and swaps them in at bar boundaries (``at_boundary`` / ``committed``)."""

    def __init__(self, ex: Executor) -> None:
        self.ex, self.cfg = ex, ex.cfg
        self.previous: tuple[Champion, Runner] | None = None
        self.pending: Candidate | None = None
        self.swaps = 0
        self.refusals = 0
        self._swapped: Candidate | None = None
        self._pointer = pointer_path(champion_dir(self.cfg.champions_root, self.cfg.symbol),
                                     self.cfg.stage)
        self._seen = self._initial_seen()
        self._wake = asyncio.Event()
        self._force = False
        self._busy = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._signals: list[int] = []

    def _initial_seen(self) -> bytes | None:
        """The pointer as it is now, if it is no news: it names the champion in use, or it was
        written before the last champion change (rolled back from, or superseded). A pointer
        written while the executor was down is news, and the first check reloads it."""
        try:
            data = read_regular(self._pointer, PointerError, "champion pointer",
                                MAX_POINTER_BYTES)
            p = parse_pointer(data, self._pointer)
            if p.sha256 == self.ex.champion.sha256:
                return data
            hist = self.ex.store.champion_history(self.cfg.symbol, limit=1)
            written = datetime.fromisoformat(p.written_at.replace("Z", "+00:00"))
            return data if hist and written <= hist[-1][0] else None
        except (PointerError, ValueError):
            return None

    # ---- triggers ------------------------------------------------------------------------
    def listen(self) -> None:
        """SIGHUP: re-read the pointer now (main thread only; other threads leave it)."""
        if threading.current_thread() is not threading.main_thread():
            return
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.kick, True)
        self._signals.append(signal.SIGHUP)

    def kick(self, force: bool = False) -> None:
        """Check the pointer and the requests now (``force``: even an unchanged pointer)."""
        self._force = self._force or force
        self._wake.set()

    def start(self) -> None:
        """Start polling (after READY: nothing is swapped before reconciliation is clean)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="emp-reload")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self.ex.stopping:
            try:
                await self.check()
            except (EmpError, OSError, ValueError) as exc:  # the watcher must stay alive
                log.error("ALERT reload watcher: %s", mask_text(str(exc)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.pointer_poll_s)
            self._wake.clear()

    async def check(self) -> None:
        """One look at the rollback request and the pointer."""
        force, self._force = self._force, False
        async with self._busy:
            path = request_path(self.cfg)
            taken = any(c is not None and c.kind == "rollback"
                        for c in (self.pending, self._swapped))
            if not taken and (path.exists() or path.is_symlink()):
                try:
                    req = read_request(path, self.cfg.symbol)
                except ReloadError as exc:
                    self._refuse("rollback", exc)
                    path.unlink(missing_ok=True)
                else:
                    if await self.rollback(req["reason"], req["who"]) is None:
                        path.unlink(missing_ok=True)
            await self.reload(force=force)

    # ---- preparing a candidate -----------------------------------------------------------
    async def reload(self, *, force: bool = False) -> Candidate | None:
        """Read the pointer; when it changed (or ``force``), verify and warm its champion."""
        try:
            data = read_regular(self._pointer, PointerError, "champion pointer",
                                MAX_POINTER_BYTES)
        except PointerError as exc:
            if force or self._seen is not None:
                self._seen = None
                self._refuse("reload", exc)
            return None
        if data == self._seen and not force:
            return None
        self._seen = data
        try:
            champ = load_champion(self.cfg.champions_root, self.cfg.symbol, self.cfg.stage,
                                  trusted_keys(self.cfg), allow_unsigned=self.cfg.allow_unsigned)
            if champ.sha256 == self.ex.champion.sha256:
                log.info("pointer names the champion in use (%s): nothing to reload",
                         champ.sha256[:12])
                return None
            if self.pending is not None and self.pending.champion.sha256 == champ.sha256:
                return self.pending
            self._fits(champ)
            runner = await self._warm(champ)
        except (EmpError, ValueError) as exc:
            self._refuse("reload", exc)
            return None
        return self._ready(Candidate(champ, runner, "reload",
                                     f"pointer {self._pointer.name} -> {champ.sha256[:12]}"))

    async def rollback(self, reason: str, who: str) -> Candidate | None:
        """Warm the previous champion for the next bar boundary (None: refused, audited)."""
        ex = self.ex
        try:
            if not reason or not reason.strip():
                raise ReloadError("rollback needs a reason")
            if self.previous is not None:
                champ, runner = self.previous
                await asyncio.to_thread(catch_up, runner, ex.runner.tables.state(),
                                        ex.refits.fit)
            else:
                sha = self._previous_sha()
                champ = load_champion_sha(self.cfg.champions_root, self.cfg.symbol, sha,
                                          trusted_keys(self.cfg),
                                          allow_unsigned=self.cfg.allow_unsigned)
                self._fits(champ)
                runner = await self._warm(champ)
        except (EmpError, ValueError) as exc:
            self._refuse("rollback", exc)
            return None
        return self._ready(Candidate(champ, runner, "rollback", f"by {who}: {reason}"))

    async def _warm(self, champ: Champion) -> Runner:
        """``champ`` warmed up to the executor's last bar in a worker thread (its GINN model,
        if its tables use one, as the executor finds it)."""
        ex = self.ex
        return await asyncio.to_thread(warm_new, champ, ex.runner.tables.state(),
                                       self.cfg.account_equity, ex.refits.fit,
                                       ex.ginn_for(champ.bundle.tables_state, champ))

    def _previous_sha(self) -> str:
        current = self.ex.champion.sha256
        for _at, sha, _stage in reversed(self.ex.store.champion_history(self.cfg.symbol, 50)):
            if sha != current:
                return sha
        raise ReloadError(f"{self.cfg.symbol}: no previous champion to roll back to")

    def _fits(self, champ: Champion) -> None:
        """The candidate trades what the executor is wired for (else a restart is needed)."""
        cur, new = self.ex.champion.bundle, champ.bundle
        where = str(champ.path)
        if new.timeframe != cur.timeframe:
            raise ReloadError(f"{where}: timeframe {new.timeframe}, the executor trades "
                              f"{cur.timeframe}")
        if new.tables_state is None:
            raise ReloadError(f"{where}: no state snapshot; a hot reload warms from it: restart "
                              "the executor to start this bundle from the history store")
        bpy = new.tables_state.bars_per_year
        if bpy != self.ex.runner.tables.bars_per_year:
            raise ReloadError(f"{where}: {bpy:g} bars per year, the executor's tables "
                              f"{self.ex.runner.tables.bars_per_year:g}")
        link = self.cfg.symbols[self.cfg.symbol]
        spec = spec_from_meta(self.cfg.symbol, link.id, link.lot_size, new.meta, bpy,
                              tick_size=link.tick_size, financing=new.sim.financing)
        if spec != self.ex.spec:
            raise ReloadError(f"{where}: its symbol metadata (contract, costs) differ from the "
                              "running executor's: restart the executor to trade it")

    def _ready(self, cand: Candidate) -> Candidate:
        self.pending = cand
        self.ex.store.audit(f"{cand.kind}_ready",
                            f"{self.cfg.symbol}: {cand.champion.sha256[:12]} warmed to bar "
                            f"{cand.runner.last_ts}; swap at the next bar ({cand.detail})")
        log.info("%s of %s: %s warmed up, swap at the next bar", cand.kind, self.cfg.symbol,
                 cand.champion.sha256[:12])
        return cand

    def _refuse(self, kind: str, exc: BaseException) -> None:
        self.refusals += 1
        msg = mask_text(str(exc))
        log.error("ALERT %s refused, champion %s keeps trading: %s", kind,
                  self.ex.champion.sha256[:12], msg)
        self.ex.store.audit(f"{kind}_refused", msg)

    # ---- the swap (called by Executor.on_bar, under its bar lock) -------------------------
    def at_boundary(self) -> None:
        """Before a bar is stepped: swap the pending candidate in (bars that closed during its
        warm-up are stepped first; it takes the current account part)."""
        cand, self.pending = self.pending, None
        if cand is None:
            return
        ex = self.ex
        try:
            catch_up(cand.runner, ex.runner.tables.state(), ex.refits.fit)
        except (EmpError, ValueError) as exc:
            self._refuse(cand.kind, exc)
            return
        cand.runner.strategy.state[:] = adopt(cand.runner.strategy.state,
                                              ex.runner.strategy.state)
        self.previous = (ex.champion, ex.runner)
        ex.champion, ex.runner = cand.champion, cand.runner
        self._swapped = cand
        self.swaps += 1
        log.warning("%s: champion %s -> %s (%s), position %g kept", cand.kind,
                    self.previous[0].sha256[:12], cand.champion.sha256[:12],
                    mask_text(cand.detail), float(ex.runner.strategy.state[k.ST_UNITS]))

    def committed(self, bar_ts: int) -> None:
        """After the first bar of a swapped-in champion is committed: record the swap."""
        cand, self._swapped = self._swapped, None
        if cand is None:
            return
        store, sym = self.ex.store, self.cfg.symbol
        store.set_champion(sha256=cand.champion.sha256, symbol=sym, stage=self.cfg.stage)
        old = self.previous[0].sha256[:12] if self.previous else "?"
        store.audit(f"champion_{cand.kind}", f"{sym}: {old} -> {cand.champion.sha256[:12]} "
                                             f"from bar {bar_ts}: {cand.detail}")
        if cand.kind == "rollback":
            request_path(self.cfg).unlink(missing_ok=True)


def describe(ex: Executor) -> dict[str, Any]:
    """What is loaded (for /ready or a status line): in use, previous, pending."""
    r = ex.reloader
    return {"champion": ex.champion.sha256 if ex.champion else None,
            "previous": r.previous[0].sha256 if r and r.previous else None,
            "pending": r.pending.champion.sha256 if r and r.pending else None}
