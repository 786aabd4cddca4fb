"""The ``ginn`` volatility variant: the fifth variance row is a GINN model's forecast after the
model's training data end and garch11's row elsewhere; it is causal, continues bit for bit
(snapshot, ``advance_tables``, ``LiveTables`` across refits) with the model, falls back to
GARCH without it, is audited for look-ahead, and a genome that selects it is traded by the
kernel on that row. Real weights files (random weights, saved and verified), no torch."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import random_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_simulator import _always_long_genome
from test_tables_continue import FX, window

from fitness.config import SimConfig
from fitness.simulator import simulate
from fitness.tables import (
    LiveTables,
    SnapshotError,
    Tables,
    advance_tables,
    build_tables,
    build_tables_state,
    finish_refit,
    ginn_model_of,
    load_state,
    save_state,
    state_bytes,
    state_from_bytes,
)
from gates.lookahead import LookaheadError, audit_lookahead
from genome import schema as S
from genome.decode import describe_dict
from market.config import VolatilityConfig
from market.ginn import GinnError, GinnSpec, GinnWeights, forecast, ginn_inputs, save_weights
from market.ginn_vol import GinnModel, model_sha256
from market.volatility import (
    FITTED_VARIANTS,
    GARCH_FAMILY,
    GARCH_VARIANTS,
    GINN_ROW,
    build_vol_table,
    due_refits,
    run_refit,
    variant_fits,
)

GINN, GARCH = GARCH_VARIANTS.index("ginn"), GARCH_VARIANTS.index("garch11")
SPEC = GinnSpec(lags=3, seq_len=8, hidden=6, rv_windows=(5, 20))
N, DATA_END = 420, 150  # the model is trained on bars <= 150: used from bar 151 on
BARS = random_bars(N, 11)
BASE = {"window": 60, "refit_every": 17, "min_bars": 10}  # several refits in 420 bars


def iso(ns: int) -> str:
    return datetime.fromtimestamp(int(ns) / 1e9, UTC).isoformat()


def random_weights(seed: int, data_end: str | None = iso(BARS.ts[DATA_END])) -> GinnWeights:
    """Random LSTM weights, inputs standardised around hourly-variance logs."""
    rng = np.random.default_rng(seed)
    h, f = SPEC.hidden, SPEC.n_features

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.6, 0.6, shape)

    mean = np.concatenate([np.zeros(SPEC.lags), np.full(f - SPEC.lags - 3, -12.0), [0.3] * 3])
    meta = {"trained_at": "2026-01-01T00:00:00+00:00", "symbol": "X"}
    if data_end is not None:
        meta["data_end"] = data_end
    return GinnWeights(SPEC, u(4 * h, f), u(4 * h, h), u(4 * h), u(4 * h), u(1, h),
                       np.array([0.5]), x_mean=mean, x_std=np.full(f, 1.5), y_scale=1e-5,
                       meta=meta)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ginn")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        out[name] = d / f"{name}.npz"
        save_weights(out[name], random_weights(seed))
    return out


@pytest.fixture(scope="module")
def vol(files) -> VolatilityConfig:
    return VolatilityConfig(**BASE, ginn_model=files["a"])


@pytest.fixture(scope="module")
def model(vol) -> GinnModel:
    m = ginn_model_of(vol)
    assert m is not None
    return m


@pytest.fixture(scope="module")
def whole(vol) -> Tables:
    return build_tables(BARS, FX, vol=vol)


def test_without_a_model_the_ginn_row_is_garch11() -> None:
    t = build_tables(BARS, FX, vol=VolatilityConfig(**BASE))
    assert t.vol.variance.shape == (len(GARCH_VARIANTS), N)
    assert t.vol.variance[GINN].tobytes() == t.vol.variance[GARCH].tobytes()
    assert t.vol.ginn_sha256 == ""
    assert GARCH_VARIANTS[:4] == GARCH_FAMILY and SPEC.variants == GARCH_FAMILY


def test_model_row_is_garch11_up_to_data_end_and_the_forecast_after(whole, files,
                                                                   model) -> None:
    v = whole.vol
    assert v.ginn_sha256 == model.sha256 == hashlib.sha256(files["a"].read_bytes()).hexdigest()
    assert model.sha256 == model_sha256(model.weights)
    g, garch = v.variance[GINN], v.variance[GARCH]
    f = forecast(model.weights, ginn_inputs(BARS.close[0], v, SPEC))
    after = np.arange(N) > DATA_END
    used = after & np.isfinite(f)
    assert used.sum() > 200
    np.testing.assert_array_equal(g[~used], garch[~used])
    # same LSTM, fixed summation order instead of BLAS's: equal to rounding
    np.testing.assert_allclose(g[used], f[used], rtol=1e-12, atol=0)
    assert np.all(np.abs(g[used] / garch[used] - 1) > 1e-6), "the model must differ from GARCH"
    # the GARCH family is untouched by the model
    plain = build_tables(BARS, FX, vol=VolatilityConfig(**BASE))
    assert v.variance[:GINN_ROW].tobytes() == plain.vol.variance[:GINN_ROW].tobytes()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(t=st.integers(DATA_END - 20, N - 2), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(0.002, 0.05))
def test_ginn_row_is_causal(model, t: int, seed: int, scale: float) -> None:
    """Rows <= t do not move when the closes after t change."""
    close = BARS.close[0].copy()
    other = close.copy()
    rng = np.random.default_rng(seed)
    other[t + 1:] *= np.exp(np.cumsum(rng.normal(0.0, scale, N - t - 1)))
    kw = {"window": 60, "refit_every": 17, "min_bars": 10, "ts": BARS.ts, "ginn": model}
    a, b = build_vol_table(close, 8760.0, **kw), build_vol_table(other, 8760.0, **kw)
    assert a.variance[:, : t + 1].tobytes() == b.variance[:, : t + 1].tobytes()
    assert a.rv[:, : t + 1].tobytes() == b.rv[:, : t + 1].tobytes()
    assert not np.array_equal(a.variance[GINN, t + 1:], b.variance[GINN, t + 1:])


@pytest.mark.parametrize("split", [100, 233])  # before the model's data end, and after it
def test_live_tables_continue_the_ginn_row_bit_for_bit(tmp_path, vol, model, whole,
                                                       split: int) -> None:
    _, state = build_tables_state(window(BARS, 0, split), FX, vol=vol)
    assert state.vol.ginn_sha256 == model.sha256 and state.vol.ginn_x.shape == (SPEC.seq_len,
                                                                      SPEC.n_features)
    save_state(tmp_path / "s.npz", state)
    live = LiveTables(load_state(tmp_path / "s.npz"), ginn=model)
    assert live.ginn_active and live.fits_for("ginn") == FITTED_VARIANTS
    refits = 0
    for t in range(split, N):
        col = live.step(int(BARS.ts[t]), *(float(getattr(BARS, f)[0, t]) for f in
                                           ("open", "high", "low", "close", "volume")))
        want = whole.vol.variance[:, t]
        if live.pending:
            refits += 1
            assert np.isnan(col.variance[GINN])
            results = [run_refit(j) for j in live.due_refits()]
            only = [r for r in results if r.variant == "garch11"]
            assert np.isnan(live.preview_refits(only)[GINN])  # ginn reads every fitted row
            assert live.preview_refits(results).tobytes() == want.tobytes()
            if t % 2:  # a restart while a refit is pending continues as well
                save_state(tmp_path / "p.npz", live.state())
                live = LiveTables(load_state(tmp_path / "p.npz"), ginn=model)
            live.apply_refits(results)
        assert live.last_variance.tobytes() == want.tobytes(), t
    assert refits >= 5
    assert live.state().vol.ginn_sha256 == model.sha256


def test_advance_tables_without_inline_refits_equals_the_build(vol, model, whole) -> None:
    _, state = build_tables_state(window(BARS, 0, 140), FX, vol=vol)
    cols, pos = [], 140
    while pos < N:
        c, state = advance_tables(state, window(BARS, pos, N), refit=False, ginn=model)
        pos += c.variance.shape[1]
        if state.vol.pending:
            results = [run_refit(j) for j in due_refits(state.vol)]
            c.variance[:, -1], state = finish_refit(state, results, ginn=model)
        cols.append(c.variance)
    assert np.concatenate(cols, axis=1).tobytes() == whole.vol.variance[:, 140:].tobytes()


def test_no_model_or_another_model_falls_back_to_garch11(files, vol, whole) -> None:
    _, state = build_tables_state(window(BARS, 0, 200), FX, vol=vol)
    other = GinnModel.load(files["b"])
    for given_model in (None, other):
        live = LiveTables(state, ginn=given_model)
        assert not live.ginn_active and live.fits_for("ginn") == ("garch11",)
        for t in range(200, 260):
            live.step(int(BARS.ts[t]), *(float(getattr(BARS, f)[0, t]) for f in
                                           ("open", "high", "low", "close", "volume")))
            if live.pending:
                results = [run_refit(j) for j in live.due_refits()]
                col_p = live.preview_refits([r for r in results if r.variant == "garch11"])
                assert col_p[GINN] == col_p[GARCH] == whole.vol.variance[GARCH, t]
                live.apply_refits(results)
            assert live.last_variance[GINN] == live.last_variance[GARCH]
            np.testing.assert_array_equal(live.last_variance[:GINN_ROW],
                                          whole.vol.variance[:GINN_ROW, t])
        # the state forgets the model: continuing it later with the model is not a model row
        assert live.state().vol.ginn_sha256 == ""
        assert not LiveTables(live.state(), ginn=GinnModel.load(files["a"])).ginn_active


def test_snapshot_records_the_model_and_refuses_a_bad_one(vol, model) -> None:
    _, state = build_tables_state(window(BARS, 0, 200), FX, vol=vol)
    back = state_from_bytes(state_bytes(state), "snapshot")
    assert back.vol.ginn_sha256 == model.sha256
    assert back.vol.ginn_x.tobytes() == state.vol.ginn_x.tobytes()
    bad = dataclasses.replace(state, vol=state.vol.copy(ginn_sha256="not-a-digest"))
    with pytest.raises(SnapshotError, match="neither empty nor 64 lowercase hex"):
        state_from_bytes(state_bytes(bad), "snapshot")
    rows = dataclasses.replace(state, vol=state.vol.copy(ginn_sha256=""))
    with pytest.raises(SnapshotError, match="empty without a model"):
        state_from_bytes(state_bytes(rows), "snapshot")


def test_look_ahead_audit_covers_the_ginn_row(vol, whole) -> None:
    g = _always_long_genome(k_stop=1.5)
    g[S.VARIANT], g[S.BLEND_W] = GINN, 1.0
    res = audit_lookahead(g, BARS, FX, start=30, cuts=[170, 300], vol=vol, full_tables=whole,
                          snapshots=[120, 260])
    assert res.ginn_sha256 == whole.vol.ginn_sha256 != ""

    def leaky(bars, meta, **kw):  # the ginn row reads the next bar's forecast
        t = build_tables(bars, meta, **kw)
        var = t.vol.variance.copy()
        var[GINN, :-1] = var[GINN, 1:]
        return dataclasses.replace(t, vol=dataclasses.replace(t.vol, variance=var))

    with pytest.raises(LookaheadError, match=r"variance \[ginn\]"):
        audit_lookahead(g, BARS, FX, start=30, cuts=[300], vol=vol, build=leaky, snapshots=[])


def test_a_genome_selecting_ginn_trades_the_ginn_row(whole) -> None:
    g = _always_long_genome(k_stop=1.0, use_tp=1, tp_mult=1.5)
    g[S.VARIANT], g[S.BLEND_W] = GINN, 1.0
    assert "1.00·ginn" in describe_dict(g)["vol"]
    assert variant_fits("ginn", True) == FITTED_VARIANTS
    sim = SimConfig(sizing="risk")
    got = simulate(g, whole, BARS, FX, 0, None, sim)
    assert len(got.trades) > 5
    # the same genome on garch11, with garch11's row replaced by the ginn row, trades the same
    var = whole.vol.variance.copy()
    var[GARCH] = var[GINN]
    swapped = dataclasses.replace(whole, vol=dataclasses.replace(whole.vol, variance=var))
    g2 = g.copy()
    g2[S.VARIANT] = GARCH
    twin = simulate(g2, swapped, BARS, FX, 0, None, sim)
    np.testing.assert_array_equal(got.equity, twin.equity)
    np.testing.assert_array_equal(got.position, twin.position)
    plain = simulate(g2, whole, BARS, FX, 0, None, sim)
    assert not np.array_equal(got.equity, plain.equity), "the ginn row must matter"


def test_bad_models_and_inputs_are_refused(tmp_path) -> None:
    save_weights(tmp_path / "nodate.npz", random_weights(3, data_end=None))
    with pytest.raises(GinnError, match="no data_end"):
        ginn_model_of(VolatilityConfig(**BASE, ginn_model=tmp_path / "nodate.npz"))
    with pytest.raises(GinnError, match="missing"):
        build_tables(BARS, FX, vol=VolatilityConfig(**BASE, ginn_model=tmp_path / "none.npz"))
    m = GinnModel.of(random_weights(4))
    with pytest.raises(GinnError, match="times are needed"):
        build_vol_table(BARS.close[0], 8760.0, **BASE, ginn=m)
    with pytest.raises(GinnError, match="data_end has no time zone"):
        GinnModel.of(random_weights(5, data_end="2024-01-01T00:00:00"))
    with pytest.raises(GinnError, match="variants must be distinct names"):
        GinnSpec(variants=("garch11", "ginn"))


def test_the_cache_keys_on_the_model(tmp_path, files, model, whole) -> None:
    kw = {**BASE, "ts": BARS.ts, "cache_dir": tmp_path}
    close = BARS.close[0]
    a = build_vol_table(close, 8760.0, **kw, ginn=model)
    assert a.variance.tobytes() == whole.vol.variance.tobytes()
    assert len(list(tmp_path.glob("vol-*.npz"))) == 1
    again = build_vol_table(close, 8760.0, **kw, ginn=model)  # a hit: same table, same model
    assert again.variance.tobytes() == a.variance.tobytes() and again.ginn_sha256 == model.sha256
    b = build_vol_table(close, 8760.0, **kw, ginn=GinnModel.load(files["b"]))
    plain = build_vol_table(close, 8760.0, **kw)
    assert len(list(tmp_path.glob("vol-*.npz"))) == 3
    assert not np.array_equal(b.variance[GINN], a.variance[GINN])
    assert plain.variance[GINN].tobytes() == plain.variance[GARCH].tobytes()
    assert plain.ginn_sha256 == ""


def test_a_model_that_failed_its_gate_is_refused_unless_ungated(tmp_path) -> None:
    """GINN replaces GARCH only when it beat it out of sample: a model whose recorded gate
    failed (``emp ginn train`` writes meta.gate) is refused by the farm, unless the config
    says ``ginn_ungated``; a model without a gate record (made by hand) is taken as it is."""
    w = random_weights(7)
    failed = GinnWeights(w.spec, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_out, w.b_out,
                         x_mean=w.x_mean, x_std=w.x_std, y_scale=w.y_scale,
                         meta={**w.meta, "gate": {"passed": False,
                                                  "reason": "QLIKE ratio 1.04 > 0.95"}})
    save_weights(tmp_path / "failed.npz", failed)
    cfg = VolatilityConfig(**BASE, ginn_model=tmp_path / "failed.npz")
    with pytest.raises(GinnError, match=r"failed\.npz: this GINN model failed its "
                                        r"out-of-sample gate \(QLIKE ratio 1\.04"):
        ginn_model_of(cfg)
    assert ginn_model_of(cfg.model_copy(update={"ginn_ungated": True})) is not None
