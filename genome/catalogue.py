"""Digests of what a genome's numbers mean, so a champion bundle can prove it is read by the code
that wrote it.

A genome holds indexes and unit-interval genes, not indicator settings: gene 7 = 3 means "the
fourth parameter of the grid of the primitive chosen by gene 6". ``SCHEMA_VERSION`` changes
only when the gene layout does; a new grid value, a re-ordered primitive or a new threshold range
silently changes what every saved genome trades. These digests change with any of them:

- ``schema_digest``: the gene layout (names, kinds, bounds, choices) and the schema version;
- ``catalogue_digest``: the primitive catalogue (names, grids, threshold ranges), the feature
  table's row layout, the volatility variants and the realised-variance windows.
"""

from __future__ import annotations

import hashlib
import json

from genome import schema as S
from genome.features import NAMES
from genome.primitives import PRIMITIVES
from market.volatility import GARCH_VARIANTS, RV_WINDOWS


def _sha(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode()).hexdigest()


def schema_digest() -> str:
    """sha256 of the gene schema: version, then each gene's name, kind, bounds and choices."""
    genes = [[g.name, g.kind, float(g.lo).hex(), float(g.hi).hex(), list(g.choices)]
             for g in S.GENES]
    return _sha({"schema_version": S.SCHEMA_VERSION, "genes": genes})


def catalogue_digest() -> str:
    """sha256 of the primitive catalogue and the tables a genome indexes into."""
    prims = [[p.name, [list(t) for t in p.grid], float(p.thr_lo).hex(), float(p.thr_hi).hex()]
             for p in PRIMITIVES]
    return _sha({"primitives": prims, "feature_rows": list(NAMES),
                 "garch_variants": list(GARCH_VARIANTS), "rv_windows": list(RV_WINDOWS)})
