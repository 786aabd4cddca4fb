"""Numba kernels for the volatility engine: plain functions over float64 arrays.

The GARCH-family recursions reproduce arch's definitions exactly (same backcast start, same
EGARCH E|z| constant and log-variance cap) so that a parameter vector fitted by arch gives the
same conditional variances here. arch's loose variance bounds (1e-6x .. 1e6x an EWMA) are not
applied: they only bind during a failing optimisation, never on a fitted, stationary model.
"""

from __future__ import annotations

import numba as nb
import numpy as np

SQRT2_OV_PI = 0.79788456080286541  # E|z| for z ~ N(0, 1), the constant arch uses
LNSIGMA_MAX = float(np.log(np.finfo(np.float64).max) - 0.1)  # arch's cap on ln sigma²
VAR95_Z = 1.65


@nb.njit(cache=True)
def log_returns(close: np.ndarray) -> np.ndarray:
    """r[t] = log(c[t] / c[t-1]); r[0] is NaN so that index t is the bar whose close ends it."""
    n = close.shape[0]
    r = np.empty(n)
    if n > 0:
        r[0] = np.nan
    for t in range(1, n):
        r[t] = np.log(close[t] / close[t - 1])
    return r


@nb.njit(cache=True)
def arch_backcast(e: np.ndarray) -> float:
    """arch's start value: 0.94-weighted mean of e² over the first min(75, n) residuals."""
    tau = min(75, e.shape[0])
    num = 0.0
    den = 0.0
    w = 1.0
    for i in range(tau):
        num += w * e[i] * e[i]
        den += w
        w *= 0.94
    return num / den


@nb.njit(cache=True)
def gjr_variance(
    omega: float, alpha: float, gamma: float, beta: float, e: np.ndarray, backcast: float
) -> np.ndarray:
    """GJR-GARCH(1,1,1) conditional variances; gamma = 0 gives GARCH(1,1).

    Returns n + 1 values: s[k] is the variance of e[k] given e[:k]; s[n] is the one-step
    forecast after the last residual.
    """
    n = e.shape[0]
    s = np.empty(n + 1)
    s[0] = omega + alpha * backcast + gamma * 0.5 * backcast + beta * backcast
    for k in range(1, n + 1):
        s[k] = gjr_step(omega, alpha, gamma, beta, e[k - 1], s[k - 1])
    return s


@nb.njit(cache=True)
def gjr_step(omega: float, alpha: float, gamma: float, beta: float, e: float,
             s: float) -> float:
    """One GJR step: the variance after residual ``e`` whose variance was ``s``. The batch
    recursion and the per-bar continuation both use it, so they agree bit for bit."""
    e2 = e * e
    neg = 1.0 if e < 0.0 else 0.0
    return omega + alpha * e2 + gamma * e2 * neg + beta * s


@nb.njit(cache=True, error_model="numpy")
def egarch_variance(
    omega: float, alpha: float, gamma: float, beta: float, e: np.ndarray, ln_backcast: float
) -> np.ndarray:
    """EGARCH(1,1,1) as arch defines it:

    ln s[k] = omega + alpha (|z[k-1]| - sqrt(2/pi)) + gamma z[k-1] + beta ln s[k-1],
    z = e / sqrt(s); the first step uses only omega + beta * ln_backcast. Returns n + 1 values.
    """
    n = e.shape[0]
    s = np.empty(n + 1)
    ln_s = min(omega + beta * ln_backcast, LNSIGMA_MAX)
    s[0] = np.exp(ln_s)
    for k in range(1, n + 1):
        ln_s = egarch_step(omega, alpha, gamma, beta, e[k - 1], s[k - 1], ln_s)
        s[k] = np.exp(ln_s)
    return s


@nb.njit(cache=True, error_model="numpy")
def egarch_step(omega: float, alpha: float, gamma: float, beta: float, e: float, s: float,
                ln_s: float) -> float:
    """One EGARCH step: ln of the variance after residual ``e`` whose variance was
    ``s = exp(ln_s)`` (capped like arch). Shared by the batch and the continuation."""
    z = e / np.sqrt(s)
    ln_s = omega + alpha * (abs(z) - SQRT2_OV_PI) + gamma * z + beta * ln_s
    return min(ln_s, LNSIGMA_MAX)


