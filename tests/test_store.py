"""History store: round trips, range reads, listing, atomic commits and crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import make_daily_bars

from market.config import QualityConfig, preset_meta
from market.ingest import ingest_bars
from market.readers import SourceRows
from market.store import JOURNAL_FILE, HistoryStore, StoreError, frame_to_table

ROOT = Path(__file__).resolve().parents[1]


def test_partition_layout_schema_and_compression(store):
    frame = make_daily_bars(50)
    txn = store.transaction()
    txn.put_bars("ABC", "1d", frame_to_table(frame))
    txn.commit()
    path = store.root / "symbol=ABC" / "timeframe=1d" / "bars.parquet"
    assert path.exists()
    md = pq.ParquetFile(path).metadata
    assert md.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(path)
    assert str(schema.field("ts").type) == "timestamp[ns, tz=UTC]"
    assert all(str(schema.field(c).type) == "double" for c in ("open", "high", "low", "close", "volume"))
    back = store.read_frame("ABC", "1d")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_range_read_is_half_open(store):
    frame = make_daily_bars(200)
    txn = store.transaction()
    txn.put_bars("ABC", "1d", frame_to_table(frame))
    txn.commit()
    start, end = frame["ts"].iloc[20], frame["ts"].iloc[120]
    part = store.read_frame("ABC", "1d", start=start, end=end)
    assert len(part) == 100
    assert part["ts"].iloc[0] == start and part["ts"].iloc[-1] == frame["ts"].iloc[119]


def test_missing_partition_and_bad_names_are_clear(store):
    with pytest.raises(StoreError, match="no bars for NOPE/1d"):
        store.read_table("NOPE", "1d")
    with pytest.raises(StoreError, match="unknown timeframe"):
        store.partition_path("ABC", "2d")
    with pytest.raises(StoreError, match="invalid symbol"):
        store.partition_path("../etc", "1d")


def test_corrupt_parquet_names_the_file(store):
    path = store.partition_path("BAD", "1d")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError, match=r"bars\.parquet: unreadable parquet"):
        store.read_table("BAD", "1d")


def test_journal_rolls_forward_and_orphans_are_swept(store):
    frame = make_daily_bars(30)
    txn = store.transaction()
    txn.put_bars("ABC", "1d", frame_to_table(frame))
    # simulate a crash after the journal was written but before the renames
    tmp, target = txn._renames[0]
    journal = [[str(tmp.relative_to(store.root)), str(target.relative_to(store.root))]]
    (store.root / JOURNAL_FILE).write_text(json.dumps(journal))
    orphan = target.with_name("bars.parquet.tmp-1-deadbeef")
    orphan.write_bytes(b"junk")
    txn._done()  # the "crashed" writer lets go of the lock without cleaning up
    reopened = HistoryStore(store.root)
    assert len(reopened.read_frame("ABC", "1d")) == 30
    assert not (store.root / JOURNAL_FILE).exists()
    assert not orphan.exists()


def test_abort_leaves_nothing(store):
    txn = store.transaction()
    txn.put_bars("ABC", "1d", frame_to_table(make_daily_bars(10)))
    txn.abort()
    assert not store.has("ABC", "1d")
    assert not list(store.root.rglob("*.tmp-*"))


_CRASH_SCRIPT = """
import sys, numpy as np, pandas as pd
sys.path.insert(0, {root!r})
from market.store import HistoryStore
from market.ingest import ingest_bars
from market.config import QualityConfig, preset_meta
from market.ingest import ingest_bars
from market.readers import SourceRows
from market.config import QualityConfig, preset_meta
n = 1_500_000
ts = pd.Timestamp("2001-01-01", tz="UTC").value + np.arange(n, dtype=np.int64) * 60_000_000_000
close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)) / 100
frame = pd.DataFrame({{"ts": pd.to_datetime(ts, utc=True), "open": close, "high": close + 0.01,
                      "low": close - 0.01, "close": close, "volume": np.ones(n)}})
q = QualityConfig(severity={{"gap": "off", "absurd_return": "off"}})
print("ready", flush=True)
ingest_bars(HistoryStore({store!r}), "ABC", "1m", SourceRows(frame, np.arange(n)), preset_meta("crypto"), q)
print("done", flush=True)
"""


def test_ingest_killed_mid_write_leaves_store_unchanged(store, tmp_path):
    """SIGKILL the ingest while its temp files exist: the previous store stays readable and equal."""
    before = make_daily_bars(100)
    ingest_bars(store, "ABC", "1d", SourceRows(before, np.arange(len(before))),
                preset_meta("crypto"), QualityConfig())
    snapshot = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()}
    script = tmp_path / "crash.py"
    script.write_text(_CRASH_SCRIPT.format(root=str(ROOT), store=str(store.root)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if any(store.root.rglob("*.tmp-*")):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.wait()
    assert killed, "the ingest finished before a temp file was seen; cannot test the crash"
    assert not (store.root / JOURNAL_FILE).exists()
    reopened = HistoryStore(store.root)  # sweeps the orphan temp files
    after = {p: p.read_bytes() for p in reopened.root.rglob("*") if p.is_file()}
    assert after == snapshot
    pd.testing.assert_frame_equal(reopened.read_frame("ABC", "1d"), before, check_dtype=False)
    assert not reopened.has("ABC", "1m")


def test_two_store_objects_in_one_process_share_the_lock(store):
    """One flock per process and root: a second HistoryStore on the same root neither blocks
    on the first one's lock nor releases it early."""
    txn = store.transaction()
    txn.put_bars("ABC", "1d", frame_to_table(make_daily_bars(20)))
    txn.commit()
    other = HistoryStore(store.root, wait=0)
    with store.reading():
        assert len(other.read_frame("ABC", "1d")) == 20
        with other.reading():
            assert other.has("ABC", "1d")
        assert store._lock.depth == 1  # still held after the inner block
    with store.writing("test"):
        assert other.meta("ABC") is None and other.has("ABC", "1d")
    assert store._lock.depth == 0 and store._lock.mode is None
