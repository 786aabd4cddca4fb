"""``emp live CONFIG`` (run the executor), ``emp live reset-breaker CONFIG --reason`` and
``emp live rollback CONFIG``. Register with ``register(sub, add_config)`` in emp_cli; also
runnable as ``python -m live.executor.cli ...`` (what the crash tests start)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import signal
import sys
from pathlib import Path

from core.errors import EmpError


def _parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("live_config", type=Path, metavar="CONFIG", help="the executor's YAML")
    p.add_argument("--i-understand-live", action="store_true",
                   help="needed on the first start of mode: live (real money)")
    p.add_argument("action", nargs="?", default="run", choices=("run", "reset-breaker"),
                   help=argparse.SUPPRESS)
    p.add_argument("--reason", default=None, help="why (reset-breaker; recorded)")


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    p = sub.add_parser("live", help="run the live executor (paper mode against emp venue)",
                       description="Trade the promoted champion over FIX: pointer -> verified "
                                   "bundle -> tables -> QUOTE and TRADE -> reconcile -> ready.")
    _parser(p)
    p.set_defaults(func=lambda args, cfg: main_args(args))


def main_args(args: argparse.Namespace) -> int:
    from live.executor.config import load_live_config

    cfg = load_live_config(args.live_config)
    if args.action == "reset-breaker":
        return reset_breaker(cfg, args.reason)
    if cfg.mode == "live" and not args.i_understand_live and not _started_before(cfg):
        raise EmpError("mode: live trades real money: pass --i-understand-live on the first "
                       "start")
    asyncio.run(_serve(cfg))
    return 0


def _started_before(cfg) -> bool:
    from live.state import StateStore

    if not cfg.state_file.exists():
        return False
    with StateStore(cfg.state_file) as st:
        return st.champion(cfg.symbol) is not None


def reset_breaker(cfg, reason: str | None) -> int:
    from live.state import StateStore

    if not reason:
        raise EmpError("reset-breaker needs --reason (it is recorded in the audit log)")
    with StateStore(cfg.state_file) as st:
        st.reset_breaker(who=getpass.getuser(), reason=reason)
    print(f"breaker reset for {cfg.symbol}: {reason}")
    return 0


async def _serve(cfg) -> None:
    from live.executor.service import Executor

    ex = Executor(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await ex.start()
        print(f"READY {cfg.symbol} champion {ex.champion.sha256[:12]}", flush=True)
        await stop.wait()
    finally:
        await ex.stop()


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