@nb.njit(cache=True, error_model="numpy")
def recursion_end(code: int, par: np.ndarray, e: np.ndarray, start: float) -> tuple[float, float]:
    """(variance, ln variance) after the last residual of ``e``: what ``gjr_variance``
    (code 0; ``par`` = omega, alpha, gamma, beta; ``start`` = backcast) or ``egarch_variance``
    (code 1; ``start`` = ln backcast) end on, by the same steps. ln variance is NaN for GJR."""
    omega, alpha, gamma, beta = par[0], par[1], par[2], par[3]
    if code == 0:
        s = omega + alpha * start + gamma * 0.5 * start + beta * start
        for k in range(e.shape[0]):
            s = gjr_step(omega, alpha, gamma, beta, e[k], s)
        return s, np.nan
    ln_s = min(omega + beta * start, LNSIGMA_MAX)
    s = np.exp(ln_s)
    for k in range(e.shape[0]):
        ln_s = egarch_step(omega, alpha, gamma, beta, e[k], s, ln_s)
        s = np.exp(ln_s)
    return s, ln_s


@nb.njit(cache=True, error_model="numpy")
def clamp_to_ewma(v: float, ewma: float, ratio: float) -> float:
    """``v`` kept within [ewma / ratio, ewma * ratio] when ewma > 0, as np.clip does; a NaN
    forecast (an EGARCH whose log-variance ran to -inf) is the EWMA value itself."""
    if not ewma > 0.0:
        return v
    if v != v:
        return ewma
    lo = ewma / ratio
    hi = ewma * ratio
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@nb.njit(cache=True, error_model="numpy")
def vol_advance(r: np.ndarray, t0: int, base: int, window: int, refit_every: int, lam: float,
                min_bars: int, rv_windows: np.ndarray, scale: float, ratio: float,
                egarch_row: int, ew: np.ndarray, par: np.ndarray, active: np.ndarray,
                s: np.ndarray, ln_s: np.ndarray, clamped: np.ndarray, var_out: np.ndarray,
                rv_out: np.ndarray) -> int:
    """Advance the volatility state over returns r[t0..] (bar T = base + t from the origin;
    r at T = 0 is NaN) into var_out[:, t-t0] (fitted rows, then EWMA) and rv_out[:, t-t0].

    State (updated in place): ew[0] the EWMA forecast (the running sum of r² while seeding);
    per fitted row: par (omega, alpha, gamma, beta), active (its block's fit succeeded),
    s / ln_s the recursion's variance in scaled units, clamped counts. Stops at the first refit
    bar (T = window + j * refit_every) after writing its EWMA and RV values and returns its t:
    its fitted rows need the refit (``market.volatility.apply_refits``). Returns r.shape[0] when
    no refit bar was met. The same expressions as ``ewma_variance``, ``rolling_rv``,
    ``gjr_variance`` / ``egarch_variance`` and the clamp, so the values equal the batch's.
    """
    n = r.shape[0]
    scale2 = scale * scale
    nfit = par.shape[0]
    for t in range(t0, n):
        tt = base + t
        j = t - t0
        x = r[t]
        if tt == 0:
            ewv = np.nan
        elif tt <= min_bars:
            ew[0] += x * x
            if tt == min_bars:
                ew[0] = ew[0] / min_bars
                ewv = ew[0]
            else:
                ewv = np.nan
        else:
            ew[0] = lam * ew[0] + (1.0 - lam) * x * x
            ewv = ew[0]
        for wi in range(rv_windows.shape[0]):
            w = rv_windows[wi]
            if tt >= w:
                acc = 0.0
                for i in range(t - w + 1, t + 1):
                    acc += r[i] * r[i]
                rv_out[wi, j] = acc / w
            else:
                rv_out[wi, j] = np.nan
        var_out[nfit, j] = ewv
        if tt >= window and (tt - window) % refit_every == 0:
            return t
        for v in range(nfit):
            if not active[v]:
                var_out[v, j] = ewv
                continue
            e = x * scale
            if v == egarch_row:
                ln_s[v] = egarch_step(par[v, 0], par[v, 1], par[v, 2], par[v, 3], e, s[v],
                                      ln_s[v])
                s[v] = np.exp(ln_s[v])
            else:
                s[v] = gjr_step(par[v, 0], par[v, 1], par[v, 2], par[v, 3], e, s[v])
            raw = s[v] / scale2
            out = clamp_to_ewma(raw, ewv, ratio)
            if out != raw:
                clamped[v] += 1
            var_out[v, j] = out
    return n


