"""What keeps a run's files honest: canonical digests of JSON documents, the first difference
between two nested settings, and the test hook that stops a process at an exact point.

A digest over a JSON document's canonical form (sorted keys, no spaces) detects an edit that
still parses (a changed generation, an RNG state); it is an integrity check, not a signature.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PAUSE_ENV = "EMP_TEST_PAUSE"
PAUSE_FILE_ENV = "EMP_TEST_PAUSE_FILE"


def canonical(obj: Any) -> bytes:
    """The one byte form of a JSON value that its digest is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings -> (dotted key, leaf), so a difference can be named exactly."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


MISSING = "(absent)"


def differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Every dotted key whose value differs, in ``saved``'s order (then keys only ``current``
    has): ``(key, saved, current)``; a key one side lacks shows ``(absent)``, so a key added
    later is compared too."""
    a, b = dict(flatten(saved, prefix)), dict(flatten(current, prefix))
    keys = [*a, *(k for k in b if k not in a)]
    return [(k, a.get(k, MISSING), b.get(k, MISSING)) for k in keys
            if a.get(k, MISSING) != b.get(k, MISSING)]


def short(v: Any, width: int = 40) -> str:
    """A value as the message shows it: JSON, cut to ``width`` characters."""
    text = v if v is MISSING else json.dumps(v, default=str)
    return text if len(text) <= width else text[:width - 1] + "…"


def pause_for_test(point: str) -> None:
    """Test hook: when ``$EMP_TEST_PAUSE`` names ``point``, touch ``$EMP_TEST_PAUSE_FILE`` and
    wait (up to 5 minutes) for the test to signal or kill this process. Tests use it to crash or
    interrupt a run at an exact point instead of guessing with sleeps. A no-op otherwise."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.05)
