"""Fuzzing the acceptor: 10^5 malformed or hostile messages over TCP on 127.0.0.1.

A bounded loop (a fixed, seeded list of episodes; it stops by itself). Each hostile message
has one defect, so the answer the FIX 4.4 session rules prescribe (QuickFIX's behaviour) is
known in advance and checked message by message:

- garbled frames (wrong CheckSum, wrong BodyLength, truncated, 8/9/35 out of order, noise
  and non-ASCII bytes between frames) are ignored: no reply, no sequence number used;
  a frame whose BodyLength runs past its end swallows the next frame, as in QuickFIX;
- a well-framed message that breaks a rule gets a Reject (35=3) naming it: 373=1 required
  tag missing, 2 tag not defined for the message, 4 tag without value, 5 bad enum value,
  6 bad data format (non-ASCII digits in a number, a MsgSeqNum or NumInGroup that Python's
  ``str.isdigit`` would take), 0 invalid tag number, 11 invalid MsgType, 13 repeated tag,
  14 tag out of order, 16 wrong NumInGroup count; the session goes on;
- huge but legal fields are served (a TestRequest with a 100 kB TestReqID is answered);
- some breaks end the session: MsgSeqNum too low (Logout, disconnect), a wrong CompID or a
  SendingTime an hour off (Reject 9 / 10, then Logout), a wrong BeginString (Logout), a
  10 MB line (disconnect);
- before logon, anything but a good Logon ends the connection.

Meanwhile a well-behaved session on the same acceptor keeps doing TestRequest round trips;
it must never miss one. Memory: the process RSS may not grow between the first and the
second half of the run (both halves see every category, the 10 MB lines included).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from live.fix.acceptor import Acceptor, start_acceptor
from live.fix.config import AcceptorSettings, SessionSettings
from live.fix.message import Message

SOH = b"\x01"
US = "EMPFIX"
TOTAL = 100_000          # hostile messages in the whole run
PER_EPISODE = 2_500      # hostile messages per logged-on connection
WAIT = 20.0              # seconds any awaited reply may take before the test fails
RSS_GROWTH_LIMIT = 24 << 20


# ---- building frames (our own encoder: the engine's codec is what is under test) ---------
def checksum(data: bytes) -> bytes:
    return b"%03d" % (sum(data) & 0xFF)


def frame(msg_type: str, seq: int | str | None, body: list[tuple[object, object]], *,
          sender: str = "FUZZ", target: str = US, sending_time: str | None = None,
          begin: str = "FIX.4.4", length_delta: int = 0, bad_checksum: bool = False,
          header_after_body: list[tuple[object, object]] = ()) -> bytes:
    """One FIX frame; values may be bytes (non-ASCII) or str; defects on request."""
    def enc(pairs: list[tuple[object, object]]) -> bytes:
        out = b""
        for tag, value in pairs:
            v = value if isinstance(value, bytes) else str(value).encode()
            out += str(tag).encode() + b"=" + v + SOH
        return out

    head = [(35, msg_type)]
    if seq is not None:
        head.append((34, seq))
    head += [(49, sender), (52, sending_time or now()), (56, target)]
    payload = enc(head) + enc(body) + enc(header_after_body)
    out = b"8=" + begin.encode() + SOH + b"9=%d" % (len(payload) + length_delta) + SOH + payload
    cs = checksum(out)
    if bad_checksum:
        cs = b"%03d" % ((int(cs) + 1) % 256)
    return out + b"10=" + cs + SOH


_NOW = {"t": 0.0, "s": ""}


def now(shift_s: float = 0.0) -> str:
    if shift_s:
        t = datetime.now(UTC) + timedelta(seconds=shift_s)
        return t.strftime("%Y%m%d-%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    mono = time.monotonic()
    if mono - _NOW["t"] > 1.0:  # a fresh SendingTime each second is accurate enough
        t = datetime.now(UTC)
        _NOW["s"] = t.strftime("%Y%m%d-%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
        _NOW["t"] = mono
    return _NOW["s"]


def parse_frames(buf: bytearray) -> list[list[tuple[int, bytes]]]:
    """Cut complete replies off ``buf`` (the engine's output is well formed)."""
    out = []
    while True:
        end = buf.find(SOH + b"10=")
        if end < 0 or len(buf) < end + 8:
            return out
        raw = bytes(buf[:end + 8])
        del buf[:end + 8]
        fields = []
        for part in raw[:-1].split(SOH):
            tag, _, value = part.partition(b"=")
            fields.append((int(tag), value))
        out.append(fields)


def get(fields: list[tuple[int, bytes]], tag: int) -> str | None:
    for t, v in fields:
        if t == tag:
            return v.decode("latin-1")
    return None


# ---- expectations -------------------------------------------------------------------------
@dataclass
class Expect:
    """What the engine must answer to one message: nothing (``kind="none"``), a Reject with
    373=``reason`` (and 371=``tag`` when given), or a Heartbeat echoing ``test_id``."""

    kind: str
    reason: int = 0
    tag: int | None = None
    test_id: str = ""
    seq: int = 0
    category: str = ""


@dataclass
class Tally:
    hostile: int = 0
    by_category: dict[str, int] = field(default_factory=dict)

    last: str = ""

    def add(self, category: str, n: int = 1) -> None:
        self.last = category
        self.hostile += n
        self.by_category[category] = self.by_category.get(category, 0) + n


D_BODY = [(11, "o1"), (21, "1"), (38, "1"), (40, "1"), (54, "1"), (55, "EURUSD"),
          (60, "20240102-10:00:00")]
FILLER = [(112, "F" * 300)]  # long enough that a frame cut short always ends inside it


def survivable(rng: random.Random, seq: int, tally: Tally) -> tuple[bytes, Expect, int]:
    """One hostile message of a kind the session survives; returns (bytes, what the engine
    must answer, how many sequence numbers it uses)."""
    kind = rng.choices(SURVIVABLE, WEIGHTS)[0]
    tally.add(kind)
    tr = [(112, f"t{seq}")]
    if kind == "bad_checksum":
        return frame("1", seq, tr, bad_checksum=True), Expect("none"), 0
    if kind == "length_short":
        return frame("1", seq, tr, length_delta=-rng.randint(1, 8)), Expect("none"), 0
    if kind == "length_long":  # swallows the filler that follows
        return (frame("1", seq, tr, length_delta=rng.randint(1, 20))
                + frame("0", seq, FILLER)), Expect("none"), 0
    if kind == "truncated":  # cut after BodyLength: swallows the filler that follows
        full = frame("1", seq, tr)
        cut = rng.randint(full.index(b"\x0135=") + 1, len(full) - 8)
        return full[:cut] + frame("0", seq, FILLER), Expect("none"), 0
    if kind == "header_garbled":  # 35 before 9 (BodyLength right): not a FIX message
        rest = b"35=1\x0134=%d\x0149=FUZZ\x0152=%s\x0156=%s\x01112=g\x01" % (
            seq, now().encode(), US.encode())
        raw = b"8=FIX.4.4\x01" + rest[:5] + b"9=%d\x01" % (len(rest) - 5) + rest[5:]
        return raw + b"10=" + checksum(raw) + SOH, Expect("none"), 0
    if kind == "noise":  # bytes between frames that hold no "8="
        noise = bytes(rng.choice(NOISE) for _ in range(rng.randint(1, 64)))
        return noise, Expect("none"), 0
    if kind == "repeated_tag":
        return (frame("1", seq, [(112, "a"), (112, "b")]),
                Expect("reject", 13, 112, seq=seq), 1)
    if kind == "header_out_of_order":
        body = [(112, f"t{seq}")]
        raw = frame("1", seq, body, header_after_body=[(50, "LATE")])
        return raw, Expect("reject", 14, 50, seq=seq), 1
    if kind == "tag_without_value":
        return frame("1", seq, [(112, "")]), Expect("reject", 4, 112, seq=seq), 1
    if kind == "required_missing":
        return frame("1", seq, [(58, "no id")]), Expect("reject", 1, 112, seq=seq), 1
    if kind == "tag_not_for_type":
        return frame("1", seq, [*tr, (55, "EURUSD")]), Expect("reject", 2, 55, seq=seq), 1
    if kind == "invalid_tag":
        return frame("1", seq, [*tr, (4999, "x")]), Expect("reject", 0, 4999, seq=seq), 1
    if kind == "bad_enum":
        body = [(t, "Z" if t == 54 else v) for t, v in D_BODY]
        return frame("D", seq, body), Expect("reject", 5, 54, seq=seq), 1
    if kind == "non_ascii_number":  # UTF-8 digits in an integer quantity
        body = [(t, "١٢".encode() if t == 38 else v) for t, v in D_BODY]
        return frame("D", seq, body), Expect("reject", 6, 38, seq=seq), 1
    if kind == "non_ascii_text":  # free text may hold any bytes: a valid order
        body = [*D_BODY, (58, bytes(range(0x80, 0x100)).replace(SOH, b""))]
        return frame("D", seq, body), Expect("none", seq=seq), 1
    if kind == "unicode_seq":  # a superscript digit is a digit to str.isdigit, not to FIX
        return frame("1", "²", tr), Expect("reject", 6, 34, seq=0), 0
    if kind == "bad_group_count":
        body = [(262, f"m{seq}"), (263, "1"), (264, "0"), (267, "²"), (269, "0"), (146, "1"),
                (55, "EURUSD")]
        return frame("V", seq, body), Expect("reject", 6, 267, seq=seq), 1
    if kind == "group_count_mismatch":
        body = [(262, f"m{seq}"), (263, "1"), (264, "0"), (267, "3"), (269, "0"), (269, "1"),
                (146, "1"), (55, "EURUSD")]
        return frame("V", seq, body), Expect("reject", 16, 267, seq=seq), 1
    if kind == "invalid_msgtype":
        return frame("ZZ", seq, tr), Expect("reject", 11, seq=seq), 1
    if kind == "huge_field":
        test_id = "H" * 100_000
        return frame("1", seq, [(112, test_id)]), Expect("heartbeat", test_id=test_id), 1
    raise AssertionError(kind)


SURVIVABLE = ("bad_checksum", "length_short", "length_long", "truncated", "header_garbled",
              "noise", "repeated_tag", "header_out_of_order", "tag_without_value",
              "required_missing", "tag_not_for_type", "invalid_tag", "bad_enum",
              "non_ascii_number", "non_ascii_text", "unicode_seq", "bad_group_count",
              "group_count_mismatch", "invalid_msgtype", "huge_field")
WEIGHTS = [1.0] * (len(SURVIVABLE) - 1) + [0.02]  # huge fields: 100 kB each way, a few
NOISE = bytes(b for b in range(256) if b not in b"8=")
TERMINAL = ("seq_too_low", "wrong_compid", "sending_time", "begin_string", "ten_mb_line")
PRE_LOGON = ("garbled_logon", "app_before_logon", "unknown_compids", "logon_missing_field")
SLOW_PRE_LOGON = ("ten_mb_line", "noise_only")  # closed at the logon timeout: run in parallel


# ---- a connection -------------------------------------------------------------------------
class Client:
    """A raw FIX client: writes bytes, collects the engine's replies in a background task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.replies: list[list[tuple[int, bytes]]] = []
        self.eof = asyncio.Event()
        self.new = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = await self.reader.read(1 << 20)
                if not data:
                    break
                buf += data
                got = parse_frames(buf)
                if got:
                    self.replies += got
                    self.new.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof.set()
            self.new.set()

    async def send(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass  # the engine closed first: what the tests expect for some inputs

    async def wait_reply(self, pred, what: str):
        end = time.monotonic() + WAIT
        while True:
            for r in self.replies:
                if pred(r):
                    return r
            if self.eof.is_set():
                raise AssertionError(f"connection closed while waiting for {what}; "
                                     f"got {[get(r, 35) for r in self.replies]}")
            self.new.clear()
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new.wait(), left)

    async def wait_closed(self, what: str) -> None:
        try:
            await asyncio.wait_for(self.eof.wait(), WAIT)
        except TimeoutError:
            raise AssertionError(f"the engine did not disconnect after {what}") from None

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def logon(port: int, sender: str) -> Client:
    c = await Client.open(port)
    await c.send(frame("A", 1, [(98, 0), (108, 30), (141, "Y")], sender=sender))
    await c.wait_reply(lambda r: get(r, 35) == "A", f"{sender}'s logon reply")
    return c


# ---- episodes -----------------------------------------------------------------------------
async def logged_on_episode(port: int, acceptor: Acceptor, rng: random.Random, n: int,
                            terminal: str, tally: Tally) -> None:
    """Logon, ``n`` survivable hostile messages pipelined, a marker, then a terminal one."""
    c = await logon(port, "FUZZ")
    seq = 2
    expects: list[Expect] = []
    chunk: list[bytes] = []
    for _ in range(n):
        raw, exp, used = survivable(rng, seq, tally)
        exp.category = exp.category or tally.last
        chunk.append(raw)
        seq += used
        if exp.kind != "none":
            expects.append(exp)
        if len(chunk) >= 256:
            await c.send(b"".join(chunk))
            chunk.clear()
    marker = f"END{seq}"
    chunk.append(frame("1", seq, [(112, marker)]))
    seq += 1
    await c.send(b"".join(chunk))
    await c.wait_reply(lambda r: get(r, 35) == "0" and get(r, 112) == marker, "the marker")
    check_replies(c.replies, expects, marker)
    session = next(s for s in acceptor.sessions.values() if s.id.target_comp_id == "FUZZ")
    assert session.next_target_seq == seq, "the engine's expected MsgSeqNum went astray"
    await end_with(c, terminal, seq, tally)
    await c.close()


def check_replies(replies: list, expects: list[Expect], marker: str) -> None:
    """Replies after the Logon, up to the marker's Heartbeat, one for one with ``expects``;
    the engine's own MsgSeqNums have no gap."""
    got = replies[1:]
    idx = next(i for i, r in enumerate(got) if get(r, 112) == marker and get(r, 35) == "0")
    seqs = [int(get(r, 34)) for r in replies[:idx + 2]]
    assert seqs == list(range(1, len(seqs) + 1)), "gap in the engine's MsgSeqNums"
    got = got[:idx]
    if len(got) != len(expects):  # say which categories went unanswered or answered wrongly
        by_ref = {get(r, 45): r for r in got if get(r, 35) == "3"}
        missing: dict[str, int] = {}
        for e in expects:
            if e.kind == "reject" and str(e.seq) not in by_ref:
                missing[e.category] = missing.get(e.category, 0) + 1
        raise AssertionError(f"{len(got)} replies for {len(expects)} expected; no Reject "
                             f"for: {missing}")
    for r, e in zip(got, expects, strict=True):
        if e.kind == "heartbeat":
            assert get(r, 35) == "0" and get(r, 112) == e.test_id, "huge TestRequest unanswered"
            continue
        assert get(r, 35) == "3", f"{e.category}: expected a Reject for seq {e.seq}, got {r}"
        ref = str(e.seq) if e.seq else None  # no RefSeqNum when MsgSeqNum was unreadable
        assert (get(r, 45), get(r, 373)) == (ref, str(e.reason)), (e, r)
        if e.tag is not None:
            assert get(r, 371) == str(e.tag), (e, r)


async def end_with(c: Client, terminal: str, seq: int, tally: Tally) -> None:
    """One message that ends the session, and the answer the rules prescribe."""
    tally.add(terminal)
    before = len(c.replies)

    def fresh(msg_type: str):
        return lambda r: get(r, 35) == msg_type and c.replies.index(r) >= before

    if terminal == "seq_too_low":
        await c.send(frame("1", seq - 5, [(112, "low")]))
        out = await c.wait_reply(fresh("5"), "the Logout for a low MsgSeqNum")
        assert "too low" in (get(out, 58) or "")
    elif terminal == "wrong_compid":
        await c.send(frame("1", seq, [(112, "x")], target="SOMEONE"))
        rej = await c.wait_reply(fresh("3"), "the Reject for a wrong CompID")
        assert get(rej, 373) == "9"
        await c.wait_reply(fresh("5"), "the Logout after a wrong CompID")
        await c.send(frame("5", seq + 1, []))
    elif terminal == "sending_time":
        await c.send(frame("1", seq, [(112, "x")], sending_time=now(-3600)))
        rej = await c.wait_reply(fresh("3"), "the Reject for SendingTime")
        assert get(rej, 373) == "10"
        await c.wait_reply(fresh("5"), "the Logout after SendingTime")
        await c.send(frame("5", seq + 1, []))
    elif terminal == "begin_string":
        await c.send(frame("1", seq, [(112, "x")], begin="FIX.4.2"))
        out = await c.wait_reply(fresh("5"), "the Logout for a wrong BeginString")
        assert "BeginString" in (get(out, 58) or "")
        await c.send(frame("5", seq + 1, []))
    elif terminal == "ten_mb_line":
        await c.send(b"8=FIX.4.4\x019=5\x01" + b"X" * (10 << 20))
    else:
        raise AssertionError(terminal)
    await c.wait_closed(terminal)


async def pre_logon_episode(port: int, kind: str, tally: Tally) -> None:
    """One connection that never logs on properly: the engine must close it."""
    tally.add("pre_logon:" + kind)
    c = await Client.open(port)
    if kind == "garbled_logon":
        await c.send(frame("A", 1, [(98, 0), (108, 30)], bad_checksum=True))
    elif kind == "app_before_logon":
        await c.send(frame("D", 1, D_BODY))
    elif kind == "unknown_compids":
        await c.send(frame("A", 1, [(98, 0), (108, 30)], sender="STRANGER"))
    elif kind == "logon_missing_field":
        await c.send(frame("A", 1, [(98, 0)]))
    elif kind == "ten_mb_line":
        await c.send(b"X" * (10 << 20))
    elif kind == "noise_only":
        await c.send(bytes(random.Random(len(kind)).choice(NOISE) for _ in range(512)))
    await c.wait_closed("pre-logon " + kind)
    assert not any(get(r, 35) == "A" for r in c.replies), f"{kind}: the engine logged on"
    await c.close()


# ---- the well-behaved session -------------------------------------------------------------
async def good_citizen(port: int, stop: asyncio.Event, rounds: list[int]) -> None:
    """TestRequest round trips on the GOOD session until ``stop``; every one answered."""
    c = await logon(port, "GOOD")
    seq = 2
    try:
        while not stop.is_set():
            test_id = f"G{seq}"
            await c.send(frame("1", seq, [(112, test_id)], sender="GOOD"))
            await c.wait_reply(lambda r: get(r, 112) == test_id, "the GOOD session's heartbeat")  # noqa: B023
            seq += 1
            rounds.append(seq)
            c.replies.clear()
            await asyncio.sleep(0.02)
    finally:
        await c.close()


def rss_bytes() -> int:
    """Resident memory after handing freed heap back to the OS (glibc keeps freed arenas
    resident otherwise, and what else ran in this process before decides how much): what the
    acceptor still holds, not what the allocator kept."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Quiet:
    """The fuzzed session's application: takes orders without a word."""

    async def on_logon(self, session) -> None:
        pass

    async def on_logout(self, session) -> None:
        pass

    async def on_message(self, session, msg: Message) -> None:
        pass


def test_hostile_messages_get_what_the_rules_prescribe_and_the_acceptor_keeps_serving(
        tmp_path: Path) -> None:
    tally = Tally()
    asyncio.run(_fuzz(tmp_path, tally))
    assert tally.hostile >= TOTAL
    assert all(tally.by_category.get(k, 0) > 0 for k in SURVIVABLE + TERMINAL)
    assert all(tally.by_category.get("pre_logon:" + k, 0) > 0
               for k in PRE_LOGON + SLOW_PRE_LOGON)


async def _fuzz(tmp: Path, tally: Tally) -> None:
    import logging

    logging.getLogger("emp.fix").setLevel(logging.ERROR)  # 10^5 warnings would cost seconds
    sessions = [SessionSettings(sender_comp_id=US, target_comp_id=who, heartbeat_interval=30,
                                reset_on_logon=True, logon_timeout_s=0.5, logout_timeout_s=0.5,
                                store_path=tmp / "store.db")
                for who in ("FUZZ", "GOOD")]
    acceptor = await start_acceptor(AcceptorSettings(port=0, sessions=sessions), Quiet())
    stop = asyncio.Event()
    rounds: list[int] = []
    good = asyncio.create_task(good_citizen(acceptor.port, stop, rounds))
    rng = random.Random(13)
    try:
        await until_rounds(rounds, 1)
        episodes = -(-(TOTAL - 200) // PER_EPISODE)
        marks = []
        for e in range(episodes):
            await logged_on_episode(acceptor.port, acceptor, rng, PER_EPISODE,
                                    TERMINAL[e % len(TERMINAL)], tally)
            for k in PRE_LOGON:
                await pre_logon_episode(acceptor.port, k, tally)
            if e % 10 == 0:
                await asyncio.gather(*(pre_logon_episode(acceptor.port, k, tally)
                                       for k in SLOW_PRE_LOGON * 2))
            if e in (episodes // 2 - 1, episodes - 1):
                gc.collect()
                marks.append(rss_bytes())
        assert not good.done(), "the well-behaved session died"
        before = len(rounds)
        await until_rounds(rounds, before + 1)
        growth = marks[1] - marks[0]
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth >> 20} MB in the second half"
    finally:
        stop.set()
        await good
        await acceptor.close()
    assert len(rounds) >= 10


async def until_rounds(rounds: list[int], n: int) -> None:
    end = time.monotonic() + WAIT
    while len(rounds) < n:
        assert time.monotonic() < end, "the well-behaved session stopped getting answers"
        await asyncio.sleep(0.01)
