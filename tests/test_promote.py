"""``emp promote`` and ``emp champions`` end to end, on a real run: a planted edge of ordinary
strength (annualised Sharpe 2 after costs), the default evolution, the gates (which make some
candidates eligible), a real MLflow store, a real SQLite registry, real files.

Refusals leave nothing behind; every state change is one audit row; the MLflow aliases, the
pointers and the registry agree after promotion, replacement, rollback and retirement. Live
only after paper: the life cycle runs the real executor on paper (``test_paper_gate.run_paper``,
a few daily bars after the judged history) before each promotion to live."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from champions.bundle import read_bundle
from champions.keys import keygen, load_trusted_keys
from champions.mlflow_models import model_name
from champions.pointer import read_pointer, resolve
from champions.promote import promote
from champions.registry import Registry, default_url
from configs.loader import parse_config
from core.errors import EmpError
from core.tracking import default_tracking_uri
from emp_cli.main import main
from evolution import driver
from evolution.data import research_data
from fitness.simulator import build_tables, simulate
from gates.judge import judge_run
from market.loader import load_bars
from market.store import HistoryStore

PAPER_BARS = 3  # daily bars traded on paper before going live (--paper-days 2)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A judged run of the default evolution on a realistic planted edge, and a signing key."""
    from benchmarks.power_data import generate, ingest

    home = tmp_path_factory.mktemp("promote") / "home"
    series = generate("autocorr", 2.0, 2001)
    ingest(series, parse_config({"home": str(home)}, "t").store_root(), "EDGE")
    cfg = parse_config({"home": str(home), "volatility": {"window": 250, "refit_every": 500},
                        "evolution": {"symbol": "EDGE", "timeframe": series.timeframe,
                                      "seed": 2001}}, "test")
    data = research_data(cfg)
    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    report = judge_run(home, result.run_id)
    assert len(report["eligible"]) >= 2, "the planted edge must give eligible candidates"
    keygen(home / "keys")
    return home, result.run_id, report, cfg


def copy_home(judged, dest: Path) -> Path:
    """A private copy of the judged home (its registry and pointers start empty)."""
    home = dest / "home"
    shutil.copytree(judged[0], home)
    return home


def _nothing_promoted(home: Path) -> bool:
    return not (home / "champions").exists() or not any((home / "champions").rglob("*.json"))


def test_refusals_name_the_problem_and_write_nothing(judged, tmp_path):
    home = copy_home(judged, tmp_path)
    _, run_id, report, _ = judged
    key = report["eligible"][0]
    refused = [c for c in report["candidates"] if not c["eligible"]]

    def refuse(match: str, **kw) -> None:
        args = {"key": key, "to": "live", "reason": "test", "log_mlflow": False} | kw
        with pytest.raises(EmpError, match=match):  # PromoteError, KeyFileError: one line each
            promote(home, run_id, args.pop("key"), args.pop("to"), args.pop("reason"), **args)
        assert _nothing_promoted(home)

    if refused:
        refuse(rf"#{refused[0]['rank']}\) of run .* is not eligible: it failed",
               key=refused[0]["key"])
    refuse("is not in run .* gate report", key="0" * 16)
    refuse("must be one of paper, live", to="prod")
    refuse("--reason is empty", reason="  ")
    # a report edited after the gates wrote it (one figure changed)
    path = home / "runs" / run_id / "gates" / "report.json"
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"oos_sharpe": ', b'"oos_sharpe": 1', 1))
    refuse("sha256 .* no longer matches")
    path.write_bytes(good)
    # a hold-out read twice
    reads = home / "runs" / run_id / "gates" / "holdout_reads.json"
    log = json.loads(reads.read_text())
    reads.write_text(json.dumps([*log, {"time": "2026-11-26T00:00:00Z"}]))
    refuse(r"read 2 times .* --accept-peeking")
    reads.write_text(json.dumps(log))
    # no signing key
    refuse("signing key not found", signing_key=home / "keys" / "missing.key")


def test_a_changed_history_is_refused(judged, tmp_path):
    from conftest import ingest_generated

    home = copy_home(judged, tmp_path)
    _, run_id, report, _ = judged
    bars = load_bars("EDGE", report["timeframe"], store=HistoryStore(home / "history"))
    close = bars.close[0].copy()
    close[-5] *= 1.01  # one hold-out bar moved by 1 %
    ingest_generated(home, "EDGE", report["timeframe"], close, {"unit": "bps", "spread": 1.0}, 3)
    with pytest.raises(Exception, match="changed since run"):
        promote(home, run_id, report["eligible"][0], "paper", "test", log_mlflow=False)
    assert _nothing_promoted(home)


