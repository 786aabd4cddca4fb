"""``emp bench power``: the smoke version runs the whole pipeline (generate, ingest, evolve,
gates, verdicts, plot), and the verdicts it recomputes from stored figures are the gates' own."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_power import SMOKE, eligible, rates, run, upper_bound
from gates.policy import GatePolicy


def test_upper_bound_is_clopper_pearson():
    assert upper_bound(0, 30) == pytest.approx(1 - 0.05 ** (1 / 30), rel=1e-9)  # 0.0950
    assert upper_bound(0, 40) == pytest.approx(0.0722, abs=1e-4)
    assert upper_bound(3, 40) > upper_bound(0, 40)
    assert upper_bound(5, 5) == 1.0


GOOD = {"oos_sharpe": 1.2, "dsr": 0.99, "pbo": 0.1, "familywise_p": 0.01,
        "oos_trades_per_year": 30.0, "oos_max_drawdown": 0.08, "holdout_sharpe": 0.7,
        "holdout_drawdown_ratio": 1.1, "dsr_raw": 0.2, "own_p": 0.001}


def test_verdicts_from_stored_figures():
    rec = {"kind": "x", "strength": 2.0, "seed": 1, "lookahead": True,
           "candidates": [GOOD, {**GOOD, "familywise_p": "nan"}]}
    assert eligible(rec, GatePolicy())
    assert not eligible(rec, GatePolicy(), old=True)  # the old gates: raw DSR 0.2 fails
    assert not eligible({**rec, "lookahead": False}, GatePolicy())
    assert not eligible({**rec, "candidates": [{**GOOD, "familywise_p": 0.12}]}, GatePolicy())
    assert eligible({**rec, "candidates": [{**GOOD, "familywise_p": 0.12}]},
                    GatePolicy(familywise_alpha=0.15))
    noise = {**rec, "strength": None, "kind": "n"}
    out = rates([rec, noise, {**noise, "candidates": []}], GatePolicy())
    assert out["noise_series"] == 2 and out["false_eligible"] == 1
    assert out["detection"] == {"x": {"2": 1.0}}


def test_smoke_runs_the_whole_pipeline(tmp_path):
    summary = run(workdir=str(tmp_path), workers=1, log=False, **SMOKE)
    assert summary["cells"] == 2 and summary["ours"]["noise_series"] == 1
    assert set(summary["ours"]["detection"]) == {"autocorr"}
    assert 0.0 <= summary["ours"]["detection"]["autocorr"]["3"] <= 1.0
    assert len(summary["tradeoff"]) == 24 and summary["n_eff_median"] > 0
    assert (tmp_path / "power_curves.png").stat().st_size > 1000
    cells = [json.loads(x) for x in (tmp_path / "cells.jsonl").read_text().splitlines()]
    assert {c["kind"] for c in cells} == {"noise_flat", "autocorr"}
    for c in cells:
        assert c["candidates"] and c["lookahead"] is True
        for f in c["candidates"]:
            assert {"dsr", "dsr_raw", "familywise_p", "own_p", "deflated_bar"} <= set(f)
            assert isinstance(f["familywise_p"], float) and 0 < f["familywise_p"] <= 1
    # a second call finds every cell done: it runs nothing and reports the same verdicts
    again = run(workdir=str(tmp_path), workers=1, log=False, **SMOKE)
    assert again["ours"] == summary["ours"]
    assert len((tmp_path / "cells.jsonl").read_text().splitlines()) == 2
