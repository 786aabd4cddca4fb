"""The champions registry: which promoted strategy is eligible, on paper, live or retired, and
an append-only audit log of every state change (who, when, why, which bundle).

SQLAlchemy Core over SQLite (the default, one file under the EMP home) or PostgreSQL (a shared
server: ``$EMP_REGISTRY_URL``). The schema is owned by the Alembic migrations in
``champions/migrations``; opening a ``Registry`` upgrades the database to their head.

Rules kept in one transaction per call: a state change updates the champion only if it is still
in the state just read (``UPDATE ... WHERE id=? AND state=?``) and appends exactly one event; at
most one champion per (symbol, timeframe) is live and at most one is paper (a check in the
transaction, and partial unique indexes so concurrent promotions cannot both commit).
SQLite write transactions start with ``BEGIN IMMEDIATE`` and wait on a busy timeout, so two
processes take turns instead of failing.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from core.errors import EmpError
from core.secrets import mask_text, mask_uri
from core.sqlite import UTCDateTime, sqlite_transactions

STATES = ("eligible", "paper", "live", "retired")
ACTIONS = ("register", "promote", "replace", "rollback", "retire", "demote")
# from -> allowed targets; retired -> live only with action "rollback"
ALLOWED: dict[str, tuple[str, ...]] = {
    "eligible": ("paper", "live", "retired"),
    "paper": ("live", "retired", "eligible"),
    "live": ("retired", "paper"),
    "retired": ("live",),
}
EXCLUSIVE_STATES = ("live", "paper")  # at most one per (symbol, timeframe)
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "emp_registry_version"  # not alembic_version: MLflow may share the database
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RegistryError(EmpError, ValueError):
    """A registry problem the user can act on; one line, URL passwords masked."""


@dataclass(frozen=True)
class Champion:
    id: int
    key: str
    symbol: str
    timeframe: str
    run_id: str
    state: str
    bundle_sha256: str
    bundle_path: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    id: int
    champion_id: int
    at: datetime
    who: str
    action: str
    from_state: str | None
    to_state: str
    reason: str
    bundle_sha256: str


# The runtime view of the schema at the migrations' head (the migrations own the DDL).
metadata = MetaData()
champions_table = Table(
    "champions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("timeframe", String(16), nullable=False),
    Column("run_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("bundle_path", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
events_table = Table(
    "champion_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("champion_id", Integer, ForeignKey("champions.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("who", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
)


def default_url(home: Path) -> str:
    """``$EMP_REGISTRY_URL`` if set, else a SQLite file under the EMP home."""
    env = os.environ.get("EMP_REGISTRY_URL", "").strip()
    if env:
        return env
    path = Path(home).expanduser().absolute() / "champions" / "registry.db"
    return f"sqlite:///{path}"


def who() -> str:
    """``user@host`` for the audit log: ``$USER``, else the login name."""
    user = os.environ.get("USER", "").strip()
    if not user:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no passwd entry (a bare container)
            user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now() -> datetime:
    return datetime.now(UTC)


def _reason(exc: BaseException) -> str:
    """The driver's own first line (not SQLAlchemy's SQL dump), credentials masked."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    text = lines[0] if lines else type(orig).__name__
    return mask_text(text)


