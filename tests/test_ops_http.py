"""live/ops/http.py over real HTTP on 127.0.0.1: /health, /ready flipping 503 -> 200 as the
executor's conditions come true, /metrics parsed by prometheus-client, and the bind guard."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_ops_metrics import exercised

from live.ops.errors import OpsConfigError
from live.ops.http import OpsServer, ReadyConditions
from live.ops.metrics import Metrics


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """A real HTTP request (urllib), returning status, headers, body (also for 4xx/5xx)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def serve(server: OpsServer, client: Callable[[int], Awaitable[None]]) -> None:
    """Run ``server`` on a fresh event loop while ``client(port)`` talks to it."""
    async def main() -> None:
        async with server:
            await client(server.port)
    asyncio.run(main())


def test_health_ready_and_metrics() -> None:
    state = ReadyConditions()
    m = exercised()

    async def client(port: int) -> None:
        call = lambda path, method="GET": asyncio.to_thread(get, port, path, method)  # noqa: E731
        nonlocal state
        status, _, body = await call("/health")
        assert (status, json.loads(body)) == (200, {"alive": True})

        status, _, body = await call("/ready")
        doc = json.loads(body)
        assert status == 503 and doc["ready"] is False
        assert doc["not_ready"] == ["breaker_closed", "champion_loaded", "quote_session",
                                    "reconciled", "trade_session"]
        state = ReadyConditions(quote_session=True, trade_session=True, reconciled=True,
                                champion_loaded=True, breaker_closed=False)
        status, _, body = await call("/ready")
        assert status == 503 and json.loads(body)["not_ready"] == ["breaker_closed"]
        state = ReadyConditions(True, True, True, True, True)
        status, _, body = await call("/ready")
        assert status == 200 and json.loads(body)["ready"] is True
        state = ReadyConditions(True, False, True, True, True)  # TRADE dropped
        status, _, body = await call("/ready")
        assert status == 503 and json.loads(body)["not_ready"] == ["trade_session"]

        status, headers, body = await call("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert fams["emp_bar_to_order_latency_seconds"].type == "histogram"
        assert fams["emp_orders"].type == "counter"
        m.set_equity(777.0)  # live: the next scrape sees the update
        _, _, body = await call("/metrics")
        assert "emp_equity 777.0" in body.decode()

        status, headers, body = await call("/ready", "HEAD")
        assert status == 503 and body == b"" and int(headers["Content-Length"]) > 0
        state = ReadyConditions(True, True, True, True, True)
        status, headers, body = await call("/ready", "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
        assert (await call("/nope"))[0] == 404
        assert (await call("/metrics", "POST"))[0] == 405

    serve(OpsServer(m, lambda: state.as_dict(), port=0), client)


def test_ready_when_the_callback_fails_is_503_with_a_masked_one_line_reason() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("store at postgresql://emp:hunter2@db/x unreachable\ndetail")

    async def client(port: int) -> None:
        status, _, body = await asyncio.to_thread(get, port, "/ready")
        doc = json.loads(body)
        assert status == 503 and doc["not_ready"] == ["readiness_check"]
        assert "hunter2" not in body.decode() and "unreachable" in doc["error"]
        assert "detail" not in doc["error"]
        assert (await asyncio.to_thread(get, port, "/health"))[0] == 200

    serve(OpsServer(Metrics(["EURUSD"]), broken, port=0), client)


def test_no_conditions_is_not_ready() -> None:
    async def client(port: int) -> None:
        status, _, body = await asyncio.to_thread(get, port, "/ready")
        assert status == 503 and json.loads(body)["not_ready"] == ["no_conditions"]

    serve(OpsServer(Metrics(["EURUSD"]), dict, port=0), client)


def test_garbage_and_oversized_requests_get_an_answer_not_a_crash() -> None:
    def raw(port: int, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: s.recv(4096), b""))

    async def client(port: int) -> None:
        assert (await asyncio.to_thread(raw, port, b"HELLO\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        big = b"GET /health HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await asyncio.to_thread(raw, port, big)).startswith(b"HTTP/1.1 431 ")
        assert await asyncio.to_thread(raw, port, b"GET /hea") == b""  # closed early
        assert (await asyncio.to_thread(get, port, "/health"))[0] == 200  # still serving

    serve(OpsServer(Metrics(["EURUSD"]), dict, port=0), client)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_a_non_local_bind_is_refused(host: str) -> None:
    with pytest.raises(OpsConfigError, match=r"refusing to bind .*127\.0\.0\.1 only"):
        OpsServer(Metrics(["EURUSD"]), dict, host=host)


def test_a_non_local_bind_is_allowed_only_when_asked() -> None:
    server = OpsServer(Metrics(["EURUSD"]), dict, host="0.0.0.0", allow_non_local=True)
    assert server.host == "0.0.0.0"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        OpsServer(Metrics(["EURUSD"]), dict, host=host)


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            with pytest.raises(OpsConfigError, match=f"cannot bind 127.0.0.1:{port}"):
                await OpsServer(Metrics(["EURUSD"]), dict, port=port).start()
        asyncio.run(main())
