"""The live state store over real SQLite files and real processes: every change is committed
before the method returns (a second store and a second process see it; kill -9 loses nothing),
executions are idempotent, positions follow fills, the breaker persists, the audit is
append-only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from live.state import (
    SCHEMA_VERSION,
    BarRow,
    BreakerState,
    NewOrder,
    StateError,
    StateStore,
    trading_day,
    trading_day_window,
)

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
SHA = "ab" * 32


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "live" / "state.db"


@pytest.fixture
def store(db):
    with StateStore(db) as s:
        yield s


def _order(s: StateStore, side: str = "buy", qty: float = 1000.0, symbol: str = "EURUSD",
           **kw) -> str:
    cl = s.next_cl_ord_id()
    s.add_order(cl_ord_id=cl, symbol=symbol, side=side, qty=qty, stop=1.0, take_profit=1.2,
                bar_ts=1_700_000_000_000_000_000, reason="entry", **kw)
    return cl


def _fill(s: StateStore, cl: str, exec_id: str, qty: float, px: float, cum: float,
          status: str = "1"):
    return s.apply_execution(cl_ord_id=cl, exec_id=exec_id, exec_type="F", ord_status=status,
                             last_qty=qty, last_px=px, cum_qty=cum, avg_px=px, ts=T0)


def _python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


# ---- durability and visibility ---------------------------------------------------------------
def test_wal_and_synchronous_full(store, db):
    assert store.settings() == {"journal_mode": "wal", "synchronous": 2,
                                "user_version": SCHEMA_VERSION}
    with sqlite3.connect(db) as raw:  # WAL is a property of the file, not of our connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_store_and_a_second_process_see_every_change(store, db):
    cl = _order(store)
    store.mark_sent(cl)
    _fill(store, cl, "E1", 400, 1.1, 400)
    store.trip("test trip")
    with StateStore(db) as other:
        assert other.order(cl).status == "partially_filled"
        assert other.position("EURUSD") == 400
        assert other.breaker().open
    code = (f"from live.state import StateStore\nimport json\n"
            f"s = StateStore({str(db)!r})\n"
            f"o = s.order({cl!r})\n"
            f"print(json.dumps([o.status, o.filled_qty, s.positions(), s.breaker().reason]))")
    proc = _python(code)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out) == ["partially_filled", 400.0, {"EURUSD": 400.0}, "test trip"]


HOLD = """
import sys
from datetime import UTC, datetime
from live.state import StateStore
s = StateStore({db!r}, exclusive=True)
cl = s.next_cl_ord_id()
s.add_order(cl_ord_id=cl, symbol="EURUSD", side="buy", qty=1000.0, stop=1.0,
            take_profit=None, bar_ts=1, reason="entry")
if {stage!r} in ("sent", "partial"):
    s.mark_sent(cl)
if {stage!r} == "partial":
    s.apply_execution(cl_ord_id=cl, exec_id="E1", exec_type="F", ord_status="1",
                      last_qty=300.0, last_px=1.1, cum_qty=300.0, avg_px=1.1,
                      ts=datetime.now(UTC))
