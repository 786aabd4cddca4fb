"""Primitive kernels and the feature table: reference formulas, causality, SMC hand cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genome import primitives_nb as pnb
from genome.features import KERNELS, N_ROWS, FeatureTable, build_features
from genome.primitives import PRIMITIVE_IDS, PRIMITIVES

NS_MIN = 60_000_000_000


def random_bars(seed: int, n: int, tick: float = 0.0, flat_volume: bool = False,
                ts0: int = 1_700_000_000 * 10**9) -> dict[str, np.ndarray]:
    """Consistent random OHLCV bars; ``tick`` > 0 quantises prices so ties and flat runs occur."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close])[:n] * np.exp(rng.normal(0, 0.002, n))
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.4, n))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.4, n))
    if tick:
        open_, close = np.round(open_ / tick) * tick, np.round(close / tick) * tick
        high = np.maximum(np.round(high / tick) * tick, np.maximum(open_, close))
        low = np.minimum(np.round(low / tick) * tick, np.minimum(open_, close))
    volume = rng.integers(0, 4 if flat_volume else 1000, n).astype(float)
    ts = ts0 + np.cumsum(rng.integers(1, 4, n)) * 15 * NS_MIN
    return {"ts": ts.astype(np.int64), "open_": open_, "high": high, "low": low,
            "close": close, "volume": volume}


def table(bars: dict[str, np.ndarray]) -> FeatureTable:
    return build_features(**bars)


def feature(bars: dict[str, np.ndarray], name: str, k: int) -> np.ndarray:
    ft = table(bars)
    return ft.values[ft.row(PRIMITIVE_IDS[name], k)]


# ---- reference formulas (pandas) -------------------------------------------------------------

def seeded_ewm(x: pd.Series, alpha: float, p: int) -> pd.Series:
    """EWM y = y + alpha (x - y) seeded at the p-th valid value with the mean of the first p."""
    f = int(np.flatnonzero(x.notna().to_numpy())[0])
    y = x.copy()
    y.iloc[: f + p - 1] = np.nan
    if f + p - 1 < len(x):
        y.iloc[f + p - 1] = x.iloc[f: f + p].mean()
    return y.ewm(alpha=alpha, adjust=False).mean()


def ref_rows(b: dict[str, np.ndarray], name: str, params: tuple[int, ...]) -> np.ndarray:
    c, h, lo, v = (pd.Series(b[k]) for k in ("close", "high", "low", "volume"))
    if name == "sma":
        return (c.rolling(params[0]).mean() / c - 1).to_numpy()
    if name == "ema":
        p = params[0]
        return (seeded_ewm(c, 2 / (p + 1), p) / c - 1).to_numpy()
    if name == "rsi":
        p = params[0]
        d = c.diff()
        g = seeded_ewm(d.clip(lower=0), 1 / p, p)
        loss = seeded_ewm((-d).clip(lower=0), 1 / p, p)
        return (100 * g / (g + loss)).to_numpy()
    if name == "roc":
        return (c / c.shift(params[0]) - 1).to_numpy()
    if name == "macd":
        f, s, g = params
        m = seeded_ewm(c, 2 / (f + 1), f) - seeded_ewm(c, 2 / (s + 1), s)
        return ((m - seeded_ewm(m, 2 / (g + 1), g)) / c).to_numpy()
    if name == "bollz":
        r = c.rolling(params[0])
        return ((c - r.mean()) / r.std(ddof=0)).to_numpy()
    if name == "donch":
        p = params[0]
        lo_p, hi_p = lo.rolling(p).min().shift(1), h.rolling(p).max().shift(1)
        return ((c - lo_p) / (hi_p - lo_p)).to_numpy()
    if name == "atrr":
        f, s = params
        pc = c.shift(1)
        tr = pd.concat([h - lo, (h - pc).abs(), (lo - pc).abs()], axis=1).max(axis=1)
        tr.iloc[0] = np.nan
        return (seeded_ewm(tr, 1 / f, f) / seeded_ewm(tr, 1 / s, s)).where(tr.index >= s).to_numpy()
    if name == "volz":
        r = v.rolling(params[0])
        return ((v - r.mean()) / r.std(ddof=0)).to_numpy()
    if name == "retz":
        r = np.log(c).diff()
        return (r / r.rolling(params[0]).std(ddof=0).shift(1)).to_numpy()
    raise KeyError(name)


