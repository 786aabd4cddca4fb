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
                    "check total return and trade count agree in close-fill mode; also time the "
                    "live path (µs per decision: the newest bar's tables update and the live "
                    "step, refits excluded) and check it trades the backtest. Needs the "
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
    evo.add_argument("--population", type=int, default=64, help="GA population per run")
    evo.add_argument("--generations", type=int, default=3, help="generations per timed run")
    evo.set_defaults(func=cmd_evolution)

    gates = bsub.add_parser(
        "gates", help="PBO and look-ahead audit: ours vs the plain computation",
        description="PBO by CSCV with block-moment Sharpe ratios against concatenating every "
                    "split's blocks (logits checked equal), and the look-ahead audit on the "
                    "bundled S&P 500 with memoised GARCH fits against refitting every "
                    "truncated history.")
    gates.add_argument("--repeat", type=int, default=3, help="timed repeats (best is reported)")
    gates.set_defaults(func=cmd_gates)

    champ = bsub.add_parser(
        "champions", help="time to trade a champion: from its bundle vs replaying the history",
        description="Read a signed champion bundle as the live host does (signature, digests, "
                    "the tables' and kernel's state) and build the live tables and strategy, "
                    "against rebuilding that state by replaying the history from its origin "
                    "(every GARCH refit, the kernel over every bar); both decide on one new bar "
                    "and must agree. On the bundled S&P 500 and a generated hourly series, "
                    "default volatility config. Also the bundle size and the signing time.")
    champ.add_argument("--hourly", type=int, default=20_000,
                       help="bars of the generated hourly series (0: S&P 500 only)")
    champ.add_argument("--repeat", type=int, default=5, help="timed repeats (best is reported)")
    champ.set_defaults(func=cmd_champions)

    fixb = bsub.add_parser(
        "fix", help="FIX inbound messages/s and order round trip vs QuickFIX and simplefix",
        description="Inbound: ExecutionReports through our FIX session as from a socket "
                    "(framing, parse, checks, FIX 4.4 dictionary, sequence numbers, dispatch) "
                    "on one core, against QuickFIX's parse + DataDictionary validation and "
                    "simplefix's bare parser on the same frames. Round trip: NewOrderSingle "
                    "to ExecutionReport on 127.0.0.1, our initiator against our venue (a "
                    "separate process), p50 and p99, and against a QuickFIX acceptor. "
                    "Targets: >= 20,000 messages/s, p99 <= 2 ms. QuickFIX comes with the "
                    "'dev' extra (quickfix-tls); without it its figures are null.")
    fixb.add_argument("--messages", type=int, default=50_000, help="inbound messages timed")
    fixb.add_argument("--orders", type=int, default=2_000, help="round trips timed")
    fixb.add_argument("--warmup", type=int, default=100, help="round trips before timing")
    fixb.add_argument("--repeat", type=int, default=3, help="inbound repeats (best reported)")
    fixb.set_defaults(func=cmd_fix)

    live = bsub.add_parser(
        "live", help="live executor: bar close -> NewOrderSingle latency, RSS, cold start",
        description="Run the executor as its own process against the paper venue (stepped "
                    "bar by bar on 127.0.0.1) trading a planted-edge champion that orders on "
                    "almost every bar. Prints the bar-close -> NewOrderSingle latency (p50, "
                    "p99, refit bars apart, with the fsync'd commits' share and the same run with "
                    "the state on tmpfs), the executor's and its refit worker's memory after warm-up and what it is made of (fresh "
                    "interpreters importing each dependency group), and the cold start to "
                    "READY and to the first decision from a bundle with a snapshot. Targets: "
                    "p99 <= 2 ms, RSS <= 250 MB (goal 150 MB).")
    live.add_argument("--bars", type=int, default=1_200,
                      help="bars the venue replays in the latency run (most carry an order)")
    live.add_argument("--history", type=int, default=300,
                      help="bars of history behind the bundle's snapshot")
    live.add_argument("--warmup", type=int, default=50,
                      help="first bars left out of the latency figures; RSS is read after them")
    live.add_argument("--repeat", type=int, default=3,
                      help="cold starts timed (best is reported, all are listed)")
    live.add_argument("--no-empty-cache-start", action="store_true",
                      help="skip the extra first start with an empty numba cache (~15 s of "
                           "kernel compilation)")
    live.add_argument("--refit-every", type=int, default=21,
                      help="the champion's GARCH refit cadence in bars (21: the default "
                           "volatility config); refit bars are reported apart")
    live.set_defaults(func=cmd_live)

    ginn = bsub.add_parser(
        "ginn", help="GINN vs the GARCH family out of sample on S&P 500 and NASDAQ, MCS, "
                     "seconds per epoch",
        description="On the bundled daily S&P 500 and NASDAQ, with the packaged "
                    "configs/ginn.yaml settings: lambda by walk-forward on the research part, "
                    "GINN, GINN-0 and a plain LSTM trained on it, then out-of-sample QLIKE, MSE, "
                    "MAE and R² of those and of GARCH(1,1), GJR, EGARCH and EWMA, the model "
                    "confidence set and the promotion gate; training seconds per epoch on the "
                    "CPU (one torch thread) and on the GPU when torch sees one. Several "
                    "minutes per symbol on 2 cores.")
    ginn.add_argument("--epochs", type=int, help="override train.epochs (default: the config)")
    ginn.add_argument("--symbols", nargs="+", choices=["SP500", "NDX"],
                      default=["SP500", "NDX"], help="bundled symbols to run")
    ginn.add_argument("--mcs-reps", type=int, help="MCS bootstrap replications (default: the "
                                                   "config's)")
    ginn.set_defaults(func=cmd_ginn)

    power = bsub.add_parser(
        "power", help="false-eligible rate on noise and detection rate of planted edges",
        description="Generate noise series (driftless, equity-like drift judged against "
                    "buy-and-hold, GARCH fat tails, hourly) and series with a planted edge the "
                    "genome can express (channel breakout, short-horizon autocorrelation, "
                    "hour-of-day session, volatility regime) at calibrated strengths (the exact "
                    "planted rule's annualised Sharpe after costs); run the default evolution "
                    "and emp gates on each, over SEEDS seeds. Prints the false-eligible rate "
                    "with its one-sided 95 %% upper bound, the detection rate per kind and "
                    "strength, the same for the old gates (the comparator) and the trade-off "
                    "over policy knobs; saves the power-curve plot. Each finished cell is kept "
                    "in WORKDIR/cells.jsonl, so a stopped run resumes. About an hour on 2 cores.")
    power.add_argument("--seeds", type=int, default=10, help="series per noise family and per "
                       "edge kind and strength")
    power.add_argument("--workers", type=int, default=2, help="cells run in parallel (processes)")
    power.add_argument("--workdir", help="where cells.jsonl and the plot go "
                       "(default: $EMP_HOME/bench-power)")
    power.add_argument("--kinds", nargs="+", help="only these series kinds (default: all)")
    power.add_argument("--strengths", nargs="+", type=float,
                       help="planted Sharpe ratios (default: 1.0 1.5 2.0 3.0)")
    power.add_argument("--bars", type=int, help="bars per series (default: 5,000 daily, "
                       "31,200 hourly)")
    power.add_argument("--population", type=int, help="GA population (default: the config "
                       "default, 100)")
    power.add_argument("--generations", type=int, help="GA generations (default: 30)")
    power.add_argument("--plot", help="power-curve PNG (default: WORKDIR/power_curves.png)")
    power.add_argument("--markdown", action="store_true",
                       help="also print the power table for BENCHMARKS.md")
    power.add_argument("--smoke", action="store_true",
                       help="a two-cell check that the pipeline runs (tiny GA, 3,000 bars)")
    power.set_defaults(func=cmd_power)


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


