"""Numba kernels for the primitive library: one per entry of ``genome.primitives.PRIMITIVES``.

Every kernel is a plain function over contiguous float64 / int64 arrays that *fills* a
caller-supplied ``out`` row (the feature table writes straight into its own rows, so a build
allocates the table and a few temporaries, never per bar). Every value at bar t is computed
from bars <= t only. Warm-up bars whose window is incomplete are NaN; a division by zero
(flat window, zero ATR, zero spread) is NaN too, so any comparison with it is false.

Details the catalogue's one-line docs leave open, fixed here:

Numeric primitives (p = window, t = bar index from 0):

- ``sma``: mean(close[t-p+1..t]) / close[t] - 1; NaN for t < p-1.
- ``ema``: alpha = 2/(p+1), EMA[p-1] = mean(close[0..p-1]), EMA[t] = EMA[t-1] + alpha *
  (close[t] - EMA[t-1]); output EMA/close - 1; NaN for t < p-1.
- ``rsi``: d[t] = close[t] - close[t-1]; average gain/loss seeded at t = p with the simple mean
  of d[1..p], then Wilder: avg = (avg*(p-1) + x)/p. RSI = 100*gain/(gain+loss); NaN for t < p
  and when gain + loss == 0 (no movement at all).
- ``roc``: close[t]/close[t-p] - 1; NaN for t < p.
- ``macd(f, s, g)``: EMA(f), EMA(s) as ``ema`` (each SMA-seeded on its own first closes);
  MACD from t = s-1; signal = EMA(g) of MACD seeded with the mean of the first g MACD values;
  output (MACD - signal)/close; NaN for t < s+g-2.
- ``bollz``: (close - mean)/std over close[t-p+1..t], population std; NaN for t < p-1.
- ``donch``: lo/hi = min low / max high over the p *previous* bars t-p..t-1 (the current bar is
  excluded, so a breakout can read > 1 or < 0); (close - lo)/(hi - lo); NaN for t < p.
- ``atrr(f, s)``: TR[t] = max(high-low, |high-close[t-1]|, |low-close[t-1]|) for t >= 1 (bar 0
  has no previous close and no TR). ATR(p) seeded at t = p with mean(TR[1..p]), then Wilder.
  Output ATR(f)/ATR(s); NaN for t < s and when ATR(s) == 0.
- ``volz``: (volume - mean)/std over volume[t-p+1..t], population std; NaN for t < p-1.
- ``retz``: r[t] = log(close[t]/close[t-1]); r[t] / std(r[t-p..t-1]) (population std, the
  current return excluded); NaN for t < p+1.

A window std is "zero" (so the z value is NaN) when the window's values are all identical,
detected exactly; rolling sums are re-anchored on a value inside the window and recomputed
from scratch every p bars, so cancellation and drift stay at rounding level on long series.

Smart-Money-Concepts structures (n = swing size). All SMC outputs are 0 / +1 / -1 with no NaN
warm-up: before any structure exists the value is 0.

- Swing high at bar i: high[i] > each of high[i-n..i-1] (strict, so the first of equal tops
  wins) and high[i] >= each of high[i+1..i+n]; needs i >= n. Swing low mirrors with low. The
  swing is *confirmed* at bar i+n and only from that bar on can it affect anything. Only the
  most recently confirmed swing high (and low) is tracked; a newer one replaces it.
- ``bos``: a bullish break happens at the first bar whose close > the last swing high's level;
  that swing is then used up (it cannot break again; a new swing high is needed). Bearish
  mirrors with close < last swing low. The output is a state: +1 after the latest break was
  bullish, -1 after it was bearish, 0 before any break. If both break on one bar (possible only
  when the last swing low sits above the last swing high) both swings are used up and the state
  keeps its previous value.
- ``fvg``: a bullish gap forms at bar j >= 2 when low[j] > high[j-2], a bearish one when
  high[j] < low[j-2] (the two cannot both hold). Output at t: the sign of the most recent gap
  formed at j in (t-p, t], else 0. No fill logic.
- ``obr``: at a bullish break (as in ``bos``) on bar b the bullish order block becomes the last
  bearish candle (close < open) at an index < b (none if there has never been one); its zone is
  that candle's full range [low, high]. From bar b+1 on, the first bar with low <= zone high
  ends the block: if it also has high >= zone low it is a retest (+1 on that bar), otherwise it
  gapped clean through (no signal). A newer bullish break replaces the block. Bearish mirror:
  the last bullish candle (close > open) before a bearish break, first bar with high >= zone
  low, -1 when low <= zone high. If both blocks are retested on one bar, the one from the more
  recent break wins (0 if both came from the same bar). So +1/-1 mark single retest bars.
- ``sweep``: a swing level is liquidity until the first bar that trades through it. The first
  bar with low < the last swing low's level takes it: +1 if that bar closes above the level,
  otherwise it was a plain break (0); either way the level is used up until a new swing low is
  confirmed. Bearish mirror with high > last swing high and close below it (-1). A bar sweeping
  both sides reads 0.

Sessions (``sess(k)``): hour = floor(ts / 1 h) mod 24 of the bar *open* time (int64 ns since
the Unix epoch, UTC; no daylight saving). 1.0 when start <= hour < end for (start, end) in
``SESSION_HOURS[k]`` (Asia 0-9, London 7-16, New York 12-21, overlap 12-16), else 0.0. No NaN.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

NS_PER_HOUR = 3_600_000_000_000
SESSION_HOURS = ((0, 9), (7, 16), (12, 21), (12, 16))
_SESSION_START = np.array([h[0] for h in SESSION_HOURS], dtype=np.int64)
_SESSION_END = np.array([h[1] for h in SESSION_HOURS], dtype=np.int64)
NAN = np.nan


# ---- shared helpers ---------------------------------------------------------------------------

@nb.njit(cache=True)
def _fill_nan(out: np.ndarray, stop: int) -> None:
    for t in range(min(stop, out.shape[0])):
        out[t] = NAN


@nb.njit(cache=True)
def _roll_mean_std(x: np.ndarray, p: int, mean: np.ndarray, std: np.ndarray) -> None:
    """Mean and population std of x[t-p+1..t] into mean[t], std[t] (NaN warm-up, std 0.0 for an
    exactly constant window). Sums are taken relative to an anchor inside the window and redone
    from scratch every p bars, which bounds both cancellation and drift."""
    n = x.shape[0]
    _fill_nan(mean, p - 1)
    _fill_nan(std, p - 1)
    run = 0
    c = 0.0
    s1 = 0.0
    s2 = 0.0
    due = p - 1  # next bar whose window sums are recomputed from scratch
    for t in range(n):
        run = run + 1 if t > 0 and x[t] == x[t - 1] else 1
        if t < p - 1:
            continue
        if t == due:
            due += p
            c = x[t]
            s1 = 0.0
            s2 = 0.0
            for j in range(t - p + 1, t + 1):
                d = x[j] - c
                s1 += d
                s2 += d * d
        else:
            di = x[t] - c
            do = x[t - p] - c
            s1 += di - do
            s2 += di * di - do * do
        m = s1 / p
        mean[t] = c + m
        var = s2 / p - m * m
        std[t] = 0.0 if run >= p or var <= 0.0 else math.sqrt(var)


@nb.njit(cache=True)
def _is_swing_high(high: np.ndarray, i: int, n: int) -> bool:
    h = high[i]
    for j in range(i - n, i):
        if high[j] >= h:
            return False
    for j in range(i + 1, i + n + 1):  # noqa: SIM110 (numba: no generator in all())
        if high[j] > h:
            return False
    return True


@nb.njit(cache=True)
def _is_swing_low(low: np.ndarray, i: int, n: int) -> bool:
    lo = low[i]
    for j in range(i - n, i):
        if low[j] <= lo:
            return False
    for j in range(i + 1, i + n + 1):  # noqa: SIM110 (numba: no generator in all())
        if low[j] < lo:
            return False
    return True


@nb.njit(cache=True)
def swing_events(high: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Level of the swing high / low that becomes *known* at each bar, NaN where none: a swing
    at bar i is confirmed at bar i+n. The one place the SMC kernels learn about swings."""
    new_h = np.full(high.shape[0], NAN)
    new_l = np.full(high.shape[0], NAN)
    for t in range(2 * n, high.shape[0]):
        i = t - n
        if _is_swing_high(high, i, n):
            new_h[t] = high[i]
        if _is_swing_low(low, i, n):
            new_l[t] = low[i]
    return new_h, new_l


