"""JSON files and figures: atomic writes, reads that fail with a clear error, and non-finite
floats (which JSON cannot hold) written as text."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_bytes
from core.errors import EmpError


def write_json(path: Path, obj: Any, *, indent: int | None = None) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically (readers see the old or the new file)."""
    atomic_write_bytes(Path(path), json.dumps(obj, indent=indent).encode())


def read_json(path: Path, error: type[Exception] = EmpError) -> Any:
    """The parsed contents of ``path``; a missing, unreadable or corrupt file raises ``error``
    naming the file."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: unreadable: {exc}") from None


def json_float(v: float) -> float | str:
    """A float for a JSON document: finite values as numbers, NaN and ±inf as 'nan', 'inf',
    '-inf' (strict JSON has no literal for them)."""
    return float(v) if math.isfinite(v) else str(float(v))


def float_of_json(v: object) -> float:
    """The inverse of ``json_float``: a number, or 'nan' / 'inf' / '-inf', as a float (any
    other value is NaN: no figure, so a gate that reads it fails)."""
    if isinstance(v, int | float):
        return float(v)
    return float(v) if v in ("nan", "inf", "-inf") else math.nan
