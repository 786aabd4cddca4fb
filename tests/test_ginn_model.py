"""GINN: numpy forward pass against torch.nn.LSTM, causal inputs, reproducible CPU training, real
learning on a GARCH(1,1) series, the verified weights file, and market.ginn without torch."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from market.ginn import (
    GINN_FORMAT,
    GinnError,
    GinnSpec,
    GinnWeights,
    _header,
    _npz_bytes,
    feature_names,
    forecast,
    forecast_last,
    ginn_inputs,
    ginn_target,
    load_weights,
    save_weights,
    sidecar_path,
)
from market.volatility import GARCH_VARIANTS, build_vol_table
from workers.ginn_model import (
    TrainSettings,
    sample_rows,
    select_lambda,
    torch_forecast,
    train_ginn,
)

ROOT = Path(__file__).resolve().parents[1]
TRAINED_AT = "2026-01-01T00:00:00+00:00"
SPEC = GinnSpec(lags=3, seq_len=10, hidden=8, rv_windows=(5, 20), variants=("garch11", "ewma"))
N, TRAIN, VAL, TEST = 1500, slice(0, 1000), slice(1000, 1200), slice(1200, 1500)


def garch_close(seed: int, n: int, omega: float = 5e-6, alpha: float = 0.10,
                beta: float = 0.85) -> np.ndarray:
    """Closes whose log returns follow a Gaussian GARCH(1,1) (daily-like variance 1e-4)."""
    rng = np.random.default_rng(seed)
    h = omega / (1.0 - alpha - beta)
    r = np.empty(n)
    for t in range(n):
        r[t] = np.sqrt(h) * rng.standard_normal()
        h = omega + alpha * r[t] ** 2 + beta * h
    return 100.0 * np.exp(np.cumsum(r))


def random_weights(spec: GinnSpec, seed: int, scale: float = 0.5,
                   b_out: float | None = None) -> GinnWeights:
    rng = np.random.default_rng(seed)
    h, f = spec.hidden, spec.n_features

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, shape)

    return GinnWeights(spec, u(4 * h, f), u(4 * h, h), u(4 * h), u(4 * h), u(1, h),
                       np.array([rng.uniform(-1, 1) if b_out is None else b_out]),
                       x_mean=rng.normal(0.0, 1.0, f), x_std=rng.uniform(0.5, 2.0, f),
                       y_scale=1e-4, meta={"trained_at": TRAINED_AT})


@pytest.fixture(scope="module")
def data():
    close = garch_close(1, N)
    vol = build_vol_table(close, 252.0, window=250, refit_every=100, min_bars=20)
    x = ginn_inputs(close, vol, SPEC)
    return close, vol, x, ginn_target(close), vol.variance[GARCH_VARIANTS.index("garch11")]


@pytest.fixture(scope="module")
def trained(data):
    _, _, x, y, g = data
    return train_ginn(x, y, g, TRAIN, VAL, SPEC, 0.5, TrainSettings(epochs=12, lr=3e-3),
                      {"trained_at": TRAINED_AT, "symbol": "SYN"})


# --- inputs and target ------------------------------------------------------------------------


def test_inputs_layout(data):
    close, vol, x, y, _ = data
    assert x.shape == (N, SPEC.n_features) == (N, len(feature_names(SPEC)))
    r = np.log(close[1:] / close[:-1])
    np.testing.assert_allclose(x[100, :3], [r[99], r[98], r[97]], rtol=1e-15)
    np.testing.assert_allclose(x[100, 3:5], np.log(vol.rv[[0, 2], 100]), rtol=1e-15)
    np.testing.assert_allclose(x[600, 5:7], np.log(vol.variance[[0, 3], 600]), rtol=1e-15)
    onehot = x[30:, 7:]
    assert np.all(onehot.sum(axis=1) == 1.0) and set(np.unique(onehot)) == {0.0, 1.0}
    assert np.isnan(x[0]).all() or np.isnan(x[0, 0])
    np.testing.assert_allclose(y[:-1], r**2, rtol=1e-15)
    assert np.isnan(y[-1])


def test_bad_spec_and_inputs_are_refused(data):
    close, vol, *_ = data
    with pytest.raises(GinnError, match="rv_windows"):
        GinnSpec(rv_windows=(7,))
    with pytest.raises(GinnError, match="variants"):
        GinnSpec(variants=("garch12",))
    with pytest.raises(GinnError, match="calm_below"):
        GinnSpec(calm_below=0.4, storm_above=0.3)
    with pytest.raises(GinnError, match="covers"):
        ginn_inputs(close[:-1], vol, SPEC)
    w = random_weights(SPEC, 0)
    with pytest.raises(GinnError, match="inputs must be"):
        forecast(w, np.zeros((5, 3)))


# --- numpy == torch ---------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(lags=st.integers(1, 4), seq_len=st.integers(1, 12), hidden=st.integers(1, 9),
       seed=st.integers(0, 2**31 - 1), b_out=st.sampled_from([None, 25.0, -30.0]))
def test_numpy_forward_matches_torch_on_random_weights(lags, seq_len, hidden, seed, b_out):
    spec = GinnSpec(lags=lags, seq_len=seq_len, hidden=hidden, rv_windows=(5,),
                    variants=("egarch",))
    w = random_weights(spec, seed, scale=1.5, b_out=b_out)  # b_out: softplus's both branches
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(0.0, 2.0, (60, spec.n_features))
    x[rng.random(60) < 0.05, rng.integers(spec.n_features)] = np.nan
    ours, ref = forecast(w, x), torch_forecast(w, x)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0.0)
    last = forecast_last(w, x)
    assert (np.isnan(last) and np.isnan(ours[-1])) or abs(last / ref[-1] - 1.0) < 1e-6


def test_numpy_forward_matches_torch_on_trained_weights(data, trained):
    x = data[2]
    w = trained.weights
    ours, ref = forecast(w, x), torch_forecast(w, x)
    ok = np.isfinite(ref)
    assert ok.sum() > 1000
    np.testing.assert_array_equal(np.isfinite(ours), ok)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-6, atol=0.0)
    for t in (N - 1, 800, 300):  # the live path, O(seq_len), on the last rows only
        assert forecast_last(w, x[t - SPEC.seq_len + 1 : t + 1]) == pytest.approx(ours[t],
                                                                                 rel=1e-12)


# --- causality ----------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), data=st.data(), shock=st.floats(-0.3, 0.3))
def test_inputs_and_forecast_are_causal(seed, data, shock):
    """Changing the closes after bar t leaves input rows and forecasts <= t unchanged."""
    n = 70
    close = garch_close(seed, n)
    t = data.draw(st.one_of(st.integers(0, n - 2), st.integers(30, n - 2)), label="t")
    other = close.copy()
    rng = np.random.default_rng(seed + 1)
    other[t + 1 :] = close[t] * np.exp(shock + np.cumsum(rng.normal(0.0, 0.05, n - t - 1)))
    kw = {"window": 30, "refit_every": 20, "min_bars": 10}
    spec = GinnSpec(lags=3, seq_len=5, hidden=4, rv_windows=(5, 10))
    xa = ginn_inputs(close, build_vol_table(close, 252.0, **kw), spec)
    xb = ginn_inputs(other, build_vol_table(other, 252.0, **kw), spec)
    np.testing.assert_array_equal(xa[: t + 1], xb[: t + 1])
    w = random_weights(spec, seed)
    fa, fb = forecast(w, xa), forecast(w, xb)
    # not vacuous: every row from the first full window on is defined
    assert np.isfinite(fa[20:]).all()
    np.testing.assert_array_equal(fa[: t + 1], fb[: t + 1])
    np.testing.assert_array_equal(ginn_target(close)[:t], ginn_target(other)[:t])


# --- training -----------------------------------------------------------------------------------


def test_cpu_training_is_bit_reproducible(data, tmp_path):
    _, _, x, y, g = data
    cfg = TrainSettings(epochs=3, batch=32, seed=7, threads=1)
    meta = {"trained_at": TRAINED_AT}
    rng_before = torch.get_rng_state()
    threads = torch.get_num_threads()
    a = train_ginn(x, y, g, slice(0, 500), slice(500, 600), SPEC, 0.25, cfg, meta)
    b = train_ginn(x, y, g, slice(0, 500), slice(500, 600), SPEC, 0.25, cfg, meta)
    assert a.curve == b.curve
    assert save_weights(tmp_path / "a.npz", a.weights) == save_weights(tmp_path / "b.npz",
                                                                         b.weights)
    c = train_ginn(x, y, g, slice(0, 500), slice(500, 600), SPEC, 0.25,
                   dataclasses.replace(cfg, seed=8), meta)
    assert not np.array_equal(c.weights.w_ih, a.weights.w_ih)  # the seed matters
    assert torch.equal(torch.get_rng_state(), rng_before)  # caller's RNG and threads restored
    assert torch.get_num_threads() == threads


def test_training_learns_garch_out_of_sample(data, trained):
    """On a GARCH(1,1) series the trained model beats the unconditional variance out of sample
    (MSE against r_{t+1}^2), and the best epoch's validation loss is the one recorded."""
    _, _, x, y, g = data
    w = trained.weights
    test = sample_rows(x, y, g, TEST, SPEC.seq_len)
    assert test.size > 250
    f = forecast(w, x)[test]
    const = np.mean(y[sample_rows(x, y, g, TRAIN, SPEC.seq_len)])
    mse_ginn = np.mean((f - y[test]) ** 2)
    mse_const = np.mean((const - y[test]) ** 2)
    assert mse_ginn < 0.97 * mse_const, (mse_ginn, mse_const)
    assert w.meta["val_loss"] == min(c["val_loss"] for c in trained.curve)
    assert w.meta["symbol"] == "SYN" and w.meta["lam"] == 0.5 and w.meta["trained_at"] == TRAINED_AT
    assert trained.seconds_per_epoch > 0.0


