"""The registry's Alembic migrations on SQLite and a real PostgreSQL: an empty database goes to
head, a database left at the first revision is upgraded with its rows kept, and a database
written by a newer EMP is refused."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from pg_server import pg_server, pg_url  # noqa: F401  (fixtures)

from champions.registry import (
    MIGRATIONS,
    VERSION_TABLE,
    Registry,
    RegistryError,
    champions_table,
    events_table,
    heads,
    open_engine,
    upgrade,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/registry.db"
    return request.getfixturevalue("pg_url")


def versions(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]


def test_there_are_two_revisions_in_the_package():
    names = sorted(p.name for p in (MIGRATIONS / "versions").glob("0*.py"))
    assert len(names) >= 2 and heads() == ("0002",), names


def test_an_empty_database_is_upgraded_to_head(url):
    Registry(url).close()
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        assert {"champions", "champion_events", VERSION_TABLE} <= tables
        assert "alembic_version" not in tables  # MLflow's name stays free
        assert versions(engine) == list(heads())
        for table in (champions_table, events_table):  # the runtime view matches the schema
            assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.c.keys())
        indexes = {i["name"]: i for i in inspector.get_indexes("champions")}
        assert indexes["uq_champions_one_live"]["unique"]
        assert indexes["uq_champions_one_paper"]["unique"]
    finally:
        engine.dispose()
    Registry(url).close()  # at head already: opening again changes nothing
    engine = sa.create_engine(url)
    assert versions(engine) == list(heads())
    engine.dispose()


def test_a_database_at_the_first_revision_is_upgraded_with_its_rows(url):
    engine = open_engine(url)
    upgrade(engine, "0001")
    assert versions(engine) == ["0001"]
    with engine.begin() as conn:
        assert "action" not in {c["name"] for c in sa.inspect(conn).get_columns(
            "champion_events")}
        when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        conn.execute(sa.text(
            "INSERT INTO champions (id, key, symbol, timeframe, run_id, state, bundle_sha256,"
            " bundle_path, created_at, updated_at) VALUES (7, 'g', 'EURUSD', '1h', 'run-0',"
            " 'live', :sha, '/b/g', :t, :t)"), {"sha": "d" * 64, "t": when})
        conn.execute(sa.text(
            "INSERT INTO champion_events (champion_id, at, who, from_state, to_state, reason,"
            " bundle_sha256) VALUES (7, :t, 'old@pc', NULL, 'eligible', 'first', :sha),"
            " (7, :t, 'old@pc', 'eligible', 'live', 'go', :sha)"),
            {"sha": "d" * 64, "t": when})
    engine.dispose()

    with Registry(url) as reg:
        [champ] = reg.champions()
        assert (champ.id, champ.state, champ.key, champ.bundle_sha256) == (7, "live", "g",
                                                                           "d" * 64)
        assert champ.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        # the old rows got their action from their states
        assert [(e.action, e.to_state) for e in reg.events()] == [("register", "eligible"),
                                                                  ("promote", "live")]
        # and the upgraded schema works: a replacement and its event
        new = reg.register(key="h", symbol="EURUSD", timeframe="1h", run_id="run-1",
                           bundle_sha256="e" * 64, bundle_path="/b/h", who="me@pc", reason="")
        reg.transition(new.id, "live", action="promote", who="me@pc", reason="better")
        assert reg.get(7).state == "retired" and reg.rollback_target("EURUSD", "1h").id == 7
    engine = sa.create_engine(url)
    assert versions(engine) == list(heads())
    engine.dispose()


def test_a_database_from_a_newer_emp_is_refused(url):
    Registry(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(RegistryError, match=r"schema revision 0099 is newer than this EMP "
                                            r"knows \(its newest is 0002\); upgrade EMP") as info:
        Registry(url)
    assert "\n" not in str(info.value) and "pw-" not in str(info.value)


def test_migrations_log_nothing_at_info(tmp_path, caplog):
    caplog.set_level(logging.INFO)  # root at INFO, as an application might configure it
    alembic_log = logging.getLogger("alembic")
    before = alembic_log.level  # NOTSET, or what `emp` set earlier in this process
    alembic_log.setLevel(logging.NOTSET)
    try:
        Registry(f"sqlite:///{tmp_path}/r.db").close()
        assert [r for r in caplog.records if r.name.startswith("alembic")] == []
        assert alembic_log.level == logging.NOTSET  # left as found
    finally:
        alembic_log.setLevel(before)
