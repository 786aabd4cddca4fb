"""The executor service (asyncio): champion -> tables -> FIX sessions -> reconcile -> READY,
then one decision per bar close, orders to the target, everything committed before acting.

Per bar (``on_bar``), in this order, so a ``kill -9`` anywhere leaves a state a restart can
finish without a duplicate or a lost order:
1. the tables and the kernel step (in memory; on a refit bar only the genome's own GARCH
   variant is fitted first, in the refit worker process: ``live.executor.refits``);
2. wait (``fill_wait_s`` at most, woken by each ExecutionReport) until the bar's fills have
   reached the store: the kernel's own position after the bar is what the venue's reports
   must show;
3. the pre-trade checks of the orders that bring the position to the target (against the
   breaker and equity peak read after the previous bar: no read on this path);
4. one transaction (``StateStore.commit_bar``): the bar with its decision, the kernel state
   with the decision's target, stop/take-profit distances and trailing, and the orders, each
   with its new ClOrdID as pending_new;
5. the orders sent, then marked sent;
6. off the latency path: the other refits, the tables' snapshot (an atomic file, named by bar
   and champion), the equity record, the breaker and peak read for the next bar, the
   venue's equity (``_poll_account``) and the metrics.
A restart restores 4 (the tables from their latest snapshot of that champion, stepped through
the state store's bars up to the committed one), reconciles the orders and positions with the
venue (``reconcile``), and sends what is still missing to reach the committed target.

Risk (``live.risk``): every order leg passes ``pre_trade`` (a reversal is a reducing and an
opening leg); a blocked leg is audited and counted (``emp_orders_blocked``), never sent. The
breaker is checked at every bar (drawdown from the store's equity peak; VaR95 =
1.65 · σ̂ · √h · exposure with σ̂ the kernel's own per-bar blend of the GARCH variance and the
realised variance it sizes with, h = bars per trading day = bars_per_year / 252 (at least 1),
exposure = |units held| · close · value per unit) and on every reject (the reject storm). A
trip is persisted (``StateStore.trip``, a hard stop at the hard drawdown), alerted (log +
``emp_breaker_trips``) and flattens: while the breaker is open the target is 0 (reducing
orders only) until ``emp live reset-breaker``. The kernel steps on meanwhile, so after a reset
the account is brought to the kernel's target at the next bar.

Ops: ``/health`` ``/ready`` ``/metrics`` (``live.ops``) from before the sessions connect, so
``/ready`` says 503 until start-up is complete; READY=1 after reconciliation; the watchdog
pings while bars are processed without error; STOPPING=1 on SIGTERM. No quote for
``stale_after_s``: no new entries (exits still go), an ALERT log line and the staleness
metric. Reconciliation also runs after every TRADE reconnect and every
``reconcile_every_s``; the QUOTE session re-subscribes after a reconnect.

Every live bar is kept in the state store (``bars``): the restart's source, and the paper
record a promotion to live is judged on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from fitness import simulator_nb as k
from fitness.live import Decision
from fitness.tables import LiveTables, SnapshotError, TablesState, load_state, save_state
from live.executor.bars import LiveBar, TickBars, quotes
from live.executor.champion import Champion, Runner, find_ginn_model, flatten
from live.executor.config import LiveConfig
from live.executor.errors import ExecutorError
from live.executor.history import BarAppender, initial_state
from live.executor.orders import Leg, OrderManager
from live.executor.reconcile import Requests, account_balance, reconcile
from live.executor.refits import RefitWorker
from live.executor.reload import Reloader, champion_at_start, sha_floats, sha_of_state
from live.fix.config import InitiatorSettings, SessionSettings
from live.fix.errors import SessionError
from live.fix.initiator import Initiator, start_initiator
from live.fix.message import Message
from live.ops import systemd
from live.ops.http import OpsServer, ReadyConditions
from live.ops.metrics import Metrics
from live.risk import Account, Breaker, OrderIntent, drawdown, pre_trade
from live.state import BarRow, OrderRow, StateStore, trading_day
from live.venue.spec import SymbolSpec, spec_from_meta
from market.calendars import day_start_offset_ns
from market.ginn import GinnError
from market.ginn_vol import GinnModel

log = logging.getLogger("emp.live")
N_EXTRA = 4  # saved after the kernel state: target, stop distance, tp distance, trailing
KEEP_SNAPSHOTS = 3
VAR_Z95 = 1.65
TRADING_DAYS = 252.0


class Executor:
    """One symbol's champion traded over the QUOTE and TRADE sessions."""

    def __init__(self, cfg: LiveConfig) -> None:
        self.cfg = cfg
        self.symbol = cfg.symbol
        self.limits = cfg.risk
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
        self.last_close = math.nan
        self.ready = False
        self.reconciled = False
        self.stopping = False
        self.stale = False
        self.healthy = True
        self.bars_done = 0
        self.reconnect_reconciles = 0
        self.reconciliations = 0
        self.sigma = math.nan
        self.last_quote = time.monotonic()
        self.decisions: list[Decision] = []
        self.reloader: Reloader | None = None
        self._ticks: TickBars | None = None  # bars_from: ticks
        self.breaker = Breaker(self.limits)
        self.metrics = Metrics([cfg.symbol], drawdown_limit=self.limits.breaker_drawdown,
                               stale_after_s=cfg.stale_after_s)
        self.ops: OpsServer | None = None
        self.watchdog = systemd.Watchdog(lambda: self.healthy and not self.stopping)
        self._tasks: list[asyncio.Task[Any]] = []
        self._logons: dict[str, int] = {}
        self._diverged = False  # the account may differ from the kernel (blocked, rejected, halted)
        self._bar_t0: float | None = None
        self._roll_hour = 0
        self._day: dt.date | None = None  # the trading day of the last bar (market time)
        self._day_trades = 0
        self._day_start_eq: float | None = None
        self._bar_lock = asyncio.Lock()
        self._snap_dir = snapshot_dir(cfg)
        self.refits = RefitWorker(inline=not cfg.refit_worker)
        self._settled = asyncio.Event()  # set by every ExecutionReport applied
        self._halted = False              # the breaker, as read once per bar
        self._peak: float | None = None   # the equity peak, as read once per bar
        self._stored_day: tuple[dt.date, int, float | None, int] | None = None
        self._first_start = False
        self.venue_equity: float | None = None  # the last collateral report's
        self._resync_delta: float | None = None  # re-base the sizing equity at the next bar
        self._account_poll: asyncio.Task[None] | None = None
        self.appender: BarAppender | None = None  # live bars -> history store (load)
        self._ginn_seen: dict[str, GinnModel | None] = {}  # ginn_for's answers during load

    # ---- start -----------------------------------------------------------------------------
    def load(self) -> None:
        """Pointer -> verified bundle -> tables and kernel state (restored or first start)."""
        cfg = self.cfg
        self.refits.start()  # arch loads in the worker while the rest starts
        champ = champion_at_start(self.store, cfg)  # the store's (after a swap) or the pointer's
        b = champ.bundle
        link = cfg.symbols[cfg.symbol]
        restored = self._restore(champ)
        if restored is None:  # first start: the bundle's snapshot or its history replayed,
            # then the history store's bars since (live.executor.history)
            ginn = (self.ginn_for(champ.bundle.tables_state, champ)
                    if champ.bundle.tables_state is not None else None)
            tables, kernel = initial_state(cfg, champ, fit=self.refits.fit, ginn=ginn)
            self.store.set_champion(sha256=champ.sha256, symbol=cfg.symbol, stage=cfg.stage)
            self.store.audit("first_start", f"{cfg.symbol}: champion {champ.sha256[:12]}, flat, "
                                            f"equity {cfg.account_equity!r}")
        else:
            tables, kernel = restored
        self._first_start = restored is None
        self.spec = spec_from_meta(cfg.symbol, link.id, link.lot_size, b.meta,
                                   tables.bars_per_year, tick_size=link.tick_size,
                                   financing=b.sim.financing)
        self.appender = BarAppender(cfg, b.timeframe)
        self.champion = champ
        self.runner = Runner(champ, tables, kernel, ginn=self.ginn_for(tables, champ))
        self._ginn_seen.clear()
        tail = tables.features.tail
        self.last_ts = int(tail["ts"][-1])
        if "close" in tail and len(tail["close"]):
            self.last_close = float(tail["close"][-1])
        self.metrics.set_champion(champ.sha256)
        self._ticks = (TickBars(self.spec.fix_id, b.timeframe, b.meta.calendar)
                       if cfg.bars_from == "ticks" else None)
        self._roll_hour = day_start_offset_ns(b.meta.calendar) // 3_600_000_000_000

    def ginn_for(self, tables: TablesState, champ: Champion) -> GinnModel | None:
        """The GINN model ``tables`` were built with, found under ``ginn_root`` and no older
        than ``ginn_max_age_hours``; None when they use none, or (with an ALERT, an audit entry
        and ``emp_ginn_fallback``) when it is absent, altered or stale: the ginn row then
        falls back to GARCH(1,1), as the farm's does without a model."""
        sha = tables.vol.ginn_sha256
        if not sha:
            return None
        if sha in self._ginn_seen:  # start-up asks more than once: one lookup, one alert
            return self._ginn_seen[sha]
        try:
            model = find_ginn_model(self.cfg.ginn_root, self.symbol, champ.bundle.timeframe,
                                    sha, self.cfg.ginn_max_age_hours)
            self.metrics.set_ginn_fallback(self.symbol, False)
        except GinnError as exc:
            self._ginn_fallback(str(exc))
            model = None
        self._ginn_seen[sha] = model
        return model

    def _ginn_fallback(self, why: str) -> None:
        log.error("ALERT GINN model refused, the ginn row falls back to GARCH(1,1): %s", why)
        self.store.audit("ginn_fallback", why)
        self.metrics.set_ginn_fallback(self.symbol, True)

    def _check_ginn_age(self) -> None:
        """At a day roll: a GINN model that has grown older than ``ginn_max_age_hours`` is
        dropped (the tables continue with the garch11 row from here on)."""
        model = self.runner.tables.ginn
        if model is None:
            return
        age_h = (dt.datetime.now(dt.UTC) - model.trained_at).total_seconds() / 3600
        if age_h > self.cfg.ginn_max_age_hours:
            self._ginn_fallback(f"GINN model {model.sha256[:12]} is {age_h:.0f} h old "
                                f"(ginn_max_age_hours {self.cfg.ginn_max_age_hours:g})")
            self.runner.drop_ginn()

    def _restore(self, champ: Champion) -> tuple[TablesState, np.ndarray] | None:
        saved = self.store.strategy_state(self.symbol)
        if saved is None or (sha_of_state(saved[1]) or self.store.champion(self.symbol)
                             ) != champ.sha256:
            return None
        bar_ts, arr = saved
        tables = self._tables_at(champ, bar_ts)
        kernel, extra = arr[:k.N_STATE].copy(), arr[k.N_STATE:]
        self.target = float(extra[0])
        self.entry = (None if math.isnan(extra[1]) else
                      (float(extra[1]), None if math.isnan(extra[2]) else float(extra[2]),
                       bool(extra[3])))
        log.info("restored %s at bar %d (target %g)", self.symbol, bar_ts, self.target)
        return tables, kernel

    def _tables_at(self, champ: Champion, bar_ts: int) -> TablesState:
        """``champ``'s tables after bar ``bar_ts``: its latest snapshot at or before that bar
        (else its first start's: ``initial_state`` up to the first live bar), stepped through
        the state store's bars up to it (a crash after the bar's commit and before its
        snapshot leaves one bar to step)."""
        tag = champ.sha256[:12]
        snaps = sorted((ts, p) for p in self._snap_dir.glob(f"*-{tag}.npz")
                       if (ts := _snap_ts(p)) is not None and ts <= bar_ts)
        try:
            base = load_state(snaps[-1][1]) if snaps else None
        except SnapshotError as exc:
            raise ExecutorError(f"restart: {exc}; the state store's strategy is at bar {bar_ts}"
                                ) from None
        if base is None:  # what the first start stepped: up to the first live bar
            first = self.store.bars(self.symbol, until_ts=bar_ts)
            base = initial_state(self.cfg, champ, fit=self.refits.fit,
                                 ginn=(self.ginn_for(champ.bundle.tables_state, champ)
                                       if champ.bundle.tables_state is not None else None),
                                 before_ts=first[0].ts if first else None)[0]
        base_ts = int(base.features.tail["ts"][-1])
        bars = self.store.bars(self.symbol, since_ts=base_ts, until_ts=bar_ts)
        if base_ts != bar_ts and (not bars or bars[-1].ts != bar_ts):
            raise ExecutorError(f"restart: no tables snapshot of champion {tag} at bar {bar_ts} "
                                f"and the state store lacks the bars to rebuild it from "
                                f"{'its snapshot' if snaps else 'the bundle'} at bar {base_ts}")
        if not bars:
            return base
        lt = LiveTables(base, ginn=self.ginn_for(base, champ))
        for b in bars:
            lt.step(b.ts, b.open, b.high, b.low, b.close, b.volume)
            if lt.pending:
                lt.apply_refits([self.refits.fit(j) for j in lt.due_refits()])
        log.info("restart: tables of %s rebuilt through %d stored bar(s)", tag, len(bars))
        return lt.state()

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
        if self.cfg.ops.port is not None and self.ops is None:
            self.ops = OpsServer(self.metrics, self.readiness, host=self.cfg.ops.host,
                                 port=self.cfg.ops.port)
            await self.ops.start()
            log.info("ops endpoints on http://%s:%d (/health /ready /metrics)",
                     self.cfg.ops.host, self.ops.port)
        self.orders = OrderManager(self.store, self.symbol, self.spec, self._send_trade,
                                   metrics=self.metrics)
        self.orders.on_sent = self._on_sent
        self._refresh_risk()
        self.metrics.set_breaker(self._halted)
        self.metrics.set_position(self.symbol, self.orders.held())
        self.ini["trade"] = await start_initiator(self._session(f.trade_sub_id), self)
        self.ini["quote"] = await start_initiator(self._session(f.quote_sub_id), self)
        for role, ini in self.ini.items():
            if not await ini.wait_logged_on(f.logon_timeout_s):
                raise ExecutorError(f"FIX {role} session: no logon to {f.host}:{f.port} within "
                                    f"{f.logon_timeout_s:g} s")
        try:
            await self.reconcile()
        except TimeoutError:
            raise ExecutorError(f"reconciliation: the venue did not answer within "
                                f"{f.request_timeout_s:g} s") from None
        if self._first_start:
            await self._seed_equity()
        await self._to_target(self.last_ts, "restart: complete the committed target")
        await self._subscribe()
        self.last_quote = time.monotonic()
        self.ready = True
        self.reloader.start()
        self._spawn(self.watchdog.run(), "watchdog")
        self._spawn(self._periodic_reconcile(), "reconcile")
        self._spawn(self._watch_quotes(), "stale quotes")
        systemd.ready(f"trading {self.symbol} champion {self.champion.sha256[:12]}")

    async def _seed_equity(self) -> None:
        """First start: the kernel sizes from the equity the venue reports (flat: checked by
        the reconciliation before), not from the config's ``account_equity``."""
        try:
            equity, _ = await account_balance(self.requests, self._send_trade,
                                              self.orders.account, self.cfg.fix.request_timeout_s)
        except (TimeoutError, ValueError, SessionError) as exc:
            log.warning("no collateral report from the venue (%s): sizing from account_equity "
                        "%g", str(exc) or "no answer", self.cfg.account_equity)
            return
        self.venue_equity = equity
        self.runner.strategy.state[:] = flatten(self.runner.strategy.state, equity)
        self.store.audit("sizing_equity", f"{self.symbol}: champion {self.champion.sha256[:12]}, "
                                          f"flat, equity {equity!r}, as the venue reports it "
                                          f"(config account_equity {self.cfg.account_equity:g})")
        log.info("sizing equity %g from the venue's collateral report", equity)

    async def _poll_account(self) -> None:
        """After a bar: the venue's equity (metrics, divergence). A divergence beyond
        ``equity_resync`` re-bases the sizing equity at the next bar: the kernel's cash moves
        by the difference (position, entry and stop levels untouched), for the fees,
        slippage and financing of a real broker that the kernel's cost model missed."""
        try:
            equity, _ = await account_balance(self.requests, self._send_trade,
                                              self.orders.account,
                                              self.cfg.fix.request_timeout_s)
        except (TimeoutError, ValueError, SessionError):
            return
        self.venue_equity = equity
        ours = self.equity()
        div = (ours - equity) / equity if equity > 0 else 0.0
        self.metrics.set_equity(equity)
        self.metrics.set_sizing_equity(ours, div)
        if abs(div) > self.cfg.equity_resync:
            log.warning("ALERT sizing equity %g differs from the venue's %g by %.2f %%: "
                        "re-based at the next bar", ours, equity, 100 * div)
            self._resync_delta = equity - ours

    def _resync(self) -> None:
        delta, self._resync_delta = self._resync_delta, None
        st = self.runner.strategy.state
        before = self.equity()
        st[k.ST_CASH] += delta
        st[k.ST_PREV_EQ] += delta
        self.store.audit("sizing_equity_resync", f"{self.symbol}: {before:g} -> "
                                                 f"{self.equity():g} (the venue's equity)")
        log.warning("sizing equity re-based to the venue's: %g -> %g", before, self.equity())

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        self._tasks = [t for t in self._tasks if not t.done()]
        task = asyncio.create_task(coro, name=f"emp live {name}")
        self._tasks.append(task)
        return task

    def readiness(self) -> dict[str, bool]:
        """``/ready``: both sessions up, reconciliation clean, champion loaded, breaker
        closed, and start-up complete."""
        up = {r: r in self.ini and self.ini[r].session.logged_on for r in ("quote", "trade")}
        cond = ReadyConditions(quote_session=up["quote"], trade_session=up["trade"],
                               reconciled=self.reconciled, champion_loaded=self.runner is not None,
                               breaker_closed=not self.store.breaker().open).as_dict()
        cond["started"] = self.ready
        return cond

    async def reconcile(self) -> bool:
        """Orders and positions against the venue; a mismatch trips the breaker (never fixed).
        Raises TimeoutError when the venue does not answer."""
        self.reconciled = False
        problems = await reconcile(self.orders, self.requests, self._send_trade,
                                   self.cfg.fix.request_timeout_s)
        for p in problems:
            self.trip(f"reconciliation: {p}", "reconciliation")
        self.reconciled = not problems
        self.reconciliations += 1
        self.metrics.set_reconciled(not problems)
        self.metrics.set_position(self.symbol, self.orders.held())
        return not problems

    async def _reconcile_quietly(self, why: str) -> None:
        try:
            clean = await self.reconcile()
        except (TimeoutError, SessionError) as exc:
            log.warning("reconciliation (%s) not done: %s", why, str(exc) or "no answer")
            return
        log.info("reconciliation (%s): %s", why, "clean" if clean else "MISMATCH, halted")
        if clean and why == "reconnect":
            self.reconnect_reconciles += 1

    def trip(self, reason: str, key: str, *, hard: bool = False) -> bool:
        """Halt trading (persisted; ``emp live reset-breaker`` is the way back) and alert.
        True when the breaker was closed until now (the caller then flattens)."""
        state = self.store.breaker()
        if not state.open or (hard and not state.hard):
            self.store.trip(reason, hard=hard)
            self.metrics.breaker_tripped(key)
        self._diverged = self._halted = True
        log.error("ALERT breaker tripped: %s", reason)
        return not state.open

    async def _subscribe(self) -> None:
        await self.ini["quote"].session.send(Message("V", [
            (262, f"MD-{self.symbol}"), (263, "1"), (264, "1"), (265, "1"), (267, "7"),
            *[(269, t) for t in ("0", "1", "4", "7", "8", "5", "B")], (146, "1"),
            (55, self.spec.fix_id)]))

    async def _send_trade(self, msg: Message) -> int:
        return await self.ini["trade"].session.send(msg)

    # ---- background ------------------------------------------------------------------------
    async def _periodic_reconcile(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reconcile_every_s)
            if self.ini["trade"].session.logged_on:
                async with self._bar_lock:
                    await self._reconcile_quietly("periodic")

    async def _watch_quotes(self) -> None:
        every = min(1.0, self.cfg.stale_after_s / 4)
        while True:
            await asyncio.sleep(every)
            self.check_stale()

    def check_stale(self) -> bool:
        """No quote for ``stale_after_s``: no new entries and an alert (once per spell)."""
        age = time.monotonic() - self.last_quote
        stale = age > self.cfg.stale_after_s
        if stale and not self.stale:
            log.error("ALERT no quotes for %s for %.0f s (stale_after_s %g): no new entries",
                      self.symbol, age, self.cfg.stale_after_s)
        elif self.stale and not stale:
            log.info("quotes for %s again: entries allowed", self.symbol)
        self.stale = stale
        return stale

    async def _after_reconnect(self) -> None:
        async with self._bar_lock:
            await self._reconcile_quietly("reconnect")
            if self.reconciled and not self.stopping:
                await self._to_target(self.last_ts, "after reconnect: complete the target")

    async def _flatten(self) -> None:
        async with self._bar_lock:
            if not self.stopping:
                await self._to_target(self.last_ts, "breaker: flatten")

    # ---- the FIX application ---------------------------------------------------------------
    def _role(self, session) -> str:
        return "QUOTE" if session.id.target_sub_id == self.cfg.fix.quote_sub_id else "TRADE"

    async def on_logon(self, session) -> None:
        role = self._role(session)
        self._logons[role] = self._logons.get(role, 0) + 1
        self.metrics.set_session(role, True)
        log.info("FIX session %s logged on", session.id)
        if self._logons[role] > 1 and self.ready and not self.stopping:
            self.metrics.session_reconnected(role)
            if role == "TRADE":
                self._spawn(self._after_reconnect(), "reconnect reconcile")
            else:
                self._spawn(self._subscribe(), "resubscribe")

    async def on_logout(self, session) -> None:
        role = self._role(session)
        self.metrics.set_session(role, False)
        if role == "TRADE":
            self.reconciled = False
        log.warning("FIX session %s logged out", session.id)

    async def on_message(self, session, msg: Message) -> None:
        mt = msg.msg_type
        if mt in ("W", "X"):
            self.last_quote = time.monotonic()
            self.metrics.quote_received(self.symbol)
            if self.stale:
                self.check_stale()
            for q in quotes(msg):
                if q.symbol != self.spec.fix_id:
                    continue
                bar = q.bar
                if self._ticks is not None and q.bid is not None and q.ask is not None:
                    bar = self._ticks.add(q.ts, q.bid, q.ask)
                if bar is not None:
                    await self.on_bar(bar)
            return
        if self.requests.offer(msg):
            return
        if mt == "8" and self.orders is not None:
            self._on_report(msg)

    def _on_report(self, msg: Message) -> None:
        fill = self.orders.on_execution(msg)
        self._settled.set()
        if fill is not None:
            self.metrics.fill(self.symbol, fill.side, fill.qty)
            self.metrics.set_position(self.symbol, self.orders.held())
        exec_type = msg.get(150)
        if exec_type == "0":
            self.metrics.order_succeeded(self.symbol)
        if msg.get(39) == "8" and exec_type == "8":
            log.warning("order %s rejected: %s", msg.get(11), msg.get(58))
            self.metrics.order_rejected(self.symbol)
            self._diverged = True
            reason = self.breaker.on_reject(time.monotonic())
            # flatten once, when it trips; while open each bar flattens (a broker rejecting
            # everything must not get an order per reject)
            if reason is not None and self.trip(reason, "reject_storm"):
                self._spawn(self._flatten(), "flatten")

    # ---- bars ------------------------------------------------------------------------------
    async def on_bar(self, bar: LiveBar) -> Decision | None:
        """A bar closed: step, settle, commit, risk, order (see the module's docstring)."""
        async with self._bar_lock:
            if bar.ts <= self.last_ts:
                return None
            try:
                return await self._bar(bar)
            except Exception:
                self.healthy = False  # the watchdog stops pinging: systemd restarts us
                log.exception("bar %d failed", bar.ts)
                raise
            finally:
                self._bar_t0 = None

    async def _bar(self, bar: LiveBar) -> Decision:
        self._bar_t0 = t0 = time.perf_counter()
        self._roll_day(bar.ts)
        if self.reloader is not None:
            self.reloader.at_boundary()  # a warmed champion is swapped in here
        if self._resync_delta is not None:
            self._resync()
        r = self.runner
        d = r.step(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, self.refits.fit)
        self.metrics.observe_signal(time.perf_counter() - t0)
        self._update_sigma()
        await self._settle(float(r.strategy.state[k.ST_UNITS]))
        self.target = d.target_units
        self.entry = r.entry_fields(d) if d.target_units != 0.0 else None
        self.last_ts, self.last_close = bar.ts, bar.close
        self.decisions.append(d)
        equity = self.equity()
        self._check_breaker(equity)
        target, entry, reason = self._aim(d.reason if d.exit else "signal")
        legs = [] if self.stopping else self.orders.plan(
            target, entry, reason, price=self.last_close, check=self._check)
        rows = self.store.commit_bar(
            BarRow(self.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume,
                   self.target, self.champion.sha256),
            self._saved_state(), [leg.order for leg in legs])
        if self.reloader is not None:
            self.reloader.committed(bar.ts)  # the swap's champion row and audit entry
        await self._send(rows, legs, target)
        # off the latency path
        if r.tables.pending:
            r.finish_refits(results=await self.refits.run(r.refit_jobs()))
            self._update_sigma()
        self._snapshot(bar.ts)
        self.store.record_equity(dt.datetime.now(dt.UTC), equity)
        self._refresh_risk()
        self._bar_metrics(equity)
        if self._account_poll is None or self._account_poll.done():
            self._account_poll = self._spawn(self._poll_account(), "account")
        self.bars_done += 1
        log.info("bar done %d", bar.ts)
        return d

    def equity(self) -> float:
        """The kernel's equity at the last close: what it sizes with (see champion.py; on the
        paper venue it equals the venue's equity to the bit)."""
        return float(self.runner.strategy.state[k.ST_PREV_EQ])

    def _update_sigma(self) -> None:
        """σ̂ per bar as the kernel blends it for sizing: w·σ²_GARCH(variant) + (1-w)·RV.
        A refit bar's GARCH row is NaN until applied: σ̂ stays at the last value."""
        r = self.runner
        fp, ip = r.strategy.comp.fp[0], r.strategy.comp.ip[0]
        w = float(fp[k.P_BLEND])
        s2 = (w * float(r.tables.last_variance[int(ip[k.I_VARIANT])])
              + (1 - w) * float(r.tables.last_rv[int(ip[k.I_RVWIN])]))
        if math.isfinite(s2) and s2 > 0:
            self.sigma = math.sqrt(s2)

    def var95(self) -> float | None:
        """One-day VaR95 of the position held, money: 1.65 · σ̂ · √h · exposure."""
        if not math.isfinite(self.sigma) or not math.isfinite(self.last_close):
            return None
        h = max(1.0, self.runner.tables.bars_per_year / TRADING_DAYS)
        exposure = abs(self.orders.held()) * self.last_close * self.spec.value_per_unit
        return VAR_Z95 * self.sigma * math.sqrt(h) * exposure

    def _roll_day(self, bar_ts: int) -> None:
        """The daily limits count by the bars' trading day (market time: a replay's days are
        its bars' days); the day's start equity is the equity at the previous bar's close."""
        day = trading_day(dt.datetime.fromtimestamp(bar_ts / 1e9, dt.UTC), self._roll_hour)
        if day != self._day:
            if self._day is not None and self.appender is not None:
                self.appender.request("trading day roll")  # a child, off the bar path
            self._day, self._day_trades = day, 0
            self._day_start_eq = self.equity()
            self._check_ginn_age()

    def account(self, equity: float) -> Account:
        """What the pre-trade checks and the breaker look at. Trades today and the day's
        start equity come from this process's count of the bar's trading day; when that day
        is today by the clock, the state store's count (which survives a restart: read once
        a day, then advanced by this process's orders) is used when it is larger. The peak
        is the one read at the bar's start."""
        peak = self._peak
        trades, dse = self._day_trades, self._day_start_eq
        today = trading_day(dt.datetime.now(dt.UTC), self._roll_hour)
        if self._day is None or self._day == today:
            if self._stored_day is None or self._stored_day[0] != today:
                stored, eq = self.store.day_stats(today, roll_hour_utc=self._roll_hour)
                self._stored_day = (today, stored, eq, self._day_trades)
            _, stored, stored_eq, base = self._stored_day
            trades = max(trades, stored + self._day_trades - base)
            dse = dse if dse is not None else stored_eq
        return Account(equity=equity, day_start_equity=dse if dse is not None else equity,
                       peak_equity=equity if peak is None else max(peak, equity),
                       trades_today=trades, positions={self.symbol: self.orders.held()},
                       prices={self.symbol: self.last_close},
                       value_per_unit={self.symbol: self.spec.value_per_unit})

    def _check_breaker(self, equity: float) -> None:
        reason = self.breaker.check(self.account(equity), self.var95(), time.monotonic())
        if reason is not None:
            hard = reason.startswith("hard stop")
            self.trip(reason, "hard_stop" if hard else reason.split(":", 1)[0], hard=hard)

    def _check(self, intent: OrderIntent) -> list[str]:
        """The pre-trade checks of one order leg, plus the stale-quote rule for entries."""
        out = []
        if intent.opens and self.stale:
            out.append(f"stale_quotes: no quote for over {self.cfg.stale_after_s:g} s: "
                       "no new entries")
        return out + pre_trade(intent, self.account(self.equity()), self.limits)

    def _bar_metrics(self, equity: float) -> None:
        m = self.metrics
        if self.venue_equity is None:
            m.set_equity(equity)
        m.set_sizing_equity(equity)
        m.set_drawdown(drawdown(Account(equity, equity, self._peak or equity, 0)))
        m.set_position(self.symbol, self.orders.held())
        m.set_breaker(self._halted)
        if math.isfinite(self.sigma):
            fp = self.runner.strategy.comp.fp[0]
            ann = self.sigma * math.sqrt(self.runner.tables.bars_per_year)
            regime = ("calm" if ann < fp[k.P_CALM] else "storm" if ann > fp[k.P_STORM]
                      else "normal")
            # the kernel sizes by risk budget over stop distance: no separate multiplier (1)
            m.set_volatility(self.symbol, sigma_ann=ann, regime=regime,
                             var95_1d=self.var95() or 0.0, sizing_multiplier=1.0)

    def _on_sent(self) -> None:
        self._day_trades += 1
        self.metrics.order_sent(self.symbol)
        if self._bar_t0 is not None:
            self.metrics.observe_bar_to_order(time.perf_counter() - self._bar_t0)
            self._bar_t0 = None

    async def _settle(self, expected: float) -> None:
        """Wait until the store shows the bar's fills (the kernel's position, no order left
        open; only the latter when the account has left the kernel's path: a blocked or
        rejected order, the breaker); reconcile when they do not come. Each ExecutionReport
        applied wakes the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.fill_wait_s
        tol = self.spec.step / 2
        while True:
            self._settled.clear()
            if not self.orders.open_orders() and (
                    self._diverged or abs(self.orders.held() - expected) < tol):
                return
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), left)
        log.warning("%s: fills not settled after %.1f s (store %g, kernel %g); reconciling",
                    self.symbol, self.cfg.fill_wait_s, self.orders.held(), expected)
        await self._reconcile_quietly("fills not settled")

    def _saved_state(self) -> np.ndarray:
        """The kernel state, the decision (target, stop/take-profit distances, trailing) and
        the champion's sha256: the strategy state a restart resumes from."""
        e = self.entry
        extra = np.array([self.target, np.nan if e is None else e[0],
                          np.nan if e is None or e[1] is None else e[1],
                          0.0 if e is None else float(e[2])])
        return np.concatenate([self.runner.strategy.state, extra,
                               sha_floats(self.champion.sha256)])

    def _snapshot(self, bar_ts: int) -> None:
        """The tables after the bar (``<ts>-<sha12>.npz``); the last few are kept."""
        self._snap_dir.mkdir(parents=True, exist_ok=True)
        save_state(snapshot_path(self.cfg, bar_ts, self.champion.sha256),
                   self.runner.tables.state())
        snaps = sorted((ts, p) for p in self._snap_dir.glob("*.npz")
                       if (ts := _snap_ts(p)) is not None)
        for _, p in snaps[:-KEEP_SNAPSHOTS]:
            with contextlib.suppress(OSError):
                p.unlink()

    def _refresh_risk(self) -> None:
        """The breaker and the equity peak as the store has them, for the next bar's checks
        (read off the latency path, after the orders left): an ``emp live reset-breaker``
        from another process takes effect from the bar after the next."""
        breaker, self._peak = self.store.risk_state()
        self._halted = breaker.open

    def _aim(self, reason: str) -> tuple[float, tuple[float, float | None, bool] | None, str]:
        """(target, entry, reason): the kernel's, or flat while the breaker is open."""
        if self._halted:
            return 0.0, None, "breaker open: flatten"
        return self.target, self.entry, reason

    async def _send(self, rows: list[OrderRow], legs: list[Leg], target: float) -> None:
        try:
            await self.orders.send(rows, legs)
        except SessionError as exc:  # TRADE down: reconciled and completed after the reconnect
            log.warning("order toward %g not sent: %s", target, exc)
        held = self.orders.held() + self.orders.leaves()
        self._diverged = self._halted or abs(held - self.target) >= self.spec.step / 2

    async def _to_target(self, bar_ts: int, reason: str) -> None:
        """Orders toward the kernel's target, or toward flat while the breaker is open
        (restart, reconnect, breaker: outside the bar path)."""
        self._halted = self.store.breaker().open
        target, entry, reason = self._aim(reason)
        legs = self.orders.plan(target, entry, reason, price=self.last_close, check=self._check)
        rows = self.store.add_orders(self.symbol, bar_ts, [leg.order for leg in legs])
        await self._send(rows, legs, target)

    # ---- stop ------------------------------------------------------------------------------
    async def stop(self) -> None:
        """No new orders, state flushed (every change is committed already), logout."""
        self.stopping = True
        self.ready = False
        systemd.stopping("logging out")
        if self.reloader is not None:
            await self.reloader.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        async with self._bar_lock:
            for ini in self.ini.values():
                await ini.close()
        if self.ops is not None:
            await self.ops.close()
        if self.appender is not None:
            await self.appender.close()  # the day's live bars into the history store
        self.refits.close()
        self.store.close()


def snapshot_dir(cfg: LiveConfig) -> Path:
    return cfg.live_dir / "tables" / cfg.symbol


def snapshot_path(cfg: LiveConfig, bar_ts: int, sha256: str) -> Path:
    """Where the tables after bar ``bar_ts`` of champion ``sha256`` are kept."""
    return snapshot_dir(cfg) / f"{bar_ts}-{sha256[:12]}.npz"


def _snap_ts(path: Path) -> int | None:
    """The bar of a snapshot file ``<ts>-<sha12>.npz`` (None: not one of ours)."""
    ts, _, tag = path.stem.partition("-")
    return int(ts) if ts.isdigit() and len(tag) == 12 else None
