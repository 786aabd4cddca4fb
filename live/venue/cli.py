"""``emp venue CONFIG``: the paper-trading FIX venue in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from configs.models import EmpConfig
    from live.venue.app import Venue
    from live.venue.config import VenueConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    v = sub.add_parser(
        "venue", help="run the paper-trading FIX venue (QUOTE and TRADE sessions) on localhost",
        description="A FIX 4.4 acceptor on 127.0.0.1 that replays bars from the history store "
                    "as market data (QUOTE session) and fills market orders by the backtest "
                    "kernel's rules (TRADE session: next open, the symbol's costs, stops and "
                    "take-profits inside the bar, stop first). Prints the port and the "
                    "sessions, then runs until Ctrl-C. CONFIG is the venue's YAML (see "
                    "configs/venue.yaml); -c/--config gives the EMP home and its history store.")
    v.add_argument("venue_config", type=Path, metavar="CONFIG", help="the venue's YAML file")
    add_config(v)  # type: ignore[operator]
    v.add_argument("--port", type=int, default=None, help="override the config's port (0: any)")
    v.add_argument("--speed", type=float, default=None,
                   help="override the replay speed in bars per second (0: never advance)")
    v.set_defaults(func=cmd_venue)


def cmd_venue(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from live.venue.build import venue_from_store
    from live.venue.config import load_venue_config
    from live.venue.errors import VenueConfigError

    vc = load_venue_config(args.venue_config)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise VenueConfigError(f"--port {args.port}: expected 0..65535")
        vc.port = args.port
    if args.speed is not None:
        if args.speed < 0:
            raise VenueConfigError(f"--speed {args.speed}: expected >= 0 bars per second")
        vc.replay.speed = args.speed
    store = vc.replay.store or cfg.store_root()
    try:
        venue = venue_from_store(vc, store, cfg.data.symbols)
        asyncio.run(_serve(vc, venue, cfg.home))
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signal: a clean stop
        pass
    return 0


async def _serve(vc: VenueConfig, venue: Venue, home: Path) -> None:
    """Listen, print the port and the sessions, replay (unless speed 0), stop on SIGINT or
    SIGTERM: the acceptor closes its connections and stores, and the process exits 0."""
    from live.fix.acceptor import start_acceptor
    from live.fix.errors import FixError
    from live.venue.build import acceptor_settings
    from live.venue.errors import VenueError

    try:
        acceptor = await start_acceptor(acceptor_settings(vc, home), venue)
    except OSError as exc:
        raise VenueError(f"venue: cannot listen on {vc.host}:{vc.port}: "
                         f"{exc.strerror or exc}") from None
    except FixError as exc:  # a message store that cannot be opened, credentials not found
        raise VenueError(f"venue: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"venue listening on {vc.host}:{acceptor.port}", flush=True)
    for sub in (vc.quote_sub_id, vc.trade_sub_id):
        print(f"  session FIX.4.4 {vc.comp_id} <- {vc.client_comp_id} SubID {sub}", flush=True)
    speed = (f"replay {vc.replay.timeframe} at {vc.replay.speed:g} bars/s"
             if vc.replay.speed > 0 else f"replay {vc.replay.timeframe} paused (speed 0)")
    print("  symbols: " + ", ".join(f"{n}={s.id}" for n, s in vc.symbols.items()) +
          f"; {speed}; Ctrl-C stops", flush=True)
    try:
        if vc.replay.speed > 0:
            await venue.run(vc.replay.speed, stop)
            if not stop.is_set():
                print("venue: end of the history; still serving (Ctrl-C stops)",
                      file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await acceptor.close()
    print("venue stopped", flush=True)
