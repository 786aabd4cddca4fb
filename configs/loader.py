"""Load a YAML config into typed models, failing before any work starts.

Every error names the file, the dotted key path and the reason. ``${VAR}`` in a string value
is replaced from the environment (``${VAR:-default}`` gives a default); a missing variable is
an error that names it. Values never appear in messages for keys that look secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configs.models import EmpConfig
from core.errors import EmpError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_HINTS = ("password", "secret", "token", "key")


class ConfigError(EmpError, ValueError):
    """A config file is unusable; the message says where and why."""


def _dotted(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def _substitute(node: Any, path: tuple[Any, ...], source: str) -> Any:
    """Replace ``${VAR}`` references in every string of a parsed YAML tree."""
    if isinstance(node, dict):
        return {k: _substitute(v, (*path, k), source) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, (*path, i), source) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is not None:
                return default
            raise ConfigError(
                f"{source}: {_dotted(path)}: environment variable {name} is not set"
            )
        return value

    return _ENV_REF.sub(repl, node)


def _is_secret(loc: tuple[Any, ...]) -> bool:
    return any(isinstance(p, str) and any(h in p.lower() for h in _SECRET_HINTS) for p in loc)


def parse_config(raw: dict[str, Any] | None, source: str = "<config>") -> EmpConfig:
    """Validate an already-parsed mapping (used by tests and by ``load_config``)."""
    data = _substitute(raw or {}, (), source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <root>: expected a mapping, got {type(data).__name__}")
    try:
        return EmpConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            elif not _is_secret(loc) and "input" in err and not isinstance(err["input"], dict):
                reason = f"{reason} (got {err['input']!r})"
            lines.append(f"{source}: {_dotted(loc)}: {reason}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | os.PathLike[str]) -> EmpConfig:
    """Read, substitute and validate a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw, str(p))
