"""Metrics benchmark: ns per bar of the dense ``fill_metrics`` against ``fill_metrics_sparse`` on
the same segment, by exposure (share of bars with a nonzero return, drawn at random: the most
flat stretches for that share). One thread; dense and sparse interleaved, best of ``repeat``.

    python -m benchmarks.bench_metrics [--repeat 25]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fitness.metrics_nb import N_METRICS, SPARSE_SCRATCH, fill_metrics_buf, fill_metrics_sparse

TRADES = (10, 5, 1.0, -1.0, 3.0)  # n_trades, n_wins, gross_win, gross_loss, turnover


def measure(n: int, exposure: float, repeat: int, seed: int = 0) -> dict[str, float]:
    """Best-of-``repeat`` ns per bar for one segment of n bars, dense and sparse."""
    rng = np.random.default_rng(seed)
    at = np.flatnonzero(rng.random(n) < exposure).astype(np.int64)
    k = at.size
    r = rng.normal(2e-4, 0.01, k)
    dense = np.zeros(n)
    dense[at] = r
    out = np.zeros(N_METRICS)
    scratch = np.empty(max(n, SPARSE_SCRATCH * k + 64))
    calls = max(1, 200_000 // n)

    def run_dense() -> None:
        fill_metrics_buf(out, dense, scratch, *TRADES, k, 252.0)

    def run_sparse() -> None:
        fill_metrics_sparse(out, r, at, k, n, scratch, *TRADES, k, 252.0)

    best = {"dense": np.inf, "sparse": np.inf}
    for _ in range(repeat):
        for name, fn in (("dense", run_dense), ("sparse", run_sparse)):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return {"n": n, "exposure": exposure, "k": k,
            "dense_ns_bar": best["dense"] / n * 1e9, "sparse_ns_bar": best["sparse"] / n * 1e9,
            "sparse_ns_nonzero": best["sparse"] / max(k, 1) * 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=25, help="timed repeats (best is reported)")
    args = ap.parse_args()
    print(f"{'n':>9} {'exposure':>8} {'dense':>7} {'sparse':>7}  ns/bar   sparse ns/nonzero")
    for n in (5_000, 1_000_000):
        for exposure in (1.0, 0.5, 0.1, 0.01):
            m = measure(n, exposure, args.repeat)
            print(f"{n:>9} {exposure:>8.0%} {m['dense_ns_bar']:>7.2f} {m['sparse_ns_bar']:>7.2f}"
                  f"          {m['sparse_ns_nonzero']:>7.2f}")


if __name__ == "__main__":
    main()
