"""Errors of the ops layer: one-line messages, subclasses of ``EmpError`` (no tracebacks)."""

from __future__ import annotations

from core.errors import EmpError


class OpsError(EmpError):
    """Base of every ops-layer error a user or caller may see."""


class OpsConfigError(OpsError, ValueError):
    """An ops setting is wrong (bind address, label value, environment): says which and where."""


class NotifyError(OpsError, RuntimeError):
    """systemd's notify socket cannot be reached or ``$NOTIFY_SOCKET`` is malformed."""
