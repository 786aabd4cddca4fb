"""The champion pointer: one small JSON file per symbol and stage that names the bundle to trade.

Layout of the champions directory (``$EMP_HOME/champions``, the ``root`` below)::

    <root>/<SYMBOL>/bundles/<sha256>.json   # bundles, immutable, named by the sha256 of their bytes
    <root>/<SYMBOL>/current.json            # pointer to the live champion
    <root>/<SYMBOL>/paper.json              # pointer to the paper champion

A pointer document::

    {"format": "emp-champion-pointer", "version": 1, "symbol": "EURUSD", "timeframe": "1h",
     "stage": "live", "bundle": "bundles/<sha256>.json", "sha256": "<hex>",
     "signature": "<base64 Ed25519, as in the bundle>" | null, "key_id": "<id>" | null,
     "champion_id": 7, "run_id": "...", "key": "...", "written_at": "2025-01-01T00:00:00.000000Z"}

Why a pointer and not a copy: a bundle is written once under its content hash and never changes,
so switching champions is one atomic rename of a ~400-byte file (temp, fsync, rename, fsync dir).
A reader (the live executor, ``publish``) sees the old or the new pointer, never half of one, and
every pointer it sees names a complete bundle: the bundle is stored and verified before the
pointer that names it is written. ``resolve`` re-checks the hash, so a bundle altered on disk
after promotion is refused rather than traded.

Imports only the standard library and ``core``: the live executor on a 1 GB VPS reads this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_bytes, fsync_dir
from core.errors import EmpError

POINTER_FORMAT = "emp-champion-pointer"
POINTER_VERSION = 1
STAGES = {"live": "current.json", "paper": "paper.json"}
BUNDLES_DIR = "bundles"
# the history store's symbol rule (market.store.SYMBOL_RULE), repeated here so this module
# does not load pandas: a symbol is also a directory name, so no '/', no '..', no leading dot
SYMBOL_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
SHA256_RULE = re.compile(r"[0-9a-f]{64}")
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "symbol": str, "timeframe": str, "stage": str, "bundle": str,
    "sha256": str, "signature": (str, type(None)), "key_id": (str, type(None)),
    "champion_id": int, "run_id": str, "key": str, "written_at": str,
}
MAX_POINTER_BYTES = 64 * 1024  # a pointer is ~400 bytes; anything far larger is not one


class PointerError(EmpError, ValueError):
    """A pointer or bundle file that is missing, malformed or does not match its hash."""


@dataclass(frozen=True)
class Pointer:
    """One parsed, validated pointer document and the file it was read from (or written to)."""

    symbol: str
    timeframe: str
    stage: str
    bundle: str
    sha256: str
    signature: str | None
    key_id: str | None
    champion_id: int
    run_id: str
    key: str
    written_at: str
    path: Path

    @property
    def bundle_path(self) -> Path:
        """The bundle file, resolved against the pointer's directory."""
        return self.path.parent / self.bundle

    def document(self) -> dict[str, Any]:
        """The JSON document of this pointer (what ``write_pointer`` stores)."""
        return {"format": POINTER_FORMAT, "version": POINTER_VERSION, "symbol": self.symbol,
                "timeframe": self.timeframe, "stage": self.stage, "bundle": self.bundle,
                "sha256": self.sha256, "signature": self.signature, "key_id": self.key_id,
                "champion_id": self.champion_id, "run_id": self.run_id, "key": self.key,
                "written_at": self.written_at}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_name(sha256: str) -> str:
    """``bundles/<sha256>.json``: the only form a pointer's ``bundle`` field may take."""
    return f"{BUNDLES_DIR}/{sha256}.json"


def check_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not SYMBOL_RULE.fullmatch(symbol):
        raise PointerError(f"invalid symbol name {symbol!r}: use 1 to 40 characters: letters, "
                           "digits, '.', '_' and '-', starting with a letter or digit")
    return symbol


def check_stage(stage: object) -> str:
    if stage not in STAGES:
        raise PointerError(f"invalid stage {stage!r}: use one of {sorted(STAGES)}")
    return str(stage)


