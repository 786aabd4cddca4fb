"""The champions registry on real databases (a SQLite file and a throwaway PostgreSQL server):
state changes, their audit rows, replacement and rollback, refusals, concurrency, bad URLs, and a
property test that random operation sequences keep the invariants."""

from __future__ import annotations

import os
import tempfile
import threading
from collections import defaultdict
from datetime import UTC

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_server import PgServer, pg_server, pg_url  # noqa: F401  (fixtures)

from champions.registry import (
    ACTIONS,
    STATES,
    Champion,
    Registry,
    RegistryError,
    default_url,
    who,
)

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/home/champions/registry.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def reg(url):
    with Registry(url) as registry:
        yield registry


def add(reg: Registry, key: str, symbol: str = "EURUSD", timeframe: str = "1h",
        run_id: str = "run-1", sha: str = SHA_A) -> Champion:
    return reg.register(key=key, symbol=symbol, timeframe=timeframe, run_id=run_id,
                        bundle_sha256=sha, bundle_path=f"/bundles/{key}", who="alice@pc",
                        reason="passed the gates")


def promote(reg: Registry, champ: Champion, to: str = "live", action: str = "promote"):
    return reg.transition(champ.id, to, action=action, who="alice@pc", reason="looks good")


def states(reg: Registry) -> dict[int, str]:
    return {c.id: c.state for c in reg.champions()}


def test_register_then_transitions_each_write_one_event(reg):
    a = add(reg, "g1")
    assert a.state == "eligible" and a.created_at.tzinfo is not None
    assert a.created_at.utcoffset().total_seconds() == 0
    [ev] = reg.events(champion_id=a.id)
    assert (ev.action, ev.from_state, ev.to_state, ev.who) == ("register", None, "eligible",
                                                               "alice@pc")
    # the same (run_id, key) again: the existing row, no new event
    again = add(reg, "g1", sha=SHA_B)
    assert again == a and len(reg.events()) == 1
    assert add(reg, "g1", run_id="run-2").id != a.id  # another run: another champion

    ev = promote(reg, a, "paper")
    assert (ev.from_state, ev.to_state, ev.action) == ("eligible", "paper", "promote")
    ev = reg.transition(a.id, "live", action="promote", who="bob@pc", reason="paper ok",
                        bundle_sha256=SHA_C, bundle_path="/bundles/g1-v2")
    now = reg.get(a.id)
    assert (now.state, now.bundle_sha256, now.bundle_path) == ("live", SHA_C, "/bundles/g1-v2")
    assert now.updated_at > a.updated_at and now.created_at == a.created_at
    assert ev.bundle_sha256 == SHA_C and ev.who == "bob@pc"
    reg.transition(a.id, "paper", action="demote", who="bob@pc", reason="drawdown")
    reg.transition(a.id, "retired", action="retire", who="bob@pc", reason="done")
    log = reg.events(champion_id=a.id)
    assert [e.to_state for e in log] == ["eligible", "paper", "live", "paper", "retired"]
    assert len(reg.events()) == 6  # 2 registrations + 4 changes of a, nothing else
    assert all(e.at.tzinfo is not None for e in log)
    assert reg.find("run-1", "g1") == reg.get(a.id) and reg.find("run-1", "nope") is None
    with pytest.raises(RegistryError, match="no champion #999"):
        reg.get(999)


def test_replacing_live_retires_the_old_one_with_a_replace_event(reg):
    a, b = add(reg, "a"), add(reg, "b")
    other_tf, other_sym = add(reg, "c", timeframe="4h"), add(reg, "d", symbol="GBPUSD")
    for champ in (a, other_tf, other_sym):
        promote(reg, champ)
    before = len(reg.events())
    promote(reg, b)
    assert states(reg) == {a.id: "retired", b.id: "live", other_tf.id: "live",
                           other_sym.id: "live"}
    assert len(reg.events()) == before + 2
    last_a = reg.events(champion_id=a.id)[-1]
    assert (last_a.action, last_a.from_state, last_a.to_state) == ("replace", "live", "retired")
    assert last_a.reason == f"replaced by champion #{b.id}"
    assert reg.current("EURUSD", "1h") == reg.get(b.id)
    # the same for paper
    p1, p2 = add(reg, "p1"), add(reg, "p2")
    promote(reg, p1, "paper")
    promote(reg, p2, "paper")
    assert reg.get(p1.id).state == "retired" and reg.current("EURUSD", "1h", "paper").id == p2.id
    assert reg.events(champion_id=p1.id)[-1].action == "replace"
    # a paper replacement is no rollback target; the live one is
    assert reg.rollback_target("EURUSD", "1h").id == a.id
    assert [c.id for c in reg.champions(symbol="GBPUSD")] == [other_sym.id]
    assert {c.id for c in reg.champions(state="retired")} == {a.id, p1.id}
    assert {e.champion_id for e in reg.events(symbol="GBPUSD")} == {other_sym.id}


