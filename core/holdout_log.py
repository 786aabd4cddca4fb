"""The hold-out read log: every command that reads a hold-out says so here, so a later reader
is warned that it is no longer untouched evidence.

``$EMP_HOME/holdout_reads.json`` maps ``SYMBOL/TIMEFRAME`` to the reads of that history's
hold-out (``emp gates`` passes and ``emp backtest --include-holdout``), each with its time, the
command and the dates read; ``emp gates`` also keeps its own passes per run in
``runs/<id>/gates/holdout_reads.json``. Appends hold an exclusive ``flock`` on a lock file
beside the log, so concurrent readers never lose an entry, and are written atomically.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Any

from core.errors import EmpError
from core.jsonio import read_json, write_json

GLOBAL_LOG = "holdout_reads.json"


def global_log(home: Path) -> Path:
    return Path(home) / GLOBAL_LOG


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _locked_update(path: Path, update: Any) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        doc = read_json(path, EmpError) if path.exists() else None
        doc = update(doc)
        write_json(path, doc, indent=1)
        return doc
    finally:
        os.close(fd)


def append(path: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``entry`` to the list in ``path``; the whole list after it."""
    def add(doc: Any) -> list:
        doc = doc if isinstance(doc, list) else []
        return [*doc, entry]

    return _locked_update(Path(path), add)


def record(home: Path, series: str, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Log one read of ``series``'s (``SYMBOL/TIMEFRAME``) hold-out in the global log; every
    read of it so far, this one last."""
    def add(doc: Any) -> dict:
        doc = doc if isinstance(doc, dict) else {}
        doc[series] = [*doc.get(series, []), {"time": now(), **entry}]
        return doc

    return _locked_update(global_log(home), add)[series]


def reads(home: Path, series: str) -> list[dict[str, Any]]:
    path = global_log(home)
    doc = read_json(path, EmpError) if path.exists() else {}
    return list(doc.get(series, [])) if isinstance(doc, dict) else []
