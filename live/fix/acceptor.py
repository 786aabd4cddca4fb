"""FIX acceptor: one listening socket, several sessions, one connection per session.

A new connection's first frame names its session (BeginString, CompIDs, SubIDs, reversed);
an unknown session, a session already connected, or garbage before a frame -> the connection
is closed. A failing connection never touches another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from live.fix import codec
from live.fix.config import AcceptorSettings, SessionSettings
from live.fix.errors import FrameTooLarge, InvalidMessage
from live.fix.session import Application, Session

log = logging.getLogger("emp.fix.acceptor")


class Acceptor:
    """A running acceptor: ``port`` (bound), ``sessions`` (by SessionID), ``close()``."""

    def __init__(self, settings: AcceptorSettings, app: Application) -> None:
        self.settings = settings
        self.app = app
        self.sessions: dict = {}
        self._by_settings: list[tuple[SessionSettings, Session]] = []
        for st in settings.sessions:
            creds = st.credentials.load() if st.credentials is not None else None
            session = Session(st, app, initiator=False, credentials=creds)
            self.sessions[session.id] = session
            self._by_settings.append((st, session))
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self._max_size = max(st.max_message_size for st in settings.sessions)
        self._logon_timeout = max(st.logon_timeout_s for st in settings.sessions)

    async def start(self) -> None:
        ssl_ctx = self.settings.tls.context(server=True) if self.settings.tls else None
        self._server = await asyncio.start_server(self._on_connection, self.settings.host,
                                                  self.settings.port, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FIX acceptor listening on %s:%d (%d sessions)", self.settings.host,
                 self.port, len(self.sessions))

    def lookup(self, parsed: codec.Parsed) -> Session | None:
        """The session a peer's message is addressed to (most specific match wins)."""
        h = parsed.header
        begin, ours, theirs = h.get(8), h.get(56), h.get(49)
        our_sub, their_sub = h.get(57), h.get(50)
        best, best_score = None, -1
        for st, session in self._by_settings:
            if (st.begin_string, st.sender_comp_id, st.target_comp_id) != (begin, ours, theirs):
                continue
            if st.sender_sub_id is not None and st.sender_sub_id != our_sub:
                continue
            if st.target_sub_id is not None and st.target_sub_id != their_sub:
                continue
            score = (st.sender_sub_id is not None) + (st.target_sub_id is not None)
            if score > best_score:
                best, best_score = session, score
        return best

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except Exception:  # one connection's failure never reaches the others
            log.exception("FIX connection from %s failed", peer)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: object) -> None:
        parser = codec.FrameParser(self._max_size)
        frames: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._logon_timeout
        while not frames:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("FIX connection from %s: no message in time, closed", peer)
                return
            try:
                data = await asyncio.wait_for(reader.read(65536), remaining)
            except (TimeoutError, ConnectionError, OSError):
                return
            if not data:
                return
            try:
                frames = parser.feed(data)
            except FrameTooLarge as exc:
                log.warning("FIX connection from %s: %s, closed", peer, exc)
                return
        try:
            first = codec.parse(frames[0], validate=False)
        except InvalidMessage:
            log.warning("FIX connection from %s: first message unreadable, closed", peer)
            return
        session = self.lookup(first)
        if session is None:
            log.warning("FIX connection from %s: no session for %s:%s->%s, closed", peer,
                        first.header.get(8), first.header.get(49), first.header.get(56))
            return
        if session.connected:
            log.warning("FIX connection from %s: session %s already connected, closed", peer,
                        session.id)
            return
        log.info("FIX connection from %s bound to %s", peer, session.id)
        await session.serve(reader, writer, parser, frames)

    async def close(self) -> None:
        """Stop listening, drop every connection, close the stores."""
        if self._server is not None:
            self._server.close()
        for session in self.sessions.values():
            session.disconnect("acceptor closing")
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for session in self.sessions.values():
            session.close_store()


async def start_acceptor(settings: AcceptorSettings, app: Application) -> Acceptor:
    """Bind (port 0 = ephemeral, see ``Acceptor.port``) and start accepting."""
    acceptor = Acceptor(settings, app)
    await acceptor.start()
    return acceptor