def champions_root(home: Path) -> Path:
    """The champions directory of an EMP home (the ``root`` of this module's functions)."""
    return Path(home) / "champions"


def champion_dir(root: Path, symbol: str) -> Path:
    """``<root>/<symbol>``, with ``symbol`` checked to be a plain directory name."""
    return Path(root) / check_symbol(symbol)


def read_regular(path: Path, error: type[EmpError], what: str, limit: int | None = None) -> bytes:
    """The bytes of ``path``, refusing a symlink or a non-regular file (a link planted in the
    champions dir must not make us read, verify or publish some other file)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: {what} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise error(f"{path}: {what} is {st.st_size} bytes, too large to be one")
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: {what} unreadable: {exc.strerror or exc}") from None


def store_bundle(root: Path, symbol: str, data: bytes) -> tuple[Path, str]:
    """Store ``data`` as ``<root>/<symbol>/bundles/<sha256>.json`` atomically and return
    (path, sha256). Storing the same bytes twice is a no-op; a file already there with other
    bytes means the store is corrupt (the name is the hash) and is refused, not overwritten."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise PointerError(f"bundle for {symbol}: expected non-empty bytes")
    sha = sha256_hex(bytes(data))
    path = champion_dir(root, symbol) / bundle_name(sha)
    if os.path.lexists(path):
        present = read_regular(path, PointerError, "bundle")
        if sha256_hex(present) != sha:
            raise PointerError(f"{path}: corrupt bundle store: the file there does not hash to "
                               "its name; inspect it and remove it by hand")
        return path, sha
    atomic_write_bytes(path, bytes(data))
    return path, sha


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_pointer(root: Path, *, symbol: str, timeframe: str, sha256: str, champion_id: int,
                  run_id: str, key: str, signature: str | None = None,
                  key_id: str | None = None, stage: str) -> Pointer:
    """Point ``<root>/<symbol>/<stage file>`` at the stored bundle ``sha256``, atomically.

    The bundle must already be stored (``store_bundle``) and hash to ``sha256``: a pointer is
    never written to a missing or damaged bundle. The swap is temp, fsync, rename, fsync dir,
    so a crash at any moment leaves the old pointer or the new one."""
    stage = check_stage(stage)
    cdir = champion_dir(root, symbol)
    path = cdir / STAGES[stage]
    doc = {"format": POINTER_FORMAT, "version": POINTER_VERSION, "symbol": symbol,
           "timeframe": timeframe, "stage": stage, "bundle": bundle_name(str(sha256)),
           "sha256": sha256, "signature": signature, "key_id": key_id,
           "champion_id": champion_id, "run_id": run_id, "key": key, "written_at": _utc_now()}
    pointer = _validate(doc, path, stage)
    resolve(pointer)  # the bundle is there, complete, and hashes to sha256
    atomic_write_bytes(path, encode_pointer(pointer))
    return pointer


def encode_pointer(pointer: Pointer) -> bytes:
    """The bytes of a pointer file: sorted keys, one line, a final newline."""
    return (json.dumps(pointer.document(), sort_keys=True, separators=(",", ":")) + "\n").encode()


def pointer_path(path_or_dir: Path, stage: str = "live") -> Path:
    """A pointer file: ``path_or_dir`` itself, or the stage's file inside that directory."""
    p = Path(path_or_dir)
    return p / STAGES[check_stage(stage)] if p.is_dir() else p


def read_pointer(path_or_dir: Path, stage: str = "live") -> Pointer:
    """Read and validate a pointer: a file, or a champion directory and a stage.

    A file named ``current.json`` or ``paper.json`` must hold that stage; its symbol must be
    the name of its directory (a pointer copied under another symbol would trade the wrong
    instrument)."""
    path = pointer_path(path_or_dir, stage)
    data = read_regular(path, PointerError, "champion pointer", MAX_POINTER_BYTES)
    return parse_pointer(data, path)


