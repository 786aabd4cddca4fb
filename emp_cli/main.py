"""The ``emp`` command: one entry point, subcommands registered by the package that owns them.

Conventions every command shares (so a user learns them once): ``-c/--config FILE`` (default:
the config packaged with EMP, ``configs/default.yaml``, whatever the working directory),
``--progress/--no-progress`` where a command has a progress bar, ``-v/--verbose`` (or
``EMP_DEBUG=1``) to see third-party INFO logs, and ``emp --version``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from core.errors import EmpError
from core.secrets import install_log_masking, mask_text

if TYPE_CHECKING:  # loaded once a command runs: `emp --help` needs no config model
    from configs.models import EmpConfig

# Loggers of third-party libraries that write INFO lines to stderr ("Creating initial MLflow
# database tables...", alembic migrations, Ray's startup): WARNING unless -v or EMP_DEBUG=1.
NOISY_LOGGERS = ("mlflow", "alembic", "ray", "optuna", "urllib3", "numba", "matplotlib",
                 "filelock", "git")


def default_config() -> Path:
    """``configs/default.yaml`` of the installed ``configs`` package (it ships in the wheel):
    never relative to the working directory, so `emp data bootstrap` works from anywhere."""
    import configs

    return Path(configs.__file__).resolve().parent / "default.yaml"


def add_config(parser: argparse.ArgumentParser) -> None:
    """``-c/--config`` (every command gets it; see ``build_parser``)."""
    parser.add_argument("-c", "--config", type=Path, default=None, metavar="CONFIG",
                        help="YAML config (default: the packaged configs/default.yaml; "
                             "$EMP_HOME sets the data home)")


def add_progress(parser: argparse.ArgumentParser, default: bool = True,
                 what: str = "a progress bar on stderr") -> None:
    """The one progress convention: ``--progress`` / ``--no-progress``."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=default,
                        help=f"{what} (default: {'on' if default else 'off'})")


def add_deprecated_config_positional(parser: argparse.ArgumentParser) -> None:
    """The old ``emp evolve CONFIG`` form keeps working; ``main`` warns and moves it to -c."""
    parser.add_argument("config_positional", nargs="?", type=Path, default=None,
                        metavar="CONFIG", help="deprecated: use -c/--config CONFIG")


def resolve_config(path: Path | None) -> EmpConfig:
    from configs.loader import load_config
    from configs.models import EmpConfig

    if path is not None:
        return load_config(path)
    default = default_config()
    if default.is_file():
        return load_config(default)
    return EmpConfig()


def version() -> str:
    """The installed distribution's version; pyproject.toml's when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("emp")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def walk_parsers(parser: argparse.ArgumentParser,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                               argparse.ArgumentParser]]:
    """Every parser of the tree with its command path, the root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk_parsers(sub, (*path, name))


def _is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


class EmpParser(argparse.ArgumentParser):
    """argparse with the project's one error form: the usage, then ``emp: error: …``, exit 2
    (subcommand parsers are made with the same class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("emp").strip()
        print(f"emp: error: {where + ': ' if where else ''}{message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from benchmarks import cli as bench_cli
    from champions import cli as champions_cli
    from configs import cli as config_cli
    from evolution import cli as evolution_cli
    from fitness import cli as fitness_cli
    from gates import cli as gates_cli
    from genome import cli as genome_cli
    from live.executor import cli as live_cli
    from live.venue import cli as venue_cli
    from market import cli as market_cli
    from workers import ginn_cli

    parser = EmpParser(
        prog="emp",
        description="EMP, Evolving Market Predator: evolve trading strategies on Ray, judge them "
                    "out of sample, and trade the champions.",
        epilog="Every command takes -c/--config CONFIG (default: the packaged "
               "configs/default.yaml). EMP_DEBUG=1 shows tracebacks and third-party logs.")
    parser.add_argument("--version", action="version", version=f"emp {version()}",
                        help="print the installed version and exit")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party INFO logs (MLflow, alembic, Ray) on stderr")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    market_cli.register(sub, add_config)
    config_cli.register(sub, add_config)
    bench_cli.register(sub, add_config)
    genome_cli.register(sub, add_config)
    fitness_cli.register(sub, add_config)
    evolution_cli.register(sub, add_config)
    evolution_cli.register_tune(sub, add_config)
    gates_cli.register(sub, add_config)
    champions_cli.register(sub, add_config)
    venue_cli.register(sub, add_config)
    live_cli.register(sub, add_config)
    ginn_cli.register(sub, add_config)
    for _, p in walk_parsers(parser):  # -c/--config on every command, one convention
        if _is_leaf(p) and "--config" not in p._option_string_actions:
            add_config(p)
    return parser


def debug() -> bool:
    return os.environ.get("EMP_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def quiet_third_party(verbose: bool) -> None:
    """Third-party INFO chatter off stderr unless asked for; warnings and errors still show.

    MLflow also reads ``MLFLOW_LOGGING_LEVEL`` when it configures its loggers on import."""
    # set either way: an earlier quiet call in this process (tests call main() in-process) must
    # not silence a later -v, nor leak into the subprocesses it starts
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    level = logging.NOTSET if verbose else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _apply_deprecated_config(args: argparse.Namespace) -> None:
    """``emp evolve CONFIG`` -> ``-c CONFIG``, with a note on stderr (or an error if both)."""
    positional = getattr(args, "config_positional", None)
    if positional is None:
        return
    if args.config is not None and args.config != positional:
        raise EmpError(f"CONFIG given twice: positional {positional} and --config "
                       f"{args.config}; use -c/--config only")
    print(f"emp: note: the positional CONFIG is deprecated; use: emp {args.cmd} -c {positional}",
          file=sys.stderr)
    args.config = positional


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    install_log_masking()
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party(args.verbose or debug())
    func: Callable[[argparse.Namespace, EmpConfig], int] = args.func
    try:
        _apply_deprecated_config(args)
        cfg = resolve_config(getattr(args, "config", None))
        return func(args, cfg)
    except EmpError as exc:
        print(f"emp: error: {mask_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:
        # A bug or a library failure (e.g. an unreachable MLflow server): the traceback is
        # needed, but MLflow and requests put the full URI, credentials included, in theirs.
        print(mask_text(traceback.format_exc()), file=sys.stderr, end="")
        return 1


if __name__ == "__main__":
    sys.exit(main())