def test_select_lambda_stays_inside_the_research_slice(data):
    _, _, x, y, g = data
    cfg = TrainSettings(epochs=2, batch=128)
    lam, table = select_lambda(x, y, g, slice(0, 700), SPEC, cfg, lams=(0.0, 1.0), folds=2)
    assert set(table) == {0.0, 1.0} and lam == min(table, key=table.get)
    y2, g2 = y.copy(), g.copy()
    y2[699:] = 1.0  # a target after the research slice (y[699] is r_700^2) cannot matter
    g2[700:] = np.nan
    x2 = x.copy()
    x2[700:] = 0.0
    assert select_lambda(x2, y2, g2, slice(0, 700), SPEC, cfg, lams=(0.0, 1.0),
                         folds=2) == (lam, table)


def test_training_refuses_bad_input(data):
    _, _, x, y, g = data
    with pytest.raises(GinnError, match="lam"):
        train_ginn(x, y, g, TRAIN, VAL, SPEC, 1.5, TrainSettings(), {})
    with pytest.raises(GinnError, match="no complete samples"):
        train_ginn(x, y, g, slice(0, 5), VAL, SPEC, 0.5, TrainSettings(), {})
    with pytest.raises(GinnError, match="device"):
        train_ginn(x, y, g, TRAIN, VAL, SPEC, 0.5, TrainSettings(device="tpu"), {})
    if not torch.cuda.is_available():
        with pytest.raises(GinnError, match="no CUDA"):
            train_ginn(x, y, g, TRAIN, VAL, SPEC, 0.5, TrainSettings(device="cuda"), {})


