"""Numba kernels for the primitive library: one per entry of ``genome.primitives.PRIMITIVES``.

Every kernel is a plain function over contiguous float64 / int64 arrays that *fills* a
caller-supplied ``out`` row (the feature table writes straight into its own rows, so a build
allocates the table and a few temporaries, never per bar). Every value at bar t is computed
from bars <= t only. Each kernel is written as an *advance* that carries its state in a
documented record (see "continuation" below), so a table can be continued by new bars with the
same floating-point operations as a build from its origin (t = 0 below is the origin). Warm-up bars whose window is incomplete are NaN; a division by zero
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
from scratch every p bars counted from the origin, so cancellation and drift stay at rounding
level on long series.

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


# ---- continuation ----------------------------------------------------------------------------
#
# Every kernel is an *advance*: ``xxx_adv(inputs..., t0, base, params..., st, out)`` computes the
# bars t0..n-1 of its (local) input arrays into out[0 .. n-t0). Bar t of the arrays is bar
# T = base + t counted from the table's origin; every warm-up test, seed and re-anchoring
# schedule uses T, so continuing a table gives the same floating-point operations as building
# it from the origin in one pass. The arrays must hold at least TAIL bars before t0 (or start at
# the origin, base = 0): no kernel reads further back. What a kernel carries from one bar to the
# next lives in its row of the state record ``st`` (float64 [N_STATE]; indexes and flags are
# stored as exact floats), with these slots:
#
# - rolling mean/std (sma, bollz, volz; retz on log returns): 0 run of equal values,
#   1 anchor, 2 sum of x - anchor, 3 sum of squares, 4 next re-anchoring bar;
#   retz adds 5, the std of the previous bar's window (NaN before there is one)
# - ema: 0 EMA (or the running sum while seeding); rsi: 0 average gain, 1 average loss
# - macd: 0 EMA fast, 1 EMA slow, 2 signal; atrr: 0 ATR fast, 1 ATR slow
# - roc, donch, fvg's gap test, sess: nothing beyond the kept bars (donch rebuilds its monotone
#   deques from the last p + 1 bars: their content is a function of the window alone)
# - bos: 0 state, 1 swing high, 2 swing low, 3 high live, 4 low live
# - fvg: 0 bar of the last gap (-1 none), 1 its sign
# - sweep: 1..4 as bos
# - obr: 1..4 as bos, 5/6/7 last down candle seen, its high, its low; 8/9/10 the same for the
#   last up candle; 11/12/13/14 bullish block live, zone high, zone low, break bar; 15..18 the
#   bearish block likewise

TAIL = 256  # bars of history an advance may read before t0 (>= the longest lookback + 2)
N_STATE = 20  # slots per row of the state record

# kind codes of the dispatching advance, one per primitive (``genome.features.ROW_KIND``)
K_SMA, K_EMA, K_RSI, K_ROC, K_MACD, K_BOLLZ, K_DONCH, K_ATRR = 0, 1, 2, 3, 4, 5, 6, 7
K_VOLZ, K_RETZ, K_BOS, K_FVG, K_OBR, K_SWEEP, K_SESS = 8, 9, 10, 11, 12, 13, 14


@nb.njit(cache=True)
def init_state(kind: int, p0: int, st: np.ndarray) -> None:
    """The state of a row before its first bar (the origin)."""
    st[:] = 0.0
    if kind in (K_SMA, K_BOLLZ, K_VOLZ, K_RETZ):
        st[4] = p0 - 1
        if kind == K_RETZ:
            st[5] = NAN
    elif kind == K_FVG:
        st[0] = -1.0


# ---- shared helpers ---------------------------------------------------------------------------

@nb.njit(cache=True)
def _roll_adv(x: np.ndarray, t0: int, base: int, p: int, st: np.ndarray, mean: np.ndarray,
              std: np.ndarray) -> None:
    """Mean and population std of x[T-p+1..T] into mean[t-t0], std[t-t0] (NaN warm-up, std 0.0
    for an exactly constant window). Sums are taken relative to an anchor inside the window and
    redone from scratch every p bars counted from the origin, which bounds both cancellation and
    drift."""
    run = st[0]
    c = st[1]
    s1 = st[2]
    s2 = st[3]
    due = int(st[4])  # next bar whose window sums are recomputed from scratch
    for t in range(t0, x.shape[0]):
        tt = base + t
        run = run + 1.0 if tt > 0 and x[t] == x[t - 1] else 1.0
        if tt < p - 1:
            mean[t - t0] = NAN
            std[t - t0] = NAN
            continue
        if tt == due:
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
        mean[t - t0] = c + m
        var = s2 / p - m * m
        std[t - t0] = 0.0 if run >= p or var <= 0.0 else math.sqrt(var)
    st[0] = run
    st[1] = c
    st[2] = s1
    st[3] = s2
    st[4] = due


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
def _new_swing_high(high: np.ndarray, t: int, tt: int, n: int) -> float:
    """Level of the swing high confirmed at local bar t (absolute tt), NaN if none: a swing at
    bar i is confirmed at bar i + n. With ``_new_swing_low``, the one place the SMC kernels
    learn about swings."""
    if tt >= 2 * n and _is_swing_high(high, t - n, n):
        return high[t - n]
    return NAN


@nb.njit(cache=True)
def _new_swing_low(low: np.ndarray, t: int, tt: int, n: int) -> float:
    if tt >= 2 * n and _is_swing_low(low, t - n, n):
        return low[t - n]
    return NAN


@nb.njit(cache=True)
def swing_events(high: np.ndarray, low: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Level of the swing high / low that becomes *known* at each bar, NaN where none."""
    new_h = np.full(high.shape[0], NAN)
    new_l = np.full(high.shape[0], NAN)
    for t in range(2 * n, high.shape[0]):
        new_h[t] = _new_swing_high(high, t, t, n)
        new_l[t] = _new_swing_low(low, t, t, n)
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
def sma_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
            out: np.ndarray) -> None:
    """SMA(p)/close - 1."""
    std = np.empty_like(out)
    _roll_adv(close, t0, base, p, st, out, std)
    for t in range(max(t0, p - 1 - base), close.shape[0]):
        out[t - t0] = out[t - t0] / close[t] - 1.0


