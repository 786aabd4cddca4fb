"""Synthetic series for the power benchmark of the statistical gates: noise, and planted edges.

Each *kind* is a family of synthetic price series. Noise kinds have no predictability at all;
edge kinds carry one planted effect that a genome can express exactly (``planted_genome``), at
an amplitude calibrated so that the planted rule earns a given annualised Sharpe ratio after
costs (``STRENGTHS``). The benchmark driver runs evolution and the gates on each series and
counts how often the gates pass noise (size) and planted edges (power).

Families (σ = per-bar volatility of the log return; every base path is a martingale in price,
log drift -σ²/2, unless a drift is named):

- ``noise_flat``: daily, Gaussian log returns, σ = 1 %/day; benchmark flat.
- ``noise_drift``: daily, equity-like: 8 %/yr log drift, 16 %/yr volatility; buy and hold.
- ``noise_garch``: daily GARCH(1,1), α = 0.08, β = 0.90, unconditional σ = 1 %/day,
  Student-t(5) innovations scaled to unit variance (fat tails, vol clustering); flat.
- ``noise_hourly``: FX-like 24x5 hourly bars (Sunday 22:00 to Friday 22:00 UTC), 8 %/yr
  average volatility with an hour-of-day profile (quiet Asia and late NY, busy London/New York
  overlap), a persistent stochastic volatility factor (hourly AR(1) of log σ, ρ = 0.995) and
  Student-t(5) innovations; flat.
- ``breakout`` (amplitude a): noise_flat's base; the bars a Donchian(20) breakout rule holds get
  a drift of ± a·σ per bar. The drift state *is* the planted rule's position: flat, when close
  breaks above the channel of the 20 previous bars (Donchian(20) > 1) go long, below it (< 0)
  go short; a break the other way reverses; out after 5 bars (``BREAKOUT_HOLD``). Bar t+1..t+5
  after a break at the close of t drift with the break.
- ``autocorr`` (amplitude φ): AR(1) daily log returns r_t = φ r_{t-1} + e_t, unconditional
  σ = 1 %/day; planted rule: long when ROC(1) > 0, short when ROC(1) < 0, out after one bar.
- ``session`` (amplitude a): noise_hourly's base plus a drift of a·σ_h per bar on the bars
  opening at 12..15 UTC (the London/New York overlap), σ_h the hour's profile volatility;
  planted rule: enter long at the close of the 11:00 bar (session window 11-12, an entry rule
  that is always true), out after 4 bars, i.e. at the 16:00 open.
- ``volregime`` (amplitude a): a two-state Markov volatility, calm 8 %/yr and storm 30 %/yr,
  mean stays 125 and 40 days (about 24 % of days in storm); drift +a·σ_calm per bar in calm and
  -a·σ_storm in storm. Planted rule: an always-true entry rule, regime calm = follow (long),
  normal = off (hold), storm = fade (short), thresholds calm_below 0.15 and storm_above 0.16
  (annualised σ̂), between the two regimes' volatilities.

Daily edge kinds other than volregime build on noise_flat's base (Gaussian, 1 %/day). Every bar
opens at the previous close; its high and low are the extremes of a Brownian bridge from open to
close with the bar's σ (never independent wicks, which would make take-profits and stops filled
on wicks a free edge that evolution would find in pure noise).

Planted genomes share the vol genes of ``tests/conftest.roc1_genome`` (blend_weight 0.5 of
GARCH(1,1) and realised variance over 5 bars), k_stop 8, risk_pct 0.01, no take-profit nor
trailing stop. At 8 σ̂ stops are rare: none on breakout/autocorr, about 2 % of session trades
(σ̂ at 11:00 is read in quieter hours than the overlap it holds through), and a few volregime
trades at the onset of a storm, which is re-entered short at once. ``hidden_state`` returns the
generator's intended position, which the kernel's position matches bar for bar otherwise.
Prices are not rounded to the tick (rounding could flip the sign of a tiny ROC(1)).

Calibration (``calibrate``, ``python -m benchmarks.power_data --calibrate``) finds, per kind
and strength, the amplitude at which the planted rule's mean annualised Sharpe over seeds
0..seeds-1 equals the strength, with the kernel's costs and risk sizing and the tables built
with ``CALIBRATION_VOL`` = VolatilityConfig(window=250, refit_every=500). The table lives in
``benchmarks/power_calibration.json``; ``generate`` reads it (and interpolates linearly, through
amplitude 0 at strength 0, for a strength between tabled ones).

Default lengths: 5000 business days (about 20 years) for daily kinds; 31,200 hourly bars for
hourly kinds, 5 years of 24x5 FX hours (260 days x 24): the session edge trades once a day, so
5 years hold about 1300 trades, while the bar count (6x the daily one) keeps evolution's cost
per series within a small multiple of a daily series. 24x7 would add 40 % more bars for no
more trades.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from core.atomic import atomic_write_bytes
from fitness.simulator import Tables, build_tables, simulate
from genome import schema as S
from genome.ops import repair
from genome.primitives import PRIMITIVE_IDS, PRIMITIVES
from market.config import CostModel, SymbolMeta, VolatilityConfig
from market.loader import Bars
from market.synthetic import bridge_extremes
from market.timeframes import bars_per_year, utc_ns

KINDS_NOISE = ("noise_flat", "noise_drift", "noise_garch", "noise_hourly")
KINDS_EDGE = ("breakout", "autocorr", "session", "volregime")
KINDS = KINDS_NOISE + KINDS_EDGE
STRENGTHS = (1.0, 1.5, 2.0, 3.0)   # annualised Sharpe of the exact planted rule, after costs

CALIBRATION_PATH = Path(__file__).with_name("power_calibration.json")
CALIBRATION_VOL = VolatilityConfig(window=250, refit_every=500)
CALIBRATION_TOL = 0.02  # aimed-for |mean Sharpe - strength|; the table promises 0.1
TABLE_VERSION = 1

DAILY_N = 5000
HOURLY_YEARS = 5
HOURLY_N = HOURLY_YEARS * 260 * 24  # 31,200 FX hours

DAILY_META = SymbolMeta(
    asset_class="index", tick_size=0.01, min_lot=0.001, calendar="business",
    costs=CostModel(unit="bps", spread=1.0, commission=0.5, slippage=1.0))  # 2 bps per side
HOURLY_META = SymbolMeta(
    asset_class="fx", tick_size=1e-5, min_lot=1000.0, calendar="fx",
    costs=CostModel(unit="bps", spread=0.5, commission=0.25, slippage=0.25))  # 0.75 bps per side

HOURLY_KINDS = ("noise_hourly", "session")
BENCHMARK = {k: "flat" for k in KINDS} | {"noise_drift": "buy_and_hold"}
AMPLITUDE_DOC = {
    "breakout": "drift per held bar in units of the bar's σ",
    "autocorr": "AR(1) coefficient φ of daily log returns",
    "session": "drift per 12-15 UTC bar in units of that hour's σ",
    "volregime": "drift per bar in units of the regime's σ: + in calm, - in storm",
}
AMPLITUDE_GUESS = {"breakout": 0.1, "autocorr": 0.13, "session": 0.05, "volregime": 0.09}

# ---- model parameters -------------------------------------------------------------------------
DAILY_SIGMA = 0.01
DRIFT_MU, DRIFT_VOL = 0.08, 0.16  # noise_drift, annual
GARCH_ALPHA, GARCH_BETA, T_DOF = 0.08, 0.90, 5.0
HOURLY_VOL = 0.08  # annual, FX-like
HOUR_PROFILE = np.array(  # relative σ by UTC hour of the bar open
    [0.7] * 7 + [1.0] + [1.2] * 4 + [1.5] * 4 + [1.1] * 2 + [0.8] * 3 + [0.5] * 3)
HOUR_PROFILE = HOUR_PROFILE / np.sqrt(np.mean(HOUR_PROFILE**2))
SV_RHO, SV_SD = 0.995, 0.25  # hourly log-σ AR(1): persistence, stationary sd
BREAKOUT_P, BREAKOUT_HOLD = 20, 5
SESSION_HOURS = (12, 16)  # drift on bars opening in [12, 16) UTC
CALM_VOL, STORM_VOL = 0.08, 0.30  # annual
CALM_STAY, STORM_STAY = 125.0, 40.0  # mean regime durations, days
CALM_BELOW, STORM_ABOVE = 0.15, 0.16
WARMUP = 20  # bars before σ̂ (RV, EWMA seed) exists: the planted rule cannot trade yet

_DAY_NS = 86_400 * 1_000_000_000
_HOUR_NS = 3_600 * 1_000_000_000
_DAILY_START = "1990-01-01"
_FX_WEEK_OPEN = pd.Timestamp("2015-01-04 22:00", tz="UTC").value  # a Sunday


@dataclass(frozen=True)
class Series:
    kind: str
    strength: float | None       # None for noise
    seed: int
    timeframe: str               # "1d" or "1h"
    frame: pd.DataFrame          # columns ts (UTC tz-aware), open, high, low, close, volume
    meta: SymbolMeta             # asset class, tick/lot, costs, calendar
    benchmark: str               # "flat" or "buy_and_hold": what the gates should judge against
    planted: np.ndarray | None   # the exact planted rule as a valid genome (None for noise)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {list(KINDS)}")


def timeframe_of(kind: str) -> str:
    _check_kind(kind)
    return "1h" if kind in HOURLY_KINDS else "1d"


def meta_of(kind: str) -> SymbolMeta:
    return HOURLY_META if timeframe_of(kind) == "1h" else DAILY_META


def default_n(kind: str) -> int:
    return HOURLY_N if timeframe_of(kind) == "1h" else DAILY_N


# ---- planted genomes ---------------------------------------------------------------------------

def _thr(prim: str, value: float) -> float:
    p = PRIMITIVES[PRIMITIVE_IDS[prim]]
    return (value - p.thr_lo) / (p.thr_hi - p.thr_lo)


def _slot(g: np.ndarray, side: str, k: int, prim: str, param: int, cmp: int,
          value: float) -> None:
    g[S.INDEX[f"{side}.s{k}.on"]] = 1
    g[S.INDEX[f"{side}.s{k}.prim"]] = PRIMITIVE_IDS[prim]
    g[S.INDEX[f"{side}.s{k}.param"]] = param
    g[S.INDEX[f"{side}.s{k}.cmp"]] = cmp
    g[S.INDEX[f"{side}.s{k}.thr"]] = _thr(prim, value)


def _base_genome() -> np.ndarray:
    g = np.zeros(S.N_GENES)
    for r in S.REGIMES:
        g[S.INDEX[f"regime.{r}"]] = 1
    for d in S.WEEKDAYS[:5]:
        g[S.INDEX[f"session.{d}"]] = 1
    g[S.INDEX["risk.k_stop"]] = 8.0
    g[S.INDEX["risk.risk_pct"]] = 0.01
    g[S.INDEX["vol.blend_weight"]] = 0.5
    g[S.INDEX["vol.rv_window"]] = 0  # RV over 5 bars (as tests/conftest.roc1_genome)
    g[S.INDEX["vol.garch_variant"]] = 0  # garch11
    g[S.INDEX["vol.calm_below"]] = 0.02  # every bar "normal": regimes play no part
    g[S.INDEX["vol.storm_above"]] = 0.8
    return g


def _max_bars(g: np.ndarray, k: int) -> None:
    g[S.INDEX["risk.use_max_bars"]] = 1
    g[S.INDEX["risk.max_bars"]] = k


def _always_true(g: np.ndarray, side: str) -> None:
    """Session(Asia) > 0.5 OR Session(Asia) < 0.5: true on every bar (sess is 0 or 1, never NaN)."""
    g[S.INDEX[f"{side}.logic"]] = 1  # OR
    _slot(g, side, 0, "sess", 0, 0, 0.5)
    _slot(g, side, 1, "sess", 0, 1, 0.5)


def planted_genome(kind: str) -> np.ndarray:
    """The exact planted rule of an edge kind, as a valid (repaired, unchanged by repair) genome."""
    _check_kind(kind)
    if kind not in KINDS_EDGE:
        raise ValueError(f"{kind!r} is a noise kind: it plants nothing")
    g = _base_genome()
    if kind == "breakout":
        param = PRIMITIVES[PRIMITIVE_IDS["donch"]].grid.index((BREAKOUT_P,))
        _slot(g, "long", 0, "donch", param, 0, 1.0)
        _slot(g, "short", 0, "donch", param, 1, 0.0)
        _max_bars(g, BREAKOUT_HOLD)
    elif kind == "autocorr":
        _slot(g, "long", 0, "roc", 0, 0, 0.0)
        _slot(g, "short", 0, "roc", 0, 1, 0.0)
        _max_bars(g, 1)
    elif kind == "session":
        _always_true(g, "long")
        g[S.INDEX["session.start_hour"]] = SESSION_HOURS[0] - 1
        g[S.INDEX["session.end_hour"]] = SESSION_HOURS[0]
        _max_bars(g, SESSION_HOURS[1] - SESSION_HOURS[0])
    else:  # volregime
        _always_true(g, "long")
        g[S.INDEX["regime.calm"]] = 1    # follow: long
        g[S.INDEX["regime.normal"]] = 0  # off: hold what is held
        g[S.INDEX["regime.storm"]] = 2   # fade: the long rule opens shorts
        g[S.INDEX["vol.calm_below"]] = CALM_BELOW
        g[S.INDEX["vol.storm_above"]] = STORM_ABOVE
    return repair(g)


# ---- generators --------------------------------------------------------------------------------

def _rng(kind: str, seed: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError("seed must be >= 0")
    return np.random.default_rng([int(seed), KINDS.index(kind)])


def _daily_ts(n: int) -> np.ndarray:
    return pd.bdate_range(_DAILY_START, periods=n, tz="UTC").as_unit("ns").asi8


def _fx_hourly_ts(n: int) -> np.ndarray:
    """24x5 FX hours: 120 bars a week from Sunday 22:00 UTC."""
    m = np.arange(n, dtype=np.int64)
    return _FX_WEEK_OPEN + (m // 120) * 7 * _DAY_NS + (m % 120) * _HOUR_NS


def _t_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_t(T_DOF, n) / math.sqrt(T_DOF / (T_DOF - 2.0))


@dataclass(frozen=True)
class _Draws:
    """Randomness drawn up front, so the same seed gives the same shocks at every amplitude."""

    eps: np.ndarray
    u_hi: np.ndarray  # uniforms in (0, 1] for the bridge maximum and minimum of each bar
    u_lo: np.ndarray
    volume: np.ndarray
    extra: np.ndarray  # kind-specific uniforms (regime switches)


def _draws(kind: str, seed: int, n: int, t_shocks: bool) -> _Draws:
    rng = _rng(kind, seed)
    eps = _t_unit(rng, n) if t_shocks else rng.standard_normal(n)
    return _Draws(eps, 1.0 - rng.random(n), 1.0 - rng.random(n),
                  np.exp(rng.normal(0.0, 0.3, n)), rng.random(n))


def _ohlc(r: np.ndarray, sigma: np.ndarray, d: _Draws, p0: float) -> tuple[np.ndarray, ...]:
    """Bars whose close-to-close log returns are ``r``; open = previous close; high and low
    the extremes of a Brownian bridge from open to close with the bar's σ."""
    close = p0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[p0], close[:-1]])
    up, down = bridge_extremes(r, sigma, d.u_hi, d.u_lo)
    return open_, open_ * np.exp(up), open_ * np.exp(-down), close


