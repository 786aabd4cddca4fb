"""Every bad `emp data …` invocation ends as ``emp: error: …`` with exit code 2, a message that
names the problem and where (file, line or option), and no traceback. Each case is a real
``python -m emp_cli.main`` process on real files; a damaged store keeps serving what is intact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_daily_bars, write_bar_csv

from market.config import QualityConfig, SymbolMeta
from market.ingest import ingest_bars
from market.readers import SourceRows
from market.store import JOURNAL_FILE, HistoryStore

ROOT = Path(__file__).resolve().parents[1]
META = SymbolMeta(asset_class="index", tick_size=0.01, min_lot=0.1, calendar="business")


def _emp(home: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
    env.pop("EMP_STORE_HOLD", None)
    cmd = [sys.executable, "-m", "emp_cli.main", *args,
           "--config", str(config or home / "cfg.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _make_home(path: Path) -> Path:
    """A store with SP500 and NDX daily bars, and the input files the cases need."""
    path.mkdir()
    (path / "cfg.yaml").write_text(f"home: {path}\n")
    store = HistoryStore(path / "history")
    for i, symbol in enumerate(("SP500", "NDX")):
        frame = make_daily_bars(120, seed=i)
        ingest_bars(store, symbol, "1d", SourceRows(frame, np.arange(2, 122)), META,
                    QualityConfig(severity={"gap": "off"}))
    files = path / "in"
    files.mkdir()
    daily = make_daily_bars(60)
    write_bar_csv(files / "daily.csv", daily)
    hourly = daily.assign(ts=pd.date_range("2021-01-04", periods=60, freq="h", tz="UTC"))
    write_bar_csv(files / "hourly.csv", hourly)
    text = (files / "daily.csv").read_text()
    (files / "semicolon.csv").write_text(text.replace(",", ";"))
    (files / "decimal_comma.csv").write_text(
        "\n".join(line.replace(",", ";").replace(".", ",") for line in text.splitlines()))
    lines = text.splitlines()
    lines[3] = lines[3].replace(" 00:00:00", "T00:00:00+01:00", 1)
    (files / "mixed_offsets.csv").write_text("\n".join(lines) + "\n")
    (files / "ohlc_bad.csv").write_text("Date,Open,High,Low,Close\n2020-01-02,1,2,0.5,1\n"
                                        "2020-01-03,1,0.5,0.9,1\n2020-01-06,1,2,0.5,1\n")
    (files / "garbage.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (files / "empty.csv").write_bytes(b"")
    (files / "a_directory.csv").mkdir()
    (files / "mt5.csv").write_text("<DATE>\t<OPEN>\t<CLOSE>\n2020.01.02\t1.0\t1.1\n")
    (files / "latin1.csv").write_bytes(text.replace("Volume", "Volüme").encode("latin-1"))
    (path / "future.yaml").write_text(
        f"home: {path}\ndata:\n  symbols:\n    FUT:\n      asset_class: future\n"
        f"      tick_size: 0.25\n      min_lot: 1\n")
    (path / "file_store.yaml").write_text(f"home: {path}\ndata:\n  store: {files / 'daily.csv'}\n")
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return _make_home(tmp_path_factory.mktemp("errors") / "home")


def _ingest(file: str, *extra: str) -> tuple[str, ...]:
    return ("data", "ingest", f"{{in}}/{file}", *extra)


_BAR = ("--timeframe", "1d", "--asset-class", "equity")

# (case id, argv with {in} for the input folder, config file name or None, fragments the message
# must contain: the problem and where)
CASES = [
    ("delimiter-empty", _ingest("daily.csv", "--symbol", "ABC", *_BAR, "--delimiter", ""),
     None, ["--delimiter must be one character", "''"]),
    ("delimiter-two-chars", _ingest("daily.csv", "--symbol", "ABC", *_BAR, "--delimiter", ";;"),
     None, ["--delimiter", "';;'"]),
    ("tz-unknown", _ingest("daily.csv", "--symbol", "ABC", *_BAR, "--tz", "Mars/Olympus"),
     None, ["--tz", "unknown time zone 'Mars/Olympus'"]),
    ("symbol-space", _ingest("daily.csv", "--symbol", "A B", *_BAR), None,
     ["--symbol", "invalid symbol name 'A B'", "letters, digits"]),
    ("symbol-glob", _ingest("daily.csv", "--symbol", "bad*?:name", *_BAR), None,
     ["--symbol", "'bad*?:name'", "1 to 40 characters"]),
    ("symbol-too-long", _ingest("daily.csv", "--symbol", "X" * 41, *_BAR), None,
     ["--symbol", "1 to 40 characters"]),
    ("hourly-as-daily", _ingest("hourly.csv", "--symbol", "ABC", *_BAR), None,
     ["hourly.csv", "contradict --timeframe 1d", "line 3 (2021-01-04T01:00:00Z)",
      "pass --timeframe 1h"]),
    ("daily-as-hourly", _ingest("daily.csv", "--symbol", "ABC", "--timeframe", "1h",
                                "--asset-class", "equity"), None,
     ["daily.csv", "contradict --timeframe 1h", "no two consecutive bars are 1h apart", "line 2",
      "pass --timeframe 1d"]),
    ("daily-in-local-time", _ingest("daily.csv", "--symbol", "ABC", *_BAR,
                                    "--tz", "America/New_York"), None,
     ["daily.csv", "60 of 60 bar(s) do not open on the 1d grid", "line 2", "--tz"]),
    ("semicolons", _ingest("semicolon.csv", "--symbol", "ABC", *_BAR), None,
     ["semicolon.csv", "--delimiter ';'"]),
    ("decimal-commas", _ingest("decimal_comma.csv", "--symbol", "ABC", *_BAR,
                               "--delimiter", ";"), None,
     ["decimal_comma.csv", "line 2", "decimal comma", "--decimal ','"]),
    ("mixed-offsets", _ingest("mixed_offsets.csv", "--symbol", "ABC", *_BAR), None,
     ["mixed_offsets.csv", "mixed time zones", "line 4", "line 2", "--tz"]),
    ("binary-garbage", _ingest("garbage.bin", "--symbol", "ABC", *_BAR), None,
     ["garbage.bin", "binary data, not a text CSV"]),
    ("latin1-text", _ingest("latin1.csv", "--symbol", "ABC", *_BAR), None,
     ["latin1.csv", "line 1: not UTF-8 text (byte 0xfc)"]),
    ("directory", _ingest("a_directory.csv", "--symbol", "ABC", *_BAR), None,
     ["a_directory.csv", "is a directory"]),
    ("missing-file", _ingest("nope.csv", "--symbol", "ABC", *_BAR), None,
     ["nope.csv", "file not found"]),
    ("empty-file", _ingest("empty.csv", "--symbol", "ABC", *_BAR), None,
     ["empty.csv", "empty file"]),
    ("bad-ts-format", _ingest("daily.csv", "--symbol", "ABC", *_BAR, "--ts-format", "%d/%m/%Y"),
     None, ["daily.csv", "no row could be parsed", "line 2", "--ts-format"]),
    ("unknown-mapping-field", _ingest("daily.csv", "--symbol", "ABC", *_BAR,
                                      "--columns", "price=Close"), None,
     ["daily.csv", "unknown field(s) in column mapping", "price"]),
    ("mapping-column-absent", _ingest("daily.csv", "--symbol", "ABC", *_BAR,
                                      "--columns", "close=Last"), None,
     ["daily.csv", "['Last']", "not in header"]),
    ("ticks-without-bid", _ingest("daily.csv", "--symbol", "ABC", "--format", "ticks",
                                  "--asset-class", "fx"), None,
     ["daily.csv", "no column for ['bid', 'ask']"]),
    ("mt5-missing-fields", _ingest("mt5.csv", "--symbol", "ABC", "--format", "mt",
                                   "--timeframe", "1d", "--asset-class", "fx"), None,
     ["mt5.csv", "MetaTrader 5 header lacks", "<HIGH>"]),
    ("no-timeframe", _ingest("daily.csv", "--symbol", "ABC", "--asset-class", "equity"), None,
     ["--timeframe is required"]),
    ("no-metadata", _ingest("daily.csv", "--symbol", "NEWSYM", "--timeframe", "1d"), None,
     ["NEWSYM has no metadata", "--asset-class"]),
    ("asset-class-contradicts-store", _ingest("daily.csv", "--symbol", "SP500", "--timeframe",
                                              "1d", "--asset-class", "crypto"), None,
     ["--asset-class crypto contradicts asset class index", "store"]),
    ("quarantine-unwritable", _ingest("ohlc_bad.csv", "--symbol", "ABC", *_BAR,
                                      "--quarantine", "{in}/garbage.bin/q.csv"), None,
     ["--quarantine: cannot write", "garbage.bin/q.csv", "nothing was stored"]),
    ("future-without-calendar", ("data", "list"), "future.yaml",
     ["future.yaml", "FUT", "calendar is required for asset class 'future'"]),
    ("store-is-a-file", ("data", "list"), "file_store.yaml",
     ["daily.csv", "not a directory"]),
]


@pytest.mark.parametrize(("argv", "config", "fragments"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_data_invocation_is_a_clean_error(home, argv, config, fragments):
    args = [a.replace("{in}", str(home / "in")) for a in argv]
    before = sorted(p.relative_to(home) for p in (home / "history").rglob("*") if p.is_file())
    r = _emp(home, *args, config=home / config if config else None)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("emp: error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout == ""  # nothing that looks like success
    for fragment in fragments:
        assert fragment in r.stderr, (fragment, r.stderr)
    assert len(r.stderr) < 1500, r.stderr  # short: no junk, no pandas dump
    after = sorted(p.relative_to(home) for p in (home / "history").rglob("*") if p.is_file())
    assert after == before  # nothing was stored


def test_bom_header_and_decimal_comma_with_option_are_ingested(home):
    text = (home / "in" / "daily.csv").read_text()
    bom = home / "in" / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    r = _emp(home, "data", "ingest", str(bom), "--symbol", "BOM", *_BAR)
    assert r.returncode == 0, r.stderr
    assert "1d: +60 new" in r.stdout
    r = _emp(home, "data", "ingest", str(home / "in" / "decimal_comma.csv"), "--symbol", "DEC",
             *_BAR, "--delimiter", ";", "--decimal", ",")
    assert r.returncode == 0, r.stderr
    store = HistoryStore(home / "history")
    pd.testing.assert_frame_equal(store.read_frame("DEC", "1d"), store.read_frame("BOM", "1d"))


def test_times_that_all_carry_offsets_are_converted_exactly(home, tmp_path):
    """A CET export switching to CEST: each time has its own offset, so it converts exactly."""
    f = tmp_path / "cet.csv"
    f.write_text("time,open,high,low,close\n"
                 "2021-03-27T01:00:00+01:00,1,1,1,1\n"
                 "2021-03-28T01:00:00+01:00,1,1,1,1\n"
                 "2021-03-29T02:00:00+02:00,1,1,1,1\n")
    r = _emp(home, "data", "ingest", str(f), "--symbol", "CET", "--timeframe", "1d",
             "--asset-class", "crypto", "--no-derive")
    assert r.returncode == 0, r.stderr
    ts = HistoryStore(home / "history").read_frame("CET", "1d")["ts"]
    assert [str(t) for t in ts] == ["2021-03-27 00:00:00+00:00", "2021-03-28 00:00:00+00:00",
                                    "2021-03-29 00:00:00+00:00"]


def test_asset_class_equal_to_stored_is_fine_and_calendar_comes_from_class(home, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"home: {home}\ndata:\n  symbols:\n    COIN:\n      asset_class: crypto\n"
                   f"      tick_size: 0.01\n      min_lot: 0.001\n")
    f = tmp_path / "weekend.csv"
    write_bar_csv(f, make_daily_bars(10).assign(
        ts=pd.date_range("2021-01-01", periods=10, freq="D", tz="UTC")))
    r = _emp(home, "data", "ingest", str(f), "--symbol", "COIN", "--timeframe", "1d",
             "--asset-class", "crypto", config=cfg)
    assert r.returncode == 0, r.stderr
    assert HistoryStore(home / "history").meta("COIN").calendar == "always"
    assert "gap" not in r.stdout  # weekends are trading days for crypto


def _damaged_home(tmp_path: Path) -> Path:
    home = _make_home(tmp_path / "damaged")
    ndx = home / "history" / "symbol=NDX" / "timeframe=1d" / "bars.parquet"
    ndx.write_bytes(ndx.read_bytes()[: ndx.stat().st_size // 2])  # truncated
    return home


def test_a_truncated_partition_is_reported_and_the_rest_keeps_working(tmp_path):
    home = _damaged_home(tmp_path)
    listed = _emp(home, "data", "list")
    assert listed.returncode == 1, listed.stderr
    assert "Traceback" not in listed.stdout + listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "DAMAGED" in rows["NDX"] and "symbol=NDX/timeframe=1d/bars.parquet" in rows["NDX"]
    assert "re-ingest NDX/1d" in rows["NDX"]
    assert "120" in rows["SP500"]
    checked = _emp(home, "data", "check", "--symbol", "SP500")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SP500/1d" in checked.stdout and "NDX" not in checked.stdout
    whole = _emp(home, "data", "check")
    assert whole.returncode == 1 and "Traceback" not in whole.stdout + whole.stderr
    assert "== NDX/1d: DAMAGED" in whole.stdout and "== SP500/1d" in whole.stdout
    again = _emp(home, "data", "ingest", str(home / "in" / "daily.csv"), "--symbol", "NDX",
                 "--timeframe", "1d")
    assert again.returncode == 2 and again.stderr.startswith("emp: error: ")
    assert "unreadable parquet partition" in again.stderr and "re-ingest" in again.stderr


def test_a_corrupt_journal_is_reported_and_reads_keep_working(tmp_path):
    home = _make_home(tmp_path / "journal")
    root = home / "history"
    pending = root / "symbol=NDX" / "timeframe=1d" / "bars.parquet.tmp-999-deadbeef"
    pending.write_bytes(b"half of a commit")
    (root / JOURNAL_FILE).write_text('[["symbol=NDX/timeframe=1d/bars.parq')  # cut short
    listed = _emp(home, "data", "list")
    assert listed.returncode == 0, listed.stderr
    assert "SP500" in listed.stdout and "NDX" in listed.stdout
    assert "emp: warning:" in listed.stderr and "_journal.json is unreadable" in listed.stderr
    assert "['NDX']" in listed.stderr and "mv " in listed.stderr
    checked = _emp(home, "data", "check", "--symbol", "SP500")
    assert checked.returncode == 0 and "Traceback" not in checked.stderr
    ingest = _emp(home, "data", "ingest", str(home / "in" / "daily.csv"), "--symbol", "ABC",
                  *_BAR)
    assert ingest.returncode == 2 and ingest.stderr.splitlines()[-1].startswith("emp: error: ")
    assert "_journal.json is unreadable" in ingest.stderr and "mv " in ingest.stderr
    assert "Traceback" not in ingest.stderr and ingest.stdout == ""
    assert pending.exists()  # the only copy of that commit is kept for the user to inspect
    (root / JOURNAL_FILE).rename(root / "_journal.json.bad")  # what the message says to do
    ok = _emp(home, "data", "ingest", str(home / "in" / "daily.csv"), "--symbol", "ABC", *_BAR)
    assert ok.returncode == 0, ok.stderr
    assert not pending.exists()  # swept by the next writer


def test_a_corrupt_journal_with_nothing_pending_is_removed(tmp_path):
    home = _make_home(tmp_path / "journal2")
    (home / "history" / JOURNAL_FILE).write_bytes(b"\x00\x01 not json")
    listed = _emp(home, "data", "list")
    assert listed.returncode == 0 and "no renames were pending" in listed.stderr
    assert not (home / "history" / JOURNAL_FILE).exists()


def test_check_reports_stored_bars_that_contradict_their_timeframe(tmp_path):
    """Hourly bars stored as 1d before ingest checked it: `emp data check` now says so."""
    home = _make_home(tmp_path / "old")
    hourly = make_daily_bars(48).assign(
        ts=pd.date_range("2021-01-04", periods=48, freq="h", tz="UTC"))
    store = HistoryStore(home / "history")
    from market.store import frame_to_table

    txn = store.transaction()
    txn.put_bars("OLD", "1d", frame_to_table(hourly))
    txn.put_meta("OLD", META)
    txn.commit()
    r = _emp(home, "data", "check", "--symbol", "OLD")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "== OLD/1d (business): 48 bars, ERRORS" in r.stdout
    assert "not 1d bars: 46 of 48 bar(s) do not open on the 1d grid" in r.stdout
    assert "row 1 (2021-01-04T01:00:00Z)" in r.stdout and "--timeframe 1h" in r.stdout
