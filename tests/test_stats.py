"""gates.stats vs the DSR paper's worked example, direct scipy formulas and a loop CSCV."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm

from gates.stats import (
    deflated_sharpe,
    expected_max_sharpe,
    pbo_cscv,
    probabilistic_sharpe,
    sharpe_needed,
    sharpe_of_block,
)

# Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example: N = 100
# independent trials, best annualised SR = 2.5, annualised V[SR_n] = 0.5, five years of daily
# returns with 250 trading days a year (T = 1250), skewness −3, Pearson kurtosis 10.
# Per-observation conversion with 250 days/year: SR = 2.5/√250, V = 0.5/250.
# Paper: SR0 ≈ 0.1132 per day (≈ 1.79 annualised), DSR ≈ 0.9004.
DAYS = 250
EX_SR = 2.5 / math.sqrt(DAYS)
EX_VAR = 0.5 / DAYS
EX_T = 5 * DAYS
EX_SKEW = -3.0
EX_KURT = 10.0
EX_N = 100


def _scipy_psr(sr, sr0, t, g3, g4):
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return scipy.stats.norm.cdf(z)


def _scipy_sr0(n, v):
    g = 0.5772156649015329
    return math.sqrt(v) * (
        (1 - g) * scipy.stats.norm.ppf(1 - 1 / n) + g * scipy.stats.norm.ppf(1 - 1 / (n * math.e))
    )


def test_dsr_worked_example():
    sr0 = expected_max_sharpe(EX_N, EX_VAR)
    assert sr0 == pytest.approx(0.1132, abs=1e-3)
    assert sr0 * math.sqrt(DAYS) == pytest.approx(1.79, abs=1e-2)
    dsr = deflated_sharpe(EX_SR, EX_T, EX_SKEW, EX_KURT, EX_N, EX_VAR)
    assert dsr == pytest.approx(0.9004, abs=1e-3)
    # PSR against the expected-max benchmark is the DSR.
    assert probabilistic_sharpe(EX_SR, sr0, EX_T, EX_SKEW, EX_KURT) == dsr
    # Direct scipy computation of the formulas.
    assert sr0 == pytest.approx(_scipy_sr0(EX_N, EX_VAR), rel=1e-12)
    assert dsr == pytest.approx(
        _scipy_psr(EX_SR, _scipy_sr0(EX_N, EX_VAR), EX_T, EX_SKEW, EX_KURT), rel=1e-12
    )


@given(
    sr=st.floats(-0.5, 0.5),
    sr_b=st.floats(-0.5, 0.5),
    t=st.integers(2, 5000),
    g3=st.floats(-2, 2),
    g4=st.floats(1.5, 20),
)
@settings(max_examples=100, deadline=None)
def test_psr_matches_scipy(sr, sr_b, t, g3, g4):
    if 1 - g3 * sr + (g4 - 1) / 4 * sr**2 <= 0:
        with pytest.raises(ValueError):
            probabilistic_sharpe(sr, sr_b, t, g3, g4)
        return
    assert probabilistic_sharpe(sr, sr_b, t, g3, g4) == pytest.approx(
        _scipy_psr(sr, sr_b, t, g3, g4), rel=1e-9, abs=1e-12
    )


def test_psr_and_sr0_properties():
    # Normal returns, SR = benchmark → 0.5; N = 1 → no inflation.
    assert probabilistic_sharpe(0.1, 0.1, 100, 0.0, 3.0) == 0.5
    assert expected_max_sharpe(1, 0.3) == 0.0
    assert expected_max_sharpe(1000, 0.01) > expected_max_sharpe(10, 0.01) > 0
    assert deflated_sharpe(EX_SR, EX_T, EX_SKEW, EX_KURT, 1, EX_VAR) == probabilistic_sharpe(
        EX_SR, 0.0, EX_T, EX_SKEW, EX_KURT
    )


def _pbo_reference(returns, n_blocks):
    """Plain loops: one split at a time, scipy average ranks."""
    t, n = returns.shape
    m = t // n_blocks
    r = returns[t - m * n_blocks :]
    blocks = [r[i * m : (i + 1) * m] for i in range(n_blocks)]
    logits = []
    for is_set in combinations(range(n_blocks), n_blocks // 2):
        oos_set = [i for i in range(n_blocks) if i not in is_set]
        x_is = np.concatenate([blocks[i] for i in is_set])
        x_oos = np.concatenate([blocks[i] for i in oos_set])
        perf_is = sharpe_of_block(x_is)
        perf_oos = sharpe_of_block(x_oos)
        best = int(np.argmax(perf_is))
        rank = scipy.stats.rankdata(perf_oos)[best]
        w = rank / (n + 1.0)
        logits.append(math.log(w / (1.0 - w)))
    logits = np.array(logits)
    return float(np.mean(logits <= 0.0)), logits


@given(
    data=st.data(),
    n_blocks=st.sampled_from([2, 4, 6]),
    n=st.integers(2, 6),
)
@settings(max_examples=60, deadline=None)
def test_pbo_matches_loop_reference(data, n_blocks, n):
    t = data.draw(st.integers(n_blocks, 40))
    # Coarse grid of values so ties (in IS and OOS) occur.
    r = data.draw(arrays(np.float64, (t, n), elements=st.integers(-3, 3).map(lambda k: k / 100)))
    pbo, logits = pbo_cscv(r, n_blocks)
    ref_pbo, ref_logits = _pbo_reference(r, n_blocks)
    assert pbo == ref_pbo
    np.testing.assert_array_equal(logits, ref_logits)
    assert len(logits) == math.comb(n_blocks, n_blocks // 2)


def test_pbo_moment_path_equals_the_concatenating_path():
    """The default Sharpe metric takes the block-moment shortcut; any other callable
    concatenates the data. Same logits, also with duplicate, flat and constant columns."""
    rng = np.random.default_rng(5)
    r = rng.standard_t(4, (700, 12)) * 0.01
    r[:, 3] = r[:, 7]             # exact ties everywhere
    r[:, 5] = 0.0                 # a flat strategy
    r[:, 9] = 0.001               # constant returns: Sharpe 0, not rounding noise
    r[:300, 10] = 0.0             # flat for some blocks only
    fast = pbo_cscv(r, 10)
    slow = pbo_cscv(r, 10, metric=lambda x: sharpe_of_block(x))
    assert fast[0] == slow[0]
    np.testing.assert_array_equal(fast[1], slow[1])
    # a population where most strategies never trade: ties among them are exact, not rounding
    r = np.hstack([np.zeros((700, 25)), rng.standard_t(4, (700, 6)) * 0.01, np.zeros((700, 5))])
    r[:, 27] = r[:, 26]
    fast = pbo_cscv(r, 10)
    slow = pbo_cscv(r, 10, metric=lambda x: sharpe_of_block(x))
    np.testing.assert_array_equal(fast[1], slow[1])


def test_pbo_chunking_matches_reference(monkeypatch):
    import gates.stats as fs

    monkeypatch.setattr(fs, "_CSCV_CHUNK_BYTES", 1000)  # force many small chunks
    r = np.random.default_rng(3).standard_normal((83, 5))
    pbo, logits = pbo_cscv(r, 8, metric=lambda x: sharpe_of_block(x))  # the concatenating path
    ref_pbo, ref_logits = _pbo_reference(r, 8)
    assert pbo == ref_pbo
    np.testing.assert_array_equal(logits, ref_logits)


def test_pbo_noise_near_half():
    rng = np.random.default_rng(7)
    pbos = [pbo_cscv(rng.standard_normal((600, 30)) * 0.01, 10)[0] for _ in range(5)]
    assert 0.3 < float(np.mean(pbos)) < 0.7


def test_pbo_planted_edge_near_zero():
    rng = np.random.default_rng(11)
    r = rng.standard_normal((600, 30)) * 0.01
    r[:, 17] += 0.005  # per-observation Sharpe ≈ 0.5
    pbo, logits = pbo_cscv(r, 10)
    assert pbo < 0.05
    assert np.median(logits) > 0


def test_pbo_validation():
    r = np.zeros((40, 3))
    for bad in (3, 0, 1, 42, 2.5):
        with pytest.raises(ValueError):
            pbo_cscv(r, bad)
    with pytest.raises(ValueError):
        pbo_cscv(np.zeros((40, 1)), 4)
    with pytest.raises(ValueError):
        pbo_cscv(np.zeros(40), 4)
    bad_r = np.zeros((40, 3))
    bad_r[5, 1] = np.nan
    with pytest.raises(ValueError):
        pbo_cscv(bad_r, 4)


def test_stats_validation():
    with pytest.raises(ValueError):
        expected_max_sharpe(0, 0.1)
    with pytest.raises(ValueError):
        expected_max_sharpe(10, -0.1)
    with pytest.raises(ValueError):
        deflated_sharpe(0.1, 100, 0.0, 3.0, 0, 0.1)
    with pytest.raises(ValueError):
        probabilistic_sharpe(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError):
        probabilistic_sharpe(float("nan"), 0.0, 100, 0.0, 3.0)


@settings(max_examples=100, deadline=None)
@given(sr0=st.floats(0.0, 0.3), t=st.integers(50, 20_000), g3=st.floats(-1.0, 1.0),
       g4=st.floats(2.0, 12.0), level=st.floats(0.5, 0.99))
def test_sharpe_needed_is_where_the_dsr_reaches_its_threshold(sr0, t, g3, g4, level):
    need = sharpe_needed(level, sr0, t, g3, g4)
    if math.isnan(need):
        return
    assert need >= sr0 - 1e-12
    assert probabilistic_sharpe(need, sr0, t, g3, g4) == pytest.approx(level, abs=1e-9)


def test_sharpe_needed_hand_case():
    """Normal returns (skew 0, kurtosis 3), T = 2,500 daily bars, N_eff = 37 clusters whose
    Sharpe ratios spread by 0.5 a year: SR0 and the bar, by hand."""
    v = 0.5**2 / 252
    z = (1 - np.euler_gamma) * norm.ppf(1 - 1 / 37) + np.euler_gamma * norm.ppf(1 - 1 / (37 * np.e))
    sr0 = math.sqrt(v) * z
    assert expected_max_sharpe(37, v) == pytest.approx(sr0, rel=1e-12)
    need = sharpe_needed(0.95, sr0, 2500, 0.0, 3.0)
    # SR = SR0 + 1.645·√(1 + SR²/2)/√2499, solved by fixed-point iteration
    want = sr0
    for _ in range(50):
        want = sr0 + norm.ppf(0.95) * math.sqrt(1 + want * want / 2) / math.sqrt(2499)
    assert need == pytest.approx(want, rel=1e-9)
    # SR0 = 0.5 x 2.159 = 1.080 a year, plus 1.645 x sqrt(252 / 2499) = 0.522: a bar of 1.60
    assert need * math.sqrt(252) == pytest.approx(1.60, abs=0.01)
