"""Metrics kernel vs independent numpy / pandas / scipy formulas, and its degenerate cases."""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fitness.metrics as fm
from fitness.metrics import (
    M_SHARPE,
    MAXIMISE,
    METRIC_INDEX,
    METRIC_NAMES,
    MINIMISE,
    N_METRICS,
    PF_CAP,
    RETURN_CAP,
    fill_metrics,
    metrics_dict,
)
from fitness.metrics_nb import tail_quantile

BPY = 252.0
TRADES = {"n_trades": 12, "n_wins": 7, "gross_win": 3.0, "gross_loss": 2.0, "turnover": 30.0}


def reference(r: np.ndarray, bpy: float = BPY, *, n_trades: int = 12, n_wins: int = 7,
              gross_win: float = 3.0, gross_loss: float = 2.0, turnover: float = 30.0,
              bars_in_market: int = 0) -> dict[str, float]:
    """Textbook formulas, written independently of the kernel (no ruin in r)."""
    n = r.size
    s = pd.Series(r)
    with np.errstate(over="ignore"):
        growth = np.prod(1.0 + r)
        total = min(growth - 1.0, RETURN_CAP)
        annual = min(growth ** (bpy / n) - 1.0, RETURN_CAP)
    std = s.std(ddof=1)
    equity = pd.Series(np.concatenate([[1.0], np.cumprod(1.0 + r)]))
    mdd = float((1.0 - equity / equity.cummax()).max())
    t = np.arange(n + 1.0)
    y = np.log(equity.to_numpy())
    slope, icpt = np.polyfit(t, y, 1)
    ss_res = np.sum((y - (slope * t + icpt)) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    q = np.quantile(r, 0.05)
    down = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    return {
        "total_return": total,
        "annual_return": annual,
        "volatility": std * math.sqrt(bpy),
        "sharpe": s.mean() / std * math.sqrt(bpy),
        "sortino": s.mean() / down * math.sqrt(bpy) if down > 0 else 0.0,
        "max_drawdown": mdd,
        "calmar": annual / mdd if mdd > 0 else 0.0,
        "profit_factor": min(gross_win / gross_loss, PF_CAP),
        "win_rate": n_wins / n_trades,
        "trade_count": float(n_trades),
        "trades_per_year": n_trades * bpy / n,
        "turnover": turnover * bpy / n,
        "exposure": bars_in_market / n,
        "stability": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
        "var95": -q,
        "es95": -r[r <= q].mean(),
        "skewness": scipy.stats.skew(r, bias=True),
        "kurtosis": scipy.stats.kurtosis(r, fisher=False, bias=True),
    }


def assert_matches(got: dict[str, float], want: dict[str, float], rtol: float = 1e-9,
                   atol: float = 1e-10) -> None:
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=rtol, abs=atol), name


def run(r, **kw) -> dict[str, float]:
    kw.setdefault("bars_per_year", BPY)
    return metrics_dict(np.asarray(r, dtype=float), **kw)


# ---- layout ---------------------------------------------------------------------------------

def test_layout_constants_match_names():
    consts = {k: v for k, v in vars(fm).items() if k.startswith("M_")}
    assert len(consts) == N_METRICS == len(METRIC_NAMES)
    for k, v in consts.items():
        assert METRIC_NAMES[v] == k[2:].lower()
    assert METRIC_INDEX["sharpe"] == M_SHARPE
    assert set(METRIC_NAMES) >= MAXIMISE | MINIMISE
    assert not MAXIMISE & MINIMISE


def test_callable_from_numba_code():
    @numba.njit
    def batch(rets):
        out = np.zeros((rets.shape[0], N_METRICS))
        for i in range(rets.shape[0]):
            fill_metrics(out[i], rets[i], 12, 7, 3.0, 2.0, 30.0, 0, 252.0)
        return out[:, M_SHARPE]

    rets = np.random.default_rng(3).normal(0, 0.01, (3, 200))
    got = batch(rets)
    assert got == pytest.approx([run(r, **TRADES)["sharpe"] for r in rets], rel=1e-12)


# ---- values -----------------------------------------------------------------------------------

