"""``emp bench gates`` measures what it claims: both paths give the same answers."""

from __future__ import annotations

from benchmarks.bench_gates import _audit, _pbo


def test_pbo_bench_compares_equal_results():
    out = _pbo(160, 6, 1)
    assert out["logits_equal"] and out["ours_s"] > 0 and out["plain_s"] > 0


def test_audit_bench_runs_both_ways():
    out = _audit(genomes=2, cuts=1, window=250, refit_every=1000)
    assert out["cuts"] == 1 and out["ours_s"] > 0 and out["plain_s"] > 0
