"""``emp backtest``: run one genome over stored history and print its metrics and trades."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    bt = sub.add_parser(
        "backtest", help="backtest one genome JSON on stored history",
        description="Simulate GENOME.json on SYMBOL/TIMEFRAME from the history store with the "
                    "kernel's rules (decide at close, fill at next open, costs, volatility "
                    "sizing) and print the metrics and the trade list. Volatility fits are "
                    "cached under $EMP_HOME/cache.")
    bt.add_argument("genome", type=Path, help="genome JSON (see `emp genome random`)")
    bt.add_argument("--symbol", required=True, help="a stored symbol (see `emp data list`)")
    bt.add_argument("--timeframe", default="1d", help="bar timeframe (default 1d)")
    bt.add_argument("--start", help="first bar (inclusive), e.g. 2005-01-01")
    bt.add_argument("--end", help="last bar (exclusive)")
    bt.add_argument("--trades", type=int, default=20, help="trades to print (0: none)")
    bt.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_config(bt)  # type: ignore[operator]
    bt.set_defaults(func=cmd_backtest)


def cmd_backtest(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core.progress import vol_fit_progress
    from fitness.simulator import build_tables, simulate
    from genome.codec import GenomeError, from_json
    from genome.context import context_for
    from genome.decode import describe
    from market.loader import load_bars
    from market.store import HistoryStore, StoreError
    from market.timeframes import utc_ns

    try:
        genome = from_json(args.genome.read_text())
    except OSError as exc:
        raise GenomeError(f"{args.genome}: cannot read: {exc.strerror}") from None
    store = HistoryStore(cfg.store_root())
    meta = cfg.data.symbols.get(args.symbol) or store.meta(args.symbol)
    if meta is None:
        raise StoreError(f"no metadata for {args.symbol}; add data.symbols.{args.symbol}")
    bars = load_bars(args.symbol, args.timeframe, store=store)
    tables = build_tables(bars, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache",
                          progress=vol_fit_progress())
    idx = bars.index()
    start = 0 if args.start is None else int(np.searchsorted(idx, utc_ns([args.start])[0]))
    end = bars.n_bars if args.end is None else int(np.searchsorted(idx, utc_ns([args.end])[0]))
    result = simulate(genome, tables, bars, meta, start, end, cfg.fitness)
    if args.json:
        print(json.dumps(result.metrics))
        return 0
    # what cannot act on these bars (session hours on daily bars, weekends) is left out
    print(describe(genome, context_for(args.timeframe, meta.calendar)))
    print(f"\n{args.symbol}/{args.timeframe} {idx[start].date()} .. {idx[end - 1].date()} "
          f"({end - start} bars)")
    for name, value in result.metrics.items():
        print(f"  {name:<16}{value:>14.4f}")
    if args.trades and not result.trades.empty:
        print(result.trades.head(args.trades).to_string(index=False))
    return 0