def test_hand_computed_series():
    m = run([0.1, -0.5, 0.2], **TRADES)
    assert m["total_return"] == pytest.approx(1.1 * 0.5 * 1.2 - 1)
    assert m["max_drawdown"] == pytest.approx(0.5)  # peak 1.1 -> 0.55
    assert m["annual_return"] == pytest.approx(0.66 ** (252 / 3) - 1)
    assert m["win_rate"] == pytest.approx(7 / 12)
    assert m["profit_factor"] == pytest.approx(1.5)
    assert m["trades_per_year"] == pytest.approx(12 * 252 / 3)
    assert m["turnover"] == pytest.approx(30 * 252 / 3)
    # 5 % quantile of 3 values: index 0.1 between -0.5 and 0.1
    assert m["var95"] == pytest.approx(-(-0.5 + 0.1 * 0.6))
    assert m["es95"] == pytest.approx(0.5)
    assert m["sortino"] == pytest.approx((-0.2 / 3) / math.sqrt(0.25 / 3) * math.sqrt(252))


def test_drawdown_includes_start():
    assert run([-0.1, 0.05])["max_drawdown"] == pytest.approx(0.1)
    assert run([0.1, 0.2])["max_drawdown"] == 0.0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [3, 50, 600, 5000])
def test_random_series_match_reference(seed, n):
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, n) * 0.01 + 2e-4
    r[rng.random(n) < 0.3] = 0.0  # flat bars: ties in the quantile
    got = run(r, **TRADES, bars_in_market=n // 2)
    assert_matches(got, reference(r, bars_in_market=n // 2))
    assert got["var95"] == -np.quantile(r, 0.05)  # exact order statistics, numpy's lerp


def test_stability_vs_corrcoef():
    rng = np.random.default_rng(7)
    r = rng.normal(5e-4, 0.01, 2000)
    y = np.log(np.concatenate([[1.0], np.cumprod(1 + r)]))
    t = np.arange(y.size)
    assert run(r)["stability"] == pytest.approx(np.corrcoef(t, y)[0, 1] ** 2, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5), min_size=2, max_size=300))
def test_property_matches_reference(xs):
    r = np.array(xs)
    assume(np.std(r) > 1e-6)
    got = run(r, **TRADES)
    want = reference(r)
    for name in ("skewness", "kurtosis"):  # moments of near-constant series: looser
        assert got.pop(name) == pytest.approx(want.pop(name), rel=1e-6, abs=1e-7), name
    if want["stability"] < 1e-6:  # R^2 of a flat fit is all rounding
        assert got.pop("stability") == pytest.approx(want.pop("stability"), abs=1e-6)
    # 1 - E_t/peak carries ~1e-16 absolute rounding either way; calmar divides by it
    mdd = want.pop("max_drawdown")
    assert got.pop("max_drawdown") == pytest.approx(mdd, rel=1e-9, abs=1e-14)
    if mdd > 0:
        rel = 1e-8 + 1e-14 / mdd
        assert got.pop("calmar") == pytest.approx(want.pop("calmar"), rel=rel, abs=1e-10)
    for name, v in want.items():
        assert got[name] == pytest.approx(v, rel=1e-8, abs=1e-10), name
    assert got["var95"] == -np.quantile(r, 0.05)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6000),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["normal", "t2", "ties", "zeros", "trend"]),
)
def test_property_tail_quantile(n, seed, kind):
    rng = np.random.default_rng(seed)
    r = {
        "normal": lambda: rng.normal(0, 0.01, n),
        "t2": lambda: rng.standard_t(2, n) * 0.01,
        "ties": lambda: rng.integers(-3, 4, n) * 0.01,
        "zeros": lambda: np.where(rng.random(n) < 0.97, 0.0, rng.normal(0, 0.01, n)),
        "trend": lambda: np.linspace(-0.05, 0.05, n),  # sorted: worst case for a plain pivot
    }[kind]()
    q, tail = tail_quantile(r, 0.05, np.empty(n))
    assert q == np.quantile(r, 0.05)
    assert tail == pytest.approx(r[r <= q].mean(), rel=1e-12, abs=1e-15)


def test_tail_quantile_bracket_miss_falls_back():
    n = 100_000
    r = -np.random.default_rng(1).random(n) * 0.01
    step = n // int(2 * math.sqrt(n))
    r[::step] = np.linspace(0.01, 0.02, r[::step].size)  # every sampled value is unrepresentative
    q, tail = tail_quantile(r, 0.05, np.empty(n))
    assert q == np.quantile(r, 0.05)
    assert tail == pytest.approx(r[r <= q].mean(), rel=1e-12)


# ---- degenerate cases -------------------------------------------------------------------------

