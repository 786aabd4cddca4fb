"""``emp live CONFIG`` (run the executor), ``emp live reset-breaker CONFIG --reason "..."``,
``emp live status CONFIG``. CONFIG is the executor's YAML (configs/live.yaml); ``-c/--config``
stays the EMP config, as for every command. Registered in emp_cli (``register``); also
runnable as ``python -m live.executor.cli CONFIG`` (what the crash tests start).

The action is an optional first word before CONFIG (``ACTIONS``), so the plain form stays
``emp live CONFIG``; another module may add an action to ``ACTIONS`` (name -> handler).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import EmpError

ACTIONS: dict[str, Callable[[Any, argparse.Namespace], int]] = {}
# arch imports matplotlib whenever it is installed (a dev or farm venv), only to offer plots
PLOT_ONLY = ("matplotlib",)


def keep_plotting_out() -> None:
    """Make ``import matplotlib`` fail in the service process (arch then skips its plotting
    support), so a dev or farm venv runs the service as lean as a base install on the VPS,
    where matplotlib (a ``farm`` extra) is absent anyway. Already imported: left alone."""
    for name in PLOT_ONLY:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


class LiveUsageError(EmpError, ValueError):
    """``emp live`` called with the wrong words; the message shows the right form."""


USAGE = ("emp live CONFIG | emp live reset-breaker CONFIG --reason TEXT | "
         "emp live rollback CONFIG --reason TEXT | emp live status CONFIG | "
         "emp live append-bars CONFIG")


def _parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="+", metavar="[ACTION] CONFIG",
                   help="the executor's YAML (configs/live.yaml), optionally after an action: "
                        "reset-breaker (close the halted breaker, audited), rollback (put the "
                        "previous champion back at the next bar, audited), status (breaker, "
                        "champion, positions, last bar) or append-bars (the state store's live "
                        "bars into the history store; the executor also does it at each "
                        "trading-day roll and at stop); none: run the executor")
    p.add_argument("--i-understand-live", action="store_true",
                   help="needed on the first start of mode: live (real money)")
    p.add_argument("--reason", default=None,
                   help="reset-breaker, rollback: why (recorded with $USER@host)")
    p.add_argument("--hard", action="store_true",
                   help="reset-breaker: also confirm closing a hard stop (10%% drawdown)")


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    p = sub.add_parser("live", usage="emp live [-c EMP_CONFIG] [--i-understand-live] CONFIG\n"
                                     "       emp live reset-breaker CONFIG --reason TEXT [--hard]"
                                     "\n       emp live rollback CONFIG --reason TEXT"
                                     "\n       emp live status CONFIG"
                                     "\n       emp live append-bars CONFIG",
                       help="run the live executor (paper mode against emp venue), "
                                    "reset its breaker, roll its champion back, show its status",
                       description="Trade the promoted champion over FIX: pointer -> verified "
                                   "bundle -> tables -> QUOTE and TRADE -> reconcile -> ready. "
                                   f"Forms: {USAGE}.")
    _parser(p)
    p.set_defaults(func=lambda args, cfg: main_args(args))


def split_words(words: list[str]) -> tuple[str, Path]:
    """(action, CONFIG) from the positional words."""
    if len(words) == 1 and words[0] not in ACTIONS:
        return "run", Path(words[0])
    if len(words) == 2 and words[0] in ACTIONS:
        return words[0], Path(words[1])
    raise LiveUsageError(f"live: cannot read {' '.join(words)!r}; use {USAGE}")


def main_args(args: argparse.Namespace) -> int:
    from live.executor.config import load_live_config

    action, path = split_words(args.words)
    cfg = load_live_config(path)
    if action != "run":
        return ACTIONS[action](cfg, args)
    if cfg.mode == "live" and not args.i_understand_live and not _started_before(cfg):
        raise LiveUsageError("mode: live trades real money: pass --i-understand-live on the "
                             "first start")
    keep_plotting_out()
    asyncio.run(_serve(cfg))
    return 0


def _started_before(cfg) -> bool:
    from live.state import StateStore

    if not cfg.state_file.exists():
        return False
    with StateStore(cfg.state_file) as st:
        return st.champion(cfg.symbol) is not None


def who() -> str:
    """``$USER@host``: who an operator's action is recorded as."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def reset_breaker(cfg, args: argparse.Namespace) -> int:
    from live.state import StateStore

    reason = (args.reason or "").strip()
    if not reason:
        raise LiveUsageError("live reset-breaker: --reason is required (it is recorded in the "
                             "audit log)")
    if not cfg.state_file.exists():
        raise LiveUsageError(f"live reset-breaker: no state store at {cfg.state_file} (the "
                             "executor never ran with this config)")
    with StateStore(cfg.state_file) as st:
        was = st.breaker()
        st.reset_breaker(who=who(), reason=reason, hard=args.hard)
    print(f"breaker reset for {cfg.symbol} by {who()}: {reason}"
          + ("" if was.open else " (it was closed)"))
    return 0


