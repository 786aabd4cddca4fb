"""The executor and the history store (issue 14, "On start" and "Live bars are appended to the
store"), on a real parquet store and real child processes: a bundle without a state snapshot
starts bit for bit where one with it does; a changed history is refused; the bars between the
bundle's last bar and the start are stepped as a batch build over the longer history would
have them; the state store's live bars are merged into the partition, idempotently, and a
conflicting bar is refused; the executor itself never imports pandas, pyarrow or arch."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from live_rig import SPLIT, SYMBOL, cut, install, live_config, serving, until, world

from benchmarks.power_data import CALIBRATION_VOL
from champions.bundle import encode, floats_of_hex
from champions.snapshot import state_after
from fitness import simulator_nb as k
from fitness.simulator import new_state
from fitness.tables import state_bytes
from live.executor.champion import load_champion
from live.executor.config import parse_live_config
from live.executor.history import HistoryError, append_bars, initial_state, partition_file
from live.executor.reload import trusted_keys
from live.executor.service import Executor
from live.state import BarRow, StateStore
from market.barset import Bars
from market.store import HistoryStore, frame_to_table

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("open", "high", "low", "close", "volume")
EARLY = 240  # a bundle judged up to here: the gap to SPLIT crosses the GARCH refit at bar 250


@pytest.fixture(scope="module")
def w():
    return world()


def named(bars: Bars, a: int, b: int) -> Bars:
    """Bars ``[a, b)`` under the store's symbol name, as ``load_bars`` returns them."""
    c = cut(bars, a, b)
    return Bars((SYMBOL,), c.timeframe, c.ts, c.open, c.high, c.low, c.close, c.volume, None)


def write_store(root: Path, w, a: int, b: int, bump: int | None = None) -> None:
    """The store's SYMBOL/1d partition := bars ``[a, b)`` (one transaction); ``bump``: that
    bar's close moved by one tick (a changed history)."""
    bars = named(w.bars, a, b)
    cols = {f: getattr(bars, f)[0].copy() for f in FIELDS}
    if bump is not None:
        cols["close"][bump - a] += 0.01
    frame = pd.DataFrame({"ts": pd.to_datetime(bars.ts, unit="ns", utc=True), **cols})
    store = HistoryStore(root)
    txn = store.transaction()
    txn.put_bars(SYMBOL, "1d", frame_to_table(frame))
    txn.put_meta(SYMBOL, w.meta)
    txn.commit()


def stored(root: Path) -> pd.DataFrame:
    return HistoryStore(root).read_frame(SYMBOL, "1d")


def bundle(w, end: int, *, snapshot: bool) -> bytes:
    """The rig's champion judged on bars ``[0, end)``: a promote-like history section (origin,
    last, n_bars, the loaded bars' digest), with or without the state snapshot."""
    body = json.loads(w.bundle)["body"]
    hist = named(w.bars, 0, end)
    idx = pd.to_datetime(hist.ts, utc=True)
    body["history"] = {"origin": {"index": 0, "ts_ns": int(hist.ts[0]), "ts": idx[0].isoformat()},
                       "first": str(idx[0]), "last": str(idx[-1]), "n_bars": end,
                       "sha256": hist.fingerprint()}
    if snapshot:
        body["snapshot"] = state_after(w.genome, hist, w.meta, w.sim, CALIBRATION_VOL)[1]
    else:
        del body["snapshot"]
    return encode(body, w.private)


def setup(w, home: Path, history: Path, data: bytes, **over):
    pub = install(w, home, data)
    cfg = parse_live_config(live_config(home, pub, 1, history=str(history), **over))
    champ = load_champion(cfg.champions_root, SYMBOL, "paper", trusted_keys(cfg))
    return cfg, champ


def expected_after(w, end: int, equity: float) -> tuple[bytes, np.ndarray]:
    """A batch build over bars ``[0, end)``: the tables' snapshot bytes and the kernel state
    with its account part flat (what a start at bar ``end`` must hold)."""
    import base64

    _, section = state_after(w.genome, named(w.bars, 0, end), w.meta, w.sim, CALIBRATION_VOL)
    kernel = floats_of_hex(section["kernel_state"])
    kernel[:k.ST_HAS_PREV] = new_state(equity)[:k.ST_HAS_PREV]
    return base64.b64decode(section["tables"]), kernel


def test_the_partition_path_is_the_stores(tmp_path):
    assert partition_file(tmp_path, SYMBOL, "1d") == HistoryStore(tmp_path).partition_path(
        SYMBOL, "1d")