print(cl, flush=True)
sys.stdin.readline()  # the hold point: killed here, right after the call returned
"""


@pytest.mark.parametrize(("stage", "status", "units"), [
    ("added", "pending_new", 0.0), ("sent", "sent", 0.0), ("partial", "partially_filled", 300.0)])
def test_kill9_right_after_a_call_returns_loses_nothing(db, stage, status, units):
    proc = _python(HOLD.format(db=str(db), stage=stage))
    try:
        cl = proc.stdout.readline().strip()
        assert cl, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with StateStore(db, exclusive=True) as s:  # the dead holder's lock went with it
        order = s.order(cl)
        assert order.status == status
        assert [o.cl_ord_id for o in s.open_orders()] == [cl]
        assert s.position("EURUSD") == units
        assert s.next_cl_ord_id() != cl


def test_only_one_exclusive_store(db):
    with StateStore(db, exclusive=True):
        with pytest.raises(StateError, match=rf"in use by another executor \(pid {os.getpid()}\)"):
            StateStore(db, exclusive=True)
        with StateStore(db) as reader:  # readers need no lock
            assert reader.positions() == {}


def test_cl_ord_ids_never_repeat_across_restarts_or_stores(db, tmp_path):
    seen: list[str] = []
    for _ in range(3):
        with StateStore(db) as s:
            seen += [s.next_cl_ord_id() for _ in range(20)]
    with StateStore(tmp_path / "fresh.db") as fresh:  # a wiped store starts a new id space
        seen += [fresh.next_cl_ord_id() for _ in range(20)]
    assert len(set(seen)) == len(seen) == 80
    assert seen[0].startswith("EMP-") and seen[0].endswith("-1") and seen[59].endswith("-60")
    with StateStore(db) as s:
        assert s.next_cl_ord_id("X1").startswith("X1-")
        with pytest.raises(StateError, match="prefix"):
            s.next_cl_ord_id("bad-prefix")


def test_an_order_id_is_never_added_twice(store):
    cl = _order(store)
    with pytest.raises(StateError, match=f"ClOrdID {cl} already exists"):
        store.add_order(cl_ord_id=cl, symbol="EURUSD", side="buy", qty=1.0, stop=1.0,
                        take_profit=None, bar_ts=0, reason="again")


# ---- executions, fills and positions ---------------------------------------------------------
def test_partial_fills_accumulate_with_a_weighted_average_price(store):
    cl = _order(store, qty=1000)
    store.mark_sent(cl)
    assert store.order(cl).status == "sent"
    assert store.apply_execution(cl_ord_id=cl, exec_id="E0", exec_type="0", ord_status="0",
                                 last_qty=0, last_px=0, cum_qty=0, avg_px=0, ts=T0) is None
    assert store.order(cl).status == "new"
    f1 = _fill(store, cl, "E1", 300, 1.10, 300)
    f2 = _fill(store, cl, "E2", 700, 1.20, 1000, status="2")
    assert (f1.qty, f1.px, f1.side, f1.symbol) == (300, 1.10, "buy", "EURUSD")
    assert f2.exec_id == "E2"
    o = store.order(cl)
    assert o.status == "filled" and o.filled_qty == 1000
    assert o.avg_px == pytest.approx((300 * 1.10 + 700 * 1.20) / 1000, rel=1e-15)
    assert store.position("EURUSD") == 1000
    assert store.open_orders() == []
    assert [f.exec_id for f in store.fills(cl)] == ["E1", "E2"]


def test_a_resent_execution_report_changes_nothing(store):
    cl = _order(store, side="sell", qty=500)
    assert _fill(store, cl, "E1", 200, 1.3, 200) is not None
    before = (store.order(cl), store.positions(), store.fills(), store.audit_log())
    for _ in range(3):
        assert _fill(store, cl, "E1", 200, 1.3, 200) is None
    assert (store.order(cl), store.positions(), store.fills(), store.audit_log()) == before
    assert store.position("EURUSD") == -200


def test_status_never_moves_back_and_a_late_fill_still_counts(store):
    cl = _order(store, qty=100)
    _fill(store, cl, "E2", 100, 1.1, 100, status="2")
    store.apply_execution(cl_ord_id=cl, exec_id="E1", exec_type="0", ord_status="0",
                          last_qty=0, last_px=0, cum_qty=0, avg_px=0, ts=T0)  # late ack
    assert store.order(cl).status == "filled"
    c2 = _order(store, qty=100)
    store.apply_execution(cl_ord_id=c2, exec_id="C1", exec_type="4", ord_status="4",
                          last_qty=0, last_px=0, cum_qty=0, avg_px=0, ts=T0)
    _fill(store, c2, "C2", 50, 1.1, 50, status="1")  # a fill racing the cancel
    assert store.order(c2).status == "canceled" and store.order(c2).filled_qty == 50
    assert store.position("EURUSD") == 150


def test_a_venue_stop_loss_exit_moves_the_position(store):
    cl = _order(store, side="buy", qty=1000)
    _fill(store, cl, "E1", 1000, 1.1, 1000, status="2")
    fill = _fill(store, f"{cl}-SL", "E9", 1000, 1.0, 1000, status="2")
    assert (fill.side, fill.symbol) == ("sell", "EURUSD")
    assert store.position("EURUSD") == 0 and store.positions() == {}
    child = store.order(f"{cl}-SL")
    assert (child.origin, child.status, child.reason) == ("venue", "filled", f"venue exit of {cl}")
    with pytest.raises(StateError, match="unknown ClOrdID and no symbol/side"):
        _fill(store, "SOMEONE-ELSE", "X1", 10, 1.0, 10)
    assert store.order("SOMEONE-ELSE") is None


def test_a_cum_qty_disagreement_is_audited_not_copied(store):
    cl = _order(store, qty=1000)
    _fill(store, cl, "E2", 300, 1.1, 600)  # E1 was lost
    assert store.order(cl).filled_qty == 300
    assert store.audit_log(1)[0][1] == "cum_qty_mismatch"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fills=st.lists(st.tuples(st.sampled_from(["buy", "sell"]),
                                st.integers(1, 50).map(lambda n: n * 1000.0),
                                st.floats(0.5, 2.0)), min_size=1, max_size=6),
       resend=st.lists(st.integers(0, 5), max_size=6))
def test_positions_follow_distinct_fills_whatever_is_resent(fills, resend):
    with tempfile.TemporaryDirectory() as tmp, StateStore(Path(tmp) / "s.db") as s:
        sent = []
        for i, (side, qty, px) in enumerate(fills):
            cl = _order(s, side=side, qty=qty)
            sent.append((cl, f"E{i}", qty, px))
            _fill(s, cl, f"E{i}", qty, px, qty, status="2")
        for j in resend:
            cl, ex, qty, px = sent[j % len(sent)]
            assert _fill(s, cl, ex, qty, px, qty, status="2") is None
        expect = sum(q if side == "buy" else -q for side, q, _ in fills)
        assert s.position("EURUSD") == pytest.approx(expect, abs=1e-6)
        assert len(s.fills()) == len(fills)


def test_set_position_is_audited(store):
    store.set_position("GBPUSD", -2000, reason="broker statement", who="ops")
    assert store.positions() == {"GBPUSD": -2000}
    _at, event, detail = store.audit_log(1)[0]
    assert event == "set_position" and "-2000" in detail and "broker statement" in detail
    with pytest.raises(StateError, match="reason is required"):
        store.set_position("GBPUSD", 0, reason=" ")


def test_bad_input_is_a_one_line_state_error(store):
    naive = datetime(2024, 1, 1)
    with pytest.raises(StateError, match="timezone-aware"):
        store.record_equity(naive, 1.0)
    with pytest.raises(StateError, match="qty"):
        store.add_order(cl_ord_id="A", symbol="X", side="buy", qty=-1, stop=None,
                        take_profit=None, bar_ts=0, reason="")
    with pytest.raises(StateError, match="side"):
        store.add_order(cl_ord_id="A", symbol="X", side="long", qty=1, stop=None,
                        take_profit=None, bar_ts=0, reason="")
    with pytest.raises(StateError, match="unknown ClOrdID"):
        store.mark_sent("nope")
    with pytest.raises(StateError, match="OrdStatus"):
        store.apply_execution(cl_ord_id="A", exec_id="1", exec_type="F", ord_status="Z",
                              last_qty=1, last_px=1, cum_qty=1, avg_px=1, ts=T0)


def test_recovery_can_resolve_an_order_of_unknown_fate(store):
    cl = _order(store)
    store.set_order_status(cl, "unknown", reason="crash before the ack")
    assert [o.cl_ord_id for o in store.open_orders()] == [cl]
    store.set_order_status(cl, "rejected", reason="venue does not know it")
    assert store.open_orders() == []
    assert store.audit_log(1)[0][2].startswith(f"{cl}: unknown -> rejected")


# ---- equity, day statistics, breaker ---------------------------------------------------------
def test_day_stats_and_peak_equity(store):
    day = date(2024, 3, 5)
    store.record_equity(T0 - timedelta(days=1), 100_000)
    store.record_equity(T0, 103_000)
    store.record_equity(T0 + timedelta(hours=1), 101_000)
    assert store.peak_equity() == 103_000
    for _ in range(3):
        _order(store, now=T0)
    rejected = _order(store, now=T0)
    store.apply_execution(cl_ord_id=rejected, exec_id="R", exec_type="8", ord_status="8",
                          last_qty=0, last_px=0, cum_qty=0, avg_px=0, ts=T0)
    _order(store, now=T0 + timedelta(days=1))
    assert store.day_stats(day) == (3, 100_000)
    assert store.day_stats(day + timedelta(days=1)) == (1, 101_000)
    # the fx day D opens D-1 22:00 UTC: an order at 23:00 on the 5th counts for the 6th
    _order(store, now=datetime(2024, 3, 5, 23, 0, tzinfo=UTC))
    assert store.day_stats(date(2024, 3, 6), roll_hour_utc=22)[0] == 2
    assert store.day_stats(date(2024, 3, 4)) == (0, 100_000)
    assert trading_day_window(date(2024, 3, 6), 22)[0] == datetime(2024, 3, 5, 22, tzinfo=UTC)
    assert trading_day(datetime(2024, 3, 5, 23, tzinfo=UTC), 22) == date(2024, 3, 6)
    assert trading_day(datetime(2024, 3, 5, 21, tzinfo=UTC), 22) == date(2024, 3, 5)


def test_breaker_persists_and_its_reset_is_audited(db):
    with StateStore(db) as s:
        assert s.breaker() == BreakerState(False, None, None)
        s.record_equity(T0, 100_000)
        s.trip("breaker_drawdown: drawdown 8 %")
        s.trip("reject_storm")  # already open: the first reason stays
    with StateStore(db) as s:
        b = s.breaker()
        assert b.open and b.reason == "breaker_drawdown: drawdown 8 %" and b.since is not None
        s.reset_breaker(who="alice", reason="checked the venue")
        assert not s.breaker().open
        assert s.peak_equity() is None  # the drawdown restarts from here
        events = [(e, d) for _, e, d in s.audit_log()]
    assert ("breaker_trip", "reject_storm (already open)") in events
    assert events[-1][0] == "breaker_reset"
    assert "by alice: checked the venue" in events[-1][1] and "breaker_drawdown" in events[-1][1]


def test_a_hard_stop_needs_an_explicit_reset(store):
    store.trip("hard stop: drawdown 10 %", hard=True)
    with pytest.raises(StateError, match="hard stop"):
        store.reset_breaker(who="bob", reason="oops")
    assert store.breaker().hard
    store.reset_breaker(who="bob", reason="account refunded", hard=True)
    assert store.breaker() == BreakerState(False, None, None, False)


# ---- audit, champion, strategy state ---------------------------------------------------------
def test_audit_log_is_append_only_and_masks_secrets(store, db):
    store.audit("config", "broker fix://user:hunter2@broker.example:5201 loaded")
    assert "hunter2" not in store.audit_log(1)[0][2]
    _fill(store, _order(store), "E1", 10, 1.0, 10)
    with sqlite3.connect(db) as raw:
        for sql in ("UPDATE audit SET detail='x'", "DELETE FROM audit",
                    "UPDATE fills SET qty=0", "DELETE FROM executions"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(sql)
    log = store.audit_log()
    assert [e for _, e, _ in log] == ["store_created", "config"]
    assert store.audit_log(limit=1) == log[-1:]


def test_champion_and_its_history(store):
    assert store.champion("EURUSD") is None
    store.set_champion(sha256=SHA, symbol="EURUSD", stage="paper")
    store.set_champion(sha256="cd" * 32, symbol="EURUSD", stage="live")
    assert store.champion("EURUSD") == "cd" * 32
    assert [h[1:] for h in store.champion_history("EURUSD")] == [(SHA, "paper"),
                                                                  ("cd" * 32, "live")]
    with pytest.raises(StateError, match="sha256"):
        store.set_champion(sha256="xyz", symbol="EURUSD", stage="live")


def test_strategy_state_round_trips_bit_for_bit(db):
    state = np.array([1.5, np.nan, -0.0, 1e300, np.inf])
    with StateStore(db) as s:
        assert s.strategy_state("EURUSD") is None
        s.save_strategy_state("EURUSD", 41, state)
        s.save_strategy_state("EURUSD", 42, state * 2)
        with pytest.raises(StateError, match="float64"):
            s.save_strategy_state("EURUSD", 43, np.arange(3))
    with StateStore(db) as s:
        bar_ts, got = s.strategy_state("EURUSD")
    assert bar_ts == 42 and got.dtype == np.float64
    assert got.tobytes() == (state * 2).tobytes()


# ---- opening files ---------------------------------------------------------------------------
def test_files_that_are_not_this_store_are_refused(tmp_path, db):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError, match=r"junk\.db: open failed"):
        StateStore(junk)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(StateError, match="not an EMP live state store"):
        StateStore(other)
    StateStore(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="schema version 99 was written by a newer EMP"):
        StateStore(db)


# ---- bars, the bar's one-transaction commit, the writer's mirror -----------------------------
def _bar(ts: int, target: float = 1000.0) -> BarRow:
    return BarRow("EURUSD", ts, 1.1, 1.2, 1.0, 1.15, 10.0, target, SHA)


def test_commit_bar_is_one_transaction_with_fresh_cl_ord_ids(store, db):
    before = _order(store)
    rows = store.commit_bar(_bar(5), np.arange(4.0), [
        NewOrder("sell", 1000.0, None, None, "reduce"),
        NewOrder("buy", 2000.0, 0.01, None, "entry")])
    assert [r.status for r in rows] == ["pending_new", "pending_new"]
    ids = [before] + [r.cl_ord_id for r in rows]
    assert len(set(ids)) == 3 and ids[1:] == [f"{before.rsplit('-', 1)[0]}-{n}" for n in (2, 3)]
    assert store.next_cl_ord_id().endswith("-4")  # the counter moved with the bar's orders
    with StateStore(db) as other:  # committed: a second store sees all of it
        assert other.strategy_state("EURUSD")[0] == 5
        assert [b.ts for b in other.bars("EURUSD")] == [5]
        assert {o.cl_ord_id for o in other.open_orders()} == set(ids)
    # a bar twice (a replayed bar) is refused and the whole commit with it: no order created
    with pytest.raises(StateError, match="commit_bar EURUSD 5 failed"):
        store.commit_bar(_bar(5), np.arange(4.0), [NewOrder("buy", 1.0, None, None, "x")])
    assert len(store.open_orders()) == 3 and store.strategy_state("EURUSD")[0] == 5
    store.commit_bar(_bar(6, 0.0), np.arange(4.0))
    assert [(b.ts, b.target) for b in store.bars("EURUSD", since_ts=5)] == [(6, 0.0)]
    with sqlite3.connect(db) as raw, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE bars SET close = 2")


def test_a_version_1_store_is_migrated_keeping_its_rows(db):
    with StateStore(db) as s:
        cl = _order(s)
    with sqlite3.connect(db) as raw:  # what a version 1 store looked like
        raw.execute("DROP TABLE bars")
        raw.execute("PRAGMA user_version = 1")
    with StateStore(db) as s:
        assert s.settings()["user_version"] == SCHEMA_VERSION
        assert s.order(cl) is not None
        s.commit_bar(_bar(1), np.zeros(2))
        assert [e for _, e, _ in s.audit_log()][-1] == "store_migrated"


OPS = st.lists(st.tuples(st.sampled_from(["order", "fill", "sent", "cancel", "bar", "set"]),
                         st.integers(0, 5), st.sampled_from(["buy", "sell"])),
               min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_the_writers_mirror_equals_the_database(tmp_path, ops):
    """The exclusive store answers position/open_orders from memory: after any sequence of
    writes, a plain reader of the file gives the same answers."""
    path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.db"
    with StateStore(path, exclusive=True) as w, StateStore(path) as r:
        ids: list[str] = []
        for i, (op, n, side) in enumerate(ops):
            if op == "order" or not ids:
                ids.append(_order(w, side=side, qty=1000.0 * (n + 1)))
            elif op == "bar":
                ids += [o.cl_ord_id for o in w.commit_bar(
                    _bar(i), np.zeros(3), [NewOrder(side, 500.0, None, None, "bar")] * (n % 2))]
            else:
                cl = ids[n % len(ids)]
                if op == "fill":
                    _fill(w, cl, f"F{i}", 250.0, 1.1, 250.0)
                elif op == "sent":
                    w.mark_sent(cl)
                elif op == "cancel":
                    w.set_order_status(cl, "canceled", reason="test")
                else:
                    w.set_position("EURUSD", float(n), reason="operator")
            assert w.position("EURUSD") == r.position("EURUSD")
            assert w.open_orders() == r.open_orders()
