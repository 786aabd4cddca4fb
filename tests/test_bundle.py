"""Champion bundles: signed canonical JSON that the live host trusts only when a trusted key
signed exactly these bytes for this build's gene schema, primitive catalogue and kernel; and
the state it carries continues the backtest bit for bit."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_bars
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernel_state import varied_genome
from test_simulator import META
from test_tables_continue import window

from champions.bundle import (
    BundleError,
    canonical,
    code_identity,
    encode,
    read_bundle,
    snapshot_section,
    versions,
)
from champions.keys import (
    KeyFileError,
    key_id,
    keygen,
    load_private_key,
    load_public_key,
    load_trusted_keys,
)
from fitness.config import SimConfig
from fitness.live import LiveStrategy
from fitness.simulator import new_state, simulate
from fitness.tables import LiveTables, build_tables, build_tables_state, origin_of
from genome.codec import to_json
from market.config import VolatilityConfig
from market.volatility import run_refit

ROOT = Path(__file__).resolve().parents[1]
VOL = VolatilityConfig(window=120, refit_every=37, min_bars=20)
SIM = SimConfig()
BARS = random_bars(520, 9)
SPLIT = 400


def make_body(genome: np.ndarray, split: int = SPLIT) -> dict:
    """A bundle body for ``genome`` judged on BARS[:split] (no run needed)."""
    hist = window(BARS, 0, split)
    tables, tstate = build_tables_state(hist, META, vol=VOL)
    kernel = new_state(SIM.capital)
    simulate(genome, tables, hist, META, 0, split, SIM, state=kernel, close_out=False)
    return {
        "strategy": {"key": "k" * 16, "rules": "LONG when ...",
                     "genome": json.loads(to_json(genome))},
        "market": {"symbol": "X", "timeframe": "1h", "meta": META.model_dump(mode="json")},
        "config": {"fitness": SIM.model_dump(mode="json"), "volatility": VOL.model_dump(mode="json")},
        "history": {"origin": origin_of(hist).to_json(), "n_bars": split,
                    "sha256": hist.fingerprint()},
        "gates": {"report_sha256": "a" * 64, "figures": {"oos_sharpe": 1.2, "dsr": "nan"}},
        "run": {"run_id": "f" * 32, "git_commit": "unknown"},
        "code": code_identity(), "versions": versions(),
        "snapshot": snapshot_section(tstate, kernel, int(hist.ts[-1]), 0),
        "created_at": "2026-11-26T00:00:00+00:00", "created_by": "test@host"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    priv, pub, kid = keygen(d)
    other_priv, _, other_kid = keygen(d, "other")
    return {"dir": d, "private": load_private_key(priv), "trusted": {kid: load_public_key(pub)},
            "other": load_private_key(other_priv), "kid": kid, "other_kid": other_kid}


@pytest.fixture(scope="module")
def signed(keys):
    genome = varied_genome(3)
    return genome, encode(make_body(genome), keys["private"])


def _nan_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_a_signed_bundle_reads_back_exactly(keys, signed, tmp_path):
    genome, data = signed
    path = tmp_path / "b.json"
    path.write_bytes(data)
    b = read_bundle(path, keys["trusted"])
    assert b.key_id == keys["kid"] and b.signature is not None
    assert np.array_equal(b.genome, genome)
    assert b.meta == META and b.sim == SIM and b.vol == VOL
    assert (b.symbol, b.timeframe, b.key) == ("X", "1h", "k" * 16)
    assert b.sha256 == hashlib.sha256(data).hexdigest()
    assert b.version_drift() == []
    # the file is its own canonical form: one byte form per content, so one sha256
    assert canonical(json.loads(data)) == data


def test_the_bundle_state_continues_the_backtest_bit_for_bit(keys, signed):
    """From the bundle alone (tables snapshot + kernel state) and the bars after the judged
    history, the live step gives the backtest over the whole history."""
    genome, data = signed
    b = read_bundle(data, keys["trusted"])
    whole = build_tables(BARS, META, vol=VOL)
    backtest = simulate(genome, whole, BARS, META, 0, BARS.n_bars, SIM, close_out=False)
    tables = LiveTables(b.tables_state)
    live = LiveStrategy(b.genome, whole.features, b.meta, whole.bars_per_year, b.sim,
                        b.kernel_state)
    for t in range(SPLIT, BARS.n_bars):
        col = tables.step(int(BARS.ts[t]), *(float(getattr(BARS, f)[0, t])
                                             for f in ("open", "high", "low", "close", "volume")))
        variance = col.variance
        if tables.pending:
            variance = tables.apply_refits([run_refit(j) for j in tables.due_refits()])
        d = live.step(t, BARS.open[0, t], BARS.high[0, t], BARS.low[0, t], BARS.close[0, t],
                      col.features, variance, col.rv, col.hour, col.weekday)
        assert d.equity == backtest.equity[t], t
    assert _nan_equal(live.state, _final_state(genome))


def _final_state(genome):
    whole = build_tables(BARS, META, vol=VOL)
    st_ = new_state(SIM.capital)
    simulate(genome, whole, BARS, META, 0, BARS.n_bars, SIM, state=st_, close_out=False)
    return st_


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_changed_byte_is_refused(keys, signed, data):
    _, raw = signed
    pos = data.draw(st.integers(0, len(raw) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda v: v != raw[pos]))
    bad = raw[:pos] + bytes([new]) + raw[pos + 1:]
    with pytest.raises(BundleError):
        read_bundle(bad, keys["trusted"])


def test_a_changed_figure_fails_the_signature_with_a_clear_message(keys, signed):
    _, raw = signed
    doc = json.loads(raw)
    doc["body"]["gates"]["figures"]["oos_sharpe"] = 9.9
    with pytest.raises(BundleError, match="signature does not verify"):
        read_bundle(canonical(doc), keys["trusted"])


def test_wrong_key_unsigned_and_non_canonical_bundles_are_refused(keys, signed):
    genome, raw = signed
    by_other = encode(make_body(genome), keys["other"])
    with pytest.raises(BundleError, match=f"key {keys['other_kid']}, which is not trusted"):
        read_bundle(by_other, keys["trusted"])
    # another key's signature under the trusted key's id
    doc = json.loads(by_other)
    doc["signature"]["key_id"] = keys["kid"]
    with pytest.raises(BundleError, match="does not verify"):
        read_bundle(canonical(doc), keys["trusted"])
    unsigned = encode(make_body(genome), None)
    with pytest.raises(BundleError, match="unsigned; refusing"):
        read_bundle(unsigned, keys["trusted"])
    assert read_bundle(unsigned, {}, allow_unsigned=True).key_id is None
    pretty = json.dumps(json.loads(raw), indent=1).encode()
    with pytest.raises(BundleError, match="not in canonical form"):
        read_bundle(pretty, keys["trusted"])
    with pytest.raises(BundleError, match="not a champion bundle"):
        read_bundle(b'{"format": "x"}', keys["trusted"])
    with pytest.raises(BundleError, match="invalid JSON"):
        read_bundle(raw[: len(raw) // 2], keys["trusted"])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("kernel_version", 1, "kernel version 1"),
    ("schema_digest", "0" * 64, "gene schema differs"),
    ("catalogue_digest", "0" * 64, "primitive catalogue differs"),
])
def test_another_schema_catalogue_or_kernel_is_refused(keys, signed, field, value, message):
    genome, _ = signed
    body = make_body(genome)
    body["code"][field] = value
    with pytest.raises(BundleError, match=message):
        read_bundle(encode(body, keys["private"]), keys["trusted"])


def test_a_damaged_part_is_named(keys, signed):
    genome, _ = signed
    body = make_body(genome)
    body["snapshot"]["kernel_state"] = body["snapshot"]["kernel_state"][:-1]
    with pytest.raises(BundleError, match="kernel_state has"):
        read_bundle(encode(body, keys["private"]), keys["trusted"])
    body = make_body(genome)
    body["market"]["meta"]["min_lot"] = -1
    with pytest.raises(BundleError, match="min_lot"):
        read_bundle(encode(body, keys["private"]), keys["trusted"])
    body = make_body(genome)
    del body["run"]
    with pytest.raises(BundleError, match=r"body\.run\.run_id is missing"):
        read_bundle(encode(body, keys["private"]), keys["trusted"])


def test_keygen_writes_0600_files_and_never_overwrites(tmp_path):
    priv, pub, kid = keygen(tmp_path / "k")
    for p in (priv, pub):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert key_id(load_public_key(pub)) == kid == key_id(load_private_key(priv).public_key())
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        keygen(tmp_path / "k")
    assert keygen(tmp_path / "k", force=True)[2] != kid
    os.chmod(priv, 0o644)
    with pytest.raises(KeyFileError, match="permissions 0644 are too open"):
        load_private_key(priv)
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(KeyFileError, match=r"bad\.pub: not a PEM public key"):
        load_public_key(bad)
    with pytest.raises(KeyFileError, match="not found"):
        load_private_key(tmp_path / "missing.key")
    assert set(load_trusted_keys([tmp_path / "k"])) == {key_id(load_public_key(pub))}


FARM = ("mlflow", "ray", "torch", "optuna", "deap", "evolution", "gates", "workers",
        "sqlalchemy", "alembic")


def test_the_live_side_reader_loads_no_farm_package():
    """A fresh interpreter that reads a bundle with the live-side modules loads none of the
    farm's packages (the live host installs only the base dependencies)."""
    code = ("import json, sys\n"
            "import champions.bundle, champions.keys, champions.pointer\n"
            "print(json.dumps(sorted({n.partition('.')[0] for n in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "champions" in loaded and "cryptography" in loaded
    assert not loaded & set(FARM), sorted(loaded & set(FARM))
