"""Numba kernels for per-segment performance metrics: plain array functions, no pandas.

``fill_metrics`` runs inside the backtest kernel's ``prange``, once per (genome, segment), so
it is built for speed: four linear passes (three vectorised), one O(n) scratch buffer, and a
quantile by selection, never a full sort (~6 ns/bar on one core of a 2.5 GHz Xeon).
``fill_metrics_buf`` is the same with a caller-owned scratch buffer. ``fill_metrics_sparse``
gives the same metrics from returns in sparse form (the kernel skips flat bars), in O(k) for k
nonzero bars: see "Sparse form" below. The metric slots are the
``M_*`` integers below (re-exported with their names by ``fitness.metrics``); they live here
so that numba's on-disk cache, keyed on this file, is invalidated when the layout changes.

Inputs: ``r`` = per-bar net simple returns of equity for one segment, n = len(r), equity
E_0 = 1 and E_t = prod_{s<=t}(1 + r_s); ``bpy`` = bars per year (> 0).

Definitions (all returned as float64):

- total_return   = E_n - 1 (computed as expm1(sum log1p r)), capped at RETURN_CAP = 1e6.
- annual_return  = (1 + total)^(bpy/n) - 1, same cap (exponent clipped, so never inf).
- volatility     = std(r, ddof=1) * sqrt(bpy).
- sharpe         = mean(r) / std(r, ddof=1) * sqrt(bpy).
- sortino        = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(bpy).
- max_drawdown   = max_t (1 - E_t / max_{s<=t} E_s), t = 0..n, E_0 = 1 included; in [0, 1].
- calmar         = annual_return / max_drawdown.
- profit_factor  = gross_win / |gross_loss|, capped at PF_CAP = 100; PF_CAP if there is no
  loss but some win; 0 if n_trades == 0 or both sums are 0.
- win_rate       = n_wins / n_trades.
- trade_count    = n_trades.
- trades_per_year = n_trades * bpy / n.
- turnover       = turnover * bpy / n (annualised sum of |traded notional| / equity).
- exposure       = bars_in_market / n.
- stability      = R^2 of the OLS fit of log E_t on t, t = 0..n (n + 1 points, E_0 = 1).
- var95          = -q, q = 5 % quantile of r with numpy's default linear interpolation.
- es95           = -mean(r[r <= q]).
- skewness       = m3 / m2^1.5 (population central moments, scipy.stats.skew(bias=True)).
- kurtosis       = m4 / m2^2 (Pearson, 3 for a normal; scipy.stats.kurtosis(fisher=False)).

Degenerate cases (never NaN or inf; 0 unless stated):

- n == 0: every return-based metric is 0; the trade metrics that do not divide by n
  (profit_factor, win_rate, trade_count) are still filled.
- n < 2: volatility, sharpe, sortino, skewness, kurtosis, stability are 0 (var95/es95 = -r_0).
- constant returns (all r equal): volatility, sharpe, skewness, kurtosis are 0.
- no negative return (zero downside): sortino 0.  Zero drawdown: calmar 0.
- flat log equity (all r = 0): stability 0.  n_trades == 0: win_rate 0, profit_factor 0.
- ruin (some r <= -1, so equity reaches <= 0 and stays there): total_return = annual_return
  = -1, max_drawdown = 1, calmar = -1, stability 0; the other metrics use r as given.
- non-finite input (NaN/inf in r): every return-based metric is 0.
- any value that would still overflow (e.g. a ratio with a subnormal denominator) is set to 0.

Numerics: log1p uses an atanh series (~1 ulp) for |r| < 1/16 and libm beyond; drawdowns are
1 - exp(y_t - max y) on log equity y, which rounds like 1 - E_t/peak (a dip below one ulp is
no drawdown, so calmar stays bounded). Note that stability is R^2 whatever the slope's sign:
a steady loser is "stable" too; objectives should pair it with a return metric.

Sparse form: ``fill_metrics_sparse(out, r, at, k, n, scratch, ...)`` treats the length-n vector
that is r[j] at offset at[j] (j < k) and exactly 0.0 elsewhere, with the definitions and
degenerate cases above. Flat stretches enter in closed form: each implicit zero adds an exact
0.0 to the sums and (0 - mean)^p to the central moments; log equity is constant over a stretch,
so its drawdown needs nothing and the OLS gets L (y - ybar)^2 and (y - ybar) L (a + b - n) / 2
for a stretch of L points a..b; the 5 % quantile is a zero when its ranks fall in the zeros'
block, else a quickselect over a window of the k values. Against ``fill_metrics`` on the dense
vector: total_return, annual_return, max_drawdown, calmar, sortino, var95 and the trade metrics
are bit-identical (the same operations in the same order); volatility, sharpe, skewness,
kurtosis, stability and es95 add in another order and agree to 1e-12 relative or better
(skewness and stability, which can cancel to ~0, to 1e-12 of their scale). The difference is
the dense bar-by-bar sums' drift, which grows with n; the closed forms are the more accurate
(e.g. kurtosis at n = 2e5: dense 2.5e-12 from the exact value, sparse 2e-15). Every reduction
runs in one fixed order and nothing uses fast-math, so a given input gives the same bits in
every process (Ray workers and in-process alike).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from core.errors import EmpError

# ---- metric slots (plain ints: numba treats module globals as compile-time constants) ----
M_TOTAL_RETURN = 0
M_ANNUAL_RETURN = 1
M_VOLATILITY = 2
M_SHARPE = 3
M_SORTINO = 4
M_MAX_DRAWDOWN = 5
M_CALMAR = 6
M_PROFIT_FACTOR = 7
M_WIN_RATE = 8
M_TRADE_COUNT = 9
M_TRADES_PER_YEAR = 10
M_TURNOVER = 11
M_EXPOSURE = 12
M_STABILITY = 13
M_VAR95 = 14
M_ES95 = 15
M_SKEWNESS = 16
M_KURTOSIS = 17
N_METRICS = 18

PF_CAP = 100.0
RETURN_CAP = 1e6
TAIL_P = 0.05

_LOG_CAP = math.log1p(RETURN_CAP)
_C = 0.0625  # |r| below this: log1p by a vectorisable series, else libm log1p
# No fast-math: with reassociation or FMA contraction the rounding of a sum depends on how LLVM
# vectorises it in each caller, and the same genome evaluated by a Ray worker (read-only arrays)
# and in-process differed in the 13th digit. Strict IEEE keeps every path bit-identical.
_FM = False
# error_model="numpy": float division by zero gives inf/nan instead of a per-division branch.
_JIT = {"cache": True, "error_model": "numpy"}


@nb.njit(**_JIT)
def _fill_trade_stats(out: np.ndarray, n: int, n_trades: int, n_wins: int, gross_win: float,
                      gross_loss: float, turnover: float, bars_in_market: int,
                      bars_per_year: float) -> bool:
    """The trade metrics (dense and sparse alike); True when n == 0 (nothing else to fill)."""
    gl = abs(gross_loss)
    if n_trades > 0:
        out[M_WIN_RATE] = n_wins / n_trades
        out[M_TRADE_COUNT] = n_trades
        if gl > 0.0:
            out[M_PROFIT_FACTOR] = min(gross_win / gl, PF_CAP)
        elif gross_win > 0.0:
            out[M_PROFIT_FACTOR] = PF_CAP
    if n == 0:
        return True
    out[M_TRADES_PER_YEAR] = n_trades * bars_per_year / n
    out[M_TURNOVER] = turnover * bars_per_year / n
    out[M_EXPOSURE] = bars_in_market / n
    return False


@nb.njit(**_JIT)
def _bracket(r: np.ndarray, p: float) -> tuple[float, float]:
    """Values that bracket the p-quantile of r with high probability, from a strided sample.

    Only speed depends on it: ``_tail`` checks the bracket and falls back when it misses.
    """
    n = r.shape[0]
    if n < 512:
        return -np.inf, np.inf
    ns = min(2048, int(2.0 * math.sqrt(n)))
    step = n // ns
    smp = np.empty(ns)
    for j in range(ns):
        smp[j] = r[j * step]
    smp.sort()
    ks = p * (ns - 1)
    margin = 3.0 * math.sqrt(ns * p * (1.0 - p)) + 2.0  # >= 3 sigma of the sample rank
    lo = math.floor(ks - margin)
    hi = math.ceil(ks + margin)
    lo_b = smp[lo] if lo >= 0 else -np.inf  # past the sample's ends: leave that side open
    hi_b = smp[hi] if hi < ns else np.inf
    return lo_b, hi_b


@nb.njit(fastmath=_FM, **_JIT)
def _pass_sums(
    r: np.ndarray, logs: np.ndarray, lo_b: float
) -> tuple[float, float, int, int, int, int, float]:
    """One vectorised pass over r: sum, sum min(r,0)^2, #(r != r_0), #(|r| >= _C), #(r <= -1),
    #(r < lo_b), sum(r < lo_b); logs[i] = log1p(r[i]) wherever |r[i]| < _C."""
    s = 0.0
    dn = 0.0
    n_diff = 0
    n_big = 0
    n_ruin = 0
    n_below = 0
    s_below = 0.0
    r0 = r[0]
    for i in range(r.shape[0]):
        x = r[i]
        s += x
        neg = x if x < 0.0 else 0.0
        dn += neg * neg
        n_diff += x != r0
        n_big += abs(x) >= _C
        n_ruin += x <= -1.0
        below = x < lo_b
        n_below += below
        s_below += x if below else 0.0
        # log1p(x) = 2 atanh(u), u = x / (2 + x); |u| < 0.033 so 7 terms reach ~1 ulp
        c = x if x > -_C else -_C
        c = c if c < _C else _C
        u = c / (2.0 + c)
        u2 = u * u
        q = 1.0 / 11.0 + u2 / 13.0
        q = 1.0 / 9.0 + u2 * q
        q = 1.0 / 7.0 + u2 * q
        q = 1.0 / 5.0 + u2 * q
        q = 1.0 / 3.0 + u2 * q
        logs[i] = 2.0 * u * (1.0 + u2 * q)
    return s, dn, n_diff, n_big, n_ruin, n_below, s_below


