"""`emp bench fix` with small counts: one JSON line, every figure present and positive (the
targets are for the full run in BENCHMARKS.md, not asserted here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def emp(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "emp_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_bench_fix_prints_one_json_line_with_every_figure(tmp_path: Path) -> None:
    pytest.importorskip("quickfix", reason="quickfix-tls (the dev extra) is needed")
    proc = emp("bench", "fix", "--messages", "400", "--orders", "30", "--warmup", "5",
               "--repeat", "1", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    inbound, rt = rec["inbound"], rec["round_trip"]
    assert rec["bench"] == "fix" and inbound["messages"] == 400
    for key in ("ours_msgs_per_s", "quickfix_parse_validate_msgs_per_s",
                "simplefix_parse_only_msgs_per_s"):
        assert inbound[key] > 0, key
    for side in ("ours_venue", "quickfix_acceptor"):
        assert rt[side]["orders"] == 30
        assert 0 < rt[side]["p50_ms"] <= rt[side]["p99_ms"], side


def test_bench_fix_refuses_a_count_below_one(tmp_path: Path) -> None:
    proc = emp("bench", "fix", "--orders", "0", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "emp: error: emp bench fix: --orders must be at least 1"
