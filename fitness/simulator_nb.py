"""The backtest kernel: one genome over one segment of one symbol's bars, the batch over many, and
the live step (one bar at a time), all through the same loop (``_run``; the live step runs it
over a one-bar segment), so backtest and live trading cannot drift apart.

Semantics (the reference simulator in tests/reference_sim.py implements the same, plainly):

- **Decisions at the close of bar t, fills at the open of bar t+1.** Rule sets read feature
  values at t (and t-1 for crossings); a NaN makes a comparison false (``fitness.rules_nb``).
  ``fill_mode = 1`` (a comparator mode used only for the vectorbt parity check) fills at the
  close of bar t instead.
- **Signals.** Flat: long entry without short entry → buy; short without long → sell short.
  Long: a short entry reverses (exit, then short), else an exit signal or the time limit closes.
  Short mirrors long. In a regime whose mode is *fade*, long and short entries swap; in a regime
  whose mode is *off*, or outside the session window / weekdays, no new entries are taken but
  exits still apply. Regime = annualised σ̂ at t against the genome's calm/storm thresholds.
- **Volatility and sizing.** σ̂²_t = w·variance[variant, t] + (1-w)·rv[window, t], per bar of log
  returns. Stop distance in price = k_stop · σ̂_t · close_t. Units = risk_pct · equity_t /
  (stop distance · value_per_unit), capped so notional ≤ max_leverage · equity, rounded down to
  whole minimum lots; an entry below one lot is skipped. Unknown σ̂ (NaN/0) → no entry.
  ``sizing_mode = 1`` (parity mode) puts all equity in, fractional units, no stop: |units| =
  cash / (open · (1 + cost_frac) + cost_abs) for a long and a short alike (a short is not sized
  on its smaller net proceeds).
- **Stops and targets.** The stop sits at fill price ∓ stop distance, the take-profit at
  ± tp_mult · stop distance. They are checked against the high and low of every bar after the
  fill, starting with the fill bar itself (the rest of that bar follows the open). A bar that
  opens beyond the stop fills at its open; when stop and take-profit are both inside one bar
  the stop fills first. A trailing stop moves to high_t − distance (low_t + distance for shorts)
  at the close of t, effective from bar t+1.
- **Costs** on every fill: price · cost_frac + cost_abs per unit against the trader (half the
  spread, commission and slippage, from the symbol's cost model in bps or pips). Financing:
  |notional| · financing_per_bar charged at each close while a position is open.
- **Equity** = cash + units · close · value_per_unit. A segment continues from the state record
  it is given (batch evaluation: flat with ``capital``). With ``close_out`` a position still open
  at the segment's last bar is closed at its close and no decision is made there (batch
  evaluation); without it (live trading, a segment that is resumed later) the last bar decides
  like any other and the state is handed on.
- **Outputs**: net returns in sparse form (``r[j]`` at segment offset ``at[j]``, 0.0 on every
  other bar: the bars skipped while flat); trade statistics; with ``record`` also the equity and
  position per bar and the trade list (entry/exit bar, side, units, prices, pnl, reason).

Speed: rule sets are read as bitmasks (condition masks from ``fitness.rules_nb``, built once per
run by ``fitness.masks.MaskCache`` and combined per genome with word operations); the loop jumps
over flat bars where no entry can fire (trailing-zero count on ``(long xor short) & gate``: a
flat bar with nothing pending has return exactly 0.0) and steps bar by bar only in the market
or with an order pending; σ̂ and the regime are computed only on bars where an entry rule
fires inside the session. The gate (session, weekdays) is folded into the candidate mask; the
regime is not (it needs each genome's σ̂ blend, so it is cheaper at the few candidate bars).
Buffers are per chunk of jobs; the loop keeps its state in local scalars.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from fitness.metrics_nb import SPARSE_SCRATCH, fill_metrics_sparse
from fitness.rules_nb import cond_value, in_gate
from genome.schema import K_SLOTS

# The semantics above, as a number: bump it whenever a change here (fills, costs, sizing, stops,
# the state record) can change what a genome trades. A champion bundle records it, and the
# bundle reader refuses a bundle from a kernel version this build does not know.
KERNEL_VERSION = 2

_JIT = {"cache": True, "error_model": "numpy"}

# compiled genome layout (see fitness/compile.py)
SLOT_LHS, SLOT_RHS, SLOT_CMP = 0, 1, 2
P_K_STOP, P_TP_MULT, P_RISK, P_BLEND, P_CALM, P_STORM = 0, 1, 2, 3, 4, 5
N_FPARAMS = 6
I_MODE0, I_SES_START, I_SES_END, I_WEEKMASK, I_VARIANT, I_RVWIN = 0, 3, 4, 5, 6, 7
I_USE_TP, I_TRAIL, I_MAX_BARS = 8, 9, 10
N_IPARAMS = 11

# market config vector
C_CAPITAL, C_COST_FRAC, C_COST_ABS, C_FIN_BAR, C_VPU, C_MIN_LOT, C_MAX_LEV, C_BPY = range(8)
C_FILL_MODE, C_SIZING_MODE = 8, 9
N_CONFIG = 10

# trade record columns and exit reasons
T_ENTRY, T_EXIT, T_SIDE, T_UNITS, T_ENTRY_PX, T_EXIT_PX, T_PNL, T_REASON = range(8)
N_TRADE_COLS = 8
R_SIGNAL, R_STOP, R_TP, R_TIME, R_REVERSE, R_END = 0, 1, 2, 3, 4, 5

# ---- the state record: float64[N_STATE], everything a segment hands to the next ---------------
# A flat float64 vector with named slots (numba keeps it in L1 and reads it without the
# indirections of a structured record). Integers (bars, counts, flags) are stored exactly.
ST_CASH = 0         # cash (money); equity = cash + units · close · value_per_unit
ST_UNITS = 1        # signed units held (> 0 long, < 0 short, 0 flat)
ST_ENTRY_PX = 2     # fill price of the open position, costs included
ST_ENTRY_BAR = 3    # absolute bar of that fill (-1 when none yet)
ST_STOP = 4         # stop level; with a trailing stop, the trailing level (already moved)
ST_TP = 5           # take-profit level
ST_DIST = 6         # stop distance in price (0: no stop, as in full-equity sizing)
ST_HELD = 7         # closes the position has been held through
ST_FIN_PAID = 8     # financing paid on the open position (booked into its trade's pnl)
ST_PEND_EXIT = 9    # 1: close the position at the next open (decided at the last close)
ST_PEND_REASON = 10  # exit reason of that pending close (R_*)
ST_PEND_UNITS = 11  # signed units to open at the next open (0: none)
ST_PEND_DIST = 12   # stop distance of that pending entry
ST_PREV_EQ = 13     # equity at the last close (the denominator of the next bar's return)
ST_HAS_PREV = 14    # 1: ST_PREV_VALUES hold the bar before the next one (crossings can fire)
ST_LAST_BAR = 15    # absolute bar of the last close processed (-1: none)
ST_PREV_VALUES = 16  # [2 · (rs · K_SLOTS + j) + 0/1]: lhs / rhs value of slot j of rule set rs
N_STATE = ST_PREV_VALUES + 2 * 3 * K_SLOTS  # at the last close (what crossings need at t-1)

# running statistics of one segment (S_RECORDED: rows written to the trade list)
S_TRADES, S_WINS, S_GROSS_WIN, S_GROSS_LOSS, S_TURNOVER, S_RECORDED, S_IN_MARKET = range(7)
N_STATS = 7

# live step decision record
D_UNITS = 0       # signed units the strategy wants after the next open (target position)
D_EXIT = 1        # 1: close the open position at the next open
D_REASON = 2      # exit reason (R_*) of that close
D_STOP = 3        # stop level of the position held now (NaN when flat or no stop)
D_TP = 4          # take-profit level of the position held now (NaN when none)
D_ENTRY_DIST = 5  # stop distance of a new entry (stop = fill ∓ dist, target ± tp_mult · dist)
N_DECISION = 6


@nb.njit(**_JIT)
def init_state(st: np.ndarray, capital: float) -> None:
    """A flat state with ``capital`` in cash, before any bar."""
    st[:] = 0.0
    st[ST_CASH] = capital
    st[ST_PREV_EQ] = capital
    st[ST_ENTRY_BAR] = -1.0
    st[ST_LAST_BAR] = -1.0


@nb.njit(**_JIT)
def store_prev(st: np.ndarray, F: np.ndarray, slots: np.ndarray, thr: np.ndarray,
               n_active: np.ndarray, t: int) -> None:
    """Record the rule slots' values at bar t (``F[:, t]``) as the t-1 values of the next bar."""
    for rs in range(3):
        for j in range(n_active[rs]):
            rhs = slots[rs, j, SLOT_RHS]
            st[ST_PREV_VALUES + 2 * (rs * K_SLOTS + j)] = F[slots[rs, j, SLOT_LHS], t]
            st[ST_PREV_VALUES + 2 * (rs * K_SLOTS + j) + 1] = F[rhs, t] if rhs >= 0 else thr[rs, j]
    st[ST_HAS_PREV] = 1.0


