"""The strict base of every config model, and the loading every small YAML config shares
(``${VAR}`` / ``${VAR:-default}`` from the environment, one-line errors naming the key);
each package owns its own section models. (The main EMP config adds secret masking on top:
``configs.loader``.)"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import EmpError

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def substitute_env(node: Any, where: str, error: type[EmpError]) -> Any:
    """``node`` with every ``${VAR}`` / ``${VAR:-default}`` in its strings replaced; an unset
    variable without a default raises ``error`` naming the key."""
    if isinstance(node, dict):
        return {k: substitute_env(v, f"{where}.{k}", error) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, f"{where}[{i}]", error) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def env(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1), m.group(2))
        if value is None:
            raise error(f"{where}: environment variable {m.group(1)} is not set")
        return value

    return ENV_REF.sub(env, node)


def parse_model(model: type[M], raw: Any, source: str, error: type[EmpError]) -> M:
    """A parsed YAML mapping -> ``model``, or a one-line ``error`` naming the key."""
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping at the top, got {type(raw).__name__}")
    raw = substitute_env(raw, source, error)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise error(f"{source}: {key}: {err['msg']}{more}") from None


def load_yaml_model(model: type[M], path: str | os.PathLike[str], what: str,
                    error: type[EmpError]) -> M:
    """``model`` from the YAML file at ``path``; ``what`` names the file in errors."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{what} {p}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise error(f"{what} {p}:{at}: not valid YAML") from None
    return parse_model(model, raw, str(p), error)
