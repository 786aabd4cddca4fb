"""The report explains every rejection in the user's terms and names the closest candidate."""

from __future__ import annotations

import math

from gates.policy import GatePolicy, judge
from gates.report import closest, distance, markdown, verdict_table, why_rejected

FIG = {"oos_sharpe": 1.2, "dsr": 0.99, "pbo": 0.1, "familywise_p": 0.01,
       "oos_trades_per_year": 30.0, "oos_max_drawdown": 0.08, "holdout_sharpe": 0.7,
       "holdout_drawdown_ratio": 1.1, "training_sharpe": 2.4, "deflated_bar": 1.9,
       "own_p": 0.002, "oos_annual_return": 0.1, "holdout_annual_return": 0.08,
       "holdout_max_drawdown": 0.09, "dsr_raw": 0.01}


def candidate(rank: int, **changes: float) -> dict:
    fig = {**FIG, **changes}
    gates = judge(fig, GatePolicy(), True)
    return {"rank": rank, "key": f"k{rank:015d}", "eligible": all(g.passed for g in gates),
            "rules": "LONG when ROC(1) > 0.0", "figures": fig,
            "gates": [g.as_dict() for g in gates]}


def report(*cands: dict) -> dict:
    period = {"first": "2000-01-03", "last": "2010-12-31", "bars": 2800, "start": 0, "end": 1}
    return {"run_id": "r", "symbol": "X", "timeframe": "1d", "generation": 30, "generations": 30,
            "periods": {"training": period, "oos": period, "holdout": period,
                        "purge": {"bars": 200}},
            "policy": GatePolicy().model_dump(mode="json"), "trials": 3097,
            "trial_sharpe_variance": 1e-4,
            "trial_count": {"raw": 3097, "flat": 600, "unsampled": 10, "clusters": 2,
                            "effective": 37, "quality": 1.5,
                            "expected_max_sharpe_annual": 0.65},
            "pbo": 0.1, "population": 100, "holdout_reads": 1,
            "lookahead": {"passed": True, "cuts": [1, 2], "bars_compared": 10},
            "candidates": list(cands), "eligible": [c["key"] for c in cands if c["eligible"]]}


def test_a_dsr_rejection_reads_in_the_users_terms():
    c = candidate(1, dsr=0.81, deflated_bar=2.61)
    rep = report(c)
    (why,) = why_rejected(c, rep)
    assert why == ("training Sharpe 2.40 a year; with N_eff = 37 effectively independent "
                   "trials (of 3097) the deflated bar is 2.61 (DSR 0.810 < 0.95)")


def test_every_failed_gate_says_what_it_needed():
    c = candidate(1, oos_sharpe=0.31, familywise_p=0.18, oos_trades_per_year=8.1,
                  oos_max_drawdown=0.234, holdout_sharpe=-0.21, holdout_drawdown_ratio=1.8)
    text = "; ".join(why_rejected(c, report(c)))
    for part in ("OOS Sharpe 0.31, needs >= 0.50", "family-wise p 0.180 over the 1 front",
                 "needs <= 0.1 (its own p alone: 0.002)", "OOS trades a year 8.1, needs >= 10.0",
                 "OOS max drawdown 23.4%, needs <= 20.0%", "hold-out Sharpe -0.21, needs > 0.00",
                 "hold-out/OOS drawdown ratio 1.80, needs <= 1.50"):
        assert part in text, (part, text)


def test_the_closest_candidate_fails_fewest_gates_then_by_the_smallest_distance():
    far = candidate(1, oos_sharpe=0.1, dsr=0.5)
    near_two = candidate(2, oos_sharpe=0.45, dsr=0.94)
    near_one = candidate(3, familywise_p=0.2)
    rep = report(far, near_two, near_one)
    assert closest(rep)["rank"] == 3
    assert closest(report(far, near_two))["rank"] == 2
    assert closest(report(candidate(4))) is None  # everything eligible
    g = {"name": "oos_sharpe", "value": 0.4, "op": ">=", "threshold": 0.5, "passed": False}
    assert math.isclose(distance(g), 0.2)
    assert distance({**g, "value": "nan"}) == math.inf


def test_nothing_eligible_names_the_closest_in_the_table_and_the_markdown():
    rep = report(candidate(1, oos_sharpe=0.1, dsr=0.5), candidate(2, dsr=0.81, deflated_bar=2.6))
    table = verdict_table(rep)
    assert "N_eff 37" in table
    assert "closest: #2 k000000000 would have needed: training Sharpe 2.40 a year" in table
    md = markdown(rep)
    assert "**Nothing is eligible.** The closest candidate is #2" in md
    assert "**N_eff = 37**" in md and "Fails: OOS Sharpe 0.10" in md
    ok = report(candidate(1))
    assert "closest" not in verdict_table(ok) and "Nothing is eligible" not in markdown(ok)
