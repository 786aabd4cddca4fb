"""One FIX message as the application sees it, independent of the wire.

The session layer owns the standard header and trailer (8, 9, 35, 34, 49, 56, 52, 10); an
application fills only the body, and may add extra header fields (50 SenderSubID, 57
TargetSubID, ...). Kept free of I/O so the engine and the venue simulator share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SOH = "\x01"

# Username/Password and RawData: never shown in clear by repr (logs print messages).
SECRET_TAGS = frozenset({553, 554, 96, 925})
MASK = "***"


class Message:
    """One FIX message: MsgType, body fields in wire order (repeating groups flattened in
    order), and header fields (inbound: as received; outbound: extra ones to add)."""

    __slots__ = ("fields", "header", "msg_type")

    def __init__(self, msg_type: str, fields: Iterable[tuple[int, str]] = (), *,
                 header: Mapping[int, str] | None = None) -> None:
        self.msg_type: str = msg_type
        self.fields: list[tuple[int, str]] = [(int(t), str(v)) for t, v in fields]
        self.header: dict[int, str] = dict(header) if header else {}

    def get(self, tag: int, default: str | None = None) -> str | None:
        """The first body value of ``tag`` (groups repeat tags: see ``get_all``)."""
        for t, v in self.fields:
            if t == tag:
                return v
        return default

    def get_all(self, tag: int) -> list[str]:
        """Every body value of ``tag``, in wire order."""
        return [v for t, v in self.fields if t == tag]

    def append(self, tag: int, value: object) -> Message:
        """Add a body field (``str(value)``); returns self so calls chain."""
        self.fields.append((int(tag), str(value)))
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.msg_type == other.msg_type and self.fields == other.fields
                and self.header == other.header)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        def show(pairs: Iterable[tuple[int, str]]) -> str:
            return "|".join(f"{t}={MASK if t in SECRET_TAGS else v}" for t, v in pairs)
        head = f" header={show(sorted(self.header.items()))}" if self.header else ""
        return f"Message({self.msg_type!r}, {show(self.fields)}{head})"
