"""ONC-style trial clustering: known cluster counts are recovered, flat rows are set aside, the
result is deterministic, and cluster returns use inverse-variance weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gates.clustering import TrialClusters, cluster_returns, cluster_trials

N_BLOCKS = 256


def correlated_families(
    sizes: list[int],
    *,
    rho: tuple[float, float] = (0.5, 0.8),
    seed: int = 0,
    n_blocks: int = N_BLOCKS,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows = sqrt(r)·factor + sqrt(1-r)·noise, one independent factor per family.

    Two members with loadings r_i, r_j correlate at sqrt(r_i·r_j), so within-family correlation
    lies in ``rho``; families are independent. Rows get random scales and offsets (correlation
    ignores both) and are shuffled.
    """
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for family, n in enumerate(sizes):
        factor = rng.standard_normal(n_blocks)
        r = rng.uniform(*rho, size=n)[:, None]
        x = np.sqrt(r) * factor + np.sqrt(1.0 - r) * rng.standard_normal((n, n_blocks))
        x = x * rng.uniform(0.001, 0.03, size=(n, 1)) + rng.normal(0.0, 0.002, size=(n, 1))
        rows.append(x)
        truth += [family] * n
    order = rng.permutation(len(truth))
    return np.vstack(rows)[order], np.asarray(truth)[order]


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie) of two labelings."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1.0)

    def pairs(v: np.ndarray) -> float:
        return float((v * (v - 1.0) / 2.0).sum())

    index = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(np.array([float(a.size)]))
    top = (rows + cols) / 2.0
    return 1.0 if top == expected else (index - expected) / (top - expected)


def test_adjusted_rand_can_tell_good_from_bad():
    truth = np.repeat(np.arange(4), 25)
    perm = np.array([2, 0, 3, 1])[truth]
    assert adjusted_rand(truth, perm) == pytest.approx(1.0)
    shuffled = np.random.default_rng(0).permutation(truth)
    assert abs(adjusted_rand(truth, shuffled)) < 0.1
    merged = np.minimum(truth, 2)  # two true clusters merged
    assert adjusted_rand(truth, merged) < 0.95


@pytest.mark.parametrize(
    ("sizes", "seed"),
    [
        ([60], 1),
        ([25], 2),
        ([50, 20], 3),
        ([70, 25, 8], 4),
        ([40, 30, 22, 15, 12, 8, 5], 5),
        ([45, 38, 30, 27, 22, 20, 18, 15, 12, 10, 8, 6], 6),
    ],
)
def test_recovers_known_number_of_families(sizes, seed):
    x, truth = correlated_families(sizes, seed=seed)
    res = cluster_trials(x)
    assert res.n_clusters == len(sizes)
    assert adjusted_rand(res.labels, truth) >= 0.95
    assert res.n_flat == 0 and res.n_clustered_on == len(truth)
    assert math.isfinite(res.quality) and res.quality > 0
    assert set(res.labels.tolist()) == set(range(res.n_clusters))


def test_near_copies_are_one_cluster():
    x, _ = correlated_families([150], rho=(0.97, 0.995), seed=7)
    assert cluster_trials(x).n_clusters == 1


def test_weakly_correlated_family_is_one_cluster():
    x, _ = correlated_families([80], rho=(0.3, 0.4), seed=8)
    assert cluster_trials(x).n_clusters == 1


def test_unrelated_rows_are_not_collapsed_to_one():
    # k = 1 means "copies of one behaviour"; independent rows must not be read that way.
    x = np.random.default_rng(9).standard_normal((120, N_BLOCKS))
    assert cluster_trials(x).n_clusters >= 2


def test_flat_rows_are_excluded_and_counted():
    x, truth = correlated_families([40, 30, 20], seed=10)
    flat = np.zeros((5, N_BLOCKS))
    flat[1] = 0.25  # constant, not zero
    flat[2] = -3.0
    flat[3, :] = 1e-3 * (1.0 + 1e-15)  # constant up to rounding
    at = np.array([0, 17, 33, 50, 94])
    x = np.insert(x, at - np.arange(at.size), flat, axis=0)
    res = cluster_trials(x)
    assert res.n_flat == 5
    np.testing.assert_array_equal(np.flatnonzero(res.labels == -1), at)
    kept = res.labels != -1
    assert res.n_clusters == 3
    assert adjusted_rand(res.labels[kept], truth) >= 0.95


