"""configs/ops/ checked by the real tools: ``promtool`` (rules, rule unit tests, scrape
config) and ``systemd-analyze verify`` (the unit), plus cross-checks that the alert rules and
the Grafana dashboard name only metrics ``live.ops.metrics.Metrics`` exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_ops_metrics import exercised

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "configs" / "ops"
UNIT = OPS / "emp-live.service"
SHIPPED_EXEC = "/opt/emp/.venv/bin/emp"
# what Prometheus itself adds to every target; everything else must come from Metrics
PROMETHEUS_SYNTHETIC = {"up"}
KEYWORDS = {"and", "or", "unless", "offset", "by", "without", "bool", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}


def tool(name: str, skip_var: str, install: str) -> str:
    """Path of a required tool; a missing one fails with the install line unless skipped."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get(skip_var) == "1":
        pytest.skip(f"{name} missing and {skip_var}=1")
    pytest.fail(f"{name} is missing: run '{install}' (or `make sysdeps`), or set {skip_var}=1 "
                "to skip these tests", pytrace=False)


def promtool() -> str:
    return tool("promtool", "EMP_SKIP_PROMTOOL",
                "apt-get install -y --no-install-recommends prometheus")


def systemd_analyze() -> str:
    return tool("systemd-analyze", "EMP_SKIP_SYSTEMD",
                "apt-get install -y --no-install-recommends systemd")


def run(*cmd: str, cwd: Path = OPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: strip strings, label matchers, ranges and
    grouping clauses, then keep identifiers that are not functions or keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", s):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def exported() -> set[str]:
    """Every sample and family name a fully exercised Metrics puts on /metrics."""
    out = set()
    for fam in text_string_to_metric_families(exercised().exposition().decode()):
        out.add(fam.name)
        out.update(s.name for s in fam.samples)
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((OPS / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


# -- promtool ---------------------------------------------------------------------------
def test_promtool_check_rules() -> None:
    res = run(promtool(), "check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_rule_unit_tests() -> None:
    """configs/ops/alerts_test.yml: drawdown, order success, breaker, FIX session, staleness
    (quiet while the market is closed), target down, RV/GARCH divergence, volatility spike."""
    res = run(promtool(), "test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_rejects_a_broken_rule(tmp_path) -> None:
    """The check can fail: a rule with a PromQL syntax error."""
    text = (OPS / "alerts.yml").read_text().replace(
        "expr: emp_breaker_open == 1", "expr: emp_breaker_open == == 1")
    (tmp_path / "alerts.yml").write_text(text)
    res = run(promtool(), "check", "rules", "alerts.yml", cwd=tmp_path)
    assert res.returncode != 0


def test_promtool_check_scrape_config() -> None:
    res = run(promtool(), "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    job = yaml.safe_load((OPS / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["job_name"] == "emp-live"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9108"]  # OpsServer's default


# -- names ------------------------------------------------------------------------------
def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (job, le) (rate(x_bucket{a="b"}[5m])))'
                        " > 0.1") == {"x_bucket"}
    assert metric_names("a > ignoring(symbol) group_left b and c == 1 or absent(up{j=\"x\"})"
                        " offset 5m") == {"a", "b", "c", "up"}


def test_alerts_use_only_exported_metrics_and_cover_the_design() -> None:
    names = exported() | PROMETHEUS_SYNTHETIC
    rules = alert_rules()
    for rule in rules:
        unknown = metric_names(rule["expr"]) - names
        assert not unknown, f"{rule['alert']} reads metrics Metrics does not export: {unknown}"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"]
    alerts = {r["alert"] for r in rules}
    assert {"EmpDrawdownPastLimit", "EmpSignalLatencyHigh", "EmpOrderSuccessLow",
            "EmpVolatilitySpike", "EmpVolatilityModelDivergence", "EmpBreakerOpen",
            "EmpFixSessionDown", "EmpDataStale", "EmpTargetDown"} <= alerts
    by_name = {r["alert"]: r for r in rules}
    assert by_name["EmpDrawdownPastLimit"]["for"] == "30s"
    assert by_name["EmpSignalLatencyHigh"]["for"] == "1m"
    assert "[5m]" in by_name["EmpOrderSuccessLow"]["expr"]
    assert "0.95" in by_name["EmpOrderSuccessLow"]["expr"]


def test_dashboard_uses_only_exported_metrics_and_shows_every_one() -> None:
    names = exported() | PROMETHEUS_SYNTHETIC
    used: set[str] = set()
    for expr in dashboard_exprs():
        found = metric_names(expr)
        assert found, expr
        assert not found - names, f"dashboard reads unknown metrics {found - names} in {expr}"
        used |= found
    emp_families = {n for n in exported() if n.startswith("emp_")
                    and not n.endswith(("_created", "_bucket", "_count", "_sum", "_total"))}
    families_used = {re.sub(r"(_bucket|_total)$", "", n) for n in used}
    missing = {n for n in emp_families if n not in families_used}
    assert not missing, f"dashboard shows no panel for {missing}"
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    assert dash["uid"] == "emp-live" and dash["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# -- systemd ----------------------------------------------------------------------------
def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        assert section is not None, f"key outside a section: {line}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def size_bytes(value: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_unit_has_the_required_keys_and_hardening() -> None:
    svc = parse_unit(UNIT.read_text())["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "always"
    assert int(one["WatchdogSec"]) >= 10  # pings every WatchdogSec/2 from the event loop
    assert one["KillSignal"] == "SIGTERM" and int(one["TimeoutStopSec"]) > 0
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "User": "emp"}.items():
        assert one.get(key) == value, key
    assert "/var/lib/emp" in one["ReadWritePaths"].split()
    assert one["ExecStart"] == f"{SHIPPED_EXEC} live /etc/emp/live.yaml"
    assert one["EnvironmentFile"].lstrip("-") == "/etc/emp/live.env"
    assert size_bytes(one["MemoryMax"]) <= 512 * 2**20  # a 1 GB VPS
    assert one.get("CapabilityBoundingSet", "x") == ""
    assert "MemoryDenyWriteExecute" not in one  # numba JIT needs W+X pages


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart binary exists: a stand-in
    executable at tmp/.../bin/emp (the shipped unit names /opt/emp/.venv/bin/emp)."""
    exe = tmp_path / "venv" / "bin" / "emp"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "emp-live.service"
    unit.write_text(unit_text.replace(SHIPPED_EXEC, str(exe)))
    return run(systemd_analyze(), "verify", str(unit), cwd=tmp_path)


def test_systemd_analyze_verify(tmp_path) -> None:
    res = verify(UNIT.read_text(), tmp_path)
    # verify exits 0 on unknown keys and bad values and only prints them: demand silence
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_systemd_analyze_catches_a_typo(tmp_path) -> None:
    """The check can fail: a misspelt hardening key is reported."""
    text = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    res = verify(text, tmp_path)
    assert "NoNewPrivilege" in res.stdout + res.stderr