def _breakout_path(a: float, sigma: float, d: _Draws, p0: float) -> dict[str, np.ndarray]:
    """Bar by bar: the drift of bar t+1 is the planted rule's position decided at the close of t,
    with the kernel's state machine (reverse on the opposite break, no re-entry while held, out
    after BREAKOUT_HOLD bars, flat for one bar after a time exit)."""
    n = d.eps.shape[0]
    p, hold = BREAKOUT_P, BREAKOUT_HOLD
    close, high, low = np.empty(n), np.empty(n), np.empty(n)
    pos_path = np.zeros(n)
    shock = sigma * d.eps - 0.5 * sigma * sigma
    lu, ld = -2.0 * sigma * sigma * np.log(d.u_hi), -2.0 * sigma * sigma * np.log(d.u_lo)
    prev, pos, held = p0, 0, 0
    for t in range(n):
        pos_path[t] = pos
        r = shock[t] + pos * a * sigma
        c = prev * math.exp(r)
        close[t] = c
        high[t] = prev * math.exp(0.5 * (r + math.sqrt(r * r + lu[t])))
        low[t] = prev * math.exp(-0.5 * (-r + math.sqrt(r * r + ld[t])))
        prev = c
        if t < max(p, WARMUP):
            continue
        if pos != 0:
            held += 1
        hi = high[t - p:t].max()
        lo = low[t - p:t].min()
        x = (c - lo) / (hi - lo)
        if pos == 0:
            if x > 1.0:
                pos, held = 1, 0
            elif x < 0.0:
                pos, held = -1, 0
        elif (pos > 0 and x < 0.0) or (pos < 0 and x > 1.0):
            pos, held = -pos, 0
        elif held >= hold:
            pos = 0
    open_ = np.concatenate([[p0], close[:-1]])
    return {"open": open_, "high": high, "low": low, "close": close,
            "drift": pos_path * a * sigma, "position": pos_path}


