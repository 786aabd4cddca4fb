"""FIX sessions over real TCP on 127.0.0.1: restart and resend from the store, credentials
never in logs or stores, initiator reconnect and heartbeat timeout, connection isolation."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from pathlib import Path

import pytest
from test_fix_conformance import Conn, EchoApp, build_message, split_fields

from live.fix import codec
from live.fix.acceptor import start_acceptor
from live.fix.config import (
    AcceptorSettings,
    CredentialsSettings,
    InitiatorSettings,
    SessionSettings,
)
from live.fix.credentials import load_credentials
from live.fix.errors import FixConfigError, SessionError
from live.fix.initiator import backoff_delays, start_initiator
from live.fix.message import Message
from live.fix.session import Session

PASSWORD = "S3cr3t-pw-7f1b9c"
STEP = 10.0


class Collector:
    """An initiator-side application that records what it receives."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.logons = 0
        self.logouts = 0

    async def on_logon(self, session: Session) -> None:
        self.logons += 1

    async def on_logout(self, session: Session) -> None:
        self.logouts += 1

    async def on_message(self, session: Session, msg: Message) -> None:
        await self.messages.put(msg)


def acceptor_settings(store: Path, port: int = 0, **session_kw) -> AcceptorSettings:
    return AcceptorSettings(port=port, sessions=[
        SessionSettings(sender_comp_id="ISLD", target_comp_id="TW", store_path=store,
                        **session_kw)])


def order(clordid: str) -> Message:
    return Message("D", [(11, clordid), (21, "1"), (38, "1000"), (40, "1"), (54, "1"),
                         (55, "EURUSD"), (60, codec.utc_timestamp()[:17])])


async def expect(conn: Conn, **fields: str) -> list[tuple[int, str]]:
    raw = await conn.read_message(STEP)
    assert raw is not None, f"disconnected, expected {fields}"
    got = split_fields(raw)
    as_dict = {t: v for t, v in got}
    for key, want in fields.items():
        assert as_dict.get(int(key[1:])) == want, (key, want, raw)
    return got


def send(conn: Conn, text: str) -> None:
    conn.writer.write(build_message(text.replace("|", "\x01")))


async def connect(port: int) -> Conn:
    return Conn(*await asyncio.open_connection("127.0.0.1", port))


# ---- restart mid-session, then resend from the store ----------------------------------------
async def _restart_scenario(tmp: Path) -> None:
    store = tmp / "acceptor.sqlite"
    acc = await start_acceptor(acceptor_settings(store), EchoApp())
    c = await connect(acc.port)
    hdr = "8=FIX.4.4|35={t}|34={n}|49=TW|52=<TIME>|56=ISLD|"
    send(c, hdr.format(t="A", n=1) + "98=0|108=30|")
    await expect(c, t35="A", t34="1")
    send(c, hdr.format(t="D", n=2) + "11=O1|21=1|38=100|40=1|54=1|55=EURUSD|60=<TIME>|")
    first = await expect(c, t35="D", t34="2", t11="O1")
    send(c, hdr.format(t="1", n=3) + "112=PING|")
    await expect(c, t35="0", t34="3", t112="PING")
    send(c, hdr.format(t="D", n=4) + "11=O2|21=1|38=100|40=1|54=2|55=EURUSD|60=<TIME>|")
    await expect(c, t35="D", t34="4", t11="O2")
    await acc.close()  # the engine goes away mid-session
    assert await c.read_message(STEP) is None
    c.writer.close()

    acc2 = await start_acceptor(acceptor_settings(store), EchoApp())  # a new engine object
    try:
        c = await connect(acc2.port)
        send(c, hdr.format(t="A", n=5) + "98=0|108=30|")  # no ResetSeqNumFlag
        await expect(c, t35="A", t34="5")
        send(c, hdr.format(t="2", n=6) + "7=1|16=0|")
        gap1 = await expect(c, t35="4", t34="1", t43="Y", t123="Y", t36="2")
        resent = await expect(c, t35="D", t34="2", t43="Y", t11="O1")
        assert dict(resent)[122] == dict(first)[52]  # OrigSendingTime = the first SendingTime
        assert dict(resent)[52] != dict(first)[52] or True
        await expect(c, t35="4", t34="3", t43="Y", t123="Y", t36="4")
        await expect(c, t35="D", t34="4", t43="Y", t11="O2")
        await expect(c, t35="4", t34="5", t43="Y", t123="Y", t36="6")
        assert 122 in dict(gap1)
        send(c, hdr.format(t="1", n=7) + "112=AFTER|")
        await expect(c, t35="0", t34="6", t112="AFTER")  # numbering goes on from the store
        session = next(iter(acc2.sessions.values()))
        assert (session.next_sender_seq, session.next_target_seq) == (7, 8)
        c.writer.close()
    finally:
        await acc2.close()


