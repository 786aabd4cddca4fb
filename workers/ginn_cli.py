"""``emp ginn train -c CONFIG`` and ``emp ginn show [PATH]``; ``python -m workers.ginn_train
CONFIG`` (the ``ray job submit`` entry) shares the train command's options.

Here ``-c/--config`` names the GINN config (configs/ginn.yaml, ``workers.ginn_config``), not
the EMP config: the nightly job reads nothing else (default: the packaged configs/ginn.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import EmpError
from workers.ginn_config import GinnConfig, GinnConfigError, load_ginn_config, parse_ginn_config

FARM = ("torch", "ray", "mlflow", "arch", "numba")  # what the training job imports


class GinnShowError(EmpError):
    """``emp ginn show`` found no usable model at the path given."""


def default_ginn_config() -> Path:
    import configs

    return Path(configs.__file__).resolve().parent / "ginn.yaml"


def _config_option(p: argparse.ArgumentParser) -> None:
    # dest is not "config": emp's main() would read the file as an EMP config
    p.add_argument("-c", "--config", dest="ginn_config", type=Path, default=None,
                   metavar="CONFIG", help="the GINN config (default: the packaged "
                                          "configs/ginn.yaml; $EMP_HOME sets its home)")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbol", help="override symbol")
    p.add_argument("--timeframe", help="override timeframe")
    p.add_argument("--until", metavar="DATE",
                   help="train on bars before DATE only (default: up to the last close)")
    p.add_argument("--epochs", type=int, metavar="N", help="override train.epochs")
    p.add_argument("--cpu", action="store_true", help="never ask Ray for a GPU")
    p.add_argument("--local", action="store_true",
                   help="train in this process, without Ray (debugging)")


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    g = sub.add_parser("ginn", help="train and inspect GINN, the GARCH-informed neural "
                                    "volatility model",
                       description="Nightly GINN (issue 15): train one symbol's model as a Ray "
                                   "task (a GPU when the cluster has one), judge it against "
                                   "the GARCH family out of sample, export numpy weights for "
                                   "the live side.")
    gsub = g.add_subparsers(dest="ginn_cmd", required=True, metavar="ACTION")
    tr = gsub.add_parser(
        "train", help="train, evaluate, export and register tonight's model",
        description="History up to the last close -> volatility table -> lambda by walk-forward "
                    "on the research part -> GINN, GINN-0, LSTM -> out-of-sample MSE, MAE, "
                    "QLIKE, R² against GARCH(1,1), GJR, EGARCH, EWMA -> MCS and gate -> "
                    "$EMP_HOME/ginn/SYMBOL/TF/STAMP.npz, latest.json, MLflow run and model "
                    "version ginn.SYMBOL.TF. Uses the Ray cluster at $RAY_ADDRESS, or an "
                    "embedded local Ray.")
    _config_option(tr)
    _train_options(tr)
    tr.set_defaults(func=cmd_train)
    sh = gsub.add_parser(
        "show", help="the latest model: sha256, age, lambda, gate, metrics",
        description="Verify and describe a GINN model. PATH: a latest.json, a weights .npz or "
                    "a directory holding latest.json (default: the config's "
                    "$EMP_HOME/ginn/SYMBOL/TF/latest.json).")
    sh.add_argument("path", nargs="?", type=Path, default=None, metavar="PATH",
                    help="latest.json, a .npz, or its directory")
    _config_option(sh)
    sh.add_argument("--symbol", help="the config's symbol otherwise (without PATH)")
    sh.add_argument("--timeframe", help="the config's timeframe otherwise (without PATH)")
    sh.add_argument("--json", action="store_true", help="print one JSON line")
    sh.set_defaults(func=cmd_show)


def ginn_config(path: Path | None) -> GinnConfig:
    return load_ginn_config(path if path is not None else default_ginn_config())


def with_overrides(cfg: GinnConfig, args: argparse.Namespace) -> GinnConfig:
    """The config with the command line's overrides, validated like the file (one-line error
    naming the option)."""
    raw = cfg.model_dump()
    where = {"symbol": ("symbol",), "timeframe": ("timeframe",), "until": ("until",),
             "epochs": ("train", "epochs")}
    for opt, keys in where.items():
        value = getattr(args, opt, None)
        if value is not None:
            node = raw
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
    if getattr(args, "cpu", False):
        raw["cpu"] = True
    return parse_ginn_config(raw, "command line")


def cmd_train(args: argparse.Namespace, _cfg: Any = None) -> int:
    from workers.ginn_train import train

    cfg = with_overrides(ginn_config(args.ginn_config), args)
    report = train(cfg, local=args.local)
    for w in report.warnings:
        print(f"emp: warning: {w}", file=sys.stderr)
    print(json.dumps(report.summary()))
    return 0


def resolve_model(path: Path | None, args: argparse.Namespace) -> tuple[Path, dict | None]:
    """(weights .npz, the latest.json pointer or None) for ``emp ginn show``."""
    from workers.ginn_train import LATEST

    if path is None:
        path = with_overrides(ginn_config(args.ginn_config), args).ginn_dir() / LATEST
    if path.is_dir():
        path = path / LATEST
    if path.suffix == ".npz":
        return path, None
    try:
        pointer = json.loads(path.read_text())
        return path.parent / str(pointer["file"]), pointer
    except FileNotFoundError:
        raise GinnShowError(f"{path}: no GINN model yet (run `emp ginn train`)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GinnShowError(f"{path}: not a GINN latest.json pointer ({exc})") from None


def describe(npz: Path, pointer: dict | None, now: datetime | None = None) -> dict[str, Any]:
    """What ``emp ginn show`` prints: the verified file's sha256, age, lambda, gate, metrics."""
    from market.ginn import load_weights, sidecar_path

    w = load_weights(npz)  # verifies the sha256, format and shapes
    side = json.loads(sidecar_path(npz).read_text())
    if pointer is not None and pointer.get("sha256") != side["sha256"]:
        raise GinnShowError(f"{npz}: sha256 {side['sha256'][:16]}... is not the one "
                            f"latest.json names ({str(pointer.get('sha256'))[:16]}...)")
    meta = w.meta
    try:
        trained = datetime.fromisoformat(str(meta.get("trained_at")))
        age_h = ((now or datetime.now(UTC)) - trained).total_seconds() / 3600.0
    except (TypeError, ValueError):  # no ISO time, or one without a zone
        raise GinnShowError(f"{npz}: meta.trained_at {meta.get('trained_at')!r} is not an ISO "
                            f"UTC time") from None
    metrics = meta.get("metrics", {})
    return {"file": str(npz), "sha256": side["sha256"], "trained_at": meta.get("trained_at"),
            "age_hours": round(age_h, 2), "data_end": meta.get("data_end"),
            "symbol": meta.get("symbol"), "timeframe": meta.get("timeframe"),
            "lambda": meta.get("lam"), "device": meta.get("device"),
            "promoted": meta.get("gate", {}).get("passed"),
            "gate": meta.get("gate", {}).get("reason"),
            "qlike": {k: v.get("qlike") for k, v in metrics.items()},
            "r2": {k: v.get("r2") for k, v in metrics.items()},
            "model_version": (pointer or {}).get("model_version")}