@nb.njit(**_JIT)
def _close_calc(units: float, raw_px: float, cash: float, entry_px: float, fin_paid: float,
                cost_frac: float, cost_abs: float,
                vpu: float) -> tuple[float, float, float, float, float]:
    """Close ``units`` at ``raw_px`` less costs: (new cash, fill price, pnl, turnover, side)."""
    side = 1.0 if units > 0 else -1.0
    px = raw_px - side * (raw_px * cost_frac + cost_abs)
    eq_now = cash + units * raw_px * vpu
    cash += units * px * vpu
    pnl = side * abs(units) * (px - entry_px) * vpu - fin_paid
    return cash, px, pnl, abs(units) * px * vpu / max(eq_now, 1e-12), side


@nb.njit(**_JIT)
def _open_calc(units: float, raw_px: float, cash: float, dist: float, full_size: bool,
               tp_mult: float, cost_frac: float, cost_abs: float,
               vpu: float) -> tuple[float, float, float, float, float, float]:
    """Buy (units > 0) or sell short at ``raw_px`` plus costs; all equity when ``full_size``.

    Returns (signed units, fill price, new cash, stop, take-profit, turnover). The stop sits
    ``dist`` from the fill, the target ``tp_mult`` × dist the other way. Full-equity units are
    cash over the cost-inclusive *buy* price for either side, so a long and a short at the same
    price and equity have the same size.
    """
    side = 1.0 if units > 0 else -1.0
    cost = raw_px * cost_frac + cost_abs
    px = raw_px + side * cost
    if full_size:
        units = side * cash / ((raw_px + cost) * vpu)
    turn = abs(units) * px * vpu / max(cash, 1e-12)
    return units, px, cash - units * px * vpu, px - side * dist, px + side * tp_mult * dist, turn