@nb.njit(cache=True)
def swings_nb(high: np.ndarray, low: np.ndarray, n: int,
              sh_level: np.ndarray, sl_level: np.ndarray) -> None:
    """Level of the last *confirmed* swing high / low at each bar (NaN before the first one).
    Exposed for tests and diagnostics."""
    new_h, new_l = swing_events(high, low, n)
    sh = NAN
    sl = NAN
    for t in range(high.shape[0]):
        if not math.isnan(new_h[t]):
            sh = new_h[t]
        if not math.isnan(new_l[t]):
            sl = new_l[t]
        sh_level[t] = sh
        sl_level[t] = sl


# ---- numeric primitives -----------------------------------------------------------------------

@nb.njit(cache=True)
def sma_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """SMA(p)/close - 1."""
    std = np.empty_like(out)
    _roll_mean_std(close, p, out, std)
    for t in range(p - 1, close.shape[0]):
        out[t] = out[t] / close[t] - 1.0


@nb.njit(cache=True)
def ema_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """EMA(p)/close - 1, EMA seeded with the SMA of the first p closes."""
    n = close.shape[0]
    _fill_nan(out, p - 1)
    if n < p:
        return
    a = 2.0 / (p + 1.0)
    e = 0.0
    for t in range(p):
        e += close[t]
    e /= p
    out[p - 1] = e / close[p - 1] - 1.0
    for t in range(p, n):
        e += a * (close[t] - e)
        out[t] = e / close[t] - 1.0


