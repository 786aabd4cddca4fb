"""The store's inter-process lock, with real `emp` processes, real files and real flocks.

Races are forced, not left to timing: the first writer is started with EMP_STORE_HOLD naming a
file, so it stops inside its lock (temp files written, journal not yet committed) until the test
creates that file. The test releases it only after the second process has said on stderr that
it is waiting for the first. Each result is compared, timeframe by timeframe (1m … 1d), with a
serial ingest of the same files into a fresh store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from market.store import LOCK_FILE, HistoryStore
from market.timeframes import TIMEFRAME_NS

ROOT = Path(__file__).resolve().parents[1]
TIMEFRAMES = list(TIMEFRAME_NS)  # 1m, 5m, 15m, 1h, 4h, 1d


def _minute_csv(path: Path, start: str, n: int, seed: int) -> Path:
    """n one-minute bars from ``start`` (24x7), prices from a seeded walk."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq="min", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    open_ = np.r_[close[0], close[:-1]]
    pd.DataFrame({
        "ts": ts.strftime("%Y-%m-%d %H:%M:%S"), "open": open_,
        "high": np.maximum(open_, close) * 1.0001, "low": np.minimum(open_, close) * 0.9999,
        "close": close, "volume": rng.integers(1, 100, n).astype(float),
    }).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A and B overlap by a day with different prices, so the order of two ingests shows."""
    d = tmp_path_factory.mktemp("csv")
    return {"A": _minute_csv(d / "a.csv", "2024-03-01", 3 * 1440, 1),
            "B": _minute_csv(d / "b.csv", "2024-03-03", 3 * 1440, 2),
            "C": _minute_csv(d / "c.csv", "2024-03-02 07:13", 2 * 1440, 3)}


def _home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "cfg.yaml").write_text(f"home: {home}\n")
    return home


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    env.pop("EMP_STORE_HOLD", None)
    env.update(extra)
    return env


def _emp(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "emp_cli.main", *args, "--config", str(home / "cfg.yaml")]


def _ingest_args(home: Path, file: Path, symbol: str, *extra: str) -> list[str]:
    return _emp(home, "data", "ingest", str(file), "--symbol", symbol, "--timeframe", "1m",
                "--asset-class", "crypto", *extra)


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), cwd=ROOT,
                          timeout=300)


def _hold_first(home: Path, cmd: list[str], release: Path) -> subprocess.Popen[str]:
    """Start ``cmd`` as a writer that stops inside the lock; return once it holds the lock."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(EMP_STORE_HOLD=str(release)), cwd=ROOT)
    lock = home / "history" / LOCK_FILE
    holding = Path(f"{release}.holding")  # the hook's sign: temp files written, journal not yet
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if holding.exists():
            assert lock.read_text().startswith(f"pid {proc.pid} (ingest ")
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the first writer never reached its commit")


def _second_waits(cmd: list[str], first: subprocess.Popen[str], **env: str
                  ) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd``; return once it has said that it waits for ``first`` (and that line)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(**env), cwd=ROOT)
    while True:
        line = proc.stderr.readline()
        if not line:
            out, err = proc.communicate()
            raise AssertionError(f"second process never waited: rc={proc.returncode}\n{out}{err}")
        if "store busy" in line:
            assert f"pid {first.pid}" in line, line
            return proc, line


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _frames(home: Path, symbol: str) -> dict[str, pd.DataFrame]:
    store = HistoryStore(home / "history")
    return {tf: store.read_frame(symbol, tf) for tf in TIMEFRAMES}