ZERO_BASED = (
    "total_return", "annual_return", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "trades_per_year", "turnover", "exposure", "stability", "var95", "es95", "skewness",
    "kurtosis",
)


def test_empty_series_keeps_trade_stats_only():
    m = run([], **TRADES)
    assert all(m[k] == 0.0 for k in ZERO_BASED)
    assert (m["profit_factor"], m["win_rate"], m["trade_count"]) == (1.5, 7 / 12, 12.0)


def test_single_bar():
    m = run([0.01])
    assert m["total_return"] == pytest.approx(0.01)
    assert m["annual_return"] == pytest.approx(1.01**252 - 1)
    for k in ("volatility", "sharpe", "sortino", "skewness", "kurtosis", "stability"):
        assert m[k] == 0.0
    assert (m["var95"], m["es95"]) == (-0.01, -0.01)


def test_all_zero_returns():
    m = run(np.zeros(100))
    assert all(v == 0.0 for v in m.values())


def test_constant_returns():
    m = run(np.full(100, 1e-3))
    for k in ("volatility", "sharpe", "skewness", "kurtosis", "sortino", "max_drawdown",
              "calmar"):
        assert m[k] == 0.0, k
    assert m["stability"] == pytest.approx(1.0)  # log equity is a straight line
    assert m["total_return"] == pytest.approx(1.001**100 - 1)


@pytest.mark.parametrize("r", [[0.1, -1.0, 0.2], [-1.5, -1.5], [0.3, -2.0]])
def test_ruin(r):
    m = run(r)
    assert (m["total_return"], m["annual_return"], m["max_drawdown"]) == (-1.0, -1.0, 1.0)
    assert (m["calmar"], m["stability"]) == (-1.0, 0.0)
    assert all(math.isfinite(v) for v in m.values())


def test_profit_factor_cases():
    assert run([0.01, 0.0], n_trades=0)["profit_factor"] == 0.0
    assert run([0.01, 0.0], n_trades=2, n_wins=2, gross_win=1.0)["profit_factor"] == PF_CAP
    assert run([0.01, 0.0], n_trades=2, n_wins=1, gross_win=1e9, gross_loss=1.0)[
        "profit_factor"] == PF_CAP
    assert run([0.01, 0.0], n_trades=2, n_wins=0)["profit_factor"] == 0.0
    neg = run([0.01, 0.0], n_trades=2, n_wins=1, gross_win=2.0, gross_loss=-1.0)
    assert neg["profit_factor"] == 2.0  # the sign of gross_loss is ignored


def test_annual_return_capped_not_inf():
    m = run([0.5, 0.5], bars_per_year=525_600.0)
    assert m["annual_return"] == pytest.approx(RETURN_CAP)
    assert m["calmar"] == 0.0  # no drawdown


def test_kernel_nan_input_gives_finite_zeros():
    out = np.full(N_METRICS, 7.0)
    fill_metrics(out, np.array([0.01, np.nan, 0.02]), 2, 1, 1.0, 1.0, 4.0, 3, BPY)
    assert np.isfinite(out).all()
    assert out[METRIC_INDEX["sharpe"]] == 0.0 and out[METRIC_INDEX["win_rate"]] == 0.5
    fill_metrics(out, np.array([0.01, 0.02]), 2, 1, np.nan, np.inf, np.inf, 3, np.nan)
    assert np.isfinite(out).all()
    fill_metrics(out, np.array([], dtype=float), 2, 1, np.nan, 0.0, np.inf, 0, np.inf)
    assert np.isfinite(out).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6) | st.floats(-1e-300, 1e-300) | st.just(-1.0),
                min_size=0, max_size=60),
       st.floats(1e-3, 1e7))
def test_property_always_finite(xs, bpy):
    m = run(xs, bars_per_year=bpy, **TRADES)
    assert all(math.isfinite(v) for v in m.values()), m
    assert 0.0 <= m["max_drawdown"] <= 1.0 and 0.0 <= m["stability"] <= 1.0


def test_wrapper_validates():
    with pytest.raises(ValueError, match="NaN"):
        run([0.1, np.inf])
    with pytest.raises(ValueError, match="bars_per_year"):
        run([0.1], bars_per_year=0.0)
    with pytest.raises(ValueError, match="n_wins"):
        run([0.1], n_trades=1, n_wins=2)
    with pytest.raises(ValueError, match="1-D"):
        run(np.zeros((2, 2)))
