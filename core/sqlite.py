"""What EMP's SQL stores share (the champions registry, the live state store): timestamps
that come back timezone-aware UTC, and real SQLite transactions.

SQLAlchemy's documented pysqlite recipe: pysqlite must not BEGIN on its own; we emit BEGIN,
and ``BEGIN IMMEDIATE`` for a connection opened with the execution option ``emp_write``, so a
read-then-write transaction takes the write lock first and a second process waits on the busy
timeout instead of failing halfway.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, TypeDecorator, event
from sqlalchemy.engine import Connection


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out: SQLite stores no offset (naive UTC text, which sorts in
    time order), PostgreSQL returns the session's zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_transactions(engine: Engine, on_connect: Callable[[Any], None] | None = None) -> None:
    """Foreign keys on, BEGIN emitted by us (IMMEDIATE for ``emp_write``); ``on_connect`` gets
    each new connection's cursor for the store's own pragmas and checks."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if on_connect is not None:
                on_connect(cursor)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("emp_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