@nb.njit(cache=True)
def ema_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
            out: np.ndarray) -> None:
    """EMA(p)/close - 1, EMA seeded with the SMA of the first p closes."""
    a = 2.0 / (p + 1.0)
    e = st[0]
    for t in range(t0, close.shape[0]):
        tt = base + t
        if tt < p:
            e += close[t]
            if tt < p - 1:
                out[t - t0] = NAN
                continue
            e /= p
        else:
            e += a * (close[t] - e)
        out[t - t0] = e / close[t] - 1.0
    st[0] = e


@nb.njit(cache=True)
def rsi_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
            out: np.ndarray) -> None:
    """Wilder RSI in 0..100, averages seeded with the simple mean of the first p changes."""
    g = st[0]
    lo = st[1]
    for t in range(t0, close.shape[0]):
        tt = base + t
        if tt == 0:
            out[t - t0] = NAN
            continue
        d = close[t] - close[t - 1]
        if tt <= p:
            if d > 0.0:
                g += d
            else:
                lo -= d
            if tt < p:
                out[t - t0] = NAN
                continue
            g /= p
            lo /= p
        else:
            g = (g * (p - 1) + max(d, 0.0)) / p
            lo = (lo * (p - 1) + max(-d, 0.0)) / p
        s = g + lo
        out[t - t0] = 100.0 * g / s if s > 0.0 else NAN
    st[0] = g
    st[1] = lo


@nb.njit(cache=True)
def roc_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
            out: np.ndarray) -> None:
    """close/close[t-p] - 1."""
    for t in range(t0, close.shape[0]):
        out[t - t0] = NAN if base + t < p else close[t] / close[t - p] - 1.0


@nb.njit(cache=True)
def macd_adv(close: np.ndarray, t0: int, base: int, fast: int, slow: int, sig: int,
             st: np.ndarray, out: np.ndarray) -> None:
    """(MACD - signal)/close in one pass; EMAs SMA-seeded like ``ema_adv``."""
    first = slow + sig - 2
    af = 2.0 / (fast + 1.0)
    aslow = 2.0 / (slow + 1.0)
    ag = 2.0 / (sig + 1.0)
    ef = st[0]
    es = st[1]
    sg = st[2]
    for t in range(t0, close.shape[0]):
        tt = base + t
        c = close[t]
        if tt < fast:
            ef += c
            if tt == fast - 1:
                ef /= fast
        else:
            ef += af * (c - ef)
        if tt < slow:
            es += c
            if tt == slow - 1:
                es /= slow
        else:
            es += aslow * (c - es)
        if tt < slow - 1:
            out[t - t0] = NAN
            continue
        m = ef - es
        if tt < first:
            sg += m
            out[t - t0] = NAN
        elif tt == first:
            sg = (sg + m) / sig
            out[t - t0] = (m - sg) / c
        else:
            sg += ag * (m - sg)
            out[t - t0] = (m - sg) / c
    st[0] = ef
    st[1] = es
    st[2] = sg