# --- weights file -------------------------------------------------------------------------------


def test_save_load_round_trip(data, trained, tmp_path):
    w = trained.weights
    path = tmp_path / "ginn.npz"
    digest = save_weights(path, w)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    side = json.loads(sidecar_path(path).read_text())
    assert side["format"] == GINN_FORMAT and side["sha256"] == digest
    assert side["spec"] == SPEC.to_dict() and side["meta"] == w.meta
    with np.load(path, allow_pickle=False) as z:  # a plain npz
        np.testing.assert_array_equal(z["w_ih"], w.w_ih)
    back = load_weights(path, max_age_hours=24, now=datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert back.spec == w.spec and back.meta == w.meta and back.y_scale == w.y_scale
    for name in w.shapes():
        np.testing.assert_array_equal(getattr(back, name), getattr(w, name))
    np.testing.assert_array_equal(forecast(back, data[2]), forecast(w, data[2]))


def _saved(trained, tmp_path) -> Path:
    path = tmp_path / "m.npz"
    save_weights(path, trained.weights)
    return path


def test_flipped_byte_is_refused(trained, tmp_path):
    path = _saved(trained, tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(GinnError, match=f"{path}.*sha256"):
        load_weights(path)


def test_changed_sidecar_is_refused(trained, tmp_path):
    path = _saved(trained, tmp_path)
    side_path = sidecar_path(path)
    side = json.loads(side_path.read_text())
    side["meta"]["trained_at"] = datetime.now(UTC).isoformat()  # a stale model made to look fresh
    side_path.write_text(json.dumps(side))
    with pytest.raises(GinnError, match=f"{side_path}.*edited"):
        load_weights(path, max_age_hours=24)


def test_wrong_format_is_refused(trained, tmp_path):
    path = _saved(trained, tmp_path)
    side_path = sidecar_path(path)
    side = json.loads(side_path.read_text())
    side["format"] = "emp-ginn-v0"
    side_path.write_text(json.dumps(side))
    with pytest.raises(GinnError, match=f"{side_path}.*wrong format"):
        load_weights(path)
    side_path.write_text("not json")
    with pytest.raises(GinnError, match=f"{side_path}.*unreadable"):
        load_weights(path)


def test_stale_model_is_refused(trained, tmp_path):
    path = _saved(trained, tmp_path)
    trained_at = datetime.fromisoformat(TRAINED_AT)
    load_weights(path, max_age_hours=36, now=trained_at + timedelta(hours=35))
    with pytest.raises(GinnError, match=f"{path}.*too old"):
        load_weights(path, max_age_hours=36, now=trained_at + timedelta(hours=37))


def test_missing_files_wrong_shapes_and_pickles_are_refused(trained, tmp_path):
    with pytest.raises(GinnError, match="missing"):
        load_weights(tmp_path / "none.npz")
    path = _saved(trained, tmp_path)
    sidecar_path(path).unlink()
    with pytest.raises(GinnError, match=f"{sidecar_path(path)}.*missing"):
        load_weights(path)

    def write(w: GinnWeights, data: bytes) -> None:
        path.write_bytes(data)
        side = {**_header(w), "sha256": hashlib.sha256(data).hexdigest()}
        sidecar_path(path).write_text(json.dumps(side))

    bad = dataclasses.replace(trained.weights, w_hh=trained.weights.w_hh[:, :-1])
    with pytest.raises(GinnError, match="w_hh has shape"):
        save_weights(tmp_path / "bad.npz", bad)
    write(bad, _npz_bytes(bad, json.dumps(_header(bad), sort_keys=True)))
    with pytest.raises(GinnError, match=f"{path}.*w_hh has shape"):
        load_weights(path)
    w = trained.weights
    buf = io.BytesIO()
    np.savez(buf, w_ih=np.array([object()], dtype=object))  # a pickle inside: never loaded
    write(w, buf.getvalue())
    with pytest.raises(GinnError, match=f"{path}.*not a GINN npz"):
        load_weights(path)
