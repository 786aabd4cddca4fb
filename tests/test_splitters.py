"""Properties of the purged walk-forward and CPCV splitters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gates.splitters import Fold, cpcv, cpcv_paths, n_paths, purged_walk_forward

SETTINGS = settings(max_examples=150, deadline=None)


def _bars(ranges: np.ndarray) -> np.ndarray:
    if len(ranges) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, e, dtype=np.int64) for s, e in ranges])


def _check_shape(fold: Fold) -> None:
    for arr in (fold.train, fold.test):
        assert arr.dtype == np.int64 and arr.ndim == 2 and arr.shape[1] == 2
        assert np.all(arr[:, 0] < arr[:, 1])  # non-empty ranges
        assert np.all(arr[1:, 0] >= arr[:-1, 1])  # sorted, disjoint


def _check_purge_embargo(fold: Fold, purge: int, embargo_bars: int, lo: int, hi: int) -> None:
    train = _bars(fold.train)
    test = _bars(fold.test)
    assert train.size > 0
    assert train.min() >= lo and train.max() < hi
    assert np.intersect1d(train, test).size == 0
    after = max(purge, embargo_bars)
    for s, e in fold.test:
        assert not np.any((train >= s - purge) & (train < s)), "training bar inside purge"
        assert not np.any((train >= e) & (train < e + after)), "training bar inside embargo"


wf_args = st.fixed_dictionaries(
    {
        "start": st.integers(0, 50),
        "n_folds": st.integers(1, 8),
        "extra": st.integers(0, 400),
        "purge": st.integers(0, 20),
        "embargo": st.floats(0.0, 0.2, allow_nan=False),
        "anchored": st.booleans(),
        "train_min": st.none() | st.integers(1, 100),
    }
)


@SETTINGS
@given(wf_args)
def test_walk_forward_properties(a):
    start, n_folds, purge, anchored = a["start"], a["n_folds"], a["purge"], a["anchored"]
    # the initial training block must outlast the purge
    train_min = None if a["train_min"] is None else purge + a["train_min"]
    init = train_min if train_min is not None else 1
    # enough bars so that every fold keeps training bars after the purge
    n_bars = start + init + n_folds + purge + (purge + 1) * (n_folds + 1) + a["extra"]
    total = n_bars - start
    folds = purged_walk_forward(
        n_bars,
        n_folds,
        anchored=anchored,
        train_min=train_min,
        purge=purge,
        embargo=a["embargo"],
        start=start,
    )
    assert len(folds) == n_folds
    first_test = start + (total // (n_folds + 1) if train_min is None else train_min)
    tests = np.array([f.test[0] for f in folds])
    assert all(f.test.shape == (1, 2) for f in folds)
    # cover [first_test, n_bars) exactly once, moving forward in time
    assert tests[0, 0] == first_test and tests[-1, 1] == n_bars
    assert np.array_equal(tests[1:, 0], tests[:-1, 1])
    assert np.all(np.diff(tests[:, 0]) > 0)
    emb = math.ceil(a["embargo"] * total)
    for f in folds:
        _check_shape(f)
        _check_purge_embargo(f, purge, emb, start, n_bars)
        assert f.train.shape == (1, 2)
        assert f.train[0, 1] == f.test[0, 0] - purge  # only the purge is dropped
        if anchored:
            assert f.train[0, 0] == start
        else:
            window = train_min if train_min is not None else first_test - start
            assert f.train[0, 1] - f.train[0, 0] == min(window, f.train[0, 1] - start)


cpcv_args = st.fixed_dictionaries(
    {
        "start": st.integers(0, 50),
        "n_groups": st.integers(2, 7),
        "k_frac": st.floats(0.0, 1.0),
        "extra": st.integers(0, 300),
        "purge": st.integers(0, 10),
        "embargo": st.floats(0.0, 0.05, allow_nan=False),
    }
)


@SETTINGS
@given(cpcv_args)
def test_cpcv_properties(a):
    start, n_groups, purge, embargo = a["start"], a["n_groups"], a["purge"], a["embargo"]
    k = 1 + int(a["k_frac"] * (n_groups - 2))
    n_bars = start + n_groups * (2 * purge + 2) + a["extra"]
    total = n_bars - start
    emb = math.ceil(embargo * total)
    if emb >= total // n_groups:  # embargo could swallow a whole training group
        n_bars += n_groups * emb
        total = n_bars - start
        emb = math.ceil(embargo * total)
    folds = cpcv(n_bars, n_groups, k, purge=purge, embargo=embargo, start=start)
    assert len(folds) == math.comb(n_groups, k)
    group_starts = np.array(sorted({int(s) for f in folds for s in f.test[:, 0]}))
    assert len(group_starts) == n_groups and group_starts[0] == start
    counts = np.zeros(n_groups, dtype=int)
    for f in folds:
        _check_shape(f)
        assert f.test.shape == (k, 2)
        _check_purge_embargo(f, purge, emb, start, n_bars)
        # every non-test bar outside the purge/embargo zones is training
        keep = np.ones(n_bars, dtype=bool)
        keep[:start] = False
        for s, e in f.test:
            keep[max(start, s - purge) : e + max(purge, emb)] = False
        assert np.array_equal(_bars(f.train), np.flatnonzero(keep))
        counts[np.searchsorted(group_starts, f.test[:, 0])] += 1
    assert np.all(counts == math.comb(n_groups - 1, k - 1))
    # the groups tile [start, n_bars)
    all_tests = np.unique(np.concatenate([_bars(f.test) for f in folds]))
    assert np.array_equal(all_tests, np.arange(start, n_bars))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n - 1))))
def test_cpcv_paths(nk):
    n_groups, k = nk
    paths = cpcv_paths(n_groups, k)
    assert n_paths(n_groups, k) * n_groups == math.comb(n_groups, k) * k
    assert paths.shape == (n_paths(n_groups, k), n_groups)
    assert paths.dtype == np.int64
    folds = cpcv(10 * n_groups, n_groups, k)
    group_of = {int(s): g for g, s in enumerate(range(0, 10 * n_groups, 10))}
    used = set()
    for p in range(paths.shape[0]):
        for g in range(n_groups):
            j = int(paths[p, g])
            assert g in {group_of[int(s)] for s in folds[j].test[:, 0]}
            used.add((j, g))
    # every (split, test group) pair appears exactly once across the paths
    assert len(used) == paths.size == math.comb(n_groups, k) * k


@pytest.mark.parametrize(
    "call",
    [
        lambda: purged_walk_forward(3, 3),  # too few bars
        lambda: purged_walk_forward(100, 0),
        lambda: purged_walk_forward(100, 4, purge=-1),
        lambda: purged_walk_forward(100, 4, embargo=0.5),
        lambda: purged_walk_forward(100, 4, embargo=-0.1),
        lambda: purged_walk_forward(100, 4, purge=20),  # first block purged away
        lambda: purged_walk_forward(100, 4, train_min=98),
        lambda: purged_walk_forward(100, 4, start=100),
        lambda: cpcv(100, 5, 5),  # k >= N
        lambda: cpcv(100, 5, 0),
        lambda: cpcv(4, 5, 2),  # too few bars
        lambda: cpcv(100, 5, 2, purge=-1),
        lambda: cpcv(100, 5, 2, embargo=0.6),
        lambda: cpcv(10, 2, 1, purge=5),  # nothing left to train on
        lambda: n_paths(4, 4),
        lambda: cpcv_paths(1, 1),
    ],
)
def test_invalid_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_known_example():
    folds = purged_walk_forward(100, 4, purge=2, embargo=0.0)
    assert [f.test.tolist() for f in folds] == [[[20, 40]], [[40, 60]], [[60, 80]], [[80, 100]]]
    assert folds[1].train.tolist() == [[0, 38]]
    rolling = purged_walk_forward(100, 4, anchored=False, purge=2)
    assert rolling[2].train.tolist() == [[38, 58]]
    splits = cpcv(60, 6, 2, purge=1, embargo=0.05)  # embargo = 3 bars
    assert len(splits) == 15 and n_paths(6, 2) == 5
    assert splits[0].test.tolist() == [[0, 10], [10, 20]]
    assert splits[0].train.tolist() == [[23, 60]]
    assert splits[6].test.tolist() == [[10, 20], [30, 40]]  # combo (1, 3)
    assert splits[6].train.tolist() == [[0, 9], [23, 29], [43, 60]]
    assert cpcv_paths(3, 2).tolist() == [[0, 0, 1], [1, 2, 2]]
