"""market.vol_eval: the loss functions' defining properties, the MCS and the GINN gate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.vol_eval import (
    VolEvalError,
    baseline_forecasts,
    ginn_gate,
    losses,
    mcs,
    qlike_series,
)
from market.volatility import GARCH_FAMILY, GARCH_VARIANTS, build_vol_table


def _garch_path(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True conditional variances of a GARCH(1,1) and the squared returns they generate."""
    rng = np.random.default_rng(seed)
    s2 = np.empty(n)
    r = np.empty(n)
    s2[0] = 1e-4
    for t in range(n):
        if t:
            s2[t] = 2e-6 + 0.08 * r[t - 1] ** 2 + 0.9 * s2[t - 1]
        r[t] = np.sqrt(s2[t]) * rng.standard_normal()
    return s2, r * r


@given(st.lists(st.floats(1e-8, 1.0), min_size=1, max_size=50))
def test_perfect_forecast_has_zero_qlike_and_zero_error(y):
    y = np.array(y)
    out = losses(y, y)
    assert out["qlike"] == pytest.approx(0.0, abs=1e-12)
    assert out["mse"] == 0.0 and out["mae"] == 0.0 and out["qlike_dropped"] == 0


@given(st.floats(1e-8, 1.0), st.floats(1e-8, 1.0))
@settings(max_examples=200)
def test_qlike_is_never_negative(y, f):
    assert qlike_series(np.array([f]), np.array([y]))[0] >= -1e-12


def test_qlike_is_minimised_by_the_true_variance():
    s2, y = _garch_path(20_000, 1)
    scores = {c: losses(c * s2, y)["qlike"] for c in (0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 2.0)}
    assert min(scores, key=scores.get) == 1.0, scores
    # and the true variance beats a smoothed (less informed) forecast
    flat = np.full_like(s2, s2.mean())
    assert losses(s2, y)["qlike"] < losses(flat, y)["qlike"]


def test_zero_realised_bars_leave_qlike_only_and_are_counted():
    f = np.array([1.0, 2.0, 1.0, np.nan])
    y = np.array([1.0, 0.0, 2.0, 1.0])
    out = losses(f, y)
    assert out["n"] == 3 and out["qlike_dropped"] == 1
    assert out["qlike"] == pytest.approx((0.0 + (2.0 - np.log(2.0) - 1.0)) / 2)
    assert out["mse"] == pytest.approx((0 + 4 + 1) / 3)


def test_r2_is_one_minus_sse_over_sst():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert losses(y, y)["r2"] == 1.0
    assert losses(np.full(4, y.mean()), y)["r2"] == pytest.approx(0.0)
    assert losses(y[::-1].copy(), y)["r2"] < 0.0


def test_nothing_in_common_and_bad_shapes_are_one_line_errors():
    with pytest.raises(VolEvalError, match="no bar"):
        losses(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))
    with pytest.raises(VolEvalError, match="1-D of one length"):
        losses(np.ones(3), np.ones(4))


def test_mcs_drops_a_clearly_bad_model_and_keeps_the_good_ones():
    s2, y = _garch_path(2_000, 2)
    by_model = {"true": qlike_series(s2, y), "close": qlike_series(s2 * 1.05, y),
                "bad": qlike_series(s2 * 4.0, y)}
    out = mcs(by_model, size=0.10, seed=0, reps=500)
    assert "bad" in out["excluded"] and "true" in out["included"]
    assert out["pvalues"]["bad"] < 0.10 <= out["pvalues"]["true"]
    assert out["bars"] == 2_000
    assert mcs(by_model, size=0.10, seed=0, reps=500) == out  # seeded: reproducible


def test_mcs_uses_the_common_rows_and_needs_two_models():
    rng = np.random.default_rng(4)
    a = rng.normal(1.0, 0.1, 40)
    b = a + rng.normal(0.0, 0.1, 40)
    b[:5] = np.nan
    assert mcs({"a": a, "b": b}, reps=50)["bars"] == 35
    same = mcs({"a": a, "twin": a.copy(), "bad": a + 5.0}, reps=200)  # twins share a verdict
    assert same["included"] == ["a", "twin"] and same["excluded"] == ["bad"]
    assert same["pvalues"]["a"] == same["pvalues"]["twin"]
    with pytest.raises(VolEvalError, match="at least two"):
        mcs({"a": a})


def test_gate_passes_only_on_ratio_and_mcs():
    ok, why = ginn_gate(0.90, 1.00, {"ginn", "garch11"})
    assert ok and "keeps ginn" in why
    ok, why = ginn_gate(0.95, 1.00, {"ginn"})  # the bound itself passes
    assert ok
    ok, why = ginn_gate(0.96, 1.00, {"ginn"})
    assert not ok and "> 0.95" in why
    ok, why = ginn_gate(0.50, 1.00, {"garch11"})
    assert not ok and "excludes ginn" in why
    ok, why = ginn_gate(float("nan"), 1.00, {"ginn"})
    assert not ok and "not comparable" in why


def test_baselines_are_the_vol_table_rows():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    vol = build_vol_table(close, 252.0, window=60, refit_every=50)
    base = baseline_forecasts(close, vol)
    assert list(base) == list(GARCH_FAMILY)  # the ginn row is not a baseline
    np.testing.assert_array_equal(base["gjr"], vol.variance[GARCH_VARIANTS.index("gjr")])
    with pytest.raises(VolEvalError, match="other data"):
        baseline_forecasts(close[:-1], vol)
