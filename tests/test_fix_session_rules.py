"""Session rules as properties (hypothesis), driving a Session without a socket: whatever the
arrival order of the peer's messages, each application message reaches the application
exactly once and in sequence order, gaps are asked for once, duplicates are dropped."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from live.fix import codec
from live.fix.config import SessionSettings
from live.fix.message import Message
from live.fix.session import Session


class _Transport:
    def get_write_buffer_size(self) -> int:
        return 0


class FakeWriter:
    """Collects what the session writes."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.frames: list[codec.Parsed] = []
        self.closed = False

    def write(self, raw: bytes) -> None:
        self.frames.append(codec.parse(raw))

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def on_logon(self, session: Session) -> None:
        return None

    async def on_logout(self, session: Session) -> None:
        return None

    async def on_message(self, session: Session, msg: Message) -> None:
        self.ids.append(msg.get(11) or "")


def frame(msg_type: str, seq: int, body: list[tuple[int, str]], poss_dup: bool = False) -> bytes:
    now = codec.utc_timestamp()
    header = [(34, str(seq)), (49, "TW"), (52, now), (56, "ISLD")]
    if poss_dup:
        header += [(43, "Y"), (122, now)]
    return codec.encode("FIX.4.4", msg_type, header, body)


def order(seq: int) -> bytes:
    return frame("D", seq, [(11, f"O{seq}"), (21, "1"), (40, "1"), (54, "1"), (55, "X"),
                            (60, codec.utc_timestamp()[:17])])


async def run(arrivals: list[int], replay: bool) -> tuple[Recorder, FakeWriter, Session]:
    with tempfile.TemporaryDirectory() as tmp:
        app = Recorder()
        session = Session(SessionSettings(sender_comp_id="ISLD", target_comp_id="TW",
                                          store_path=Path(tmp) / "s.db"), app,
                          initiator=False)
        writer = FakeWriter()
        session._writer = writer  # drive the protocol without a socket
        session._reset_connection_state()
        await session._on_frame(frame("A", 1, [(98, "0"), (108, "30")]))
        for seq in arrivals:
            await session._on_frame(order(seq))
        if replay:  # the peer answers the ResendRequest: everything again, as PossDup
            for seq in sorted(set(arrivals)):
                await session._on_frame(frame("D", seq, [(11, f"O{seq}"), (21, "1"),
                                                         (40, "1"), (54, "1"), (55, "X"),
                                                         (60, "20240101-00:00:00")],
                                              poss_dup=True))
        session.store.close()
        return app, writer, session


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 25).flatmap(lambda n: st.permutations(list(range(2, n + 1)))),
       st.booleans())
def test_any_arrival_order_delivers_each_message_once_in_order(order_: list[int],
                                                               replay: bool) -> None:
    app, writer, session = asyncio.run(run(order_, replay))
    n = len(order_) + 1
    assert app.ids == [f"O{i}" for i in range(2, n + 1)]
    assert session.store.next_target == n + 1
    resend_requests = [f for f in writer.frames if f.msg_type == "2"]
    in_order = order_ == sorted(order_)
    assert (len(resend_requests) == 0) == in_order
    begins = [int(dict(f.body)[7]) for f in resend_requests]
    assert begins == sorted(set(begins))  # one request per gap, never a redundant one
    assert all(dict(f.body)[16] == "0" for f in resend_requests)  # "to infinity" (4.2+)
    assert not writer.closed  # PossDup duplicates are dropped, not fatal


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 20), st.integers(1, 19))
def test_a_too_low_number_without_possdup_ends_the_session(n: int, back: int) -> None:
    async def scenario() -> tuple[FakeWriter, Recorder]:
        app, writer, _ = await run(list(range(2, n + 1)), False)
        return writer, app

    writer, _ = asyncio.run(scenario())
    assert not writer.closed

    async def too_low() -> FakeWriter:
        with tempfile.TemporaryDirectory() as tmp:
            session = Session(SessionSettings(sender_comp_id="ISLD", target_comp_id="TW",
                                              store_path=Path(tmp) / "s.db"), Recorder(),
                              initiator=False)
            w = FakeWriter()
            session._writer = w
            session._reset_connection_state()
            await session._on_frame(frame("A", 1, [(98, "0"), (108, "30")]))
            for seq in range(2, n + 1):
                await session._on_frame(order(seq))
            low = max(1, n + 1 - back)
            if low < n + 1:
                await session._on_frame(frame("0", low, []))
            session.store.close()
            return w

    w = asyncio.run(too_low())
    if max(1, n + 1 - back) < n + 1:
        assert w.closed
        logout = w.frames[-1]
        assert logout.msg_type == "5"
        assert dict(logout.body)[58] == (f"MsgSeqNum too low, expecting {n + 1} but received "
                                         f"{max(1, n + 1 - back)}")
