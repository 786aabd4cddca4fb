"""The live executor's state store: orders, fills, positions, the ClOrdID counter, equity, the
circuit breaker, the champion in use, strategy snapshots and an append-only audit log.

Why it exists: after a crash (``kill -9`` anywhere around an order) the executor must know which
orders it created, which it sent and what filled, so that a restart neither duplicates nor
loses an order. So every method runs in its own transaction and commits before it returns; the
caller acts (sends, flattens, reports) only on committed state.

SQLAlchemy 2 Core over one SQLite file in WAL mode with ``synchronous=FULL`` (a commit survives
a power cut, not only a process death). Writes start with ``BEGIN IMMEDIATE`` so a second
process (``emp live reset-breaker``, an operator's read) waits on the busy timeout instead of
failing. The audit log, the fills and the raw executions are append-only (SQLite triggers
refuse UPDATE and DELETE). Strategy snapshots are raw float64 bytes with their shape: no pickle.

Conventions: quantities are units (the caller converts the venue's lots); times are
timezone-aware UTC datetimes; ``bar_ts`` is the bar's open time in int64 ns (the store's unit).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import math
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from core.errors import EmpError
from core.secrets import mask_text
from core.sqlite import UTCDateTime, sqlite_transactions

SCHEMA_VERSION = 2  # 2: the bars table (live bars and their decisions)
FORMAT = "emp-live-state"
BUSY_TIMEOUT_S = 30.0
SIDES = ("buy", "sell")
STATUSES = ("pending_new", "sent", "new", "partially_filled", "filled", "canceled", "rejected",
            "unknown")
OPEN_STATUSES = ("pending_new", "sent", "unknown", "new", "partially_filled")
TERMINAL = ("filled", "canceled", "rejected")
# an order only moves forward; a late "new" ack never undoes a fill
_RANK = {"pending_new": 0, "sent": 1, "unknown": 1, "new": 2, "partially_filled": 3,
         "filled": 4, "canceled": 4, "rejected": 4}
# FIX 4.4 OrdStatus(39) -> our status; None keeps the current one (pending cancel/replace ...)
ORD_STATUS = {"0": "new", "1": "partially_filled", "2": "filled", "3": "canceled",
              "4": "canceled", "5": "new", "6": None, "7": "new", "8": "rejected", "9": "new",
              "A": "sent", "B": "new", "C": "canceled", "D": "new", "E": None}
TRADE_EXEC_TYPES = ("F", "1", "2")  # Trade (4.4); Partial fill / Fill (4.2)
CORRECTION_EXEC_TYPES = ("G", "H")  # Trade correct / cancel: never applied silently
CHILD_SUFFIXES = ("-SL", "-TP")     # the venue's stop-loss / take-profit exit of an order
STAGES = ("eligible", "paper", "live", "retired")
_PREFIX = re.compile(r"[A-Za-z0-9]{1,16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_QTY_TOL = 1e-9


class StateError(EmpError, RuntimeError):
    """The state store cannot do what was asked; one line naming the file or the order."""


@dataclass(frozen=True)
class OrderRow:
    cl_ord_id: str
    symbol: str
    side: str
    qty: float
    stop: float | None
    take_profit: float | None
    status: str
    filled_qty: float
    avg_px: float | None
    bar_ts: int
    reason: str
    created_at: datetime
    updated_at: datetime
    origin: str = "emp"  # "emp": ours; "venue": a stop-loss/take-profit exit the venue created


@dataclass(frozen=True)
class FillRow:
    exec_id: str
    cl_ord_id: str
    symbol: str
    side: str
    qty: float
    px: float
    ts: datetime


@dataclass(frozen=True)
class NewOrder:
    """An order to create with a bar's commit (its ClOrdID is made in the same transaction)."""

    side: str
    qty: float
    stop: float | None
    take_profit: float | None
    reason: str