@nb.njit(**_JIT)
def _tally(n_tr: float, n_win: float, g_win: float, g_loss: float,
           pnl: float) -> tuple[float, float, float, float]:
    """Trade statistics after one more closed trade with ``pnl``."""
    if pnl > 0:
        return n_tr + 1.0, n_win + 1.0, g_win + pnl, g_loss
    return n_tr + 1.0, n_win, g_win, g_loss - pnl


@nb.njit(**_JIT)
def _record(trades: np.ndarray, n: float, entry_bar: float, t: int, side: float, units: float,
            entry_px: float, px: float, pnl: float, reason: int) -> float:
    """Write one trade row (when there is room); returns the new row count."""
    i = int(n)
    if i >= trades.shape[0]:
        return n
    trades[i, T_ENTRY] = entry_bar
    trades[i, T_EXIT] = t
    trades[i, T_SIDE] = side
    trades[i, T_UNITS] = abs(units)
    trades[i, T_ENTRY_PX] = entry_px
    trades[i, T_EXIT_PX] = px
    trades[i, T_PNL] = pnl
    trades[i, T_REASON] = reason
    return n + 1.0


@nb.njit(**_JIT)
def _run(lmask: np.ndarray, smask: np.ndarray, xmask: np.ndarray, cmask: np.ndarray,
         gmask: np.ndarray, fp: np.ndarray, ip: np.ndarray, open_: np.ndarray,
         high: np.ndarray, low: np.ndarray, close: np.ndarray, var_g: np.ndarray,
         rv: np.ndarray, cfg: np.ndarray, off: int, a: int, b: int, close_out: bool,
         st: np.ndarray, stats: np.ndarray, r_out: np.ndarray, at_out: np.ndarray,
         record: bool, equity_out: np.ndarray, position_out: np.ndarray,
         trades: np.ndarray) -> int:
    """Bars [a, b) from state ``st`` (updated), adding to ``stats``: THE per-bar code of the batch
    kernel, ``simulate`` and the live step. Returns k, the sparse returns written to
    r_out/at_out (bar t at offset t - a).

    Bar t of the rule masks (long, short, exit, entry candidates, gate) is bit t - base, base =
    64 · (a // 64); price and volatility arrays and the equity/position records are indexed
    at t - ``off``. Everything the loop touches per bar is a local scalar: an array passed to
    a function inside the loop would cost numba reference counting on every bar.
    """
    cost_frac = cfg[C_COST_FRAC]
    cost_abs = cfg[C_COST_ABS]
    vpu = cfg[C_VPU]
    fin_bar = cfg[C_FIN_BAR]
    min_lot = cfg[C_MIN_LOT]
    max_lev = cfg[C_MAX_LEV]
    sqrt_bpy = math.sqrt(cfg[C_BPY])
    close_fill = cfg[C_FILL_MODE] == 1.0
    full_size = cfg[C_SIZING_MODE] == 1.0
    k_stop = fp[P_K_STOP]
    tp_mult = fp[P_TP_MULT]
    risk = fp[P_RISK]
    w_blend = fp[P_BLEND]
    calm = fp[P_CALM]
    storm = fp[P_STORM]
    use_tp = ip[I_USE_TP] == 1
    trail = ip[I_TRAIL] == 1
    max_bars = ip[I_MAX_BARS]
    variant = ip[I_VARIANT]
    rvwin = ip[I_RVWIN]
    mode0 = ip[I_MODE0]
    mode1 = ip[I_MODE0 + 1]
    mode2 = ip[I_MODE0 + 2]
    can_open = mode0 != 0 or mode1 != 0 or mode2 != 0

    cash = st[ST_CASH]
    units = st[ST_UNITS]
    entry_px = st[ST_ENTRY_PX]
    entry_bar = st[ST_ENTRY_BAR]
    stop = st[ST_STOP]
    tp = st[ST_TP]
    dist = st[ST_DIST]
    held = int(st[ST_HELD])  # integer counters: no float add chain per bar
    fin_paid = st[ST_FIN_PAID]
    pend_exit = st[ST_PEND_EXIT] != 0.0
    pend_reason = int(st[ST_PEND_REASON])
    pend_units = st[ST_PEND_UNITS]
    pend_dist = st[ST_PEND_DIST]
    prev_eq = st[ST_PREV_EQ]
    last_bar = int(st[ST_LAST_BAR])
    n_tr = stats[S_TRADES]
    n_win = stats[S_WINS]
    g_win = stats[S_GROSS_WIN]
    g_loss = stats[S_GROSS_LOSS]
    turnover = stats[S_TURNOVER]
    n_rec = stats[S_RECORDED]
    in_mkt = int(stats[S_IN_MARKET])

    one = np.uint64(1)
    base = (a >> 6) << 6
    lim = b - 1 if close_out else b  # no decision on a closed-out segment's last bar
    k = 0
    t = a
    while t < b:
        if units == 0.0 and pend_units == 0.0:
            # flat, nothing to fill: every bar before the next one where an entry can fire
            # (a candidate bit) has return exactly 0.0 and changes nothing
            pend_exit = False
            nxt = lim
            if can_open and t < lim:
                q = t - base
                w = q >> 6
                word = cmask[w] & (~np.uint64(0) << np.uint64(q & 63))
                last_w = (lim - 1 - base) >> 6
                while word == np.uint64(0) and w < last_w:
                    w += 1
                    word = cmask[w]
                if word != np.uint64(0):
                    nxt = min(lim, base + (w << 6) + int(trailing_zeros(word)))
            if record:
                for u in range(t, b if nxt >= lim else nxt):
                    equity_out[u - off] = prev_eq
                    position_out[u - off] = 0.0
            if nxt >= lim:
                last_bar = b - 1
                break
            t = nxt
        i = t - off
        # unsigned indices: numba checks a signed index for wraparound on every access
        iu = np.uint64(i)
        o = open_[iu]
        h = high[iu]
        lo = low[iu]
        c = close[iu]
        q = t - base
        wq = np.uint64(q >> 6)
        sh = np.uint64(q & 63)
        b_long = (lmask[wq] >> sh) & one != np.uint64(0)
        b_short = (smask[wq] >> sh) & one != np.uint64(0)
        last = close_out and t == b - 1
        # ---- 1. fills at the open of t -------------------------------------------------------
        if pend_exit:
            if units != 0.0:
                cash, px, pnl, turn, side = _close_calc(units, o, cash, entry_px, fin_paid,
                                                        cost_frac, cost_abs, vpu)
                turnover += turn
                n_tr, n_win, g_win, g_loss = _tally(n_tr, n_win, g_win, g_loss, pnl)
                if record:
                    n_rec = _record(trades, n_rec, entry_bar, t, side, units, entry_px, px, pnl,
                                    pend_reason)
                units = 0.0
            pend_exit = False
        if pend_units != 0.0:
            units, entry_px, cash, stop, tp, turn = _open_calc(
                pend_units, o, cash, pend_dist, full_size, tp_mult, cost_frac, cost_abs, vpu)
            turnover += turn
            entry_bar, dist, held, fin_paid = float(t), pend_dist, 0, 0.0
            pend_units = 0.0
        # ---- 2. stop / take-profit inside bar t (stop first) ---------------------------------
        if units != 0.0 and dist > 0.0:
            reason = -1
            raw = 0.0
            if units > 0:
                if o <= stop:
                    raw, reason = o, R_STOP
                elif lo <= stop:
                    raw, reason = stop, R_STOP
                elif use_tp and o >= tp:
                    raw, reason = o, R_TP
                elif use_tp and h >= tp:
                    raw, reason = tp, R_TP
            else:
                if o >= stop:
                    raw, reason = o, R_STOP
                elif h >= stop:
                    raw, reason = stop, R_STOP
                elif use_tp and o <= tp:
                    raw, reason = o, R_TP
                elif use_tp and lo <= tp:
                    raw, reason = tp, R_TP
            if reason >= 0:
                cash, px, pnl, turn, side = _close_calc(units, raw, cash, entry_px, fin_paid,
                                                        cost_frac, cost_abs, vpu)
                turnover += turn
                n_tr, n_win, g_win, g_loss = _tally(n_tr, n_win, g_win, g_loss, pnl)
                if record:
                    n_rec = _record(trades, n_rec, entry_bar, t, side, units, entry_px, px, pnl,
                                    reason)
                units = 0.0
            elif trail:
                stop = max(stop, h - dist) if units > 0 else min(stop, lo + dist)
        # ---- 3. decision at the close of t ---------------------------------------------------
        if units != 0.0:
            held += 1
        want_exit = False
        reason = R_SIGNAL
        new_side = 0.0
        sig = 0.0
        if not last:
            go_long = False
            go_short = False
            if (b_long or b_short) and (gmask[wq] >> sh) & one != np.uint64(0):
                s2 = w_blend * var_g[variant, iu] + (1.0 - w_blend) * rv[rvwin, iu]
                sig = math.sqrt(s2) if s2 > 0.0 else 0.0
                sig_ann = sig * sqrt_bpy
                mode = mode0 if sig_ann < calm else (mode2 if sig_ann > storm else mode1)
                if mode != 0 and (full_size or sig > 0.0):
                    # fade swaps the sets that open each side
                    v_long = b_long if mode == 1 else b_short
                    v_short = b_short if mode == 1 else b_long
                    go_long = units <= 0.0 and v_long
                    go_short = units >= 0.0 and v_short
            if units == 0.0:
                if go_long and not go_short:
                    new_side = 1.0
                elif go_short and not go_long:
                    new_side = -1.0
            elif (units > 0.0 and go_short) or (units < 0.0 and go_long):
                want_exit, reason = True, R_REVERSE
                new_side = -1.0 if units > 0.0 else 1.0
            elif (xmask[wq] >> sh) & one != np.uint64(0):
                want_exit = True
            elif max_bars > 0 and held >= max_bars:
                want_exit, reason = True, R_TIME
        want_units = 0.0
        want_dist = 0.0
        if new_side != 0.0:
            eq_t = cash + units * c * vpu
            if full_size:
                want_units = new_side * eq_t / (c * vpu)
            else:
                want_dist = k_stop * sig * c
                u = risk * eq_t / (want_dist * vpu)
                u = min(u, max_lev * eq_t / (c * vpu))
                u = math.floor(u / min_lot) * min_lot
                want_units = new_side * u if u >= min_lot else 0.0
        if not close_fill:
            pend_exit, pend_reason, pend_units, pend_dist = want_exit, reason, want_units, want_dist
        else:  # parity mode: fill at this close instead of the next open
            if want_exit and units != 0.0:
                cash, px, pnl, turn, side = _close_calc(units, c, cash, entry_px, fin_paid,
                                                        cost_frac, cost_abs, vpu)
                turnover += turn
                n_tr, n_win, g_win, g_loss = _tally(n_tr, n_win, g_win, g_loss, pnl)
                if record:
                    n_rec = _record(trades, n_rec, entry_bar, t, side, units, entry_px, px, pnl,
                                    reason)
                units = 0.0
            if want_units != 0.0:
                units, entry_px, cash, stop, tp, turn = _open_calc(
                    want_units, c, cash, want_dist, full_size, tp_mult, cost_frac, cost_abs, vpu)
                turnover += turn
                entry_bar, dist, held, fin_paid = float(t), want_dist, 0, 0.0
        # ---- 4. segment end close-out, financing, mark to market -----------------------------
        if last and units != 0.0:
            cash, px, pnl, turn, side = _close_calc(units, c, cash, entry_px, fin_paid,
                                                    cost_frac, cost_abs, vpu)
            turnover += turn
            n_tr, n_win, g_win, g_loss = _tally(n_tr, n_win, g_win, g_loss, pnl)
            if record:
                n_rec = _record(trades, n_rec, entry_bar, t, side, units, entry_px, px, pnl,
                                R_END)
            units = 0.0
        if units != 0.0:
            fee = abs(units) * c * vpu * fin_bar
            cash -= fee
            fin_paid += fee
            in_mkt += 1
        eq = cash + units * c * vpu
        ku = np.uint64(k)
        r_out[ku] = eq / prev_eq - 1.0 if prev_eq > 0.0 else 0.0
        at_out[ku] = t - a
        k += 1
        prev_eq = eq
        last_bar = t
        if record:
            equity_out[i] = eq
            position_out[i] = units
        t += 1

    st[ST_CASH] = cash
    st[ST_UNITS] = units
    st[ST_ENTRY_PX] = entry_px
    st[ST_ENTRY_BAR] = entry_bar
    st[ST_STOP] = stop
    st[ST_TP] = tp
    st[ST_DIST] = dist
    st[ST_HELD] = float(held)
    st[ST_FIN_PAID] = fin_paid
    st[ST_PEND_EXIT] = 1.0 if pend_exit else 0.0
    st[ST_PEND_REASON] = pend_reason
    st[ST_PEND_UNITS] = pend_units
    st[ST_PEND_DIST] = pend_dist
    st[ST_PREV_EQ] = prev_eq
    st[ST_LAST_BAR] = last_bar
    stats[S_TRADES] = n_tr
    stats[S_WINS] = n_win
    stats[S_GROSS_WIN] = g_win
    stats[S_GROSS_LOSS] = g_loss
    stats[S_TURNOVER] = turnover
    stats[S_RECORDED] = n_rec
    stats[S_IN_MARKET] = float(in_mkt)
    return k


