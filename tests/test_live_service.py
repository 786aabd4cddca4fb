"""The executor's service layer against the paper venue over real TCP (issue 14, acceptance 2
and the ops items): a venue reject storm trips the breaker, flattens and stays halted across
a restart; a blocked opening order never reaches the venue; stale quotes stop entries but not
exits; ``/ready`` turns 200 only once start-up is complete, over real HTTP; a dropped TRADE
link with skipped sequence numbers is reconnected, reconciled clean, and trading keeps the
backtest's positions and equity bar for bar. Also: the service's modules in a fresh
interpreter import none of the farm packages."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_rig import SPLIT, SYMBOL, N, install, live_config, make_venue, serving, until, world

from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor
from live.risk import OrderIntent
from live.venue.app import TRADE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def w():
    return world()


def expected_positions(w) -> np.ndarray:
    p = w.batch.position
    return p[SPLIT:N] if len(p) == N else p


async def step(ex: Executor, venue, i: int) -> None:
    """One venue bar, then wait until the executor processed it and its orders are acked."""
    await venue.step()
    await until(lambda: ex.bars_done >= i + 1, f"bar {i} processed")
    await until(lambda: not [o for o in ex.orders.open_orders()
                             if o.status in ("pending_new", "sent")], f"bar {i} order acks")


async def get(port: int, path: str) -> tuple[int, bytes]:
    """GET over a real TCP connection: (status code, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def first_exit(w) -> int:
    """Index (after the split) of the first bar whose open changes a held position."""
    pos = expected_positions(w)
    for j in range(1, len(pos)):
        if pos[j - 1] != 0 and pos[j] != pos[j - 1]:
            return j
    raise AssertionError("the planted edge never exits a position")


def test_reject_storm_trips_flattens_and_stays_halted_across_a_restart(w, tmp_path):
    pub = install(w, tmp_path)
    j = first_exit(w)
    raw = live_config(tmp_path, pub, 0, fill_wait_s=0.3,
                      risk={"reject_storm": 2, "reject_window_s": 3600})

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        acc = await start_acceptor(acc_settings, venue)
        cfg = parse_live_config({**raw, "fix": {**raw["fix"], "port": acc.port}})
        ex = Executor(cfg)
        await ex.start()
        try:
            for i in range(j - 1):
                await step(ex, venue, i)
            venue.faults.reject_next(2)
            i = j - 1
            while not ex.store.breaker().open:  # the exit (and its retry) are rejected
                await step(ex, venue, i)
                if i == j - 1:
                    assert venue.exchange.positions[SYMBOL].units != 0, "nothing to flatten"
                i += 1
                assert i < j + 5, "no reject storm"
            assert "reject_storm" in ex.store.breaker().reason
            for _ in range(3):  # the flatten order fills at the next open; nothing more
                await step(ex, venue, i)
                i += 1
            assert venue.exchange.positions[SYMBOL].units == 0
            assert ex.store.position(SYMBOL) == 0
            assert ex.readiness()["breaker_closed"] is False
            assert b'emp_breaker_trips_total{reason="reject_storm"} 1.0' in \
                ex.metrics.exposition()
            n_orders = len(venue.exchange.orders)
        finally:
            await ex.stop()
        ex2 = Executor(cfg)  # a restart: still halted, still flat, no order sent
        await ex2.start()
        try:
            assert ex2.store.breaker().open
            assert ex2.readiness()["breaker_closed"] is False
            for k in range(4):
                await step(ex2, venue, k)
            assert venue.exchange.positions[SYMBOL].units == 0
            assert len(venue.exchange.orders) == n_orders
            audit = [e for _, e, _ in ex2.store.audit_log(500)]
            assert "breaker_trip" in audit
        finally:
            await ex2.stop()
            await acc.close()

    asyncio.run(run())


def test_a_blocked_opening_order_never_reaches_the_venue(w, tmp_path):
    pub = install(w, tmp_path)
    pos = expected_positions(w)
    entry = int(np.flatnonzero(pos != 0)[0])  # the backtest holds from this bar's open
    raw = live_config(tmp_path, pub, 0, fill_wait_s=0.3,
                      risk={"max_position_frac": 1e-6})

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            for i in range(entry + 2):
                await step(ex, venue, i)
            assert not venue.exchange.orders, "a blocked order reached the venue"
            assert venue.exchange.positions[SYMBOL].units == 0
            blocked = [d for _, e, d in ex.store.audit_log(200) if e == "order_blocked"]
            assert blocked and "max_position_frac" in blocked[0]
            assert b'emp_orders_blocked_total{check="max_position_frac",symbol="EDGE"}' in \
                ex.metrics.exposition()
            assert not ex.store.breaker().open

    asyncio.run(run())


def test_stale_quotes_stop_entries_but_not_exits(w, tmp_path):
    pub = install(w, tmp_path)
    raw = live_config(tmp_path, pub, 0, stale_after_s=30)

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            i = 0
            while ex.orders.held() == 0:
                await step(ex, venue, i)
                i += 1
            px, held = ex.last_close, ex.orders.held()
            side = "buy" if held > 0 else "sell"
            entry = OrderIntent(SYMBOL, side, 1.0, px, px * (0.9 if held > 0 else 1.1), True)
            exit_ = OrderIntent(SYMBOL, "sell" if held > 0 else "buy", abs(held), px, None,
                                opens=False)
            assert not ex.check_stale() and ex._check(entry) == []
            ex.last_quote -= 31  # no quote for longer than stale_after_s
            assert ex.check_stale()
            assert any(p.startswith("stale_quotes") for p in ex._check(entry))
            assert ex._check(exit_) == []
            await step(ex, venue, i)  # a quote arrives: entries allowed again
            assert not ex.stale and ex._check(entry) == []
            assert b"emp_data_staleness_seconds" in ex.metrics.exposition()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_turns_200_only_after_start_up(w, tmp_path):
    pub = install(w, tmp_path)
    fix_port = _free_port()
    raw = live_config(tmp_path, pub, fix_port, ops={"port": 0})

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        ex = Executor(parse_live_config(raw))
        starting = asyncio.create_task(ex.start())
        await until(lambda: ex.ops is not None and ex.ops.port != 0, "the ops endpoint")
        port = ex.ops.port
        try:
            code, _ = await get(port, "/health")
            assert code == 200
            code, body = await get(port, "/ready")  # no venue yet: sessions down
            assert code == 503 and b'"started": false' in body
            acc = await start_acceptor(acc_settings.model_copy(update={"port": fix_port}),
                                       venue)
            try:
                await starting
                code, body = await get(port, "/ready")
                assert code == 200, body
                code, body = await get(port, "/metrics")
                assert code == 200 and b'emp_fix_session_up{session="TRADE"} 1.0' in body
                assert b"emp_champion_info{sha=" in body
            finally:
                await ex.stop()
                await acc.close()
        finally:
            if not starting.done():
                starting.cancel()

    asyncio.run(run())


def test_trade_link_drop_and_sequence_gap_reconnect_reconcile_and_keep_parity(w, tmp_path):
    pub = install(w, tmp_path)
    pos_expected = expected_positions(w)
    held = [i for i in range(1, 60) if pos_expected[i] != 0 and pos_expected[i + 1] != 0]
    drop_at = held[0]

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        acc = await start_acceptor(acc_settings, venue)
        ex = Executor(parse_live_config(live_config(tmp_path, pub, acc.port)))
        await ex.start()
        pos, eq = [], []
        try:
            for i in range(N - SPLIT):
                await step(ex, venue, i)
                pos.append(venue.exchange.positions[SYMBOL].units)
                eq.append(venue.exchange.equity())
                if i == drop_at:
                    assert pos[-1] != 0
                    assert await venue.drop_link(TRADE)
                    await until(lambda: ex.reconnect_reconciles == 1, "reconnect + reconcile")
                    assert venue.skip_seq(TRADE, 3)
            assert ex.reconciled and not ex.store.breaker().open
            exp = ex.metrics.exposition()
            assert b'emp_fix_reconnects_total{session="TRADE"} 1.0' in exp
            for name in (b"emp_sigma_ann{", b"emp_var95_1d{", b"emp_equity ",
                         b"emp_bar_to_order_latency_seconds_count ", b"emp_fills_total{"):
                assert name in exp, name
            return np.array(pos), np.array(eq)
        finally:
            await ex.stop()
            await acc.close()

    pos, eq = asyncio.run(run())
    b = w.batch
    np.testing.assert_array_equal(pos, pos_expected)
    np.testing.assert_array_equal(eq, b.equity[SPLIT:N] if len(b.equity) == N else b.equity)


RUNNING_SERVICE = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from live_rig import SPLIT, install, live_config, make_venue, until, world
from emp_cli.main import build_parser
from live.executor.cli import keep_plotting_out
keep_plotting_out()  # what `emp live CONFIG` does before it starts the service
from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor

async def main(w, home):
    _vc, venue, acc_settings = make_venue(w, home / "venue")
    acc = await start_acceptor(acc_settings, venue)
    ex = Executor(parse_live_config(live_config(home, install(w, home), acc.port,
                                                ops={{"port": 0}})))
    await ex.start()
    for i in range(5):
        await venue.step()
        await until(lambda i=i: ex.bars_done == i + 1, "bar")
    await ex.stop()
    await acc.close()

build_parser()  # what `emp live` (the systemd unit's ExecStart) builds first
asyncio.run(main(world(), Path({home!r})))
farm = ("mlflow", "ray", "torch", "optuna", "deap", "matplotlib")
print("FARM", sorted(m for m in farm if sys.modules.get(m) is not None))
"""


def test_the_running_service_imports_no_farm_package(tmp_path):
    """A fresh interpreter runs the executor against the venue for a few bars (every module
    it imports at run time: champion load, tables, refits, FIX, ops, state store). arch
    imports matplotlib when it is installed; the service's entry point keeps it out
    (``keep_plotting_out``), as a base install on the VPS has no matplotlib at all."""
    script = tmp_path / "run.py"
    script.write_text(RUNNING_SERVICE.format(tests=str(ROOT / "tests"), home=str(tmp_path)))
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FARM []" in out.stdout, out.stdout


async def _to_first_position(ex: Executor, venue) -> int:
    i = 0
    while ex.orders.held() == 0:
        await step(ex, venue, i)
        i += 1
    return i


@pytest.mark.parametrize("case", ["hard_stop", "var95"])
def test_drawdown_hard_stop_and_var_breach_trip_and_flatten(w, tmp_path, case):
    pub = install(w, tmp_path)
    risk = {"var95_limit": 1e-6} if case == "var95" else {}
    raw = live_config(tmp_path, pub, 0, fill_wait_s=0.3, risk=risk)

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            i = await _to_first_position(ex, venue)  # a VaR breach needs exposure
            if case == "hard_stop":  # an earlier peak 15 % above today's equity
                import datetime as dt
                ex.store.record_equity(dt.datetime.now(dt.UTC), ex.equity() / 0.85)
                ex._refresh_risk()  # as after a bar of its own: the peak it checks next
            elif ex.store.breaker().open:
                i -= 1  # the VaR breach tripped on the entry bar already
            await step(ex, venue, i)
            b = ex.store.breaker()
            assert b.open and b.hard == (case == "hard_stop"), b
            assert b.reason.startswith("hard stop" if case == "hard_stop" else "var95_limit")
            await step(ex, venue, i + 1)  # the flatten order fills at this open
            assert venue.exchange.positions[SYMBOL].units == 0
            assert ex.store.position(SYMBOL) == 0

    asyncio.run(run())


def test_periodic_reconciliation_halts_on_a_mismatch_and_fixes_nothing(w, tmp_path):
    pub = install(w, tmp_path)
    raw = live_config(tmp_path, pub, 0, reconcile_every_s=0.05)

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            n = ex.reconciliations
            await until(lambda: ex.reconciliations >= n + 2, "periodic reconciliations")
            assert ex.reconciled and not ex.store.breaker().open
            await step(ex, venue, 0)
            venue.exchange.positions[SYMBOL].units += 5.0  # a trade the executor never made
            await until(lambda: ex.store.breaker().open, "the breaker on a mismatch")
            assert "position mismatch" in ex.store.breaker().reason
            assert ex.store.position(SYMBOL) == venue.exchange.positions[SYMBOL].units - 5.0
            assert not ex.readiness()["reconciled"]
            assert b"emp_reconciliation_mismatch 1.0" in ex.metrics.exposition()

    asyncio.run(run())


def test_sd_notify_ready_after_reconciliation_watchdog_then_stopping(w, tmp_path, monkeypatch):
    pub = install(w, tmp_path)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                return got

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        acc = await start_acceptor(acc_settings, venue)
        raw = live_config(tmp_path, pub, acc.port)
        ex = Executor(parse_live_config(raw))
        try:
            await ex.start()
            assert ex.reconciliations >= 1
            await until(lambda: sum(m == "WATCHDOG=1" for m in drain()) >= 2, "watchdog pings")
        finally:
            await ex.stop()
            await acc.close()

    try:
        asyncio.run(run())
    finally:
        drain()
        sock.close()
    ready = next(i for i, m in enumerate(got) if m.startswith("READY=1"))
    assert ready < got.index("WATCHDOG=1")  # no ping before start-up is complete
    assert got[-1].startswith("STOPPING=1")