@dataclass(frozen=True)
class BarRow:
    """A live bar as stepped: OHLCV, the target position decided on it, the champion's sha."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    target: float
    champion: str


@dataclass(frozen=True)
class BreakerState:
    open: bool
    reason: str | None
    since: datetime | None
    hard: bool = False  # a hard stop (drawdown past hard_stop_drawdown): reset needs hard=True


metadata = MetaData()
meta_t = Table("meta", metadata, Column("key", String(64), primary_key=True),
               Column("value", Text, nullable=False))
orders_t = Table(
    "orders", metadata,
    Column("cl_ord_id", String(64), primary_key=True),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", Float, nullable=False),
    Column("stop", Float),
    Column("take_profit", Float),
    Column("status", String(20), nullable=False, index=True),
    Column("filled_qty", Float, nullable=False),
    Column("avg_px", Float),
    Column("bar_ts", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("origin", String(8), nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    Column("updated_at", UTCDateTime, nullable=False),
)
executions_t = Table(  # every ExecutionReport applied, raw: the idempotency key and its record
    "executions", metadata,
    Column("cl_ord_id", String(64), primary_key=True),
    Column("exec_id", String(64), primary_key=True),
    Column("exec_type", String(4), nullable=False),
    Column("ord_status", String(20), nullable=False),
    Column("last_qty", Float, nullable=False),
    Column("last_px", Float, nullable=False),
    Column("cum_qty", Float, nullable=False),
    Column("avg_px", Float, nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)
fills_t = Table(
    "fills", metadata,
    Column("cl_ord_id", String(64), primary_key=True),
    Column("exec_id", String(64), primary_key=True),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("qty", Float, nullable=False),
    Column("px", Float, nullable=False),
    Column("ts", UTCDateTime, nullable=False, index=True),
)
positions_t = Table("positions", metadata, Column("symbol", String(64), primary_key=True),
                    Column("units", Float, nullable=False),
                    Column("updated_at", UTCDateTime, nullable=False))
equity_t = Table("equity", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
                 Column("ts", UTCDateTime, nullable=False, index=True),
                 Column("equity", Float, nullable=False))
breaker_t = Table("breaker", metadata, Column("id", Integer, primary_key=True),
                  Column("open", Integer, nullable=False), Column("reason", Text),
                  Column("since", UTCDateTime), Column("hard", Integer, nullable=False))
champions_t = Table("champions", metadata,
                    Column("id", Integer, primary_key=True, autoincrement=True),
                    Column("symbol", String(64), nullable=False, index=True),
                    Column("sha256", String(64), nullable=False),
                    Column("stage", String(16), nullable=False),
                    Column("at", UTCDateTime, nullable=False))
strategy_t = Table("strategy_state", metadata, Column("symbol", String(64), primary_key=True),
                   Column("bar_ts", Integer, nullable=False),
                   Column("shape", Text, nullable=False),
                   Column("data", LargeBinary, nullable=False),
                   Column("updated_at", UTCDateTime, nullable=False))
bars_t = Table(  # every live bar stepped, with the decision taken on it (append-only)
    "bars", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
    Column("symbol", String(64), nullable=False), Column("ts", BigInteger, nullable=False),
    *(Column(f, Float, nullable=False) for f in ("open", "high", "low", "close", "volume")),
    Column("target", Float, nullable=False), Column("champion", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("symbol", "ts", name="bars_symbol_ts"))
audit_t = Table("audit", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
                Column("at", UTCDateTime, nullable=False), Column("event", String(64), nullable=False),
                Column("detail", Text, nullable=False))
APPEND_ONLY = ("audit", "fills", "executions", "champions", "bars")
BAR_FIELDS = ("ts", "open", "high", "low", "close", "volume")


def _sql_time(at: datetime) -> str:
    """A UTC time as ``UTCDateTime`` stores it in SQLite (naive UTC text, microseconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_sql(table: Table) -> tuple[str, tuple[str, ...]]:
    cols = tuple(c.name for c in table.columns if not (c.primary_key and c.autoincrement is True
                                                        and c.name == "id"))
    return (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
            f"({', '.join('?' * len(cols))})", cols)


# commit_bar's plain SQL, generated from the tables above
_INSERTS = {t.name: _insert_sql(t) for t in (bars_t, strategy_t, orders_t)}
_INSERT = {name: sql for name, (sql, _) in _INSERTS.items()}
_STATE_SET = ("bar_ts", "shape", "data", "updated_at")
_UPDATE_STATE = (f"UPDATE strategy_state SET {', '.join(f'{c} = ?' for c in _STATE_SET)} "
                 "WHERE symbol = ?")


def _row(table: str, values: dict[str, Any]) -> list[Any]:
    """``values`` in the column order of ``_INSERT[table]`` (a missing column is an error)."""
    return [values[c] for c in _INSERTS[table][1]]


def _now() -> datetime:
    return datetime.now(UTC)


def trading_day_window(day: date, roll_hour_utc: int = 0) -> tuple[datetime, datetime]:
    """[start, end) of trading day ``day``: UTC midnight to midnight, or with ``roll_hour_utc``
    h > 0 from h:00 the day before (the fx day, h = 22: the session dated D opens D-1 22:00)."""
    if not 0 <= roll_hour_utc < 24:
        raise StateError(f"roll_hour_utc {roll_hour_utc} must be in 0..23")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if roll_hour_utc:
        start -= timedelta(hours=24 - roll_hour_utc)
    return start, start + timedelta(days=1)


def trading_day(ts: datetime, roll_hour_utc: int = 0) -> date:
    """The trading day ``ts`` falls in (the inverse of ``trading_day_window``)."""
    shifted = _aware(ts, "ts").astimezone(UTC) + timedelta(hours=(24 - roll_hour_utc) % 24)
    return shifted.date()


def _aware(ts: datetime, what: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise StateError(f"{what} {ts!r} must be a timezone-aware datetime (UTC)")
    return ts


def _finite(value: float, what: str, *, positive: bool = False, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise StateError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
        need = "a positive" if positive else "a non-negative" if nonneg else "a finite"
        raise StateError(f"{what} {value!r} must be {need} finite number")
    return v


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise StateError(f"ClOrdID prefix {prefix!r} must be 1-16 letters or digits")


def _order_values(cl_ord_id: str, symbol: str, order: NewOrder, bar_ts: int,
                  at: datetime) -> dict[str, Any]:
    """A checked ``pending_new`` order row."""
    if order.side not in SIDES:
        raise StateError(f"add_order {cl_ord_id}: side {order.side!r} must be buy or sell")
    if not symbol or not isinstance(symbol, str):
        raise StateError(f"add_order {cl_ord_id}: symbol {symbol!r} must be a non-empty string")
    qty = _finite(order.qty, f"add_order {cl_ord_id}: qty", positive=True)
    stop = None if order.stop is None else _finite(order.stop, f"add_order {cl_ord_id}: stop")
    tp = (None if order.take_profit is None
          else _finite(order.take_profit, f"add_order {cl_ord_id}: take_profit"))
    return dict(cl_ord_id=cl_ord_id, symbol=symbol, side=order.side, qty=qty, stop=stop,
                take_profit=tp, status="pending_new", filled_qty=0.0, avg_px=None,
                bar_ts=int(bar_ts), reason=str(order.reason), origin="emp", created_at=at,
                updated_at=at)


def _state_values(symbol: str, bar_ts: int, kernel_state: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(kernel_state)
    if arr.dtype != np.float64:
        raise StateError(f"save_strategy_state {symbol}: state must be float64, got {arr.dtype}")
    return dict(bar_ts=int(bar_ts), shape=json.dumps(list(arr.shape)),
                data=np.ascontiguousarray(arr, dtype="<f8").tobytes(), updated_at=_now())


def _order_row(m: Any) -> OrderRow:
    return OrderRow(**{f: m[f] for f in OrderRow.__dataclass_fields__})


class StateStore:
    """One executor's durable state in one SQLite file (see the module docstring).

    ``exclusive=True`` also takes an advisory lock on ``PATH.lock`` for the life of the store:
    the executor is a singleton (two instances would duplicate orders), readers need no lock."""

    def __init__(self, path: Path, *, exclusive: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        # The singleton writer mirrors what only it writes (positions, orders) in memory,
        # updated inside each write transaction and dropped when one fails: the bar path
        # reads them several times per bar. Readers (exclusive=False) always query.
        self._caching = exclusive
        self._pos: dict[str, float] | None = None
        self._open: dict[str, OrderRow] | None = None
        self._hot: Any = None  # commit_bar's DBAPI connection
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state store {self.path}: cannot create its directory: "
                             f"{exc.strerror}") from None
        if exclusive:
            self._take_lock()
        self._engine = self._open_engine()
        try:
            self._check_schema()
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ---------------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateError(f"state store {self.path} is in use by another executor (pid "
                             f"{holder}): only one may trade from it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _open_engine(self) -> Engine:
        engine = create_engine(f"sqlite:///{self.path}",
                               connect_args={"timeout": BUSY_TIMEOUT_S,
                                             "check_same_thread": False})

        def pragmas(cur: Any) -> None:
            mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"state store {self.path}: WAL mode refused (journal_mode "
                                 f"{mode}); put it on a local filesystem")
            cur.execute("PRAGMA synchronous=FULL")

        sqlite_transactions(engine, pragmas)
        return engine

    def close(self) -> None:
        """Release the connections and the singleton lock (idempotent)."""
        hot, self._hot = getattr(self, "_hot", None), None
        if hot is not None:
            hot.close()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _tx(self, what: str, write: bool = True) -> Iterator[Connection]:
        """One transaction, committed on leaving; database failures become one-line errors."""
        with self._lock:
            try:
                eng = self._engine.execution_options(emp_write=write)
                with eng.begin() as conn:
                    yield conn
            except StateError:
                self._drop_cache()
                raise
            except SQLAlchemyError as exc:
                self._drop_cache()
                detail = mask_text(str(getattr(exc, "orig", None) or exc).splitlines()[0])
                raise StateError(f"state store {self.path}: {what} failed: {detail}") from None
            except BaseException:
                self._drop_cache()
                raise

    def _drop_cache(self) -> None:
        self._pos = self._open = None

    def _note_order(self, conn: Connection, cl_ord_id: str) -> None:
        """Mirror one order's committed-to-be row (inside the writing transaction)."""
        if self._open is None:
            return
        row = self._get_order(conn, cl_ord_id)
        if row is not None and row.status in OPEN_STATUSES:
            self._open[cl_ord_id] = row
        else:
            self._open.pop(cl_ord_id, None)

    def _check_schema(self) -> None:
        with self._tx("open") as conn:
            version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
            tables = {r[0] for r in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if version == 0 and not tables:
                self._create(conn)
                return
            fmt = None
            if "meta" in tables:
                fmt = conn.execute(select(meta_t.c.value).where(meta_t.c.key == "format")
                                   ).scalar_one_or_none()
            if fmt != FORMAT:
                raise StateError(f"state store {self.path}: not an EMP live state store "
                                 f"(another database is in this file)")
            if version == 1:  # 1 -> 2: add the bars table
                bars_t.create(conn)
                self._append_only(conn, "bars")
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._audit(conn, "store_migrated", "schema version 1 -> 2 (bars)")
                return
            if version > SCHEMA_VERSION:
                raise StateError(f"state store {self.path}: schema version {version} was written "
                                 f"by a newer EMP; this build reads version {SCHEMA_VERSION}")
            if version != SCHEMA_VERSION:
                raise StateError(f"state store {self.path}: schema version {version}, expected "
                                 f"{SCHEMA_VERSION}")

    def _create(self, conn: Connection) -> None:
        metadata.create_all(conn)
        for table in APPEND_ONLY:
            self._append_only(conn, table)
        now = _now()
        conn.execute(insert(meta_t), [
            {"key": "format", "value": FORMAT},
            {"key": "store_id", "value": secrets.token_hex(4)},
            {"key": "created_at", "value": now.isoformat()},
            {"key": "cl_ord_seq", "value": "0"},
            {"key": "peak_equity", "value": ""},
        ])
        conn.execute(insert(breaker_t).values(id=1, open=0, reason=None, since=None, hard=0))
        conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._audit(conn, "store_created", f"schema version {SCHEMA_VERSION}")

    @staticmethod
    def _append_only(conn: Connection, table: str) -> None:
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")

    def settings(self) -> dict[str, Any]:
        """The SQLite settings the store runs with (journal mode, synchronous level, version)."""
        with self._tx("settings", write=False) as conn:
            return {"journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar_one(),
                    "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar_one(),
                    "user_version": conn.exec_driver_sql("PRAGMA user_version").scalar_one()}

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _meta(conn: Connection, key: str) -> str:
        return conn.execute(select(meta_t.c.value).where(meta_t.c.key == key)).scalar_one()

    @staticmethod
    def _set_meta(conn: Connection, key: str, value: str) -> None:
        conn.execute(update(meta_t).where(meta_t.c.key == key).values(value=value))

    @staticmethod
    def _audit(conn: Connection, event_: str, detail: str) -> None:
        conn.execute(insert(audit_t).values(at=_now(), event=event_, detail=mask_text(detail)))

    @staticmethod
    def _get_order(conn: Connection, cl_ord_id: str) -> OrderRow | None:
        m = conn.execute(select(orders_t).where(orders_t.c.cl_ord_id == cl_ord_id)
                         ).mappings().first()
        return None if m is None else _order_row(m)

    def _add_units(self, conn: Connection, symbol: str, delta: float, now: datetime) -> float:
        cur = conn.execute(select(positions_t.c.units).where(positions_t.c.symbol == symbol)
                           ).scalar_one_or_none()
        units = (cur or 0.0) + delta
        if abs(units) < _QTY_TOL:
            units = 0.0
        if cur is None:
            conn.execute(insert(positions_t).values(symbol=symbol, units=units, updated_at=now))
        else:
            conn.execute(update(positions_t).where(positions_t.c.symbol == symbol)
                         .values(units=units, updated_at=now))
        if self._pos is not None:
            self._pos[symbol] = units
        return units

    # ---- orders ------------------------------------------------------------------------------
    def next_cl_ord_id(self, prefix: str = "EMP") -> str:
        """A ClOrdID never used before by this store, nor by a store created before or after
        it (the store's random id is part of it): ``PREFIX-STOREID-N``."""
        _check_prefix(prefix)
        with self._tx("next_cl_ord_id") as conn:
            n = int(self._meta(conn, "cl_ord_seq")) + 1
            self._set_meta(conn, "cl_ord_seq", str(n))
            return f"{prefix}-{self._meta(conn, 'store_id')}-{n}"

    def add_order(self, *, cl_ord_id: str, symbol: str, side: str, qty: float,
                  stop: float | None, take_profit: float | None, bar_ts: int, reason: str,
                  now: datetime | None = None) -> OrderRow:
        """Record an order as ``pending_new`` (committed) before it is sent. ``now``: the
        creation time (default the wall clock; a replay may pass its simulated clock)."""
        if not cl_ord_id or not isinstance(cl_ord_id, str):
            raise StateError(f"add_order: ClOrdID {cl_ord_id!r} must be a non-empty string")
        at = _now() if now is None else _aware(now, f"add_order {cl_ord_id}: now")
        order = NewOrder(side, qty, stop, take_profit, reason)
        row = _order_values(cl_ord_id, symbol, order, bar_ts, at)
        with self._tx(f"add_order {cl_ord_id}") as conn:
            return self._insert_order(conn, row)

    def _insert_order(self, conn: Connection, row: dict[str, Any]) -> OrderRow:
        cl_ord_id = row["cl_ord_id"]
        if self._get_order(conn, cl_ord_id) is not None:
            raise StateError(f"add_order: ClOrdID {cl_ord_id} already exists in "
                             f"{self.path}; ClOrdIDs are never reused")
        conn.execute(insert(orders_t).values(**row))
        out = OrderRow(**row)
        if self._open is not None:
            self._open[cl_ord_id] = out
        return out

    def commit_bar(self, bar: BarRow, kernel_state: np.ndarray,
                   orders: list[NewOrder] = (), *, prefix: str = "EMP") -> list[OrderRow]:
        """One transaction for a bar: the bar and its decision (append-only), the strategy's
        state after it, and the orders that bring the position to the target, each with a new
        ClOrdID as ``pending_new``. Committed before any of those orders is sent, in one
        fsync instead of one per step (see ``_raw_tx`` for why it is plain SQL)."""
        _check_prefix(prefix)
        values = {f: _finite(getattr(bar, f), f"commit_bar {bar.symbol}: {f}")
                  for f in ("open", "high", "low", "close", "volume", "target")}
        state = _state_values(bar.symbol, bar.ts, kernel_state)
        at = _now()
        stamp = _sql_time(at)
        with self._raw_tx(f"commit_bar {bar.symbol} {bar.ts}") as cur:
            cur.execute(_INSERT["bars"], _row("bars", dict(
                symbol=bar.symbol, ts=int(bar.ts), champion=bar.champion, at=stamp, **values)))
            srow = {**state, "symbol": bar.symbol, "updated_at": stamp}
            cur.execute(_UPDATE_STATE, [srow[c] for c in _STATE_SET] + [bar.symbol])
            if cur.rowcount == 0:
                cur.execute(_INSERT["strategy_state"], _row("strategy_state", srow))
            rows = self._raw_new_orders(cur, bar.symbol, bar.ts, orders, prefix, at)
        return self._opened(rows)

    def add_orders(self, symbol: str, bar_ts: int, orders: list[NewOrder], *,
                   prefix: str = "EMP") -> list[OrderRow]:
        """Create ``orders`` (new ClOrdIDs, ``pending_new``) in one transaction."""
        _check_prefix(prefix)
        if not orders:
            return []
        with self._raw_tx(f"add_orders {symbol}") as cur:
            rows = self._raw_new_orders(cur, symbol, bar_ts, orders, prefix, _now())
        return self._opened(rows)

    @contextmanager
    def _raw_tx(self, what: str) -> Iterator[sqlite3.Cursor]:
        """One write transaction as plain SQL on the store's own DBAPI connection (the
        engine's pragmas; checked out of its pool for the store's life): the bar path's
        commits, about 0.2 ms and one fsync where the same statements through SQLAlchemy
        Core take 1.4 ms here. The SQL is generated from the table definitions; every other
        method, and every reader, goes through Core."""
        with self._lock:
            if self._hot is None:
                self._hot = self._engine.raw_connection()
            cur = self._hot.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                self._drop_cache()
                if isinstance(exc, sqlite3.Error):
                    detail = mask_text(str(exc).splitlines()[0])
                    raise StateError(f"state store {self.path}: {what} failed: {detail}"
                                     ) from None
                raise

    @staticmethod
    def _raw_new_orders(cur: sqlite3.Cursor, symbol: str, bar_ts: int, orders: list[NewOrder],
                        prefix: str, at: datetime) -> list[OrderRow]:
        """Insert ``orders`` with the next ClOrdIDs (``PREFIX-STOREID-N``) inside ``cur``'s
        transaction and advance the counter."""
        if not orders:
            return []
        meta = dict(cur.execute(
            "SELECT key, value FROM meta WHERE key IN ('cl_ord_seq', 'store_id')"))
        n, sid = int(meta["cl_ord_seq"]), meta["store_id"]
        stamp = _sql_time(at)
        rows = []
        for order in orders:
            n += 1
            row = _order_values(f"{prefix}-{sid}-{n}", symbol, order, bar_ts, at)
            cur.execute(_INSERT["orders"], _row("orders", {**row, "created_at": stamp,
                                                           "updated_at": stamp}))
            rows.append(OrderRow(**row))
        cur.execute("UPDATE meta SET value = ? WHERE key = 'cl_ord_seq'", (str(n),))
        return rows

    def _opened(self, rows: list[OrderRow]) -> list[OrderRow]:
        """Committed new orders into the writer's mirror."""
        if self._open is not None:
            self._open.update((r.cl_ord_id, r) for r in rows)
        return rows

    def bars(self, symbol: str, *, since_ts: int | None = None,
             until_ts: int | None = None) -> list[BarRow]:
        """The live bars of ``symbol`` with ``since_ts < ts <= until_ts``, in time order."""
        q = select(bars_t).where(bars_t.c.symbol == symbol).order_by(bars_t.c.ts)
        if since_ts is not None:
            q = q.where(bars_t.c.ts > int(since_ts))
        if until_ts is not None:
            q = q.where(bars_t.c.ts <= int(until_ts))
        with self._tx("bars", write=False) as conn:
            return [BarRow(**{f: m[f] for f in BarRow.__dataclass_fields__})
                    for m in conn.execute(q).mappings()]

    def mark_sent(self, *cl_ord_ids: str) -> None:
        """pending_new -> sent (the NewOrderSingles left), in one transaction; later states
        are kept as they are."""
        with self._tx(f"mark_sent {' '.join(cl_ord_ids)}") as conn:
            for cl_ord_id in cl_ord_ids:
                order = self._get_order(conn, cl_ord_id)
                if order is None:
                    raise StateError(f"mark_sent: unknown ClOrdID {cl_ord_id!r}")
                if order.status == "pending_new":
                    conn.execute(update(orders_t).where(orders_t.c.cl_ord_id == cl_ord_id)
                                 .values(status="sent", updated_at=_now()))
                    self._note_order(conn, cl_ord_id)

    def set_order_status(self, cl_ord_id: str, status: str, *, reason: str) -> None:
        """Set an order's status from recovery (e.g. a pending_new order the venue does not
        know: ``rejected``; an order of unknown fate: ``unknown``); audited."""
        if status not in STATUSES:
            raise StateError(f"set_order_status {cl_ord_id}: status {status!r} is not one of "
                             f"{list(STATUSES)}")
        with self._tx(f"set_order_status {cl_ord_id}") as conn:
            order = self._get_order(conn, cl_ord_id)
            if order is None:
                raise StateError(f"set_order_status: unknown ClOrdID {cl_ord_id!r}")
            conn.execute(update(orders_t).where(orders_t.c.cl_ord_id == cl_ord_id)
                         .values(status=status, updated_at=_now()))
            self._note_order(conn, cl_ord_id)
            self._audit(conn, "order_status",
                        f"{cl_ord_id}: {order.status} -> {status} ({reason})")

    def apply_execution(self, *, cl_ord_id: str, exec_id: str, exec_type: str,
                        ord_status: str, last_qty: float, last_px: float, cum_qty: float,
                        avg_px: float, ts: datetime, symbol: str | None = None,
                        side: str | None = None) -> FillRow | None:
        """Apply one ExecutionReport (FIX codes for ExecType/OrdStatus; quantities in units).

        Idempotent per (ClOrdID, ExecID): a resent report changes nothing and returns None.
        A trade (ExecType F) with LastQty > 0 adds a fill and moves the position by it, signed
        by side, and returns the fill; other reports only move the order's status forward.
        The order's filled_qty and avg_px are those of our fills (a venue CumQty that disagrees
        is audited, never copied). A stop-loss/take-profit exit the venue created
        (``<ClOrdID>-SL`` / ``-TP``) becomes an order of origin "venue" on the parent's symbol,
        opposite side; any other unknown ClOrdID needs ``symbol`` and ``side``."""
        where = f"apply_execution {cl_ord_id}/{exec_id}"
        if not exec_id or not cl_ord_id:
            raise StateError(f"{where}: ClOrdID and ExecID must be non-empty")
        last_qty = _finite(last_qty, f"{where}: last_qty", nonneg=True)
        last_px = _finite(last_px, f"{where}: last_px")
        cum_qty = _finite(cum_qty, f"{where}: cum_qty", nonneg=True)
        avg_px = _finite(avg_px, f"{where}: avg_px")
        ts = _aware(ts, f"{where}: ts")
        if ord_status in ORD_STATUS:
            new_status = ORD_STATUS[ord_status]
        elif ord_status in STATUSES:
            new_status = ord_status
        else:
            raise StateError(f"{where}: unknown OrdStatus {ord_status!r}")
        is_trade = exec_type in TRADE_EXEC_TYPES and last_qty > 0
        if is_trade and last_px <= 0:
            raise StateError(f"{where}: a fill at price {last_px} is not possible")
        now = _now()
        with self._tx(where) as conn:
            key = (executions_t.c.cl_ord_id == cl_ord_id) & (executions_t.c.exec_id == exec_id)
            if conn.execute(select(executions_t.c.exec_id).where(key)).first() is not None:
                return None
            order = self._get_order(conn, cl_ord_id) or self._child_order(
                conn, cl_ord_id, symbol, side, max(cum_qty, last_qty), ts, where)
            conn.execute(insert(executions_t).values(
                cl_ord_id=cl_ord_id, exec_id=exec_id, exec_type=exec_type,
                ord_status=ord_status, last_qty=last_qty, last_px=last_px, cum_qty=cum_qty,
                avg_px=avg_px, ts=ts, applied_at=now))
            if exec_type in CORRECTION_EXEC_TYPES:
                self._audit(conn, "trade_correction_ignored",
                            f"{cl_ord_id}/{exec_id} ExecType {exec_type}: not applied; "
                            "reconcile with the venue")
                return None
            values: dict[str, Any] = {"updated_at": now}
            if new_status is not None and order.status not in TERMINAL and (
                    _RANK[new_status] >= _RANK[order.status]):
                values["status"] = new_status
            fill = None
            filled = order.filled_qty
            if is_trade:
                filled = order.filled_qty + last_qty
                old_px = order.avg_px or 0.0
                values["avg_px"] = (old_px * order.filled_qty + last_px * last_qty) / filled
                values["filled_qty"] = filled
                if order.origin == "venue" and filled > order.qty:
                    values["qty"] = filled
                conn.execute(insert(fills_t).values(
                    cl_ord_id=cl_ord_id, exec_id=exec_id, symbol=order.symbol,
                    side=order.side, qty=last_qty, px=last_px, ts=ts))
                sign = 1.0 if order.side == "buy" else -1.0
                self._add_units(conn, order.symbol, sign * last_qty, now)
                fill = FillRow(exec_id=exec_id, cl_ord_id=cl_ord_id, symbol=order.symbol,
                               side=order.side, qty=last_qty, px=last_px, ts=ts)
            conn.execute(update(orders_t).where(orders_t.c.cl_ord_id == cl_ord_id)
                         .values(**values))
            self._note_order(conn, cl_ord_id)
            if cum_qty > 0 and abs(cum_qty - filled) > _QTY_TOL * max(1.0, cum_qty):
                self._audit(conn, "cum_qty_mismatch",
                            f"{cl_ord_id}/{exec_id}: venue CumQty {cum_qty:g}, our fills "
                            f"{filled:g} (a report lost or out of order)")
            return fill

    def _child_order(self, conn: Connection, cl_ord_id: str, symbol: str | None,
                     side: str | None, qty: float, ts: datetime, where: str) -> OrderRow:
        """The order row of a venue-created exit (``-SL``/``-TP``) or a named foreign order."""
        parent = None
        for suffix in CHILD_SUFFIXES:
            if cl_ord_id.endswith(suffix):
                parent = self._get_order(conn, cl_ord_id[: -len(suffix)])
                break
        if parent is not None:
            symbol = symbol or parent.symbol
            side = side or ("sell" if parent.side == "buy" else "buy")
        if symbol is None or side not in SIDES:
            raise StateError(f"{where}: unknown ClOrdID and no symbol/side to attribute it; "
                             "reconcile with the venue")
        row = dict(cl_ord_id=cl_ord_id, symbol=symbol, side=side, qty=qty, stop=None,
                   take_profit=None, status="new", filled_qty=0.0, avg_px=None,
                   bar_ts=parent.bar_ts if parent else 0,
                   reason=f"venue exit of {parent.cl_ord_id}" if parent else "venue order",
                   origin="venue", created_at=ts, updated_at=ts)
        conn.execute(insert(orders_t).values(**row))
        return OrderRow(**row)

    def order(self, cl_ord_id: str) -> OrderRow | None:
        with self._tx("order", write=False) as conn:
            return self._get_order(conn, cl_ord_id)

    def open_orders(self) -> list[OrderRow]:
        """Orders that may still be live at the venue: pending_new, sent, unknown (fate not yet
        resolved after a crash), new, partially_filled; oldest first."""
        if self._open is not None:
            return sorted(self._open.values(), key=lambda o: (o.created_at, o.cl_ord_id))
        with self._tx("open_orders", write=False) as conn:
            rows = conn.execute(select(orders_t).where(orders_t.c.status.in_(OPEN_STATUSES))
                                .order_by(orders_t.c.created_at, orders_t.c.cl_ord_id)).mappings()
            out = [_order_row(m) for m in rows]
            if self._caching:
                self._open = {o.cl_ord_id: o for o in out}
            return out

    def fills(self, cl_ord_id: str | None = None) -> list[FillRow]:
        """Fills in time order, of one order or all."""
        q = select(fills_t).order_by(fills_t.c.ts, fills_t.c.exec_id)
        if cl_ord_id is not None:
            q = q.where(fills_t.c.cl_ord_id == cl_ord_id)
        with self._tx("fills", write=False) as conn:
            return [FillRow(**{f: m[f] for f in FillRow.__dataclass_fields__})
                    for m in conn.execute(q).mappings()]

    # ---- positions and equity ----------------------------------------------------------------
    def position(self, symbol: str) -> float:
        if self._pos is not None:
            return self._pos.get(symbol, 0.0)
        with self._tx("position", write=False) as conn:
            rows = dict(conn.execute(select(positions_t.c.symbol, positions_t.c.units)).all())
            if self._caching:
                self._pos = {s: float(u) for s, u in rows.items()}
            return float(rows.get(symbol) or 0.0)

    def positions(self) -> dict[str, float]:
        """Every symbol with a non-zero position."""
        with self._tx("positions", write=False) as conn:
            return {s: float(u) for s, u in conn.execute(
                select(positions_t.c.symbol, positions_t.c.units)) if u != 0.0}

    def set_position(self, symbol: str, units: float, *, reason: str,
                     who: str | None = None) -> None:
        """Overwrite a position: only from an explicit operator action, audited (old -> new)."""
        units = _finite(units, f"set_position {symbol}: units")
        if not reason or not reason.strip():
            raise StateError(f"set_position {symbol}: a reason is required")
        who = who or getpass.getuser()
        with self._tx(f"set_position {symbol}") as conn:
            old = conn.execute(select(positions_t.c.units).where(positions_t.c.symbol == symbol)
                               ).scalar_one_or_none() or 0.0
            self._add_units(conn, symbol, units - old, _now())
            self._audit(conn, "set_position",
                        f"{symbol}: {old:g} -> {units:g} units by {who}: {reason}")

    def record_equity(self, ts: datetime, equity: float) -> None:
        """Append an equity observation; the running peak (since the last breaker reset)
        moves with it."""
        ts = _aware(ts, "record_equity: ts")
        equity = _finite(equity, "record_equity: equity")
        with self._tx("record_equity") as conn:
            conn.execute(insert(equity_t).values(ts=ts, equity=equity))
            peak = self._meta(conn, "peak_equity")
            if peak == "" or equity > float(peak):
                self._set_meta(conn, "peak_equity", repr(equity))

    def peak_equity(self) -> float | None:
        """The highest equity recorded since the store began or the breaker was last reset
        (a reset re-bases the drawdown, or the breaker would trip again at once)."""
        with self._tx("peak_equity", write=False) as conn:
            peak = self._meta(conn, "peak_equity")
            return None if peak == "" else float(peak)

    def day_stats(self, day: date, *, roll_hour_utc: int = 0) -> tuple[int, float | None]:
        """(orders we created that day and the venue did not reject, equity at day start).

        The day is ``trading_day_window(day, roll_hour_utc)``. Equity at day start is the last
        observation before the window opens, else the first inside it, else None."""
        start, end = trading_day_window(day, roll_hour_utc)
        with self._tx("day_stats", write=False) as conn:
            trades = conn.execute(select(func.count()).select_from(orders_t).where(
                (orders_t.c.created_at >= start) & (orders_t.c.created_at < end)
                & (orders_t.c.origin == "emp") & (orders_t.c.status != "rejected"))).scalar_one()
            eq = conn.execute(select(equity_t.c.equity).where(equity_t.c.ts <= start)
                              .order_by(equity_t.c.ts.desc(), equity_t.c.id.desc()).limit(1)
                              ).scalar_one_or_none()
            if eq is None:
                eq = conn.execute(select(equity_t.c.equity).where(
                    (equity_t.c.ts >= start) & (equity_t.c.ts < end))
                    .order_by(equity_t.c.ts, equity_t.c.id).limit(1)).scalar_one_or_none()
            return int(trades), None if eq is None else float(eq)

    # ---- circuit breaker ---------------------------------------------------------------------
    def risk_state(self) -> tuple[BreakerState, float | None]:
        """The breaker and the equity peak in one read (both change from outside the executor:
        ``emp live reset-breaker``): what the bar path reads once per bar."""
        with self._tx("risk_state", write=False) as conn:
            m = conn.execute(select(breaker_t).where(breaker_t.c.id == 1)).mappings().one()
            peak = self._meta(conn, "peak_equity")
        return (BreakerState(open=bool(m["open"]), reason=m["reason"], since=m["since"],
                             hard=bool(m["hard"])), None if peak == "" else float(peak))

    def breaker(self) -> BreakerState:
        with self._tx("breaker", write=False) as conn:
            m = conn.execute(select(breaker_t).where(breaker_t.c.id == 1)).mappings().one()
            return BreakerState(open=bool(m["open"]), reason=m["reason"], since=m["since"],
                                hard=bool(m["hard"]))

    def trip(self, reason: str, *, hard: bool = False) -> None:
        """Open the breaker (persisted, survives restarts). Already open: the first reason and
        time stay, a hard stop still upgrades it; every trip is audited."""
        if not reason or not reason.strip():
            raise StateError("trip: a reason is required")
        with self._tx("trip") as conn:
            m = conn.execute(select(breaker_t).where(breaker_t.c.id == 1)).mappings().one()
            if not m["open"]:
                conn.execute(update(breaker_t).where(breaker_t.c.id == 1).values(
                    open=1, reason=reason, since=_now(), hard=int(hard)))
            elif hard and not m["hard"]:
                conn.execute(update(breaker_t).where(breaker_t.c.id == 1).values(
                    hard=1, reason=reason))
            self._audit(conn, "breaker_trip", f"{'hard stop: ' if hard else ''}{reason}"
                        + (" (already open)" if m["open"] else ""))

    def reset_breaker(self, *, who: str, reason: str, hard: bool = False) -> None:
        """Close the breaker: an operator's decision, audited with who and why. A hard stop
        needs ``hard=True`` as well. The equity peak restarts from the next observation."""
        if not who or not who.strip() or not reason or not reason.strip():
            raise StateError("reset_breaker: who and a reason are both required")
        with self._tx("reset_breaker") as conn:
            m = conn.execute(select(breaker_t).where(breaker_t.c.id == 1)).mappings().one()
            if m["hard"] and not hard:
                raise StateError(f"reset_breaker: the breaker is a hard stop ({m['reason']}); "
                                 "resetting it needs the explicit hard-stop confirmation")
            conn.execute(update(breaker_t).where(breaker_t.c.id == 1).values(
                open=0, reason=None, since=None, hard=0))
            self._set_meta(conn, "peak_equity", "")
            was = f"open since {m['since']:%Y-%m-%d %H:%M:%S}Z: {m['reason']}" if m["open"] \
                else "was closed"
            self._audit(conn, "breaker_reset", f"by {who}: {reason} ({was})")

    # ---- champion and strategy state ---------------------------------------------------------
    def set_champion(self, *, sha256: str, symbol: str, stage: str) -> None:
        """Record the champion bundle now trading ``symbol`` (history kept for rollback)."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise StateError(f"set_champion {symbol}: sha256 {sha256!r} is not 64 lowercase hex")
        if stage not in STAGES:
            raise StateError(f"set_champion {symbol}: stage {stage!r} is not one of {list(STAGES)}")
        with self._tx(f"set_champion {symbol}") as conn:
            conn.execute(insert(champions_t).values(symbol=symbol, sha256=sha256, stage=stage,
                                                    at=_now()))
            self._audit(conn, "champion", f"{symbol}: {sha256} ({stage})")

    def champion(self, symbol: str) -> str | None:
        """The sha256 of the bundle last set for ``symbol``."""
        hist = self.champion_history(symbol, limit=1)
        return hist[-1][1] if hist else None

    def champion_history(self, symbol: str, limit: int = 10) -> list[tuple[datetime, str, str]]:
        """The last ``limit`` champions of ``symbol``, oldest first: (at, sha256, stage)."""
        with self._tx("champion", write=False) as conn:
            rows = conn.execute(select(champions_t.c.at, champions_t.c.sha256, champions_t.c.stage)
                                .where(champions_t.c.symbol == symbol)
                                .order_by(champions_t.c.id.desc()).limit(limit)).all()
            return [(r[0], r[1], r[2]) for r in reversed(rows)]

    def save_strategy_state(self, symbol: str, bar_ts: int, kernel_state: np.ndarray) -> None:
        """Keep the kernel's state record after bar ``bar_ts`` (float64 bytes + shape)."""
        values = _state_values(symbol, bar_ts, kernel_state)
        with self._tx(f"save_strategy_state {symbol}") as conn:
            self._put_state(conn, symbol, values)

    @staticmethod
    def _put_state(conn: Connection, symbol: str, values: dict[str, Any]) -> None:
        done = conn.execute(update(strategy_t).where(strategy_t.c.symbol == symbol)
                            .values(**values)).rowcount
        if not done:
            conn.execute(insert(strategy_t).values(symbol=symbol, **values))

    def strategy_state(self, symbol: str) -> tuple[int, np.ndarray] | None:
        with self._tx("strategy_state", write=False) as conn:
            m = conn.execute(select(strategy_t).where(strategy_t.c.symbol == symbol)
                             ).mappings().first()
        if m is None:
            return None
        try:
            shape = tuple(int(n) for n in json.loads(m["shape"]))
            arr = np.frombuffer(m["data"], dtype="<f8").reshape(shape).astype(np.float64)
        except (ValueError, TypeError) as exc:
            raise StateError(f"state store {self.path}: strategy state of {symbol} is damaged "
                             f"({exc})") from None
        return int(m["bar_ts"]), arr

    # ---- audit -------------------------------------------------------------------------------
    def audit(self, event: str, detail: str) -> None:
        """Append an entry to the audit log (URIs with credentials are masked)."""
        if not event or not isinstance(event, str):
            raise StateError(f"audit: event {event!r} must be a non-empty string")
        with self._tx("audit") as conn:
            self._audit(conn, event, str(detail))

    def audit_log(self, limit: int = 100) -> list[tuple[datetime, str, str]]:
        """The last ``limit`` entries, oldest first: (at, event, detail)."""
        with self._tx("audit_log", write=False) as conn:
            rows = conn.execute(select(audit_t.c.at, audit_t.c.event, audit_t.c.detail)
                                .order_by(audit_t.c.id.desc()).limit(int(limit))).all()
            return [(r[0], r[1], r[2]) for r in reversed(rows)]


__all__ = ["BarRow", "BreakerState", "FillRow", "NewOrder", "OrderRow", "StateError", "StateStore",
           "trading_day", "trading_day_window"]
