"""``emp data …``: ingest, check, list and bootstrap the history store."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from market.config import SymbolMeta, preset_meta
from market.ingest import IngestError, ingest_bars, ingest_ticks
from market.quality import check_bars, timeframe_mismatch
from market.readers import (
    check_delimiter,
    check_tz,
    parse_mapping,
    read_bar_csv,
    read_metatrader_csv,
    read_tick_csv,
)
from market.store import DEFAULT_WAIT_S, HistoryStore, StoreError, validate_symbol
from market.timeframes import TIMEFRAME_NS

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    data = sub.add_parser("data", help="import, check and list price history",
                          description="Import, check and list the parquet history store "
                                      "($EMP_HOME/history).")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")

    ing = dsub.add_parser(
        "ingest", help="import a bar or tick CSV into the store",
        description="Import a CSV into the store. Files with errors are refused (first offending "
                    "rows shown with their line numbers) unless --quarantine is given; bars that "
                    "do not open on the --timeframe grid, or are never one timeframe apart, are "
                    "refused as a whole. Overlapping ranges merge without duplicates; higher "
                    "timeframes are derived. One ingest writes at a time: a second one waits for "
                    "the store's lock (see --wait).")
    ing.add_argument("file", type=Path, help="CSV file to import")
    ing.add_argument("--symbol", required=True,
                     help="symbol name in the store, e.g. EURUSD (1-40 letters, digits, '.', '_', "
                          "'-', starting with a letter or digit)")
    ing.add_argument("--format", choices=("csv", "mt", "ticks"), default="csv",
                     help="csv: generic bars with a header; mt: MetaTrader 4/5 export; "
                          "ticks: time,bid,ask ticks built into 1m…1d bars (default: csv)")
    ing.add_argument("--timeframe", choices=list(TIMEFRAME_NS),
                     help="bar timeframe of the file (required for csv and mt); bars must open "
                          "on its grid (1d: UTC midnight, 22:00 UTC for fx)")
    ing.add_argument("--columns", help="column mapping, e.g. ts=Date+Time,open=O,close=Last")
    ing.add_argument("--tz", default="UTC", help="IANA time zone of times without a UTC offset (default UTC); "
                                                  "times with an offset are converted exactly")
    ing.add_argument("--ts-format", help="strftime format of the time column (default ISO 8601)")
    ing.add_argument("--delimiter", default=",",
                     help="field separator, one character; '\\t' or tab for tabs (default ',')")
    ing.add_argument("--asset-class", choices=("fx", "equity", "index", "crypto"),
                     help="metadata preset for a symbol that is neither in the config nor stored "
                          "(an error if it contradicts the config's or the stored class)")
    ing.add_argument("--quarantine", nargs="?", const="auto", type=str, metavar="PATH",
                     help="write bad rows to PATH, a file or a folder (default "
                          "$EMP_HOME/quarantine/…) and keep the rest")
    ing.add_argument("--decimal", default=".", choices=(".", ","), metavar="MARK",
                     help="decimal mark of the numbers: '.' (default) or ',' for 1,2345")
    ing.add_argument("--no-derive", action="store_true", help="do not derive higher timeframes")
    _add_wait(ing, "another ingest (or a reader)")
    add_config(ing)
    ing.set_defaults(func=cmd_ingest)

    chk = dsub.add_parser("check", help="print a quality report of stored history",
                          description="Run every quality rule on stored partitions, and check "
                                      "that their bars fit their timeframe. Exit status 1 when "
                                      "any error-level issue, misfit or damaged partition is "
                                      "found; the other partitions are still checked.")
    chk.add_argument("--symbol", action="append", help="only this symbol (repeatable)")
    chk.add_argument("--timeframe", choices=list(TIMEFRAME_NS), help="only this timeframe")
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    chk.add_argument("--max-rows", type=int, default=10, help="offending rows shown per partition")
    _add_wait(chk, "a running ingest")
    add_config(chk)
    chk.set_defaults(func=cmd_check)

    lst = dsub.add_parser("list", help="show symbols, timeframes, ranges and row counts",
                          description="List the partitions of the history store. Exit status 1 "
                                      "when a partition is damaged (it is listed as DAMAGED).")
    _add_wait(lst, "a running ingest")
    add_config(lst)
    lst.set_defaults(func=cmd_list)

    boot = dsub.add_parser("bootstrap", help="import the bundled S&P 500 and NASDAQ daily bars",
                           description="Import arch's bundled daily S&P 500 and NASDAQ OHLCV "
                                       "(1999-2018) as SP500/1d and NDX/1d. No network needed.")
    _add_wait(boot, "another ingest")
    add_config(boot)
    boot.set_defaults(func=cmd_bootstrap)


def _add_wait(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait", type=_seconds, default=DEFAULT_WAIT_S, metavar="SECONDS",
        help=f"how long to wait for {what} holding the store's lock before failing with "
             f"'store busy' (default {DEFAULT_WAIT_S:g}; 0 fails at once)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def _store(cfg: EmpConfig, args: argparse.Namespace) -> HistoryStore:
    return HistoryStore(cfg.store_root(), wait=getattr(args, "wait", DEFAULT_WAIT_S))


def _meta_for(cfg: EmpConfig, store: HistoryStore, symbol: str, asset_class: str | None) -> SymbolMeta:
    """The config's metadata, else the stored one, else the --asset-class preset; an
    --asset-class that contradicts the first two is an error, not silently ignored."""
    known, where = cfg.data.symbols.get(symbol), f"data.symbols.{symbol} in the config"
    if known is None:
        known, where = store.meta(symbol), f"the store ({symbol} was ingested as it)"
    if known is not None:
        if asset_class is not None and asset_class != known.asset_class:
            raise IngestError(
                f"--asset-class {asset_class} contradicts asset class {known.asset_class} from "
                f"{where}; drop --asset-class, or ingest under another symbol name")
        return known
    if asset_class is not None:
        return preset_meta(asset_class)
    raise IngestError(f"symbol {symbol} has no metadata: add data.symbols.{symbol} to the config "
                      f"or pass --asset-class for a preset")


def cmd_ingest(args: argparse.Namespace, cfg: EmpConfig) -> int:
    try:
        validate_symbol(args.symbol)
    except StoreError as exc:
        raise IngestError(f"--symbol: {exc}") from None
    delimiter = check_delimiter(args.delimiter)
    check_tz(args.tz)
    store = _store(cfg, args)
    meta = _meta_for(cfg, store, args.symbol, args.asset_class)
    quarantine = None
    if args.quarantine == "auto":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        quarantine = cfg.home / "quarantine" / f"{args.symbol}-{args.file.stem}-{stamp}.csv"
    elif args.quarantine:
        quarantine = Path(args.quarantine)
        if quarantine.is_dir():  # a folder: the file gets the automatic name inside it
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            quarantine = quarantine / f"{args.symbol}-{args.file.stem}-{stamp}.csv"
    mapping = parse_mapping(args.columns)
    common = dict(source=str(args.file), source_path=args.file, quarantine=quarantine)
    if args.format == "ticks":
        rows = read_tick_csv(args.file, mapping, args.tz, args.ts_format, delimiter, args.decimal)
        result = ingest_ticks(store, args.symbol, rows, meta, cfg.data.quality, **common)
    else:
        if args.timeframe is None:
            raise IngestError("--timeframe is required for bar files")
        if args.format == "mt":
            rows = read_metatrader_csv(args.file, args.tz, point=meta.tick_size)
        else:
            rows = read_bar_csv(args.file, mapping, args.tz, args.ts_format, delimiter,
                                args.decimal)
        result = ingest_bars(store, args.symbol, args.timeframe, rows, meta, cfg.data.quality,
                             derive=not args.no_derive, **common)
    print(result.summary())
    return 0


def cmd_check(args: argparse.Namespace, cfg: EmpConfig) -> int:
    store = _store(cfg, args)
    with store.reading():  # one consistent state of the store for the whole report
        parts = [p for p in store.partitions()
                 if (not args.symbol or p.symbol in args.symbol)
                 and (args.timeframe is None or p.timeframe == args.timeframe)]
        if not parts:
            print(f"no history in {store.root} matches; run `emp data bootstrap` or "
                  f"`emp data ingest`")
            return 1
        failed = False
        out = []
        for p in parts:
            try:
                if p.error is not None:
                    raise StoreError(p.error)
                meta = store.meta(p.symbol)
                calendar = meta.calendar if meta is not None else "always"
                frame = store.read_frame(p.symbol, p.timeframe)
            except StoreError as exc:  # one damaged file must not hide the rest of the store
                failed = True
                if args.json:
                    out.append({"symbol": p.symbol, "timeframe": p.timeframe, "ok": False,
                                "damaged": str(exc)})
                else:
                    print(f"== {p.symbol}/{p.timeframe}: DAMAGED\n  {exc}")
                continue
            report = check_bars(frame, p.timeframe, calendar, cfg.data.quality)
            # bars stored before ingest checked the timeframe (hourly bars kept as 1d)
            mismatch = timeframe_mismatch(frame["ts"].array.asi8, p.timeframe, calendar)
            failed |= not report.ok or mismatch is not None
            if args.json:
                out.append({"symbol": p.symbol, "timeframe": p.timeframe, **report.to_dict(),
                            "timeframe_mismatch": mismatch})
                if mismatch is not None:
                    out[-1]["ok"] = False
            else:
                verdict = "OK" if report.ok and mismatch is None else "ERRORS"
                print(f"== {p.symbol}/{p.timeframe} ({calendar}): {p.rows} bars, {verdict}")
                if mismatch is not None:
                    print(f"  not {p.timeframe} bars: {mismatch}; re-ingest the source file "
                          f"with the right --timeframe")
                print(report.format(max_rows=args.max_rows))
    if args.json:
        print(json.dumps(out, default=str))
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace, cfg: EmpConfig) -> int:
    store = _store(cfg, args)
    parts = store.partitions()
    if not parts:
        print(f"{store.root}: empty")
        return 0
    print(f"{'symbol':<12}{'timeframe':<10}{'rows':>10}  {'first':<26}{'last':<26}")
    for p in parts:
        if p.error is not None:
            print(f"{p.symbol:<12}{p.timeframe:<10}{'DAMAGED':>10}  {p.error}")
            continue
        print(f"{p.symbol:<12}{p.timeframe:<10}{p.rows:>10}  {p.start!s:<26}{p.end!s:<26}")
    return 1 if any(p.error is not None for p in parts) else 0


def cmd_bootstrap(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from market.bootstrap import bootstrap

    store = _store(cfg, args)
    for result in bootstrap(store, cfg.data.symbols, cfg.data.quality):
        print(result.summary())
    return 0