def cmd_show(args: argparse.Namespace, _cfg: Any = None) -> int:
    npz, pointer = resolve_model(args.path, args)
    d = describe(npz, pointer)
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{d['symbol']}/{d['timeframe']}  {d['file']}\n"
          f"  sha256    {d['sha256']}\n"
          f"  trained   {d['trained_at']} ({d['age_hours']:.1f} h ago), data to {d['data_end']}, "
          f"on {d['device']}\n"
          f"  lambda    {d['lambda']}\n"
          f"  promoted  {d['promoted']}: {d['gate']}")
    for name, q in sorted(d["qlike"].items(), key=lambda kv: (kv[1] is None, kv[1])):
        r2 = d["r2"].get(name)
        print(f"  {name:<8} QLIKE {q:.4f}  R² {r2:.4f}" if q is not None and r2 is not None
              else f"  {name:<8} QLIKE {q}  R² {r2}")
    return 0


def module_main(argv: list[str]) -> int:
    """``python -m workers.ginn_train CONFIG [options]``: the train command for ray job submit
    (quiet third-party logs, masked errors, one line each, as under ``emp``)."""
    import os

    from core.secrets import install_log_masking, mask_text
    from emp_cli.main import quiet_third_party
    from evolution.__main__ import missing_modules

    missing = missing_modules(FARM)
    if missing:  # under `ray job submit` the job's python may not be the project's venv
        print(f"emp: error: this Python ({sys.executable}) cannot import {', '.join(missing)}: "
              f"run the job with the project's venv (`ray job submit ... -- "
              f"/abs/path/to/emp/.venv/bin/python -m workers.ginn_train CONFIG`)",
              file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    install_log_masking()

    p = argparse.ArgumentParser(prog="python -m workers.ginn_train",
                                description="Train tonight's GINN model (see emp ginn train).")
    p.add_argument("ginn_config", type=Path, metavar="CONFIG", help="the GINN config")
    _train_options(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show third-party INFO logs (MLflow, Ray) on stderr")
    args = p.parse_args(argv)
    quiet_third_party(args.verbose)
    try:
        return cmd_train(args)
    except EmpError as exc:
        print(f"emp: error: {mask_text(str(exc))}", file=sys.stderr)
        return exc.exit_code


__all__ = ["GinnConfigError", "GinnShowError", "cmd_show", "cmd_train", "describe",
           "module_main", "register", "resolve_model", "with_overrides"]
