"""The executor and the champion's GINN model (issue 15, "Export for live"): the ginn variance
row continues with the model the champion's tables were built with when it is on this host
and fresh; a model that is absent, altered or older than ``ginn_max_age_hours`` is refused and
the row falls back to GARCH(1,1), with an ALERT, an audit entry and ``emp_ginn_fallback``;
a model that ages past the limit while trading is dropped at the next day roll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from live_rig import SPLIT, SYMBOL, cut, install, live_config

from benchmarks.power_data import CALIBRATION_VOL, generate, to_bars
from champions.bundle import encode
from champions.snapshot import bare_body
from fitness.config import SimConfig
from genome.schema import VARIANT
from live.executor.champion import find_ginn_model
from live.executor.config import parse_live_config
from live.executor.service import Executor
from market.ginn import GinnError, GinnSpec, GinnWeights, save_weights
from market.volatility import GARCH_VARIANTS

SPEC = GinnSpec(lags=3, seq_len=8, hidden=6, rv_windows=(5, 20))


def weights(data_end_ns: int, trained_at: datetime, seed: int = 1) -> GinnWeights:
    rng = np.random.default_rng(seed)
    h, f = SPEC.hidden, SPEC.n_features

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-0.6, 0.6, shape)

    mean = np.concatenate([np.zeros(SPEC.lags), np.full(f - SPEC.lags - 3, -9.0), [0.3] * 3])
    meta = {"trained_at": trained_at.isoformat(), "symbol": SYMBOL,
            "data_end": datetime.fromtimestamp(data_end_ns / 1e9, UTC).isoformat()}
    return GinnWeights(SPEC, u(4 * h, f), u(4 * h, h), u(4 * h), u(4 * h), u(1, h),
                       np.array([0.5]), x_mean=mean, x_std=np.full(f, 1.5), y_scale=1e-4,
                       meta=meta)


def ginn_home(tmp_path: Path, trained_at: datetime) -> tuple[dict, str]:
    """A champion selecting the ginn variant, its tables built with a GINN model, installed
    with the model under ``<home>/ginn/EDGE/1d``; (live config, model sha256)."""
    series = generate("autocorr", 2.0, 3, n=SPLIT + 20)
    bars, meta = to_bars(series), series.meta
    model = tmp_path / "ginn" / SYMBOL / "1d" / "m.npz"
    model.parent.mkdir(parents=True)
    sha = save_weights(model, weights(int(bars.ts[150]), trained_at))
    genome = np.array(series.planted, dtype=np.float64)
    genome[VARIANT] = GARCH_VARIANTS.index("ginn")
    vol = CALIBRATION_VOL.model_copy(update={"window": 60, "ginn_model": model})
    body = bare_body(genome, cut(bars, 0, SPLIT), meta, SimConfig(), vol, symbol=SYMBOL,
                     key="ginn", provenance="test")
    private = Ed25519PrivateKey.generate()
    pub = install(SimpleNamespace(bundle=encode(body, private), private=private), tmp_path)
    return live_config(tmp_path, pub, 1), sha


def loaded(raw: dict) -> Executor:
    ex = Executor(parse_live_config(raw))
    ex.load()
    return ex


def close(ex: Executor) -> None:
    ex.refits.close()
    ex.store.close()


def test_a_fresh_model_drives_the_ginn_row_and_a_stale_one_falls_back(tmp_path):
    raw, sha = ginn_home(tmp_path / "fresh", datetime.now(UTC) - timedelta(hours=2))
    ex = loaded(raw)
    try:
        assert ex.runner.tables.ginn_active and ex.runner.tables.ginn.sha256 == sha
        assert ex.runner.variant == "ginn" and ex.runner.tables.fits_for("ginn") == (
            "garch11", "egarch", "gjr")
        assert b'emp_ginn_fallback{symbol="EDGE"} 0.0' in ex.metrics.exposition()
        # trading on, the model ages past the limit: dropped at the next day roll
        ex.cfg = ex.cfg.model_copy(update={"ginn_max_age_hours": 1.0})
        ex._check_ginn_age()
        assert not ex.runner.tables.ginn_active
        assert "ginn_fallback" in [e for _, e, _ in ex.store.audit_log(5)]
        assert b'emp_ginn_fallback{symbol="EDGE"} 1.0' in ex.metrics.exposition()
    finally:
        close(ex)

    raw, sha = ginn_home(tmp_path / "stale", datetime.now(UTC) - timedelta(hours=40))
    ex = loaded(raw)  # ginn_max_age_hours 36 by default
    try:
        assert not ex.runner.tables.ginn_active
        why = [d for _, e, d in ex.store.audit_log(10) if e == "ginn_fallback"]
        assert len(why) == 1 and "old" in why[0]
    finally:
        close(ex)


def test_an_absent_or_altered_model_is_refused(tmp_path):
    raw, sha = ginn_home(tmp_path, datetime.now(UTC))
    folder = tmp_path / "ginn" / SYMBOL / "1d"
    assert find_ginn_model(tmp_path / "ginn", SYMBOL, "1d", sha, 36.0).sha256 == sha
    with pytest.raises(GinnError, match="not among the models"):
        find_ginn_model(tmp_path / "ginn", SYMBOL, "1d", "0" * 64, 36.0)
    npz = folder / "m.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 1
    npz.write_bytes(bytes(data))
    with pytest.raises(GinnError, match=r"m\.npz"):
        find_ginn_model(tmp_path / "ginn", SYMBOL, "1d", sha, 36.0)
    ex = loaded(raw)
    try:
        assert not ex.runner.tables.ginn_active
        assert "ginn_fallback" in [e for _, e, _ in ex.store.audit_log(10)]
    finally:
        close(ex)
