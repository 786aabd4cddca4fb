"""Gates benchmark: the two costs of ``emp gates`` that grow with the data, each against the
plain way of computing the same thing, with the results checked equal in the same run.

* PBO by CSCV (C(16, 8) = 12,870 splits): block-moment Sharpe ratios against concatenating the
  blocks of every split (``metric=`` a plain callable takes that path).
* The look-ahead audit on the bundled S&P 500 (5 cuts, 20 genomes): GARCH fits memoised by their
  exact inputs against refitting every truncated history from scratch.
"""

from __future__ import annotations

import numpy as np

import market.volatility as vol
from benchmarks.bench_kernel import SP500_META, sp500_bars
from benchmarks.timing import best_of
from fitness.simulator import build_tables
from gates.lookahead import audit_lookahead, cut_points
from gates.stats import pbo_cscv, sharpe_of_block
from genome.ops import random_genome
from market.config import VolatilityConfig


def _pbo(t: int, n: int, repeat: int) -> dict:
    r = np.random.default_rng(t).standard_t(4, (t, n)) * 0.01
    fast_s = best_of(lambda: pbo_cscv(r, 16), repeat)
    plain_s = best_of(lambda: pbo_cscv(r, 16, metric=lambda x: sharpe_of_block(x)), 1)
    fast, plain = pbo_cscv(r, 16), pbo_cscv(r, 16, metric=lambda x: sharpe_of_block(x))
    return {"bars": t, "strategies": n, "ours_s": round(fast_s, 3), "plain_s": round(plain_s, 3),
            "speedup": round(plain_s / fast_s, 1),
            "logits_equal": bool(np.array_equal(fast[1], plain[1]))}


def _audit(genomes: int, cuts: int, window: int, refit_every: int) -> dict:
    bars = sp500_bars()
    vc = VolatilityConfig(window=window, refit_every=refit_every)
    rng = np.random.default_rng(4)
    g = np.stack([random_genome(rng) for _ in range(genomes)])
    points = cut_points(bars.n_bars, 250, cuts, 0)

    def plain_build(b, meta, **kw):  # type: ignore[no-untyped-def]
        vol._FIT_MEMO.clear()  # every truncated history refits every window
        return build_tables(b, meta, **kw)

    def timed(build) -> float:  # type: ignore[no-untyped-def]
        vol._FIT_MEMO.clear()
        full = build_tables(bars, SP500_META, vol=vc)  # as in `emp gates`: built before
        return best_of(lambda: audit_lookahead(g, bars, SP500_META, start=250, cuts=points,
                                               vol=vc, full_tables=full, build=build), 1)

    ours, plain = timed(build_tables), timed(plain_build)
    return {"bars": bars.n_bars, "genomes": genomes, "cuts": cuts, "window": window,
            "refit_every": refit_every, "ours_s": round(ours, 2), "plain_s": round(plain, 2),
            "speedup": round(plain / ours, 1)}


def run(repeat: int = 3) -> dict:
    return {"bench": "gates",
            "pbo_quickstart": _pbo(944, 64, repeat), "pbo_large": _pbo(3150, 100, repeat),
            "audit_default_vol": _audit(20, 5, 500, 21),
            "audit_quickstart_vol": _audit(20, 5, 500, 63)}
