"""N_eff: ONC clusters refined to groups of near-copies, checked on synthetic strategy families
with a known count; and the deflated Sharpe with N_eff against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from gates.stats import probabilistic_sharpe
from gates.trials import COHESION, TrialCount, count_trials, near_copy_groups


def families(sizes: list[int], rho: float, singles: int, seed: int, b: int = 256) -> np.ndarray:
    """Families of near-copies (pairwise correlation ~rho around a family factor, under a weak
    common market factor) plus unrelated single strategies, as return sketches [n, b]."""
    rng = np.random.default_rng(seed)
    market = rng.standard_normal(b)
    rows = []
    for size in sizes:
        factor = rng.standard_normal(b)
        for _ in range(size):
            own = math.sqrt(rho) * factor + math.sqrt(1 - rho) * rng.standard_normal(b)
            rows.append(0.3 * market + own)
    rows += [0.3 * market + rng.standard_normal(b) for _ in range(singles)]
    return 0.01 * np.array(rows)


@pytest.mark.parametrize(("sizes", "singles"), [([30, 12, 5], 0), ([8] * 15, 0),
                                                ([40, 20], 60), ([], 150)])
def test_effective_count_is_families_plus_unrelated_strategies(sizes, singles):
    s = families(sizes, 0.9, singles, seed=len(sizes) + singles)
    got = count_trials(s, np.ones(len(s), bool))
    assert got.raw == len(s) and got.flat == 0 and got.unsampled == 0
    assert got.effective == len(sizes) + singles, got


def test_unrelated_strategies_are_not_collapsed_into_two_clusters():
    """Unrelated strategies under a common market factor have no cluster structure for ONC's
    quality score to find; the near-copy groups count every one of them."""
    s = families([], 0.0, 600, seed=3)
    got = count_trials(s, np.ones(600, bool))
    assert got.effective == 600 and got.clusters < 600


def test_flat_and_unsampled_trials():
    s = families([10, 10], 0.9, 5, seed=4)
    s = np.vstack([s, np.zeros((7, s.shape[1])), np.zeros((3, s.shape[1]))])
    traded = np.r_[np.ones(25, bool), np.zeros(7, bool), np.ones(3, bool)]
    got = count_trials(s, traded)
    assert (got.raw, got.flat, got.unsampled, got.effective) == (35, 7, 3, 2 + 5 + 3)
    assert count_trials(np.zeros((4, 256)), np.zeros(4, bool)).effective == 0


def test_copies_at_another_size_are_one_trial():
    base = families([], 0.0, 3, seed=5)
    s = np.vstack([base, 2.5 * base, base + 0.001])
    assert count_trials(s, np.ones(9, bool)).effective == 3


def test_near_copy_cut_is_the_cohesion_level():
    rng = np.random.default_rng(6)
    f = rng.standard_normal(400)
    pair = lambda rho: np.stack([f, rho * f + math.sqrt(1 - rho**2) * rng.standard_normal(400)])  # noqa: E731
    for rho, want in ((0.95, 1), (0.85, 1), (0.5, 2), (0.1, 2)):
        x = pair(rho)
        x = (x - x.mean(1, keepdims=True)) / np.linalg.norm(x - x.mean(1, keepdims=True), axis=1,
                                                              keepdims=True)
        assert near_copy_groups(x) == want, rho
    assert pytest.approx(math.sqrt(0.5)) == COHESION


def test_dsr_with_n_eff_by_hand():
    """N_eff = 37, T = 2,800 training bars, skew -0.2, kurtosis 5, training Sharpe 2.4 a year:
    SR0 = √(1/(T−1))·((1−γ)Φ⁻¹(1−1/N) + γΦ⁻¹(1−1/(N·e))), DSR = PSR(SR0)."""
    tc = TrialCount(raw=3097, flat=0, unsampled=0, clusters=2, effective=37, quality=1.0)
    t, g3, g4, sr = 2800, -0.2, 5.0, 2.4 / math.sqrt(252)
    g = 0.5772156649015329
    sr0 = math.sqrt(1 / 2799) * ((1 - g) * norm.ppf(1 - 1 / 37) + g * norm.ppf(1 - 1 / (37 * math.e)))
    assert tc.expected_max_sharpe(t) == pytest.approx(sr0, rel=1e-12)
    assert sr0 * math.sqrt(252) == pytest.approx(0.648, abs=0.001)  # the null's best, a year
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr)
    dsr = probabilistic_sharpe(sr, tc.expected_max_sharpe(t), t, g3, g4)
    assert dsr == pytest.approx(norm.cdf(z), rel=1e-12)
    assert dsr > 0.9999  # a training Sharpe of 2.4 over 11 years clears the bar easily


def test_bad_input():
    with pytest.raises(ValueError, match="traded flag"):
        count_trials(np.zeros((3, 10)), np.ones(2, bool))
    with pytest.raises(ValueError, match="finite"):
        count_trials(np.full((3, 10), np.nan), np.ones(3, bool))