def test_all_flat_and_empty_inputs_give_no_clusters():
    x = np.vstack([np.zeros((4, 16)), np.full((3, 16), 2.5)])
    res = cluster_trials(x)
    assert (res.n_clusters, res.n_flat, res.n_clustered_on) == (0, 7, 0)
    np.testing.assert_array_equal(res.labels, np.full(7, -1))
    assert res.labels.dtype == np.int64
    assert math.isnan(res.quality)
    empty = cluster_trials(np.empty((0, 16)))
    assert (empty.n_clusters, empty.n_flat, empty.labels.shape) == (0, 0, (0,))


def test_single_usable_row_is_one_cluster():
    x = np.zeros((3, 8))
    x[1] = np.arange(8.0)
    res = cluster_trials(x)
    assert res.n_clusters == 1 and res.n_flat == 2 and res.n_clustered_on == 1
    np.testing.assert_array_equal(res.labels, [-1, 0, -1])
    assert math.isnan(res.quality)  # no second row to compare with
    copies = cluster_trials(np.vstack([x, 3.0 * x[1], x[1] + 5.0]))
    assert copies.n_clusters == 1 and copies.n_clustered_on == 1


def test_deterministic_for_a_seed():
    x, _ = correlated_families([30, 25, 20, 10, 6], rho=(0.3, 0.6), seed=11)
    x = np.vstack([x, np.random.default_rng(1).standard_normal((40, N_BLOCKS))])  # some noise
    a = cluster_trials(x, seed=3)
    b = cluster_trials(x.copy(), seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.n_clusters, a.quality, a.n_flat, a.n_clustered_on) == (
        b.n_clusters,
        b.quality,
        b.n_flat,
        b.n_clustered_on,
    )


def test_subsampled_fit_still_recovers_and_labels_every_row():
    x, truth = correlated_families([900, 600, 500, 400, 300, 200, 100], seed=12)
    a = cluster_trials(x, max_rows=400, seed=1)
    assert a.n_clustered_on == 400
    assert (a.labels >= 0).all()
    assert a.n_clusters == 7
    assert adjusted_rand(a.labels, truth) >= 0.95
    b = cluster_trials(x, max_rows=400, seed=1)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_duplicates_and_rescaled_copies_share_labels_and_are_fitted_once():
    x, truth = correlated_families([30, 20, 12], seed=13)
    copies = np.vstack([x[:10], 2.0 * x[10:20], 7.0 * x[20:30] - 0.01])
    res = cluster_trials(np.vstack([x, copies]))
    assert res.n_clustered_on == len(truth)
    np.testing.assert_array_equal(res.labels[len(truth) :], res.labels[:30])
    assert res.n_clusters == 3
    assert adjusted_rand(res.labels[: len(truth)], truth) >= 0.95


def test_labels_ignore_scale_and_offset_of_rows():
    x, _ = correlated_families([35, 25, 15], seed=14)
    rng = np.random.default_rng(0)
    y = x * rng.uniform(0.1, 10.0, size=(len(x), 1)) + rng.normal(0.0, 1.0, size=(len(x), 1))
    np.testing.assert_array_equal(cluster_trials(x).labels, cluster_trials(y).labels)


def test_labels_are_numbered_by_first_appearance():
    x, _ = correlated_families([30, 20, 10], seed=15)
    labels = cluster_trials(x).labels
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(labels.max() + 1)]
    assert firsts == sorted(firsts) and labels[0] == 0


def test_max_k_bounds_the_answer():
    x, _ = correlated_families([40, 30, 20, 10], seed=16)
    one = cluster_trials(x, max_k=1)
    assert one.n_clusters == 1 and math.isfinite(one.quality)
    assert cluster_trials(x, max_k=2).n_clusters <= 2
    assert cluster_trials(x, max_k=10_000).n_clusters == 4  # clamped, not an error