@nb.njit(cache=True)
def rsi_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """Wilder RSI in 0..100, averages seeded with the simple mean of the first p changes."""
    n = close.shape[0]
    _fill_nan(out, p)
    if n <= p:
        return
    g = 0.0
    lo = 0.0
    for t in range(1, p + 1):
        d = close[t] - close[t - 1]
        if d > 0.0:
            g += d
        else:
            lo -= d
    g /= p
    lo /= p
    for t in range(p, n):
        if t > p:
            d = close[t] - close[t - 1]
            g = (g * (p - 1) + max(d, 0.0)) / p
            lo = (lo * (p - 1) + max(-d, 0.0)) / p
        s = g + lo
        out[t] = 100.0 * g / s if s > 0.0 else NAN


@nb.njit(cache=True)
def roc_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """close/close[t-p] - 1."""
    _fill_nan(out, p)
    for t in range(p, close.shape[0]):
        out[t] = close[t] / close[t - p] - 1.0


@nb.njit(cache=True)
def macd_nb(close: np.ndarray, fast: int, slow: int, sig: int, out: np.ndarray) -> None:
    """(MACD - signal)/close in one pass; EMAs SMA-seeded like ``ema_nb``."""
    n = close.shape[0]
    first = slow + sig - 2
    _fill_nan(out, first)
    af = 2.0 / (fast + 1.0)
    aslow = 2.0 / (slow + 1.0)
    ag = 2.0 / (sig + 1.0)
    ef = 0.0
    es = 0.0
    sg = 0.0
    for t in range(n):
        c = close[t]
        if t < fast:
            ef += c
            if t == fast - 1:
                ef /= fast
        else:
            ef += af * (c - ef)
        if t < slow:
            es += c
            if t == slow - 1:
                es /= slow
        else:
            es += aslow * (c - es)
        if t < slow - 1:
            continue
        m = ef - es
        if t < first:
            sg += m
        elif t == first:
            sg = (sg + m) / sig
            out[t] = (m - sg) / c
        else:
            sg += ag * (m - sg)
            out[t] = (m - sg) / c