def test_a_snapshotless_bundle_starts_where_the_snapshot_does(w, tmp_path):
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)
    cfg_a, with_snap = setup(w, tmp_path / "a", history, bundle(w, SPLIT, snapshot=True))
    cfg_b, without = setup(w, tmp_path / "b", history, bundle(w, SPLIT, snapshot=False))
    assert without.bundle.tables_state is None
    tables_a, kernel_a = initial_state(cfg_a, with_snap)
    tables_b, kernel_b = initial_state(cfg_b, without)
    assert state_bytes(tables_b) == state_bytes(tables_a) == state_bytes(
        with_snap.bundle.tables_state)
    assert kernel_b.tobytes() == kernel_a.tobytes()
    assert kernel_a[k.ST_PREV_EQ] == cfg_a.account_equity and kernel_a[k.ST_UNITS] == 0


def test_a_changed_history_is_refused(w, tmp_path):
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT, bump=SPLIT // 2)
    cfg, champ = setup(w, tmp_path, history, bundle(w, SPLIT, snapshot=False))
    with pytest.raises(HistoryError) as err:
        initial_state(cfg, champ)
    msg = str(err.value)
    assert "\n" not in msg and "no longer holds the history" in msg
    assert str(history) in msg and str(champ.path) in msg


def test_no_history_for_a_snapshotless_bundle_is_refused(w, tmp_path):
    cfg, champ = setup(w, tmp_path, tmp_path / "history", bundle(w, SPLIT, snapshot=False))
    with pytest.raises(HistoryError, match="no state snapshot and the history store"):
        initial_state(cfg, champ)


@pytest.mark.parametrize("snapshot", [True, False])
def test_the_gap_is_stepped_as_a_batch_build_over_the_longer_history(w, tmp_path, snapshot):
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)  # the bundle ends at EARLY: 60 bars since, a refit
    cfg, champ = setup(w, tmp_path, history, bundle(w, EARLY, snapshot=snapshot))
    tables, kernel = initial_state(cfg, champ)
    want_tables, want_kernel = expected_after(w, SPLIT, cfg.account_equity)
    assert tables.n_bars == SPLIT
    assert state_bytes(tables) == want_tables
    assert kernel[k.ST_HAS_PREV:].tobytes() == want_kernel[k.ST_HAS_PREV:].tobytes()  # rules
    assert kernel.tobytes() == want_kernel.tobytes()  # and flat, with the config's equity


def live_bars(w, store: StateStore, a: int, b: int, close_bump: int | None = None) -> None:
    """Bars ``[a, b)`` committed as the executor commits them."""
    bars = named(w.bars, a, b)
    for j in range(b - a):
        o, h, lo, c, v = (float(getattr(bars, f)[0, j]) for f in FIELDS)
        if close_bump == a + j:
            c += 0.01
        store.commit_bar(BarRow(SYMBOL, int(bars.ts[j]), o, h, lo, c, v, 0.0, "0" * 64),
                         np.zeros(k.N_STATE))


def run_append(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)


