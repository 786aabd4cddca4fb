"""Issue 10, item 8: a seeded run gives the same tables and the same front under every entry
point and BLAS thread count.

The tables are compared bit for bit (``np.array_equal``) between fresh interpreters whose
OpenBLAS pools start at 1 and at 2 threads: a Ray job's driver runs with OMP_NUM_THREADS=1, a
plain process with one thread per core, and scipy's SLSQP (inside arch's fits) gave different
last bits under the two before the fits were pinned to one thread. The Ray test submits a real
job to a real ``ray start`` cluster and compares its front with a ``--local`` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Builds the S&P 500 volatility table with the quickstart's fit settings (window 500, refit
# every 63) and the feature table, and saves them with the BLAS thread counts it saw.
TABLE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from arch.data import sp500
    from threadpoolctl import threadpool_info
    from genome.features import build_features
    from market.volatility import build_vol_table, one_blas_thread

    raw = sp500.load()
    close = raw["Close"].to_numpy(np.float64)
    ts = raw.index.values.astype("datetime64[ns]").astype(np.int64)
    cols = [raw[c].to_numpy(np.float64) for c in ("Open", "High", "Low", "Close", "Volume")]
    import scipy.optimize  # noqa: F401  (scipy's own OpenBLAS, as arch loads it)
    outside = sorted({d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"})
    with one_blas_thread():
        inside = sorted({d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"})
    table = build_vol_table(close, 252.0, window=500, refit_every=63)
    feats = build_features(ts, *cols)
    np.savez(sys.argv[1], variance=table.variance, rv=table.rv, features=feats.values,
             outside=np.array(outside), inside=np.array(inside),
             failures=np.array([table.failures[v] for v in sorted(table.failures)]))
""")


def _threads_env(n: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n), PYTHONPATH=str(REPO))
    return env