def cmd_champions(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_champions import run

    print(json.dumps(run(args.hourly, args.repeat)))
    return 0


def cmd_fix(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_fix import run
    from core.errors import EmpError

    for name in ("messages", "orders"):
        if getattr(args, name) < 1:
            raise EmpError(f"emp bench fix: --{name} must be at least 1")
    if args.warmup < 0 or args.repeat < 1:
        raise EmpError("emp bench fix: --warmup must be >= 0 and --repeat >= 1")
    print(json.dumps(run(args.messages, args.orders, args.warmup, args.repeat)))
    return 0


def cmd_live(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core.errors import EmpError

    if args.warmup < 0 or args.repeat < 1 or args.history < 2 or args.refit_every < 1:
        raise EmpError("emp bench live: --warmup must be >= 0, --repeat >= 1, --history >= 2, "
                       "--refit-every >= 1")
    if args.bars <= args.warmup + 1:
        raise EmpError(f"emp bench live: --bars {args.bars} must exceed --warmup "
                       f"{args.warmup} by at least 2 (the figures need bars after the warm-up)")
    from benchmarks.bench_live import run

    print(json.dumps(run(args.bars, args.history, args.warmup, args.repeat,
                         not args.no_empty_cache_start, args.refit_every)))
    return 0


def cmd_power(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from benchmarks.bench_power import SMOKE, markdown, run

    opts = dict(SMOKE) if args.smoke else {}
    for key in ("seeds", "kinds", "strengths", "population", "generations"):
        if getattr(args, key) is not None and not (args.smoke and key == "seeds"):
            opts[key] = getattr(args, key)
    if args.bars:
        opts["n"] = args.bars
    summary = run(workdir=args.workdir or str(cfg.home / "bench-power"), workers=args.workers,
                  plot_path=args.plot, **opts)
    print(json.dumps(summary))
    if args.markdown:
        print(markdown(summary))
    return 0


def cmd_ginn(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core.errors import EmpError

    if args.epochs is not None and args.epochs < 1:
        raise EmpError(f"emp bench ginn: --epochs {args.epochs} must be at least 1")
    if args.mcs_reps is not None and args.mcs_reps < 100:
        raise EmpError(f"emp bench ginn: --mcs-reps {args.mcs_reps} must be at least 100")
    from benchmarks.bench_ginn import run

    print(json.dumps(run(args.epochs, tuple(args.symbols), args.mcs_reps)))
    return 0