@nb.njit(cache=True)
def bollz_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """(close - SMA(p)) / population std(close, p)."""
    std = np.empty_like(out)
    _roll_mean_std(close, p, out, std)
    for t in range(p - 1, close.shape[0]):
        out[t] = (close[t] - out[t]) / std[t] if std[t] > 0.0 else NAN


@nb.njit(cache=True)
def donch_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, p: int,
             out: np.ndarray) -> None:
    """Position of close in the channel of the p previous bars, via monotone index deques."""
    n = close.shape[0]
    _fill_nan(out, p)
    cap = 1
    while cap < p + 1:
        cap *= 2
    mask = cap - 1
    qh = np.empty(cap, dtype=np.int64)
    ql = np.empty(cap, dtype=np.int64)
    hh = 0
    ht = 0  # deque of indices with decreasing highs: qh[hh..ht)
    lh = 0
    lt = 0
    for t in range(1, n):
        j = t - 1
        while ht > hh and high[qh[(ht - 1) & mask]] <= high[j]:
            ht -= 1
        qh[ht & mask] = j
        ht += 1
        while lt > lh and low[ql[(lt - 1) & mask]] >= low[j]:
            lt -= 1
        ql[lt & mask] = j
        lt += 1
        if qh[hh & mask] < t - p:
            hh += 1
        if ql[lh & mask] < t - p:
            lh += 1
        if t >= p:
            hi = high[qh[hh & mask]]
            lo = low[ql[lh & mask]]
            w = hi - lo
            out[t] = (close[t] - lo) / w if w > 0.0 else NAN


@nb.njit(cache=True)
def atrr_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, fast: int, slow: int,
            out: np.ndarray) -> None:
    """Wilder ATR(fast)/ATR(slow) on true range, both seeded with the mean of their first TRs."""
    n = close.shape[0]
    _fill_nan(out, slow)
    af = 0.0
    aslow = 0.0
    for t in range(1, n):
        pc = close[t - 1]
        tr = max(high[t] - low[t], abs(high[t] - pc), abs(low[t] - pc))
        if t <= fast:
            af += tr
            if t == fast:
                af /= fast
        else:
            af = (af * (fast - 1) + tr) / fast
        if t <= slow:
            aslow += tr
            if t == slow:
                aslow /= slow
        else:
            aslow = (aslow * (slow - 1) + tr) / slow
        if t >= slow:
            out[t] = af / aslow if aslow > 0.0 else NAN


@nb.njit(cache=True)
def volz_nb(volume: np.ndarray, p: int, out: np.ndarray) -> None:
    """(volume - mean(volume, p)) / population std(volume, p)."""
    std = np.empty_like(out)
    _roll_mean_std(volume, p, out, std)
    for t in range(p - 1, volume.shape[0]):
        out[t] = (volume[t] - out[t]) / std[t] if std[t] > 0.0 else NAN


@nb.njit(cache=True)
def retz_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """Log return / population std of the p previous log returns."""
    n = close.shape[0]
    _fill_nan(out, p + 1)
    if n <= p + 1:
        return
    r = np.empty(n - 1)
    for t in range(1, n):
        r[t - 1] = math.log(close[t] / close[t - 1])
    mean = np.empty(n - 1)
    std = np.empty(n - 1)
    _roll_mean_std(r, p, mean, std)  # std[k] covers r[k-p+1..k] = returns of bars k-p+2..k+1
    for t in range(p + 1, n):
        s = std[t - 2]  # returns of bars t-p..t-1
        out[t] = r[t - 1] / s if s > 0.0 else NAN


# ---- Smart-Money-Concepts structures -------------------------------------------------------------

