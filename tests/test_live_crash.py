"""Acceptance 2, crash-safe orders: the executor runs as a real process against the paper
venue (real TCP, real SQLite) and is killed with SIGKILL at points around an order: after the
ClOrdID is committed but before the NewOrderSingle is sent, after the send but before the
ack, and after a partial fill. A restart reconciles with the venue (H, AF, AN) before it is
ready: no order is duplicated or lost, the positions agree, and where the venue's fills are
not disturbed (the first two points) the trading goes on to give the backtest's positions and
equity bar for bar."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from live_rig import SPLIT, SYMBOL, install, live_config, make_venue, until, world

from live.fix.acceptor import start_acceptor
from live.state import StateStore

ROOT = Path(__file__).resolve().parents[1]
M = 12  # bars replayed per test


@pytest.fixture(scope="module")
def w():
    return world()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def spawn(cfg_path: Path, kill_at: str | None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EMP_LIVE_KILL_AT", None)
    if kill_at:
        env["EMP_LIVE_KILL_AT"] = kill_at
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "live.executor.cli", str(cfg_path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_default_sigint)
    lines: list[str] = []

    async def ready() -> bool:
        while True:
            line = await proc.stdout.readline()
            if not line:
                return False
            lines.append(line.decode())
            if line.startswith(b"READY"):
                return True

    ok = await asyncio.wait_for(ready(), 60)
    assert ok, "executor died before READY:\n" + "".join(lines)
    log = cfg_path.parent / "executor.log"
    with log.open("a") as f:
        f.writelines(lines)
    asyncio.get_running_loop().create_task(_drain(proc, log))
    return proc


DONE: set[int] = set()  # bars the executor reported done ("bar done TS" log lines)


async def _drain(proc, log: Path) -> None:
    while line := await proc.stdout.readline():
        if b"bar done " in line:
            DONE.add(int(line.rsplit(b" ", 1)[1]))
        with log.open("ab") as f:
            f.write(line)


def settled(store: StateStore, ts: int) -> bool:
    saved = store.strategy_state(SYMBOL)
    return ts in DONE and saved is not None and saved[0] == ts and not [
        o for o in store.open_orders() if o.status in ("pending_new", "sent")]


async def scenario(w, tmp: Path, kill_at: str | None, partial: bool):
    DONE.clear()
    pub = install(w, tmp)
    _, venue, acc_settings = make_venue(w, tmp / "venue")
    acc = await start_acceptor(acc_settings, venue)
    cfg_path = tmp / "live.yaml"
    cfg_path.write_text(yaml.safe_dump(live_config(tmp, pub, acc.port)))
    state = tmp / "live" / "state.db"
    if partial:
        venue.faults.partial_fills(0.5, 1)
    proc = await spawn(cfg_path, kill_at)
    reader = StateStore(state)
    pos, eq, killed = [], [], False
    try:
        for i in range(M):
            bars = await venue.step()
            ts = bars[0].ts
            if not killed:
                await until(lambda ts=ts, proc=proc: proc.returncode is not None or settled(reader, ts)
                            or (partial and any(o.filled_qty > 0 and o.status ==
                                                "partially_filled"
                                                for o in reader.open_orders())),
                            f"bar {i}")
                partial_now = partial and any(o.status == "partially_filled"
                                              for o in reader.open_orders())
                if proc.returncode is not None or partial_now:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    assert proc.returncode == -signal.SIGKILL
                    killed = True
                    proc = await spawn(cfg_path, None)  # reconciles before READY
                    DONE.add(ts)  # READY: the restored bar's order is complete
            await until(lambda ts=ts: settled(reader, ts), f"bar {i} after restart")
            pos.append(venue.exchange.positions[SYMBOL].units)
            eq.append(venue.exchange.equity())
        assert killed, "the kill point was never reached"
        accepted = [o.cl_ord_id for o in venue.exchange.by_cl.values()]
        assert len(accepted) == len(set(accepted))
        rejected = [o for o in venue.exchange.orders.values() if o.status == "8"]
        assert not rejected, [o.text for o in rejected]  # no ClOrdID sent twice
        assert reader.position(SYMBOL) == pytest.approx(pos[-1], abs=1e-9)
        assert not reader.breaker().open, reader.breaker().reason
        return np.array(pos), np.array(eq), reader.audit_log(200)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
        reader.close()
        await acc.close()


def _expected(w, field: str) -> np.ndarray:
    a = getattr(w.batch, field)
    return (a[SPLIT:] if len(a) > len(w.bars.ts) - SPLIT else a)[:M]


@pytest.mark.parametrize("kill_at", ["after_commit", "after_send"])
def test_kill_around_an_order_then_restart_keeps_the_backtest(w, tmp_path, kill_at):
    pos, eq, audit = asyncio.run(scenario(w, tmp_path, kill_at, partial=False))
    np.testing.assert_array_equal(pos, _expected(w, "position"))
    np.testing.assert_array_equal(eq, _expected(w, "equity"))
    if kill_at == "after_commit":
        assert any(event == "order_lost" for _, event, _ in audit)


def test_kill_after_a_partial_fill_then_restart_reconciles(w, tmp_path):
    pos, _, _ = asyncio.run(scenario(w, tmp_path, None, partial=True))
    assert np.any(pos != 0.0)