NUMERIC = ("sma", "ema", "rsi", "roc", "macd", "bollz", "donch", "atrr", "volz", "retz")


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_primitives_match_reference(name: str) -> None:
    b = random_bars(1, 700)
    ft = table(b)
    prim = PRIMITIVE_IDS[name]
    for k, params in enumerate(PRIMITIVES[prim].grid):
        got = ft.values[ft.row(prim, k)]
        want = ref_rows(b, name, params)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11, err_msg=f"{name}{params}")
        # the warm-up is exactly the documented one: NaN there, finite right after
        assert np.isnan(got).sum() == np.isnan(want).sum()


def test_long_series_std_stays_accurate() -> None:
    """FX-like prices (1.1 +- 1e-4) over 200k bars: the rolling std must not drift or cancel."""
    rng = np.random.default_rng(7)
    n, p = 200_000, 20
    x = 1.1 + np.cumsum(rng.normal(0, 1e-5, n))
    got = np.empty(n)
    pnb.bollz_nb(x, p, got)
    w = np.lib.stride_tricks.sliding_window_view(x, p)
    want = (x[p - 1:] - w.mean(axis=1)) / w.std(axis=1)
    np.testing.assert_allclose(got[p - 1:], want, rtol=1e-9, atol=1e-9)


def test_flat_windows_give_nan_not_noise() -> None:
    b = random_bars(2, 300)
    b["volume"][100:130] = 7.0
    b["close"][200:230] = b["close"][199]
    b["open_"][201:230] = b["close"][199]
    b["high"][200:230] = np.maximum(b["high"][200:230], b["close"][199])
    b["low"][200:230] = np.minimum(b["low"][200:230], b["close"][199])
    volz = feature(b, "volz", 0)  # p = 10
    assert np.isnan(volz[109:130]).all() and np.isfinite(volz[108]) and np.isfinite(volz[130])
    bollz = feature(b, "bollz", 0)
    assert np.isnan(bollz[209:230]).all() and np.isfinite(bollz[230])
    rsi = feature(b, "rsi", 0)  # Wilder averages decay but never reach 0: RSI stays put
    np.testing.assert_allclose(rsi[201:230], rsi[201])
    assert np.isnan(feature(b, "retz", 0)[221:231]).all()  # 20 zero returns before these bars


# ---- causality -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(240, 330),
       tick=st.sampled_from([0.0, 0.05, 0.5]), flat=st.booleans())
def test_every_row_is_causal(seed: int, n: int, tick: float, flat: bool) -> None:
    """Replace every bar after a cut t (values and times): no row may change at bars <= t."""
    a = random_bars(seed, n, tick, flat)
    fa = table(a)
    rng = np.random.default_rng(seed)
    for j, t in enumerate(rng.integers(0, n - 1, 24)):
        other = random_bars(seed + j + 1, n, tick, not flat)
        b = {k: np.concatenate([a[k][: t + 1], other[k][t + 1:]]) for k in a}
        steps = rng.integers(1, 500, n - t - 1) * NS_MIN
        b["ts"] = np.concatenate([a["ts"][: t + 1], a["ts"][t] + np.cumsum(steps)])
        fb = table(b)
        for r, name in enumerate(fa.names):
            np.testing.assert_array_equal(fa.values[r, : t + 1], fb.values[r, : t + 1],
                                          err_msg=f"{name} cut at {t}")


def test_every_row_is_exercised() -> None:
    """Guards the causality test against vacuity: every row has values, SMC rows both signs."""
    ft = table(random_bars(3, 3000, tick=0.05))
    for r, name in enumerate(ft.names):
        v = ft.values[r]
        assert np.isfinite(v).any(), name
        if name.split("(")[0] in ("bos", "fvg", "obr", "sweep"):
            assert (v == 1).any() and (v == -1).any(), name
        if name.startswith("sess"):
            assert set(np.unique(v)) == {0.0, 1.0}, name


# ---- SMC on hand-built bars ------------------------------------------------------------------

