"""The ``emp`` command: one entry point, subcommands registered by the package that owns them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import EmpError

if TYPE_CHECKING:  # loaded once a command runs: `emp --help` needs no config model
    from configs.models import EmpConfig

DEFAULT_CONFIG = Path("configs/default.yaml")


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="CONFIG",
                        help=f"YAML config (default: {DEFAULT_CONFIG} if present, else built-in "
                             f"defaults; $EMP_HOME sets the data home)")


def resolve_config(path: Path | None) -> EmpConfig:
    from configs.loader import load_config
    from configs.models import EmpConfig

    if path is not None:
        return load_config(path)
    if DEFAULT_CONFIG.is_file():
        return load_config(DEFAULT_CONFIG)
    return EmpConfig()


def build_parser() -> argparse.ArgumentParser:
    from benchmarks import cli as bench_cli
    from configs import cli as config_cli
    from evolution import cli as evolution_cli
    from fitness import cli as fitness_cli
    from gates import cli as gates_cli
    from genome import cli as genome_cli
    from market import cli as market_cli

    parser = argparse.ArgumentParser(
        prog="emp",
        description="EMP, Evolving Market Predator: evolve trading strategies on Ray, judge them "
                    "out of sample, and trade the champions.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    market_cli.register(sub, add_config)
    config_cli.register(sub, add_config)
    bench_cli.register(sub, add_config)
    genome_cli.register(sub, add_config)
    fitness_cli.register(sub, add_config)
    evolution_cli.register(sub, add_config)
    evolution_cli.register_tune(sub, add_config)
    gates_cli.register(sub, add_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, EmpConfig], int] = args.func
    try:
        cfg = resolve_config(getattr(args, "config", None))
        return func(args, cfg)
    except EmpError as exc:
        print(f"emp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
