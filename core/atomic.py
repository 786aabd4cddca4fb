"""Crash-safe file writes: write a temp file beside the target, fsync it, rename, fsync the dir."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_path_for(target: Path) -> Path:
    """A unique temp name in the target's directory, so the final rename stays on one filesystem."""
    return target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` so that readers see either the old or the new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (its temp files or lock notes are not leftovers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True
