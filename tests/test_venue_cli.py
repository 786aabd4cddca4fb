"""``emp venue CONFIG`` as a real process: it prints its port and sessions, accepts logons on
both sessions, stops cleanly (exit 0) on SIGINT and on SIGTERM, and a bad config gives one
``emp: error:`` line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ingest_generated

from live.fix.config import InitiatorSettings, SessionSettings
from live.fix.initiator import start_initiator
from live.fix.message import Message

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60  # seconds a process gets to start or to stop (never reached when all is well)


class Null:
    async def on_logon(self, session) -> None: ...

    async def on_logout(self, session) -> None: ...

    async def on_message(self, session, msg: Message) -> None: ...


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An EMP home whose store holds 200 hourly bars of EURUSD, and a venue config for it."""
    home = tmp_path_factory.mktemp("venue-home")
    close = 1.1 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.001, 200)))
    ingest_generated(home, "EURUSD", "1h", close,
                     {"unit": "bps", "spread": 1.0, "commission": 0.5, "slippage": 0.5}, 3,
                     hourly=True)
    (home / "venue.yaml").write_text(yaml.safe_dump({
        "port": 0, "symbols": {"EURUSD": {"id": 1, "lot_size": 1}},
        "replay": {"timeframe": "1h", "speed": 0}}))
    return home


def emp_venue(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "emp_cli.main", "venue", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


async def log_on_both(port: int, tmp: Path) -> bool:
    inis = [await start_initiator(InitiatorSettings(port=port, max_reconnects=0, session=(
        SessionSettings(sender_comp_id="EMPCLIENT", target_comp_id="EMPVENUE", target_sub_id=sub,
                        reset_on_logon=True, store_path=tmp / f"{sub}.sqlite"))), Null())
            for sub in ("QUOTE", "TRADE")]
    try:
        return all([await i.wait_logged_on(WAIT) for i in inis])
    finally:
        for i in inis:
            await i.close()


@pytest.mark.parametrize("sig, speed", [(signal.SIGINT, "0"), (signal.SIGTERM, "5000")],
                         ids=["SIGINT-stepped", "SIGTERM-replaying"])
def test_emp_venue_serves_both_sessions_and_stops_cleanly(home, tmp_path, sig, speed):
    proc = emp_venue(home, str(home / "venue.yaml"), "--speed", speed)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("venue listening on 127.0.0.1:"), first + proc.stderr.read()
        port = int(first.rsplit(":", 1)[1])
        sessions = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert "EMPVENUE <- EMPCLIENT SubID QUOTE" in sessions[0]
        assert "SubID TRADE" in sessions[1] and "EURUSD=1" in sessions[2]
        assert asyncio.run(log_on_both(port, tmp_path))
        if speed != "0":  # 200 bars replayed, then it goes on serving until stopped
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert "end of the history; still serving" in line, line
        else:
            assert "paused (speed 0)" in sessions[2]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "venue stopped" in out and "Traceback" not in err
    assert (home / "venue" / "quote.sqlite").is_file() and (home / "venue" / "trade.sqlite").is_file()


@pytest.mark.parametrize("content, phrase", ids=["port", "unknown-key", "no-bars"], argvalues=[
    ("symbols: {EURUSD: {id: 1, lot_size: 1}}\nport: 99999\n", "port"),
    ("symbols: {EURUSD: {id: 1, lot_size: 1}}\nbogus: 1\n", "bogus"),
    ("symbols: {NOSUCH: {id: 1, lot_size: 1}}\nreplay: {timeframe: 1h}\n", "NOSUCH"),
])
def test_a_bad_venue_config_is_one_error_line(home, tmp_path, content, phrase):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    proc = emp_venue(home, str(cfg))
    out, err = proc.communicate(timeout=WAIT)
    lines = err.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, err
    assert lines[0].startswith("emp: error:") and phrase in lines[0], err
    assert "venue listening" not in out
