"""`emp bench live` with small counts: one JSON line whose figures hang together (the targets
are for the full run in BENCHMARKS.md, not asserted here), and bad counts refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def emp(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "emp_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_bench_live_prints_one_json_line_with_every_figure(tmp_path: Path) -> None:
    proc = emp("bench", "live", "--bars", "24", "--warmup", "4", "--repeat", "1",
               "--no-empty-cache-start", "--refit-every", "5", home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["bench"] == "live" and rec["bars"] == 24
    lat = rec["bar_to_order"]
    # the planted autocorrelation champion orders on (almost) every bar
    assert lat["bars_with_orders"] >= 15 and rec["orders"] >= 15
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    parts = lat["parts"]
    assert set(parts) == {"decide", "settle", "plan_checks", "commit", "commit_fix"}
    # refit bars (every 5th) are reported apart from the others
    assert lat["refit_bars"]["bars"] >= 2 and lat["other_bars"]["bars"] >= 10
    assert lat["refit_bars"]["bars"] + lat["other_bars"]["bars"] == lat["bars_with_orders"]
    # every part happens before the order's bytes leave, so each is below the total
    assert 0 < parts["decide"]["p50_us"] < lat["p50_ms"] * 1e3
    assert 0 < lat["commits_p50_us"] < lat["max_ms"] * 1e3
    assert 0 < lat["commits_share_of_total"] < 1 and lat["fsync_us"] > 0
    if lat["state_on_tmpfs"] is not None:
        assert lat["state_on_tmpfs"]["p50_ms"] > 0
    rss = rec["rss"]
    groups = [g["rss_mb"] for g in rss["imports"]]
    assert groups == sorted(groups) and groups[0] > 0  # cumulative imports only add
    assert rss["vmrss_mb"] >= groups[0] and rss["anonymous_mb"] > 0
    # the GARCH fits run in the refit worker process: arch is never in the executor
    assert rss["refit_worker"]["vmrss_mb"] > 0 and rss["pss_total_mb"] > rss["pss_mb"]
    assert not {"arch", "statsmodels", "matplotlib"} & set(rss["modules_in_executor"])
    assert "numpy" in rss["modules_in_executor"]
    assert not {"ray", "torch", "mlflow", "optuna", "deap"} & set(rss["modules_in_executor"])
    cold = rec["cold_start"]
    assert 0 < cold["from_bundle_ready_s"] <= cold["first_decision_s"]
    assert cold["from_replay_ready_s"] is None and cold["replay_in_process_s"] > 0
    assert cold["first_start_empty_numba_cache"] is None and cold["bundle_bytes"] > 0


def test_bench_live_refuses_too_few_bars(tmp_path: Path) -> None:
    proc = emp("bench", "live", "--bars", "5", "--warmup", "4", home=tmp_path)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--bars 5" in err[0] and "Traceback" not in proc.stderr
