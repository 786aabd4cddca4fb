"""QuickFIX's FIX 4.4 session scenarios played against our engine running as acceptor.

Every ``.def`` file in ``../shared/fix-conformance/fix44`` (and in ``$EMP_FIX_SCENARIOS`` when
set) is a script for a test client over real TCP on 127.0.0.1; the format is described in
that directory's README. All scenarios run concurrently in one event loop, each against its
own acceptor and store, because several wait for heartbeat timeouts (tens of seconds).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from live.fix.acceptor import start_acceptor
from live.fix.config import AcceptorSettings, SessionSettings
from live.fix.dictionary import qf_sorted_body
from live.fix.errors import UnsupportedMessageType
from live.fix.message import Message
from live.fix.session import Session

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fix-conformance"
STEP_TIMEOUT = 30.0  # seconds one E / eDISCONNECT step may wait (heartbeat scenarios ~15 s)
SOH = b"\x01"


def scenario_files() -> list[Path]:
    files = sorted((SHARED / "fix44").glob("*.def"))
    extra = os.environ.get("EMP_FIX_SCENARIOS")
    if extra:
        files += sorted(Path(extra).glob("*.def"))
    return files


def load_patterns() -> dict[int, re.Pattern[str]]:
    out = {}
    for line in (SHARED / "fields.fmt").read_text().splitlines():
        tag, sep, pattern = line.strip().partition("=")
        if sep:
            out[int(tag)] = re.compile(pattern)
    return out


# ---- the echo application (the suite's reference acceptor behaviour) ----------------------
_NOT_ECHOED = frozenset({8, 9, 10, 34, 35, 43, 49, 50, 52, 56, 57, 122})


class EchoApp:
    """NewOrderSingle and SecurityDefinition are sent back (QuickFIX field order); a
    PossResend order whose ClOrdID was seen since the last logon is dropped; anything else
    is an unsupported message type."""

    def __init__(self) -> None:
        self.seen: dict[object, set[str]] = {}

    async def on_logon(self, session: Session) -> None:
        self.seen[session.id] = set()

    async def on_logout(self, session: Session) -> None:
        return None

    async def on_message(self, session: Session, msg: Message) -> None:
        if msg.msg_type == "D":
            seen = self.seen.setdefault(session.id, set())
            clordid = msg.get(11) or ""
            if msg.header.get(97) == "Y" and clordid in seen:
                return
            seen.add(clordid)
        elif msg.msg_type != "d":
            raise UnsupportedMessageType(msg.msg_type)
        header = {t: v for t, v in msg.header.items() if t not in _NOT_ECHOED}
        await session.send(Message(msg.msg_type, qf_sorted_body(msg.fields, msg.msg_type),
                                   header=header))


# ---- the scenario client -----------------------------------------------------------------
def _fix_time(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        now = datetime.now(UTC) + timedelta(seconds=int(m.group(1) or 0))
        return now.strftime("%Y%m%d-%H:%M:%S")
    return re.sub(r"<TIME([+-]\d+)?>", repl, text)


def build_message(text: str) -> bytes:
    """Fill times; add BodyLength and CheckSum unless the line carries its own."""
    data = _fix_time(text).encode("latin-1")
    fields = [f for f in data.split(SOH) if f]
    has_len = any(f.startswith(b"9=") for f in fields)
    has_sum = any(f.startswith(b"10=") for f in fields)
    if not has_len and fields and fields[0].startswith(b"8="):
        body = b"".join(f + SOH for f in fields[1:] if not f.startswith(b"10="))
        fields.insert(1, b"9=%d" % len(body))
    out = b"".join(f + SOH for f in fields)
    if not has_sum:
        out += b"10=%03d\x01" % (sum(out) & 0xFF)
    return out


def split_fields(raw: bytes) -> list[tuple[int, str]]:
    out = []
    for f in raw.split(SOH):
        if f:
            tag, _, value = f.partition(b"=")
            out.append((int(tag), value.decode("latin-1")))
    return out


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""

    async def read_message(self, timeout: float) -> bytes | None:
        """The next complete message, or None at EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            i = self.buf.find(b"\x0110=")
            if i >= 0:
                j = self.buf.find(SOH, i + 4)
                if j >= 0:
                    msg, self.buf = self.buf[:j + 1], self.buf[j + 1:]
                    return msg
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except ConnectionError:
                data = b""
            if not data:
                return None
            self.buf += data