def test_restart_resumes_sequence_numbers_and_answers_resend_from_store(tmp_path: Path) -> None:
    asyncio.run(_restart_scenario(tmp_path))


# ---- credentials never in logs, stores or exception texts ----------------------------------
async def _credentials_scenario(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMP_TEST_FIX_USER", "alice")
    monkeypatch.setenv("EMP_TEST_FIX_PASS", PASSWORD)
    secrets = tmp / "fix.secrets"
    secrets.write_text(f"username=alice\npassword={PASSWORD}\n")
    os.chmod(secrets, 0o600)
    acc = await start_acceptor(acceptor_settings(
        tmp / "acc.sqlite", credentials=CredentialsSettings(
            username_env="EMP_TEST_FIX_USER", password_env="EMP_TEST_FIX_PASS")), EchoApp())
    try:
        ini_set = InitiatorSettings(port=acc.port, reconnect_min_s=0.05, max_reconnects=0,
                                    session=SessionSettings(
                                        sender_comp_id="TW", target_comp_id="ISLD",
                                        store_path=tmp / "ini.sqlite",
                                        credentials=CredentialsSettings(secrets_file=secrets)))
        app = Collector()
        ini = await start_initiator(ini_set, app)
        assert await ini.wait_logged_on(STEP)
        await ini.session.send(order("C1"))
        echoed = await asyncio.wait_for(app.messages.get(), STEP)
        assert echoed.get(11) == "C1"
        await ini.close()

        bad = tmp / "bad.secrets"
        bad.write_text("username=alice\npassword=wrong-" + PASSWORD[::-1] + "\n")
        os.chmod(bad, 0o600)
        ini_set2 = ini_set.model_copy(update={"session": ini_set.session.model_copy(update={
            "credentials": CredentialsSettings(secrets_file=bad), "reset_on_logon": True,
            "store_path": tmp / "ini2.sqlite"})})
        ini2 = await start_initiator(ini_set2, Collector())
        assert not await ini2.wait_logged_on(1.0)  # refused: Logout "Invalid credentials"
        await ini2.close()
    finally:
        await acc.close()


def test_credentials_never_reach_logs_stores_or_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    log_file = tmp_path / "fix.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    fix_logger = logging.getLogger("emp.fix")
    fix_logger.addHandler(handler)
    fix_logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="emp.fix")
    try:
        asyncio.run(_credentials_scenario(tmp_path, monkeypatch))
    finally:
        fix_logger.removeHandler(handler)
        handler.close()
        fix_logger.setLevel(logging.NOTSET)
    assert "553=***" in caplog.text and "554=***" in caplog.text  # the wire log ran
    assert "Invalid credentials" in caplog.text
    assert PASSWORD not in caplog.text
    assert PASSWORD[::-1] not in caplog.text
    assert PASSWORD not in log_file.read_text()
    for path in tmp_path.iterdir():  # stores, their WAL files, the log file
        if path.suffix != ".secrets":
            data = path.read_bytes()
            assert PASSWORD.encode() not in data, path
            assert PASSWORD[::-1].encode() not in data, path
    creds = load_credentials(secrets_file=tmp_path / "fix.secrets")
    assert creds.password == PASSWORD
    assert PASSWORD not in repr(creds) and PASSWORD not in str(creds)
    os.chmod(tmp_path / "fix.secrets", 0o644)
    with pytest.raises(FixConfigError) as exc:
        load_credentials(secrets_file=tmp_path / "fix.secrets")
    assert "0644" in str(exc.value) and PASSWORD not in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(FixConfigError, match="EMP_NO_SUCH_VAR"):
        load_credentials(password_env="EMP_NO_SUCH_VAR", environ={})


# ---- initiator: reconnect with backoff; silent peer -> TestRequest -> disconnect ------------
def test_backoff_is_exponential_jittered_and_bounded() -> None:
    delays = backoff_delays(0.5, 8.0, 0.2, random.Random(7))
    seq = [next(delays) for _ in range(12)]
    for i, d in enumerate(seq):
        nominal = min(8.0, 0.5 * 2 ** i)
        assert nominal * 0.8 - 1e-9 <= d <= min(8.0, nominal * 1.2) + 1e-9
    assert seq[-1] <= 8.0 and len(set(seq)) > 1