def test_append_bars_merges_is_idempotent_and_refuses_a_conflict(w, tmp_path):
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)
    data = bundle(w, SPLIT, snapshot=True)
    pub = install(w, tmp_path, data)
    raw = live_config(tmp_path, pub, 1, history=str(history))
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = parse_live_config(raw)
    with StateStore(cfg.state_file, exclusive=True) as st:
        st.set_champion(sha256=hashlib.sha256(data).hexdigest(), symbol=SYMBOL, stage="paper")
        live_bars(w, st, SPLIT - 2, SPLIT + 5)  # two of them already stored, equal
    part = partition_file(history, SYMBOL, "1d")

    proc = run_append("-m", "live.executor.history", "append", str(path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 5
    got = stored(history)
    want = named(w.bars, 0, SPLIT + 5)
    assert (got["ts"].astype("int64").to_numpy() == want.ts).all()
    for f in FIELDS:
        assert got[f].to_numpy().tobytes() == getattr(want, f)[0].tobytes()
    before = part.read_bytes()

    proc = run_append("-m", "live.executor.cli", "append-bars", str(path))  # emp live append-bars
    assert proc.returncode == 0, proc.stderr
    assert "+0 live bar(s)" in proc.stdout
    assert part.read_bytes() == before  # nothing rewritten

    cfg2 = parse_live_config({**raw, "state_path": str(tmp_path / "other.db")})
    with StateStore(cfg2.state_file, exclusive=True) as st:  # another feed: its seam differs
        live_bars(w, st, SPLIT + 4, SPLIT + 8, close_bump=SPLIT + 4)
    proc = run_append("-m", "live.executor.history", "append", "--state", str(cfg2.state_file),
                      "--history", str(history), "--symbol", SYMBOL, "--timeframe", "1d")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "differs from the stored one" in err, err
    assert "close" in err and "nothing was appended" in err
    assert part.read_bytes() == before


def test_append_bars_extends_only_an_existing_partition(w, tmp_path):
    state = tmp_path / "state.db"
    with StateStore(state, exclusive=True) as st:
        live_bars(w, st, SPLIT, SPLIT + 2)
    with pytest.raises(HistoryError, match=r"holds no EDGE/1d history to extend"):
        append_bars(state, tmp_path / "history", SYMBOL, "1d")
    assert not (tmp_path / "history").exists()
    with pytest.raises(HistoryError, match="no state store"):
        append_bars(tmp_path / "none.db", tmp_path / "history", SYMBOL, "1d")


def test_the_executor_process_never_loads_pandas_pyarrow_or_arch(w, tmp_path):
    """A fresh interpreter: a snapshot-less first start with a 60-bar gap (its refit in the
    refit worker), then one live bar appended by the executor's appender (a child)."""
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)
    pub = install(w, tmp_path, bundle(w, EARLY, snapshot=False))
    raw = live_config(tmp_path, pub, 1, history=str(history))
    bar = named(w.bars, SPLIT, SPLIT + 1)
    row = [int(bar.ts[0]), *(float(getattr(bar, f)[0, 0]) for f in FIELDS)]
    code = f"""
import asyncio, hashlib, json, sys
import numpy as np
from fitness.tables import state_bytes
from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.state import BarRow
ex = Executor(parse_live_config(json.loads({json.dumps(json.dumps(raw))})))
ex.load()
r = ex.runner
ts, o, h, lo, c, v = {row!r}
ex.store.commit_bar(BarRow("{SYMBOL}", ts, o, h, lo, c, v, 0.0, ex.champion.sha256),
                    np.zeros(1))
res = asyncio.run(ex.appender.run_once("test"))
loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & {{"pandas", "pyarrow", "arch"}})
print(json.dumps({{"tables": hashlib.sha256(state_bytes(r.tables.state())).hexdigest(),
                  "kernel": r.strategy.state.tobytes().hex(), "loaded": loaded,
                  "added": res.added, "worker": ex.refits.pid is not None}}))
ex.refits.close()
ex.store.close()
"""
    proc = run_append("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []
    assert out["worker"] and out["added"] == 1
    want_tables, want_kernel = expected_after(w, SPLIT, 100_000.0)
    assert out["tables"] == hashlib.sha256(want_tables).hexdigest()
    assert out["kernel"] == want_kernel.tobytes().hex()
    assert len(stored(history)) == SPLIT + 1


async def step(ex: Executor, venue, i: int) -> None:
    await venue.step()
    await until(lambda: ex.bars_done >= i + 1, f"bar {i} processed")


def test_the_executor_appends_its_live_bars_at_day_rolls_and_at_stop(w, tmp_path):
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)
    pub = install(w, tmp_path, bundle(w, SPLIT, snapshot=True))  # the replay: tested above
    raw = live_config(tmp_path, pub, 0, history=str(history), fill_wait_s=0.3,
                      refit_worker=False)  # the worker is tested above; fewer processes here
    n = 4

    async def run():
        async with serving(w, tmp_path, raw) as (ex, venue):
            for i in range(n):
                await step(ex, venue, i)
        return ex

    ex = asyncio.run(run())
    assert ex.appender.failures == 0
    assert ex.appender.runs >= 2  # at a day roll (each 1d bar is one) and at stop
    got = stored(history)
    want = named(w.bars, 0, SPLIT + n)
    assert (got["ts"].astype("int64").to_numpy() == want.ts).all()
    assert got["close"].to_numpy().tobytes() == want.close[0].tobytes()


def test_a_restart_before_the_first_tables_snapshot_rebuilds_the_gap(w, tmp_path):
    """A crash after the first live bar's commit, before its tables snapshot: the restart
    rebuilds the first start's tables (bundle + the store's bars before the first live bar)
    and steps the stored live bar; the result is the batch build through that bar."""
    history = tmp_path / "history"
    write_store(history, w, 0, SPLIT)
    cfg, _ = setup(w, tmp_path, history, bundle(w, EARLY, snapshot=True), refit_worker=False)
    ex = Executor(cfg)
    ex.load()
    bar = named(w.bars, SPLIT, SPLIT + 1)
    row = [int(bar.ts[0]), *(float(getattr(bar, f)[0, 0]) for f in FIELDS)]
    ex.runner.step(*row, ex.refits.fit)
    ex.store.commit_bar(BarRow(SYMBOL, *row, 0.0, ex.champion.sha256), ex._saved_state())
    kernel = ex.runner.strategy.state.copy()
    ex.store.close()  # killed here: no snapshot file written
    assert not list((cfg.live_dir / "tables").rglob("*.npz"))
    again = Executor(cfg)
    again.load()
    try:
        assert state_bytes(again.runner.tables.state()) == expected_after(
            w, SPLIT + 1, cfg.account_equity)[0]
        assert again.runner.strategy.state.tobytes() == kernel.tobytes()
    finally:
        again.store.close()
