"""The paper gate: a real executor trades a signed champion against the paper venue over FIX
on 127.0.0.1 (daily bars after the bundle's split), and its state store is then read back
(``live.paper.paper_record``) and compared with the bundle replayed on the same bars
(``compare_paper``). A faithful paper run passes; too few days, a broker that fills at other
prices (a second real run against a venue with other costs) and another champion's decisions
are refused with one-line reasons; promotion to live (``champions.promote.go_live``) is
refused from eligible and for a failing record, and a passing one is audited and pointed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from live_rig import (
    SPLIT,
    SYMBOL,
    cut,
    install,
    live_config,
    until,
    venue_config,
    world,
)

from benchmarks.power_data import CALIBRATION_VOL, planted_genome
from champions.bundle import encode, read_bundle
from champions.keys import key_id
from champions.pointer import champions_root, read_pointer
from champions.promote import PromoteError, go_live
from champions.registry import Registry, default_url
from champions.snapshot import bare_body
from live.executor.config import parse_live_config
from live.executor.service import Executor
from live.fix.acceptor import start_acceptor
from live.paper import PaperError, PaperPolicy, compare_paper, paper_record
from live.venue.build import acceptor_settings, build_venue
from live.venue.config import parse_venue_config
from live.venue.feed import Feed
from market.loader import Bars

N_PAPER = 40  # daily bars traded on paper: 40 trading days


def run_paper(home: Path, bars: Bars, meta, n: int, *, state_path: Path | None = None,
              venue_meta=None) -> Path:
    """The executor of ``home`` (its paper pointer, trusted key) against a paper venue that
    replays the first ``n`` of ``bars``; returns the state store it wrote. ``venue_meta``:
    the venue's symbol metadata (default ``meta``: fills at the kernel's prices)."""
    pub = home / "keys" / "emp-signing.pub"
    # refits in this process (arch is loaded here already): no worker process to start
    # the paper host's own (empty) history store: the farm's is not the executor's to extend
    live_home = (state_path or home / "x").parent
    over = {"refit_worker": False, "history": str(live_home / "paper-history")} | (
        {} if state_path is None else {"state_path": str(state_path)})

    async def go() -> Path:
        vc = parse_venue_config(venue_config())
        feed = Feed(bars.ts, bars.open[0], bars.high[0], bars.low[0], bars.close[0],
                    bars.volume[0])
        venue = build_venue(vc, {SYMBOL: feed}, {SYMBOL: venue_meta or meta})
        acc = await start_acceptor(acceptor_settings(vc, (state_path or home / "x").parent
                                                     / "venue"), venue)
        cfg = parse_live_config(live_config(home, pub, acc.port, **over))
        ex = Executor(cfg)
        await ex.start()
        try:
            for i in range(n):
                await venue.step()
                await until(lambda i=i: ex.bars_done == i + 1, f"bar {i} processed")
                await until(lambda: not [o for o in ex.orders.open_orders()
                                         if o.status in ("pending_new", "sent")], "order acks")
        finally:
            await ex.stop()
            await acc.close()
        return cfg.state_file

    return asyncio.run(go())


@pytest.fixture(scope="module")
def w():
    return world()


@pytest.fixture(scope="module")
def paper(w, tmp_path_factory):
    """A real paper run of the rig's champion: its home and state store."""
    home = tmp_path_factory.mktemp("paper")
    install(w, home)
    state = run_paper(home, cut(w.bars, SPLIT, SPLIT + N_PAPER), w.meta, N_PAPER)
    return home, state, read_bundle(w.bundle, _trusted(w))


def _trusted(w) -> dict:
    pub = w.private.public_key()
    return {key_id(pub): pub}


def _bundle(w, genome) -> bytes:
    hist = cut(w.bars, 0, SPLIT)
    body = bare_body(genome, hist, w.meta, w.sim, CALIBRATION_VOL, symbol=SYMBOL, key="other",
                     provenance="test")
    return encode(body, w.private)


def test_a_faithful_paper_run_passes(paper):
    _, state, bundle = paper
    record = paper_record(state, SYMBOL, bundle.sha256)
    assert len(record.bars) == N_PAPER and record.days == N_PAPER
    assert record.first_start == 100_000.0
    check = compare_paper(record, bundle, PaperPolicy(min_days=2))
    assert check.ok, check.reasons
    assert check.days == N_PAPER and check.bars == N_PAPER
    assert check.trades >= 4, "the comparison needs fills"
    # the paper venue fills at the kernel's prices: equal to the bit, or within an ulp
    assert check.max_target_diff_lots == 0.0 and check.max_fill_bps < 1e-9
    assert check.return_diff < 1e-12 and check.paper_return != 0.0


def test_too_few_days_are_refused(paper):
    _, state, bundle = paper
    check = compare_paper(paper_record(state, SYMBOL, bundle.sha256), bundle,
                          PaperPolicy(min_days=N_PAPER + 1))
    assert not check.ok and check.reasons == (f"{N_PAPER} of {N_PAPER + 1} paper days",)


