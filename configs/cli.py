"""``emp config check``: validate a config file and show the settings it resolves to."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    cfg = sub.add_parser("config", help="validate a config file",
                         description="Validate YAML configs before any work starts.")
    csub = cfg.add_subparsers(dest="config_cmd", required=True, metavar="COMMAND")
    chk = csub.add_parser("check", help="validate a config and print it with defaults filled in",
                          description="Load CONFIG, substitute ${VAR}s, validate every key and "
                                      "print the resolved settings as JSON. Exit 2 when invalid.")
    add_config(chk)  # type: ignore[operator]
    chk.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace, cfg: EmpConfig) -> int:
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0