@nb.njit(**_JIT)
def _pass_equity(r: np.ndarray, buf: np.ndarray, n_big: int) -> tuple[float, float, float]:
    """buf: log1p terms -> y_t = log E_t in place (serial). Returns y_n, sum y and the worst
    gap min_t (y_t - max_{s<=t} y_s), with y_0 = 0 (E_0 = 1) in the running max."""
    if n_big > 0:  # the few returns the series in _pass_sums does not cover
        for i in range(r.shape[0]):
            if abs(r[i]) >= _C:
                buf[i] = math.log1p(r[i])
    y = 0.0
    sy = 0.0
    ymax = 0.0
    gap = 0.0
    for i in range(r.shape[0]):
        y += buf[i]
        buf[i] = y
        sy += y
        ymax = max(ymax, y)
        gap = min(gap, y - ymax)
    return y, sy, gap


@nb.njit(fastmath=_FM, **_JIT)
def _pass_moments(
    r: np.ndarray, y: np.ndarray, mean: float, ybar: float, tbar: float
) -> tuple[float, float, float, float, float]:
    """Central sums of r (d^2, d^3, d^4) and of (t, y) for the OLS, t = 1..n (t = 0 added later)."""
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    syy = 0.0
    sty = 0.0
    for i in range(r.shape[0]):
        d = r[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
        dy = y[i] - ybar
        syy += dy * dy
        sty += (i + 1.0 - tbar) * dy
    return m2, m3, m4, syy, sty


@nb.njit(**_JIT)
def _select(a: np.ndarray, m: int, k: int) -> float:
    """Hoare quickselect on a[:m]: afterwards a[:k] <= a[k] <= a[k+1:m]; returns a[k]."""
    lo = 0
    hi = m - 1
    budget = 64  # median-of-3 makes this ample; the sort is only a worst-case guard
    while hi > lo:
        if budget == 0:
            a[lo : hi + 1] = np.sort(a[lo : hi + 1])
            break
        budget -= 1
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        p = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < p:
                i += 1
            while a[j] > p:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@nb.njit(**_JIT)
def _min_from(a: np.ndarray, start: int, stop: int) -> float:
    v = a[start]
    for i in range(start + 1, stop):
        v = a[i] if a[i] < v else v
    return v


@nb.njit(**_JIT)
def _pair(a: np.ndarray, m: int, k: int) -> tuple[float, float]:
    """k-th and (k+1)-th smallest of a[:m] (0-based; the second clipped to the last)."""
    lo = _select(a, m, k)
    hi = _min_from(a, k + 1, m) if k + 1 < m else lo
    return lo, hi


@nb.njit(**_JIT)
def _lerp(a: float, b: float, g: float) -> float:
    """numpy's _lerp, bit for bit."""
    if g >= 0.5:
        return b - (b - a) * (1.0 - g)
    return a + (b - a) * g


@nb.njit(fastmath=_FM, **_JIT)
def _tail_sum(a: np.ndarray, m: int, q: float) -> tuple[float, int]:
    """Sum and count of a[:m] <= q."""
    s = 0.0
    c = 0
    for i in range(m):
        x = a[i]
        inside = x <= q
        s += x if inside else 0.0
        c += inside
    return s, c


@nb.njit(**_JIT)
def _tail(
    r: np.ndarray, p: float, scratch: np.ndarray,
    lo_b: float, hi_b: float, n_below: int, s_below: float,
) -> tuple[float, float]:
    """(q, mean(r[r <= q])), q = np.quantile(r, p) (linear), in O(n); len(r) >= 1.

    ``n_below``/``s_below`` count and sum r < lo_b. One branch-free pass keeps the values
    inside [lo_b, hi_b] and quickselect runs on those few; if the p-quantile's neighbours are
    not inside, quickselect runs on a full copy instead, so the result is exact either way.
    """
    n = r.shape[0]
    h = (n - 1) * p
    k = int(h)  # h >= 0, so this is floor
    g = h - k
    k1 = min(k + 1, n - 1)
    m = 0
    for i in range(n):
        x = r[i]
        scratch[m] = x
        m += (x >= lo_b) & (x <= hi_b)
    if n_below <= k and k1 < n_below + m:
        a, b = _pair(scratch, m, k - n_below)
        q = _lerp(a, b, g)
        s, c = _tail_sum(scratch, m, q)  # the window holds no value below lo_b
        return q, (s_below + s) / (n_below + c)
    scratch[:n] = r
    a, b = _pair(scratch, n, k)
    q = _lerp(a, b, g)
    s, c = _tail_sum(r, n, q)
    return q, s / c


@nb.njit(**_JIT)
def tail_quantile(r: np.ndarray, p: float, scratch: np.ndarray) -> tuple[float, float]:
    """Standalone ``(q, mean(r[r <= q]))`` with q = np.quantile(r, p); scratch >= len(r)."""
    lo_b, hi_b = _bracket(r, p)
    n_below = 0
    s_below = 0.0
    for x in r:
        if x < lo_b:
            n_below += 1
            s_below += x
    return _tail(r, p, scratch, lo_b, hi_b, n_below, s_below)


@nb.njit(**_JIT)
def _fill(
    out: np.ndarray,
    r: np.ndarray,
    scratch: np.ndarray,
    n_trades: int,
    n_wins: int,
    gross_win: float,
    gross_loss: float,
    turnover: float,
    bars_in_market: int,
    bars_per_year: float,
) -> None:
    """All metrics into a zeroed ``out``; may leave a non-finite value (cleaned by the caller)."""
    n = r.shape[0]
    # ---- trade statistics: defined without bars
    if _fill_trade_stats(out, n, n_trades, n_wins, gross_win, gross_loss, turnover,
                         bars_in_market, bars_per_year):
        return
    bpy = bars_per_year

    lo_b, hi_b = _bracket(r, TAIL_P)
    s, dn, n_diff, n_big, n_ruin, n_below, s_below = _pass_sums(r, scratch, lo_b)
    if not math.isfinite(s):  # NaN/inf returns: only the trade metrics are filled
        return
    mean = s / n
    sqb = math.sqrt(bpy)

    # ---- equity path: returns, drawdown, calmar (ruin: equity absorbed at 0)
    ruined = n_ruin > 0
    sy = 0.0
    if ruined:
        out[M_TOTAL_RETURN] = -1.0
        out[M_ANNUAL_RETURN] = -1.0
        out[M_MAX_DRAWDOWN] = 1.0
        out[M_CALMAR] = -1.0
    else:
        y, sy, gap = _pass_equity(r, scratch, n_big)
        out[M_TOTAL_RETURN] = math.expm1(min(y, _LOG_CAP))
        ann = math.expm1(min(y * (bpy / n), _LOG_CAP))
        mdd = 1.0 - math.exp(gap)  # as 1 - E_t / peak rounds: sub-ulp dips are no drawdown
        out[M_ANNUAL_RETURN] = ann
        out[M_MAX_DRAWDOWN] = mdd
        if mdd > 0.0:
            out[M_CALMAR] = ann / mdd

    # ---- moments, and the OLS of y on t = 0..n (y_0 = 0): R^2 = Sty^2 / (Stt Syy)
    npts = n + 1.0
    ybar = sy / npts
    tbar = 0.5 * n
    m2, m3, m4, syy, sty = _pass_moments(r, scratch, mean, ybar, tbar)
    if n >= 2:
        if n_diff > 0:
            std = math.sqrt(m2 / (n - 1))
            out[M_VOLATILITY] = std * sqb
            if std > 0.0:
                out[M_SHARPE] = mean / std * sqb
            c2 = m2 / n
            if c2 > 0.0:
                out[M_SKEWNESS] = (m3 / n) / (c2 * math.sqrt(c2))
                out[M_KURTOSIS] = (m4 / n) / (c2 * c2)
        down = math.sqrt(dn / n)
        if down > 0.0:
            out[M_SORTINO] = mean / down * sqb
        if not ruined:
            syy += ybar * ybar  # the t = 0 point (y_0 = 0)
            sty += tbar * ybar
            stt = npts * (npts * npts - 1.0) / 12.0
            if syy > 0.0:
                out[M_STABILITY] = min(sty * sty / (stt * syy), 1.0)

    # ---- tail risk
    q, tail_mean = _tail(r, TAIL_P, scratch, lo_b, hi_b, n_below, s_below)
    out[M_VAR95] = -q
    out[M_ES95] = -tail_mean


@nb.njit(**_JIT)
def fill_metrics_buf(
    out: np.ndarray,
    returns: np.ndarray,
    scratch: np.ndarray,
    n_trades: int,
    n_wins: int,
    gross_win: float,
    gross_loss: float,
    turnover: float,
    bars_in_market: int,
    bars_per_year: float,
) -> None:
    """``fill_metrics`` with a caller-owned scratch buffer (len >= len(returns)), for reuse."""
    out[:] = 0.0
    _fill(
        out, returns, scratch, n_trades, n_wins, gross_win, gross_loss, turnover,
        bars_in_market, bars_per_year,
    )
    for j in range(N_METRICS):  # the contract: never NaN or inf, whatever came in
        if not math.isfinite(out[j]):
            out[j] = 0.0


@nb.njit(**_JIT)
def fill_metrics(
    out: np.ndarray,
    returns: np.ndarray,
    n_trades: int,
    n_wins: int,
    gross_win: float,
    gross_loss: float,
    turnover: float,
    bars_in_market: int,
    bars_per_year: float,
) -> None:
    """Write the N_METRICS metrics of one segment into ``out`` (see the module docstring)."""
    scratch = np.empty(returns.shape[0])
    fill_metrics_buf(
        out, returns, scratch, n_trades, n_wins, gross_win, gross_loss, turnover,
        bars_in_market, bars_per_year,
    )


# ---- sparse form: the dense vector is r[j] at offsets at[j] and exactly 0.0 elsewhere ---------


class MetricsInputError(EmpError, ValueError):
    """Sparse returns whose offsets or scratch buffer break ``fill_metrics_sparse``'s contract."""


SPARSE_SCRATCH = 3  # fill_metrics_sparse needs a scratch of SPARSE_SCRATCH * k floats
_POS_TINY = 5e-324  # the smallest positive double: x >= it <=> x > 0


@nb.njit(fastmath=_FM, **_JIT)
def _sparse_prep(
    r: np.ndarray, at: np.ndarray, k: int, n: int, x0: float, buf: np.ndarray
) -> tuple[bool, int, int, int]:
    """The vectorised part: buf[j] = log1p(r[j]) bit for bit as the dense passes compute it;
    buf[k + j] = L_j, the length of the stretch r[j] opens (bars at[j] .. at[j] + L_j - 1, the
    last ends at n); buf[2k + j] = L_j (a + b - n), a..b = the OLS points at[j] + 1 .. at[j] + L_j
    (integers, exact in float64 below 2^53). Returns (at[:k] strictly increasing within [0, n),
    #(r < 0), #(r == 0), #(r != x0))."""
    n_big = 0
    n_neg = 0
    n_zero = 0
    n_diff = 0
    for j in range(k):
        x = r[j]
        n_big += abs(x) >= _C
        n_neg += x < 0.0
        n_zero += x == 0.0
        n_diff += x != x0
        c = x if x > -_C else -_C
        c = c if c < _C else _C
        u = c / (2.0 + c)
        u2 = u * u
        q = 1.0 / 11.0 + u2 / 13.0
        q = 1.0 / 9.0 + u2 * q
        q = 1.0 / 7.0 + u2 * q
        q = 1.0 / 5.0 + u2 * q
        q = 1.0 / 3.0 + u2 * q
        buf[j] = 2.0 * u * (1.0 + u2 * q)
    if n_big > 0:
        for j in range(k):
            if abs(r[j]) >= _C:
                buf[j] = math.log1p(r[j])
    if k == 0:
        return True, 0, 0, 0
    bad = 0
    for j in range(k - 1):
        ln = at[j + 1] - at[j]
        bad += ln <= 0
        buf[k + j] = ln
        buf[2 * k + j] = ln * (2.0 * at[j] + 1.0 + ln - n)
    ln = n - at[k - 1]
    buf[2 * k - 1] = ln
    buf[3 * k - 1] = ln * (2.0 * at[k - 1] + 1.0 + ln - n)
    return bad == 0 and at[0] >= 0 and at[k - 1] < n, n_neg, n_zero, n_diff


@nb.njit(**_JIT)
def _sparse_rank(d: int, n_neg: int, n_flat: int, n_gap: int) -> int:
    """Rank among the k sparse values of the dense order statistic d, or -1 where it is a zero.

    Dense sorted order: the n_neg negatives, then n_flat zeros (the n - k implicit ones plus the
    r[j] == 0), then the positives; the sparse values lack only the n_gap = n - k implicit zeros.
    """
    if d < n_neg:
        return d
    if d < n_neg + n_flat:
        return -1
    return d - n_gap


@nb.njit(**_JIT)
def _sparse_tail(
    r: np.ndarray, k: int, n: int, n_neg: int, n_zero: int, s_neg: float, p: float,
    win: np.ndarray,
) -> tuple[float, float]:
    """(q, mean(x[x <= q])) of the dense x, q = np.quantile(x, p) (linear); n >= 1.

    ``n_neg``, ``n_zero``, ``s_neg``: counts of r[:k] < 0 and == 0, sum of the negatives. Nothing
    to select when both order statistics lie in the zero block. Otherwise the values inside a
    window that must hold them (by sign, narrowed for k >= 512 by a strided sample as in
    ``_bracket``) go to ``win`` (len >= k) for quickselect; on a sample miss, all k do.
    """
    n_gap = n - k
    h = (n - 1) * p
    kq = int(h)
    g = h - kq
    kq1 = min(kq + 1, n - 1)
    ra = _sparse_rank(kq, n_neg, n_gap + n_zero, n_gap)
    rb = _sparse_rank(kq1, n_neg, n_gap + n_zero, n_gap)
    if ra < 0 and rb < 0:  # q = 0: the tail is every negative and every zero
        return 0.0, s_neg / (n_neg + n_zero + n_gap)
    rlo = ra if ra >= 0 else rb
    rhi = rb if rb >= 0 else ra
    lo_b = -np.inf
    hi_b = np.inf
    if rhi < n_neg:
        hi_b = -_POS_TINY  # negatives only
    elif rlo >= n_neg + n_zero:
        lo_b = _POS_TINY  # positives only
    if k >= 512:  # narrow it to a bracket of [rlo, rhi] from a strided sample
        ns = min(2048, int(2.0 * math.sqrt(k)))
        step = k // ns
        for j in range(ns):
            win[j] = r[j * step]
        margin = 3.0 * math.sqrt(ns * (rlo / (k - 1.0)) * (1.0 - rlo / (k - 1.0))) + 2.0
        lo = math.floor(rlo / (k - 1.0) * (ns - 1) - margin)
        hi = math.ceil(rhi / (k - 1.0) * (ns - 1) + margin)
        base = 0
        if lo >= 0:
            lo_b = max(lo_b, _select(win, ns, lo))
            base = lo + 1  # win[base:ns] now holds the sample above its lo-th value
        if hi < ns:
            hi_b = min(hi_b, _select(win[base:], ns - base, hi - base))
    m = 0
    n_below = 0
    s = 0.0
    for j in range(k):  # branch-free: keep [lo_b, hi_b], count and sum what lies below
        x = r[j]
        win[m] = x
        m += (x >= lo_b) & (x <= hi_b)
        below = x < lo_b
        n_below += below
        s += x if below else 0.0
    if not (n_below <= rlo and rhi < n_below + m):  # the sample misled: select over all k
        win[:k] = r[:k]
        m = k
        n_below = 0
        s = 0.0
        lo_b = -np.inf
        hi_b = np.inf
    v, w = _pair(win, m, rlo - n_below)
    a = 0.0
    b = 0.0
    if ra >= 0:
        a = v
        b = w if rb > ra else (v if rb >= 0 else 0.0)
    else:
        b = v
    q = _lerp(a, b, g)
    if lo_b <= q <= hi_b:  # all below the window are <= q, all above it > q
        t, c = _tail_sum(win, m, q)
        s += t
        c += n_below
    else:
        s, c = _tail_sum(r, k, q)
    if q >= 0.0:
        c += n_gap
    return q, s / c


@nb.njit(**_JIT)
def _fill_sparse(
    out: np.ndarray, r: np.ndarray, at: np.ndarray, k: int, n: int, scratch: np.ndarray,
    n_neg: int, n_zero: int, n_diff: int, x0: float,
    n_trades: int, n_wins: int, gross_win: float, gross_loss: float, turnover: float,
    bars_in_market: int, bars_per_year: float,
) -> None:
    """``_fill`` of the dense vector in O(k): r[j] opens a flat stretch up to at[j+1]."""
    if _fill_trade_stats(out, n, n_trades, n_wins, gross_win, gross_loss, turnover,
                         bars_in_market, bars_per_year):
        return
    bpy = bars_per_year

    # ---- pass 1, serial in bar order: _pass_sums's sums (zeros add an exact 0.0: same bits)
    # and the log equity y_j (into scratch[:k]) with its drawdown gap, as _pass_equity.
    s = 0.0
    dn = 0.0
    s_neg = 0.0
    y = 0.0
    sy = 0.0
    ymax = 0.0
    gap = 0.0
    for j in range(k):
        x = r[j]
        s += x
        neg = x if x < 0.0 else 0.0
        dn += neg * neg
        s_neg += neg
        y += scratch[j]
        scratch[j] = y
        sy += scratch[k + j] * y  # y holds on the stretch's bars
        ymax = max(ymax, y)
        gap = min(gap, y - ymax)
    if not math.isfinite(s):
        return
    n_gap = n - k
    n_diff += n_gap * (x0 != 0.0)  # the implicit zeros
    mean = s / n
    sqb = math.sqrt(bpy)

    # with every r finite, y is finite unless some r <= -1 (log1p -inf or NaN): ruin
    ruined = not math.isfinite(y)
    if ruined:
        out[M_TOTAL_RETURN] = -1.0
        out[M_ANNUAL_RETURN] = -1.0
        out[M_MAX_DRAWDOWN] = 1.0
        out[M_CALMAR] = -1.0
    else:
        out[M_TOTAL_RETURN] = math.expm1(min(y, _LOG_CAP))
        ann = math.expm1(min(y * (bpy / n), _LOG_CAP))
        mdd = 1.0 - math.exp(gap)
        out[M_ANNUAL_RETURN] = ann
        out[M_MAX_DRAWDOWN] = mdd
        if mdd > 0.0:
            out[M_CALMAR] = ann / mdd

    if n >= 2:
        # ---- pass 2: central moments (each implicit zero adds (0 - mean)^p) and the OLS of y
        # on t = 0..n: a stretch of L points t = a..b at one y adds L (y - ybar)^2 to Syy and
        # (y - ybar) L (a + b - n) / 2 to Sty (tbar = n / 2; integers, exact in float64).
        ybar = sy / (n + 1.0)
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        syy = 0.0
        sty2 = 0.0
        for j in range(k):
            d = r[j] - mean
            d2 = d * d
            m2 += d2
            m3 += d2 * d
            m4 += d2 * d2
            dy = scratch[j] - ybar
            syy += scratch[k + j] * (dy * dy)
            sty2 += scratch[2 * k + j] * dy
        z = -mean
        z2 = z * z
        m2 += n_gap * z2
        m3 += n_gap * (z2 * z)
        m4 += n_gap * (z2 * z2)
        if n_diff > 0:
            std = math.sqrt(m2 / (n - 1))
            out[M_VOLATILITY] = std * sqb
            if std > 0.0:
                out[M_SHARPE] = mean / std * sqb
            c2 = m2 / n
            if c2 > 0.0:
                out[M_SKEWNESS] = (m3 / n) / (c2 * math.sqrt(c2))
                out[M_KURTOSIS] = (m4 / n) / (c2 * c2)
        down = math.sqrt(dn / n)
        if down > 0.0:
            out[M_SORTINO] = mean / down * sqb
        if not ruined:
            a0 = at[0] if k > 0 else n  # the first stretch: t = 0 .. a0 at y = 0
            syy += (a0 + 1.0) * (ybar * ybar)
            sty2 += ((a0 + 1.0) * (a0 - n)) * -ybar
            npts = n + 1.0
            stt = npts * (npts * npts - 1.0) / 12.0
            sty = 0.5 * sty2
            if syy > 0.0:
                out[M_STABILITY] = min(sty * sty / (stt * syy), 1.0)

    # ---- tail risk
    q, tail_mean = _sparse_tail(r, k, n, n_neg, n_zero, s_neg, TAIL_P, scratch[k:])
    out[M_VAR95] = -q
    out[M_ES95] = -tail_mean


@nb.njit(**_JIT)
def fill_metrics_sparse(
    out: np.ndarray, r: np.ndarray, at: np.ndarray, k: int, n: int, scratch: np.ndarray,
    n_trades: int, n_wins: int, gross_win: float, gross_loss: float, turnover: float,
    bars_in_market: int, bars_per_year: float,
) -> None:
    """``fill_metrics`` of the length-n vector that is r[j] at offset at[j] (j < k), else 0.0.

    ``at`` is int64, strictly increasing, in [0, n). ``scratch`` is a caller-owned float64
    buffer, overwritten, of **len >= SPARSE_SCRATCH * k = 3 k** (not 2 k: the third k holds the
    OLS weights, computed vectorised, which is ~10 % faster); nothing is allocated (but for
    quickselect's worst-case sort guard, as in the dense path). O(k) work:
    four passes over the k values (the first vectorised) and a quickselect over a small window.
    Raises ``MetricsInputError`` when the offsets or the buffer break this contract.
    """
    if (k < 0 or k > r.shape[0] or k > at.shape[0] or k > n
            or scratch.shape[0] < SPARSE_SCRATCH * k):
        raise MetricsInputError(
            "fill_metrics_sparse: k, n, len(r), len(at), len(scratch) do not fit"
        )
    x0 = r[0] if k > 0 and at[0] == 0 else 0.0  # the dense vector's first value
    ok, n_neg, n_zero, n_diff = _sparse_prep(r, at, k, n, x0, scratch)
    if not ok:
        raise MetricsInputError(
            "fill_metrics_sparse: at is not strictly increasing within [0, n)"
        )
    out[:] = 0.0
    _fill_sparse(
        out, r, at, k, n, scratch, n_neg, n_zero, n_diff, x0, n_trades, n_wins, gross_win,
        gross_loss, turnover, bars_in_market, bars_per_year,
    )
    for j in range(N_METRICS):
        if not math.isfinite(out[j]):
            out[j] = 0.0