def test_peeking_is_refused_unless_accepted_and_then_recorded(judged, tmp_path):
    home = copy_home(judged, tmp_path)
    _, run_id, report, _ = judged
    reads = home / "runs" / run_id / "gates" / "holdout_reads.json"
    reads.write_text(json.dumps([*json.loads(reads.read_text()), {"time": "later"}]))
    res = promote(home, run_id, report["eligible"][0], "paper", "paper first",
                  accept_peeking="second look was a report re-render", log_mlflow=False)
    bundle = read_bundle(res.bundle_path, load_trusted_keys([home / "keys"]))
    assert bundle.body["gates"]["accepted_peeking"] == "second look was a report re-render"
    assert bundle.body["gates"]["holdout_reads"] == 2
    with Registry(default_url(home)) as reg:
        last = reg.events(champion_id=res.champion.id)[-1]
    assert "accepted: second look was a report re-render" in last.reason


def _events(home: Path) -> list:
    with Registry(default_url(home)) as reg:
        return reg.events()


def _alias(home: Path, alias: str) -> dict:
    client = MlflowClient(default_tracking_uri(home), registry_uri=default_tracking_uri(home))
    return client.get_model_version_by_alias(model_name("EDGE", "1d"), alias).tags


def paper_bars(cfg, n: int):
    """The ``n`` daily bars after the judged history (the generator continues the series)."""
    from live_rig import cut

    from benchmarks.power_data import generate, to_bars

    hist = load_bars("EDGE", "1d", store=HistoryStore(cfg.store_root()))
    series = generate("autocorr", 2.0, 2001, n=hist.n_bars + n)
    bars = to_bars(series)
    assert np.array_equal(bars.close[0][: hist.n_bars], hist.close[0])
    return cut(bars, hist.n_bars, hist.n_bars + n), series.meta