def test_rollback_restores_the_previous_live_champion(reg):
    a, b, c = add(reg, "a"), add(reg, "b"), add(reg, "c")
    assert reg.rollback_target("EURUSD", "1h") is None
    for champ in (a, b, c):
        promote(reg, champ)
    assert reg.rollback_target("EURUSD", "1h").id == b.id
    before = len(reg.events())
    retired, restored = reg.rollback("EURUSD", "1h", who="carol@pc", reason="slippage")
    assert (retired.id, retired.state, restored.id, restored.state) == (c.id, "retired",
                                                                        b.id, "live")
    new = reg.events()[before:]
    assert [(e.champion_id, e.action, e.from_state, e.to_state) for e in new] == [
        (c.id, "rollback", "live", "retired"), (b.id, "rollback", "retired", "live")]
    assert all(e.who == "carol@pc" and e.reason == "slippage" for e in new)
    # c was rolled back (not replaced): the next target is a, then nothing
    assert reg.rollback_target("EURUSD", "1h").id == a.id
    reg.rollback("EURUSD", "1h", who="carol@pc", reason="again")
    assert reg.current("EURUSD", "1h").id == a.id
    assert reg.rollback_target("EURUSD", "1h") is None
    with pytest.raises(RegistryError, match="no earlier live champion"):
        reg.rollback("EURUSD", "1h", who="carol@pc", reason="once more")


def test_rollback_by_two_transitions_and_deliberate_retirement(reg):
    """The lead's two-call form keeps one live champion; a champion retired on purpose after
    its restoration is no longer a rollback target."""
    a, b = add(reg, "a"), add(reg, "b")
    promote(reg, a)
    promote(reg, b)
    reg.transition(b.id, "retired", action="rollback", who="x@y", reason="bad fills")
    assert reg.current("EURUSD", "1h") is None
    with pytest.raises(RegistryError, match="nothing is live"):
        reg.rollback("EURUSD", "1h", who="x@y", reason="r")
    reg.transition(a.id, "live", action="rollback", who="x@y", reason="bad fills")
    assert states(reg) == {a.id: "live", b.id: "retired"}
    assert reg.rollback_target("EURUSD", "1h") is None
    reg.transition(a.id, "retired", action="retire", who="x@y", reason="end of life")
    assert reg.rollback_target("EURUSD", "1h") is None


@pytest.mark.parametrize(("start", "to", "action", "message"), [
    ("eligible", "eligible", "promote", "already eligible"),
    ("live", "eligible", "demote", "live -> eligible is not allowed"),
    ("retired", "paper", "promote", "retired -> paper is not allowed"),
    ("retired", "eligible", "promote", "retired -> eligible is not allowed"),
    ("retired", "live", "promote", "retired -> live only by a rollback"),
    ("eligible", "gone", "promote", "unknown state 'gone'"),
    ("eligible", "live", "register", "action 'register' is not one of"),
    ("eligible", "live", "yolo", "action 'yolo' is not one of"),
])
def test_forbidden_transitions_are_refused_and_write_nothing(reg, start, to, action, message):
    champ = add(reg, "a")
    path = {"eligible": [], "live": ["live"], "retired": ["live", "retired"]}[start]
    for state in path:
        reg.transition(champ.id, state, action="promote" if state == "live" else "retire",
                       who="w@h", reason="setup")
    before = (states(reg), len(reg.events()))
    with pytest.raises(RegistryError, match=message) as info:
        reg.transition(champ.id, to, action=action, who="w@h", reason="try")
    assert "\n" not in str(info.value)
    assert (states(reg), len(reg.events())) == before


