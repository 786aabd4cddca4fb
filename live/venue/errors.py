"""The venue's user-facing errors: one line, naming the problem and where (``emp venue`` prints
them without a traceback)."""

from __future__ import annotations

from core.errors import EmpError


class VenueError(EmpError):
    """A venue problem the user can fix (config, data, port)."""


class VenueConfigError(VenueError, ValueError):
    """A venue config that cannot run; the message names the file and the key."""


class OrderError(VenueError, ValueError):
    """An order the venue refuses; becomes the Text(58) of a rejecting ExecutionReport."""

    def __init__(self, message: str, reason: int = 99) -> None:
        super().__init__(message)
        self.reason = reason  # OrdRejReason(103): 1 unknown symbol, 6 duplicate, 11 unsupported, 99 other