def test_a_missing_record_is_refused(paper, tmp_path):
    _, state, bundle = paper
    with pytest.raises(PaperError, match=r"not found: no paper record"):
        paper_record(tmp_path / "none.db", SYMBOL, bundle.sha256)
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(PaperError, match=r"no bars of champion 0{12} on EDGE"):
        paper_record(state, SYMBOL, "0" * 64)


def test_another_champions_decisions_are_refused(w, paper):
    """The record of one champion against the bundle of another (the breakout rule): the
    targets and fills differ."""
    _, state, bundle = paper
    other = read_bundle(_bundle(w, planted_genome("breakout")), _trusted(w))
    check = compare_paper(paper_record(state, SYMBOL, bundle.sha256), other,
                          PaperPolicy(min_days=2))
    assert not check.ok and check.max_target_diff_lots > 0.01
    assert any(r.startswith("target at bar ") for r in check.reasons)


def test_fills_at_other_prices_are_refused(w, tmp_path):
    """A second real run against a broker whose costs are 30 bps a side more than the
    backtest's: the fills and the return differ (and, once the executor re-bases its sizing
    equity on the broker's lower one, the order sizes too): refused."""
    install(w, tmp_path)
    costly = w.meta.model_copy(update={"costs": w.meta.costs.model_copy(
        update={"slippage": w.meta.costs.slippage + 30.0})})
    assert w.meta.costs.unit == "bps"
    state = run_paper(tmp_path, cut(w.bars, SPLIT, SPLIT + N_PAPER), w.meta, N_PAPER,
                      venue_meta=costly)
    bundle = read_bundle(w.bundle, _trusted(w))
    check = compare_paper(paper_record(state, SYMBOL, bundle.sha256), bundle,
                          PaperPolicy(min_days=2))
    assert not check.ok
    assert check.max_fill_bps == pytest.approx(30.0, rel=0.02)
    assert any("bps, tolerance 5)" in r for r in check.reasons)
    assert check.paper_return < check.replay_return


# ---- promotion to live ---------------------------------------------------------------------
def _registered(home: Path, bundle, state: str) -> int:
    """The rig's bundle as a registry champion in ``state``."""
    with Registry(default_url(home)) as reg:
        c = reg.register(key="planted", symbol=SYMBOL, timeframe="1d", run_id="test",
                         bundle_sha256=bundle.sha256,
                         bundle_path=f"{SYMBOL}/bundles/{bundle.sha256}.json", who="t",
                         reason="test")
        if state != "eligible":
            reg.transition(c.id, state, action="promote", who="t", reason="test")
        return c.id


def _events(home: Path) -> int:
    with Registry(default_url(home)) as reg:
        return len(reg.events())


def test_go_live_needs_paper_and_a_passing_record(paper, tmp_path):
    import shutil

    src, state, bundle = paper
    home = tmp_path / "home"
    shutil.copytree(src / "champions", home / "champions")
    shutil.copytree(src / "keys", home / "keys")
    cid = _registered(home, bundle, "eligible")
    with pytest.raises(PromoteError, match=r"is eligible \(#1\), not paper: promote to paper "
                                           r"first"):
        go_live(home, "test", "planted", "go", paper_state=state, log_mlflow=False)
    with Registry(default_url(home)) as reg:
        reg.transition(cid, "paper", action="promote", who="t", reason="paper first")
    n = _events(home)
    # no store at the default path ($EMP_HOME/live/state.db)
    with pytest.raises(PromoteError, match=rf"paper gate refused champion #1 "
                                           rf"\({bundle.sha256[:12]}\): state store "
                                           rf".*live/state.db: not found"):
        go_live(home, "test", "planted", "go", log_mlflow=False)
    with pytest.raises(PromoteError, match=rf"on state store {state}: {N_PAPER} of 50 paper "
                                           rf"days$"):
        go_live(home, "test", "planted", "go", paper_state=state,
                policy=PaperPolicy(min_days=50), log_mlflow=False)
    assert _events(home) == n and not (home / "champions" / SYMBOL / "current.json").exists()

    res = go_live(home, "test", "planted", "go", paper_state=state,
                  policy=PaperPolicy(min_days=2), log_mlflow=False)
    assert res.champion.state == "live" and res.sha256 == bundle.sha256 and res.paper.ok
    live = read_pointer(champions_root(home) / SYMBOL, "live")
    assert live.sha256 == bundle.sha256
    with Registry(default_url(home)) as reg:
        last = reg.events(champion_id=cid)[-1]
    assert (last.from_state, last.to_state) == ("paper", "live")
    assert f"paper gate passed on {state}: {N_PAPER} paper days" in last.reason
    with pytest.raises(PromoteError, match="is already live"):
        go_live(home, "test", "planted", "again", paper_state=state, log_mlflow=False)

