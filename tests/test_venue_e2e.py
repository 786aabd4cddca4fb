"""The venue end to end over real TCP on 127.0.0.1: the engine's initiator logs on to the
venue's QUOTE and TRADE sessions (built from a venue config by ``acceptor_settings``) and
trades while the test steps the bars (``Venue.step``). Both engines validate every message
with the FIX 4.4 dictionary, so a field the venue gets wrong would come back as a Reject;
each scenario ends by checking that neither side sent one. Fill prices are compared with the
kernel's own cost numbers (``market_config``), and the faults are injected through the
venue's test API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fitness import simulator_nb as k
from fitness.config import SimConfig
from fitness.simulator import market_config
from live.fix import codec
from live.fix.acceptor import Acceptor, start_acceptor
from live.fix.codec import Parsed
from live.fix.config import InitiatorSettings, SessionSettings
from live.fix.dictionary import validate
from live.fix.errors import SessionReject
from live.fix.initiator import Initiator, start_initiator
from live.fix.message import Message
from live.fix.session import Session
from live.venue.app import QUOTE, TRADE, Venue
from live.venue.build import acceptor_settings, build_venue
from live.venue.config import parse_venue_config
from live.venue.feed import Feed
from market.config import preset_meta
from market.timeframes import bars_per_year

STEP = 10.0  # how long to wait for an expected message (never reached when all is well)
META = preset_meta("fx")  # EURUSD: 1 pip cost per side, volume step 1000 units
CFG = market_config(META, bars_per_year("1h", META.calendar), SimConfig())
N_BARS = 12
DEEP_BAR = 6  # this bar's low falls 2 big figures: a long's stop is hit inside it


def bars() -> Feed:
    """Hourly EURUSD bars rising 10 pips a bar, with one deep low at ``DEEP_BAR``."""
    ts = (np.int64(1_704_067_200) + np.arange(N_BARS) * 3600) * 1_000_000_000
    o = np.round(1.1 + 0.001 * np.arange(N_BARS), 5)
    lo = o - 0.002
    lo[DEEP_BAR] = o[DEEP_BAR] - 0.02
    return Feed(ts, o, o + 0.002, lo, o + 0.001, np.full(N_BARS, 100.0))


def kernel_fill(raw: float, side: int) -> float:
    """The kernel's effective price of a fill at ``raw`` (simulator_nb: raw ± (raw·frac+abs))."""
    return raw + side * (raw * CFG[k.C_COST_FRAC] + CFG[k.C_COST_ABS])


VENUE_CFG = {"port": 0, "heartbeat_s": 30, "symbols": {"EURUSD": {"id": 1, "lot_size": 100000}},
             "replay": {"timeframe": "1h", "speed": 0}}


# ---- the client side: two initiator sessions and what they receive --------------------------
@dataclass
class Client:
    """An initiator application that keeps every message it receives."""

    got: list[Message] = field(default_factory=list)
    logons: int = 0
    logouts: int = 0

    async def on_logon(self, session: Session) -> None:
        self.logons += 1

    async def on_logout(self, session: Session) -> None:
        self.logouts += 1

    async def on_message(self, session: Session, msg: Message) -> None:
        self.got.append(msg)

    def of(self, msg_type: str, **tags: str) -> list[Message]:
        return [m for m in self.got if m.msg_type == msg_type
                and all(m.get(int(t[1:])) == v for t, v in tags.items())]


async def until(cond: Callable[[], object], what: str) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP
    while loop.time() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def one(client: Client, what: str, msg_type: str, **tags: str) -> Message:
    """Wait for the first message of ``msg_type`` with these tag values."""
    found = await until(lambda: client.of(msg_type, **tags), what)
    return found[0]  # type: ignore[index]


@dataclass
class Rig:
    venue: Venue
    acceptor: Acceptor
    ini: dict[str, Initiator]
    quote: Client
    trade: Client
    business_rejects: bool = False  # the scenario expects the venue to send a j

    async def send(self, role: str, msg: Message) -> int:
        return await self.ini[role].session.send(msg)

    def venue_session(self, role: str) -> Session:
        sub = "QUOTE" if role == QUOTE else "TRADE"
        return next(s for s in self.acceptor.sessions.values() if s.id.sender_sub_id == sub)


def client_settings(port: int, sub: str, tmp: Path) -> InitiatorSettings:
    return InitiatorSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2,
                             session=SessionSettings(
                                 sender_comp_id="EMPCLIENT", target_comp_id="EMPVENUE",
                                 target_sub_id=sub, reset_on_logon=True,
                                 store_path=tmp / f"client-{sub.lower()}.sqlite"))