def test_bad_arguments_are_refused(reg):
    with pytest.raises(RegistryError, match="bundle_sha256 must be 64 lowercase hex"):
        reg.register(key="k", symbol="S", timeframe="1h", run_id="r", bundle_sha256="xyz",
                     bundle_path="/b", who="w", reason="")
    with pytest.raises(RegistryError, match="who must be a non-empty string"):
        reg.register(key="k", symbol="S", timeframe="1h", run_id="r", bundle_sha256=SHA_A,
                     bundle_path="/b", who=" ", reason="")
    with pytest.raises(RegistryError, match="unknown state"):
        reg.champions(state="zombie")
    assert reg.events() == []


def test_stale_expected_state_is_refused(url):
    with Registry(url) as first, Registry(url) as second:
        champ = add(first, "a")
        promote(first, champ, "paper")
        seen = first.get(champ.id).state  # what a user was shown
        second.transition(champ.id, "retired", action="retire", who="b@h", reason="bad")
        with pytest.raises(RegistryError, match=r"changed meanwhile: it is retired, not paper"):
            first.transition(champ.id, "live", action="promote", who="a@h", reason="go",
                             expected_state=seen)
        assert first.get(champ.id).state == "retired" and len(first.events()) == 3


def test_a_change_between_read_and_update_is_refused(pg_url):  # noqa: F811
    """A real race on PostgreSQL (READ COMMITTED): another session changes the champion after
    this transaction read it; the guarded UPDATE finds no row and nothing is written."""
    with Registry(pg_url) as first, Registry(pg_url) as second:
        champ = add(first, "a")
        promote(first, champ, "paper")
        fired = []

        def interleave(conn, cursor, statement, *args):
            if statement.lstrip().upper().startswith("UPDATE CHAMPIONS") and not fired:
                fired.append(True)
                second.transition(champ.id, "retired", action="retire", who="b@h",
                                  reason="meanwhile")

        sa.event.listen(first._engine, "before_cursor_execute", interleave)
        with pytest.raises(RegistryError, match=f"champion #{champ.id} changed meanwhile"):
            promote(first, champ, "live")
        sa.event.remove(first._engine, "before_cursor_execute", interleave)
        assert fired and first.get(champ.id).state == "retired"
        assert [e.to_state for e in first.events()] == ["eligible", "paper", "retired"]


def test_the_database_itself_refuses_a_second_live_champion(reg, url):
    a, b = add(reg, "a"), add(reg, "b")
    promote(reg, a)
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("UPDATE champions SET state = 'live' WHERE id = :i"),
                         {"i": b.id})
    finally:
        engine.dispose()
    assert states(reg) == {a.id: "live", b.id: "eligible"}