def ohlc(rows: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, ...]:
    a = np.array(rows, dtype=np.float64)
    return a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy()


# (open, high, low, close); n = 2. Swing high 12.0 at bar 2 (known at 4), swing low 8.0 at 5
# (known at 7), swing high 12.6 at 8 (known at 10), swing low 9.5 at 12 (known at 14), swing
# high 11.5 at 14 (known at 16), swing low 8.6 at 17 (known at 19), swing high 12.0 at 21
# (known at 23), swing low 10.6 at 23 (known at 25), swing high 12.3 at 24 (known at 26).
SMC_BARS = [
    (10.0, 10.5, 9.5, 10.2),    # 0
    (10.2, 11.0, 10.0, 10.8),   # 1
    (10.8, 12.0, 10.6, 11.5),   # 2  swing high 12.0
    (11.5, 11.6, 10.4, 10.5),   # 3
    (10.5, 11.0, 9.0, 9.4),     # 4
    (9.4, 9.8, 8.0, 8.5),       # 5  swing low 8.0; last down candle before the break at 8
    (8.5, 9.6, 8.2, 9.5),       # 6
    (9.5, 10.8, 9.3, 10.6),     # 7
    (10.6, 12.6, 10.5, 12.4),   # 8  close > 12.0: bullish BOS (12.6 itself not known yet)
    (12.4, 12.5, 11.8, 12.0),   # 9
    (12.0, 12.2, 11.0, 11.2),   # 10
    (11.2, 11.4, 9.9, 10.1),    # 11
    (10.1, 10.3, 9.5, 10.2),    # 12 low 9.5 <= 9.8: retest of order block [8.0, 9.8]
    (10.2, 10.9, 10.0, 10.7),   # 13
    (10.7, 11.5, 10.5, 11.3),   # 14 last up candle before the break at 16
    (11.3, 11.4, 9.2, 9.7),     # 15 low < 9.5, close > 9.5: bullish sweep
    (9.7, 10.0, 9.0, 9.1),      # 16 close < 9.5: bearish BOS
    (9.1, 9.4, 8.6, 8.8),       # 17 last down candle before the break at 20
    (8.8, 10.2, 8.7, 10.1),     # 18
    (10.1, 10.8, 10.0, 10.6),   # 19 high >= 10.5: retest of bearish block [10.5, 11.5]
    (10.6, 11.8, 10.4, 11.7),   # 20 close > 11.5: bullish BOS (a break, not a sweep)
    (11.7, 12.0, 11.1, 11.3),   # 21
    (11.3, 11.5, 10.9, 11.0),   # 22
    (11.0, 11.2, 10.6, 10.8),   # 23 last down candle before the break at 25
    (10.8, 12.3, 10.7, 11.9),   # 24 high > 12.0, close < 12.0: bearish sweep
    (11.9, 12.1, 11.5, 12.05),  # 25 close > 12.0: bullish BOS again; block -> bar 23
    (12.05, 12.2, 11.0, 11.1),  # 26 low 11.0 <= 11.2: retest of block [10.6, 11.2]
]


def run_kernel(kernel, *args: object) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.full(len(args[0]), -99.0)  # type: ignore[arg-type]
    kernel(*args, out)
    return out


def test_swings_are_known_n_bars_later() -> None:
    _, h, lo, _ = ohlc(SMC_BARS)
    sh, sl = np.empty(len(h)), np.empty(len(h))
    pnb.swings_nb(h, lo, 2, sh, sl)
    nan = np.nan
    want_sh = [nan] * 4 + [12.0] * 6 + [12.6] * 6 + [11.5] * 7 + [12.0] * 3 + [12.3]
    want_sl = [nan] * 7 + [8.0] * 7 + [9.5] * 5 + [8.6] * 6 + [10.6] * 2
    np.testing.assert_array_equal(sh, want_sh)
    np.testing.assert_array_equal(sl, want_sl)


def test_bos_hand_built() -> None:
    _, h, lo, c = ohlc(SMC_BARS)
    want = [0] * 8 + [1] * 8 + [-1] * 4 + [1] * 7
    np.testing.assert_array_equal(run_kernel(pnb.bos_nb, h, lo, c, 2), want)