@nb.njit(cache=True)
def bollz_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
              out: np.ndarray) -> None:
    """(close - SMA(p)) / population std(close, p)."""
    std = np.empty_like(out)
    _roll_adv(close, t0, base, p, st, out, std)
    for t in range(max(t0, p - 1 - base), close.shape[0]):
        s = std[t - t0]
        out[t - t0] = (close[t] - out[t - t0]) / s if s > 0.0 else NAN


@nb.njit(cache=True)
def donch_adv(high: np.ndarray, low: np.ndarray, close: np.ndarray, t0: int, base: int, p: int,
              st: np.ndarray, out: np.ndarray) -> None:
    """Position of close in the channel of the p previous bars, via monotone index deques
    (rebuilt from the p + 1 bars before t0, so nothing is carried in ``st``)."""
    n = close.shape[0]
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
    if t0 == 0 and base == 0 and n > 0:
        out[0] = NAN
    for t in range(max(1, t0 - p), n):
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
        if t < t0:
            continue
        if base + t >= p:
            hi = high[qh[hh & mask]]
            lo = low[ql[lh & mask]]
            w = hi - lo
            out[t - t0] = (close[t] - lo) / w if w > 0.0 else NAN
        else:
            out[t - t0] = NAN


@nb.njit(cache=True)
def atrr_adv(high: np.ndarray, low: np.ndarray, close: np.ndarray, t0: int, base: int,
             fast: int, slow: int, st: np.ndarray, out: np.ndarray) -> None:
    """Wilder ATR(fast)/ATR(slow) on true range, both seeded with the mean of their first TRs."""
    af = st[0]
    aslow = st[1]
    for t in range(t0, close.shape[0]):
        tt = base + t
        if tt == 0:
            out[t - t0] = NAN
            continue
        pc = close[t - 1]
        tr = max(high[t] - low[t], abs(high[t] - pc), abs(low[t] - pc))
        if tt <= fast:
            af += tr
            if tt == fast:
                af /= fast
        else:
            af = (af * (fast - 1) + tr) / fast
        if tt <= slow:
            aslow += tr
            if tt == slow:
                aslow /= slow
        else:
            aslow = (aslow * (slow - 1) + tr) / slow
        if tt >= slow:
            out[t - t0] = af / aslow if aslow > 0.0 else NAN
        else:
            out[t - t0] = NAN
    st[0] = af
    st[1] = aslow


@nb.njit(cache=True)
def volz_adv(volume: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
             out: np.ndarray) -> None:
    """(volume - mean(volume, p)) / population std(volume, p)."""
    std = np.empty_like(out)
    _roll_adv(volume, t0, base, p, st, out, std)
    for t in range(max(t0, p - 1 - base), volume.shape[0]):
        s = std[t - t0]
        out[t - t0] = (volume[t] - out[t - t0]) / s if s > 0.0 else NAN


@nb.njit(cache=True)
def retz_adv(close: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
             out: np.ndarray) -> None:
    """Log return / population std of the p previous log returns.

    Return k (absolute) is log(close[k+1]/close[k]); the rolling std runs over returns, and the
    std of the window ending one return earlier is carried in st[5]."""
    n = close.shape[0]
    if n == 0:
        return
    j0 = max(t0 - 1, 0)  # first return to add to the rolling window
    lo = max(j0 - p, 0)  # the window's sums may reach p returns back
    r = np.empty(n - 1 - lo) if n - 1 > lo else np.empty(0)
    for j in range(lo, n - 1):
        r[j - lo] = math.log(close[j + 1] / close[j])
    m = n - 1 - j0
    if m <= 0:
        if t0 == 0 and base == 0:
            out[0] = NAN
        return
    mean = np.empty(m)
    std = np.empty(m)
    prev = st[5]
    roll = st[:5]
    _roll_adv(r, j0 - lo, base + lo, p, roll, mean, std)
    if t0 == 0 and base == 0:
        out[0] = NAN
    for j in range(j0, n - 1):
        t = j + 1
        if base + t < p + 1:
            out[t - t0] = NAN
        else:
            out[t - t0] = r[j - lo] / prev if prev > 0.0 else NAN
        prev = std[j - j0]
    st[5] = prev


