"""The backtest kernel: one genome over one segment of one symbol's bars, and the batch over many.

Semantics (the reference simulator in tests/reference_sim.py implements the same, plainly):

- **Decisions at the close of bar t, fills at the open of bar t+1.** Rule sets read feature
  values at t (and t-1 for crossings); a NaN makes a comparison false. ``fill_mode = 1`` (a
  comparator mode used only for the vectorbt parity check) fills at the close of bar t instead.
- **Signals.** Flat: long entry without short entry → buy; short without long → sell short.
  Long: a short entry reverses (exit, then short), else an exit signal or the time limit closes.
  Short mirrors long. In a regime whose mode is *fade*, long and short entries swap; in a regime
  whose mode is *off*, or outside the session window / weekdays, no new entries are taken but
  exits still apply. Regime = annualised σ̂ at t against the genome's calm/storm thresholds.
- **Volatility and sizing.** σ̂²_t = w·variance[variant, t] + (1-w)·rv[window, t], per bar of log
  returns. Stop distance in price = k_stop · σ̂_t · close_t. Units = risk_pct · equity_t /
  (stop distance · value_per_unit), capped so notional ≤ max_leverage · equity, rounded down to
  whole minimum lots; an entry below one lot is skipped. Unknown σ̂ (NaN/0) → no entry.
  ``sizing_mode = 1`` (parity mode) puts all equity in, fractional units, no stop.
- **Stops and targets.** The stop sits at fill price ∓ stop distance, the take-profit at
  ± tp_mult · stop distance. They are checked against the high and low of every bar after the
  fill, starting with the fill bar itself (the rest of that bar follows the open). A bar that
  opens beyond the stop fills at its open; when stop and take-profit are both inside one bar
  the stop fills first. A trailing stop moves to high_t − distance (low_t + distance for shorts)
  at the close of t, effective from bar t+1.
- **Costs** on every fill: price · cost_frac + cost_abs per unit against the trader (half the
  spread, commission and slippage, from the symbol's cost model in bps or pips). Financing:
  |notional| · financing_per_bar charged at each close while a position is open.
- **Equity** = cash + units · close · value_per_unit, starting at ``capital`` at the segment
  start, flat. A position still open at the segment's last bar is closed at its close.
- **Outputs**: per-bar net returns; trade statistics; with ``record`` also the equity, position
  and exposure per bar and the trade list (entry/exit bar, side, units, prices, pnl, reason).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from fitness.metrics_nb import fill_metrics

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


# running statistics of one segment, kept in a small array so helpers can update them
S_TRADES, S_WINS, S_GROSS_WIN, S_GROSS_LOSS, S_TURNOVER, S_RECORDED = range(6)


@nb.njit(cache=True)
def _close(stats: np.ndarray, trades: np.ndarray, record: bool, units: float, raw_px: float,
           cash: float, entry_px: float, entry_bar: int, fin_paid: float, t: int, reason: int,
           cost_frac: float, cost_abs: float, vpu: float) -> float:
    """Close ``units`` at ``raw_px`` less costs; book the trade; return the new cash."""
    side = 1.0 if units > 0 else -1.0
    px = raw_px - side * (raw_px * cost_frac + cost_abs)
    eq_now = cash + units * raw_px * vpu
    cash += units * px * vpu
    pnl = side * abs(units) * (px - entry_px) * vpu - fin_paid
    stats[S_TURNOVER] += abs(units) * px * vpu / max(eq_now, 1e-12)
    stats[S_TRADES] += 1
    if pnl > 0:
        stats[S_WINS] += 1
        stats[S_GROSS_WIN] += pnl
    else:
        stats[S_GROSS_LOSS] -= pnl
    n = int(stats[S_RECORDED])
    if record and n < trades.shape[0]:
        trades[n, T_ENTRY] = entry_bar
        trades[n, T_EXIT] = t
        trades[n, T_SIDE] = side
        trades[n, T_UNITS] = abs(units)
        trades[n, T_ENTRY_PX] = entry_px
        trades[n, T_EXIT_PX] = px
        trades[n, T_PNL] = pnl
        trades[n, T_REASON] = reason
        stats[S_RECORDED] += 1
    return cash


@nb.njit(cache=True)
def _open(stats: np.ndarray, units: float, raw_px: float, cash: float, full_size: bool,
          dist: float, tp_mult: float, cost_frac: float, cost_abs: float,
          vpu: float) -> tuple[float, float, float, float, float]:
    """Buy (units > 0) or sell short at ``raw_px`` plus costs; all equity when ``full_size``.

    Returns (signed units, fill price, new cash, stop, take-profit); the stop sits ``dist``
    from the fill, the target ``tp_mult`` × dist the other way. The entry counts as turnover.
    """
    side = 1.0 if units > 0 else -1.0
    px = raw_px + side * (raw_px * cost_frac + cost_abs)
    if full_size:
        units = side * cash / (px * vpu)
    stats[S_TURNOVER] += abs(units) * px * vpu / max(cash, 1e-12)
    return units, px, cash - units * px * vpu, px - side * dist, px + side * tp_mult * dist


@nb.njit(cache=True, error_model="numpy")
def run_segment(
    F: np.ndarray, slots: np.ndarray, thr: np.ndarray, n_active: np.ndarray, logic: np.ndarray,
    fp: np.ndarray, ip: np.ndarray,
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    hour: np.ndarray, weekday: np.ndarray, var_g: np.ndarray, rv: np.ndarray,
    cfg: np.ndarray, start: int, end: int,
    returns: np.ndarray, stats: np.ndarray, record: bool, equity_out: np.ndarray,
    position_out: np.ndarray, trades: np.ndarray,
) -> int:
    """Simulate one compiled genome over bars [start, end).

    Fills ``returns[0:end-start]`` and ``stats`` (S_* slots); returns the bars in the market.
    """
    cost_frac = cfg[C_COST_FRAC]
    cost_abs = cfg[C_COST_ABS]
    vpu = cfg[C_VPU]
    sqrt_bpy = math.sqrt(cfg[C_BPY])
    close_fill = cfg[C_FILL_MODE] == 1.0
    full_size = cfg[C_SIZING_MODE] == 1.0
    tp_mult = fp[P_TP_MULT]
    use_tp = ip[I_USE_TP] == 1
    trail = ip[I_TRAIL] == 1
    max_bars = ip[I_MAX_BARS]
    ses_start = ip[I_SES_START]
    ses_end = ip[I_SES_END]
    variant = ip[I_VARIANT]
    rvwin = ip[I_RVWIN]
    w = fp[P_BLEND]

    stats[:] = 0.0
    cash = cfg[C_CAPITAL]
    prev_eq = cash
    units = 0.0  # signed; > 0 long
    entry_px = 0.0
    entry_bar = -1
    stop = 0.0
    tp = 0.0
    dist = 0.0
    held = 0
    fin_paid = 0.0
    pend_exit = False  # orders decided at the previous close, filled at this open
    pend_reason = R_SIGNAL
    pend_units = 0.0
    pend_dist = 0.0
    in_market = 0
    need = np.zeros(3, np.bool_)
    val = np.zeros(3, np.bool_)

    for t in range(start, end):
        last = t == end - 1
        # ---- 1. fills at the open of t ------------------------------------------------------
        if pend_exit and units != 0.0:
            cash = _close(stats, trades, record, units, open_[t], cash, entry_px, entry_bar,
                          fin_paid, t, pend_reason, cost_frac, cost_abs, vpu)
            units = 0.0
        pend_exit = False
        if pend_units != 0.0:
            units, entry_px, cash, stop, tp = _open(stats, pend_units, open_[t], cash, full_size,
                                                    pend_dist, tp_mult, cost_frac, cost_abs, vpu)
            entry_bar, dist, held, fin_paid = t, pend_dist, 0, 0.0
            pend_units = 0.0
        # ---- 2. stop / take-profit inside bar t (stop first) ---------------------------------
        if units != 0.0 and dist > 0.0:
            reason = -1
            raw = 0.0
            if units > 0:
                if open_[t] <= stop:
                    raw, reason = open_[t], R_STOP
                elif low[t] <= stop:
                    raw, reason = stop, R_STOP
                elif use_tp and open_[t] >= tp:
                    raw, reason = open_[t], R_TP
                elif use_tp and high[t] >= tp:
                    raw, reason = tp, R_TP
            else:
                if open_[t] >= stop:
                    raw, reason = open_[t], R_STOP
                elif high[t] >= stop:
                    raw, reason = stop, R_STOP
                elif use_tp and open_[t] <= tp:
                    raw, reason = open_[t], R_TP
                elif use_tp and low[t] <= tp:
                    raw, reason = tp, R_TP
            if reason >= 0:
                cash = _close(stats, trades, record, units, raw, cash, entry_px, entry_bar,
                              fin_paid, t, reason, cost_frac, cost_abs, vpu)
                units = 0.0
            elif trail:
                stop = max(stop, high[t] - dist) if units > 0 else min(stop, low[t] + dist)
        # ---- 3. decision at the close of t --------------------------------------------------
        if units != 0.0:
            held += 1
        want_exit = False
        reason = R_SIGNAL
        new_side = 0.0
        sig = 0.0
        if not last:
            s2 = w * var_g[variant, t] + (1.0 - w) * rv[rvwin, t]
            sig = math.sqrt(s2) if s2 > 0.0 else 0.0
            sig_ann = sig * sqrt_bpy
            regime = 0 if sig_ann < fp[P_CALM] else (2 if sig_ann > fp[P_STORM] else 1)
            mode = ip[I_MODE0 + regime]
            h = hour[t]
            if ses_start == ses_end:
                in_session = True
            elif ses_start < ses_end:
                in_session = ses_start <= h < ses_end
            else:
                in_session = h >= ses_start or h < ses_end
            can_enter = (mode != 0 and in_session and ((ip[I_WEEKMASK] >> weekday[t]) & 1) == 1
                         and (full_size or sig > 0.0))
            # which rule sets this bar needs; fade swaps the sets that open each side
            rs_long = 0 if mode == 1 else 1
            rs_short = 1 - rs_long
            need[0] = need[1] = False
            if can_enter:
                need[rs_long] = units <= 0.0
                need[rs_short] = units >= 0.0
            need[2] = units != 0.0
            for rs in range(3):
                # inline rule evaluation: a call per bar with array arguments costs more than
                # the comparisons themselves (numba reference-counts array arguments)
                val[rs] = False
                n_on = n_active[rs]
                if not need[rs] or n_on == 0:
                    continue
                is_and = logic[rs] == 0
                res = is_and
                for j in range(n_on):
                    lhs = slots[rs, j, SLOT_LHS]
                    rhs = slots[rs, j, SLOT_RHS]
                    cmp = slots[rs, j, SLOT_CMP]
                    x = F[lhs, t]
                    y = F[rhs, t] if rhs >= 0 else thr[rs, j]
                    if cmp == 0:
                        v = x > y
                    elif cmp == 1:
                        v = x < y
                    elif t == 0:
                        v = False
                    else:
                        x0 = F[lhs, t - 1]
                        y0 = F[rhs, t - 1] if rhs >= 0 else thr[rs, j]
                        v = (x > y and x0 <= y0) if cmp == 2 else (x < y and x0 >= y0)
                    if v != is_and:
                        res = v
                        break
                val[rs] = res
            go_long = need[rs_long] and val[rs_long]
            go_short = need[rs_short] and val[rs_short]
            if units == 0.0:
                if go_long and not go_short:
                    new_side = 1.0
                elif go_short and not go_long:
                    new_side = -1.0
            elif (units > 0.0 and go_short) or (units < 0.0 and go_long):
                want_exit, reason = True, R_REVERSE
                new_side = -1.0 if units > 0.0 else 1.0
            elif val[2]:
                want_exit = True
            elif max_bars > 0 and held >= max_bars:
                want_exit, reason = True, R_TIME
        want_units = 0.0
        want_dist = 0.0
        if new_side != 0.0:
            eq_t = cash + units * close[t] * vpu
            if full_size:
                want_units = new_side * eq_t / (close[t] * vpu)
            else:
                want_dist = fp[P_K_STOP] * sig * close[t]
                u = fp[P_RISK] * eq_t / (want_dist * vpu)
                u = min(u, cfg[C_MAX_LEV] * eq_t / (close[t] * vpu))
                u = math.floor(u / cfg[C_MIN_LOT]) * cfg[C_MIN_LOT]
                want_units = new_side * u if u >= cfg[C_MIN_LOT] else 0.0
        if not close_fill:
            pend_exit, pend_reason, pend_units, pend_dist = want_exit, reason, want_units, want_dist
        else:  # parity mode: fill at this close instead of the next open
            if want_exit and units != 0.0:
                cash = _close(stats, trades, record, units, close[t], cash, entry_px, entry_bar,
                              fin_paid, t, reason, cost_frac, cost_abs, vpu)
                units = 0.0
            if want_units != 0.0:
                units, entry_px, cash, stop, tp = _open(stats, want_units, close[t], cash,
                                                        full_size, want_dist, tp_mult,
                                                        cost_frac, cost_abs, vpu)
                entry_bar, dist, held, fin_paid = t, want_dist, 0, 0.0
        # ---- 4. segment end close-out, financing, mark to market -----------------------------
        if last and units != 0.0:
            cash = _close(stats, trades, record, units, close[t], cash, entry_px, entry_bar,
                          fin_paid, t, R_END, cost_frac, cost_abs, vpu)
            units = 0.0
        if units != 0.0:
            fee = abs(units) * close[t] * vpu * cfg[C_FIN_BAR]
            cash -= fee
            fin_paid += fee
            in_market += 1
        eq = cash + units * close[t] * vpu
        returns[t - start] = eq / prev_eq - 1.0 if prev_eq > 0.0 else 0.0
        prev_eq = eq
        if record:
            equity_out[t] = eq
            position_out[t] = units
    return in_market


@nb.njit(cache=True, parallel=True, error_model="numpy")
def evaluate_batch(
    F: np.ndarray, slots: np.ndarray, thr: np.ndarray, n_active: np.ndarray, logic: np.ndarray,
    fp: np.ndarray, ip: np.ndarray,
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    hour: np.ndarray, weekday: np.ndarray, var_g: np.ndarray, rv: np.ndarray,
    cfg: np.ndarray, segments: np.ndarray, out: np.ndarray, sketch_col: np.ndarray,
    sketch: np.ndarray,
) -> None:
    """Metrics for every (genome, segment) pair into ``out[n_genomes, n_segments, N_METRICS]``.

    Return sketch: bar t's net return is added to ``sketch[g, sketch_col[t]]`` (skipped where
    ``sketch_col[t] < 0``, or when ``sketch`` has no columns). Each column belongs to one bar
    (``fitness.simulator.sketch_columns``), so parallel jobs never share a cell.
    """
    n_g = slots.shape[0]
    n_s = segments.shape[0]
    dummy = np.empty(1)
    no_trades = np.empty((0, N_TRADE_COLS))
    for job in nb.prange(n_g * n_s):
        g = job // n_s
        s = job % n_s
        a = segments[s, 0]
        b = segments[s, 1]
        rets = np.empty(b - a)
        stats = np.empty(6)
        im = run_segment(F, slots[g], thr[g], n_active[g], logic[g], fp[g], ip[g], open_, high,
                         low, close, hour, weekday, var_g, rv, cfg, a, b, rets, stats, False,
                         dummy, dummy, no_trades)
        fill_metrics(out[g, s], rets, int(stats[S_TRADES]), int(stats[S_WINS]),
                     stats[S_GROSS_WIN], stats[S_GROSS_LOSS], stats[S_TURNOVER], im, cfg[C_BPY])
        if sketch.shape[1] > 0:
            for t in range(a, b):
                col = sketch_col[t]
                if col >= 0:
                    sketch[g, col] += rets[t - a]
