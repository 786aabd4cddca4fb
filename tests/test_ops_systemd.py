"""live/ops/systemd.py against a real unix datagram socket standing in for systemd: READY=1,
WATCHDOG=1, STOPPING=1 and STATUS= arrive (filesystem and abstract names), the watchdog
pings only while the liveness callback holds, and nothing happens without NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from live.ops import systemd
from live.ops.errors import NotifyError, OpsConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = Path("/tmp") / f"emp-notify-{uuid.uuid4().hex[:12]}"
        sock.bind(str(path))
        value = str(path)
    else:
        name = f"emp-notify-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    sock.setblocking(False)  # datagrams are queued synchronously by sendto: drain, never wait
    yield sock, value
    sock.close()
    if request.param == "path":
        Path(value).unlink(missing_ok=True)


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_watchdog_stopping_status_arrive(listener) -> None:
    sock, value = listener
    env = {"NOTIFY_SOCKET": value}
    assert systemd.ready("trading EURUSD\nchampion 0123abc", env)
    assert systemd.notify("WATCHDOG=1", env)
    assert systemd.status("reconnecting to https://u:s3cret@broker.example/fix", env)
    assert systemd.stopping("SIGTERM: flushing", env)
    assert drain(sock) == [
        "READY=1\nSTATUS=trading EURUSD champion 0123abc",
        "WATCHDOG=1",
        "STATUS=reconnecting to https://u:***@broker.example/fix",
        "STOPPING=1\nSTATUS=SIGTERM: flushing",
    ]


def test_the_process_environment_is_used_by_default(listener, monkeypatch) -> None:
    sock, value = listener
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.ready()
    assert drain(sock) == ["READY=1"]


def test_a_fresh_service_process_notifies(listener) -> None:
    """What systemd sees: another process with only NOTIFY_SOCKET to go on."""
    sock, value = listener
    code = ("from live.ops import systemd\n"
            "systemd.ready(); systemd.notify('WATCHDOG=1'); systemd.stopping()\n")
    env = {**os.environ, "NOTIFY_SOCKET": value, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)
    assert drain(sock) == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_no_op_without_notify_socket(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.notify("WATCHDOG=1", {}) is False
    assert systemd.stopping(env={"NOTIFY_SOCKET": ""}) is False
    assert systemd.Watchdog(lambda: True, env={}).enabled is False
    asyncio.run(systemd.Watchdog(lambda: True, env={}).run())  # returns at once


def test_an_unusable_notify_socket_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(NotifyError, match="absolute path or an @abstract name"):
        systemd.notify("READY=1", {"NOTIFY_SOCKET": "relative/sock"})
    gone = str(tmp_path / "gone")
    with pytest.raises(NotifyError, match=f"cannot send to NOTIFY_SOCKET '{gone}'"):
        systemd.notify("READY=1", {"NOTIFY_SOCKET": gone})
    with pytest.raises(NotifyError, match="VARIABLE=value"):
        systemd.notify("READY", {"NOTIFY_SOCKET": gone})


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": pid}) == 10.0
    # the watchdog was asked of another process (e.g. inherited across a fork/exec)
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    with pytest.raises(OpsConfigError, match="WATCHDOG_USEC must be a positive integer"):
        systemd.watchdog_interval({"WATCHDOG_USEC": "soon"})
    with pytest.raises(OpsConfigError, match="interval must be > 0"):
        systemd.Watchdog(lambda: True, interval=0, env={})


def test_watchdog_pings_only_while_alive(listener) -> None:
    """Scripted liveness: alive x3, dead, raising, dead, alive; then the script ends (dead).
    Pings stop at the first failure, one STATUS says why, and resume on recovery."""
    sock, value = listener
    script: list[object] = [True, True, True, False, RuntimeError("store locked"), False, True]
    done = asyncio.Event()

    def liveness() -> bool:
        if not script:
            done.set()
            return False
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return bool(step)

    async def main() -> systemd.Watchdog:
        # WATCHDOG_USEC=2000 -> a ping every millisecond
        wd = systemd.Watchdog(liveness, env={"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "2000"})
        assert wd.interval == 0.001
        task = asyncio.create_task(wd.run())
        await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return wd

    wd = asyncio.run(main())
    got = drain(sock)
    assert got == ["WATCHDOG=1"] * 3 + [
        "STATUS=unhealthy: liveness check failed; watchdog pings withheld",
        "WATCHDOG=1",
        "STATUS=unhealthy: liveness check failed; watchdog pings withheld",
    ]
    assert wd.pings == 4


def test_watchdog_tick_names_a_raising_check(listener) -> None:
    sock, value = listener

    def liveness() -> bool:
        raise TimeoutError("no bar since 12:00")

    wd = systemd.Watchdog(liveness, interval=1.0, env={"NOTIFY_SOCKET": value})
    assert wd.tick() is False and wd.tick() is False
    assert drain(sock) == ["STATUS=unhealthy: liveness check raised TimeoutError: no bar since "
                           "12:00; watchdog pings withheld"]


def test_watchdog_survives_systemd_going_away(tmp_path) -> None:
    """A notify socket that vanished must not kill the trading loop: run() logs and goes on."""
    calls = 0
    done = asyncio.Event()

    def liveness() -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            done.set()
        return True

    async def main() -> None:
        wd = systemd.Watchdog(liveness, interval=0.001,
                              env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
        task = asyncio.create_task(wd.run())
        await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert calls >= 3
