"""Publish champions to the live host: bundles first, pointers last, each copy atomic.

``publish(root, dest)`` mirrors, for each symbol, the bundles named by its pointers and then the
pointers themselves from ``root`` (``$EMP_HOME/champions``) to ``dest``, the champions directory
of the live host, in the same layout (see ``champions.pointer``)::

    <dest>/<SYMBOL>/bundles/<sha256>.json
    <dest>/<SYMBOL>/current.json
    <dest>/<SYMBOL>/paper.json

Why this order: the live executor may reload at any moment. A pointer is copied only after every
bundle it names is complete at the destination and re-hashed there, and each file lands by a
rename, so the destination never holds a pointer to a missing or half-copied bundle; a publish
killed at any point leaves the old pointer resolving to its old, intact bundle, and a re-run
completes it. Old bundles are kept (rollback is one pointer swap on either side).

What is copied is what was verified: each pointer is read and validated once, its bundle re-hashed
against it, and those exact bytes are what gets written (for rsync, from a private staging
copy), so a promotion racing with the publish cannot slip an unverified pointer through. Only
``<SYMBOL>/bundles/<sha256>.json`` and the pointer files are ever copied, never a key, a ``.env``
or the registry database lying elsewhere under EMP_HOME; symlinks are refused.

``dest`` is a local directory or an rsync destination ``[user@]host:path`` (a ':' before any
'/'). Remote copies run ``rsync`` over ssh per file (rsync writes a temp file and renames it;
``--checksum`` decides what to send, and a checksum dry run re-verifies each bundle before its
pointer goes). ``EMP_PUBLISH_VIA=rsync`` uses rsync for a local ``dest`` too. Local copies write
a temp file beside the target, fsync it, check its sha256, rename it and fsync the directory.

Test hook: ``EMP_PUBLISH_HOLD=bundle-partial`` (after the first 64 KiB of a bundle's temp file,
local copies) or ``=before-pointer`` (bundles done, no pointer written) prints ``HOLD <stage>``
to stderr and sleeps up to 60 s, so a test can kill the process exactly there.

Imports only the standard library and ``core``: this may run on the live host too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from champions.pointer import (
    MAX_POINTER_BYTES,
    STAGES,
    SYMBOL_RULE,
    PointerError,
    bundle_name,
    check_symbol,
    parse_pointer,
    read_regular,
    resolve,
    sha256_hex,
)
from core.atomic import TMP_MARK, fsync_dir, fsync_file, pid_alive, temp_path_for
from core.errors import EmpError
from core.secrets import mask_text

CHUNK = 64 * 1024
HOLD_ENV = "EMP_PUBLISH_HOLD"
HOLD_STAGES = ("bundle-partial", "before-pointer")
VIA_ENV = "EMP_PUBLISH_VIA"
RSYNC_OPTIONS = ("--relative", "--checksum", "--itemize-changes", "--chmod=D755,F644",
                 "--timeout=120")


class PublishError(EmpError, RuntimeError):
    """Publication failed (bad destination, rsync missing or failing, a copy that does not
    verify); the destination's pointers still name complete bundles."""


@dataclass(frozen=True)
class _File:
    """One file to copy: its path relative to the champions root and its verified bytes."""

    symbol: str
    rel: str
    data: bytes
    label: str

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


_held: set[str] = set()


def _hold(stage: str) -> None:
    """The test-only crash point: announce it and wait to be killed (once per process)."""
    if os.environ.get(HOLD_ENV) == stage and stage not in _held:
        _held.add(stage)
        print(f"HOLD {stage}", file=sys.stderr, flush=True)
        time.sleep(60)


def is_remote(dest: str) -> bool:
    """``[user@]host:path`` (rsync's rule: a ':' before any '/') is remote; the rest is local."""
    colon, slash = dest.find(":"), dest.find("/")
    return colon > 0 and (slash < 0 or colon < slash)


