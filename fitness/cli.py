"""``emp backtest``: run one genome over stored history and print its metrics and trades."""

from __future__ import annotations

import argparse
import json
import sys
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
                    "sizing) and print the metrics and the trade list. By default it runs on "
                    "the research period: everything before the hold-out, which is the last "
                    "evolution.holdout fraction of the history (of evolution.start..end for the "
                    "config's own symbol and timeframe), as the gates lay it out. Reading the "
                    "hold-out needs --include-holdout and is logged per symbol/timeframe in "
                    "$EMP_HOME/holdout_reads.json, the log `emp gates` warns from. Volatility "
                    "fits are cached under $EMP_HOME/cache.")
    bt.add_argument("genome", type=Path, help="genome JSON (see `emp genome random`)")
    bt.add_argument("--symbol", required=True, help="a stored symbol (see `emp data list`)")
    bt.add_argument("--timeframe", default="1d", help="bar timeframe (default 1d)")
    bt.add_argument("--start", help="first bar (inclusive), a date such as 2005-01-01 "
                                    "(default: the first stored bar)")
    bt.add_argument("--end", help="last bar (exclusive), a date (default: the hold-out's first "
                                  "bar, or the last bar with --include-holdout)")
    bt.add_argument("--include-holdout", action="store_true",
                    help="allow the range to reach into the hold-out (the read is logged, and "
                         "`emp gates` warns about it)")
    bt.add_argument("--trades", type=int, default=20, help="trades to print (0: none)")
    bt.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_config(bt)  # type: ignore[operator]
    bt.set_defaults(func=cmd_backtest)


def _date(option: str, value: str | None):  # type: ignore[no-untyped-def]
    """``value`` as a UTC timestamp; a user error naming the option otherwise."""
    from core.errors import EmpError
    from market.timeframes import utc_ns

    if value is None:
        return None
    try:
        return utc_ns([value])[0]
    except (ValueError, TypeError, OverflowError):
        raise EmpError(f"{option} {value!r} is not a date (e.g. 2005-01-01)") from None


def cmd_backtest(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core import holdout_log
    from core.errors import EmpError
    from core.progress import vol_fit_progress
    from fitness.simulator import build_tables, simulate
    from genome.codec import GenomeError, from_json
    from genome.context import context_for
    from genome.decode import describe
    from genome.ops import phenotype_key
    from market.loader import holdout_start, load_bars, truncate
    from market.store import HistoryStore, StoreError

    if args.trades < 0:
        raise EmpError(f"--trades {args.trades}: give 0 (none) or more")
    first, last = _date("--start", args.start), _date("--end", args.end)
    if first is not None and last is not None and first >= last:
        raise EmpError(f"--start {args.start} is not before --end {args.end}")
    try:
        genome = from_json(args.genome.read_text())
    except OSError as exc:
        raise GenomeError(f"{args.genome}: cannot read: {exc.strerror}") from None
    store = HistoryStore(cfg.store_root())
    meta = cfg.data.symbols.get(args.symbol) or store.meta(args.symbol)
    if meta is None:
        raise StoreError(f"no metadata for {args.symbol}; add data.symbols.{args.symbol}")
    bars = load_bars(args.symbol, args.timeframe, store=store)
    idx = bars.index()
    hold = _holdout_start(cfg, args, bars, load_bars, store, holdout_start)
    start = 0 if first is None else int(np.searchsorted(idx, first))
    default_end = bars.n_bars if args.include_holdout else hold
    end = default_end if last is None else int(np.searchsorted(idx, last))
    series = f"{args.symbol}/{args.timeframe}"
    if end > hold and not args.include_holdout:
        raise EmpError(
            f"--end {args.end} reaches into the hold-out of {series} (from "
            f"{idx[hold].date()}: the last {cfg.evolution.holdout:.0%}, kept for `emp gates`); "
            f"add --include-holdout to read it (logged in "
            f"{holdout_log.global_log(cfg.home)})")
    if end - start < 2:
        raise EmpError(f"no bars of {series} to backtest between {args.start or 'the start'} "
                       f"and {args.end or 'the hold-out'} ({bars.n_bars} stored, "
                       f"{idx[0].date()}..{idx[-1].date()})")
    if end > hold:
        holdout_log.record(cfg.home, series, {
            "by": "backtest", "genome": phenotype_key(genome)[:16],
            "first": str(idx[max(start, hold)].date()), "last": str(idx[end - 1].date())})
        print(f"emp backtest: reading the hold-out of {series} from {idx[hold].date()} "
              f"(logged in {holdout_log.global_log(cfg.home)})", file=sys.stderr)
    bars = truncate(bars, end)  # causal: nothing after the range reaches the tables
    tables = build_tables(bars, meta, vol=cfg.volatility, cache_dir=cfg.home / "cache",
                          progress=vol_fit_progress())
    result = simulate(genome, tables, bars, meta, start, end, cfg.fitness)
    if args.json:
        print(json.dumps(result.metrics))
        return 0
    # what cannot act on these bars (session hours on daily bars, weekends) is left out
    print(describe(genome, context_for(args.timeframe, meta.calendar)))
    period = "research period" if end <= hold else "includes the hold-out"
    print(f"\n{series} {idx[start].date()} .. {idx[end - 1].date()} ({end - start} bars, "
          f"{period})")
    for name, value in result.metrics.items():
        print(f"  {name:<16}{value:>14.4f}")
    if args.trades and not result.trades.empty:
        print(result.trades.head(args.trades).to_string(index=False))
    return 0


def _holdout_start(cfg, args, bars, load_bars, store, holdout_start) -> int:  # type: ignore[no-untyped-def]
    """Index in ``bars`` of the first hold-out bar, laid out as the gates do: the last
    ``evolution.holdout`` of the run window (``evolution.start..end`` for the config's own
    symbol and timeframe; the whole history otherwise); everything after it counts too."""
    from core.errors import EmpError

    ev = cfg.evolution
    window = bars
    if (args.symbol, args.timeframe) == (ev.symbol, ev.timeframe) and (ev.start or ev.end):
        window = load_bars(args.symbol, args.timeframe, ev.start, ev.end, store=store)
    try:
        cut = holdout_start(window.n_bars, ev.holdout)
    except ValueError as exc:
        raise EmpError(f"{args.symbol}/{args.timeframe}: {exc}") from None
    return int(np.searchsorted(bars.ts, window.ts[cut]))