def _assert_same(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for tf in TIMEFRAMES:
        pd.testing.assert_frame_equal(got[tf], want[tf], check_exact=True, obj=tf)


def _serial(tmp_path: Path, name: str, steps: list[tuple[Path, str]]) -> Path:
    home = _home(tmp_path, name)
    for file, symbol in steps:
        r = _run(_ingest_args(home, file, symbol))
        assert r.returncode == 0, r.stderr
    return home


def test_reader_during_ingest_waits_and_never_sweeps_its_temp_files(tmp_path, files):
    home = _home(tmp_path, "live")
    release = tmp_path / "release"
    writer = _hold_first(home, _ingest_args(home, files["A"], "ABC"), release)
    temps = sorted((home / "history").rglob("*.tmp-*"))
    busy = _run(_emp(home, "data", "list", "--wait", "0"))  # a reader that will not wait
    assert busy.returncode == 2 and busy.stderr.startswith("emp: error: store busy"), busy.stderr
    assert f"pid {writer.pid} (ingest ABC" in busy.stderr
    reader, _ = _second_waits(_emp(home, "data", "list"), writer)
    assert sorted((home / "history").rglob("*.tmp-*")) == temps  # nobody swept them
    release.touch()
    rc, out, err = _finish(writer)
    assert rc == 0, err
    assert "1m: +4320 new" in out
    rc, listing, _ = _finish(reader)
    assert rc == 0
    assert all(f"ABC         {tf}" in listing for tf in TIMEFRAMES)  # it read the finished ingest
    assert "4320" in listing
    assert not list((home / "history").rglob("*.tmp-*"))
    _assert_same(_frames(home, "ABC"), _frames(_serial(tmp_path, "ref", [(files["A"], "ABC")]),
                                               "ABC"))


def test_ingests_of_different_symbols_at_once_both_land(tmp_path, files):
    home = _home(tmp_path, "live")
    release = tmp_path / "release"
    first = _hold_first(home, _ingest_args(home, files["A"], "ABC"), release)
    second, _ = _second_waits(_ingest_args(home, files["B"], "XYZ"), first)
    release.touch()
    for proc in (first, second):
        rc, out, err = _finish(proc)
        assert rc == 0, err
        assert "1m: +4320 new" in out
    ref = _serial(tmp_path, "ref", [(files["A"], "ABC"), (files["B"], "XYZ")])
    for symbol in ("ABC", "XYZ"):
        _assert_same(_frames(home, symbol), _frames(ref, symbol))


def test_ingests_of_one_symbol_at_once_equal_a_serial_order(tmp_path, files):
    home = _home(tmp_path, "live")
    release = tmp_path / "release"
    first = _hold_first(home, _ingest_args(home, files["A"], "ABC"), release)
    second, _ = _second_waits(_ingest_args(home, files["B"], "ABC"), first)
    release.touch()
    rc1, out1, err1 = _finish(first)
    rc2, out2, err2 = _finish(second)
    assert (rc1, rc2) == (0, 0), err1 + err2
    assert "1m: +4320 new" in out1
    assert "1m: +2880 new, 1440 replaced, 7200 total" in out2  # B merged onto A, not beside it
    a_then_b = _serial(tmp_path, "ab", [(files["A"], "ABC"), (files["B"], "ABC")])
    b_then_a = _serial(tmp_path, "ba", [(files["B"], "ABC"), (files["A"], "ABC")])
    got, want, other = _frames(home, "ABC"), _frames(a_then_b, "ABC"), _frames(b_then_a, "ABC")
    assert not got["1m"].equals(other["1m"])  # the two orders differ, so this checks the order
    _assert_same(got, want)


def test_three_writers_queue_and_a_writer_gives_up_after_wait(tmp_path, files):
    """A writer with --wait 0.5 fails with "store busy" and stores nothing; two more that wait
    land one after the other, and the store equals a serial order of what succeeded."""
    home = _home(tmp_path, "live")
    release = tmp_path / "release"
    first = _hold_first(home, _ingest_args(home, files["A"], "ABC"), release)
    impatient = _run(_ingest_args(home, files["C"], "ABC", "--wait", "0.5"))
    assert impatient.returncode == 2
    said = impatient.stderr.splitlines()
    assert said[0].startswith(f"store busy: waiting for pid {first.pid} (ingest ABC"), said
    assert said[-1].startswith("emp: error: store busy"), said
    assert "gave up after 0.5 s" in said[-1] and "Traceback" not in impatient.stderr
    assert impatient.stdout == ""  # no success line for data it did not store
    second, _ = _second_waits(_ingest_args(home, files["B"], "ABC"), first)
    release.touch()
    assert _finish(first)[0] == 0 and _finish(second)[0] == 0
    _assert_same(_frames(home, "ABC"), _frames(
        _serial(tmp_path, "ref", [(files["A"], "ABC"), (files["B"], "ABC")]), "ABC"))
