"""Shared rig of the executor tests: a planted-edge series, a signed champion bundle whose
snapshot ends at a split bar, the paper venue replaying the bars after the split over real
TCP on 127.0.0.1, and the backtest's answer on the same bars."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks.power_data import CALIBRATION_VOL, generate, to_bars
from champions.bundle import encode, floats_of_hex
from champions.keys import key_id
from champions.pointer import store_bundle, write_pointer
from champions.snapshot import bare_body, state_after
from fitness.config import SimConfig
from fitness.simulator import simulate
from fitness.tables import build_tables
from live.executor.champion import flatten
from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor
from live.venue.build import acceptor_settings, build_venue
from live.venue.config import parse_venue_config
from live.venue.feed import Feed
from market.loader import Bars

SYMBOL, FIX_ID = "EDGE", 7
N, SPLIT = 420, 300
WAIT = 20.0  # seconds to wait for something expected (never reached when all is well)


def cut(bars: Bars, a: int, b: int) -> Bars:
    return Bars(bars.symbols, bars.timeframe, bars.ts[a:b], *(x[:, a:b] for x in (
        bars.open, bars.high, bars.low, bars.close, bars.volume)), None)


@dataclass
class World:
    bars: Bars
    meta: object
    genome: np.ndarray
    sim: SimConfig
    bundle: bytes
    private: Ed25519PrivateKey
    batch: object  # the backtest over the bars after the split, from the flattened state


def world(seed: int = 3) -> World:
    series = generate("autocorr", 2.0, seed, n=N)
    bars, meta, genome = to_bars(series), series.meta, series.planted
    sim, vol = SimConfig(), CALIBRATION_VOL
    hist = cut(bars, 0, SPLIT)
    _, snapshot = state_after(genome, hist, meta, sim, vol)
    body = bare_body(genome, hist, meta, sim, vol, symbol=SYMBOL, key="planted",
                     provenance="test", snapshot=snapshot)
    kernel = floats_of_hex(snapshot["kernel_state"])
    private = Ed25519PrivateKey.generate()
    data = encode(body, private)
    full = build_tables(bars, meta, vol=vol)
    batch = simulate(genome, full, bars, meta, SPLIT, N, sim,
                     state=flatten(kernel, sim.capital), close_out=False)
    return World(bars, meta, genome, sim, data, private, batch)


def install(w: World, home: Path, data: bytes | None = None, champion_id: int = 1) -> Path:
    """Store the bundle, point the paper pointer at it, write the trusted public key."""
    root = home / "champions"
    data = data or w.bundle
    _, sha = store_bundle(root, SYMBOL, data)
    sig = json.loads(data)["signature"]
    write_pointer(root, symbol=SYMBOL, timeframe="1d", sha256=sha, champion_id=champion_id,
                  run_id="test", key="planted", signature=sig["value"], key_id=sig["key_id"],
                  stage="paper")
    pub = home / "keys" / "emp-signing.pub"
    pub.parent.mkdir(parents=True, exist_ok=True)
    pub.write_bytes(w.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert key_id(w.private.public_key()) == sig["key_id"]
    return pub


def venue_config() -> dict:
    return {"port": 0, "symbols": {SYMBOL: {"id": FIX_ID, "lot_size": 1, "tick_size": 0.01}},
            "replay": {"timeframe": "1d", "speed": 0}}


def make_venue(w: World, tmp: Path):
    vc = parse_venue_config(venue_config())
    tail = cut(w.bars, SPLIT, N)
    feed = Feed(tail.ts, tail.open[0], tail.high[0], tail.low[0], tail.close[0], tail.volume[0])
    return vc, build_venue(vc, {SYMBOL: feed}, {SYMBOL: w.meta}), acceptor_settings(vc, tmp)


def live_config(home: Path, pub: Path, port: int, **over) -> dict:
    cfg = {"symbol": SYMBOL, "stage": "paper", "home": str(home), "trusted_keys": [str(pub)],
           "account_equity": 100_000.0, "fill_wait_s": 5.0,
           "fix": {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
                   "logon_timeout_s": 10},
           "symbols": {SYMBOL: {"id": FIX_ID, "lot_size": 1, "tick_size": 0.01}}}
    cfg.update(over)
    return cfg


async def until(cond, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while loop.time() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def serving(w: World, tmp: Path, raw: dict, *, prepare: Callable[[object], None] | None
                  = None, **fix: object) -> AsyncIterator[tuple[Executor, object]]:
    """The paper venue (this process, its stores under ``tmp/venue``; ``prepare(venue)`` runs
    before it listens) and an executor of config ``raw`` started on it (the venue's port and
    ``fix`` overrides filled in); both stopped on leaving."""
    _vc, venue, acc_settings = make_venue(w, tmp / "venue")
    if prepare is not None:
        prepare(venue)
    acc = await start_acceptor(acc_settings, venue)
    ex = Executor(parse_live_config({**raw, "fix": {**raw["fix"], "port": acc.port, **fix}}))
    try:
        await ex.start()
        yield ex, venue
    finally:
        await ex.stop()
        await acc.close()
