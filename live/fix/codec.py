"""FIX tag=value wire codec: framing, parsing and encoding, written for speed and bounds.

The parser follows QuickFIX's framing (find ``8=``, read ``9=`` BodyLength, take the bytes up
to the ``10=`` field that follows), so a message with a wrong length or checksum is dropped
whole, as QuickFIX drops it. A peer cannot make us buffer more than ``max_message_size``
bytes: the caller disconnects on ``FrameTooLarge``. Parsing is ``bytes.split`` on SOH and
``int()`` per tag, no regular expressions on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from live.fix.errors import FrameTooLarge, InvalidMessage

SOH_B = b"\x01"
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20  # 1 MiB

# Standard header and trailer tags of FIX 4.4 (NoHops 627 and its members included).
HEADER_TAGS = frozenset({8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144,
                         129, 145, 43, 97, 52, 122, 212, 213, 347, 369, 627, 628, 629, 630})
TRAILER_TAGS = frozenset({93, 89, 10})


def checksum(data: bytes) -> int:
    """Sum of the bytes modulo 256 (the 10= value)."""
    return sum(data) & 0xFF


def utc_timestamp(now: datetime | None = None) -> str:
    """SendingTime with milliseconds, as QuickFIX writes it: ``YYYYMMDD-HH:MM:SS.sss``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%d-%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def parse_utc_timestamp(value: str) -> datetime | None:
    """``YYYYMMDD-HH:MM:SS[.fff...]`` -> aware datetime; None when malformed."""
    if len(value) < 17 or value[8] != "-" or value[11] != ":" or value[14] != ":":
        return None
    frac = value[17:]
    if not value.isascii():
        return None
    if frac and (frac[0] != "." or not frac[1:].isdigit() or len(frac) > 10):
        return None
    try:
        base = datetime(int(value[0:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                        int(value[12:14]), int(value[15:17]), tzinfo=UTC)
    except ValueError:
        return None
    if not (value[0:8].isdigit() and value[9:11].isdigit() and value[12:14].isdigit()
            and value[15:17].isdigit()):
        return None
    if frac:
        digits = (frac[1:] + "000000")[:6]
        base = base.replace(microsecond=int(digits))
    return base


def encode(begin_string: str, msg_type: str, header: Iterable[tuple[int, str]],
           body: Iterable[tuple[int, str]] | bytes) -> bytes:
    """A complete frame: ``8``, ``9``, ``35``, the header fields in the given order, the body
    (pairs, or already-encoded bytes ending with SOH) and ``10``."""
    parts = [f"35={msg_type}\x01"]
    parts.extend(f"{t}={v}\x01" for t, v in header)
    head = "".join(parts).encode()
    if isinstance(body, bytes):
        payload = head + body
    else:
        payload = head + "".join(f"{t}={v}\x01" for t, v in body).encode()
    out = f"8={begin_string}\x019={len(payload)}\x01".encode() + payload
    return out + b"10=%03d\x01" % checksum(out)


class FrameParser:
    """Cuts a byte stream into candidate FIX frames, QuickFIX's way, within a byte budget.

    ``feed`` returns complete frames (bytes). It raises ``FrameTooLarge`` when the buffer
    would exceed ``max_message_size`` without yielding a frame; bytes with an unparseable
    BodyLength are dropped (counted in ``dropped``) and the stream goes on.
    """

    __slots__ = ("_buf", "_junk", "dropped", "max_size")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_message_size
        self.dropped = 0  # frames dropped for an unparseable BodyLength
        self._junk = 0  # bytes discarded since the last frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while True:
            try:
                frame = self._next_frame()
            except InvalidMessage:
                self.dropped += 1
                continue
            if frame is None:
                break
            frames.append(frame)
            self._junk = 0
        if len(buf) > self.max_size or self._junk > self.max_size:
            buf.clear()
            self._junk = 0
            raise FrameTooLarge(f"more than {self.max_size} bytes without a complete FIX frame")
        return frames

    def _next_frame(self) -> bytes | None:
        buf = self._buf
        start = buf.find(b"8=")
        if start < 0:
            if len(buf) > 1:  # keep a possible "8" split across reads
                self._junk += len(buf) - 1
                del buf[:-1]
            return None
        if start:
            self._junk += start
            del buf[:start]
        lpos = buf.find(b"\x019=")
        if lpos < 0:
            return None
        lstart = lpos + 3
        lend = buf.find(b"\x01", lstart)
        if lend < 0:
            if len(buf) - lstart > 12:
                self._junk += lstart
                del buf[:lstart]
                raise InvalidMessage("BodyLength (9) is not a number")
            return None
        raw_len = bytes(buf[lstart:lend])
        if not raw_len.isdigit() or len(raw_len) > 9:
            self._junk += lend + 1
            del buf[:lend + 1]
            raise InvalidMessage("BodyLength (9) is not a number")
        length = int(raw_len)
        if length > self.max_size:
            del buf[:lend + 1]
            raise FrameTooLarge(f"BodyLength {length} exceeds max_message_size {self.max_size}")
        pos = lend + 1 + length
        if len(buf) < pos:
            return None
        cpos = buf.find(b"\x0110=", pos - 1)
        if cpos < 0:
            return None
        end = buf.find(b"\x01", cpos + 4)
        if end < 0:
            return None
        frame = bytes(buf[:end + 1])
        del buf[:end + 1]
        return frame


class Parsed:
    """A parsed inbound message: fields in wire order plus what validation needs."""

    __slots__ = ("body", "body_tags_first_bad", "header", "header_list", "msg_type", "raw",
                 "trailer")

    def __init__(self) -> None:
        self.header: dict[int, str] = {}
        self.header_list: list[tuple[int, str]] = []
        self.body: list[tuple[int, str]] = []
        self.trailer: list[tuple[int, str]] = []
        self.msg_type = ""
        self.raw = b""
        self.body_tags_first_bad = 0  # first header/body field out of structure (373=14)


_TAG_INT = {str(i): i for i in range(10_000)}  # the fast path of tag parsing


def _slow_tag(text: str) -> int:
    """A tag outside the cache: ASCII digits, or "-digits" (QuickFIX reads "-1" as a tag)."""
    if text.isascii() and text.isdigit():
        return int(text)
    if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
        return -int(text[1:])
    raise InvalidMessage("field tag is not an integer")


def identify_type(raw: bytes) -> str | None:
    """The MsgType of a frame without parsing it (QuickFIX's identifyType)."""
    i = raw.find(b"\x0135=")
    if i < 0:
        return None
    j = raw.find(b"\x01", i + 4)
    return raw[i + 4:j].decode("latin-1") if j > 0 else None


def parse(raw: bytes, *, validate: bool = True) -> Parsed:
    """Split a frame into header, body and trailer. Raises ``InvalidMessage`` (the message is
    ignored) when the first three fields are not 8, 9, 35, a tag is not an integer, or, with
    ``validate``, BodyLength or CheckSum are wrong."""
    if not raw.endswith(SOH_B):
        raise InvalidMessage("frame does not end with SOH")
    try:  # one decode per frame; UTF-8 never puts SOH or '=' inside a character
        text = raw[:-1].decode()
    except UnicodeDecodeError:
        text = raw[:-1].decode("latin-1")
    parts = text.split("\x01")
    if len(parts) < 4:
        raise InvalidMessage("frame too short")
    if parts[0][:2] != "8=" or parts[1][:2] != "9=" or parts[2][:3] != "35=":
        raise InvalidMessage("header fields out of order (8, 9, 35 must come first)")
    msg = Parsed()
    msg.raw = raw
    header_list = msg.header_list
    header = msg.header
    body = msg.body
    trailer = msg.trailer
    section = 0  # 0 header, 1 body, 2 trailer
    bad = 0
    tags = _TAG_INT
    header_tags = HEADER_TAGS
    for part in parts:
        t, sep, val = part.partition("=")
        if not sep:
            raise InvalidMessage("field without '='")
        tag = tags.get(t)
        if tag is None:
            tag = _slow_tag(t)
        if tag in header_tags:
            if section and not bad:
                bad = tag
            header_list.append((tag, val))
            if tag not in header:
                header[tag] = val
        elif tag in TRAILER_TAGS:
            section = 2
            trailer.append((tag, val))
        else:
            if section == 2 and not bad:
                bad = tag
            section = 1 if section == 0 else section
            body.append((tag, val))
    msg.body_tags_first_bad = bad
    msg.msg_type = header.get(35, "")
    if validate:
        last = trailer[-1] if trailer else None
        if last is None or last[0] != 10:
            raise InvalidMessage("CheckSum (10) is not the last field")
        body_start = raw.find(b"\x01", raw.find(b"\x019=") + 1) + 1
        cs_pos = raw.rfind(b"10=", 0, len(raw) - 1)
        declared_s = header[9]
        if not (declared_s.isascii() and declared_s.isdigit()):
            raise InvalidMessage("BodyLength (9) is not a number")
        declared = int(declared_s)
        if declared != cs_pos - body_start:
            raise InvalidMessage(f"BodyLength {declared} but the body has {cs_pos - body_start}")
        cs_val = last[1]
        if (len(cs_val) != 3 or not (cs_val.isascii() and cs_val.isdigit())
                or int(cs_val) != checksum(raw[:cs_pos])):
            raise InvalidMessage(f"CheckSum {cs_val!r} is wrong")
    return msg
