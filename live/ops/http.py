"""``/health``, ``/ready`` and ``/metrics`` for the executor, on 127.0.0.1 only.

An asyncio server on the executor's own event loop, not a thread: ``/health`` then answers
only while the loop that trades is turning (a stuck loop reads as dead, as it should), and the
readiness callback runs on the loop thread, so it reads executor state without locks. The
cost is that a scrape runs on the trading loop; rendering the registry takes well under a
millisecond (tens of series), and Prometheus scrapes every 15 s or so.

Minimal HTTP/1.1: GET and HEAD, one request per connection (``Connection: close``), bounded
request size and read time. Anything reachable beyond the host (Prometheus on another
machine) should go through an SSH tunnel or a reverse proxy; binding elsewhere is refused
unless ``allow_non_local`` says so explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from core.secrets import mask_text
from live.ops.errors import OpsConfigError
from live.ops.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0

Readiness = Callable[[], Mapping[str, bool]]


@dataclass(frozen=True, slots=True)
class ReadyConditions:
    """What ``/ready`` requires of the executor (DESIGN.md "Monitoring"); ``as_dict`` is
    what a readiness callback returns."""

    quote_session: bool = False
    trade_session: bool = False
    reconciled: bool = False
    champion_loaded: bool = False
    breaker_closed: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


def check_bind(host: str, allow_non_local: bool) -> None:
    """Refuse any address but loopback unless explicitly allowed: the endpoints carry
    positions and equity, and have no authentication."""
    if allow_non_local:
        return
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise OpsConfigError(f"ops http: refusing to bind {host!r}: /health, /ready and /metrics "
                         "are served on 127.0.0.1 only (set allow_non_local to expose them)")


def _response(status: str, body: bytes, content_type: str, head: bool) -> bytes:
    head_lines = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                  "Connection: close\r\n\r\n").encode("ascii")
    return head_lines if head else head_lines + body


def _json(status: str, payload: object, head: bool) -> bytes:
    body = (json.dumps(payload, sort_keys=True) + "\n").encode()
    return _response(status, body, "application/json", head)


class OpsServer:
    """The three endpoints over one ``Metrics`` and one readiness callback.

    ``readiness`` returns condition name -> holds (``ReadyConditions.as_dict()``); ``/ready``
    is 200 only when the mapping is non-empty and every value is true, otherwise 503 with
    ``{"ready": false, "not_ready": [...], "conditions": {...}}``. ``port=0`` picks a free
    port (``port`` has it after ``start``).
    """

    def __init__(self, metrics: Metrics, readiness: Readiness, *, host: str = "127.0.0.1",
                 port: int = 9108, allow_non_local: bool = False) -> None:
        check_bind(host, allow_non_local)
        if not 0 <= port <= 65535:
            raise OpsConfigError(f"ops http: port must be 0..65535, got {port}")
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                      limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise OpsConfigError(f"ops http: cannot bind {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(_response("431 Request Header Fields Too Large",
                                       b"request too large\n", "text/plain", False))
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            else:
                writer.write(self.respond(head.split(b"\r\n", 1)[0]))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def respond(self, request_line: bytes) -> bytes:
        """The full response to one request line (``GET /ready HTTP/1.1``)."""
        parts = request_line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", b"bad request line\n", "text/plain", False)
        method, target, _ = parts
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET or HEAD only\n", "text/plain",
                             False)
        path = target.split("?", 1)[0]
        if path == "/health":
            return _json("200 OK", {"alive": True}, head)
        if path == "/ready":
            return self._ready(head)
        if path == "/metrics":
            return _response("200 OK", self.metrics.exposition(), CONTENT_TYPE, head)
        return _response("404 Not Found", b"try /health, /ready or /metrics\n", "text/plain",
                         head)

    def _ready(self, head: bool) -> bytes:
        try:
            conditions = {str(k): bool(v) for k, v in dict(self.readiness()).items()}
        except Exception as exc:  # the callback is the executor's: report, never crash here
            reason = mask_text(f"{type(exc).__name__}: {exc}".splitlines()[0])
            log.warning("ops http: readiness check failed: %s", reason)
            return _json("503 Service Unavailable",
                         {"ready": False, "not_ready": ["readiness_check"], "error": reason},
                         head)
        missing = sorted(k for k, v in conditions.items() if not v)
        if conditions and not missing:
            return _json("200 OK", {"ready": True, "conditions": conditions}, head)
        return _json("503 Service Unavailable",
                     {"ready": False, "not_ready": missing or ["no_conditions"],
                      "conditions": conditions}, head)