def _emulate(signal: np.ndarray, hold: int) -> np.ndarray:
    """Position during each bar of the kernel's state machine for a long (signal > 0) / short
    (signal < 0) rule decided at each close: reverse on the opposite signal, no re-entry while
    held, out after ``hold`` bars (and flat for the bar that follows a time exit)."""
    n = signal.shape[0]
    out = np.zeros(n)
    pos, held = 0, 0
    for t in range(n - 1):
        if t < WARMUP:
            continue
        if pos != 0:
            held += 1
        x = signal[t]
        if pos == 0:
            if x != 0:
                pos, held = int(x), 0
        elif x == -pos:
            pos, held = -pos, 0
        elif held >= hold:
            pos = 0
        out[t + 1] = pos
    return out


def _hourly_sigma(ts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar σ (profile × stochastic factor) and the profile-only σ of each bar."""
    n = ts.shape[0]
    base = HOURLY_VOL / math.sqrt(bars_per_year("1h", "fx"))
    prof = base * HOUR_PROFILE[(ts // _HOUR_NS) % 24]
    eta = rng.normal(0.0, SV_SD * math.sqrt(1 - SV_RHO**2), n)
    eta[0] = rng.normal(0.0, SV_SD)
    logf = lfilter([1.0], [1.0, -SV_RHO], eta)
    factor = np.exp(logf - 0.5 * SV_SD**2)  # E[factor²] = 1
    return prof * factor, prof


def _build(kind: str, amplitude: float, seed: int, n: int) -> tuple[pd.DataFrame, dict]:
    """Frame and hidden state (drift, position, regime, ...) of one series."""
    hourly = kind in HOURLY_KINDS
    ts = _fx_hourly_ts(n) if hourly else _daily_ts(n)
    d = _draws(kind, seed, n, t_shocks=kind in ("noise_garch", "noise_hourly", "session"))
    hidden: dict[str, np.ndarray] = {}
    p0 = 1.10 if hourly else 100.0
    if kind == "breakout":
        path = _breakout_path(amplitude, DAILY_SIGMA, d, p0)
        o, h, lo, c = path["open"], path["high"], path["low"], path["close"]
        hidden = {"drift": path["drift"], "position": path["position"]}
    else:
        if kind in ("noise_flat", "autocorr"):
            sigma = np.full(n, DAILY_SIGMA)
            if kind == "autocorr":
                phi = amplitude
                e = d.eps * DAILY_SIGMA * math.sqrt(1.0 - phi * phi)
                e[0] = d.eps[0] * DAILY_SIGMA
                shock = lfilter([1.0], [1.0, -phi], e)
            else:
                shock = sigma * d.eps
            r = shock - 0.5 * sigma**2
            if kind == "autocorr":  # ROC(1) > 0 exactly when the log return is
                hidden["position"] = _emulate(np.sign(r), 1)
        elif kind == "noise_drift":
            sigma = np.full(n, DRIFT_VOL / math.sqrt(252.0))
            r = DRIFT_MU / 252.0 + sigma * d.eps
        elif kind == "noise_garch":
            omega = DAILY_SIGMA**2 * (1.0 - GARCH_ALPHA - GARCH_BETA)
            sigma = np.empty(n)
            r = np.empty(n)
            v = DAILY_SIGMA**2
            for t in range(n):
                s = math.sqrt(v)
                sigma[t] = s
                e = s * d.eps[t]
                r[t] = e - 0.5 * v
                v = omega + GARCH_ALPHA * e * e + GARCH_BETA * v
        elif kind in ("noise_hourly", "session"):
            sigma, prof = _hourly_sigma(ts, _rng(kind, seed + 1_000_003))
            drift = np.zeros(n)
            if kind == "session":
                hour = (ts // _HOUR_NS) % 24
                inside = (hour >= SESSION_HOURS[0]) & (hour < SESSION_HOURS[1])
                drift = np.where(inside, amplitude * prof, 0.0)
                hidden["position"] = np.where(np.arange(n) > WARMUP, inside, False) * 1.0
            hidden["drift"] = drift
            r = sigma * d.eps - 0.5 * sigma**2 + drift
        elif kind == "volregime":
            per_day = 1.0 / math.sqrt(252.0)
            storm = np.empty(n, dtype=bool)
            state = bool(d.extra[0] < STORM_STAY / (CALM_STAY + STORM_STAY))  # stationary start
            for t in range(n):
                if t > 0:
                    leave = 1.0 / (STORM_STAY if state else CALM_STAY)
                    if d.extra[t] < leave:
                        state = not state
                storm[t] = state
            sigma = np.where(storm, STORM_VOL, CALM_VOL) * per_day
            drift = np.where(storm, -amplitude, amplitude) * sigma
            hidden = {"storm": storm, "drift": drift}
            r = sigma * d.eps - 0.5 * sigma**2 + drift
        else:
            raise AssertionError(kind)
        o, h, lo, c = _ohlc(r, sigma, d, p0)
    if kind == "autocorr":
        hidden["drift"] = np.zeros(n)
    # volume: noise (times the hour's profile for hourly bars), never the hidden state: a volume
    # that tracked the regime or the drift would be a second, uncalibrated way to the edge
    busy = HOUR_PROFILE[(ts // _HOUR_NS) % 24] if hourly else 1.0
    volume = np.round((1000.0 if hourly else 1e6) * d.volume * busy)
    frame = pd.DataFrame({
        "ts": pd.DatetimeIndex(ts.view("datetime64[ns]")).tz_localize("UTC"),
        "open": o, "high": h, "low": lo, "close": c, "volume": np.maximum(volume, 1.0)})
    return frame, hidden


def generate_at(kind: str, amplitude: float, seed: int, n: int | None = None,
                strength: float | None = None) -> Series:
    """A series of ``kind`` at a raw amplitude (``AMPLITUDE_DOC``; ignored for noise kinds)."""
    _check_kind(kind)
    n = default_n(kind) if n is None else int(n)
    if n < 2:
        raise ValueError("n must be >= 2")
    frame, _ = _build(kind, float(amplitude), seed, n)
    planted = planted_genome(kind) if kind in KINDS_EDGE else None
    return Series(kind, None if kind in KINDS_NOISE else strength, int(seed), timeframe_of(kind),
                  frame, meta_of(kind), BENCHMARK[kind], planted)


def hidden_state(kind: str, amplitude: float, seed: int, n: int | None = None
                 ) -> dict[str, np.ndarray]:
    """The generator's latent arrays (``drift`` per bar; ``position`` the planted rule's intended
    position during each bar for breakout/autocorr/session; ``storm`` for volregime)."""
    _check_kind(kind)
    return _build(kind, float(amplitude), seed, default_n(kind) if n is None else int(n))[1]


def generate(kind: str, strength: float | None, seed: int, n: int | None = None) -> Series:
    """A series of ``kind``; edge kinds at the calibrated amplitude for ``strength``."""
    _check_kind(kind)
    if kind in KINDS_NOISE:
        if strength is not None:
            raise ValueError(f"{kind!r} is a noise kind: strength must be None")
        return generate_at(kind, 0.0, seed, n)
    if strength is None:
        raise ValueError(f"{kind!r} is an edge kind: give a strength")
    return generate_at(kind, amplitude_for(kind, strength), seed, n, strength=float(strength))


# ---- the calibration table ---------------------------------------------------------------------

@lru_cache(maxsize=4)
def _load_table(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def load_calibration(path: Path | None = None) -> dict[str, Any]:
    p = Path(path or CALIBRATION_PATH)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no calibration table; run "
                                f"`python -m benchmarks.power_data --calibrate`")
    return _load_table(str(p.resolve()))


def amplitude_for(kind: str, strength: float, path: Path | None = None) -> float:
    """The tabled amplitude; between tabled strengths (and 0 -> amplitude 0) linear."""
    table = load_calibration(path)
    rows = table["kinds"].get(kind, {}).get("strengths", {})
    if not rows:
        raise KeyError(f"no calibration for {kind!r} in the table")
    pts = sorted((float(s), float(r["amplitude"])) for s, r in rows.items())
    key = f"{float(strength):g}"
    if key in rows:
        return float(rows[key]["amplitude"])
    xs = [0.0] + [p[0] for p in pts]
    ys = [0.0] + [p[1] for p in pts]
    if not 0.0 <= strength <= xs[-1]:
        raise ValueError(f"strength {strength} outside the calibrated range [0, {xs[-1]}]")
    return float(np.interp(strength, xs, ys))


# ---- the planted rule's Sharpe -----------------------------------------------------------------

def ingest(series: Series, store_root: Path, symbol: str) -> None:
    """Store the series' bars and metadata as ``symbol`` through the ordinary ingest path."""
    from market.config import QualityConfig
    from market.ingest import ingest_bars
    from market.readers import SourceRows
    from market.store import HistoryStore

    ingest_bars(HistoryStore(store_root), symbol, series.timeframe,
                SourceRows(series.frame, np.arange(len(series.frame))), series.meta,
                QualityConfig(severity={"absurd_return": "off", "gap": "off"}))