@nb.njit(**_JIT)
def rule_words(pool: np.ndarray, crow: np.ndarray, n_active: np.ndarray, logic: np.ndarray,
               grow: int, w0: int, w1: int, masks: np.ndarray) -> None:
    """Words w0..w1-1 of one genome's long / short / exit rule sets (AND or OR of its condition
    masks), its entry candidates ``(long xor short) & gate`` (a flat bar outside them cannot
    open a position) and its gate, into ``masks[0..4]`` from index 0."""
    ones = ~np.uint64(0)
    for rs in range(3):
        n_on = n_active[rs]
        if n_on == 0:
            masks[rs, : w1 - w0] = 0
            continue
        r0 = crow[rs, 0]
        for w in range(w0, w1):
            masks[rs, w - w0] = pool[r0, w]
        is_and = logic[rs] == 0
        for j in range(1, n_on):
            r = crow[rs, j]
            if is_and:
                for w in range(w0, w1):
                    masks[rs, w - w0] &= pool[r, w]
            else:
                for w in range(w0, w1):
                    masks[rs, w - w0] |= pool[r, w]
    for w in range(w0, w1):
        gw = pool[grow, w] if grow >= 0 else ones
        masks[4, w - w0] = gw
        masks[3, w - w0] = (masks[0, w - w0] ^ masks[1, w - w0]) & gw