@contextlib.asynccontextmanager
async def rig(tmp: Path) -> AsyncIterator[Rig]:
    vc = parse_venue_config(VENUE_CFG)
    venue = build_venue(vc, {"EURUSD": bars()}, {"EURUSD": META})
    acc = await start_acceptor(acceptor_settings(vc, tmp), venue)
    quote, trade = Client(), Client()
    ini = {QUOTE: await start_initiator(client_settings(acc.port, "QUOTE", tmp), quote),
           TRADE: await start_initiator(client_settings(acc.port, "TRADE", tmp), trade)}
    r = Rig(venue, acc, ini, quote, trade)
    try:
        for i in ini.values():
            assert await i.wait_logged_on(STEP)
        await until(lambda: set(venue.sessions) == {QUOTE, TRADE}, "both venue sessions")
        yield r
        for role in (QUOTE, TRADE):  # neither engine found anything to reject
            for session in (r.ini[role].session, r.venue_session(role)):
                sent = sent_types(session)
                assert "3" not in sent, (session.id, sent)
                assert r.business_rejects or "j" not in sent, (session.id, sent)
    finally:
        for i in ini.values():
            await i.close()
        await acc.close()


def sent_types(session: Session) -> list[str]:
    return [codec.parse(raw, validate=False).msg_type
            for _, raw in session.store.get_range(1, session.next_sender_seq)]


# ---- the client's messages ------------------------------------------------------------------
def now() -> str:
    return codec.utc_timestamp()[:17]


def order(cl: str, qty: str = "0.1", side: str = "1", **tags: str) -> Message:
    m = Message("D", [(11, cl), (55, "1"), (54, side), (60, now()), (38, qty), (40, "1")])
    for key, val in tags.items():
        m.append(int(key[1:]), val)
    return m


def cancel(cl: str, orig: str) -> Message:
    return Message("F", [(41, orig), (11, cl), (55, "1"), (54, "1"), (60, now()), (38, "0.1")])


def status(cl: str) -> Message:
    return Message("H", [(11, cl), (55, "1"), (54, "1"), (790, f"st-{cl}")])


def positions(req: str) -> Message:
    return Message("AN", [(710, req), (724, "0"), (1, "1"), (581, "1"),
                          (715, dt.datetime.now(dt.UTC).strftime("%Y%m%d")), (60, now())])


def mass_status(req: str) -> Message:
    return Message("AF", [(584, req), (585, "7")])


def md_request(req: str, kind: str, *symbols: str) -> Message:
    m = Message("V", [(262, req), (263, kind), (264, "1"), (265, "1"),
                      (267, "2"), (269, "0"), (269, "1"), (146, str(len(symbols)))])
    for s in symbols:
        m.append(55, s)
    return m