@nb.njit(cache=True)
def ewma_variance(r: np.ndarray, lam: float, min_bars: int) -> np.ndarray:
    """One-step EWMA forecasts: out[t] = lam out[t-1] + (1 - lam) r[t]².

    r[0] is ignored (no return). out[min_bars] is the seed, the mean of r[1..min_bars]²;
    earlier values are NaN.
    """
    n = r.shape[0]
    out = np.full(n, np.nan)
    if n <= min_bars:
        return out
    acc = 0.0
    for t in range(1, min_bars + 1):
        acc += r[t] * r[t]
    out[min_bars] = acc / min_bars
    for t in range(min_bars + 1, n):
        out[t] = lam * out[t - 1] + (1.0 - lam) * r[t] * r[t]
    return out


@nb.njit(cache=True)
def rolling_rv(r: np.ndarray, window: int) -> np.ndarray:
    """Per-bar realised variance: mean of r² over the last ``window`` returns ending at t.

    Summed directly per bar (w <= a few hundred) so that no running-sum drift builds up.
    """
    n = r.shape[0]
    out = np.full(n, np.nan)
    for t in range(window, n):
        acc = 0.0
        for i in range(t - window + 1, t + 1):
            acc += r[i] * r[i]
        out[t] = acc / window
    return out


@nb.njit(cache=True)
def blend_variance(garch_var, rv, w):
    """sigma_hat² = w garch + (1 - w) rv; both must be per-bar variances."""
    return w * garch_var + (1.0 - w) * rv


@nb.njit(cache=True)
def annualised_sigma(var_per_bar, bars_per_year):
    """Annualised volatility from a per-bar variance."""
    return np.sqrt(var_per_bar * bars_per_year)


@nb.njit(cache=True)
def regime_code(sigma_ann: float, calm_below: float, storm_above: float) -> int:
    """0 calm (< calm_below), 1 normal, 2 storm (> storm_above), -1 unknown (NaN)."""
    if np.isnan(sigma_ann):
        return -1
    if sigma_ann < calm_below:
        return 0
    if sigma_ann > storm_above:
        return 2
    return 1


@nb.njit(cache=True)
def regime(sigma_ann: np.ndarray, calm_below: float, storm_above: float) -> np.ndarray:
    """Array form of regime_code, int8."""
    out = np.empty(sigma_ann.shape[0], dtype=np.int8)
    for i in range(sigma_ann.shape[0]):
        out[i] = regime_code(sigma_ann[i], calm_below, storm_above)
    return out


@nb.njit(cache=True)
def var95(sigma_per_bar, horizon_bars, exposure):
    """One-sided 95 % value at risk: 1.65 sigma sqrt(h) exposure (sigma per bar, h in bars)."""
    return VAR95_Z * sigma_per_bar * np.sqrt(horizon_bars) * exposure


@nb.njit(cache=True, error_model="numpy")
def vol_live_step(rbuf: np.ndarray, k: int, n_bars: int, last_close: float, close: float,
                  window: int, refit_every: int, lam: float, min_bars: int,
                  rv_windows: np.ndarray, scale: float, ratio: float, egarch_row: int,
                  ew: np.ndarray, par: np.ndarray, active: np.ndarray, s: np.ndarray,
                  ln_s: np.ndarray, clamped: np.ndarray, var_out: np.ndarray,
                  rv_out: np.ndarray) -> tuple[int, bool]:
    """One new close in place: its log return is appended to the kept returns (``rbuf``,
    capacity keep + 1, the first ``k`` filled) and ``vol_advance`` runs on it. Returns the new
    fill count (the oldest return is dropped beyond keep = capacity - 1) and whether the bar is
    a refit bar (its fitted rows then wait for ``apply_refits``)."""
    rbuf[k] = np.log(close / last_close) if n_bars > 0 else np.nan
    m = k + 1
    stop = vol_advance(rbuf[:m], k, n_bars - k, window, refit_every, lam, min_bars, rv_windows,
                       scale, ratio, egarch_row, ew, par, active, s, ln_s, clamped, var_out,
                       rv_out)
    keep = rbuf.shape[0] - 1
    if m > keep:
        for i in range(keep):
            rbuf[i] = rbuf[i + 1]
        m = keep
    return m, stop < k + 1


@nb.njit(cache=True, error_model="numpy")
def _log_var(v: float, floor: float) -> float:
    """market.ginn's input transform: log of the variance floored at ``floor``; NaN stays NaN."""
    if v != v:
        return np.nan
    return np.log(max(v, floor))


@nb.njit(cache=True, error_model="numpy")
def _sigmoid(z: float) -> float:
    e = np.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)


