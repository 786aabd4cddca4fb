"""Romano–Wolf step-down p-values: family-wise error under the null as a rate over seeds, power
on a planted edge, monotonicity, agreement with arch's StepM, and the bootstrap's shape."""

from __future__ import annotations

import numpy as np
import pytest

from gates.familywise import both_pvalues, stationary_bootstrap_counts, stepdown_pvalues


def family(seed: int, t: int = 400, k: int = 8, rho: float = 0.7,
           edge: np.ndarray | None = None) -> np.ndarray:
    """K correlated per-bar excess-return series (a common factor plus noise), mean ``edge``."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((t, 1))
    x = np.sqrt(rho) * common + np.sqrt(1 - rho) * rng.standard_normal((t, k))
    return 0.01 * (x + (0.0 if edge is None else edge))


def test_family_wise_error_under_the_null_stays_at_the_level():
    """300 null families of 8 correlated candidates: any rejection at 5 % happens in about 5 %
    of them (binomial 99.9 % band), not 8 x 5 %."""
    rejected = [stepdown_pvalues(family(s), block_size=5, reps=400, seed=s).min() <= 0.05
                for s in range(300)]
    rate = float(np.mean(rejected))
    assert 0.01 <= rate <= 0.095, rate


def test_a_real_edge_is_found_and_the_nulls_beside_it_are_not():
    edge = np.zeros(8)
    edge[[2, 5]] = 0.25  # t ~ 5 over 400 bars
    hits, false = 0, 0
    for s in range(40):
        p = stepdown_pvalues(family(s, edge=edge), block_size=5, reps=400, seed=s)
        hits += int(p[2] <= 0.05 and p[5] <= 0.05)
        false += int((np.delete(p, [2, 5]) <= 0.05).any())
    assert hits >= 38 and false <= 6, (hits, false)


def test_dependence_costs_less_power_than_holm():
    """Near-copies (rho = 0.95): the max-statistic bootstrap rejects a modest edge more often
    than Holm over the same candidates' own bootstrap p-values."""
    edge = np.full(10, 0.12)
    rw = holm = 0
    for s in range(60):
        x = family(s, k=10, rho=0.95, edge=edge)
        rw += int(stepdown_pvalues(x, block_size=5, reps=400, seed=s).min() <= 0.05)
        own = both_pvalues(x, block_size=5, reps=400, seed=s)[1]
        assert np.allclose(own, [stepdown_pvalues(x[:, [j]], block_size=5, reps=400, seed=s)[0]
                                 for j in range(10)])
        holm += int((np.sort(own) * (10 - np.arange(10)) <= 0.05).any())
    assert rw > holm, (rw, holm)


def test_p_values_fall_as_the_statistic_rises_and_flat_is_one():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 6)) * 0.01 + np.linspace(-0.001, 0.002, 6)
    x[:, 0] = 0.0
    p = stepdown_pvalues(x, block_size=4, reps=500, seed=0)
    assert p[0] == 1.0
    t = x.mean(axis=0)[1:] / x.std(axis=0, ddof=1)[1:]
    order = np.argsort(-t)
    assert (np.diff(p[1:][order]) >= 0).all()
    assert ((p > 0) & (p <= 1)).all()
    assert stepdown_pvalues(np.zeros((50, 3)), block_size=3, reps=10).tolist() == [1, 1, 1]


def test_agrees_with_arch_stepm_on_a_clear_case():
    from arch.bootstrap import StepM

    edge = np.array([0.0, 0.4, 0.0, 0.5, -0.2, 0.0])
    x = family(7, t=500, k=6, rho=0.3, edge=edge)
    p = stepdown_pvalues(x, block_size=5, reps=1000, seed=0)
    ours = sorted(np.flatnonzero(p <= 0.05).tolist())
    step = StepM(np.zeros(500), -x, size=0.05, block_size=5, reps=1000,
                 bootstrap="stationary", seed=0)
    step.compute()
    arch = sorted(int(i) for i in step.superior_models)
    assert ours == arch == [1, 3]


def test_bootstrap_counts_resample_whole_series_in_blocks():
    c = stationary_bootstrap_counts(200, 10, 300, seed=1)
    assert c.shape == (300, 200) and (c.sum(axis=1) == 200).all()
    assert np.array_equal(c, stationary_bootstrap_counts(200, 10, 300, seed=1))
    assert not np.array_equal(c, stationary_bootstrap_counts(200, 10, 300, seed=2))
    assert abs(c.mean() - 1.0) < 1e-12
    with pytest.raises(ValueError, match="block_size"):
        stationary_bootstrap_counts(200, 0.5, 10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        stepdown_pvalues(np.zeros((1, 2)), block_size=2)
    with pytest.raises(ValueError, match="finite"):
        stepdown_pvalues(np.full((5, 2), np.nan), block_size=2)