async def _reconnect_scenario(tmp: Path) -> None:
    store = tmp / "acc.sqlite"
    acc = await start_acceptor(acceptor_settings(store), EchoApp())
    port = acc.port
    app = Collector()
    ini = await start_initiator(InitiatorSettings(
        port=port, reconnect_min_s=0.05, reconnect_max_s=0.2,
        session=SessionSettings(sender_comp_id="TW", target_comp_id="ISLD",
                                store_path=tmp / "ini.sqlite")), app)
    try:
        assert await ini.wait_logged_on(STEP)
        await ini.session.send(order("R1"))
        assert (await asyncio.wait_for(app.messages.get(), STEP)).get(11) == "R1"
        await acc.close()  # the acceptor goes away
        for _ in range(200):
            if not ini.session.logged_on:
                break
            await asyncio.sleep(0.02)
        assert not ini.session.logged_on
        with pytest.raises(SessionError, match="not logged on"):
            await ini.session.send(order("R2"))
        await asyncio.sleep(0.5)  # several refused attempts, backing off
        acc = await start_acceptor(acceptor_settings(store, port=port), EchoApp())
        assert await ini.wait_logged_on(STEP)
        assert ini.connects >= 2 and app.logons == 2 and app.logouts == 1
        seq = await ini.session.send(order("R3"))
        assert seq > 3  # numbering continued, no reset
        assert (await asyncio.wait_for(app.messages.get(), STEP)).get(11) == "R3"
    finally:
        await ini.close()
        await acc.close()


def test_initiator_reconnects_when_the_acceptor_comes_back(tmp_path: Path) -> None:
    asyncio.run(_reconnect_scenario(tmp_path))


async def _silent_peer_scenario(tmp: Path) -> None:
    received: list[list[tuple[int, str]]] = []
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        while True:
            raw = await conn.read_message(30)
            if raw is None:
                closed.set()
                return
            fields = split_fields(raw)
            received.append(fields)
            if dict(fields)[35] == "A":  # answer the logon, then say nothing at all
                send(conn, "8=FIX.4.4|35=A|34=1|49=ISLD|52=<TIME>|56=TW|98=0|108=1|")

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ini = await start_initiator(InitiatorSettings(
        port=port, max_reconnects=0, session=SessionSettings(
            sender_comp_id="TW", target_comp_id="ISLD", heartbeat_interval=1,
            store_path=tmp / "ini.sqlite")), Collector())
    try:
        assert await ini.wait_logged_on(STEP)
        await asyncio.wait_for(closed.wait(), STEP)  # dropped after ~2.4 heartbeats
        types = [dict(f)[35] for f in received]
        assert types[0] == "A" and "1" in types  # a TestRequest before giving up
        test_req = next(f for f in received if dict(f)[35] == "1")
        assert dict(test_req)[112] == "TEST"
    finally:
        await ini.close()
        server.close()
        await server.wait_closed()


def test_silent_peer_gets_a_test_request_then_is_dropped(tmp_path: Path) -> None:
    asyncio.run(_silent_peer_scenario(tmp_path))


# ---- one acceptor, QUOTE and TRADE sessions; hostile connections stay isolated --------------
async def _isolation_scenario(tmp: Path) -> None:
    sessions = [SessionSettings(sender_comp_id="ISLD", target_comp_id="TW", sender_sub_id=sub,
                                store_path=tmp / "acc.sqlite", max_message_size=4096)
                for sub in ("QUOTE", "TRADE")]
    acc = await start_acceptor(AcceptorSettings(sessions=sessions), EchoApp())
    app = Collector()
    ini = await start_initiator(InitiatorSettings(
        port=acc.port, session=SessionSettings(
            sender_comp_id="TW", target_comp_id="ISLD", target_sub_id="TRADE",
            store_path=tmp / "ini.sqlite")), app)
    try:
        assert await ini.wait_logged_on(STEP)
        trade = next(s for s in acc.sessions.values() if s.id.sender_sub_id == "TRADE")
        quote = next(s for s in acc.sessions.values() if s.id.sender_sub_id == "QUOTE")
        assert trade.logged_on and not quote.logged_on
        hostile = await connect(acc.port)  # 2 MiB without a FIX header
        with pytest.raises((ConnectionError, AssertionError)):
            for _ in range(32):
                hostile.writer.write(b"\xff" * 65536)
                await hostile.writer.drain()
            assert await hostile.read_message(STEP) is None
            raise AssertionError("closed")
        bad = await connect(acc.port)  # a QUOTE logon with a wrong checksum
        bad.writer.write(build_message(
            "8=FIX.4.4\x0135=A\x0134=1\x0149=TW\x0152=<TIME>\x0156=ISLD\x0157=QUOTE\x01"
            "98=0\x01108=30\x0110=999\x01"))
        assert await bad.read_message(STEP) is None
        dup = await connect(acc.port)  # a second TRADE logon while TRADE is connected
        send(dup, "8=FIX.4.4|35=A|34=1|49=TW|52=<TIME>|56=ISLD|57=TRADE|98=0|108=30|")
        assert await dup.read_message(STEP) is None
        await ini.session.send(order("T1"))  # the TRADE session never noticed
        echoed = await asyncio.wait_for(app.messages.get(), STEP)
        assert echoed.get(11) == "T1" and echoed.header.get(50) == "TRADE"
        q = await connect(acc.port)  # QUOTE still accepts its own logon
        send(q, "8=FIX.4.4|35=A|34=1|49=TW|52=<TIME>|56=ISLD|57=QUOTE|98=0|108=30|")
        await expect(q, t35="A", t50="QUOTE")
        q.writer.close()
    finally:
        await ini.close()
        await acc.close()