def test_tables_identical_under_1_and_2_blas_threads(tmp_path):
    """Fresh interpreters at 1 and 2 BLAS threads build bit-identical volatility and feature
    tables (the pools really start at 1 and 2 threads, and the fits really run at 1)."""
    out = {}
    for n in (1, 2):
        path = tmp_path / f"t{n}.npz"
        proc = subprocess.run([sys.executable, "-c", TABLE_SCRIPT, str(path)], cwd=REPO,
                              env=_threads_env(n), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = dict(np.load(path))
    assert out[1]["outside"].tolist() == [1] and out[2]["outside"].tolist() == [2]
    assert out[1]["inside"].tolist() == out[2]["inside"].tolist() == [1]
    for name in ("variance", "rv", "features", "failures"):
        assert np.array_equal(out[1][name], out[2][name], equal_nan=True), name
    assert out[1]["failures"].tolist() == [0, 0, 0]  # egarch, garch11, gjr: no EWMA fallback


def test_fingerprint_has_the_table_digests_and_the_gates_compare_them(tmp_path):
    """A run saves the tables' digests in data.json; the gates rebuild the tables from the full
    history, find the same digests over the training bars, and refuse a run whose saved digest
    differs (as it would after a change of arch, BLAS, CPU or fit code)."""
    from conftest import planted_home

    from configs.loader import parse_config
    from core.digest import tables_digests
    from evolution import driver
    from evolution.data import research_data
    from fitness.simulator import build_tables
    from gates.judge import load_run
    from gates.layout import load_history
    from gates.policy import GateError

    home = planted_home(tmp_path, n=1500)
    cfg = parse_config({"home": str(home), "volatility": {"window": 250, "refit_every": 100},
                        "evolution": {"symbol": "PLANT", "timeframe": "1d", "seed": 5,
                                      "population": 8, "generations": 1, "folds": 2,
                                      "min_trades_per_year": 1}}, "test")
    data = research_data(cfg)
    fp = data.fingerprint()
    assert {"vol_sha256", "features_sha256", "vol_fits"} <= set(fp)
    assert "garch11 0/" in fp["vol_fits"]
    full, meta = load_history(cfg)
    whole = build_tables(full, meta, vol=cfg.volatility)
    assert tables_digests(whole, data.bars.n_bars) == {k: fp[k] for k in
                                                       ("vol_sha256", "features_sha256")}
    assert tables_digests(whole)["vol_sha256"] != fp["vol_sha256"]  # more bars, other digest

    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    saved = json.loads((result.run_dir / "data.json").read_text())
    assert saved["vol_sha256"] == fp["vol_sha256"]
    load_run(cfg.home, result.run_id)  # same tables: accepted
    for key in ("vol_sha256", "features_sha256"):
        edited = {**saved, key: "0" * 64}
        (result.run_dir / "data.json").write_text(json.dumps(edited))
        with pytest.raises(GateError, match=key):
            load_run(cfg.home, result.run_id)


# --- a real Ray job against a local run ----------------------------------------------------------

JOB_CONFIG = """\
home: ${EMP_HOME}
data:
  quality:
    severity: {absurd_return: warning, gap: warning}
  symbols:
    SP500:
      asset_class: index
      tick_size: 0.01
      value_per_unit: 1.0
      min_lot: 0.1
      calendar: nyse
      costs: {unit: bps, spread: 1.0, commission: 0.5, slippage: 1.0, financing_annual: 0.02}
    NDX: {asset_class: index, tick_size: 0.01, min_lot: 0.1, calendar: nyse}
volatility: {window: 500, refit_every: 63}
evolution:
  symbol: SP500
  timeframe: 1d
  holdout: 0.2
  warmup_bars: 250
  folds: 2
  population: 16
  generations: 3
  seed: 7
  workers: 2
  min_trades_per_year: 4
  experiment: repro-test
  plot_every: 100
"""


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _bootstrap(home: Path, config: Path) -> None:
    from configs.loader import load_config
    from market.bootstrap import bootstrap
    from market.store import HistoryStore

    os.environ["EMP_HOME"] = str(home)
    try:
        cfg = load_config(config)
    finally:
        del os.environ["EMP_HOME"]
    bootstrap(HistoryStore(cfg.store_root()), cfg.data.symbols, cfg.data.quality)


def _front(home: Path) -> tuple[list, int, dict]:
    (run_dir,) = (home / "runs").iterdir()
    front = json.loads((run_dir / "front.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    return ([(c["phenotype_key"], c["objectives"], c["weighted"]) for c in front["front"]],
            front["trials"], data)


def _kill_ours(tag: str) -> None:
    """SIGKILL every process whose command line names our private temp dir (ours alone)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if tag.encode() in cmd:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture
def ray_head():
    """A private ``ray start --head`` on 127.0.0.1 (2 CPUs, its own ports and temp dir), torn
    down by process group and by its temp dir's name, never by ``ray stop`` (which would stop
    every Ray on the machine)."""
    temp = tempfile.mkdtemp(prefix="ray-emp-", dir="/tmp")  # short: Ray's socket paths
    (gcs, dash, nm, om, agent_l, agent_g, renv, metrics, client, wmin) = _free_ports(10)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    # the venv's bin first: the job's `python` is whatever the head's PATH finds
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--node-manager-port={nm}", f"--object-manager-port={om}",
           f"--dashboard-agent-listen-port={agent_l}", f"--dashboard-agent-grpc-port={agent_g}",
           f"--runtime-env-agent-port={renv}", f"--metrics-export-port={metrics}",
           f"--ray-client-server-port={client}", f"--min-worker-port={wmin}",
           f"--max-worker-port={wmin + 200}", "--disable-usage-stats"]
    log = open(Path(temp) / "start.log", "wb")  # noqa: SIM115 (closed in the finalizer)
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/jobs/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ray start failed: "
                                   + (Path(temp) / "start.log").read_text()[-3000:])
            time.sleep(1)
        yield {"address": address, "env": env, "temp": temp}
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _kill_ours(temp)
        with contextlib.suppress(OSError):
            os.killpg(head.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_ray_job_gives_the_local_front(tmp_path, ray_head):
    """The same seeded config under ``ray job submit`` (driver at OMP_NUM_THREADS=1) and as a
    ``--local`` process at 2 BLAS threads, each with its own EMP_HOME (no shared volatility
    cache): the same tables, the same final front bit for bit, the same trial count."""
    config = tmp_path / "repro.yaml"
    config.write_text(JOB_CONFIG)
    job_home, local_home = tmp_path / "job-home", tmp_path / "local-home"
    _bootstrap(job_home, config)
    _bootstrap(local_home, config)

    runtime_env = {"env_vars": {"EMP_HOME": str(job_home), "OMP_NUM_THREADS": "1",
                                "OPENBLAS_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
                                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}}
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_head["address"],
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "evolution", "run", str(config), "--no-progress"],
        env=ray_head["env"], capture_output=True, text=True, timeout=600)
    assert job.returncode == 0 and "succeeded" in job.stdout, (job.stdout + job.stderr)[-4000:]

    local = subprocess.run(
        [sys.executable, "-m", "evolution", "run", str(config), "--local", "--no-progress"],
        cwd=REPO, env={**_threads_env(2), "EMP_HOME": str(local_home), "RAY_AUTH_MODE":
                       "disabled"}, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, (local.stdout + local.stderr)[-4000:]

    job_front, job_trials, job_data = _front(job_home)
    local_front, local_trials, local_data = _front(local_home)
    for key in ("sha256", "vol_sha256", "features_sha256", "vol_fits"):
        assert job_data[key] == local_data[key], key
    assert job_trials == local_trials
    assert job_front == local_front  # keys, objective values (JSON floats: exact) and order
