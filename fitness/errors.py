"""The kernel's input error: bad segments, state records, mask-cache settings or live bars."""

from __future__ import annotations

from core.errors import EmpError


class KernelInputError(EmpError, ValueError):
    """Input the backtest kernel cannot run on; the message names the argument and the value."""
