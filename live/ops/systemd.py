"""systemd's notify protocol spoken by the service itself (no python-systemd dependency).

``Type=notify`` waits for ``READY=1`` before the unit counts as started (the executor sends
it only after reconciliation, when ``/ready`` would say 200); ``WatchdogSec=`` kills and
restarts a service whose ``WATCHDOG=1`` pings stop; ``STOPPING=1`` marks a graceful stop;
``STATUS=`` is what ``systemctl status`` shows. The datagram goes to ``$NOTIFY_SOCKET``, a
filesystem path or an abstract name (``@name``). Without the variable (run by hand, in tests)
every call is a no-op, as ``sd_notify(3)`` is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from core.secrets import mask_text
from live.ops.errors import NotifyError, OpsConfigError

log = logging.getLogger(__name__)

Liveness = Callable[[], bool]


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise NotifyError(f"sd_notify: NOTIFY_SOCKET must be an absolute path or an @abstract "
                      f"name, got {value!r}")


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, several newline-separated) to systemd.

    Returns False (and does nothing) when ``NOTIFY_SOCKET`` is unset; raises ``NotifyError``
    when it is set but unusable (malformed, gone, refused)."""
    env = os.environ if env is None else env
    target = env.get("NOTIFY_SOCKET")
    if not target:
        return False
    if not state or "=" not in state:
        raise NotifyError(f"sd_notify: a state is VARIABLE=value, got {state!r}")
    address = _address(target)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        raise NotifyError(f"sd_notify: cannot send to NOTIFY_SOCKET {target!r}: "
                          f"{exc.strerror or exc}") from None
    return True


def _one_line(text: str) -> str:
    """A STATUS= value: one line, secrets masked (systemctl status is widely readable)."""
    return mask_text(" ".join(text.split()))


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """The executor is ready: sessions up, reconciled, champion loaded."""
    extra = f"\nSTATUS={_one_line(status)}" if status else ""
    return notify("READY=1" + extra, env)


def stopping(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """A graceful stop began (SIGTERM: no new orders, flush, logout)."""
    extra = f"\nSTATUS={_one_line(status)}" if status else ""
    return notify("STOPPING=1" + extra, env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Free-form status line for ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}", env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC`` (systemd's advice), or None when no
    watchdog is asked of this process (unset, or ``$WATCHDOG_PID`` names another one)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        raise OpsConfigError(f"sd_notify: WATCHDOG_USEC must be a positive integer, got "
                             f"{usec!r}")
    return value / 2e6


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval`` seconds while ``liveness()`` is true.

    Running on the executor's event loop, a ping already proves the loop turns; ``liveness``
    adds what the loop cannot see by itself (bars still being processed, the state store
    still writable). When it says False (or raises) the pings stop, and systemd restarts the
    service once ``WatchdogSec`` passes; a STATUS line says why, once per unhealthy spell.
    """

    def __init__(self, liveness: Liveness, *, interval: float | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.liveness = liveness
        self.env = os.environ if env is None else env
        self.interval = watchdog_interval(self.env) if interval is None else interval
        if self.interval is not None and not self.interval > 0:
            raise OpsConfigError(f"watchdog: interval must be > 0 seconds, got {interval!r}")
        self.pings = 0
        self._healthy = True

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def tick(self) -> bool:
        """One check: ping if alive. Returns whether a ping was sent."""
        try:
            alive = bool(self.liveness())
            reason = "liveness check failed"
        except Exception as exc:  # the executor's callback: a failure means "not alive"
            alive = False
            reason = f"liveness check raised {type(exc).__name__}: {exc}"
        if not alive:
            if self._healthy:
                log.error("watchdog: %s; withholding WATCHDOG=1", mask_text(reason))
                status(f"unhealthy: {reason}; watchdog pings withheld", self.env)
            self._healthy = False
            return False
        self._healthy = True
        if notify("WATCHDOG=1", self.env):
            self.pings += 1
            return True
        return False

    async def run(self) -> None:
        """Tick until cancelled; returns at once when no watchdog is enabled."""
        if self.interval is None:
            return
        while True:
            try:
                self.tick()
            except NotifyError as exc:  # systemd gone or restarting: keep the trading loop
                log.warning("watchdog: %s", exc)
            await asyncio.sleep(self.interval)