# ---- scenarios ------------------------------------------------------------------------------
def test_logon_then_snapshot_and_one_refresh_per_step_unknown_symbol_rejected(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            assert all(r.ini[x].session.logged_on for x in (QUOTE, TRADE))
            await r.send(QUOTE, md_request("md1", "1", "1"))
            await until(lambda: "md1" in r.venue.subs, "the subscription")
            await r.venue.step()  # the first bar comes as the snapshot
            w = await one(r.quote, "the snapshot", "W", t262="md1")
            assert w.get(55) == "1" and w.get_all(269) == ["0", "1"]
            assert w.header.get(50) == "QUOTE" and w.get(272) == "20240101"
            for n in (1, 2, 3):
                await r.venue.step()
                await until(lambda n=n: len(r.quote.of("X")) == n, f"refresh {n}")
            times = [x.get(273) for x in r.quote.of("X")]
            assert times == ["01:00:00", "02:00:00", "03:00:00"]  # one bar per step, in order
            bid, ask = (float(v) for v in r.quote.of("X")[-1].get_all(270))
            assert bid < 1.104 < ask  # around bar 3's close
            await r.send(QUOTE, md_request("md2", "1", "99"))
            y = await one(r.quote, "the reject", "Y", t262="md2")
            assert y.get(281) == "0" and "99" in y.get(58)
            await r.send(QUOTE, md_request("md1", "2", "1"))  # unsubscribe
            await until(lambda: "md1" not in r.venue.subs, "the unsubscribe")
            await r.venue.step()
            await r.send(QUOTE, md_request("md3", "0", "1"))  # a snapshot after that step
            await one(r.quote, "a snapshot", "W", t262="md3")
            assert len(r.quote.of("X")) == 3  # nothing for md1 since
            await r.send(TRADE, md_request("md4", "1", "1"))  # market data on TRADE
            await until(lambda: r.trade.got, "an answer on TRADE")
            assert r.trade.got[0].msg_type == "j"  # BusinessMessageReject, not a session Reject
            r.business_rejects = True

    asyncio.run(scenario())


def test_order_fills_at_next_open_at_the_kernels_price_and_reconciles(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()  # bar 0
            await r.send(TRADE, order("o1", t9001="0.01", t9002="0.03"))
            new = await one(r.trade, "New", "8", t11="o1", t150="0")
            assert (new.get(39), new.get(38), new.get(151), new.get(14)) == ("0", "0.1", "0.1",
                                                                            "0")
            await r.send(TRADE, mass_status("m1"))
            ms = await one(r.trade, "mass status", "8", t584="m1")
            assert (ms.get(150), ms.get(11), ms.get(911), ms.get(912)) == ("I", "o1", "1", "Y")
            await r.venue.step()  # bar 1: the fill at its open
            fill = await one(r.trade, "the fill", "8", t11="o1", t150="F")
            o1 = float(bars().open[1])
            assert float(fill.get(31)) == kernel_fill(o1, 1) == float(fill.get(6))
            assert (fill.get(39), fill.get(32), fill.get(14), fill.get(151)) == ("2", "0.1",
                                                                                "0.1", "0")
            pos = r.venue.exchange.positions["EURUSD"]  # protection placed the kernel's way
            assert (pos.stop, pos.tp) == (kernel_fill(o1, 1) - 0.01, kernel_fill(o1, 1) + 0.03)
            await r.send(TRADE, status("o1"))
            st = await one(r.trade, "the status", "8", t790="st-o1")
            assert (st.get(150), st.get(39), st.get(14)) == ("I", "2", "0.1")
            await r.send(TRADE, positions("p1"))
            ao = await one(r.trade, "the positions ack", "AO", t710="p1")
            ap = await one(r.trade, "the position", "AP", t710="p1")
            assert (ao.get(727), ao.get(728)) == ("1", "0")
            assert (ap.get(55), ap.get(704), ap.get(705), ap.get(731)) == ("1", "0.1", "0", "1")
            assert float(ap.get(734)) == kernel_fill(o1, 1)  # entry price
            assert float(ap.get(730)) == float(bars().close[1])  # settled at the last close
            await r.send(TRADE, mass_status("m2"))
            none = await one(r.trade, "no open orders", "8", t584="m2")
            assert (none.get(911), none.get(58)) == ("0", "no open orders")
            # the venue's books agree with what the client was told
            assert r.venue.exchange.positions["EURUSD"].units == 10_000.0

    asyncio.run(scenario())


def test_stop_loss_inside_a_bar_is_an_unsolicited_fill(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()
            await r.send(TRADE, order("s1", t9001="0.005"))
            await one(r.trade, "New", "8", t11="s1", t150="0")
            for _ in range(DEEP_BAR):  # bars 1 .. DEEP_BAR
                await r.venue.step()
            sl = await one(r.trade, "the stop-loss fill", "8", t11="s1-SL")
            stop = kernel_fill(float(bars().open[1]), 1) - 0.005
            assert (sl.get(150), sl.get(39), sl.get(40), sl.get(54)) == ("F", "2", "3", "2")
            assert float(sl.get(31)) == kernel_fill(stop, -1) and sl.get(58) == "stop-loss hit"
            fills = r.trade.of("8", t150="F")
            assert [m.get(11) for m in fills] == ["s1", "s1-SL"]  # no earlier stop-out
            await r.send(TRADE, positions("p"))
            ao = await one(r.trade, "the positions ack", "AO", t710="p")
            assert (ao.get(727), ao.get(728)) == ("0", "2")  # flat: no AP
            assert not r.trade.of("AP")

    asyncio.run(scenario())


def test_cancel_before_the_fill_and_cancel_reject_after(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()
            await r.send(TRADE, order("c1", t9001="0.01"))
            await one(r.trade, "New", "8", t11="c1", t150="0")
            await r.send(TRADE, cancel("c1-x", "c1"))
            done = await one(r.trade, "Canceled", "8", t11="c1-x")
            assert (done.get(150), done.get(39), done.get(41)) == ("4", "4", "c1")
            await r.send(TRADE, order("c2", t9001="0.01"))
            await one(r.trade, "New", "8", t11="c2", t150="0")
            await r.venue.step()
            await one(r.trade, "c2 filled", "8", t11="c2", t150="F")
            await r.send(TRADE, cancel("c2-x", "c2"))
            rej = await one(r.trade, "the cancel reject", "9", t11="c2-x")
            assert (rej.get(41), rej.get(39), rej.get(102), rej.get(434)) == ("c2", "2", "0",
                                                                              "1")
            assert not r.trade.of("8", t11="c1", t150="F")  # the canceled order never filled
            assert r.venue.exchange.positions["EURUSD"].units == 10_000.0

    asyncio.run(scenario())


def test_duplicate_clordid_and_possresend_are_rejected_never_filled_twice(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()
            await r.send(TRADE, order("d1", t9001="0.01"))
            await one(r.trade, "New", "8", t11="d1", t150="0")
            await r.send(TRADE, order("d1", t9001="0.01"))
            resend = order("d1", t9001="0.01")
            resend.header[97] = "Y"  # PossResend: the client is not sure it went out
            await r.send(TRADE, resend)
            await until(lambda: len(r.trade.of("8", t11="d1", t150="8")) == 2, "two rejects")
            assert all(m.get(103) == "6" for m in r.trade.of("8", t11="d1", t150="8"))
            await r.venue.step()
            await r.venue.step()
            await r.send(TRADE, status("d1"))
            await one(r.trade, "the status", "8", t790="st-d1")  # after every report so far
            assert len(r.trade.of("8", t11="d1", t150="F")) == 1
            assert r.venue.exchange.positions["EURUSD"].units == 10_000.0

    asyncio.run(scenario())


def test_dropped_link_reconnects_and_the_position_is_still_there(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()
            await r.send(TRADE, order("k1", t9001="0.01"))
            await one(r.trade, "New", "8", t11="k1", t150="0")
            await r.venue.step()
            await one(r.trade, "the fill", "8", t11="k1", t150="F")
            assert await r.venue.drop_link(TRADE)
            await until(lambda: r.trade.logouts == 1, "the client to notice the drop")
            assert await r.ini[TRADE].wait_logged_on(STEP)  # it reconnected by itself
            assert r.trade.logons == 2 and r.ini[TRADE].connects == 2
            assert r.ini[QUOTE].connects == 1  # QUOTE was not touched
            await until(lambda: TRADE in r.venue.sessions, "the venue's TRADE logon")
            await r.send(TRADE, positions("after"))
            ap = await one(r.trade, "the position", "AP", t710="after")
            assert (ap.get(704), ap.get(705)) == ("0.1", "0")
            await r.send(TRADE, status("k1"))
            st = await one(r.trade, "the status", "8", t790="st-k1")
            assert st.get(39) == "2"
            assert r.venue.dropped == [TRADE]

    asyncio.run(scenario())


def test_skipped_sequence_numbers_are_gap_filled_and_nothing_is_lost(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emp.fix.session")
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.venue.step()
            venue_trade = r.venue_session(TRADE)
            before = venue_trade.next_sender_seq
            assert r.venue.skip_seq(TRADE, 3)
            await r.send(TRADE, order("g1", t9001="0.01"))  # its New goes out 3 numbers late
            await one(r.trade, "New", "8", t11="g1", t150="0")
            await r.venue.step()
            await one(r.trade, "the fill", "8", t11="g1", t150="F")
            client = r.ini[TRADE].session
            assert "2" in sent_types(client)  # the client asked for a resend ...
            await until(lambda: client.next_target_seq == venue_trade.next_sender_seq,
                        "the sequence numbers to agree")
            assert venue_trade.next_sender_seq == before + 3 + 2
            assert [m.get(150) for m in r.trade.of("8", t11="g1")] == ["0", "F"]  # each once
        gap_fills = [rec.getMessage() for rec in caplog.records
                     if rec.getMessage().startswith("FIX.4.4:EMPCLIENT->EMPVENUE/TRADE: "
                                                    "SequenceReset to")]
        assert gap_fills == [f"FIX.4.4:EMPCLIENT->EMPVENUE/TRADE: SequenceReset to {before + 3} "
                             f"(expected {before})"]  # ... and got a GapFill over the gap

    asyncio.run(scenario())


def test_faults_reject_delay_partial_and_stale_quotes(tmp_path):
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            v = r.venue
            await r.send(QUOTE, md_request("md", "1", "1"))
            await until(lambda: "md" in v.subs, "the subscription")
            await v.step()  # bar 0
            v.faults.reject_next(1)
            await r.send(TRADE, order("f1", t9001="0.01"))
            rej = await one(r.trade, "the injected reject", "8", t11="f1")
            assert (rej.get(150), rej.get(103)) == ("8", "99") and "fault" in rej.get(58)
            v.faults.delay_fills(1)
            await r.send(TRADE, order("f2", t9001="0.01"))
            await one(r.trade, "New", "8", t11="f2", t150="0")
            v.faults.delay_fills(0)
            v.faults.partial_fills(0.5, 1)
            await r.send(TRADE, order("f3", qty="0.2", side="2", t9001="0.01"))
            await one(r.trade, "New", "8", t11="f3", t150="0")
            await v.step()  # bar 1: f3's first half; f2 waits a bar more
            part = await one(r.trade, "the partial fill", "8", t11="f3", t150="F")
            assert (part.get(39), part.get(32), part.get(151)) == ("1", "0.1", "0.1")
            assert float(part.get(31)) == kernel_fill(float(bars().open[1]), -1)
            v.faults.stale_quotes(1)
            await v.step()  # bar 2: f2 fills late, f3's rest fills; no quote refresh
            f2 = await one(r.trade, "the delayed fill", "8", t11="f2", t150="F")
            assert float(f2.get(31)) == kernel_fill(float(bars().open[2]), 1)
            await until(lambda: r.trade.of("8", t11="f3", t39="2"), "the rest of f3")
            await v.step()  # bar 3: quotes again
            await until(lambda: len(r.quote.of("X")) == 2, "refreshes")
            assert [x.get(273) for x in r.quote.of("X")] == ["01:00:00", "03:00:00"]
            assert v.stale_steps == 1
            await r.send(TRADE, positions("p"))
            ap = await one(r.trade, "the position", "AP", t710="p")
            assert (ap.get(704), ap.get(705)) == ("0", "0.1")  # +0.1 then -0.2: net short 0.1

    asyncio.run(scenario())


# ---- the dictionary knows the venue's order fields ------------------------------------------
def _parsed(msg_type: str, body: str) -> Parsed:
    raw = codec.encode("FIX.4.4", msg_type, [(34, "2"), (49, "EMPCLIENT"), (56, "EMPVENUE"),
                                             (52, codec.utc_timestamp())],
                       [tuple(f.split("=")) for f in body.split("|")])
    return codec.parse(raw, validate=False)


def test_dictionary_declares_the_venue_fields_on_new_order_single_only():
    base = f"11=a|21=1|38=1|40=1|54=1|55=1|60={now()}"
    validate(_parsed("D", base + "|9001=0.01|9002=0.02|9003=Y"))
    for extra, reason, tag in (("|9003=maybe", 6, 9003), ("|9001=x", 6, 9001),
                               ("|9004=1", 0, 9004)):
        with pytest.raises(SessionReject) as exc:
            validate(_parsed("D", base + extra))
        assert (exc.value.reason, exc.value.tag) == (reason, tag)
    with pytest.raises(SessionReject) as exc:
        validate(_parsed("F", f"41=a|11=b|54=1|55=1|60={now()}|9001=0.01"))
    assert (exc.value.reason, exc.value.tag) == (2, 9001)  # not defined for F


def test_acceptor_settings_two_sessions_with_their_own_stores(tmp_path):
    vc = parse_venue_config({**VENUE_CFG, "heartbeat_s": 7, "comp_id": "V", "client_comp_id": "C",
                             "credentials": {"username_env": "U", "password_env": "P"}})
    st = acceptor_settings(vc, tmp_path)
    assert (st.host, st.port) == ("127.0.0.1", 0)
    quote, trade = st.sessions
    assert [(s.sender_sub_id, s.target_sub_id) for s in st.sessions] == [("QUOTE", None),
                                                                        ("TRADE", None)]
    assert quote.store_path == tmp_path / "venue" / "quote.sqlite"
    assert trade.store_path == tmp_path / "venue" / "trade.sqlite"
    for s in st.sessions:
        assert (s.sender_comp_id, s.target_comp_id, s.heartbeat_interval) == ("V", "C", 7)
        assert s.reset_on_logon and s.credentials is not None
        assert (s.credentials.username_env, s.credentials.password_env) == ("U", "P")
    other = acceptor_settings(parse_venue_config({**VENUE_CFG, "store_dir": str(tmp_path / "x")}),
                              tmp_path)
    assert other.sessions[0].store_path == tmp_path / "x" / "quote.sqlite"
    assert other.sessions[0].credentials is None