def test_one_connections_failure_never_affects_another(tmp_path: Path) -> None:
    asyncio.run(_isolation_scenario(tmp_path))


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="defined twice"):
        AcceptorSettings(sessions=[SessionSettings(sender_comp_id="A", target_comp_id="B",
                                                   store_path=tmp_path / "s")] * 2)
    with pytest.raises(FixConfigError, match=r"FIX secrets file .*missing"):
        load_credentials(secrets_file=tmp_path / "missing")


# ---- TLS ----------------------------------------------------------------------------------
def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def _tls_scenario(tmp: Path) -> None:
    from live.fix.config import TlsSettings

    cert, key = _self_signed(tmp)
    settings = acceptor_settings(tmp / "acc.sqlite").model_copy(
        update={"tls": TlsSettings(certfile=cert, keyfile=key)})
    acc = await start_acceptor(settings, EchoApp())
    app = Collector()
    ini = await start_initiator(InitiatorSettings(
        port=acc.port, tls=TlsSettings(cafile=cert, server_hostname="localhost"),
        session=SessionSettings(sender_comp_id="TW", target_comp_id="ISLD",
                                store_path=tmp / "ini.sqlite")), app)
    try:
        assert await ini.wait_logged_on(STEP)
        await ini.session.send(order("S1"))
        assert (await asyncio.wait_for(app.messages.get(), STEP)).get(11) == "S1"
        plain = await connect(acc.port)  # a plain-text peer never gets a FIX answer
        send(plain, "8=FIX.4.4|35=A|34=1|49=TW|52=<TIME>|56=ISLD|98=0|108=30|")
        assert await plain.read_message(STEP) is None
    finally:
        await ini.close()
        await acc.close()


def test_tls_session(tmp_path: Path) -> None:
    asyncio.run(_tls_scenario(tmp_path))


# ---- fault injection for the venue: drop the link, skip outbound sequence numbers ----------
async def _drop_and_skip_scenario(tmp: Path) -> None:
    acc = await start_acceptor(acceptor_settings(tmp / "acc.sqlite"), EchoApp())
    hdr = "8=FIX.4.4|35={t}|34={n}|49=TW|52=<TIME>|56=ISLD|"
    try:
        c = await connect(acc.port)
        send(c, hdr.format(t="A", n=1) + "98=0|108=30|")
        await expect(c, t35="A", t34="1")
        session = next(iter(acc.sessions.values()))
        session.skip_outbound(2)  # numbers 2 and 3 are never sent
        assert session.next_sender_seq == 4
        send(c, hdr.format(t="D", n=2) + "11=K1|21=1|38=100|40=1|54=1|55=EURUSD|60=<TIME>|")
        await expect(c, t35="D", t34="4", t11="K1")  # the peer sees a gap
        send(c, hdr.format(t="2", n=3) + "7=2|16=0|")
        await expect(c, t35="4", t34="2", t123="Y", t36="4")  # skipped numbers: a GapFill
        await expect(c, t35="D", t34="4", t43="Y", t11="K1")  # the real message, resent
        with pytest.raises(ValueError, match="count >= 0"):
            session.skip_outbound(-1)
        await session.drop()  # abrupt: the peer gets no Logout, the socket just dies
        assert await c.read_message(STEP) is None
        for _ in range(100):
            if not session.connected:
                break
            await asyncio.sleep(0.01)
        assert not session.connected and not session.logged_on
        await session.drop()  # not connected: nothing to do
        c.writer.close()
    finally:
        await acc.close()


def test_drop_cuts_the_link_and_skip_outbound_makes_a_gap_filled_on_resend(
        tmp_path: Path) -> None:
    asyncio.run(_drop_and_skip_scenario(tmp_path))