def to_bars(series: Series) -> Bars:
    f = series.frame
    arr = {c: np.ascontiguousarray(f[c].to_numpy(np.float64))[None]
           for c in ("open", "high", "low", "close", "volume")}
    return Bars((series.kind,), series.timeframe, utc_ns(f["ts"]).asi8, arr["open"],
                arr["high"], arr["low"], arr["close"], arr["volume"], None)


def series_tables(series: Series, vol: VolatilityConfig | None = None) -> tuple[Bars, Tables]:
    """Bars and kernel tables of a series (``CALIBRATION_VOL`` unless ``vol`` is given)."""
    bars = to_bars(series)
    return bars, build_tables(bars, series.meta, vol=vol or CALIBRATION_VOL)


def sharpe_of(genome: np.ndarray, series: Series, bars_tables: tuple[Bars, Tables] | None = None,
              meta: SymbolMeta | None = None, start: int = 0, end: int | None = None) -> float:
    """Annualised Sharpe of ``genome`` on ``series`` through the kernel (``meta`` overrides the
    series' costs etc.; pass ``bars_tables`` from ``series_tables`` to reuse them)."""
    bars, tables = bars_tables or series_tables(series)
    bt = simulate(genome, tables, bars, meta or series.meta, start, end)
    return float(bt.metrics["sharpe"])


