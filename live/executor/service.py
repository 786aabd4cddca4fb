"""The executor service (asyncio): champion -> tables -> FIX sessions -> reconcile -> READY,
then one decision per bar close, orders to the target, everything committed before acting.

Per bar (``on_bar``), in this order, so a ``kill -9`` anywhere leaves a state a restart can
finish without a duplicate or a lost order:
1. the tables and the kernel step (in memory);
2. wait (``fill_wait_s`` at most) until the bar's fills have reached the store: the kernel's
   own position after the bar is what the venue's reports must show;
3. the tables' snapshot for the bar (an atomic file) and the kernel state with its decision
   (target, stop/take-profit distances, trailing) are committed;
4. the order that brings the position to the target: ClOrdID committed (pending_new), sent,
   marked sent.
A restart restores 3, reconciles the orders and positions with the venue (``reconcile``), and
sends what is still missing to reach the committed target.

Live bars are not appended to the history store yet: the restart state is the per-bar tables
snapshot under ``<state dir>/tables/``, which makes the store unnecessary after the first start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path

import numpy as np

from fitness import simulator_nb as k
from fitness.live import Decision
from fitness.tables import SnapshotError, TablesState, load_state, save_state
from live.executor.bars import LiveBar, quotes
from live.executor.champion import Champion, Runner, flatten
from live.executor.config import LiveConfig
from live.executor.errors import ExecutorError
from live.executor.orders import OrderManager
from live.executor.reconcile import Requests, reconcile
from live.executor.reload import Reloader, champion_at_start, sha_floats
from live.fix.config import InitiatorSettings, SessionSettings
from live.fix.initiator import Initiator, start_initiator
from live.fix.message import Message
from live.ops import systemd
from live.state import StateStore
from live.venue.spec import SymbolSpec, spec_from_meta

log = logging.getLogger("emp.live")
N_EXTRA = 4  # saved after the kernel state: target, stop distance, tp distance, trailing
KEEP_SNAPSHOTS = 3


class Executor:
    """One symbol's champion traded over the QUOTE and TRADE sessions."""

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self.symbol = cfg.symbol
        self.store = StateStore(cfg.state_file, exclusive=True)
        self.requests = Requests()
        self.ini: dict[str, Initiator] = {}
        self.champion: Champion | None = None
        self.runner: Runner | None = None
        self.orders: OrderManager | None = None
        self.spec: SymbolSpec | None = None
        self.target = 0.0
        self.entry: tuple[float, float | None, bool] | None = None
        self.last_ts = -1
        self.ready = False
        self.stopping = False
        self.bars_done = 0
        self.last_quote = time.monotonic()
        self.decisions: list[Decision] = []
        self.reloader: Reloader | None = None
        self._bar_lock = asyncio.Lock()
        self._snap_dir = cfg.live_dir / "tables" / cfg.symbol

    # ---- start -----------------------------------------------------------------------------
    def load(self) -> None:
        """Pointer -> verified bundle -> tables and kernel state (restored or first start)."""
        cfg = self.cfg
        champ = champion_at_start(self.store, cfg)  # the store's (after a swap) or the pointer's
        b = champ.bundle
        link = cfg.symbols[cfg.symbol]
        self.spec = spec_from_meta(cfg.symbol, link.id, link.lot_size, b.meta,
                                   b.tables_state.bars_per_year, tick_size=link.tick_size,
                                   financing=b.sim.financing)
        restored = self._restore(champ)
        if restored is None:
            tables, kernel = b.tables_state, flatten(b.kernel_state, cfg.account_equity)
            self.store.set_champion(sha256=champ.sha256, symbol=cfg.symbol, stage=cfg.stage)
            self.store.audit("first_start", f"{cfg.symbol}: champion {champ.sha256[:12]}, flat, "
                                            f"equity {cfg.account_equity:g}")
        else:
            tables, kernel = restored
        self.champion = champ
        self.runner = Runner(champ, tables, kernel)
        self.last_ts = int(tables.features.tail["ts"][-1])

    def _restore(self, champ: Champion) -> tuple[TablesState, np.ndarray] | None:
        saved = self.store.strategy_state(self.symbol)
        if saved is None or self.store.champion(self.symbol) != champ.sha256:
            return None
        bar_ts, arr = saved
        try:
            tables = load_state(self._snap_dir / f"{bar_ts}.npz")
        except SnapshotError as exc:
            raise ExecutorError(f"restart: {exc}; the state store's strategy is at bar {bar_ts}"
                                ) from None
        kernel, extra = arr[:k.N_STATE].copy(), arr[k.N_STATE:]
        self.target = float(extra[0])
        self.entry = (None if math.isnan(extra[1]) else
                      (float(extra[1]), None if math.isnan(extra[2]) else float(extra[2]),
                       bool(extra[3])))
        log.info("restored %s at bar %d (target %g)", self.symbol, bar_ts, self.target)
        return tables, kernel

    def _session(self, sub: str) -> InitiatorSettings:
        f = self.cfg.fix
        return InitiatorSettings(
            host=f.host, port=f.port, reconnect_min_s=f.reconnect_min_s,
            reconnect_max_s=f.reconnect_max_s,
            session=SessionSettings(
                sender_comp_id=f.comp_id, target_comp_id=f.venue_comp_id, target_sub_id=sub,
                heartbeat_interval=f.heartbeat_s, reset_on_logon=True,
                credentials=f.credentials, store_synchronous="FULL",
                store_path=self.cfg.live_dir / "fix" / f"{sub.lower()}.sqlite"))

    async def start(self) -> None:
        """Everything up to READY (no order goes out before reconciliation is clean)."""
        if self.runner is None:
            self.load()
        self.reloader = Reloader(self)
        self.reloader.listen()  # SIGHUP from here on; polling starts at READY
        f = self.cfg.fix
        self.orders = OrderManager(self.store, self.symbol, self.spec, self._send_trade)
        self.ini["trade"] = await start_initiator(self._session(f.trade_sub_id), self)
        self.ini["quote"] = await start_initiator(self._session(f.quote_sub_id), self)
        for role, ini in self.ini.items():
            if not await ini.wait_logged_on(f.logon_timeout_s):
                raise ExecutorError(f"FIX {role} session: no logon to {f.host}:{f.port} within "
                                    f"{f.logon_timeout_s:g} s")
        await self.reconcile()
        await self._to_target(self.last_ts, "restart: complete the committed target")
        await self._subscribe()
        self.ready = True
        self.reloader.start()
        systemd.ready(f"trading {self.symbol} champion {self.champion.sha256[:12]}")

    async def reconcile(self) -> bool:
        problems = await reconcile(self.orders, self.requests, self._send_trade,
                                   self.cfg.fix.request_timeout_s)
        for p in problems:
            self.trip(f"reconciliation: {p}")
        return not problems

    def trip(self, reason: str) -> None:
        """Halt trading (persisted; ``emp live reset-breaker`` is the way back) and alert."""
        if not self.store.breaker().open:
            self.store.trip(reason)
        log.error("ALERT breaker tripped: %s", reason)

    async def _subscribe(self) -> None:
        await self.ini["quote"].session.send(Message("V", [
            (262, f"MD-{self.symbol}"), (263, "1"), (264, "1"), (265, "1"), (267, "7"),
            *[(269, t) for t in ("0", "1", "4", "7", "8", "5", "B")], (146, "1"),
            (55, self.spec.fix_id)]))

    async def _send_trade(self, msg: Message) -> int:
        return await self.ini["trade"].session.send(msg)

    # ---- the FIX application ---------------------------------------------------------------
    async def on_logon(self, session) -> None:
        log.info("FIX session %s logged on", session.id)

    async def on_logout(self, session) -> None:
        log.warning("FIX session %s logged out", session.id)

    async def on_message(self, session, msg: Message) -> None:
        mt = msg.msg_type
        if mt in ("W", "X"):
            self.last_quote = time.monotonic()
            for q in quotes(msg):
                if q.bar is not None and q.symbol == self.spec.fix_id:
                    await self.on_bar(q.bar)
            return
        if self.requests.offer(msg):
            return
        if mt == "8" and self.orders is not None:
            self.orders.on_execution(msg)
            if msg.get(39) == "8" and msg.get(150) == "8":
                log.warning("order %s rejected: %s", msg.get(11), msg.get(58))

    # ---- bars ------------------------------------------------------------------------------
    async def on_bar(self, bar: LiveBar) -> Decision | None:
        """A bar closed: step, settle, commit, order (see the module's docstring)."""
        async with self._bar_lock:
            if bar.ts <= self.last_ts:
                return None
            if self.reloader is not None:
                self.reloader.at_boundary()  # a warmed champion is swapped in here
            d = self.runner.step(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
            await self._settle(float(self.runner.strategy.state[k.ST_UNITS]))
            self.target = d.target_units
            self.entry = self.runner.entry_fields(d) if d.target_units != 0.0 else None
            self._commit(bar.ts)
            if self.reloader is not None:
                self.reloader.committed(bar.ts)  # the swap's champion row and audit entry
            self.last_ts = bar.ts
            self.decisions.append(d)
            if not self.stopping:
                await self._to_target(bar.ts, d.reason if d.exit else "signal")
            self.bars_done += 1
            log.info("bar done %d", bar.ts)
            return d

    async def _settle(self, expected: float) -> None:
        """Wait until the store shows the bar's fills (the kernel's position, no order left
        open); reconcile when they do not come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.fill_wait_s
        tol = self.spec.step / 2
        while loop.time() < deadline:
            if abs(self.orders.held() - expected) < tol and not self.orders.open_orders():
                return
            await asyncio.sleep(0.002)
        log.warning("%s: fills not settled after %.1f s (store %g, kernel %g); reconciling",
                    self.symbol, self.cfg.fill_wait_s, self.orders.held(), expected)
        await self.reconcile()

    def _commit(self, bar_ts: int) -> None:
        self._snap_dir.mkdir(parents=True, exist_ok=True)
        save_state(self._snap_dir / f"{bar_ts}.npz", self.runner.tables.state())
        e = self.entry
        extra = np.array([self.target, np.nan if e is None else e[0],
                          np.nan if e is None or e[1] is None else e[1],
                          0.0 if e is None else float(e[2])])
        self.store.save_strategy_state(self.symbol, bar_ts, np.concatenate(
            [self.runner.strategy.state, extra, sha_floats(self.champion.sha256)]))
        old = sorted(self._snap_dir.glob("*.npz"), key=lambda p: int(p.stem))[:-KEEP_SNAPSHOTS]
        for p in old:
            with contextlib.suppress(OSError):
                p.unlink()

    async def _to_target(self, bar_ts: int, reason: str) -> None:
        if self.store.breaker().open:
            log.warning("breaker open: no order toward target %g", self.target)
            return
        await self.orders.to_target(self.target, bar_ts, self.entry, reason)

    # ---- stop ------------------------------------------------------------------------------
    async def stop(self) -> None:
        """No new orders, state flushed (every change is committed already), logout."""
        self.stopping = True
        self.ready = False
        systemd.stopping("logging out")
        if self.reloader is not None:
            await self.reloader.close()
        async with self._bar_lock:
            for ini in self.ini.values():
                await ini.close()
        self.store.close()


def snapshot_dir(cfg: LiveConfig) -> Path:
    return cfg.live_dir / "tables" / cfg.symbol
