"""``emp bench …``: benchmarks that print one JSON line with our figure and the comparator's."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    bench = sub.add_parser("bench", help="run a benchmark and print one JSON line",
                           description="Benchmarks measure EMP and a comparator in the same run "
                                       "and print one JSON line. Record results in BENCHMARKS.md.")
    bsub = bench.add_subparsers(dest="bench_cmd", required=True, metavar="BENCHMARK")
    data = bsub.add_parser(
        "data", help="tick ingest rate and load_bars vs pandas.read_parquet",
        description="Ingest a generated tick CSV into 1m bars (rows/s), then time load_bars of "
                    "N symbols x 1 year of 1m bars against plain pandas.read_parquet.")
    data.add_argument("--ticks", type=int, default=5_000_000, help="ticks in the generated CSV")
    data.add_argument("--symbols", type=int, default=5, help="symbols to load")
    data.add_argument("--days", type=int, default=365, help="calendar days of 1m bars per symbol")
    data.add_argument("--repeat", type=int, default=5, help="timed repeats (best is reported)")
    data.add_argument("--workdir", help="scratch directory (default: a temp dir, removed after)")
    data.set_defaults(func=cmd_data)

    kern = bsub.add_parser(
        "kernel", help="ns/bar/genome of the backtest kernel vs vectorbt, with a parity check",
        description="Time the numba kernel on one core for an SMA-cross grid (windows 2..100 on "
                    "the bundled S&P 500, a smaller grid on a generated series) and for full "
                    "genomes, against vectorbt's Portfolio.from_signals on the same grid, and "
                    "check total return and trade count agree in close-fill mode. Needs the "
                    "'bench' extra (pip install -e '.[bench]').")
    kern.add_argument("--repeat", type=int, default=3, help="timed repeats (best is reported)")
    kern.add_argument("--bars", type=int, default=1_000_000, help="bars in the generated series")
    kern.add_argument("--genomes", type=int, default=64, help="full genomes timed on S&P 500")
    kern.set_defaults(func=cmd_kernel)

    evo = bsub.add_parser(
        "evolution", help="Ray end-to-end evaluation rate vs in-process, scaling, worker memory",
        description="Run a short evolution through the Ray pool (generation loop, checkpoints "
                    "and MLflow logging included) on a generated hourly series, then evaluate the "
                    "same genomes in one process with `evaluate`; also time 1 worker against all, "
                    "and report each worker's memory for a small and a large dataset.")
    evo.add_argument("--bars", type=int, default=1_000_000, help="bars in the large dataset")
    evo.add_argument("--small-bars", type=int, default=100_000, help="bars in the small dataset")
    evo.add_argument("--population", type=int, default=64)
    evo.add_argument("--generations", type=int, default=3)
    evo.set_defaults(func=cmd_evolution)

    gates = bsub.add_parser(
        "gates", help="PBO and look-ahead audit: ours vs the plain computation",
        description="PBO by CSCV with block-moment Sharpe ratios against concatenating every "
                    "split's blocks (logits checked equal), and the look-ahead audit on the "
                    "bundled S&P 500 with memoised GARCH fits against refitting every "
                    "truncated history.")
    gates.add_argument("--repeat", type=int, default=3, help="timed repeats (best is reported)")
    gates.set_defaults(func=cmd_gates)


def cmd_data(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_data import run

    print(json.dumps(run(args.ticks, args.symbols, args.days, args.repeat, args.workdir)))
    return 0


def cmd_kernel(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_kernel import run

    print(json.dumps(run(args.repeat, args.bars, args.genomes)))
    return 0


def cmd_evolution(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_evolution import run

    print(json.dumps(run(args.bars, args.population, args.generations, args.small_bars)))
    return 0


def cmd_gates(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_gates import run

    print(json.dumps(run(args.repeat)))
    return 0
