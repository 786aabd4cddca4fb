"""Effective number of independent trials: ONC-style clustering of the trials' return sketches.

The deflated Sharpe ratio needs N, the number of *independent* trials. A GA evaluates thousands of
near-copies, so the raw count overstates N. Following López de Prado & Lewis (2019), "Detection of
false investment strategies using unsupervised learning methods" (the ONC algorithm), we cluster
the trials by the correlation of their returns and take N = the number of clusters, with
``cluster_returns`` giving one inverse-variance aggregate series per cluster (for the variance of
the clusters' Sharpe ratios).

What ONC prescribes, and what this module does instead (and why)
-----------------------------------------------------------------
* **Distance.** ONC uses the correlation distance d = sqrt((1 - ρ)/2). Every usable row is
  z-scored and scaled to unit length, so the dot product of two rows *is* their correlation and
  their squared Euclidean distance is 2(1 - ρ) = 8·d². Euclidean distance on these rows is
  therefore 2·d, and silhouettes (a ratio) are identical on either scale. K-means on the unit rows
  clusters by correlation; we use its spherical form (centroids renormalised, assignment by
  highest correlation with the cluster's mean series), so every label, in the fit or assigned
  afterwards, means "most correlated with this cluster's mean series".
* **Choosing k.** ONC runs k-means ``n_init`` times for every k in 2..max_k and keeps the
  partition with the best quality q = mean(silhouette) / std(silhouette). That is
  n_init·(max_k - 1) k-means fits plus as many O(m²) silhouette passes: roughly 15 s for 2,000
  rows and k up to 100 on one core, too slow for every generation. Instead we build Ward's
  hierarchy once (Ward merges to minimise the within-cluster sum of squares, the k-means
  objective, so its cut at k is a near-optimal k-means partition) and score the cut at *every* k
  in 2..max_k exactly, in O(m² + m·Σk) via prefix sums over the dendrogram order. For the
  ``_N_CANDIDATES`` best k we then run real k-means: one run seeded by the Ward cut plus
  ``n_init - 1`` seeded k-means++ runs, and keep the partition (refined or not) with the highest
  quality, as ONC does.
* **max_k** defaults to min(n distinct rows - 1, 100): ONC's own default is n - 1, and a
  sqrt(n) cap proved harmful: 30 families of 3 to 15 near-copies (250 rows, cap 16) could not be
  seen, and the best capped cut was sometimes k = 2, which the second pass (below) never revisits.
  The cap of 100 bounds the cost; more than 100 families in the fitted rows are undercounted.
* **Second pass.** As in ONC: per-cluster quality (mean/std of the members' silhouettes); if more
  than one cluster is below the mean, their rows are re-clustered recursively and merged back with
  the others. The published code accepts the result when its mean cluster quality beats the mean
  of the *re-clustered* clusters only, which leans toward accepting; we accept only when the mean
  cluster quality over *all* clusters improves.
* **k = 1.** A silhouette needs a second cluster, so ONC never returns k = 1. We score k = 1 with
  an explicit "other cluster": an independent series (ρ = 0, d = sqrt(1/2)), the natural
  alternative to being one of a set of copies. Each row gets s1 = (d0 - a)/max(a, d0) with a its
  mean distance to all other rows, and k = 1 is chosen when mean(s1) exceeds both the mean
  silhouette of the best k ≥ 2 partition and a floor: the s1 of rows that all correlate at
  2/sqrt(n_blocks), two standard errors of one sample correlation (1 - sqrt(1 - ρ) = 0.065 for
  256 blocks). Means are compared, not mean/std, because for k = 1 the spread of s1 mostly
  reflects cluster sizes, not fit. This gives k = 1 for one correlated family (ρ ≈ 0.5:
  s1 ≈ 0.29 while any split of it has silhouettes near 0) and, importantly, *not* for unrelated
  rows (ρ ≈ 0: s1 ≈ 0, below the floor), where collapsing to one trial would be the
  anti-conservative mistake. Between two groups that correlate with each other about half as much
  as within themselves the rule is a toss-up, as it should be. Fewer than three distinct usable
  rows give k = 1.
* **Limitation.** On rows with no correlation structure at all (independent noise) the silhouette
  criterion has nothing to find and k is arbitrary: often large, but ~2 for noise with more rows
  than blocks. GA trials share market exposure, so this is rare in practice, but a small k with a
  low ``quality`` deserves suspicion.
* **Flat rows** (all zero or constant: no correlation is defined) are excluded and counted.
* **Duplicates.** Rows with the same z-scored shape (exact copies, or copies at another position
  size) are collapsed before fitting and fitted unweighted: a re-found behaviour adds no
  independent information, and this keeps a common behaviour from crowding rarer ones out of the
  subsample. Copies share their representative's label.
* **Scale.** With more than ``max_rows`` distinct rows the clustering is fitted on a seeded
  subsample of ``max_rows`` of them; every other row joins the cluster whose mean series it is
  most correlated with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.cluster.hierarchy import linkage

__all__ = ["TrialClusters", "cluster_returns", "cluster_trials"]

# A row is flat when its range is below this fraction of its largest absolute value.
_FLAT_RTOL = 1e-12
# Rows are collapsed as duplicates when their unit-length z-scores agree to this many decimals.
_DEDUP_DECIMALS = 10
# Floor on the silhouettes' standard deviation in a quality score, so equal silhouettes give a
# large finite score rather than a division by zero.
_STD_FLOOR = 1e-9
# How many of the best Ward cuts (by quality) are refined by k-means.
_N_CANDIDATES = 3
_MAX_ITER = 100
# Euclidean distance between two unit rows with ρ = 0: sqrt(2 - 2·0) (= 2·sqrt(1/2)).
_E_INDEPENDENT = math.sqrt(2.0)


@dataclass(frozen=True)
class TrialClusters:
    """The clustering of a set of trials; ``n_clusters`` is the DSR's effective trial count."""

    labels: np.ndarray  # int64 [n_trials]; cluster id 0..k-1, or -1 for flat/constant rows
    n_clusters: int  # k, the effective number of independent trials (0 when every row is flat)
    quality: float  # mean/std of the final silhouettes (k = 1: of s1); nan if < 2 distinct rows
    n_flat: int  # rows excluded as flat/constant
    n_clustered_on: int  # distinct rows used to fit (after de-duplication and subsampling)


