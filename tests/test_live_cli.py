"""``emp live`` as a real process against ``emp venue`` (both on 127.0.0.1): it starts, turns
``/ready`` 200, and SIGTERM stops it cleanly (exit 0, Logout on both sessions). ``emp live
reset-breaker`` records who and why; ``emp live status`` reads the state store; a bad config,
a missing --reason and a first live start without --i-understand-live each give one
``emp: error:`` line."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from live_rig import FIX_ID, SPLIT, SYMBOL, N, install, live_config, world

from live.state import StateStore
from market.config import QualityConfig
from market.ingest import ingest_bars
from market.readers import SourceRows
from market.store import HistoryStore

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60  # seconds a process gets to start or stop (never reached when all is well)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """An EMP home: the planted bars in the history store, the signed champion and its key,
    and a venue config that replays from the bundle's split (stepped: speed 0)."""
    w = world()
    home = tmp_path_factory.mktemp("live-home")
    b = w.bars
    frame = pd.DataFrame({"ts": pd.to_datetime(b.ts, utc=True), "open": b.open[0],
                          "high": b.high[0], "low": b.low[0], "close": b.close[0],
                          "volume": b.volume[0]})
    ingest_bars(HistoryStore(home / "history"), SYMBOL, b.timeframe,
                SourceRows(frame, np.arange(N)), w.meta,
                QualityConfig(severity={"absurd_return": "off", "gap": "off"}))
    pub = install(w, home)
    start = dt.datetime.fromtimestamp(int(b.ts[SPLIT]) / 1e9, dt.UTC).date().isoformat()
    (home / "venue.yaml").write_text(yaml.safe_dump({
        "port": 0, "symbols": {SYMBOL: {"id": FIX_ID, "lot_size": 1, "tick_size": 0.01}},
        "replay": {"timeframe": b.timeframe, "start": start, "speed": 0}}))
    (home / "pub").write_text(str(pub))
    return home


def emp(home: Path, *args: str, **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("EMP_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "emp_cli.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kw)


def emp_run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    p = emp(home, *args)
    out, err = p.communicate(timeout=WAIT)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def write_live(home: Path, tmp: Path, port: int, **over) -> Path:
    cfg = live_config(home, Path((home / "pub").read_text()), port, **over)
    cfg["state_path"] = str(tmp / "state.db")
    path = tmp / "live.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_emp_live_against_emp_venue_ready_then_sigterm_stops_cleanly(home, tmp_path):
    venue = emp(home, "venue", str(home / "venue.yaml"))
    live = None
    try:
        first = venue.stdout.readline()
        assert first.startswith("venue listening on 127.0.0.1:"), first + venue.stderr.read()
        port = int(first.rsplit(":", 1)[1])
        live = emp(home, "live", str(write_live(home, tmp_path, port, ops={"port": 0})))
        line = live.stdout.readline()
        assert line.startswith(f"READY {SYMBOL} champion "), line + live.stderr.read()
        url = line.split(" ops ", 1)[1].strip()
        with urllib.request.urlopen(url + "/ready", timeout=WAIT) as r:
            assert r.status == 200 and json.loads(r.read())["ready"] is True
        live.send_signal(signal.SIGTERM)
        out, err = live.communicate(timeout=WAIT)
        assert live.returncode == 0, err
        assert f"stopped {SYMBOL}" in out
        assert "TRADE logged out" in err and "QUOTE logged out" in err
        assert "Traceback" not in err
    finally:
        for p in (live, venue):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=WAIT)
    assert venue.returncode == 0


def test_a_bad_config_is_one_error_line(home, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"symbol": SYMBOL, "symbols": {"OTHER": {"id": 1,
                                                                          "lot_size": 1}}}))
    r = emp_run(home, "live", str(bad))
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1, r.stderr
    assert lines[0].startswith("emp: error:") and "symbols" in lines[0]
    r = emp_run(home, "live", "status", str(bad), "extra")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("emp: error:")


def test_live_mode_needs_the_explicit_flag_on_first_start(home, tmp_path):
    path = write_live(home, tmp_path, 1, mode="live",
                      fix={"port": 1, "credentials": {"username_env": "EMP_T_USER",
                                                      "password_env": "EMP_T_PW"}})
    r = emp_run(home, "live", str(path))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "emp: error: mode: live trades real money: pass --i-understand-live on the first start"]


def test_reset_breaker_is_audited_and_status_reads_the_store(home, tmp_path):
    path = write_live(home, tmp_path, 1)
    with StateStore(tmp_path / "state.db") as st:
        st.trip("reject_storm: 5 order rejects within 2 s")
    r = emp_run(home, "live", "status", str(path))
    assert r.returncode == 0, r.stderr
    assert "breaker:   OPEN" in r.stdout and "reject_storm" in r.stdout
    assert "positions: flat" in r.stdout
    r = emp_run(home, "live", "reset-breaker", str(path))
    assert r.returncode != 0 and r.stderr.strip().startswith("emp: error:")
    assert "--reason" in r.stderr
    r = emp_run(home, "live", "reset-breaker", str(path), "--reason", "venue fixed")
    assert r.returncode == 0, r.stderr
    with StateStore(tmp_path / "state.db") as st:
        assert not st.breaker().open
        detail = [d for _, e, d in st.audit_log() if e == "breaker_reset"][-1]
    assert f"by {getpass.getuser()}@{socket.gethostname()}: venue fixed" in detail
    r = emp_run(home, "live", "status", str(path))
    assert "breaker:   closed" in r.stdout
