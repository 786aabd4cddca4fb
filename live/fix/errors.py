"""Errors of the FIX layer: one-line messages, subclasses of ``EmpError`` (no tracebacks)."""

from __future__ import annotations

from core.errors import EmpError


class FixError(EmpError):
    """Base of every FIX-layer error a user or caller may see."""


class FixConfigError(FixError, ValueError):
    """A FIX setting or credentials source is wrong: says which and where."""


class SessionError(FixError, RuntimeError):
    """An operation the session cannot do now (e.g. ``send`` while not logged on)."""


class InvalidMessage(FixError, ValueError):
    """A frame that is not a well-formed FIX message (garbled, bad length or checksum).

    QuickFIX ignores such a message (no reject, no sequence number consumed)."""


class FrameTooLarge(FixError, ValueError):
    """The peer sent more bytes than ``max_message_size`` without a complete frame."""


class SessionReject(FixError):
    """An inbound message breaks a session rule: answered with a Reject (35=3).

    ``reason`` is a SessionRejectReason (373) code, ``tag`` the RefTagID (371) or 0."""

    def __init__(self, reason: int, tag: int = 0) -> None:
        super().__init__(f"session reject {reason} (tag {tag})")
        self.reason = reason
        self.tag = tag


class UnsupportedMessageType(FixError):
    """Raised by an application's ``on_message`` for a message type it does not handle:
    the session answers with a BusinessMessageReject (380=3), as QuickFIX does."""


class BusinessReject(FixError):
    """Raised by an application's ``on_message`` to answer with a BusinessMessageReject
    (35=j) carrying ``reason`` (380) and, optionally, a RefTagID."""

    def __init__(self, reason: int, text: str | None = None, tag: int = 0) -> None:
        super().__init__(text or f"business reject {reason}")
        self.reason = reason
        self.text = text
        self.tag = tag