# ---- Smart-Money-Concepts structures -------------------------------------------------------------

@nb.njit(cache=True)
def bos_adv(high: np.ndarray, low: np.ndarray, close: np.ndarray, t0: int, base: int, n: int,
            st: np.ndarray, out: np.ndarray) -> None:
    """Break-of-structure state (+1 / -1 / 0) from swings with n bars each side."""
    state = st[0]
    sh = st[1]
    sl = st[2]
    sh_live = st[3] != 0.0
    sl_live = st[4] != 0.0
    for t in range(t0, close.shape[0]):
        tt = base + t
        nh = _new_swing_high(high, t, tt, n)
        nl = _new_swing_low(low, t, tt, n)
        if not math.isnan(nh):
            sh, sh_live = nh, True
        if not math.isnan(nl):
            sl, sl_live = nl, True
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
        out[t - t0] = state
    st[0] = state
    st[1] = sh
    st[2] = sl
    st[3] = 1.0 if sh_live else 0.0
    st[4] = 1.0 if sl_live else 0.0


@nb.njit(cache=True)
def fvg_adv(high: np.ndarray, low: np.ndarray, t0: int, base: int, p: int, st: np.ndarray,
            out: np.ndarray) -> None:
    """Sign of the most recent three-candle fair-value gap formed within the last p bars."""
    last = int(st[0])
    sign = st[1]
    for t in range(t0, high.shape[0]):
        tt = base + t
        if tt >= 2:
            if low[t] > high[t - 2]:
                last = tt
                sign = 1.0
            elif high[t] < low[t - 2]:
                last = tt
                sign = -1.0
        out[t - t0] = sign if last >= 0 and tt - last < p else 0.0
    st[0] = last
    st[1] = sign


@nb.njit(cache=True)
def obr_adv(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, t0: int,
            base: int, n: int, st: np.ndarray, out: np.ndarray) -> None:
    """Order-block retest events (+1 bullish block, -1 bearish block), see module doc.
    Blocks are carried by their zone (high, low), not their bar, so no old bar is needed."""
    sh, sl = st[1], st[2]
    sh_live, sl_live = st[3] != 0.0, st[4] != 0.0
    down_ok, down_h, down_l = st[5] != 0.0, st[6], st[7]
    up_ok, up_h, up_l = st[8] != 0.0, st[9], st[10]
    bull_on, bull_h, bull_l, bull_b = st[11] != 0.0, st[12], st[13], st[14]
    bear_on, bear_h, bear_l, bear_b = st[15] != 0.0, st[16], st[17], st[18]
    for t in range(t0, close.shape[0]):
        tt = base + t
        nh = _new_swing_high(high, t, tt, n)
        nl = _new_swing_low(low, t, tt, n)
        if not math.isnan(nh):
            sh, sh_live = nh, True
        if not math.isnan(nl):
            sl, sl_live = nl, True
        bull_hit = False
        bear_hit = False
        if bull_on and low[t] <= bull_h:
            bull_hit = high[t] >= bull_l
            bull_on = False
        if bear_on and high[t] >= bear_l:
            bear_hit = low[t] <= bear_h
            bear_on = False
        v = 0.0
        if bull_hit and bear_hit:
            v = 1.0 if bull_b > bear_b else (-1.0 if bear_b > bull_b else 0.0)
        elif bull_hit:
            v = 1.0
        elif bear_hit:
            v = -1.0
        out[t - t0] = v
        if sh_live and close[t] > sh:
            sh_live = False
            bull_on, bull_h, bull_l, bull_b = down_ok, down_h, down_l, float(tt)
        if sl_live and close[t] < sl:
            sl_live = False
            bear_on, bear_h, bear_l, bear_b = up_ok, up_h, up_l, float(tt)
        if close[t] < open_[t]:
            down_ok, down_h, down_l = True, high[t], low[t]
        elif close[t] > open_[t]:
            up_ok, up_h, up_l = True, high[t], low[t]
    st[1], st[2] = sh, sl
    st[3], st[4] = 1.0 if sh_live else 0.0, 1.0 if sl_live else 0.0
    st[5], st[6], st[7] = 1.0 if down_ok else 0.0, down_h, down_l
    st[8], st[9], st[10] = 1.0 if up_ok else 0.0, up_h, up_l
    st[11], st[12], st[13], st[14] = 1.0 if bull_on else 0.0, bull_h, bull_l, bull_b
    st[15], st[16], st[17], st[18] = 1.0 if bear_on else 0.0, bear_h, bear_l, bear_b


