"""``fill_metrics_sparse`` (returns as values at offsets, zeros elsewhere) against the dense
``fill_metrics`` of the same vector: equal bits where the arithmetic is the same, 1e-12 where
only the summation order differs, on every degenerate case the dense kernel documents."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitness.metrics import (
    METRIC_INDEX,
    METRIC_NAMES,
    N_METRICS,
    SPARSE_SCRATCH,
    MetricsInputError,
    fill_metrics,
    fill_metrics_sparse,
)

BPY = 252.0
TRADES = (12, 7, 3.0, -2.0, 30.0)  # n_trades, n_wins, gross_win, gross_loss, turnover
# same formula and the same operations in the same order: equal bits
EXACT = ("total_return", "annual_return", "max_drawdown", "calmar", "sortino", "profit_factor",
         "win_rate", "trade_count", "trades_per_year", "turnover", "exposure", "var95")
CLOSE = ("volatility", "sharpe", "stability", "es95", "skewness", "kurtosis")
assert set(EXACT) | set(CLOSE) == set(METRIC_NAMES)


def dense(r: np.ndarray, at: np.ndarray, n: int) -> np.ndarray:
    x = np.zeros(n)
    x[at] = r
    return x


def both(r, at, n: int, bpy: float = BPY) -> tuple[np.ndarray, np.ndarray]:
    """(dense metrics, sparse metrics) of r at offsets at in a vector of n bars."""
    r = np.asarray(r, dtype=float)
    at = np.asarray(at, dtype=np.int64)
    k = r.size
    im = k // 2
    want = np.full(N_METRICS, 9.0)
    fill_metrics(want, dense(r, at, n), *TRADES, im, bpy)
    got = np.full(N_METRICS, 9.0)
    scratch = np.full(SPARSE_SCRATCH * k, np.nan)  # the minimum size; its contents are ignored
    fill_metrics_sparse(got, r, at, k, n, scratch, *TRADES, im, bpy)
    return want, got


def assert_same(want: np.ndarray, got: np.ndarray, rel: float = 1e-12) -> None:
    assert np.isfinite(got).all()
    for name in EXACT:
        i = METRIC_INDEX[name]
        assert got[i] == want[i], (name, want[i], got[i])
    kurt = max(abs(want[METRIC_INDEX["kurtosis"]]), 1.0)
    for name in CLOSE:
        i = METRIC_INDEX[name]
        # skewness and stability are sums that can cancel to ~0: their scale is sqrt(kurtosis)
        # and 1 (R^2 in [0, 1]), so they are held to rel * scale in absolute terms
        scale = {"skewness": math.sqrt(kurt), "stability": 1.0}.get(name, 0.0)
        assert got[i] == pytest.approx(want[i], rel=rel, abs=rel * scale), (name, want[i], got[i])


def check(r, at, n: int, bpy: float = BPY) -> np.ndarray:
    want, got = both(r, at, n, bpy)
    # the dense kernel adds bar by bar, its rounding error grows with n (the sparse one adds the
    # zeros in closed form and is the more accurate: see test_more_accurate_than_the_dense_sums)
    assert_same(want, got, rel=max(1e-12, 2e-16 * n))
    return got


# ---- random sparse vectors ----------------------------------------------------------------------

finite_returns = (
    st.floats(-0.05, 0.05)  # the series log1p
    | st.floats(-0.9, 3.0)  # libm's log1p
    | st.sampled_from([0.0, -0.0, 1e-3, -1e-3])  # ties and exact zeros among the r[j]
    | st.floats(1e-300, 1e-290) | st.floats(-1e-290, -1e-300)
)


@st.composite
def sparse_vectors(draw, values=finite_returns, max_n: int = 400):
    n = draw(st.integers(0, max_n))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    at = np.flatnonzero(np.array(mask, dtype=bool)).astype(np.int64)
    r = np.array(draw(st.lists(values, min_size=at.size, max_size=at.size)), dtype=float)
    return r, at, n


@settings(max_examples=400, deadline=None)
@given(sparse_vectors(), st.floats(1e-2, 1e6))
def test_property_sparse_equals_dense(v, bpy):
    check(*v, bpy=bpy)


@settings(max_examples=150, deadline=None)
@given(sparse_vectors(finite_returns | st.sampled_from([-1.0, -1.5, np.nan, np.inf, -np.inf])
                      | st.floats(1e100, 1e200) | st.floats(-1e200, -1e100)))
def test_property_degenerate_values_match_and_stay_finite(v):
    """Ruin, NaN/inf and overflowing values: the same degenerate answers as the dense kernel."""
    check(*v)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6000), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1),
       st.sampled_from(["normal", "t2", "ties", "losses", "gains"]))
def test_property_long_segments(n, density, seed, kind):
    """Longer vectors: the sampled bracket of the quantile (k >= 512) and many stretches."""
    rng = np.random.default_rng(seed)
    at = np.flatnonzero(rng.random(n) < density).astype(np.int64)
    k = at.size
    r = {
        "normal": lambda: rng.normal(2e-4, 0.01, k),
        "t2": lambda: rng.standard_t(2, k) * 0.01,
        "ties": lambda: rng.integers(-3, 4, k) * 0.01,
        "losses": lambda: -np.abs(rng.normal(0, 0.01, k)),
        "gains": lambda: np.abs(rng.normal(0, 0.01, k)),
    }[kind]()
    check(r, at, n)


# ---- the degenerate cases of the dense docstring ------------------------------------------------

def test_no_bars_keeps_trade_stats_only():
    got = check([], [], 0)
    assert got[METRIC_INDEX["trade_count"]] == 12.0 and got[METRIC_INDEX["win_rate"]] == 7 / 12
    assert got[METRIC_INDEX["sharpe"]] == 0.0 and got[METRIC_INDEX["var95"]] == 0.0


@pytest.mark.parametrize("n", [1, 2, 100])
def test_no_nonzero_return_is_all_zero(n):
    got = check([], [], n)
    assert (got[[METRIC_INDEX[m] for m in CLOSE]] == 0.0).all()
    assert got[METRIC_INDEX["total_return"]] == 0.0 and got[METRIC_INDEX["var95"]] == 0.0


@pytest.mark.parametrize(("r", "at"), [([0.01], [0]), ([-0.02], [0]), ([0.0], [0])])
def test_single_bar(r, at):
    got = check(r, at, 1)
    assert got[METRIC_INDEX["var95"]] == -r[0] and got[METRIC_INDEX["volatility"]] == 0.0


def test_all_zero_values_given_explicitly():
    check(np.zeros(50), np.arange(50), 50)
    check(np.zeros(10), np.arange(0, 100, 10), 100)


@pytest.mark.parametrize("n", [7, 100])
def test_constant_returns(n):
    got = check(np.full(n, 1e-3), np.arange(n), n)  # dense: volatility etc. are 0
    assert got[METRIC_INDEX["volatility"]] == 0.0 and got[METRIC_INDEX["stability"]] > 0.99
    got = check(np.full(n // 2, 1e-3), np.arange(0, n, 2)[: n // 2], n)  # with zeros between
    assert got[METRIC_INDEX["volatility"]] > 0.0


@pytest.mark.parametrize(("r", "at"), [([0.1, -1.0, 0.2], [1, 5, 9]), ([-1.5], [0]),
                                       ([0.3, -2.0], [3, 4])])
def test_ruin(r, at):
    got = check(r, at, 10)
    assert got[METRIC_INDEX["max_drawdown"]] == 1.0 and got[METRIC_INDEX["stability"]] == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    got = check([0.01, bad, 0.02], [2, 3, 7], 10)
    assert got[METRIC_INDEX["sharpe"]] == 0.0 and got[METRIC_INDEX["win_rate"]] == 7 / 12


def test_huge_values():
    check([1e6, -0.5, 1e6], [0, 50, 99], 100)
    check([1e300, 1e300], [3, 8], 10)
    check([0.5, 0.5], [0, 1], 2, bpy=525_600.0)  # annual return at its cap


@pytest.mark.parametrize("n", [1, 2, 3, 1000])
@pytest.mark.parametrize("x", [0.02, -0.02, 0.5, -0.5])
def test_single_nonzero_at_either_end(n, x):
    check([x], [0], n)
    check([x], [n - 1], n)


@pytest.mark.parametrize("n", [2, 20, 600, 3000])
def test_fully_dense(n):
    r = np.random.default_rng(n).normal(1e-4, 0.01, n)
    check(r, np.arange(n), n)


# ---- the 5 % quantile around the block of zeros -------------------------------------------------

@pytest.mark.parametrize("n", [1000, 1001, 20_000])
@pytest.mark.parametrize("shift", range(-2, 3))
@pytest.mark.parametrize("zeros_given", [False, True])
def test_quantile_at_the_edges_of_the_zero_block(n, shift, zeros_given):
    """Negatives end, or positives start, just below, at or just above the quantile's ranks."""
    rng = np.random.default_rng(n + shift)
    kq = int((n - 1) * 0.05)
    n_neg = kq + 1 + shift  # the dense ranks kq, kq + 1 straddle the end of the negatives
    neg = -rng.random(n_neg) * 0.01
    pos = rng.random(n // 2) * 0.01
    vals = np.concatenate([neg, pos, np.zeros(n // 10 if zeros_given else 0)])
    at = np.sort(rng.choice(n, vals.size, replace=False)).astype(np.int64)
    check(rng.permutation(vals), at, n)
    # no negatives but few zeros: the quantile's ranks straddle the start of the positives
    n_zero = kq + 1 + shift
    at = np.sort(rng.choice(n, n - n_zero, replace=False)).astype(np.int64)
    check(rng.random(at.size) * 0.01, at, n)


def test_quantile_exactly_zero_between_the_zeros_and_the_gains():
    """n = 1001: the quantile's rank 50 is whole (no interpolation). Ranks 0..19 are losses,
    20..50 implicit zeros, 51.. gains: q = 0 and the tail holds the 31 zeros as well."""
    rng = np.random.default_rng(8)
    vals = np.concatenate([-rng.random(20) * 0.01, rng.random(950) * 0.01])
    at = np.sort(rng.choice(1001, vals.size, replace=False)).astype(np.int64)
    got = check(rng.permutation(vals), at, 1001)
    assert got[METRIC_INDEX["var95"]] == 0.0
    assert got[METRIC_INDEX["es95"]] == pytest.approx(-vals[:20].sum() / 51, rel=1e-12)


def test_quantile_that_rounds_to_zero_counts_every_zero():
    """A subnormal largest loss interpolated half way to 0 rounds to q = 0.0: then every zero,
    the explicit r[j] == 0 too, is in the tail (the window cannot hold those: full recount)."""
    r = np.concatenate([[-0.01, -5e-324, 0.0, 0.0], np.linspace(0.01, 0.02, 20)])
    at = np.arange(r.size, dtype=np.int64) + 7
    got = check(r, at, 31)  # (31 - 1) * 0.05 = 1.5: halfway between ranks 1 and 2
    assert got[METRIC_INDEX["es95"]] == pytest.approx(0.01 / 11, rel=1e-12)  # 2 losses, 9 zeros


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_quantile_all_one_sign(sign):
    n = 3000
    rng = np.random.default_rng(4)
    r = sign * rng.random(n) * 0.01
    check(r, np.arange(n), n)
    at = np.sort(rng.choice(n, n // 3, replace=False)).astype(np.int64)
    check(r[: at.size], at, n)


def test_bracket_miss_falls_back():
    n = 100_000
    r = -np.random.default_rng(1).random(n) * 0.01
    step = n // int(2 * math.sqrt(n))
    r[::step] = np.linspace(0.01, 0.02, r[::step].size)  # every sampled value is unrepresentative
    check(r, np.arange(n), n)
    check(r, np.arange(n) * 2, 2 * n + 5)


# ---- determinism ------------------------------------------------------------------------------

def test_bit_identical_across_calls_and_read_only_inputs():
    rng = np.random.default_rng(11)
    n = 50_000
    at = np.flatnonzero(rng.random(n) < 0.4).astype(np.int64)
    r = rng.standard_t(3, at.size) * 0.01
    runs = []
    for frozen in (False, False, True):
        rr, aa = r.copy(), at.copy()
        if frozen:  # what a Ray worker sees: arrays from the object store are read-only
            rr.flags.writeable = False
            aa.flags.writeable = False
        out = np.empty(N_METRICS)
        fill_metrics_sparse(out, rr, aa, rr.size, n, np.empty(SPARSE_SCRATCH * rr.size + 64), *TRADES, 3, BPY)
        runs.append(out.tobytes())
    assert runs[0] == runs[1] == runs[2]


def test_callable_from_a_parallel_numba_loop():
    @numba.njit(parallel=True)
    def batch(r, at, n):
        out = np.zeros((4, N_METRICS))
        for g in numba.prange(4):
            scratch = np.empty(SPARSE_SCRATCH * r.shape[0] + 64)
            fill_metrics_sparse(out[g], r, at, r.shape[0] - g, n, scratch, 12, 7, 3.0, -2.0,
                                30.0, 3, 252.0)
        return out

    rng = np.random.default_rng(2)
    at = np.arange(0, 3000, 3, dtype=np.int64)
    r = rng.normal(0, 0.01, at.size)
    got = batch(r, at, 3000)
    for g in range(4):
        want = np.zeros(N_METRICS)
        fill_metrics_sparse(want, r, at, r.size - g, 3000, np.empty(SPARSE_SCRATCH * r.size), *TRADES, 3, BPY)
        assert got[g].tobytes() == want.tobytes()


def test_more_accurate_than_the_dense_sums():
    """Moments over a long flat-heavy vector against exact (fsum) sums: the closed form for the
    zeros is at least as close as the dense kernel's bar-by-bar sums."""
    rng = np.random.default_rng(5)
    n = 200_000
    at = np.flatnonzero(rng.random(n) < 0.05).astype(np.int64)
    r = rng.normal(3e-4, 0.01, at.size)
    want, got = both(r, at, n)
    x = dense(r, at, n)
    mean = math.fsum(x) / n
    std = math.sqrt(math.fsum((x - mean) ** 2) / (n - 1))
    exact = mean / std * math.sqrt(BPY)
    i = METRIC_INDEX["sharpe"]
    assert abs(got[i] - exact) <= max(abs(want[i] - exact), 1e-15 * abs(exact))


# ---- contract ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("at", "k", "n", "extra", "match"), [
    ([0, 2, 2], 3, 5, 64, "strictly increasing"),
    ([3, 1, 4], 3, 5, 64, "strictly increasing"),
    ([-1, 1, 4], 3, 5, 64, "within"),
    ([0, 2, 5], 3, 5, 64, "within"),
    ([0, 1, 2], 3, 2, 64, "do not fit"),
    ([0, 1, 2], 4, 9, 64, "do not fit"),
    ([0, 1, 2], 3, 9, -1, "do not fit"),
])
def test_contract_violations_raise(at, k, n, extra, match):
    out = np.zeros(N_METRICS)
    with pytest.raises(MetricsInputError, match=match):
        fill_metrics_sparse(out, np.full(3, 0.01), np.array(at, dtype=np.int64), k, n,
                            np.empty(SPARSE_SCRATCH * k + extra), *TRADES, 0, BPY)