@nb.njit(cache=True, error_model="numpy")
def ginn_lstm(xbuf: np.ndarray, x_mean: np.ndarray, x_std: np.ndarray, w_ih: np.ndarray,
              bias: np.ndarray, w_hh: np.ndarray, w_out: np.ndarray, b_out: float,
              y_scale: float, softplus_threshold: float) -> float:
    """``market.ginn.forecast_last`` over the rows of ``xbuf`` (all finite, [seq_len, F]): the
    same LSTM, gate by gate, with every sum taken in one fixed order (inputs, bias, recurrent
    term), so that the batch table and the live step, which both call this, agree bit for bit
    (numpy's BLAS products change their summation order with the shapes)."""
    seq, nf = xbuf.shape
    hn = w_hh.shape[1]
    h = np.zeros(hn)
    c = np.zeros(hn)
    g = np.empty(4 * hn)
    xs = np.empty(nf)
    for s in range(seq):
        for f in range(nf):
            xs[f] = (xbuf[s, f] - x_mean[f]) / x_std[f]
        for j in range(4 * hn):
            acc = 0.0
            for f in range(nf):
                acc += xs[f] * w_ih[j, f]
            rec = 0.0
            for m in range(hn):
                rec += h[m] * w_hh[j, m]
            g[j] = (acc + bias[j]) + rec
        for m in range(hn):
            i_g = _sigmoid(g[m])
            f_g = _sigmoid(g[hn + m])
            g_g = np.tanh(g[2 * hn + m])
            o_g = _sigmoid(g[3 * hn + m])
            c[m] = f_g * c[m] + i_g * g_g
            h[m] = o_g * np.tanh(c[m])
    z = 0.0
    for m in range(hn):
        z += h[m] * w_out[m]
    z += b_out
    if z > softplus_threshold:
        return z * y_scale
    return np.log1p(np.exp(z)) * y_scale


@nb.njit(cache=True, error_model="numpy")
def ginn_advance(r: np.ndarray, t0: int, var: np.ndarray, rv: np.ndarray, ts: np.ndarray,
                 data_end: int, garch_row: int, lags: int, rv_rows: np.ndarray,
                 var_rows: np.ndarray, bars_per_year: float, calm: float, storm: float,
                 floor: float, x_mean: np.ndarray, x_std: np.ndarray, w_ih: np.ndarray,
                 bias: np.ndarray, w_hh: np.ndarray, w_out: np.ndarray, b_out: float,
                 y_scale: float, softplus_threshold: float, xbuf: np.ndarray, k: int,
                 out: np.ndarray) -> int:
    """The ginn variance row over columns j of ``var`` / ``rv`` (their GARCH-family rows final),
    whose bar's log return is r[t0 + j] (returns before r[0] count as missing, as at the
    origin), into out[j]. Returns the new fill count of ``xbuf``.

    Per column: its input row (``market.ginn.ginn_inputs``' layout: r_{t-c} for c < lags, log
    RV of ``rv_rows``, log variance of ``var_rows``, the regime one-hot of row ``garch_row``'s
    annualised sigma) is appended to ``xbuf`` (the last seq_len rows, oldest first, the first
    ``k`` filled); the forecast is ``ginn_lstm`` over a full window of finite rows. out[j] is
    that forecast where ts[j] > data_end and it is not NaN, else var[garch_row, j] (GARCH).
    """
    seq, nf = xbuf.shape
    nr = rv_rows.shape[0]
    nv = var_rows.shape[0]
    for j in range(var.shape[1]):
        if k == seq:
            for s in range(seq - 1):
                for f in range(nf):
                    xbuf[s, f] = xbuf[s + 1, f]
            k = seq - 1
        row = xbuf[k]
        for c in range(lags):
            i = t0 + j - c
            row[c] = r[i] if i >= 0 else np.nan
        for i in range(nr):
            row[lags + i] = _log_var(rv[rv_rows[i], j], floor)
        for i in range(nv):
            row[lags + nr + i] = _log_var(var[var_rows[i], j], floor)
        code = regime_code(np.sqrt(var[garch_row, j] * bars_per_year), calm, storm)
        for i in range(3):
            row[lags + nr + nv + i] = np.nan if code < 0 else (1.0 if code == i else 0.0)
        k += 1
        value = np.nan
        if k == seq and ts[j] > data_end:
            finite = True
            for s in range(seq):
                for f in range(nf):
                    if not np.isfinite(xbuf[s, f]):
                        finite = False
            if finite:
                value = ginn_lstm(xbuf, x_mean, x_std, w_ih, bias, w_hh, w_out, b_out, y_scale,
                                  softplus_threshold)
        out[j] = value if value == value else var[garch_row, j]
    return k
