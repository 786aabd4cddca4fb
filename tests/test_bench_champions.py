"""`emp bench champions` on a small series: both paths reach the same first decision, and the
figures it prints are there."""

from __future__ import annotations

from benchmarks.bench_champions import hourly_bars, measure
from market.config import VolatilityConfig


def test_the_bundle_and_the_replay_decide_alike():
    # short GARCH windows keep the replay (every refit from scratch) to a few seconds
    row = measure(hourly_bars(1_200), repeat=1, vol=VolatilityConfig(window=120, refit_every=97))
    assert row["parity"] is True
    assert row["bundle_bytes"] > 1_000 and row["ready_from_bundle_ms"] > 0
    assert row["ready_from_replay_ms"] > 0 and row["speedup"] > 0