def test_cluster_returns_inverse_variance_by_hand():
    x = np.array(
        [
            [1.0, -1.0, 1.0, -1.0],  # var 1
            [2.0, 0.0, 2.0, 0.0],  # var 1
            [0.0, 4.0, 0.0, -4.0],  # var 8
            [3.0, 3.0, 3.0, 3.0],  # flat, excluded
            [1.0, 2.0, 3.0, 4.0],  # var 1.25
        ]
    )
    labels = np.array([0, 1, 0, -1, 1])
    out = cluster_returns(x, labels, 2)
    # cluster 0: weights ∝ (1/1, 1/8) → (8/9, 1/9)
    c0 = 8 / 9 * x[0] + 1 / 9 * x[2]
    # cluster 1: weights ∝ (1/1, 1/1.25) → (5/9, 4/9)
    c1 = 5 / 9 * x[1] + 4 / 9 * x[4]
    np.testing.assert_allclose(out, np.vstack([c0, c1]), rtol=0, atol=1e-12)
    assert out.shape == (2, 4) and out.dtype == np.float64


def test_cluster_returns_on_a_clustering():
    x, _ = correlated_families([20, 10], seed=17)
    x = np.vstack([x, np.zeros((2, N_BLOCKS))])
    res = cluster_trials(x)
    out = cluster_returns(x, res.labels, res.n_clusters)
    assert out.shape == (2, N_BLOCKS)
    members = x[res.labels == 1]
    w = 1.0 / members.var(axis=1)
    np.testing.assert_allclose(out[1], (w / w.sum()) @ members)
    assert cluster_returns(x, np.full(len(x), -1), 0).shape == (0, N_BLOCKS)


@pytest.mark.parametrize(
    ("labels", "k", "match"),
    [
        ([0, 1], 2, "shape"),
        ([0, 1, 2], 2, "lie in"),
        ([0, -2, 1], 2, "lie in"),
        ([0, 0, 0], 2, "without members"),
        ([0.0, 1.0, 1.0], 2, "integers"),
        ([0, 1, 1], -1, "non-negative"),
    ],
)
def test_cluster_returns_rejects_bad_labels(labels, k, match):
    x = np.random.default_rng(0).standard_normal((3, 8))
    with pytest.raises(ValueError, match=match):
        cluster_returns(x, np.asarray(labels), k)


def test_cluster_returns_rejects_flat_member():
    x = np.vstack([np.ones(8), np.arange(8.0)])
    with pytest.raises(ValueError, match="zero variance"):
        cluster_returns(x, np.array([0, 0]), 1)


@pytest.mark.parametrize(
    ("sketches", "kwargs", "match"),
    [
        (np.zeros(10), {}, "2-D"),
        (np.zeros((2, 3, 4)), {}, "2-D"),
        (np.zeros((5, 2)), {}, "at least 3 blocks"),
        (np.array([[0.0, 1.0, np.nan]]), {}, "non-finite"),
        (np.array([[0.0, np.inf, 1.0]]), {}, "non-finite"),
        (np.array([["a", "b", "c"]]), {}, "numeric"),
        (np.ones((4, 8)), {"max_k": 0}, "max_k"),
        (np.ones((4, 8)), {"max_k": 2.5}, "max_k"),
        (np.ones((4, 8)), {"n_init": 0}, "n_init"),
        (np.ones((4, 8)), {"max_rows": 1}, "max_rows"),
    ],
)
def test_bad_input_raises(sketches, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cluster_trials(sketches, **kwargs)


@settings(max_examples=30, deadline=None)
@given(
    x=arrays(
        np.float64,
        st.tuples(st.integers(0, 40), st.integers(3, 24)),
        elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    ),
    n_flat_rows=st.integers(0, 5),
    max_rows=st.integers(2, 50),
)
def test_result_is_well_formed(x, n_flat_rows, max_rows):
    x = np.vstack([x, np.full((n_flat_rows, x.shape[1]), 1.5)])
    res = cluster_trials(x, max_rows=max_rows, n_init=3)
    assert isinstance(res, TrialClusters)
    assert res.labels.shape == (x.shape[0],) and res.labels.dtype == np.int64
    flat = res.labels == -1
    assert res.n_flat == int(flat.sum())
    scale = np.abs(x).max(axis=1, initial=0.0)
    assert flat[np.ptp(x, axis=1) == 0.0].all()  # constant rows are always set aside
    assert not flat[np.ptp(x, axis=1) > 1e-9 * scale].any()  # varying rows never are
    if flat.all():
        assert res.n_clusters == 0 and res.n_clustered_on == 0
    else:
        assert 1 <= res.n_clusters <= res.n_clustered_on <= max_rows
        assert set(res.labels[~flat].tolist()) == set(range(res.n_clusters))