@nb.njit(cache=True)
def bos_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray) -> None:
    """Break-of-structure state (+1 / -1 / 0) from swings with n bars each side."""
    state = 0.0
    sh = 0.0
    sl = 0.0
    sh_live = False
    sl_live = False
    new_h, new_l = swing_events(high, low, n)
    for t in range(close.shape[0]):
        if not math.isnan(new_h[t]):
            sh, sh_live = new_h[t], True
        if not math.isnan(new_l[t]):
            sl, sl_live = new_l[t], True
        up = sh_live and close[t] > sh
        dn = sl_live and close[t] < sl
        if up:
            sh_live = False
        if dn:
            sl_live = False
        if up and not dn:
            state = 1.0
        elif dn and not up:
            state = -1.0
        out[t] = state


@nb.njit(cache=True)
def fvg_nb(high: np.ndarray, low: np.ndarray, p: int, out: np.ndarray) -> None:
    """Sign of the most recent three-candle fair-value gap formed within the last p bars."""
    last = -1
    sign = 0.0
    for t in range(high.shape[0]):
        if t >= 2:
            if low[t] > high[t - 2]:
                last = t
                sign = 1.0
            elif high[t] < low[t - 2]:
                last = t
                sign = -1.0
        out[t] = sign if last >= 0 and t - last < p else 0.0


@nb.njit(cache=True)
def obr_nb(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int,
           out: np.ndarray) -> None:
    """Order-block retest events (+1 bullish block, -1 bearish block), see module doc."""
    sh = 0.0
    sl = 0.0
    sh_live = False
    sl_live = False
    last_down = -1
    last_up = -1
    bull_k = -1
    bull_b = -1
    bear_k = -1
    bear_b = -1
    new_h, new_l = swing_events(high, low, n)
    for t in range(close.shape[0]):
        if not math.isnan(new_h[t]):
            sh, sh_live = new_h[t], True
        if not math.isnan(new_l[t]):
            sl, sl_live = new_l[t], True
        bull_hit = False
        bear_hit = False
        if bull_k >= 0 and low[t] <= high[bull_k]:
            bull_hit = high[t] >= low[bull_k]
            bull_k = -1
        if bear_k >= 0 and high[t] >= low[bear_k]:
            bear_hit = low[t] <= high[bear_k]
            bear_k = -1
        v = 0.0
        if bull_hit and bear_hit:
            v = 1.0 if bull_b > bear_b else (-1.0 if bear_b > bull_b else 0.0)
        elif bull_hit:
            v = 1.0
        elif bear_hit:
            v = -1.0
        out[t] = v
        if sh_live and close[t] > sh:
            sh_live = False
            bull_k = last_down
            bull_b = t
        if sl_live and close[t] < sl:
            sl_live = False
            bear_k = last_up
            bear_b = t
        if close[t] < open_[t]:
            last_down = t
        elif close[t] > open_[t]:
            last_up = t


@nb.njit(cache=True)
def sweep_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int,
             out: np.ndarray) -> None:
    """Liquidity sweep of the last swing (+1 below a swing low, -1 above a swing high)."""
    sh = 0.0
    sl = 0.0
    sh_live = False
    sl_live = False
    new_h, new_l = swing_events(high, low, n)
    for t in range(close.shape[0]):
        if not math.isnan(new_h[t]):
            sh, sh_live = new_h[t], True
        if not math.isnan(new_l[t]):
            sl, sl_live = new_l[t], True
        bull = False
        bear = False
        if sl_live and low[t] < sl:
            sl_live = False
            bull = close[t] > sl
        if sh_live and high[t] > sh:
            sh_live = False
            bear = close[t] < sh
        out[t] = 1.0 if bull and not bear else (-1.0 if bear and not bull else 0.0)


# ---- sessions ------------------------------------------------------------------------------------

@nb.njit(cache=True)
def sess_nb(ts: np.ndarray, k: int, out: np.ndarray) -> None:
    """1.0 inside session k by UTC hour of the bar open time, else 0.0."""
    if k < 0 or k >= _SESSION_START.shape[0]:
        raise IndexError("session index out of range")
    start = _SESSION_START[k]
    end = _SESSION_END[k]
    for t in range(ts.shape[0]):
        h = (ts[t] // NS_PER_HOUR) % 24
        out[t] = 1.0 if start <= h < end else 0.0