def rule_sharpe(series: Series, start: int = 0, end: int | None = None) -> float:
    """Annualised Sharpe of series.planted simulated with the kernel (costs included)."""
    if series.planted is None:
        raise ValueError(f"{series.kind!r} has no planted rule")
    return sharpe_of(series.planted, series, start=start, end=end)


# ---- calibration -------------------------------------------------------------------------------

class _Objective:
    """Mean planted-rule Sharpe over seeds 0..seeds-1 at an amplitude, memoised."""

    def __init__(self, kind: str, seeds: int, n: int | None, log: bool = False) -> None:
        self.kind, self.seeds, self.n, self.log = kind, seeds, n, log
        self.memo: dict[float, np.ndarray] = {}

    def sharpes(self, a: float) -> np.ndarray:
        a = float(a)
        if a not in self.memo:
            self.memo[a] = np.array([rule_sharpe(generate_at(self.kind, a, s, self.n))
                                     for s in range(self.seeds)])
            if self.log:
                v = self.memo[a]
                print(f"  {self.kind} a={a:.5f}: mean {v.mean():+.3f} sd {v.std(ddof=1):.3f}",
                      file=sys.stderr, flush=True)
        return self.memo[a]

    def __call__(self, a: float) -> float:
        return float(self.sharpes(a).mean())