@nb.njit(**_JIT)
def run_segment(
    pool: np.ndarray, crow: np.ndarray, grow: int, n_active: np.ndarray, logic: np.ndarray,
    fp: np.ndarray, ip: np.ndarray,
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    var_g: np.ndarray, rv: np.ndarray, cfg: np.ndarray, a: int, b: int, close_out: bool,
    st: np.ndarray, stats: np.ndarray, r_out: np.ndarray, at_out: np.ndarray, record: bool,
    equity_out: np.ndarray, position_out: np.ndarray, trades: np.ndarray,
) -> int:
    """One compiled genome over bars [a, b), continuing from (and updating) the state record
    ``st``; ``stats`` is reset. Returns the count k of sparse returns in r_out/at_out (length
    >= b - a). With ``record``: equity/position at [a, b) (absolute bars) and the trade list.

    ``pool``/``crow``/``grow``: condition and gate masks (``fitness.masks``); crossing values
    for a later live step are not stored here (``store_prev``)."""
    stats[:] = 0.0
    w0 = a >> 6
    w1 = ((b - 1) >> 6) + 1
    masks = np.empty((5, w1 - w0), np.uint64)
    rule_words(pool, crow, n_active, logic, grow, w0, w1, masks)
    return _run(masks[0], masks[1], masks[2], masks[3], masks[4], fp, ip, open_, high, low,
                close, var_g, rv, cfg, 0, a, b, close_out, st, stats, r_out, at_out, record,
                equity_out, position_out, trades)


