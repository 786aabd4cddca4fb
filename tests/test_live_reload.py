"""Hot reload and rollback of the champion (issue 14, part 5; acceptance 2: a tampered bundle is
refused while the old champion keeps trading, a hot reload in the middle of a position).

One run over real TCP, the paper venue stepped bar by bar as in tests/test_live_parity.py:
1. the old champion (the planted rule) trades; a bundle altered by one byte is refused (audit
   entry, ALERT) and the positions and equity stay the old champion's backtest, bar for bar;
2. a new champion (the planted rule faded, half the risk, its snapshot 3 bars later than the
   old's) is promoted: warmed in the background, swapped in at the next bar in the middle of a
   position; from there the venue's positions and equity are the new champion's backtest
   started from its warmed state holding the old one's account (``champion.adopt``);
3. ``rollback`` (a request file) puts the old champion back the same way;
and the state store records every swap, and a restart picks the champion in use, not the
pointer's. Refusals of other bad bundles are checked without a venue (``load`` only).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import numpy as np
import pytest
from live_rig import SPLIT, SYMBOL, cut, install, live_config, make_venue, until, world

from champions.bundle import code_identity, encode, snapshot_section
from fitness import simulator_nb as k
from fitness.simulator import new_state, simulate
from fitness.tables import build_tables, build_tables_state
from genome import schema as S
from genome.codec import to_json
from live.executor.champion import adopt, flatten
from live.executor.config import parse_live_config
from live.executor.reload import (
    Reloader,
    ReloadError,
    bars_after,
    read_request,
    request_path,
    request_rollback,
    sha_floats,
    sha_of_state,
)
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor
from market.config import VolatilityConfig

NEW_SPLIT = SPLIT + 3      # the new bundle's snapshot ends 3 bars after the old one's
BAD_AT = SPLIT + 4         # the tampered bundle is offered after this many bars
SWAP = SPLIT + 11          # first bar stepped by the new champion (a position is held)
BACK = SPLIT + 30          # first bar stepped by the old champion again
END = SPLIT + 45


def faded(genome: np.ndarray) -> np.ndarray:
    """The planted rule faded in every regime (opposite sides), at half the risk."""
    g = genome.copy()
    for r in S.REGIMES:
        g[S.INDEX[f"regime.{r}"]] = 2
    g[S.INDEX["risk.risk_pct"]] = 0.005
    return g


def body_of(w, genome: np.ndarray, split: int) -> tuple[dict, np.ndarray]:
    """A bundle body for ``genome`` judged on bars [0, split), and its kernel state there."""
    vol = VolatilityConfig.model_validate(json.loads(w.bundle)["body"]["config"]["volatility"])
    hist = cut(w.bars, 0, split)
    _, tstate = build_tables_state(hist, w.meta, vol=vol)
    kernel = new_state(w.sim.capital)
    simulate(genome, build_tables(hist, w.meta, vol=vol), hist, w.meta, 0, split, w.sim,
             state=kernel, close_out=False)
    body = json.loads(w.bundle)["body"]
    body["strategy"] = {"key": "faded", "rules": "", "genome": json.loads(to_json(genome))}
    body["snapshot"] = snapshot_section(tstate, kernel, int(hist.ts[-1]), 0)
    return body, kernel


@pytest.fixture(scope="module")
def w():
    return world()


@pytest.fixture(scope="module")
def ref(w):
    """The backtest's answer: old champion to SWAP, new one (adopted) to BACK, old again."""
    vol = VolatilityConfig.model_validate(json.loads(w.bundle)["body"]["config"]["volatility"])
    full = build_tables(w.bars, w.meta, vol=vol)
    old_g, new_g = w.genome, faded(w.genome)
    body, new_kernel = body_of(w, new_g, NEW_SPLIT)
    new_data = encode(body, w.private)
    old_kernel = np.array([float.fromhex(x) for x in
                           json.loads(w.bundle)["body"]["snapshot"]["kernel_state"]])

    def run(g, a, b, state):
        return simulate(g, full, w.bars, w.meta, a, b, w.sim, state=state, close_out=False)

    old_st = flatten(old_kernel, w.sim.capital)
    first = run(old_g, SPLIT, SWAP, old_st)                 # old_st: after bar SWAP-1
    warm_new = flatten(new_kernel, w.sim.capital)
    run(new_g, NEW_SPLIT, SWAP, warm_new)                   # the new rule memory at SWAP-1
    new_st = adopt(warm_new, old_st)
    second = run(new_g, SWAP, BACK, new_st)
    warm_old = old_st.copy()                                # old frozen at the swap, caught up
    run(old_g, SWAP, BACK, warm_old)
    third = run(old_g, BACK, END, adopt(warm_old, new_st))
    pos = np.concatenate([first.position, second.position, third.position])
    eq = np.concatenate([first.equity, second.equity, third.equity])
    return {"pos": pos, "eq": eq, "new": new_data, "body": body,
            "held_at_swap": old_st[k.ST_UNITS], "second": second}


