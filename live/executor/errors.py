"""The executor's error types (one-line messages, no traceback at the command line)."""

from __future__ import annotations

from core.errors import EmpError


class ExecutorError(EmpError, RuntimeError):
    """The executor cannot start or go on; the message says what and where."""


class LiveConfigError(ExecutorError, ValueError):
    """A live config that cannot be used: names the file, the dotted key and the problem."""


class ChampionError(ExecutorError):
    """A champion that must not be traded (pointer, bundle, signature, state)."""
