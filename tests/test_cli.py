"""The ``emp`` command end to end, in a fresh interpreter, on the bundled real data."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_daily_bars, write_bar_csv

from emp_cli.main import build_parser
from market.loader import load_bars

ROOT = Path(__file__).resolve().parents[1]


def emp(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "emp_cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _all_parsers(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_subcommand_has_help(capsys):
    parsers = list(_all_parsers(build_parser()))
    assert {("data", "ingest"), ("data", "check"), ("data", "list"), ("data", "bootstrap"),
            ("config", "check"), ("bench", "data")} <= {p for p, _ in parsers}
    for path, _ in parsers:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*path, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: emp"), path


@pytest.fixture(scope="module")
def booted(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    emp("data", "bootstrap", home=home)
    return home


def test_bootstrap_imports_real_sp500_and_nasdaq(booted):
    out = emp("data", "list", home=booted).stdout
    assert "SP500" in out and "NDX" in out and "5031" in out
    bars = load_bars(["SP500", "NDX"], "1d", store=booted / "history")
    assert bars.n_bars == 5031
    assert bars.index()[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert bars.index()[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    assert bars.close.flags.c_contiguous and bars.close.dtype == "float64"
    assert len(bars.fingerprint()) == 64


def test_check_on_bundled_data_passes_and_reports_warnings(booted):
    proc = emp("data", "check", home=booted)
    assert "SP500/1d (nyse): 5031 bars, OK" in proc.stdout
    assert "absurd_return" in proc.stdout  # Oct 2008 moves above 10 % are reported, not hidden
    report = json.loads(emp("data", "check", "--json", home=booted).stdout)
    assert {r["symbol"] for r in report} == {"SP500", "NDX"}


def test_ingest_refusal_and_quarantine_from_the_command_line(tmp_path):
    frame = make_daily_bars(30)
    frame.loc[4, "high"] = float("nan")
    path = tmp_path / "abc.csv"
    write_bar_csv(path, frame)
    base = ("data", "ingest", str(path), "--symbol", "ABC", "--timeframe", "1d",
            "--asset-class", "equity")
    proc = emp(*base, home=tmp_path / "h", check=False)
    assert proc.returncode == 2
    assert "refused" in proc.stderr and "line 6" in proc.stderr and "non_finite" in proc.stderr
    proc = emp(*base, "--quarantine", home=tmp_path / "h")
    assert "quarantined 1 row(s)" in proc.stdout
    assert list((tmp_path / "h" / "quarantine").glob("ABC-abc-*.csv"))


def test_config_errors_exit_before_work(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  qualty: {}\n")
    proc = emp("data", "bootstrap", "--config", str(cfg), home=tmp_path / "h", check=False)
    assert proc.returncode == 2 and "data.qualty: unknown key" in proc.stderr
    assert proc.stderr.startswith("emp: error: invalid config:")
    assert not (tmp_path / "h").exists()


def test_user_errors_print_one_line_and_exit_with_their_code(monkeypatch, capsys):
    """Every package's user-facing error is an ``EmpError``: one ``emp: error:`` line, no
    traceback, and the error's exit code (2 by default, 3 for look-ahead)."""
    from core.errors import EmpError
    from emp_cli import main as cli
    from gates.lookahead import LookaheadError
    from genome.codec import GenomeError

    for exc, code in [(LookaheadError("bar 7 changed"), 3), (GenomeError("bar 7 changed"), 2),
                      (EmpError("bar 7 changed", exit_code=5), 5)]:
        def boom(path, exc=exc):
            raise exc

        monkeypatch.setattr(cli, "resolve_config", boom)
        assert cli.main(["config", "check"]) == code
        assert capsys.readouterr().err == "emp: error: bar 7 changed\n"


def test_bench_data_prints_one_json_line(tmp_path):
    proc = emp("bench", "data", "--ticks", "20000", "--days", "3", "--repeat", "1", home=tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["bench"] == "data" and rec["ticks"] == 20000 and rec["arrays_equal"] is True
    assert rec["ingest_rows_per_s"] > 0 and rec["load_bars_ms"] > 0
    assert rec["pandas_read_parquet_ms"] > 0


def test_installed_console_script_runs_outside_the_checkout(tmp_path):
    """The `emp` entry point must import every package from the install, not from the cwd."""
    script = Path(sys.executable).with_name("emp")
    if not script.exists():
        pytest.skip("emp console script not installed in this interpreter's environment")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "data" in proc.stdout and "bench" in proc.stdout


def test_genome_random_then_backtest_on_bundled_data(booted, tmp_path):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text((ROOT / "configs" / "default.yaml").read_text()
                   + "volatility: {window: 250, refit_every: 500}\n")
    genome = tmp_path / "g.json"
    emp("genome", "random", "--seed", "7", "--out", str(genome), home=booted)
    out = emp("backtest", str(genome), "--symbol", "SP500", "--start", "2010-01-01",
              "--config", str(cfg), "--json", home=booted).stdout
    metrics = json.loads(out)
    assert {"sharpe", "max_drawdown", "trade_count"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    assert list((booted / "cache").glob("*.npz")), "volatility fits are cached under EMP_HOME"


@pytest.mark.parametrize(("argv", "phrase"), [
    (["nope"], "invalid choice: 'nope'"),
    (["data", "ingest", "x.csv", "--symbol", "A", "--wait", "-1"], "data ingest: argument --wait"),
    (["data", "ingest", "x.csv", "--symbol", "A", "--timeframe", "2d"], "argument --timeframe"),
    (["evolve", "--generations", "x"], "evolve: argument --generations"),
    (["gates"], "gates: the following arguments are required: RUN_ID"),
])
def test_argument_errors_take_the_one_error_form(capsys, argv, phrase):
    """argparse's own errors end like every other user error: `emp: error: …`, exit 2."""
    from emp_cli.main import main

    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.splitlines()[-1].startswith("emp: error: ") and phrase in err, err
    assert "Traceback" not in err