def test_sweep_hand_built() -> None:
    _, h, lo, c = ohlc(SMC_BARS)
    want = np.zeros(len(SMC_BARS))
    want[15], want[24] = 1, -1
    np.testing.assert_array_equal(run_kernel(pnb.sweep_nb, h, lo, c, 2), want)


def test_obr_hand_built() -> None:
    o, h, lo, c = ohlc(SMC_BARS)
    want = np.zeros(len(SMC_BARS))
    want[12], want[19], want[26] = 1, -1, 1
    np.testing.assert_array_equal(run_kernel(pnb.obr_nb, o, h, lo, c, 2), want)


def test_obr_block_gapped_through_is_dropped() -> None:
    rows = [*SMC_BARS[:12],
            (7.8, 7.9, 7.5, 7.6),   # 12 gaps below the block [8.0, 9.8]: block ends, no signal
            (7.6, 9.0, 7.5, 8.9)]   # 13 trades into the old zone: nothing is active any more
    o, h, lo, c = ohlc(rows)
    want = np.zeros(len(rows))
    np.testing.assert_array_equal(run_kernel(pnb.obr_nb, o, h, lo, c, 2), want)
    assert run_kernel(pnb.bos_nb, h, lo, c, 2)[12] == -1  # the gap is a bearish break of 8.0


def test_smc_rows_in_table_use_the_kernels() -> None:
    o, h, lo, c = ohlc(SMC_BARS)
    ts = np.arange(len(o), dtype=np.int64) * NS_MIN
    ft = build_features(ts, o, h, lo, c, np.ones(len(o)))
    bos = ft.values[ft.row(PRIMITIVE_IDS["bos"], 0)]
    assert PRIMITIVES[PRIMITIVE_IDS["bos"]].grid[0] == (2,)
    np.testing.assert_array_equal(bos, run_kernel(pnb.bos_nb, h, lo, c, 2))
    assert ft.values[ft.row(PRIMITIVE_IDS["bos"], 3)].tolist() == [0.0] * len(o)  # n = 8


def test_fvg_hand_built() -> None:
    hl = [(10, 9), (11, 9.5), (12, 10.5), (12, 11), (11.5, 10.8), (10.4, 10.0), (10.6, 10.1),
          (10.9, 10.5), (10.8, 10.4), (10.7, 10.3), (10.6, 10.2), (10.5, 10.1)]
    h = np.array([x[0] for x in hl], dtype=float)
    lo = np.array([x[1] for x in hl], dtype=float)
    # gaps: +1 at 2 (10.5 > 10), -1 at 5 (10.4 < 11), -1 at 6 (10.6 < 10.8), +1 at 7 (10.5 > 10.4)
    want = {1: [0, 0, 1, 0, 0, -1, -1, 1, 0, 0, 0, 0],
            3: [0, 0, 1, 1, 1, -1, -1, 1, 1, 1, 0, 0],
            5: [0, 0, 1, 1, 1, -1, -1, 1, 1, 1, 1, 1]}
    for p, w in want.items():
        np.testing.assert_array_equal(run_kernel(pnb.fvg_nb, h, lo, p), w, err_msg=f"p={p}")


# ---- sessions --------------------------------------------------------------------------------

@pytest.mark.parametrize(("when", "asia", "london", "ny", "overlap"), [
    ("2024-03-04 00:00", 1, 0, 0, 0),
    ("2024-03-04 06:59", 1, 0, 0, 0),
    ("2024-03-04 07:00", 1, 1, 0, 0),
    ("2024-03-04 08:59", 1, 1, 0, 0),
    ("2024-03-04 09:00", 0, 1, 0, 0),
    ("2024-03-04 11:59", 0, 1, 0, 0),
    ("2024-03-04 12:00", 0, 1, 1, 1),
    ("2024-03-04 15:59", 0, 1, 1, 1),
    ("2024-03-04 16:00", 0, 0, 1, 0),
    ("2024-03-04 20:59", 0, 0, 1, 0),
    ("2024-03-04 21:00", 0, 0, 0, 0),
    ("2024-03-04 23:59", 0, 0, 0, 0),
    ("1969-12-31 08:30", 1, 1, 0, 0),  # negative ns: floor, not truncation
    ("1969-12-31 23:00", 0, 0, 0, 0),
])
def test_session_masks(when: str, asia: int, london: int, ny: int, overlap: int) -> None:
    ts = np.array([pd.Timestamp(when, tz="UTC").value], dtype=np.int64)
    got = [run_kernel(pnb.sess_nb, ts, k)[0] for k in range(4)]
    assert got == [asia, london, ny, overlap]


