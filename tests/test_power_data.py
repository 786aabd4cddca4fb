"""The power benchmark's synthetic series: valid bars, exact planted rules, calibrated strengths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import power_data as P
from fitness.simulator import simulate
from genome import schema as S
from genome.ops import repair, validate
from market.config import CostModel, QualityConfig, VolatilityConfig
from market.quality import check_bars

SMALL = {"1d": 600, "1h": 2400}
TEST_SEEDS = (100, 101, 102)  # calibration used seeds 0..7
# one GARCH fit per variant: the volatility only sizes positions, which cannot create a mean
CHEAP_VOL = VolatilityConfig(window=250, refit_every=1_000_000)
NO_COSTS = CostModel(unit="bps", spread=0.0, commission=0.0, slippage=0.0)


def _strength(kind: str) -> float | None:
    return None if kind in P.KINDS_NOISE else 2.0


@pytest.mark.parametrize("kind", P.KINDS)
def test_bars_valid_deterministic_and_seeded(kind):
    n = SMALL[P.timeframe_of(kind)]
    s = P.generate(kind, _strength(kind), 3, n)
    f = s.frame
    assert s.kind == kind and s.seed == 3 and s.strength == _strength(kind)
    assert s.timeframe == P.timeframe_of(kind) == ("1h" if kind in P.HOURLY_KINDS else "1d")
    assert list(f.columns) == ["ts", "open", "high", "low", "close", "volume"]
    assert len(f) == n
    assert str(f["ts"].dt.tz) == "UTC" and f["ts"].is_monotonic_increasing
    o, h, lo, c, v = (f[x].to_numpy() for x in ("open", "high", "low", "close", "volume"))
    assert np.isfinite(np.c_[o, h, lo, c, v]).all()
    assert (lo > 0).all() and (v > 0).all()
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    report = check_bars(f, s.timeframe, s.meta.calendar, QualityConfig())
    assert report.ok, report.format()
    assert set(report.counts()) <= {"absurd_return"}, report.format()  # no gaps, no bad OHLC
    assert s.benchmark == ("buy_and_hold" if kind == "noise_drift" else "flat")
    assert (s.planted is None) == (kind in P.KINDS_NOISE)
    assert s.meta.calendar == ("fx" if s.timeframe == "1h" else "business")
    pd.testing.assert_frame_equal(f, P.generate(kind, _strength(kind), 3, n).frame)
    other = P.generate(kind, _strength(kind), 4, n).frame
    assert not np.allclose(other["close"].to_numpy(), c)


def test_default_lengths_and_arguments():
    assert len(P.generate("noise_flat", None, 0).frame) == P.DAILY_N == 5000
    hourly = P.generate("noise_hourly", None, 0).frame
    assert len(hourly) == P.HOURLY_N == 5 * 260 * 24
    assert set(hourly["ts"].dt.day_of_week) == {0, 1, 2, 3, 4, 6}  # Sunday 22:00 to Friday 22:00
    with pytest.raises(ValueError):
        P.generate("noise_flat", 1.0, 0)
    with pytest.raises(ValueError):
        P.generate("breakout", None, 0)
    with pytest.raises(ValueError):
        P.generate("nope", None, 0)
    with pytest.raises(ValueError):
        P.planted_genome("noise_flat")


@pytest.mark.parametrize("kind", P.KINDS_EDGE)
def test_planted_genomes_valid(kind):
    g = P.planted_genome(kind)
    assert validate(g) == []
    assert np.array_equal(repair(g), g)
    assert g[S.INDEX["risk.k_stop"]] == 8.0 and g[S.INDEX["risk.risk_pct"]] == 0.01
    assert np.array_equal(P.generate(kind, 2.0, 0, SMALL[P.timeframe_of(kind)]).planted, g)


@pytest.mark.parametrize("kind", ["breakout", "autocorr", "session"])
def test_planted_rule_holds_exactly_the_drifting_bars(kind):
    """The kernel's position under the planted genome is the generator's planted position
    (stops, at 8 σ̂, may cut a few trades short)."""
    n = 1500 if kind != "session" else 4000
    a = P.amplitude_for(kind, 2.0)
    s = P.generate_at(kind, a, 7, n)
    bars, tables = P.series_tables(s)
    bt = simulate(s.planted, tables, bars, s.meta)
    want = P.hidden_state(kind, a, 7, n)["position"]
    assert np.abs(want).sum() > n / 20
    assert np.mean(np.sign(bt.position) != want) < 0.01
    stopped = (bt.trades["reason"] == "stop").mean()
    assert stopped < 0.03


def test_volregime_regimes_classified_with_calibration_vol():
    a = P.amplitude_for("volregime", 2.0)
    s = P.generate_at("volregime", a, 7, 3000)
    bars, tables = P.series_tables(s)
    assert tables.vol.fits["garch11"] >= 4  # window 250, refit every 500
    storm = P.hidden_state("volregime", a, 7, 3000)["storm"]
    assert 0.1 < storm.mean() < 0.45
    g = s.planted
    w = g[S.INDEX["vol.blend_weight"]]
    var = (w * tables.vol.variance[int(g[S.INDEX["vol.garch_variant"]])]
           + (1 - w) * tables.vol.rv[int(g[S.INDEX["vol.rv_window"]])])
    sig = np.sqrt(var * tables.bars_per_year)
    seen_storm = sig[50:-1] > g[S.INDEX["vol.storm_above"]]
    assert np.mean(seen_storm == storm[51:]) > 0.9  # the σ̂ at t's close vs bar t+1's regime
    bt = simulate(g, tables, bars, s.meta)
    short = np.sign(bt.position[50:]) < 0
    assert np.mean(short == storm[50:]) > 0.88


@pytest.mark.parametrize("kind", P.KINDS_EDGE)
def test_strength_two_reached_out_of_sample(kind):
    row = P.load_calibration()["kinds"][kind]["strengths"]["2"]
    sharpes = [P.rule_sharpe(P.generate(kind, 2.0, seed)) for seed in TEST_SEEDS]
    tol = max(0.5, 3 * row["sd_sharpe"] / math.sqrt(len(TEST_SEEDS)))
    assert abs(np.mean(sharpes) - 2.0) < tol, sharpes
    assert abs(row["mean_sharpe"] - 2.0) <= 0.1


@pytest.mark.parametrize("kind", P.KINDS_EDGE)
def test_weak_edge_clearly_below_strong(kind):
    n = 2000 if P.timeframe_of(kind) == "1d" else 6240  # same seed: common random numbers
    weak = P.rule_sharpe(P.generate(kind, 1.0, 5, n))
    strong = P.rule_sharpe(P.generate(kind, 3.0, 5, n))
    assert weak < strong - 1.0, (weak, strong)


def test_calibration_table_complete():
    table = P.load_calibration()
    assert table["vol"] == {"window": 250, "refit_every": 500}
    for kind in P.KINDS_EDGE:
        rows = table["kinds"][kind]
        assert rows["n"] == P.default_n(kind) and rows["seeds"] >= 3
        amps = [rows["strengths"][f"{s:g}"]["amplitude"] for s in P.STRENGTHS]
        assert all(x > 0 for x in amps) and amps == sorted(amps)
        for s in P.STRENGTHS:
            assert abs(rows["strengths"][f"{s:g}"]["mean_sharpe"] - s) <= 0.1
    between = P.amplitude_for("autocorr", 2.5)
    assert amps and P.amplitude_for("autocorr", 2.0) < between < P.amplitude_for("autocorr", 3.0)


@pytest.mark.parametrize("kind", P.KINDS_NOISE)
def test_planted_rules_earn_nothing_on_noise(kind):
    tf = P.timeframe_of(kind)
    rules = [k for k in P.KINDS_EDGE if P.timeframe_of(k) == tf]
    gross, net = [], []
    for seed in TEST_SEEDS:
        s = P.generate(kind, None, seed)
        bt = P.series_tables(s, CHEAP_VOL)
        free = s.meta.model_copy(update={"costs": NO_COSTS})
        for r in rules:
            g = P.planted_genome(r)
            gross.append(P.sharpe_of(g, s, bt, meta=free))
            net.append(P.sharpe_of(g, s, bt))
    years = len(s.frame) / (252 if tf == "1d" else 6240)
    tol = 3 / math.sqrt(years * len(TEST_SEEDS))  # 3 standard errors of a mean Sharpe
    assert abs(np.mean(gross)) < tol, gross
    assert np.mean(net) < np.mean(gross) + 1e-9
    assert np.mean(net) < tol
