"""The champion pointer: round trip, strict reading, hash re-checks, and an atomic swap that
survives kill -9 at random moments (real files, a real process)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from champions.pointer import (
    POINTER_FORMAT,
    Pointer,
    PointerError,
    champion_dir,
    read_pointer,
    resolve,
    store_bundle,
    write_pointer,
)
from core.errors import EmpError

ROOT = Path(__file__).resolve().parents[1]


def bundle_bytes(n: int, pad: int = 0) -> bytes:
    return json.dumps({"format": "test-bundle", "n": n, "pad": "x" * pad},
                      sort_keys=True).encode()


def promote(root: Path, n: int, *, symbol: str = "EURUSD", stage: str = "live",
            pad: int = 0) -> Pointer:
    _, sha = store_bundle(root, symbol, bundle_bytes(n, pad))
    return write_pointer(root, symbol=symbol, timeframe="1h", sha256=sha, champion_id=n,
                         run_id=f"run-{n}", key=f"key-{n}", signature="c2lnbmF0dXJl",
                         key_id="k1", stage=stage)


def test_round_trip(tmp_path):
    written = promote(tmp_path, 3)
    path = tmp_path / "EURUSD" / "current.json"
    assert written.path == path and path.is_file()
    for source in (path, tmp_path / "EURUSD", champion_dir(tmp_path, "EURUSD")):
        assert read_pointer(source) == written
    doc = json.loads(path.read_bytes())
    assert doc["format"] == POINTER_FORMAT and doc["version"] == 1
    assert doc["bundle"] == f"bundles/{written.sha256}.json" and doc["stage"] == "live"
    assert doc["written_at"].endswith("Z")
    bundle_path, data = resolve(written)
    assert bundle_path == tmp_path / "EURUSD" / "bundles" / f"{written.sha256}.json"
    assert data == bundle_bytes(3)
    paper = promote(tmp_path, 4, stage="paper")
    assert read_pointer(tmp_path / "EURUSD", "paper") == paper
    assert read_pointer(tmp_path / "EURUSD", "live") == written
    unsigned = write_pointer(tmp_path, symbol="EURUSD", timeframe="1h", sha256=written.sha256,
                             champion_id=3, run_id="r", key="k", stage="live")
    assert read_pointer(tmp_path / "EURUSD").signature is None and unsigned.key_id is None


def test_store_bundle_is_idempotent_and_refuses_a_name_clash(tmp_path):
    path, sha = store_bundle(tmp_path, "EURUSD", bundle_bytes(1))
    assert store_bundle(tmp_path, "EURUSD", bundle_bytes(1)) == (path, sha)
    other = tmp_path / "EURUSD" / "bundles" / f"{store_bundle(tmp_path, 'EURUSD', bundle_bytes(2))[1]}.json"
    other.write_bytes(bundle_bytes(99))  # the store is damaged: the name no longer is the hash
    with pytest.raises(PointerError, match="corrupt") as err:
        store_bundle(tmp_path, "EURUSD", bundle_bytes(2))
    assert str(other) in str(err.value)
    assert other.read_bytes() == bundle_bytes(99)  # refused, not overwritten


def test_write_pointer_needs_the_stored_bundle(tmp_path):
    promote(tmp_path, 1)
    before = (tmp_path / "EURUSD" / "current.json").read_bytes()
    with pytest.raises(PointerError, match="not found"):
        write_pointer(tmp_path, symbol="EURUSD", timeframe="1h", sha256="a" * 64,
                      champion_id=2, run_id="r", key="k", stage="live")
    path, sha = store_bundle(tmp_path, "EURUSD", bundle_bytes(2))
    path.write_bytes(bundle_bytes(2) + b" ")
    with pytest.raises(PointerError, match="does not match the pointer's sha256"):
        write_pointer(tmp_path, symbol="EURUSD", timeframe="1h", sha256=sha, champion_id=2,
                      run_id="r", key="k", stage="live")
    assert (tmp_path / "EURUSD" / "current.json").read_bytes() == before
    for bad in ({"symbol": "../etc"}, {"stage": "prod"}, {"sha256": "XYZ"}):
        args = {"symbol": "EURUSD", "timeframe": "1h", "sha256": sha, "champion_id": 2,
                "run_id": "r", "key": "k", "stage": "live", **bad}
        with pytest.raises(PointerError):
            write_pointer(tmp_path, **args)


def test_resolve_refuses_a_bundle_altered_by_one_byte(tmp_path):
    pointer = promote(tmp_path, 5, pad=1000)
    data = bytearray(pointer.bundle_path.read_bytes())
    data[500] ^= 1
    pointer.bundle_path.write_bytes(bytes(data))
    with pytest.raises(PointerError, match="does not match the pointer's sha256") as err:
        resolve(read_pointer(tmp_path / "EURUSD"))
    assert str(pointer.bundle_path) in str(err.value)
    pointer.bundle_path.unlink()
    with pytest.raises(PointerError, match="not found"):
        resolve(pointer)


def _edit(doc: dict, **changes) -> dict:
    out = {**doc, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()
BAD_DOCS = {
    "wrong format": (lambda d: _edit(d, format="emp-bundle"), "format"),
    "future version": (lambda d: _edit(d, version=2), "version"),
    "bool version": (lambda d: _edit(d, version=True), "version"),
    "missing field": (lambda d: _edit(d, run_id=_DROP), "run_id"),
    "unknown field": (lambda d: _edit(d, extra=1), "extra"),
    "id as text": (lambda d: _edit(d, champion_id="7"), "champion_id"),
    "id as bool": (lambda d: _edit(d, champion_id=True), "champion_id"),
    "bad sha": (lambda d: _edit(d, sha256="ab" * 31), "sha256"),
    "path escape": (lambda d: _edit(d, bundle="../../secret.json"), "bundle"),
    "other stage": (lambda d: _edit(d, stage="paper"), "stage"),
    "other symbol": (lambda d: _edit(d, symbol="GBPUSD"), "symbol"),
    "local time": (lambda d: _edit(d, written_at="2025-01-01T10:00:00+02:00"), "UTC"),
    "naive time": (lambda d: _edit(d, written_at="2025-01-01T10:00:00"), "UTC"),
    "bad signature": (lambda d: _edit(d, signature="not base64!"), "signature"),
    "empty key": (lambda d: _edit(d, key=""), "key"),
    "a list": (lambda d: [d], "JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_DOCS))
def test_a_malformed_pointer_is_refused_naming_the_file(tmp_path, case):
    pointer = promote(tmp_path, 1)
    change, words = BAD_DOCS[case]
    pointer.path.write_text(json.dumps(change(pointer.document())))
    with pytest.raises(PointerError) as err:
        read_pointer(pointer.path)
    message = str(err.value)
    assert str(pointer.path) in message and words in message and "\n" not in message
    assert isinstance(err.value, EmpError) and isinstance(err.value, ValueError)


def test_missing_corrupt_and_linked_pointers_are_refused(tmp_path):
    with pytest.raises(PointerError, match="not found") as err:
        read_pointer(tmp_path / "EURUSD" / "current.json")
    assert "current.json" in str(err.value)
    pointer = promote(tmp_path, 1)
    for junk in (b"", b"{\"format\": ", b"\xff\xfe\x00"):
        pointer.path.write_bytes(junk)
        with pytest.raises(PointerError, match="not valid JSON") as err:
            read_pointer(tmp_path / "EURUSD")
        assert str(pointer.path) in str(err.value)
    real = tmp_path / "elsewhere.json"
    real.write_bytes(b"{}")
    pointer.path.unlink()
    pointer.path.symlink_to(real)
    with pytest.raises(PointerError, match="not a regular file"):
        read_pointer(pointer.path)


SWAPPER = """
import sys
from pathlib import Path
from champions.pointer import store_bundle, write_pointer
root, start = Path(sys.argv[1]), int(sys.argv[2])
n = start
while True:
    n += 1
    data = ('{"n": %d, "pad": "%s"}' % (n, "y" * (20000 + n % 7 * 5000))).encode()
    _, sha = store_bundle(root, "EURUSD", data)
    write_pointer(root, symbol="EURUSD", timeframe="1h", sha256=sha, champion_id=n,
                  run_id="r%d" % n, key="k", stage="live")
    if n == start + 1:
        print("ready", flush=True)
"""


def _swapper(root: Path, start: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root), str(start)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _check(root: Path) -> int:
    """The pointer parses and names a complete bundle of the champion it says."""
    pointer = read_pointer(root / "EURUSD")
    _, data = resolve(pointer)
    assert json.loads(data)["n"] == pointer.champion_id
    return pointer.champion_id


def test_the_swap_survives_kill_9_at_random_moments(tmp_path):
    rng = random.Random(12)
    promote(tmp_path, 0)
    seen = [0]
    for attempt in range(6):
        proc = _swapper(tmp_path, 1000 * (attempt + 1))
        try:
            assert proc.stdout.readline().strip() == "ready"
            if attempt == 0:  # a reader running beside the writer only ever sees whole pointers
                for _ in range(200):
                    _check(tmp_path)
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            proc.kill()  # SIGKILL: no cleanup, no finally blocks in the child
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        seen.append(_check(tmp_path))
        assert seen[-1] > 1000 * (attempt + 1)  # the swaps really happened
