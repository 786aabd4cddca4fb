"""The "must not import" column of the design's package table, checked two ways per package:

* in a fresh interpreter that imports every module of the package, no forbidden top-level
  module may end up in ``sys.modules`` (what a process that uses the package really loads);
* no module of the package may name a forbidden module in an import statement anywhere, even
  inside a function (what a later call could load).

Plus: evolution takes only the period layout (``gates.layout``) from the gates, and ``emp``
registers its subcommands without loading the config model or the packages behind it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("core", "market", "genome", "fitness", "gates", "workers", "evolution", "champions",
           "live", "configs", "benchmarks", "emp_cli")

MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "core": tuple(p for p in PROJECT if p != "core"),
    "market": ("ray", "torch", "mlflow"),
    "genome": ("ray", "torch", "mlflow"),
    "fitness": ("ray", "torch", "mlflow", "gates"),
    "gates": ("ray", "torch", "deap", "evolution", "workers"),
    "evolution": ("torch",),
    "champions": ("ray", "torch", "evolution"),
    "live": ("ray", "torch", "mlflow", "optuna", "deap"),
}


def modules(package: str) -> list[str]:
    """Every module of ``package`` (the package itself first), as dotted names."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names, key=lambda n: (n != package, n))


def imported_names(package: str) -> dict[str, set[str]]:
    """module -> every absolute module name its import statements name (``from a import b``
    names ``a`` and ``a.b``), wherever they stand in the file."""
    out: dict[str, set[str]] = {}
    for name in modules(package):
        path = ROOT / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        out[name] = found
    return out


@pytest.mark.parametrize("package", list(MUST_NOT_IMPORT))
def test_a_package_never_loads_what_it_must_not_import(package):
    mods = [m for m in modules(package) if not m.endswith(".__main__")]  # entry points run
    code = ("import importlib, json, sys\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.partition('.')[0] for n in sys.modules})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert package in loaded
    assert not loaded & set(MUST_NOT_IMPORT[package]), sorted(loaded & set(MUST_NOT_IMPORT[package]))


@pytest.mark.parametrize("package", list(MUST_NOT_IMPORT))
def test_no_module_names_a_forbidden_import(package):
    forbidden = set(MUST_NOT_IMPORT[package])
    bad = {mod: sorted(n for n in names if n.partition(".")[0] in forbidden)
           for mod, names in imported_names(package).items()}
    assert not {m: b for m, b in bad.items() if b}


def test_evolution_takes_only_the_layout_from_the_gates():
    used = {n for names in imported_names("evolution").values() for n in names
            if n.partition(".")[0] == "gates"}
    others = {n for n in used if n != "gates" and n != "gates.layout"
              and not n.startswith("gates.layout.")}
    assert not others, sorted(others)
    assert "gates.layout" in used


def test_emp_registers_its_commands_without_the_config_model():
    """``emp --help`` builds every subcommand's parser; the config model (and with it every
    package's settings, scipy-backed gate policy included) loads only when a command runs."""
    code = ("import json, sys\n"
            "from emp_cli.main import build_parser\n"
            "build_parser()\n"
            "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not {"configs.models", "configs.loader", "evolution.config", "fitness.config",
                "gates.policy"} & loaded
    for package in ("evolution", "gates", "fitness", "configs", "benchmarks"):
        assert {m for m in loaded if m.partition(".")[0] == package} <= {package,
                                                                           f"{package}.cli"}
    assert not {"deap", "ray", "mlflow", "optuna", "torch"} & {m.partition(".")[0]
                                                                for m in loaded}