def _pointer(home):
    return home / "champions" / SYMBOL / "paper.json"


def test_the_swap_happens_in_a_position_and_the_new_champion_differs(ref):
    assert ref["held_at_swap"] != 0.0, "the reload must happen in the middle of a position"
    p = ref["pos"]
    old_sign = np.sign(p[SWAP - SPLIT - 1])
    assert np.any(np.sign(p[SWAP - SPLIT + 1:BACK - SPLIT]) == -old_sign), \
        "the faded champion should take the other side"


def test_reload_tampered_then_good_then_rollback(w, ref, tmp_path):
    pub = install(w, tmp_path)
    old_sha = json.loads(_pointer(tmp_path).read_text())["sha256"]

    async def run():
        _vc, venue, acc_settings = make_venue(w, tmp_path / "venue")
        acc = await start_acceptor(acc_settings, venue)
        cfg = parse_live_config(live_config(tmp_path, pub, acc.port, pointer_poll_s=3600))
        ex = Executor(cfg)
        await ex.start()
        r = ex.reloader
        pos, eq, targets = [], [], {}
        try:
            for i in range(END - SPLIT):
                bar = SPLIT + i
                if bar == BAD_AT:  # a new bundle, altered by one byte after its pointer
                    install(w, tmp_path, ref["new"], champion_id=2)
                    bpath = tmp_path / "champions" / SYMBOL / json.loads(
                        _pointer(tmp_path).read_text())["bundle"]
                    raw = bytearray(bpath.read_bytes())
                    raw[len(raw) // 2] ^= 1
                    bpath.write_bytes(bytes(raw))
                    r.kick()
                    await until(lambda: r.refusals == 1, "tampered bundle refused")
                    assert r.pending is None
                    bpath.write_bytes(ref["new"])  # repaired: still no reload without news
                if bar == SWAP:  # promoted again (a new pointer), noticed through SIGHUP
                    install(w, tmp_path, ref["new"], champion_id=2)
                    assert signal.SIGHUP in r._signals
                    os.kill(os.getpid(), signal.SIGHUP)
                    await until(lambda: r.pending is not None, "new champion warmed")
                if bar == BACK:
                    request_rollback(cfg, "slipped more than tested", who="tester")
                    r.kick()
                    await until(lambda: r.pending is not None, "old champion warmed")
                await venue.step()
                await until(lambda i=i: ex.bars_done == i + 1, f"bar {bar} processed")
                await until(lambda: not [o for o in ex.orders.open_orders()
                                         if o.status in ("pending_new", "sent")], "order acks")
                pos.append(venue.exchange.positions[SYMBOL].units)
                eq.append(venue.exchange.equity())
                targets[bar] = (ex.champion.sha256, ex.decisions[-1].target_units)
            hist = ex.store.champion_history(SYMBOL)
            audit = ex.store.audit_log(500)
            return np.array(pos), np.array(eq), targets, hist, audit, ex
        finally:
            await ex.stop()
            await acc.close()

    pos, eq, targets, hist, audit, ex = asyncio.run(run())
    new_sha = json.loads(_pointer(tmp_path).read_text())["sha256"]
    np.testing.assert_array_equal(pos, ref["pos"])
    np.testing.assert_array_equal(eq, ref["eq"])
    # decisions from the swap on are the new champion's, bar for bar, then the old one's
    second = ref["second"].position
    for bar in range(SWAP, BACK):
        sha, target = targets[bar]
        assert sha == new_sha
        if bar + 1 < BACK:
            assert target == second[bar + 1 - SWAP]
    assert all(targets[b][0] == old_sha for b in range(SPLIT, SWAP))
    assert all(targets[b][0] == old_sha for b in range(BACK, END))
    # in a position at the swap; the order the old champion sent for the next open is kept
    assert pos[SWAP - 1 - SPLIT] == pytest.approx(ref["held_at_swap"]) != 0.0
    assert pos[SWAP - SPLIT] == w.batch.position[SWAP - SPLIT]
    # the state store: every swap recorded, the refusal and the rollback audited
    assert [h[1] for h in hist] == [old_sha, new_sha, old_sha]
    events = [a[1] for a in audit]
    assert events.count("reload_refused") == 1
    assert "champion_reload" in events and "champion_rollback" in events
    refused = next(a[2] for a in audit if a[1] == "reload_refused")
    assert "does not match the pointer's sha256" in refused
    rb = next(a[2] for a in audit if a[1] == "champion_rollback")
    assert "by tester: slipped more than tested" in rb
    assert not request_path(ex.cfg).exists()

    # a restart trades the champion in use (the old one), not the pointer's (rolled back from)
    cfg = parse_live_config(live_config(tmp_path, pub, 1, pointer_poll_s=3600))
    ex2 = Executor(cfg)
    try:
        ex2.load()
        assert ex2.champion.sha256 == old_sha and ex2.last_ts == int(w.bars.ts[END - 1])

        async def seen():
            r2 = Reloader(ex2)
            return r2._seen is not None, r2._previous_sha()

        not_news, prev = asyncio.run(seen())
        assert not_news, "a pointer rolled back from must not be reloaded at the next start"
        assert prev == new_sha
    finally:
        ex2.store.close()


# ---- refusals without a venue -----------------------------------------------------------------
@pytest.fixture()
def loaded(w, tmp_path):
    pub = install(w, tmp_path)
    cfg = parse_live_config(live_config(tmp_path, pub, 1, pointer_poll_s=3600))
    ex = Executor(cfg)
    ex.load()
    yield ex, tmp_path
    ex.store.close()


def _offer(ex, home, data: bytes, w) -> tuple[int, str]:
    """Point the pointer at ``data`` and let the executor try it: (refusals, last audit)."""
    from champions.pointer import store_bundle, write_pointer

    root = home / "champions"
    _, sha = store_bundle(root, SYMBOL, data)
    sig = json.loads(data)["signature"] or {"value": None, "key_id": None}
    write_pointer(root, symbol=SYMBOL, timeframe="1d", sha256=sha, champion_id=3, run_id="t",
                  key="k", signature=sig["value"], key_id=sig["key_id"], stage="paper")

    async def go():
        r = Reloader(ex)
        cand = await r.reload()
        return r, cand

    r, cand = asyncio.run(go())
    assert cand is None and r.pending is None
    return r.refusals, ex.store.audit_log(1)[-1][2]


def _resigned(ref, w, edit, key=None) -> bytes:
    body = json.loads(json.dumps(ref["body"]))
    edit(body)
    return encode(body, w.private if key is None else key)


@pytest.mark.parametrize("case, expect", [
    ("unsigned", "unsigned"),
    ("untrusted", "not trusted here"),
    ("other_symbol", "bundle is for OTHER"),
    ("kernel", "kernel version"),
    ("catalogue", "primitive catalogue differs"),
    ("timeframe", "timeframe 1h"),
    ("ahead", "after the executor's last bar"),
    ("too_old", "not among the executor's last"),
])
def test_a_bad_bundle_is_refused_and_audited(w, ref, loaded, case, expect):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ex, home = loaded
    before = ex.champion.sha256
    edits = {
        "other_symbol": lambda b: b["market"].update(symbol="OTHER"),
        "kernel": lambda b: b["code"].update(kernel_version=code_identity()["kernel_version"] + 9),
        "catalogue": lambda b: b["code"].update(catalogue_digest="0" * 64),
        "timeframe": lambda b: b["market"].update(timeframe="1h"),
    }
    if case == "unsigned":
        data = encode(ref["body"], None)
    elif case == "untrusted":
        data = encode(ref["body"], Ed25519PrivateKey.generate())
    elif case == "ahead":  # judged on bars up to NEW_SPLIT; this executor is still at SPLIT-1
        data = encode(ref["body"], w.private)
    elif case == "too_old":  # judged on 20 bars: older than the executor's last TAIL bars
        data = encode(body_of(w, faded(w.genome), 20)[0], w.private)
    else:
        data = _resigned(ref, w, edits[case])
    refusals, detail = _offer(ex, home, data, w)
    assert refusals == 1
    assert expect in detail, detail
    assert ex.champion.sha256 == before


def test_bars_after_checks_the_snapshot_is_among_the_bars_seen(w, loaded):
    ex, _ = loaded
    state = ex.runner.tables.state()
    ts = state.features.tail["ts"]
    assert bars_after(state, int(ts[-1])) == []
    rows = bars_after(state, int(ts[-3]))
    assert [r[0] for r in rows] == [int(ts[-2]), int(ts[-1])]
    with pytest.raises(ReloadError, match="after the executor's last bar"):
        bars_after(state, int(ts[-1]) + 1)
    with pytest.raises(ReloadError, match="not among the executor's last"):
        bars_after(state, int(ts[0]) - 1)


def test_sha_round_trips_through_the_strategy_state():
    sha = "0f" * 16 + "a5" * 16
    arr = np.concatenate([np.zeros(k.N_STATE + 4), sha_floats(sha)])
    assert sha_of_state(arr) == sha
    assert sha_of_state(np.zeros(k.N_STATE + 4)) is None


def test_rollback_request_is_validated(w, loaded):
    ex, _ = loaded
    with pytest.raises(ReloadError, match="needs --reason"):
        request_rollback(ex.cfg, "  ")
    path = request_rollback(ex.cfg, "bad fills", who="ops")
    assert read_request(path, SYMBOL) == {"reason": "bad fills", "who": "ops"}
    path.write_text("{not json")
    with pytest.raises(ReloadError, match="not valid JSON"):
        read_request(path, SYMBOL)

    async def no_previous():
        r = Reloader(ex)
        return await r.rollback("why", "ops"), r.refusals

    cand, refusals = asyncio.run(no_previous())
    assert cand is None and refusals == 1
    assert "no previous champion" in ex.store.audit_log(1)[-1][2]


def test_a_restart_after_a_crash_between_commit_and_record_repairs_the_history(w, ref, tmp_path):
    """The strategy state names the champion that saved it: a crash after a swap's first bar
    commit but before its champion row restarts that champion and writes the missing row."""
    from fitness.tables import save_state
    from live.executor.service import snapshot_path

    pub = install(w, tmp_path)
    old_sha = json.loads(_pointer(tmp_path).read_text())["sha256"]
    install(w, tmp_path, ref["new"], champion_id=2)
    new_sha = json.loads(_pointer(tmp_path).read_text())["sha256"]
    cfg = parse_live_config(live_config(tmp_path, pub, 1))
    old = Executor(cfg)
    old.load()  # stands for "the old champion traded": its tables and kernel after a bar
    bar_ts = old.last_ts
    snap = snapshot_path(cfg, bar_ts, old_sha)
    snap.parent.mkdir(parents=True, exist_ok=True)
    save_state(snap, old.runner.tables.state())
    extra = np.array([3.0, np.nan, np.nan, 0.0])
    old.store.save_strategy_state(SYMBOL, bar_ts, np.concatenate(
        [old.runner.strategy.state, extra, sha_floats(old_sha)]))
    old.store.set_champion(sha256=new_sha, symbol=SYMBOL, stage="paper")  # the row ran ahead
    old.store.close()
    ex = Executor(cfg)
    try:
        ex.load()
        assert ex.champion.sha256 == old_sha and ex.target == 3.0
        assert [h[1] for h in ex.store.champion_history(SYMBOL)][-1] == old_sha
        assert "champion_recovered" in [a[1] for a in ex.store.audit_log(20)]
    finally:
        ex.store.close()