@nb.njit(**_JIT)
def live_step(
    st: np.ndarray, stats: np.ndarray, trades: np.ndarray, record: bool, t: int,
    o: float, h: float, lo: float, c: float, f_col: np.ndarray, var_col: np.ndarray,
    rv_col: np.ndarray, hour: int, weekday: int, slots: np.ndarray, thr: np.ndarray,
    n_active: np.ndarray, logic: np.ndarray, fp: np.ndarray, ip: np.ndarray, cfg: np.ndarray,
    decision: np.ndarray,
) -> float:
    """Bar t for a live strategy: the batch kernel's own loop (``_run``) over the one-bar
    segment [t, t+1), never closing out, from the newest bar (OHLC, its feature column
    ``F[:, t]``, volatility rows ``variance[:, t]`` / ``rv[:, t]``, UTC hour and weekday).
    The rule sets are evaluated from ``f_col`` and the t-1 values in the state, with the same
    condition and gate functions the masks are built from. Writes the decision (D_*) and
    returns the bar's net return; ``stats`` accumulate (trade rows too, with ``record``)."""
    has_prev = st[ST_HAS_PREV] != 0.0
    masks = np.zeros((5, 1), np.uint64)
    sh = np.uint64(t & 63)
    for rs in range(3):
        n_on = n_active[rs]
        if n_on == 0:
            continue
        is_and = logic[rs] == 0
        res = is_and
        for j in range(n_on):
            rhs = slots[rs, j, SLOT_RHS]
            x = f_col[slots[rs, j, SLOT_LHS]]
            y = f_col[rhs] if rhs >= 0 else thr[rs, j]
            p = ST_PREV_VALUES + 2 * (rs * K_SLOTS + j)
            v = cond_value(x, y, st[p], st[p + 1], slots[rs, j, SLOT_CMP], has_prev)
            if v != is_and:
                res = v
                break
        masks[rs, 0] = np.uint64(res) << sh
    if in_gate(hour, weekday, ip[I_SES_START], ip[I_SES_END], ip[I_WEEKMASK]):
        masks[4, 0] = np.uint64(1) << sh
    masks[3, 0] = (masks[0, 0] ^ masks[1, 0]) & masks[4, 0]
    bar = np.empty((4, 1))
    bar[0, 0], bar[1, 0], bar[2, 0], bar[3, 0] = o, h, lo, c
    vol = np.empty((var_col.shape[0] + rv_col.shape[0], 1))
    vol[: var_col.shape[0], 0] = var_col
    vol[var_col.shape[0]:, 0] = rv_col
    r = np.zeros(1)
    at = np.zeros(1, np.int64)
    eq = np.empty(1)
    pos = np.empty(1)
    _run(masks[0], masks[1], masks[2], masks[3], masks[4], fp, ip, bar[0], bar[1], bar[2],
         bar[3], vol[: var_col.shape[0]], vol[var_col.shape[0]:], cfg, t, t, t + 1, False, st,
         stats, r, at, record, eq, pos, trades)
    for rs in range(3):
        for j in range(n_active[rs]):
            rhs = slots[rs, j, SLOT_RHS]
            p = ST_PREV_VALUES + 2 * (rs * K_SLOTS + j)
            st[p] = f_col[slots[rs, j, SLOT_LHS]]
            st[p + 1] = f_col[rhs] if rhs >= 0 else thr[rs, j]
    st[ST_HAS_PREV] = 1.0
    decision[D_EXIT] = st[ST_PEND_EXIT]
    decision[D_REASON] = st[ST_PEND_REASON]
    decision[D_ENTRY_DIST] = st[ST_PEND_DIST]
    held = st[ST_UNITS]
    if st[ST_PEND_UNITS] != 0.0:
        decision[D_UNITS] = st[ST_PEND_UNITS]
    else:
        decision[D_UNITS] = 0.0 if st[ST_PEND_EXIT] != 0.0 else held
    has_stop = held != 0.0 and st[ST_DIST] > 0.0
    decision[D_STOP] = st[ST_STOP] if has_stop else np.nan
    decision[D_TP] = st[ST_TP] if has_stop and ip[I_USE_TP] == 1 else np.nan
    return r[0]