def status(cfg, args: argparse.Namespace) -> int:
    """Breaker, champion, positions, last bar: read from the state store (the executor may
    be running; this only reads)."""
    import datetime as dt

    from live.state import StateStore

    if not cfg.state_file.exists():
        print(f"{cfg.symbol}: no state store at {cfg.state_file} (never started)")
        return 0
    with StateStore(cfg.state_file) as st:
        b = st.breaker()
        champ = st.champion(cfg.symbol)
        positions = st.positions()
        saved = st.strategy_state(cfg.symbol)
        open_orders = st.open_orders()
    breaker = "closed"
    if b.open:
        since = f" since {b.since:%Y-%m-%d %H:%M:%S}Z" if b.since else ""
        breaker = f"OPEN{' (hard stop)' if b.hard else ''}{since}: {b.reason}"
    print(f"breaker:   {breaker}")
    print(f"champion:  {champ or 'none'}")
    pos = ", ".join(f"{s} {u:g}" for s, u in sorted(positions.items())) or "flat"
    print(f"positions: {pos}")
    print(f"orders:    {len(open_orders)} open")
    last = "none" if saved is None else (
        dt.datetime.fromtimestamp(saved[0] / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z")
    print(f"last bar:  {last}")
    return 0


def rollback(cfg, args: argparse.Namespace) -> int:
    """Ask the running executor to put its previous champion back (a request file it reads
    within ``pointer_poll_s``, or at its next start); the outcome is in the audit log."""
    from live.executor.reload import request_rollback

    path = request_rollback(cfg, args.reason, who())
    print(f"rollback of {cfg.symbol} requested ({path}); the executor swaps at its next bar "
          f"boundary and records it in the audit log (emp live status {args.words[-1]})")
    return 0


def append_bars(cfg, args: argparse.Namespace) -> int:
    """The state store's live bars into the history store (operators, cron); the same as the
    executor's own run at each trading-day roll and at stop. Safe while it runs."""
    from live.executor.history import append_for_config

    print(append_for_config(cfg).summary())
    return 0


ACTIONS.update({"reset-breaker": reset_breaker, "status": status, "rollback": rollback,
                "append-bars": append_bars})


async def _serve(cfg) -> None:
    from live.executor.service import Executor

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ex = Executor(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        start = asyncio.create_task(ex.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if start.done():
            start.result()
            ops = f" ops http://{cfg.ops.host}:{ex.ops.port}" if ex.ops is not None else ""
            print(f"READY {cfg.symbol} champion {ex.champion.sha256[:12]}{ops}", flush=True)
            await stopped
        else:  # SIGTERM during start-up: stop without trading
            start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await start
    finally:
        await ex.stop()
    print(f"stopped {cfg.symbol}", flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(prog="emp live")
    _parser(p)
    args = p.parse_args(argv)
    try:
        return main_args(args)
    except EmpError as exc:
        print(f"emp: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