def _normalise(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean the driver EMP ships: psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Registry:
    """One registry database; every public call is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = _normalise(url.strip())
        self.masked_url = mask_uri(self.url) or ""
        self._engine = open_engine(self.url)
        try:
            upgrade(self._engine)
        except BaseException:
            self._engine.dispose()
            raise

    # ---- connection -------------------------------------------------------------------
    def _fail(self, what: str, exc: BaseException | None = None) -> RegistryError:
        detail = f": {_reason(exc)}" if exc is not None else ""
        return RegistryError(f"registry {self.masked_url}: {what}{detail}")

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        """One transaction; database failures become a one-line RegistryError."""
        engine = self._engine.execution_options(emp_write=True) if write else self._engine
        try:
            with engine.begin() as conn:
                yield conn
        except RegistryError:
            raise
        except IntegrityError as exc:
            raise self._fail("a concurrent change conflicts with this one (another champion "
                             "took the state meanwhile); retry", exc) from None
        except SQLAlchemyError as exc:
            raise self._fail("database error", exc) from None

    # ---- reads ------------------------------------------------------------------------
    def get(self, champion_id: int) -> Champion:
        with self._tx() as conn:
            return self._get(conn, champion_id)

    def _get(self, conn: Connection, champion_id: int) -> Champion:
        row = conn.execute(select(champions_table).where(
            champions_table.c.id == champion_id)).mappings().first()
        if row is None:
            raise self._fail(f"no champion #{champion_id}")
        return _champion(row)

    def find(self, run_id: str, key: str) -> Champion | None:
        with self._tx() as conn:
            return self._find(conn, run_id, key)

    def _find(self, conn: Connection, run_id: str, key: str) -> Champion | None:
        c = champions_table.c
        row = conn.execute(select(champions_table).where(
            c.run_id == run_id, c.key == key)).mappings().first()
        return None if row is None else _champion(row)

    def champions(self, *, symbol: str | None = None,
                  state: str | None = None) -> list[Champion]:
        query = select(champions_table).order_by(champions_table.c.id)
        if symbol is not None:
            query = query.where(champions_table.c.symbol == symbol)
        if state is not None:
            self._check_state(state)
            query = query.where(champions_table.c.state == state)
        with self._tx() as conn:
            return [_champion(r) for r in conn.execute(query).mappings()]

    def events(self, *, champion_id: int | None = None,
               symbol: str | None = None) -> list[Event]:
        query = select(events_table).order_by(events_table.c.id)
        if champion_id is not None:
            query = query.where(events_table.c.champion_id == champion_id)
        if symbol is not None:
            query = query.join(champions_table,
                               champions_table.c.id == events_table.c.champion_id)
            query = query.where(champions_table.c.symbol == symbol)
        with self._tx() as conn:
            return [_event(r) for r in conn.execute(query).mappings()]

    def current(self, symbol: str, timeframe: str, state: str = "live") -> Champion | None:
        self._check_state(state)
        with self._tx() as conn:
            found = self._holders(conn, symbol, timeframe, state)
        return found[-1] if found else None

    def _holders(self, conn: Connection, symbol: str, timeframe: str,
                 state: str) -> list[Champion]:
        c = champions_table.c
        rows = conn.execute(select(champions_table).where(
            c.symbol == symbol, c.timeframe == timeframe, c.state == state).order_by(c.id))
        return [_champion(r) for r in rows.mappings()]

    def rollback_target(self, symbol: str, timeframe: str) -> Champion | None:
        """The champion most recently displaced from live by a "replace" event, if that event
        is still its last one (not retired deliberately later, not already restored)."""
        with self._tx() as conn:
            return self._rollback_target(conn, symbol, timeframe)

    def _rollback_target(self, conn: Connection, symbol: str,
                         timeframe: str) -> Champion | None:
        best: tuple[int, Champion] | None = None
        for champ in self._holders(conn, symbol, timeframe, "retired"):
            last = conn.execute(select(events_table).where(
                events_table.c.champion_id == champ.id).order_by(
                events_table.c.id.desc()).limit(1)).mappings().first()
            if (last is not None and last["action"] == "replace"
                    and last["from_state"] == "live" and (best is None or last["id"] > best[0])):
                best = (last["id"], champ)
        return None if best is None else best[1]

    # ---- writes -----------------------------------------------------------------------
    def register(self, *, key: str, symbol: str, timeframe: str, run_id: str,
                 bundle_sha256: str, bundle_path: str, who: str, reason: str) -> Champion:
        """A new eligible champion and its "register" event; the same (run_id, key) again
        returns the existing row and writes nothing."""
        for name, value in (("key", key), ("symbol", symbol), ("timeframe", timeframe),
                            ("run_id", run_id), ("bundle_path", bundle_path), ("who", who)):
            self._check_text(name, value)
        self._check_text("reason", reason, empty_ok=True)
        self._check_sha(bundle_sha256)
        try:
            with self._tx(write=True) as conn:
                existing = self._find(conn, run_id, key)
                if existing is not None:
                    return existing
                now = _now()
                new_id = conn.execute(insert(champions_table).values(
                    key=key, symbol=symbol, timeframe=timeframe, run_id=run_id,
                    state="eligible", bundle_sha256=bundle_sha256, bundle_path=bundle_path,
                    created_at=now, updated_at=now).returning(champions_table.c.id)).scalar_one()
                conn.execute(insert(events_table).values(
                    champion_id=new_id, at=now, who=who, action="register", from_state=None,
                    to_state="eligible", reason=reason, bundle_sha256=bundle_sha256))
                return self._get(conn, new_id)
        except RegistryError:
            found = self.find(run_id, key)  # registered by another process meanwhile
            if found is None:
                raise
            return found

    def transition(self, champion_id: int, to_state: str, *, action: str, who: str,
                   reason: str, bundle_sha256: str | None = None,
                   bundle_path: str | None = None,
                   expected_state: str | None = None) -> Event:
        """Move one champion to ``to_state`` and log it, in one transaction.

        Entering live or paper retires the holder of that state for the same symbol and
        timeframe first (action "replace"; "rollback" when this is a rollback).
        ``expected_state``: the state the caller showed its user; refused if it changed since.
        """
        self._check_state(to_state)
        if action not in ACTIONS or action == "register":
            raise self._fail(f"action {action!r} is not one of "
                             f"{', '.join(a for a in ACTIONS if a != 'register')}")
        self._check_text("who", who)
        self._check_text("reason", reason, empty_ok=True)
        if bundle_sha256 is not None:
            self._check_sha(bundle_sha256)
        if bundle_path is not None:
            self._check_text("bundle_path", bundle_path)
        with self._tx(write=True) as conn:
            champ = self._get(conn, champion_id)
            if expected_state is not None and champ.state != expected_state:
                raise self._fail(f"champion #{champion_id} changed meanwhile: it is "
                                 f"{champ.state}, not {expected_state}")
            self._check_move(champ, to_state, action)
            if to_state in EXCLUSIVE_STATES:
                for other in self._holders(conn, champ.symbol, champ.timeframe, to_state):
                    if other.id == champ.id:
                        continue
                    displaced = "rollback" if action == "rollback" else "replace"
                    why = ("rolled back to" if displaced == "rollback" else "replaced by")
                    self._move(conn, other, "retired", action=displaced, who=who,
                               reason=f"{why} champion #{champ.id}")
            return self._move(conn, champ, to_state, action=action, who=who, reason=reason,
                              bundle_sha256=bundle_sha256, bundle_path=bundle_path)

    def rollback(self, symbol: str, timeframe: str, *, who: str,
                 reason: str) -> tuple[Champion, Champion]:
        """Retire the live champion and restore ``rollback_target`` in one transaction (both
        events have action "rollback"). Returns (retired, restored) as they are now."""
        self._check_text("who", who)
        self._check_text("reason", reason, empty_ok=True)
        with self._tx(write=True) as conn:
            live = self._holders(conn, symbol, timeframe, "live")
            if not live:
                raise self._fail(f"nothing is live for {symbol} {timeframe}: no rollback "
                                 f"(restore one with transition(..., 'live', action='rollback'))")
            target = self._rollback_target(conn, symbol, timeframe)
            if target is None:
                raise self._fail(f"no earlier live champion of {symbol} {timeframe} to roll "
                                 "back to")
            for champ in live:  # retire first: the one-live index holds at every statement
                self._move(conn, champ, "retired", action="rollback", who=who, reason=reason)
            self._move(conn, target, "live", action="rollback", who=who, reason=reason)
            return self._get(conn, live[-1].id), self._get(conn, target.id)

    def _move(self, conn: Connection, champ: Champion, to_state: str, *, action: str,
              who: str, reason: str, bundle_sha256: str | None = None,
              bundle_path: str | None = None) -> Event:
        """The guarded UPDATE plus its one event row."""
        c = champions_table.c
        now = _now()
        values: dict[str, Any] = {"state": to_state, "updated_at": now}
        if bundle_sha256 is not None:
            values["bundle_sha256"] = bundle_sha256
        if bundle_path is not None:
            values["bundle_path"] = bundle_path
        done = conn.execute(update(champions_table).where(
            c.id == champ.id, c.state == champ.state).values(**values))
        if done.rowcount != 1:
            raise self._fail(f"champion #{champ.id} changed meanwhile (it was {champ.state}); "
                             "nothing written, look again and retry")
        sha = bundle_sha256 or champ.bundle_sha256
        event_id = conn.execute(insert(events_table).values(
            champion_id=champ.id, at=now, who=who, action=action, from_state=champ.state,
            to_state=to_state, reason=reason, bundle_sha256=sha).returning(
            events_table.c.id)).scalar_one()
        return Event(id=event_id, champion_id=champ.id, at=now, who=who, action=action,
                     from_state=champ.state, to_state=to_state, reason=reason, bundle_sha256=sha)

    # ---- validation -------------------------------------------------------------------
    def _check_move(self, champ: Champion, to_state: str, action: str) -> None:
        if to_state == champ.state:
            raise self._fail(f"champion #{champ.id} is already {to_state}")
        if to_state not in ALLOWED[champ.state]:
            raise self._fail(f"champion #{champ.id}: {champ.state} -> {to_state} is not "
                             f"allowed (from {champ.state}: {', '.join(ALLOWED[champ.state])})")
        if champ.state == "retired" and action != "rollback":
            raise self._fail(f"champion #{champ.id}: retired -> {to_state} only by a rollback "
                             f"(action 'rollback', not {action!r})")

    def _check_state(self, state: str) -> None:
        if state not in STATES:
            raise self._fail(f"unknown state {state!r} (one of {', '.join(STATES)})")

    def _check_text(self, name: str, value: object, *, empty_ok: bool = False) -> None:
        if not isinstance(value, str) or (not empty_ok and not value.strip()):
            raise self._fail(f"{name} must be a non-empty string, got {value!r}")

    def _check_sha(self, sha: object) -> None:
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise self._fail(f"bundle_sha256 must be 64 lowercase hex digits, got {sha!r}")


def open_engine(url: str) -> Engine:
    """An engine for a registry URL (SQLite or PostgreSQL), SQLite set up for real
    transactions; a bad URL or missing driver is a RegistryError. No schema work here."""
    url = _normalise(url.strip())

    def fail(what: str, exc: BaseException | None = None) -> RegistryError:
        detail = f": {_reason(exc)}" if exc is not None else ""
        return RegistryError(f"registry {mask_uri(url)}: {what}{detail}")

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise fail("not a database URL (expected sqlite:///PATH or "
                   "postgresql+psycopg://USER:PASSWORD@HOST/DB)", exc) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise fail("unsupported database: the registry runs on SQLite or PostgreSQL")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if memory:
            kwargs["poolclass"] = StaticPool  # one connection, or each sees an empty db
        else:
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise fail("cannot create its directory", exc) from None
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S,
                                  "check_same_thread": False}
    elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    kwargs.setdefault("pool_pre_ping", parsed.get_backend_name() != "sqlite")
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise fail("no driver for this database (PostgreSQL needs "
                   "`pip install 'psycopg[binary]'`)", exc) from None
    except (ArgumentError, TypeError) as exc:
        raise fail("bad database URL", exc) from None
    if engine.dialect.name == "sqlite":
        sqlite_transactions(engine)
    return engine


def _champion(row: RowMapping) -> Champion:
    return Champion(**{f: row[f] for f in Champion.__dataclass_fields__})


def _event(row: RowMapping) -> Event:
    return Event(**{f: row[f] for f in Event.__dataclass_fields__})


# ---- schema ---------------------------------------------------------------------------------
@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs each step at INFO; keep that off unless someone set its level (emp -v)."""
    log = logging.getLogger("alembic")
    if log.level != logging.NOTSET:
        yield
        return
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(logging.NOTSET)


def alembic_config() -> Any:
    """The programmatic Alembic config: the packaged migrations, no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def heads() -> tuple[str, ...]:
    """The schema revisions this code knows as newest."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in one write transaction, refusing a database at a
    revision this code does not know (written by a newer EMP)."""
    masked_url = mask_uri(engine.url.render_as_string(hide_password=False)) or ""
    with _quiet_alembic():
        _upgrade(engine, masked_url, revision)


def _upgrade(engine: Engine, masked_url: str, revision: str) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    try:
        with engine.execution_options(emp_write=True).begin() as conn:
            current = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
            known = {rev.revision for rev in script.walk_revisions()}
            unknown = [rev for rev in current if rev not in known]
            if unknown:
                raise RegistryError(
                    f"registry {masked_url}: schema revision {', '.join(unknown)} is newer than "
                    f"this EMP knows (its newest is {', '.join(script.get_heads())}); "
                    "upgrade EMP to use this registry")
            if revision == "head" and set(current) == set(script.get_heads()):
                return
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    except RegistryError:
        raise
    except SQLAlchemyError as exc:
        raise RegistryError(f"registry {masked_url}: cannot open or migrate the database: "
                            f"{_reason(exc)}") from None
    except (OSError, CommandError) as exc:
        raise RegistryError(f"registry {masked_url}: cannot open or migrate the database: "
                            f"{_reason(exc)}") from None