# ---- the table -------------------------------------------------------------------------------

def test_table_layout() -> None:
    b = random_bars(4, 250)
    ft = table(b)
    assert set(KERNELS) == {p.name for p in PRIMITIVES}
    assert ft.values.shape == (sum(len(p.grid) for p in PRIMITIVES), 250) == (N_ROWS, ft.n_bars)
    assert ft.values.dtype == np.float64 and ft.values.flags.c_contiguous
    assert not ft.values.flags.writeable
    assert ft.offsets.dtype == np.int64 and ft.grid_len.dtype == np.int64
    assert len(ft.names) == N_ROWS == len(set(ft.names))
    assert ft.names[0] == "sma(5)"
    assert ft.names[ft.row(PRIMITIVE_IDS["sma"], 4)] == "sma(20)"
    assert ft.names[ft.row(PRIMITIVE_IDS["macd"], 0)] == "macd(12,26,9)"
    assert ft.names[ft.row(PRIMITIVE_IDS["atrr"], 3)] == "atrr(20,200)"
    assert ft.names[-1] == "sess(3)"
    row = 0
    for i, p in enumerate(PRIMITIVES):
        assert ft.offsets[i] == row and ft.grid_len[i] == len(p.grid)
        for k in range(len(p.grid)):
            assert ft.row(i, k) == row and ft.names[row] == f"{p.name}({p.param_text(k)})"
            row += 1
    out = np.empty(250)
    pnb.rsi_nb(b["close"], 14, out)
    np.testing.assert_array_equal(ft.values[ft.row(PRIMITIVE_IDS["rsi"], 5)], out)


@pytest.mark.parametrize(("prim", "k"), [(-1, 0), (len(PRIMITIVES), 0), (0, -1), (0, 9),
                                         (PRIMITIVE_IDS["macd"], 4)])
def test_row_out_of_range(prim: int, k: int) -> None:
    ft = table(random_bars(5, 10))
    with pytest.raises(IndexError, match="out of range"):
        ft.row(prim, k)


def test_empty_and_short_inputs() -> None:
    b = random_bars(6, 0)
    assert table(b).values.shape == (N_ROWS, 0)
    short = table(random_bars(6, 3))
    assert np.isnan(short.values[short.row(PRIMITIVE_IDS["sma"], 8)]).all()


def test_datetime64_ts_accepted() -> None:
    b = random_bars(8, 50)
    ref = table(b).values
    b["ts"] = b["ts"].view("datetime64[ns]")
    np.testing.assert_array_equal(table(b).values, ref)


def _bad(mutate) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    b = random_bars(9, 40)
    mutate(b)
    return b


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda b: b.update(close=b["close"][:-1]), "differ in length"),
    (lambda b: b.update(high=np.stack([b["high"]] * 2)), "high must be 1-D"),
    (lambda b: b.update(ts=b["ts"].astype(np.float64)), "ts must be int64"),
    (lambda b: b.update(volume=b["volume"].astype(np.int64)), "volume must be float64"),
    (lambda b: b["ts"].__setitem__(17, b["ts"][16]), "strictly increasing: bar 17"),
    (lambda b: b["close"].__setitem__(5, np.nan), "close is not finite at bar 5"),
    (lambda b: b["open_"].__setitem__(3, np.inf), "open is not finite at bar 3"),
    (lambda b: [b[k].__setitem__(11, -1.0) for k in ("open_", "high", "low", "close")],
     "open must be positive: bar 11"),
    (lambda b: b["volume"].__setitem__(8, -2.0), "volume must be >= 0: bar 8"),
    (lambda b: b["high"].__setitem__(21, b["low"][21] * 0.99), "inconsistent OHLC at bar 21"),
])
def test_input_validation(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        table(_bad(mutate))