def parse_pointer(data: bytes, path: Path) -> Pointer:
    """Validate the bytes of the pointer file ``path`` (named in every error)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PointerError(f"{path}: champion pointer is not valid JSON: {exc}") from None
    by_name = {v: k for k, v in STAGES.items()}
    return _validate(doc, Path(path), by_name.get(Path(path).name))


def _validate(doc: object, path: Path, expected_stage: str | None) -> Pointer:
    def bad(problem: str) -> PointerError:
        return PointerError(f"{path}: champion pointer {problem}")

    if not isinstance(doc, dict):
        raise bad("is not a JSON object")
    if doc.get("format") != POINTER_FORMAT:
        raise bad(f"has format {doc.get('format')!r}, expected {POINTER_FORMAT!r}")
    if doc.get("version") != POINTER_VERSION or isinstance(doc.get("version"), bool):
        raise bad(f"has version {doc.get('version')!r}; this EMP reads version {POINTER_VERSION}")
    missing = sorted(set(_FIELDS) - set(doc))
    if missing:
        raise bad(f"lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise bad(f"has unknown field(s) {', '.join(unknown)}")
    for name, kind in _FIELDS.items():
        value = doc[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"field {name!r} has the wrong type ({type(value).__name__})")
    for name in ("timeframe", "run_id", "key"):
        if not doc[name]:
            raise bad(f"field {name!r} is empty")
    try:
        check_symbol(doc["symbol"])
        check_stage(doc["stage"])
    except PointerError as exc:
        raise bad(str(exc)) from None
    if expected_stage is not None and doc["stage"] != expected_stage:
        raise bad(f"holds stage {doc['stage']!r} but the file is the {expected_stage!r} pointer")
    if path.parent.name != doc["symbol"]:
        raise bad(f"is for symbol {doc['symbol']!r} but lies in directory {path.parent.name!r}")
    if not SHA256_RULE.fullmatch(doc["sha256"]):
        raise bad(f"field 'sha256' is not 64 lowercase hex digits: {doc['sha256']!r}")
    if doc["bundle"] != bundle_name(doc["sha256"]):
        raise bad(f"field 'bundle' is {doc['bundle']!r}, expected {bundle_name(doc['sha256'])!r}")
    if doc["signature"] is not None:
        try:
            base64.b64decode(doc["signature"], validate=True)
        except (binascii.Error, ValueError):
            raise bad("field 'signature' is not base64") from None
    if doc["champion_id"] < 0:
        raise bad(f"field 'champion_id' is negative ({doc['champion_id']})")
    try:
        when = datetime.fromisoformat(doc["written_at"])
    except ValueError:
        raise bad(f"field 'written_at' is not an ISO-8601 time: {doc['written_at']!r}") from None
    if when.utcoffset() is None or when.utcoffset().total_seconds() != 0:
        raise bad(f"field 'written_at' is not in UTC: {doc['written_at']!r}")
    fields = {k: doc[k] for k in _FIELDS if k not in ("format", "version")}
    return Pointer(**fields, path=path)


def resolve(pointer: Pointer) -> tuple[Path, bytes]:
    """The bundle ``pointer`` names: its path and bytes, after checking they hash to the
    pointer's sha256 (a bundle altered on disk, even by one byte, is refused)."""
    path = pointer.bundle_path
    data = read_regular(path, PointerError, "bundle")
    if sha256_hex(data) != pointer.sha256:
        raise PointerError(f"bundle {path} does not match the pointer's sha256 "
                           f"({pointer.sha256[:12]}…, from {pointer.path})")
    return path, data


def remove_pointer(pointer: Pointer) -> None:
    """Remove a stage's pointer (a retired champion): the executor then holds no champion for
    the stage. The bundle stays, so the audit trail can still show what was traded."""
    pointer.path.unlink(missing_ok=True)
    fsync_dir(pointer.path.parent)


__all__ = ["BUNDLES_DIR", "POINTER_FORMAT", "POINTER_VERSION", "STAGES", "Pointer",
           "PointerError", "bundle_name", "champion_dir", "champions_root", "check_stage", "check_symbol",
           "encode_pointer", "parse_pointer", "pointer_path", "read_pointer", "read_regular",
           "remove_pointer", "resolve", "sha256_hex", "store_bundle", "write_pointer"]