def test_concurrent_promotions_leave_one_live_champion(url):
    with Registry(url) as reg:
        champs = [add(reg, f"g{i}") for i in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(champs))

    def go(champ: Champion) -> None:
        with Registry(url) as mine:
            barrier.wait()
            try:
                promote(mine, champ)
            except RegistryError as exc:  # lost a race: refused cleanly, retry is the user's
                assert "meanwhile" in str(exc)
            except BaseException as exc:  # anything else fails the test
                errors.append(exc)

    threads = [threading.Thread(target=go, args=(c,)) for c in champs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Registry(url) as reg:
        assert len(reg.champions(state="live")) == 1
        check_invariants(reg)


def test_bad_urls_give_one_line_errors_without_passwords(tmp_path, pg_server):  # noqa: F811
    pw = pg_server.password
    cases = {
        pg_server.url("postgres", password=pw + "-wrong"): "password authentication failed",
        f"postgresql://emp:{pw}@127.0.0.1:1/registry": "Connection refused",
        pg_server.url("missing_db"):
            'database "missing_db" does not exist',
        "not a url": "not a database URL",
        f"mysql://emp:{pw}@localhost/db": "runs on SQLite or PostgreSQL",
    }
    for bad, why in cases.items():
        with pytest.raises(RegistryError) as info:
            Registry(bad)
        text = str(info.value)
        assert why in text and pw not in text and "\n" not in text, text
        # no chained driver exception (its text may carry the URL) for a traceback to show
        exc = info.value
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    corrupt = tmp_path / "registry.db"
    corrupt.write_bytes(b"this is not a database, " * 200)
    with pytest.raises(RegistryError, match=r"registry sqlite:///.*registry\.db: .*not a "
                                            r"database"):
        Registry(f"sqlite:///{corrupt}")


def test_default_url_and_who(tmp_path, monkeypatch):
    monkeypatch.delenv("EMP_REGISTRY_URL", raising=False)
    assert default_url(tmp_path) == f"sqlite:///{tmp_path}/champions/registry.db"
    monkeypatch.setenv("EMP_REGISTRY_URL", "postgresql+psycopg://u:p@h/db")
    assert default_url(tmp_path) == "postgresql+psycopg://u:p@h/db"
    monkeypatch.setenv("USER", "quant")
    assert who().startswith("quant@") and len(who()) > len("quant@")
    with Registry(f"sqlite:///{tmp_path}/deep/er/registry.db"):  # creates the directory
        assert (tmp_path / "deep" / "er" / "registry.db").is_file()


# ---- the property test ------------------------------------------------------------------------
def check_invariants(reg: Registry) -> None:
    """At most one live and one paper champion per (symbol, timeframe); the event log replays,
    event by event, to every champion's current state."""
    champs = reg.champions()
    held = defaultdict(list)
    for c in champs:
        if c.state in ("live", "paper"):
            held[(c.symbol, c.timeframe, c.state)].append(c.id)
    assert all(len(ids) == 1 for ids in held.values()), held
    replayed: dict[int, str | None] = defaultdict(lambda: None)
    for ev in reg.events():
        assert ev.from_state == replayed[ev.champion_id], ev
        assert ev.action in ACTIONS and ev.to_state in STATES
        assert (ev.action == "register") == (ev.from_state is None)
        replayed[ev.champion_id] = ev.to_state
    assert dict(replayed) == {c.id: c.state for c in champs}


N_CHAMPIONS = 4  # two per symbol, so replacements and rollbacks happen
NATURAL_ACTION = {"live": "promote", "paper": "promote", "retired": "retire",
                  "eligible": "demote"}
# (kind, champion index, state, action); transitions weighted up: they can break the rules
OPS = st.tuples(st.sampled_from(["register"] + ["transition"] * 4 + ["rollback"]),
                st.integers(0, N_CHAMPIONS - 1), st.sampled_from(("live", *STATES)),
                st.sampled_from(["natural"] * 3 + list(ACTIONS)))


def apply(reg: Registry, ids: dict[int, int], op: tuple) -> None:
    if op[0] == "register":
        ids[op[1]] = add(reg, f"g{op[1]}", symbol=f"S{op[1] % 2}").id
    elif op[0] == "transition":
        action = NATURAL_ACTION[op[2]] if op[3] == "natural" else op[3]
        reg.transition(ids[op[1]], op[2], action=action, who="p@h", reason="r")
    else:
        reg.rollback(f"S{op[1] % 2}", "1h", who="p@h", reason="r")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=30))
def test_random_operation_sequences_keep_the_invariants(backend, request, ops):
    with tempfile.TemporaryDirectory() as tmp:
        url = (f"sqlite:///{os.path.join(tmp, 'r.db')}" if backend == "sqlite"
               else request.getfixturevalue("pg_server").new_url())
        with Registry(url) as reg:
            ids: dict[int, int] = {}
            # start with S0 holding a rollback target: g0 live, then replaced by g2
            for i in range(N_CHAMPIONS):
                apply(reg, ids, ("register", i))
            for i in (0, 2):
                apply(reg, ids, ("transition", i, "live", "natural"))
            for op in ops:
                before = (states(reg), len(reg.events()))
                try:
                    apply(reg, ids, op)
                except RegistryError:
                    assert (states(reg), len(reg.events())) == before  # refused: no trace
                check_invariants(reg)
            assert all(c.created_at.tzinfo == UTC for c in reg.champions())
