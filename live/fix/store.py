"""SQLite message store: sequence numbers and sent messages, committed before sending.

One database file may hold several sessions (keyed by the session id string). A sent message
is saved and the next sender sequence number advanced in one transaction, committed before
its bytes reach the socket, so a crash never sends a number the store does not know. The
next *target* number is written with every commit but committed on its own only by
``flush`` (called on each timer tick and on close): after a crash it may lag, and the peer
then resends those messages as PossDup, the standard FIX recovery; a commit per inbound
message would cost the inbound throughput.

Credentials never reach the store: ``mask_secrets`` replaces Username/Password/RawData
values before a frame is saved (a stored Logon is never resent, only gap-filled).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from live.fix.errors import FixConfigError
from live.fix.message import MASK, SECRET_TAGS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fix_session (
    session_id TEXT PRIMARY KEY,
    next_sender INTEGER NOT NULL,
    next_target INTEGER NOT NULL,
    created_utc TEXT NOT NULL DEFAULT (strftime('%Y%m%d-%H:%M:%S', 'now'))
);
CREATE TABLE IF NOT EXISTS fix_message (
    session_id TEXT NOT NULL,
    seqnum INTEGER NOT NULL,
    raw BLOB NOT NULL,
    PRIMARY KEY (session_id, seqnum)
);
"""
_SECRET_PREFIXES = tuple(b"\x01%d=" % t for t in SECRET_TAGS)


def mask_secrets(raw: bytes) -> bytes:
    """The frame with every Username/Password/RawData value replaced by ``***``."""
    if not any(p in raw for p in _SECRET_PREFIXES):
        return raw
    out = []
    for part in raw.split(b"\x01"):
        tag, sep, _ = part.partition(b"=")
        if sep and tag.isdigit() and int(tag) in SECRET_TAGS:
            part = tag + b"=" + MASK.encode()
        out.append(part)
    return b"\x01".join(out)


class MessageStore:
    """Per-session view of a SQLite store file. Thread-safe (one lock per object)."""

    def __init__(self, path: str | Path, session_id: str, *, synchronous: str = "NORMAL",
                 ) -> None:
        self.path = Path(path)
        self.session_id = session_id
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise FixConfigError(f"store synchronous={synchronous!r}: use NORMAL or FULL")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FixConfigError(f"FIX message store {self.path}: {exc}") from None
        self._lock = threading.Lock()
        row = self._db.execute(
            "SELECT next_sender, next_target FROM fix_session WHERE session_id=?",
            (session_id,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO fix_session(session_id, next_sender, next_target) "
                             "VALUES (?, 1, 1)", (session_id,))
            row = (1, 1)
        self._next_sender, self._next_target = int(row[0]), int(row[1])
        self._target_dirty = False

    @property
    def next_sender(self) -> int:
        return self._next_sender

    @property
    def next_target(self) -> int:
        return self._next_target

    def save_and_advance(self, seqnum: int, raw: bytes) -> None:
        """Store a sent frame under ``seqnum`` and set next sender to ``seqnum + 1``,
        committed (with the current next target) before returning."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT OR REPLACE INTO fix_message(session_id, seqnum, raw) "
                           "VALUES (?, ?, ?)", (self.session_id, seqnum, mask_secrets(raw)))
                db.execute("UPDATE fix_session SET next_sender=?, next_target=? "
                           "WHERE session_id=?",
                           (seqnum + 1, self._next_target, self.session_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._next_sender = seqnum + 1
            self._target_dirty = False

    def set_next_sender(self, n: int) -> None:
        with self._lock:
            self._db.execute("UPDATE fix_session SET next_sender=? WHERE session_id=?",
                             (n, self.session_id))
            self._next_sender = n

    def set_next_target(self, n: int) -> None:
        """Remember the next expected inbound number (committed by ``flush`` or a save)."""
        self._next_target = n
        self._target_dirty = True

    def flush(self) -> None:
        """Commit the next target number if it changed."""
        if not self._target_dirty:
            return
        with self._lock:
            self._db.execute("UPDATE fix_session SET next_target=? WHERE session_id=?",
                             (self._next_target, self.session_id))
            self._target_dirty = False

    def get_range(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """Stored frames with ``begin <= seqnum <= end``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seqnum, raw FROM fix_message WHERE session_id=? AND seqnum BETWEEN ? "
                "AND ? ORDER BY seqnum", (self.session_id, begin, end)).fetchall()
        return [(int(s), bytes(r)) for s, r in rows]

    def reset(self) -> None:
        """Both numbers back to 1 and the sent messages dropped (ResetSeqNumFlag)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM fix_message WHERE session_id=?", (self.session_id,))
            db.execute("UPDATE fix_session SET next_sender=1, next_target=1, "
                       "created_utc=strftime('%Y%m%d-%H:%M:%S', 'now') WHERE session_id=?",
                       (self.session_id,))
            db.execute("COMMIT")
            self._next_sender = self._next_target = 1
            self._target_dirty = False

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._db.close()
