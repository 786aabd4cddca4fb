"""Rule bitmasks against a plain per-bar evaluation, and the run-wide mask cache: bounded,
reused, and never changing a result."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_bars
from hypothesis import given, settings
from hypothesis import strategies as st
from test_simulator import META, tables_for

from fitness.compile import compile_genomes
from fitness.masks import MaskCache
from fitness.rules_nb import cond_mask, gate_mask
from fitness.simulator import evaluate_trials
from genome.ops import random_genome


def plain_cond(F, lhs, rhs, thr, cmp, t) -> bool:
    y = F[rhs] if rhs >= 0 else np.full(F.shape[1], thr)
    x = F[lhs]
    if cmp == 0:
        return bool(x[t] > y[t])
    if cmp == 1:
        return bool(x[t] < y[t])
    if t == 0:
        return False
    if cmp == 2:
        return bool(x[t] > y[t] and x[t - 1] <= y[t - 1])
    return bool(x[t] < y[t] and x[t - 1] >= y[t - 1])


def unpack(words: np.ndarray, n: int) -> np.ndarray:
    return ((words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).astype(bool).ravel()[:n]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 10_000), cmp=st.integers(0, 3),
       use_rhs=st.booleans(), thr=st.floats(-1.0, 1.0), nan_frac=st.floats(0.0, 0.3))
def test_condition_masks_equal_a_plain_evaluation(n, seed, cmp, use_rhs, thr, nan_frac):
    rng = np.random.default_rng(seed)
    F = rng.normal(0, 1, (2, n)).round(1)  # rounding makes ties, where <= and < differ
    F[rng.random((2, n)) < nan_frac] = np.nan
    out = np.zeros((n + 63) // 64, np.uint64)
    cond_mask(F, 0, 1 if use_rhs else -1, thr, cmp, out)
    want = [plain_cond(F, 0, 1 if use_rhs else -1, thr, cmp, t) for t in range(n)]
    np.testing.assert_array_equal(unpack(out, n), want)
    if n % 64:  # bits past the table's end stay clear
        assert int(out[-1]) >> (n % 64) == 0


def test_gate_masks_equal_the_session_rule():
    hour = np.arange(24 * 9) % 24
    weekday = (np.arange(24 * 9) // 24) % 7
    for start, end, days in [(0, 0, 127), (8, 17, 31), (22, 6, 127), (5, 5, 0b1000001)]:
        out = np.zeros((hour.size + 63) // 64, np.uint64)
        gate_mask(hour, weekday, start, end, days, out)
        sess = (np.ones(hour.size, bool) if start == end else
                (hour >= start) & (hour < end) if start < end else (hour >= start) | (hour < end))
        want = sess & (((days >> weekday) & 1) == 1)
        np.testing.assert_array_equal(unpack(out, hour.size), want)


@pytest.fixture(scope="module")
def synth():
    bars = random_bars(700, 5)
    return bars, tables_for(bars)


def population(seed: int, n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_genome(rng, p_slot_on=0.6) for _ in range(n)])


def test_cache_reuses_masks_and_never_changes_a_result(synth):
    bars, tables = synth
    seg = np.array([[50, 400], [400, 700]])
    g = population(1)
    fresh = evaluate_trials(g, tables, bars, seg, META, n_samples=40)
    cache = MaskCache()
    first = evaluate_trials(g, tables, bars, seg, META, n_samples=40, cache=cache)
    built = cache.built
    assert built == len(cache) > 0
    again = evaluate_trials(g, tables, bars, seg, META, n_samples=40, cache=cache)
    assert cache.built == built  # every condition and gate came from the cache
    for got in (first, again):
        np.testing.assert_array_equal(got[0], fresh[0])
        np.testing.assert_array_equal(got[1], fresh[1])


def test_cache_stays_within_its_budget_and_evicts_deterministically(synth):
    bars, tables = synth
    seg = np.array([[0, 700]])
    row_bytes = 8 * ((700 + 63) // 64)
    small = MaskCache(max_bytes=200 * row_bytes)
    other = MaskCache(max_bytes=200 * row_bytes)
    for seed in range(6):  # each population needs about 130 masks: older ones are evicted
        g = population(seed)
        want = evaluate_trials(g, tables, bars, seg, META)
        np.testing.assert_array_equal(evaluate_trials(g, tables, bars, seg, META, cache=small)[0],
                                      want[0])
        evaluate_trials(g, tables, bars, seg, META, cache=other)
        assert small.nbytes <= small.max_bytes
        assert len(small) <= 200
    assert small.built == other.built and len(small) == len(other)
    # a batch needing more than the whole budget is built outside the cache, still correct
    tiny = MaskCache(max_bytes=3 * row_bytes)
    g = population(9)
    np.testing.assert_array_equal(evaluate_trials(g, tables, bars, seg, META, cache=tiny)[0],
                                  evaluate_trials(g, tables, bars, seg, META)[0])
    assert tiny.nbytes <= tiny.max_bytes


def test_a_new_table_starts_an_empty_cache(synth):
    _, tables = synth
    cache = MaskCache()
    comp = compile_genomes(population(2, 4), tables.features)
    cache.masks(comp, tables.features.values, tables.hour, tables.weekday)
    n = len(cache)
    other = tables.features.values.copy()
    rm = cache.masks(comp, other, tables.hour, tables.weekday)
    assert len(cache) == n and cache.built == 2 * n
    assert rm.pool.shape[1] == (other.shape[1] + 63) // 64


def test_bad_budget_and_mismatched_calendar_are_refused(synth):
    _, tables = synth
    with pytest.raises(ValueError, match="max_bytes"):
        MaskCache(0)
    comp = compile_genomes(population(3, 2), tables.features)
    with pytest.raises(ValueError, match="hour/weekday"):
        MaskCache().masks(comp, tables.features.values, tables.hour[:-1], tables.weekday)
