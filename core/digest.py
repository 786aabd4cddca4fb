"""sha256 of the leading columns of 2-D float tables: the identity of a computed table.

Tables over bars (features, volatility) are causal, so a table built on a longer history holds
the shorter one's table in its first columns; hashing a prefix lets a judge compare the table a
run was evolved on with the one it rebuilds from the full history, bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np


def prefix_sha256(*tables: np.ndarray, n_cols: int | None = None, tag: str = "") -> str:
    """sha256 over ``tag``, each table's shape (rows, n_cols) and its first ``n_cols`` columns
    as little-endian float64, row by row (no copy of a C-contiguous table)."""
    h = hashlib.sha256(tag.encode())
    for a in tables:
        a = np.atleast_2d(a)
        n = a.shape[1] if n_cols is None else int(n_cols)
        if not 0 <= n <= a.shape[1]:
            raise ValueError(f"n_cols {n} outside [0, {a.shape[1]}]")
        h.update(np.array([a.shape[0], n], dtype="<i8").tobytes())
        for row in a:
            h.update(np.ascontiguousarray(row[:n], dtype="<f8").data)
    return h.hexdigest()


def tables_digests(tables, n_bars: int | None = None) -> dict[str, str]:
    """``vol_sha256`` and ``features_sha256`` of a ``fitness.simulator.Tables`` over its first
    ``n_bars`` bars: what the evolution saves with a run and the gates recompute to compare.

    The tables are computed from the bars, but not by the bars alone: arch's version, the BLAS
    library, the fit settings and the CPU can change them, so the bars' sha256 is not enough.
    """
    f = tables.features
    return {"vol_sha256": tables.vol.digest(n_bars),
            "features_sha256": prefix_sha256(f.values, n_cols=n_bars,
                                             tag="features-v1 " + ",".join(f.names))}
