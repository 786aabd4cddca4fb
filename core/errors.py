"""The one user-facing error type: ``emp`` prints ``emp: error: <message>`` (no traceback) and
exits with the error's exit code.

Each package subclasses it for its own errors (keeping ``ValueError`` or ``RuntimeError`` as a
second base where callers catch those), so the command line catches one type.
"""

from __future__ import annotations


class EmpError(Exception):
    """A problem the user can fix; the message says what and where. Exit code 2 by default."""

    exit_code: int = 2

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code