def _solve(f: _Objective, target: float, tol: float = CALIBRATION_TOL,
           max_iter: int = 30) -> float:
    """Amplitude a >= 0 with f(a) = target: bracket from 0, then Illinois regula falsi (a secant
    step kept inside the bracket, with the stale end's value halved when a side repeats)."""
    lo, flo = 0.0, f(0.0) - target
    if flo >= 0:
        raise ValueError(f"{f.kind}: Sharpe {flo + target:.3f} at amplitude 0 already "
                         f">= {target}")
    hi = AMPLITUDE_GUESS[f.kind] * max(target, 0.5)
    fhi = f(hi) - target
    while fhi < 0:
        if abs(fhi) <= tol:
            return hi
        lo, flo = hi, fhi
        hi *= 2.0
        if hi > 5.0:
            raise ValueError(f"{f.kind}: Sharpe {target} not reached below amplitude 5")
        fhi = f(hi) - target
    if abs(fhi) <= tol:
        return hi
    side = 0
    for _ in range(max_iter):
        a = (lo * fhi - hi * flo) / (fhi - flo)
        a = round(a, 6)
        if not lo < a < hi:
            a = round(0.5 * (lo + hi), 6)
        fa = f(a) - target
        if abs(fa) <= tol or hi - lo < 1e-6:
            return a
        if fa < 0:
            lo, flo = a, fa
            if side == -1:
                fhi *= 0.5
            side = -1
        else:
            hi, fhi = a, fa
            if side == 1:
                flo *= 0.5
            side = 1
    return a