@nb.njit(cache=True)
def sweep_adv(high: np.ndarray, low: np.ndarray, close: np.ndarray, t0: int, base: int, n: int,
              st: np.ndarray, out: np.ndarray) -> None:
    """Liquidity sweep of the last swing (+1 below a swing low, -1 above a swing high)."""
    sh = st[1]
    sl = st[2]
    sh_live = st[3] != 0.0
    sl_live = st[4] != 0.0
    for t in range(t0, close.shape[0]):
        tt = base + t
        nh = _new_swing_high(high, t, tt, n)
        nl = _new_swing_low(low, t, tt, n)
        if not math.isnan(nh):
            sh, sh_live = nh, True
        if not math.isnan(nl):
            sl, sl_live = nl, True
        bull = False
        bear = False
        if sl_live and low[t] < sl:
            sl_live = False
            bull = close[t] > sl
        if sh_live and high[t] > sh:
            sh_live = False
            bear = close[t] < sh
        out[t - t0] = 1.0 if bull and not bear else (-1.0 if bear and not bull else 0.0)
    st[1] = sh
    st[2] = sl
    st[3] = 1.0 if sh_live else 0.0
    st[4] = 1.0 if sl_live else 0.0


# ---- sessions ------------------------------------------------------------------------------------

@nb.njit(cache=True)
def sess_adv(ts: np.ndarray, t0: int, k: int, out: np.ndarray) -> None:
    """1.0 inside session k by UTC hour of the bar open time, else 0.0."""
    if k < 0 or k >= _SESSION_START.shape[0]:
        raise IndexError("session index out of range")
    start = _SESSION_START[k]
    end = _SESSION_END[k]
    for t in range(t0, ts.shape[0]):
        h = (ts[t] // NS_PER_HOUR) % 24
        out[t - t0] = 1.0 if start <= h < end else 0.0


# ---- every row at once ---------------------------------------------------------------------------

@nb.njit(cache=True)
def advance_rows(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, volume: np.ndarray, t0: int, base: int, kind: np.ndarray,
                 par: np.ndarray, state: np.ndarray, out: np.ndarray) -> None:
    """Advance every row (``kind[row]``, parameters ``par[row]``) over bars t0..n-1 of the
    arrays, carrying ``state[row]``, into ``out[row, 0 .. n-t0)``: the batch build (t0 = base
    = 0) and every continuation run this same code."""
    for row in range(kind.shape[0]):
        k = kind[row]
        p0 = par[row, 0]
        st = state[row]
        o = out[row]
        if k == K_SMA:
            sma_adv(close, t0, base, p0, st, o)
        elif k == K_EMA:
            ema_adv(close, t0, base, p0, st, o)
        elif k == K_RSI:
            rsi_adv(close, t0, base, p0, st, o)
        elif k == K_ROC:
            roc_adv(close, t0, base, p0, st, o)
        elif k == K_MACD:
            macd_adv(close, t0, base, p0, par[row, 1], par[row, 2], st, o)
        elif k == K_BOLLZ:
            bollz_adv(close, t0, base, p0, st, o)
        elif k == K_DONCH:
            donch_adv(high, low, close, t0, base, p0, st, o)
        elif k == K_ATRR:
            atrr_adv(high, low, close, t0, base, p0, par[row, 1], st, o)
        elif k == K_VOLZ:
            volz_adv(volume, t0, base, p0, st, o)
        elif k == K_RETZ:
            retz_adv(close, t0, base, p0, st, o)
        elif k == K_BOS:
            bos_adv(high, low, close, t0, base, p0, st, o)
        elif k == K_FVG:
            fvg_adv(high, low, t0, base, p0, st, o)
        elif k == K_OBR:
            obr_adv(open_, high, low, close, t0, base, p0, st, o)
        elif k == K_SWEEP:
            sweep_adv(high, low, close, t0, base, p0, st, o)
        elif k == K_SESS:
            sess_adv(ts, t0, p0, o)
        else:
            raise ValueError("unknown primitive kind")


# ---- one row from the origin (tests, diagnostics) ------------------------------------------------

@nb.njit(cache=True)
def _fresh(kind: int, p0: int) -> np.ndarray:
    st = np.empty(N_STATE)
    init_state(kind, p0, st)
    return st


@nb.njit(cache=True)
def sma_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    """SMA(p)/close - 1 over a whole series."""
    sma_adv(close, 0, 0, p, _fresh(K_SMA, p), out)


@nb.njit(cache=True)
def ema_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    ema_adv(close, 0, 0, p, _fresh(K_EMA, p), out)


@nb.njit(cache=True)
def rsi_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    rsi_adv(close, 0, 0, p, _fresh(K_RSI, p), out)


@nb.njit(cache=True)
def roc_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    roc_adv(close, 0, 0, p, _fresh(K_ROC, p), out)


@nb.njit(cache=True)
def macd_nb(close: np.ndarray, fast: int, slow: int, sig: int, out: np.ndarray) -> None:
    macd_adv(close, 0, 0, fast, slow, sig, _fresh(K_MACD, fast), out)


@nb.njit(cache=True)
def bollz_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    bollz_adv(close, 0, 0, p, _fresh(K_BOLLZ, p), out)


@nb.njit(cache=True)
def donch_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, p: int,
             out: np.ndarray) -> None:
    donch_adv(high, low, close, 0, 0, p, _fresh(K_DONCH, p), out)