@nb.njit(parallel=True, **_JIT)
def evaluate_batch(
    pool: np.ndarray, crow: np.ndarray, grow: np.ndarray, n_active: np.ndarray,
    logic: np.ndarray, fp: np.ndarray, ip: np.ndarray,
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    var_g: np.ndarray, rv: np.ndarray, cfg: np.ndarray, segments: np.ndarray, out: np.ndarray,
    sketch_col: np.ndarray, sketch: np.ndarray, n_chunks: int,
) -> None:
    """Metrics for every (genome, segment) pair into ``out[n_genomes, n_segments, N_METRICS]``,
    each segment from a flat state with ``capital``, closed out at its end.

    Jobs are split into ``n_chunks`` contiguous chunks (a few per thread, for balance), each
    with its own buffers: no allocation per job.
    Return sketch: bar t's net return is added to ``sketch[g, sketch_col[t]]`` (skipped where
    ``sketch_col[t] < 0``, or when ``sketch`` has no columns). Each column belongs to one bar
    (``fitness.simulator.sketch_columns``), so parallel jobs never share a cell.
    """
    n_g = crow.shape[0]
    n_s = segments.shape[0]
    n_jobs = n_g * n_s
    max_len = 0
    max_w = 0
    for s in range(n_s):
        max_len = max(max_len, segments[s, 1] - segments[s, 0])
        max_w = max(max_w, ((segments[s, 1] - 1) >> 6) - (segments[s, 0] >> 6) + 1)
    n_chunks = max(1, min(n_jobs, n_chunks))
    bpy = cfg[C_BPY]
    for chunk in nb.prange(n_chunks):
        r = np.empty(max_len)
        at = np.empty(max_len, np.int64)
        scratch = np.empty(SPARSE_SCRATCH * max_len + 64)
        masks = np.empty((5, max_w), np.uint64)
        st = np.empty(N_STATE)
        stats = np.empty(N_STATS)
        dummy = np.empty(1)
        no_trades = np.empty((0, N_TRADE_COLS))
        for job in range(chunk * n_jobs // n_chunks, (chunk + 1) * n_jobs // n_chunks):
            g = job // n_s
            s = job % n_s
            a = segments[s, 0]
            b = segments[s, 1]
            init_state(st, cfg[C_CAPITAL])
            stats[:] = 0.0
            w0 = a >> 6
            rule_words(pool, crow[g], n_active[g], logic[g], grow[g], w0, ((b - 1) >> 6) + 1,
                       masks)
            k = _run(masks[0], masks[1], masks[2], masks[3], masks[4], fp[g], ip[g], open_,
                     high, low, close, var_g, rv, cfg, 0, a, b, True, st, stats, r, at, False,
                     dummy, dummy, no_trades)
            fill_metrics_sparse(out[g, s], r, at, k, b - a, scratch, int(stats[S_TRADES]),
                                int(stats[S_WINS]), stats[S_GROSS_WIN], stats[S_GROSS_LOSS],
                                stats[S_TURNOVER], int(stats[S_IN_MARKET]), bpy)
            if sketch.shape[1] > 0:
                for j in range(k):
                    col = sketch_col[a + at[j]]
                    if col >= 0:
                        sketch[g, col] += r[j]