def _calibrate_detail(kind: str, strength: float, seeds: int, n: int | None,
                      objective: _Objective | None = None) -> dict[str, Any]:
    f = objective or _Objective(kind, seeds, n)
    a = _solve(f, strength)
    v = f.sharpes(a)
    return {"amplitude": a, "mean_sharpe": round(float(v.mean()), 4),
            "sd_sharpe": round(float(v.std(ddof=1)), 4) if v.size > 1 else 0.0,
            "min_sharpe": round(float(v.min()), 4), "max_sharpe": round(float(v.max()), 4)}


def calibrate(kind: str, strength: float, seeds: int = 8, n: int | None = None) -> float:
    """The amplitude at which the planted rule's mean annualised Sharpe over `seeds` seeds is
    `strength` (bisection or secant on a monotone relation); used to write the JSON table."""
    _check_kind(kind)
    if kind not in KINDS_EDGE:
        raise ValueError(f"{kind!r} is a noise kind: nothing to calibrate")
    return float(_calibrate_detail(kind, strength, seeds, n)["amplitude"])


def calibrate_table(kinds: tuple[str, ...] = KINDS_EDGE, strengths: tuple[float, ...] = STRENGTHS,
                    seeds: int = 8, n: int | None = None, path: Path | None = None,
                    log: bool = True) -> dict[str, Any]:
    """Recompute the rows of ``kinds`` × ``strengths`` and write the table (other rows kept)."""
    path = Path(path or CALIBRATION_PATH)
    table: dict[str, Any] = {}
    if path.exists():
        with open(path) as fh:
            table = json.load(fh)
    if table.get("version") != TABLE_VERSION:
        table = {}
    table.update({
        "version": TABLE_VERSION,
        "about": "Amplitude per edge kind and strength (annualised Sharpe after costs of the "
                 "planted rule, mean over seeds 0..seeds-1); written by "
                 "`python -m benchmarks.power_data --calibrate`.",
        "vol": {"window": CALIBRATION_VOL.window, "refit_every": CALIBRATION_VOL.refit_every},
        "tolerance": 0.1,
    })
    kinds_out = table.setdefault("kinds", {})
    for kind in kinds:
        if kind not in KINDS_EDGE:
            raise ValueError(f"{kind!r} is not an edge kind")
        nk = default_n(kind) if n is None else int(n)
        f = _Objective(kind, seeds, nk, log=log)
        row = kinds_out.get(kind, {})
        if row.get("n") != nk or row.get("seeds") != seeds:
            row = {}
        row.update({"timeframe": timeframe_of(kind), "n": nk, "seeds": seeds,
                    "amplitude": AMPLITUDE_DOC[kind]})
        rows = row.setdefault("strengths", {})
        for s in strengths:
            t0 = time.time()
            rows[f"{float(s):g}"] = _calibrate_detail(kind, float(s), seeds, nk, f)
            if log:
                print(f"{kind} strength {s:g}: {rows[f'{float(s):g}']} "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
        row["strengths"] = dict(sorted(rows.items(), key=lambda kv: float(kv[0])))
        kinds_out[kind] = row
        atomic_write_bytes(path, (json.dumps(table, indent=1) + "\n").encode())
    _load_table.cache_clear()
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.power_data", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--calibrate", action="store_true", help="recompute the calibration table")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS_EDGE), choices=KINDS_EDGE)
    ap.add_argument("--strengths", nargs="+", type=float, default=list(STRENGTHS))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--n", type=int, default=None, help="bars per series (default per kind)")
    ap.add_argument("--out", type=Path, default=CALIBRATION_PATH)
    ap.add_argument("--ingest", metavar="SYMBOL", default=None,
                    help="store one planted series (--kind, at --sharpe, seed --seed) as SYMBOL in $EMP_HOME's history, to try evolution, the gates "
                         "and promotion on an edge that is known to exist")
    ap.add_argument("--kind", default="autocorr", choices=KINDS_EDGE,
                    help="--ingest: the planted effect (default autocorr)")
    ap.add_argument("--sharpe", type=float, default=2.0, choices=STRENGTHS,
                    help="--ingest: the planted rule's annualised Sharpe after costs")
    ap.add_argument("--seed", type=int, default=2001, help="--ingest: the series' seed")
    args = ap.parse_args(argv)
    if args.ingest:
        from configs.loader import load_config

        series = generate(args.kind, args.sharpe, args.seed)
        root = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
                           ).store_root()
        ingest(series, root, args.ingest)
        print(f"stored {args.ingest}/{series.timeframe}: {args.kind} edge at Sharpe "
              f"{args.sharpe}, "
              f"{len(series.frame)} bars, in {root}")
        return 0
    if not args.calibrate:
        print(json.dumps(load_calibration(args.out), indent=1))
        return 0
    calibrate_table(tuple(args.kinds), tuple(args.strengths), args.seeds, args.n, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "KINDS_EDGE", "KINDS_NOISE", "STRENGTHS", "Series", "amplitude_for", "calibrate",
    "calibrate_table", "generate", "generate_at", "hidden_state", "planted_genome",
    "rule_sharpe", "series_tables", "sharpe_of", "to_bars",
]