def test_promote_replace_rollback_retire_publish(judged, tmp_path, monkeypatch, capsys):
    """The whole life of two champions through the command line."""
    from test_paper_gate import run_paper

    home = copy_home(judged, tmp_path)
    _, run_id, report, cfg = judged
    bars, meta = paper_bars(cfg, PAPER_BARS)
    monkeypatch.setenv("EMP_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    a, b = report["eligible"][:2]
    assert main(["promote", run_id, "--candidate", a, "--to", "paper", "--reason",
                 "paper first"]) == 0
    out = capsys.readouterr().out
    assert f"candidate {a} is now paper" in out and "@paper" in out
    paper = read_pointer(home / "champions" / "EDGE", "paper")
    assert paper.key == a and not (home / "champions" / "EDGE" / "current.json").exists()
    assert _alias(home, "paper")["bundle_sha256"] == paper.sha256
    assert len(_events(home)) == 2  # register (-> eligible) and promote (-> paper)

    # live needs a paper record: straight from eligible, or with none yet, it is refused
    assert main(["promote", run_id, "--candidate", b, "--to", "live", "--reason", "x"]) == 2
    assert "promote to paper first" in capsys.readouterr().err
    assert main(["promote", run_id, "--candidate", a, "--to", "live", "--reason", "x"]) == 2
    assert "live/state.db: not found: no paper record" in capsys.readouterr().err
    assert len(_events(home)) == 2 and read_pointer(home / "champions" / "EDGE", "paper")

    run_paper(home, bars, meta, PAPER_BARS)  # the executor trades a on paper
    assert main(["promote", run_id, "--candidate", a, "--to", "live", "--reason", "x",
                 "--paper-days", str(PAPER_BARS + 1)]) == 2
    assert f"{PAPER_BARS} of {PAPER_BARS + 1} paper days" in capsys.readouterr().err
    assert main(["promote", run_id, "--candidate", a[:8], "--to", "live", "--reason", "go",
                 "--paper-days", "2"]) == 0
    assert f"paper gate: {PAPER_BARS} paper days" in capsys.readouterr().out
    assert read_pointer(home / "champions" / "EDGE", "live").sha256 == paper.sha256
    assert _alias(home, "champion")["paper_days"] == str(PAPER_BARS)
    # it left paper: the paper pointer and alias no longer name it
    assert not (home / "champions" / "EDGE" / "paper.json").exists()
    with pytest.raises(Exception, match="alias"):
        _alias(home, "paper")
    assert main(["promote", run_id, "--candidate", b, "--to", "paper", "--reason", "next"]) == 0
    b_state = tmp_path / "b" / "state.db"
    run_paper(home, bars, meta, PAPER_BARS, state_path=b_state)
    assert main(["promote", run_id, "--candidate", b, "--to", "live", "--reason", "better",
                 "--paper-state", str(b_state), "--paper-days", "2"]) == 0
    live = read_pointer(home / "champions" / "EDGE", "live")
    assert live.key == b and _alias(home, "champion")["candidate"] == b
    with Registry(default_url(home)) as reg:
        states = {c.key: c.state for c in reg.champions(symbol="EDGE")}
        assert states == {a: "retired", b: "live"}
        # one row per state change: a eligible, paper, live, retired (replaced); b eligible,
        # paper, live
        actions = [(e.action, e.from_state, e.to_state) for e in reg.events()]
    assert len(actions) == 7 and ("replace", "live", "retired") in actions

    capsys.readouterr()
    assert main(["champions", "rollback", "EDGE", "--reason", "b misbehaves"]) == 0
    assert "live again" in capsys.readouterr().out
    live = read_pointer(home / "champions" / "EDGE", "live")
    assert live.key == a and _alias(home, "champion")["candidate"] == a
    resolve(live)
    with Registry(default_url(home)) as reg:
        assert {c.key: c.state for c in reg.champions(symbol="EDGE")} == {a: "live", b: "retired"}
        assert len(reg.events()) == 9
        ids = {c.key: c.id for c in reg.champions(symbol="EDGE")}

    assert main(["champions", "list"]) == 0
    listing = capsys.readouterr().out
    assert a in listing and b in listing and "live" in listing
    assert main(["champions", "show", str(ids[a])]) == 0
    shown = capsys.readouterr().out
    assert "rollback" in shown and "b misbehaves" in shown and "OOS Sharpe" in shown
    assert main(["champions", "diff", str(ids[a]), str(ids[b])]) == 0
    assert "gene " in capsys.readouterr().out

    # publish to a "live host" directory, then verify there with only the public key
    host = tmp_path / "vps" / "champions"
    host.parent.mkdir()
    assert main(["champions", "publish", str(host)]) == 0
    host_live = read_pointer(host / "EDGE", "live")
    _, data = resolve(host_live)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(home / "keys" / "emp-signing.pub", trusted)
    monkeypatch.setenv("EMP_TRUSTED_KEYS", str(trusted))
    assert main(["champions", "verify", str(host_live.bundle_path)]) == 0
    assert not list(host.rglob("*.key")) and not (host.parent / "keys").exists()
    assert read_bundle(data, load_trusted_keys([trusted])).key == a

    assert main(["champions", "retire", str(ids[a]), "--reason", "end of test"]) == 0
    assert not (home / "champions" / "EDGE" / "current.json").exists()
    with Registry(default_url(home)) as reg:
        assert reg.get(ids[a]).state == "retired" and len(reg.events()) == 10
    assert main(["champions", "rollback", "EDGE", "--timeframe", "1d", "--reason", "x"]) == 2


def test_the_bundle_alone_reproduces_the_judged_candidate(judged, tmp_path):
    """Its genome, frozen metadata, costs and configs, on the history it fingerprints, give
    the hold-out figures the gates reported."""
    home = copy_home(judged, tmp_path)
    _, run_id, report, _ = judged
    res = promote(home, run_id, report["eligible"][0], "paper", "reproduce", log_mlflow=False)
    b = read_bundle(res.bundle_path, load_trusted_keys([home / "keys"]))
    bars = load_bars(b.symbol, b.timeframe, store=HistoryStore(home / "history"))
    assert bars.fingerprint() == b.body["history"]["sha256"]
    tables = build_tables(bars, b.meta, vol=b.vol)
    h = b.body["history"]["periods"]["holdout"]
    figures = simulate(b.genome, tables, bars, b.meta, h["start"], h["end"], b.sim).metrics
    cand = next(c for c in report["candidates"] if c["key"] == b.key)
    assert figures["sharpe"] == cand["figures"]["holdout_sharpe"]
    assert b.tables_state.n_bars == bars.n_bars == b.body["snapshot"]["n_bars"]
    assert np.isfinite(b.kernel_state).any()