@dataclass
class Outcome:
    name: str
    error: str | None = None
    steps: int = 0
    log: list[str] = field(default_factory=list)


def compare(expected: bytes, actual: bytes, patterns: dict[int, re.Pattern[str]]) -> str | None:
    exp, act = split_fields(expected), split_fields(actual)
    if len(exp) != len(act):
        return f"{len(act)} fields, expected {len(exp)}"
    for (et, ev), (at, av) in zip(exp, act, strict=True):
        if et != at:
            return f"tag {at} where {et} was expected"
        pattern = patterns.get(et)
        if pattern is not None:
            if not pattern.match(av):
                return f"tag {et}={av!r} does not match {pattern.pattern}"
        elif ev != av:
            return f"tag {et}={av!r}, expected {ev!r}"
    return None


def acceptor_settings(store_dir: Path) -> AcceptorSettings:
    sessions = [SessionSettings(sender_comp_id="ISLD", target_comp_id=target,
                                reset_on_logon=True, store_path=store_dir / "fix.sqlite")
                for target in ("TW", "TW44")]
    return AcceptorSettings(host="127.0.0.1", port=0, sessions=sessions)


async def play(path: Path, patterns: dict[int, re.Pattern[str]]) -> Outcome:
    out = Outcome(path.name)
    with tempfile.TemporaryDirectory(prefix="emp-fix-conf-") as tmp:
        acceptor = await start_acceptor(acceptor_settings(Path(tmp)), EchoApp())
        conns: dict[int, Conn] = {}
        try:
            for lineno, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                kind, rest = line[0], line[1:]
                idx = 1
                m = re.match(r"(\d+),", rest)
                if m:
                    idx, rest = int(m.group(1)), rest[m.end():]
                where = f"{path.name}:{lineno}"
                out.steps += 1
                if kind == "i" and rest.startswith("CONNECT"):
                    reader, writer = await asyncio.open_connection("127.0.0.1", acceptor.port)
                    conns[idx] = Conn(reader, writer)
                elif kind == "i" and rest.startswith("DISCONNECT"):
                    conns.pop(idx).writer.close()
                elif kind == "I":
                    conns[idx].writer.write(build_message(rest))
                    await conns[idx].writer.drain()
                elif kind == "E":
                    expected = build_message(rest)
                    try:
                        got = await conns[idx].read_message(STEP_TIMEOUT)
                    except TimeoutError:
                        out.error = f"{where}: timed out waiting for {rest!r}"
                        return out
                    if got is None:
                        out.error = f"{where}: disconnected, expected {rest!r}"
                        return out
                    problem = compare(expected, got, patterns)
                    if problem:
                        shown = got.replace(SOH, b"|").decode("latin-1")
                        out.error = f"{where}: {problem}\n  got      {shown}\n  expected {rest}"
                        return out
                elif kind == "e" and rest.startswith("DISCONNECT"):
                    try:
                        got = await conns[idx].read_message(STEP_TIMEOUT)
                    except TimeoutError:
                        out.error = f"{where}: still connected after {STEP_TIMEOUT}s"
                        return out
                    if got is not None:
                        shown = got.replace(SOH, b"|").decode("latin-1")
                        out.error = f"{where}: expected a disconnect, got {shown}"
                        return out
                    conns.pop(idx).writer.close()
                else:
                    out.error = f"{where}: unsupported action {line[:20]!r}"
                    return out
        except Exception as exc:  # report, do not hide: the scenario fails with the reason
            out.error = f"{path.name}: {type(exc).__name__}: {exc}"
        finally:
            for conn in conns.values():
                conn.writer.close()
            await acceptor.close()
    return out


async def play_all(files: list[Path]) -> dict[str, Outcome]:
    patterns = load_patterns()
    results = await asyncio.gather(*(play(f, patterns) for f in files))
    return {str(f): r for f, r in zip(files, results, strict=True)}


FILES = scenario_files()


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return asyncio.run(play_all(FILES))


def test_shared_scenarios_exist() -> None:
    assert len(list((SHARED / "fix44").glob("*.def"))) >= 26, SHARED


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_scenario(path: Path, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[str(path)]
    assert outcome.error is None, outcome.error
    assert outcome.steps > 0