def cluster_trials(
    sketches: np.ndarray,
    *,
    max_k: int | None = None,
    n_init: int = 10,
    seed: int = 0,
    max_rows: int = 2000,
) -> TrialClusters:
    """Cluster trials by return correlation (ONC) to count the effectively independent ones.

    ``sketches`` is [n_trials, n_blocks]: each row a trial's returns summed into equal blocks.
    ``max_k`` bounds the clusters tried (default min(n distinct rows - 1, 100); see the module
    docstring); ``n_init`` is the number of k-means runs per candidate k; ``max_rows`` caps the
    rows the clustering is fitted on, for speed. Flat rows get label -1. The result is a
    deterministic function of the input and ``seed``.
    """
    x = _check_sketches(sketches)
    if max_k is not None and (isinstance(max_k, bool) or int(max_k) != max_k or max_k < 1):
        raise ValueError(f"max_k must be a positive integer or None, got {max_k!r}")
    if isinstance(n_init, bool) or int(n_init) != n_init or n_init < 1:
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
    if isinstance(max_rows, bool) or int(max_rows) != max_rows or max_rows < 2:
        raise ValueError(f"max_rows must be an integer >= 2, got {max_rows!r}")

    n = x.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    units, usable = _unit_rows(x)
    n_flat = int(n - usable.sum())
    if units.shape[0] == 0:
        return TrialClusters(labels, 0, math.nan, n_flat, 0)

    # Collapse rows with the same shape; distinct rows keep their order of first appearance and
    # `inverse` maps each usable row to its distinct row.
    rounded = np.round(units, _DEDUP_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(rounded.shape[0], dtype=np.int64)
    for i, row in enumerate(rounded):
        j = seen.setdefault(row.tobytes(), len(first))
        if j == len(first):
            first.append(i)
        inverse[i] = j
    distinct = units[np.asarray(first, dtype=np.int64)]
    n_distinct = distinct.shape[0]

    rng = np.random.default_rng(seed)
    if n_distinct > max_rows:
        fit_idx = np.sort(rng.choice(n_distinct, size=max_rows, replace=False))
    else:
        fit_idx = np.arange(n_distinct)
    m = fit_idx.size
    if max_k is None:
        max_k = min(n_distinct - 1, 100)
    max_k = min(int(max_k), m - 1)

    fit_labels = np.zeros(m, dtype=np.int64)
    quality = math.nan
    if m >= 2:
        fit = _FitSet(distinct[fit_idx], rng, int(n_init))
        sil = fit.one_cluster_silhouettes()
        if max_k >= 2:
            onc_labels, onc_sil = fit.onc_top(np.arange(m), max_k)
            if sil.mean() <= max(onc_sil.mean(), _one_cluster_floor(x.shape[1])):
                fit_labels, sil = onc_labels, onc_sil
        quality = _quality(sil)

    k = int(fit_labels.max()) + 1
    if m < n_distinct:
        centres = _centres(distinct[fit_idx], fit_labels, k)
        distinct_labels = np.argmax(distinct @ centres.T, axis=1)
        distinct_labels[fit_idx] = fit_labels
    else:
        distinct_labels = fit_labels
    usable_labels = _canonical(distinct_labels[inverse], k)
    labels[usable] = usable_labels
    return TrialClusters(labels, k, float(quality), n_flat, int(m))


def cluster_returns(sketches: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """[n_clusters, n_blocks] one aggregate return series per cluster: the members weighted by
    inverse variance (the minimum-variance allocation ignoring correlations), as in the paper.

    Rows labelled -1 are ignored. Weights within a cluster sum to one, so each series is a
    fully-invested portfolio of its members; the variance is taken over blocks (ddof = 0).
    """
    x = _check_sketches(sketches)
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 0:
        raise ValueError(f"n_clusters must be a non-negative integer, got {n_clusters!r}")
    lab = np.asarray(labels)
    if lab.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < -1 or lab.max() >= n_clusters):
        raise ValueError(f"labels must lie in -1..{n_clusters - 1}")
    members = np.flatnonzero(lab >= 0)
    counts = np.bincount(lab[members], minlength=n_clusters)
    if np.any(counts == 0):
        raise ValueError(f"clusters without members: {np.flatnonzero(counts == 0).tolist()}")
    var = x[members].var(axis=1)
    if np.any(var <= 0.0):
        raise ValueError("a clustered row has zero variance; flat rows must be labelled -1")
    inv = 1.0 / var
    w = inv / np.bincount(lab[members], weights=inv, minlength=n_clusters)[lab[members]]
    weights = sparse.csr_matrix((w, (lab[members], members)), shape=(n_clusters, x.shape[0]))
    return np.asarray(weights @ x, dtype=np.float64).reshape(n_clusters, x.shape[1])


# --------------------------------------------------------------------------------------------
# internals


def _check_sketches(sketches: np.ndarray) -> np.ndarray:
    try:
        x = np.asarray(sketches, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sketches must be a numeric array: {exc}") from exc
    if x.ndim != 2:
        raise ValueError(f"sketches must be 2-D [n_trials, n_blocks], got shape {x.shape}")
    if x.shape[1] < 3:
        raise ValueError(f"sketches need at least 3 blocks per row, got {x.shape[1]}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"sketches contain non-finite values in rows {bad[:10].tolist()}")
    return x


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored rows scaled to unit length (dot product = correlation), and the usable mask.

    Rows are first divided by their largest absolute value, so tiny or huge magnitudes neither
    underflow nor overflow; a row is flat when its range is then at most ``_FLAT_RTOL``.
    """
    scale = np.abs(x).max(axis=1, initial=0.0)
    usable = scale > 0.0
    y = x[usable] / scale[usable, None]
    varies = np.ptp(y, axis=1) > _FLAT_RTOL
    usable[np.flatnonzero(usable)[~varies]] = False
    z = y[varies] - y[varies].mean(axis=1, keepdims=True)
    return z / np.linalg.norm(z, axis=1)[:, None], usable


def _one_cluster_floor(n_blocks: int) -> float:
    """Least mean k = 1 silhouette that can mean "one family": rows correlating at 2/sqrt(B).

    2/sqrt(B) is two standard errors of one sample correlation over B blocks; s1 of a row that
    correlates at ρ with every other row is 1 - sqrt(1 - ρ).
    """
    rho = 2.0 / math.sqrt(n_blocks)
    return 1.0 - math.sqrt(1.0 - rho) if rho < 1.0 else 1.0


def _quality(s: np.ndarray) -> float:
    """ONC's quality score: mean over std of the silhouettes."""
    return float(s.mean() / max(float(s.std()), _STD_FLOOR))


def _cluster_qualities(s: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=k)
    mean = np.bincount(labels, weights=s, minlength=k) / counts
    var = np.bincount(labels, weights=s * s, minlength=k) / counts - mean**2
    return mean / np.maximum(np.sqrt(np.maximum(var, 0.0)), _STD_FLOOR)


def _silhouettes_from_sums(sums: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Silhouettes from sums[i, c] = Σ distances from row i to the members of cluster c (k ≥ 2).

    Members of singleton clusters get 0, as in the usual convention.
    """
    rows = np.arange(labels.size)
    n_own = counts[labels]
    a = sums[rows, labels] / np.maximum(n_own - 1, 1)
    mean_to = sums / counts
    mean_to[rows, labels] = np.inf
    b = mean_to.min(axis=1)
    denom = np.maximum(a, b)
    s = (b - a) / np.where(denom > 0.0, denom, 1.0)
    s[(n_own < 2) | (denom <= 0.0)] = 0.0
    return s


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber labels to 0..k-1 without gaps."""
    counts = np.bincount(labels)
    used = counts > 0
    if used.all():
        return labels, counts.size
    new_id = np.cumsum(used) - 1
    return new_id[labels], int(used.sum())


def _silhouettes(dist: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Silhouettes of all rows of dist under labels 0..k-1 (k ≥ 2)."""
    sums = np.asarray(_onehot_t(labels, k) @ dist).T
    return _silhouettes_from_sums(sums, labels, np.bincount(labels, minlength=k))


def _canonical(labels: np.ndarray, k: int) -> np.ndarray:
    """Renumber clusters in order of their first row, so ids do not depend on internals."""
    first = np.full(k, labels.size, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(labels.size))
    new_id = np.empty(k, dtype=np.int64)
    new_id[np.argsort(first, kind="stable")] = np.arange(k)
    return new_id[labels]


def _onehot_t(labels: np.ndarray, k: int, dtype: type = np.float64) -> sparse.csr_matrix:
    """[k, m] membership matrix: (this @ values) sums values over each cluster's rows."""
    m = labels.size
    return sparse.csr_matrix((np.ones(m, dtype=dtype), (labels, np.arange(m))), shape=(k, m))


def _centres(units: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Unit-length mean series of each cluster (the spherical k-means centroids)."""
    sums = np.asarray(_onehot_t(labels, k, units.dtype) @ units)
    norm = np.linalg.norm(sums, axis=1, keepdims=True)
    return sums / np.where(norm > 0.0, norm, 1.0)


class _FitSet:
    """The rows the clustering is fitted on, with their correlation and distance matrices."""

    def __init__(self, units: np.ndarray, rng: np.random.Generator, n_init: int) -> None:
        self.units = units
        # k-means runs in float32 (twice the GEMM speed); distances and scores stay float64.
        self.units32 = units.astype(np.float32)
        self.rng = rng
        self.n_init = n_init
        self.corr = units @ units.T
        # Euclidean distance between unit rows: sqrt(2 - 2ρ) = 2·d (d the correlation distance).
        self.dist = np.sqrt(np.maximum(2.0 - 2.0 * self.corr, 0.0))
        np.fill_diagonal(self.dist, 0.0)

    # ---- scoring

    def sub(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distance and correlation matrices restricted to the rows idx."""
        if idx.size == self.dist.shape[0]:
            return self.dist, self.corr
        return self.dist[np.ix_(idx, idx)], self.corr[np.ix_(idx, idx)]

    def one_cluster_silhouettes(self) -> np.ndarray:
        """Silhouettes for k = 1, taking an independent series (ρ = 0) as the other cluster."""
        m = self.dist.shape[0]
        a = self.dist.sum(axis=1) / (m - 1)
        return (_E_INDEPENDENT - a) / np.maximum(a, _E_INDEPENDENT)

    # ---- ONC

    def onc_top(self, idx: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
        """ONC with the second pass: re-cluster the clusters whose quality is below the mean."""
        labels, sil = self.onc_base(idx, max_k)
        k = int(labels.max()) + 1
        q = _cluster_qualities(sil, labels, k)
        redo = np.flatnonzero(q < q.mean())
        if redo.size <= 1:
            return labels, sil
        in_redo = np.isin(labels, redo)
        redo_idx = idx[in_redo]
        if redo_idx.size < 3:
            return labels, sil
        sub_labels, _ = self.onc_top(redo_idx, min(max_k, redo_idx.size - 1))
        keep = np.setdiff1d(np.arange(k), redo)
        new_id = np.full(k, -1, dtype=np.int64)
        new_id[keep] = np.arange(keep.size)
        new_labels = new_id[labels]
        new_labels[in_redo] = keep.size + sub_labels
        new_k = keep.size + int(sub_labels.max()) + 1
        new_sil = _silhouettes(self.sub(idx)[0], new_labels, new_k)
        if _cluster_qualities(new_sil, new_labels, new_k).mean() > q.mean():
            return new_labels, new_sil
        return labels, sil

    def onc_base(self, idx: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best partition of rows idx with 2..max_k clusters by quality (Ward cuts + k-means)."""
        dist, corr = self.sub(idx)
        cands = _ward_candidates(dist, max_k)
        units = self.units32[idx]
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        seen: set[bytes] = set()  # partitions already scored (k-means often lands on one twice)
        for q, k, ward_labels, ward_sil in cands:
            if best is None or q > best[0]:
                best = (q, ward_labels, ward_sil)
            seen.add(_canonical(ward_labels, k).tobytes())
            seeds = [_centres(units, ward_labels, k)]
            seeds += [self._kmeans_pp(units, corr, k) for _ in range(self.n_init - 1)]
            for centres in seeds:
                labels, kk = _compact(_spherical_kmeans(units, centres))
                key = _canonical(labels, kk).tobytes()
                if kk < 2 or key in seen:
                    continue
                seen.add(key)
                sil = _silhouettes(dist, labels, kk)
                qq = _quality(sil)
                if qq > best[0]:
                    best = (qq, labels, sil)
        assert best is not None
        return best[1], best[2]

    def _kmeans_pp(self, units: np.ndarray, corr: np.ndarray, k: int) -> np.ndarray:
        """k-means++ seeding (D² sampling) on rows; distances come from the correlation matrix."""
        m = units.shape[0]
        chosen = [int(self.rng.integers(m))]
        d2 = np.maximum(2.0 - 2.0 * corr[chosen[0]], 0.0)
        for _ in range(1, k):
            cum = np.cumsum(d2)
            total = cum[-1]
            if total <= 0.0:
                c = int(self.rng.integers(m))
            else:
                c = int(np.searchsorted(cum, self.rng.random() * total, side="right"))
                c = min(c, m - 1)
            chosen.append(c)
            d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * corr[c], 0.0))
        return units[chosen]


def _ward_candidates(
    dist: np.ndarray, max_k: int
) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
    """Score Ward's cut at every k in 2..max_k; return the best few (quality, k, labels, s)."""
    m = dist.shape[0]
    condensed = np.concatenate([dist[i, i + 1 :] for i in range(m - 1)])
    z = linkage(condensed, method="ward")
    left = z[:, 0].astype(np.int64)
    right = z[:, 1].astype(np.int64)
    size = np.ones(2 * m - 1, dtype=np.int64)
    size[m:] = z[:, 3].astype(np.int64)
    # Position of each node's first leaf in the dendrogram order; a node's leaves are
    # contiguous there, so distance sums to any cluster come from prefix sums.
    start = np.zeros(2 * m - 1, dtype=np.int64)
    for r in range(m - 2, -1, -1):
        node = m + r
        start[left[r]] = start[node]
        start[right[r]] = start[node] + size[left[r]]
    leaf_order = np.empty(m, dtype=np.int64)
    leaf_order[start[:m]] = np.arange(m)
    # prefix[j] = Σ over the first j leaves (dendrogram order) of their distances to every row.
    prefix = np.zeros((m + 1, m))
    np.cumsum(dist[leaf_order], axis=0, out=prefix[1:])

    labels = np.zeros(m, dtype=np.int64)
    active = [2 * m - 2]  # node ids of the current clusters; index = label
    sums_t = np.empty((max_k, m))  # sums_t[c, i] = Σ distances from row i to cluster c
    scored: list[tuple[float, int, np.ndarray, np.ndarray]] = []
    for r in range(m - 2, m - 2 - (max_k - 1), -1):  # each step splits one cluster in two
        c = active.index(m + r)
        new = len(active)
        for label, child in ((c, int(left[r])), (new, int(right[r]))):
            sums_t[label] = prefix[start[child] + size[child]] - prefix[start[child]]
        active[c] = int(left[r])
        active.append(int(right[r]))
        rs = int(right[r])
        labels[leaf_order[start[rs] : start[rs] + size[rs]]] = new
        sil = _silhouettes_from_sums(sums_t[: new + 1].T, labels, size[np.asarray(active)])
        scored.append((_quality(sil), new + 1, labels.copy(), sil))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return scored[:_N_CANDIDATES]


def _spherical_kmeans(units: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Lloyd iterations: assign each row to the most correlated centre, re-centre, repeat.

    An empty (or cancelled-out) cluster is re-seeded with the row worst served by its centre.
    """
    centres = centres.copy()
    k = centres.shape[0]
    labels = np.full(units.shape[0], -1, dtype=np.int64)
    for _ in range(_MAX_ITER):
        sims = units @ centres.T
        new = np.argmax(sims, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.asarray(_onehot_t(labels, k, units.dtype) @ units)
        norm = np.linalg.norm(sums, axis=1)
        dead = np.flatnonzero(norm <= 1e-12)
        if dead.size:
            fit = sims[np.arange(labels.size), labels]
            worst = np.argsort(fit, kind="stable")[: dead.size]
            sums[dead] = units[worst]
            norm[dead] = 1.0
            labels = labels.copy()
            labels[worst] = -1  # force another assignment pass
        centres = sums / norm[:, None]
    if labels.min() < 0:  # stopped right after a re-seed: assign once more
        labels = np.argmax(units @ centres.T, axis=1)
    return labels