@nb.njit(cache=True)
def atrr_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, fast: int, slow: int,
            out: np.ndarray) -> None:
    atrr_adv(high, low, close, 0, 0, fast, slow, _fresh(K_ATRR, fast), out)


@nb.njit(cache=True)
def volz_nb(volume: np.ndarray, p: int, out: np.ndarray) -> None:
    volz_adv(volume, 0, 0, p, _fresh(K_VOLZ, p), out)


@nb.njit(cache=True)
def retz_nb(close: np.ndarray, p: int, out: np.ndarray) -> None:
    retz_adv(close, 0, 0, p, _fresh(K_RETZ, p), out)


@nb.njit(cache=True)
def bos_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray) -> None:
    bos_adv(high, low, close, 0, 0, n, _fresh(K_BOS, n), out)


@nb.njit(cache=True)
def fvg_nb(high: np.ndarray, low: np.ndarray, p: int, out: np.ndarray) -> None:
    fvg_adv(high, low, 0, 0, p, _fresh(K_FVG, p), out)


@nb.njit(cache=True)
def obr_nb(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int,
           out: np.ndarray) -> None:
    obr_adv(open_, high, low, close, 0, 0, n, _fresh(K_OBR, n), out)


@nb.njit(cache=True)
def sweep_nb(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int,
             out: np.ndarray) -> None:
    sweep_adv(high, low, close, 0, 0, n, _fresh(K_SWEEP, n), out)


@nb.njit(cache=True)
def sess_nb(ts: np.ndarray, k: int, out: np.ndarray) -> None:
    sess_adv(ts, 0, k, out)


# ---- the live step -------------------------------------------------------------------------------

@nb.njit(cache=True)
def live_step_rows(ts_buf: np.ndarray, px: np.ndarray, k: int, n_bars: int, ts: int, o: float,
                   h: float, lo: float, c: float, v: float, kind: np.ndarray, par: np.ndarray,
                   state: np.ndarray, out: np.ndarray) -> int:
    """One new bar in place: the kept bars (``ts_buf`` int64 [TAIL + 1], ``px`` float64
    [5, TAIL + 1] open/high/low/close/volume, the first ``k`` filled, bar ``n_bars - k`` of the
    origin first) get the bar appended, every row advances by it into ``out[:, 0]`` through
    ``advance_rows`` (so the values equal the batch's), and the buffers drop their oldest bar
    once more than TAIL are kept. Returns the new fill count. No allocation per bar beyond
    the kernels' small temporaries."""
    ts_buf[k] = ts
    px[0, k] = o
    px[1, k] = h
    px[2, k] = lo
    px[3, k] = c
    px[4, k] = v
    m = k + 1
    advance_rows(ts_buf[:m], px[0, :m], px[1, :m], px[2, :m], px[3, :m], px[4, :m], k,
                 n_bars - k, kind, par, state, out)
    if m <= TAIL:
        return m
    for i in range(TAIL):
        ts_buf[i] = ts_buf[i + 1]
        for f in range(5):
            px[f, i] = px[f, i + 1]
    return TAIL
