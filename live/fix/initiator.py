"""FIX initiator: connects, logs on, and reconnects with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from live.fix import codec
from live.fix.config import InitiatorSettings
from live.fix.session import Application, Session

log = logging.getLogger("emp.fix.initiator")


def backoff_delays(min_s: float, max_s: float, jitter: float,
                   rng: random.Random | None = None):
    """Delays before reconnect attempts: min, 2*min, 4*min ... capped at max, each
    multiplied by a random factor in [1 - jitter, 1 + jitter] (never above max)."""
    rng = rng or random.Random()
    delay = min_s
    while True:
        yield min(max_s, delay * (1 + rng.uniform(-jitter, jitter)))
        delay = min(max_s, delay * 2)


class Initiator:
    """A running initiator: ``session``, ``wait_logged_on(timeout)``, ``close()``."""

    def __init__(self, settings: InitiatorSettings, app: Application) -> None:
        self.settings = settings
        st = settings.session
        creds = st.credentials.load() if st.credentials is not None else None
        self.session = Session(st, app, initiator=True, credentials=creds)
        self.connects = 0
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"fix-initiator {self.session.id}")

    async def _run(self) -> None:
        st = self.settings
        ssl_ctx = st.tls.context(server=False) if st.tls else None
        delays = backoff_delays(st.reconnect_min_s, st.reconnect_max_s, st.reconnect_jitter)
        attempts = 0
        while not self._stopping:
            attempts += 1
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(st.host, st.port, ssl=ssl_ctx,
                                            server_hostname=(st.tls.server_hostname if st.tls
                                                             else None)),
                    st.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                log.info("%s: connect to %s:%d failed: %s", self.session.id, st.host, st.port,
                         exc)
            else:
                self.connects += 1
                parser = codec.FrameParser(st.session.max_message_size)
                await self.session.serve(reader, writer, parser)
                if self.session.received_logon:
                    delays = backoff_delays(st.reconnect_min_s, st.reconnect_max_s,
                                            st.reconnect_jitter)
            if self._stopping or (st.max_reconnects is not None
                                  and attempts > st.max_reconnects):
                break
            delay = next(delays)
            log.info("%s: reconnecting in %.2fs", self.session.id, delay)
            await asyncio.sleep(delay)

    async def wait_logged_on(self, timeout: float) -> bool:
        return await self.session.wait_logged_on(timeout)

    async def close(self) -> None:
        """Log out (if logged on), stop reconnecting, close the store."""
        self._stopping = True
        with contextlib.suppress(Exception):
            await self.session.logout()
        self.session.disconnect("initiator closing")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.session.close_store()


async def start_initiator(settings: InitiatorSettings, app: Application) -> Initiator:
    """Start connecting in the background; ``wait_logged_on`` to know when it is up."""
    initiator = Initiator(settings, app)
    initiator.start()
    return initiator