def _symbols(root: Path, symbols: list[str] | None) -> list[str]:
    def has_pointer(d: Path) -> bool:
        return any(os.path.lexists(d / name) for name in STAGES.values())

    if symbols is None:
        found = sorted(d.name for d in root.iterdir()
                       if SYMBOL_RULE.fullmatch(d.name) and d.is_dir() and has_pointer(d))
        if not found:
            raise PublishError(f"{root}: no champion pointers to publish")
        return found
    for s in symbols:
        try:
            check_symbol(s)
        except PointerError as exc:
            raise PublishError(str(exc)) from None
        if not has_pointer(root / s):
            raise PublishError(f"{root / s}: no champion pointer for symbol {s}")
    return list(dict.fromkeys(symbols))


def _plan(root: Path, symbols: list[str]) -> tuple[list[_File], list[_File]]:
    """Every bundle and pointer to copy, read and verified once (bundles deduplicated)."""
    bundles: dict[str, _File] = {}
    pointers: list[_File] = []
    for symbol in symbols:
        for stage, name in STAGES.items():
            path = root / symbol / name
            if not os.path.lexists(path):
                continue
            raw = read_regular(path, PointerError, "champion pointer", MAX_POINTER_BYTES)
            pointer = parse_pointer(raw, path)
            _, data = resolve(pointer)
            try:
                if not isinstance(json.loads(data), dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # also UnicodeDecodeError
                raise PublishError(f"{pointer.bundle_path}: not a champion bundle (JSON "
                                   f"object): {exc}") from None
            rel = f"{symbol}/{bundle_name(pointer.sha256)}"
            bundles.setdefault(rel, _File(symbol, rel, data, f"bundle {pointer.sha256[:12]}"))
            pointers.append(_File(symbol, f"{symbol}/{name}", raw,
                                  f"{stage} pointer -> {pointer.sha256[:12]} "
                                  f"(champion {pointer.champion_id})"))
    return list(bundles.values()), pointers


def publish(root: Path, dest: str, symbols: list[str] | None = None, *,
            progress: Callable[[str], None] | None = None) -> list[str]:
    """Copy the champions of ``symbols`` (default: every symbol with a pointer) from ``root``
    to ``dest``: bundles first, pointers last. Returns one line per file copied, or
    ``<SYMBOL>: up to date``."""
    root = Path(root)
    if not root.is_dir():
        raise PublishError(f"{root}: champions directory not found")
    if not isinstance(dest, str | os.PathLike) or not str(dest).strip():
        raise PublishError("publish destination is empty")
    dest = os.fspath(dest)
    if dest.startswith("-"):
        raise PublishError(f"publish destination {mask_text(dest)!r} starts with '-'")
    bundles, pointers = _plan(root, _symbols(root, symbols))
    use_rsync = is_remote(dest) or os.environ.get(VIA_ENV, "").lower() == "rsync"
    target: _Target = _RsyncTarget(dest) if use_rsync else _LocalTarget(dest)
    lines: list[str] = []
    changed: set[str] = set()

    def say(f: _File, what: str) -> None:
        changed.add(f.symbol)
        lines.append(f"{f.symbol}: {f.label} {what}")
        if progress is not None:
            progress(lines[-1])

    with target:
        for f in bundles:
            if target.put(f, hold="bundle-partial"):
                say(f, f"copied ({len(f.data)} bytes)")
        _hold("before-pointer")
        for f in bundles:
            target.verify(f)
        for f in pointers:
            if target.put(f):
                say(f, "written")
    for symbol in dict.fromkeys(f.symbol for f in pointers):
        if symbol not in changed:
            lines.append(f"{symbol}: up to date")
            if progress is not None:
                progress(lines[-1])
    return lines


class _Target(ABC):
    """Where files go. ``put`` returns whether it wrote; ``verify`` checks a bundle there."""

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abstractmethod
    def put(self, f: _File, hold: str | None = None) -> bool: ...

    @abstractmethod
    def verify(self, f: _File) -> None: ...


class _LocalTarget(_Target):
    """A local directory: temp file, fsync, verify, rename, fsync dir, for each file."""

    def __init__(self, dest: str) -> None:
        self.base = Path(dest)
        try:
            if not self.base.is_dir():
                if os.path.lexists(self.base):
                    raise PublishError(f"publish destination {dest} is not a directory")
                if not self.base.parent.is_dir():
                    raise PublishError(f"publish destination {dest}: parent directory "
                                       f"{self.base.parent} does not exist")
                self.base.mkdir()
                fsync_dir(self.base.parent)
        except OSError as exc:
            raise PublishError(f"publish destination {dest}: {exc.strerror or exc}") from None

    def _mkdirs(self, d: Path) -> None:
        missing = []
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            m.mkdir(exist_ok=True)
            fsync_dir(m.parent)

    @staticmethod
    def _sweep(target: Path) -> None:
        """Remove temp files of ``target`` left by a publish that was killed (dead pid)."""
        for tmp in target.parent.glob(f"{target.name}{TMP_MARK}*"):
            pid = tmp.name[len(target.name) + len(TMP_MARK):].partition("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)

    def _current(self, path: Path) -> bytes | None:
        try:
            return read_regular(path, PublishError, "destination file")
        except PublishError:
            return None

    def put(self, f: _File, hold: str | None = None) -> bool:
        path = self.base / f.rel
        try:
            self._mkdirs(path.parent)
            self._sweep(path)
            if self._current(path) == f.data:
                return False
            self._write(path, f, hold)
        except OSError as exc:
            raise PublishError(f"{path}: cannot write: {exc.strerror or exc}") from None
        return True

    def _write(self, path: Path, f: _File, hold: str | None) -> None:
        tmp = temp_path_for(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as fh:
                view = memoryview(f.data)
                for start in range(0, len(view), CHUNK):
                    fh.write(view[start:start + CHUNK])
                    if start == 0 and hold is not None:
                        fh.flush()
                        _hold(hold)
                fh.flush()
                os.fsync(fh.fileno())
            if sha256_hex(tmp.read_bytes()) != f.sha256:
                raise PublishError(f"{tmp}: the copy does not match its source's sha256")
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self, f: _File) -> None:
        _verify_local(self.base / f.rel, f)


class _RsyncTarget(_Target):
    """rsync, per file, from a private staging copy of the verified bytes (ssh for remotes)."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.remote = is_remote(dest)
        self.rsync = shutil.which("rsync")
        if self.rsync is None:
            raise PublishError(f"rsync not found on PATH (needed to publish to "
                               f"{mask_text(dest)}); install rsync")
        if not self.remote:
            base = Path(dest)
            if os.path.lexists(base) and not base.is_dir():
                raise PublishError(f"publish destination {dest} is not a directory")
        self._stage: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> _RsyncTarget:
        self._stage = tempfile.TemporaryDirectory(prefix="emp-publish-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stage is not None:
            self._stage.cleanup()
            self._stage = None

    def _staged(self, f: _File) -> str:
        assert self._stage is not None
        path = Path(self._stage.name) / f.rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f.data)
        return f"{self._stage.name}/./{f.rel}"  # '/./': --relative recreates <SYMBOL>/... there

    def _run(self, f: _File, *extra: str) -> list[str]:
        dest = self.dest if self.dest.endswith("/") else self.dest + "/"
        cmd = [self.rsync, *RSYNC_OPTIONS, *extra, self._staged(f), dest]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise PublishError(f"cannot run rsync: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no message"
            raise PublishError(f"rsync of {f.rel} to {mask_text(self.dest)} failed (exit "
                               f"{proc.returncode}): {mask_text(tail)}")
        return [ln for ln in proc.stdout.splitlines() if ln[:2] in (">f", "<f")]

    def put(self, f: _File, hold: str | None = None) -> bool:
        sent = bool(self._run(f))
        if sent and not self.remote:
            path = Path(self.dest) / f.rel
            fsync_file(path)
            fsync_dir(path.parent)
        return sent

    def verify(self, f: _File) -> None:
        if self._run(f, "--dry-run"):
            raise PublishError(f"{mask_text(self.dest)}/{f.rel}: published bundle does not "
                               "match its sha256 (rsync checksum); pointers left unchanged")
        if not self.remote:
            _verify_local(Path(self.dest) / f.rel, f)


def _verify_local(path: Path, f: _File) -> None:
    """Re-hash a bundle at a local destination before any pointer to it is written."""
    if sha256_hex(read_regular(path, PublishError, "published bundle")) != f.sha256:
        raise PublishError(f"{path}: published bundle does not match its sha256; "
                           "pointers left unchanged")
