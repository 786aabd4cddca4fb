"""Interop with an independent FIX engine: QuickFIX (C++) as the peer, real TCP on 127.0.0.1.

1. Our initiator logs on to a QuickFIX acceptor, sends orders (QuickFIX fills them), then
   goes through a disconnect from each side, a resend each way (PossDup and GapFill), and a
   sequence reset (SequenceReset-Reset, then a Logon with ResetSeqNumFlag); the sequence
   numbers of both engines agree after every step.
2. A QuickFIX initiator logs on to our venue (QUOTE and TRADE sessions on one port),
   subscribes to market data, sends orders and receives fills.

QuickFIX validates what we send against a FIX 4.4 data dictionary of its own
(``quickfix_peer.write_dictionary``); a message it rejected would show up as a Reject (35=3)
or BusinessMessageReject in what it sent, and every test asserts there is none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

quickfix = pytest.importorskip("quickfix", reason="quickfix-tls (the dev extra) is needed")

from benchmarks.quickfix_peer import (  # noqa: E402
    PeerApp,
    QuickFixPeer,
    SessionSpec,
    build_message,
)
from live.fix.config import InitiatorSettings, SessionSettings  # noqa: E402
from live.fix.initiator import Initiator, start_initiator  # noqa: E402
from live.fix.message import Message  # noqa: E402

WAIT = 15.0  # seconds an awaited event may take before the test fails (never asserted)


class Recorder:
    """Our side's application: keeps what arrives, counts logons and logouts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.logons = 0
        self.logouts = 0

    async def on_logon(self, session) -> None:
        self.logons += 1

    async def on_logout(self, session) -> None:
        self.logouts += 1

    async def on_message(self, session, msg: Message) -> None:
        self.messages.append(msg)

    def of_type(self, msg_type: str) -> list[Message]:
        return [m for m in self.messages if m.msg_type == msg_type]


async def until(pred: Callable[[], object], what: str, timeout: float = WAIT) -> object:
    """Poll ``pred`` on the event loop (QuickFIX works on its own threads meanwhile)."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def order(cl: str, qty: str = "2", px: str = "1.2345") -> Message:
    return Message("D", [(11, cl), (55, "EURUSD"), (54, "1"), (60, "20240102-10:00:00.000"),
                         (38, qty), (40, "2"), (44, px)])


def initiator_settings(tmp: Path, port: int, *, reset: bool = False) -> InitiatorSettings:
    return InitiatorSettings(
        host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.2,
        session=SessionSettings(sender_comp_id="EMP", target_comp_id="BRK",
                                heartbeat_interval=30, reset_on_logon=reset,
                                store_path=tmp / "ours" / "messages.db"))


async def in_step(ours: Initiator, qf: QuickFixPeer) -> None:
    """Both engines agree: our next outgoing number is QuickFIX's next expected, and back."""
    s = ours.session

    def agree() -> bool:
        return (s.next_sender_seq == qf.next_target_seq()
                and s.next_target_seq == qf.next_sender_seq())

    try:
        await until(agree, "sequence numbers to agree", timeout=5.0)
    except AssertionError:
        raise AssertionError(
            f"ours sender/target {s.next_sender_seq}/{s.next_target_seq}, QuickFIX "
            f"target/sender {qf.next_target_seq()}/{qf.next_sender_seq()}") from None


def no_rejects(app: PeerApp) -> None:
    """QuickFIX found nothing wrong with what we sent (no Reject, no BusinessMessageReject)."""
    bad = [s.fields for s in app.sent() if s.msg_type in ("3", "j")]
    assert not bad, f"QuickFIX rejected our messages: {bad}"


def test_our_initiator_with_a_quickfix_acceptor(tmp_path: Path) -> None:
    qf = QuickFixPeer("acceptor", tmp_path / "qf", [SessionSpec("BRK", "EMP")])
    with qf:
        asyncio.run(_initiator_scenario(tmp_path, qf))
        no_rejects(qf.app)


async def _initiator_scenario(tmp: Path, qf: QuickFixPeer) -> None:
    app = Recorder()
    ours = await start_initiator(initiator_settings(tmp, qf.port), app)
    try:
        await _orders_and_disconnects(ours, app, qf)
    finally:
        await ours.close()
    # a restart: QuickFIX sends while we are down, we come back from our store
    await _restart_and_resend_to_us(tmp, qf)
    await _we_resend_to_quickfix(tmp, qf)
    await _sequence_resets(tmp, qf)


async def _orders_and_disconnects(ours: Initiator, app: Recorder, qf: QuickFixPeer) -> None:
    s = ours.session
    assert await ours.wait_logged_on(WAIT), "our initiator did not log on to QuickFIX"
    qf.wait_logged_on()
    for i in range(3):
        assert await s.send(order(f"c{i}")) == 2 + i  # 1 is the Logon
    await until(lambda: len(app.of_type("8")) == 3, "three ExecutionReports")
    rep = app.of_type("8")[0]
    assert (rep.get(11), rep.get(150), rep.get(39), rep.get(14)) == ("c0", "F", "2", "2")
    assert rep.header[49] == "BRK" and rep.header[56] == "EMP"
    await in_step(ours, qf)
    assert (s.next_sender_seq, s.next_target_seq) == (5, 5)

    # the link dies under us (our side closes the socket, no Logout): we reconnect and
    # log on again with the numbers we had; nothing is reset
    s.disconnect("test: cut the TCP link")
    await until(lambda: ours.connects >= 2 and s.logged_on, "our reconnect")
    await until(lambda: app.logons >= 2, "our second logon")
    qf.wait_logged_on()
    await in_step(ours, qf)
    assert (s.next_sender_seq, s.next_target_seq) == (6, 6)

    # the link dies from QuickFIX's side
    qf.session().disconnect()
    await until(lambda: ours.connects >= 3 and s.logged_on, "our reconnect after QuickFIX cut")
    qf.wait_logged_on()
    assert await s.send(order("c3")) == 7
    await until(lambda: len(app.of_type("8")) == 4, "the fourth ExecutionReport")
    await in_step(ours, qf)
    assert (s.next_sender_seq, s.next_target_seq) == (8, 8)


async def _restart_and_resend_to_us(tmp: Path, qf: QuickFixPeer) -> None:
    """QuickFIX sends two ExecutionReports while we are down (it stores them); our restarted
    initiator resumes from its store, sees QuickFIX's Logon too high, asks for a resend and
    gets the reports as PossDup with OrigSendingTime, the admin messages as a GapFill."""
    qf_target_before = qf.next_target_seq()
    await until(lambda: not qf.logged_on(), "QuickFIX to see our logout")
    for i in range(2):
        rep = build_message("8", [(37, f"U{i}"), (17, f"XU{i}"), (150, "0"), (39, "0"),
                                  (55, "EURUSD"), (54, "1"), (151, "2"), (14, "0"), (6, "0")])
        qf.send(rep)
    sent_while_down = qf.next_sender_seq()

    app = Recorder()
    ours = await start_initiator(initiator_settings(tmp, qf.port), app)
    try:
        s = ours.session
        assert s.next_sender_seq == qf_target_before, "the restart lost our sequence numbers"
        assert await ours.wait_logged_on(WAIT)
        await until(lambda: len(app.of_type("8")) == 2, "the resent ExecutionReports")
        for i, rep in enumerate(app.of_type("8")):
            assert rep.get(37) == f"U{i}"
            assert rep.header.get(43) == "Y", "a resent message must carry PossDupFlag=Y"
            assert rep.header.get(122), "a resent message must carry OrigSendingTime"
        resend = [m for m in qf.app.received("2")]
        assert resend, "we never asked QuickFIX to resend"
        assert int(resend[-1].get(7)) < sent_while_down
        await in_step(ours, qf)
    finally:
        await ours.close()


async def _we_resend_to_quickfix(tmp: Path, qf: QuickFixPeer) -> None:
    """QuickFIX 'misses' our messages (its store is rewound): it asks us to resend, and we
    answer from our store: the orders as PossDup with OrigSendingTime, Logon and heartbeats
    as SequenceReset-GapFill."""
    app = Recorder()
    ours = await start_initiator(initiator_settings(tmp, qf.port), app)
    try:
        s = ours.session
        assert await ours.wait_logged_on(WAIT)
        qf.wait_logged_on()
        await in_step(ours, qf)
        first = s.next_sender_seq
        assert await s.send(order("r1")) == first
        assert await s.send(order("r2")) == first + 1
        await until(lambda: len(app.of_type("8")) == 2, "two fills")
        await in_step(ours, qf)
        n_in = len(qf.app.received())
        # QuickFIX forgets everything we sent from our Logon of this connection on
        logon_seq = first - 1
        qf.session().setNextTargetMsgSeqNum(logon_seq)
        assert await s.send(order("r3")) == first + 2  # too high for QuickFIX -> resend
        await until(lambda: len(app.of_type("8")) >= 3
                    and qf.next_target_seq() == s.next_sender_seq, "QuickFIX to catch up")
        after = qf.app.received()[n_in:]
        gap = [m for m in after if m.msg_type == "4"]
        assert gap and gap[0].get(123) == "Y" and gap[0].seq == logon_seq
        assert int(gap[0].get(36)) == first, "the GapFill must skip our Logon only"
        dups = [m for m in after if m.msg_type == "D" and m.get(43) == "Y"]
        assert [m.get(11) for m in dups] == ["r1", "r2"]
        assert [m.seq for m in dups] == [first, first + 1]
        assert all(m.get(122) for m in dups), "PossDup without OrigSendingTime"
        assert [m.get(11) for m in after if m.msg_type == "D" and m.get(43) != "Y"] == ["r3"]
        resends = [m for m in qf.app.sent("2")]
        assert resends and int(resends[-1].get(7)) == logon_seq
        await in_step(ours, qf)
    finally:
        await ours.close()


async def _sequence_resets(tmp: Path, qf: QuickFixPeer) -> None:
    """SequenceReset-Reset from QuickFIX moves our expected number; then a Logon with
    ResetSeqNumFlag=Y starts both engines at 1 again."""
    app = Recorder()
    ours = await start_initiator(initiator_settings(tmp, qf.port), app)
    try:
        s = ours.session
        assert await ours.wait_logged_on(WAIT)
        qf.wait_logged_on()
        await in_step(ours, qf)
        jump = qf.next_sender_seq() + 50
        qf.send(build_message("4", [(36, str(jump))]))
        await until(lambda: s.next_target_seq == jump, "our side to take the SequenceReset")
        qf.session().setNextSenderMsgSeqNum(jump)
        assert await s.send(order("after-reset")) > 0
        await until(lambda: app.of_type("8"), "a fill after the reset")
        assert app.of_type("8")[-1].header[34] == str(jump)
        await in_step(ours, qf)
    finally:
        await ours.close()

    app = Recorder()
    ours = await start_initiator(initiator_settings(tmp, qf.port, reset=True), app)
    try:
        s = ours.session
        assert await ours.wait_logged_on(WAIT)
        qf.wait_logged_on()
        await in_step(ours, qf)
        assert (s.next_sender_seq, s.next_target_seq) == (2, 2)
        assert await s.send(order("fresh")) == 2
        await until(lambda: app.of_type("8"), "a fill after the reset logon")
        await in_step(ours, qf)
        assert (s.next_sender_seq, s.next_target_seq) == (3, 3)
        logon = [m for m in qf.app.received("A")][-1]
        assert logon.get(141) == "Y" and logon.seq == 1
    finally:
        await ours.close()


# ---- 2. a QuickFIX initiator trades on our venue ------------------------------------------
def _venue():
    from live.venue.app import Venue
    from live.venue.feed import Feed
    from live.venue.spec import SymbolSpec

    spec = SymbolSpec("EURUSD", "1", 100_000, 1e-5, 1000.0, 0.0, 0.00005, 1.0, 0.0,
                      half_spread_abs=0.00004)
    n = 6
    ts = (np.int64(1_704_067_200) + np.arange(n) * 3600) * 1_000_000_000
    o = 1.1 + 0.001 * np.arange(n)
    feed = Feed(ts, o, o + 0.002, o - 0.002, o + 0.001, np.full(n, 100.0))
    return Venue({"EURUSD": spec}, {"EURUSD": feed}, cash=100_000.0)


def test_a_quickfix_initiator_trades_on_our_venue(tmp_path: Path) -> None:
    from live.fix.acceptor import start_acceptor
    from live.fix.config import AcceptorSettings
    from live.venue.app import QUOTE, TRADE

    venue = _venue()
    specs = [SessionSpec("EMPCLIENT", "EMPVENUE", target_sub=sub, qualifier=sub)
             for sub in ("QUOTE", "TRADE")]

    async def scenario() -> None:
        sessions = [SessionSettings(sender_comp_id="EMPVENUE", target_comp_id="EMPCLIENT",
                                    sender_sub_id=sub, heartbeat_interval=30,
                                    reset_on_logon=True,
                                    store_path=tmp_path / "venue" / "messages.db")
                    for sub in ("QUOTE", "TRADE")]
        acceptor = await start_acceptor(
            AcceptorSettings(host="127.0.0.1", port=0, sessions=sessions), venue)
        qf = QuickFixPeer("initiator", tmp_path / "qf", specs, port=acceptor.port,
                          reset_on_logon=True)
        try:
            qf.start()
            await until(lambda: set(venue.sessions) == {QUOTE, TRADE},
                        f"QUOTE and TRADE logons; QuickFIX says: {qf.log_tail()}")
            await until(lambda: qf.logged_on(0) and qf.logged_on(1), "QuickFIX logged on")
            await _trade(venue, qf)
        finally:
            # off the loop: QuickFIX's stop waits for our Logout reply, which the loop sends
            await asyncio.to_thread(qf.stop)
            await acceptor.close()
        assert any(m.msg_type == "5" for m in qf.app.received()), "no Logout reply from us"

    asyncio.run(scenario())


async def _trade(venue, qf: QuickFixPeer) -> None:
    app = qf.app

    def got(msg_type: str, cond: Callable[[object], bool] = lambda m: True) -> list:
        return [m for m in app.received(msg_type) if cond(m)]

    # QUOTE: subscribe to bid/ask of broker symbol 1; the snapshot comes with the first bar
    qf.send(build_message("V", [(262, "md1"), (263, "1"), (264, "1"), (265, "1"),
                                ("G", 267, [[(269, "0")], [(269, "1")]]),
                                ("G", 146, [[(55, "1")]])]), index=0)
    await until(lambda: venue.subs, "the venue to take the subscription")
    await venue.step()
    await until(lambda: got("W"), "a MarketDataSnapshotFullRefresh")
    snap = got("W")[0]
    assert snap.get(262) == "md1" and snap.get(55) == "1" and snap.get(268) == "2"
    assert snap.get(56) == "EMPCLIENT" and snap.get(50) == "QUOTE"

    # TRADE: a market buy of 0.1 lot with its stop-loss; filled at the next bar's open
    qf.send(build_message("D", [(11, "qf-1"), (55, "1"), (54, "1"),
                                (60, "20240101-00:00:00"), (38, "0.1"), (40, "1"),
                                (99, "1.05")]), index=1)
    await until(lambda: got("8", lambda m: m.get(150) == "0"), "the order's New report")
    await venue.step()
    await until(lambda: got("X"), "a MarketDataIncrementalRefresh")
    fill = (await until(lambda: got("8", lambda m: m.get(150) == "F"), "the fill"))[0]
    assert (fill.get(11), fill.get(39), fill.get(32), fill.get(14)) == ("qf-1", "2", "0.1",
                                                                       "0.1")
    assert float(fill.get(31)) == pytest.approx(1.101 + 0.00005)
    assert fill.get(50) == "TRADE"
    # a duplicate ClOrdID is rejected, never filled twice
    qf.send(build_message("D", [(11, "qf-1"), (55, "1"), (54, "1"),
                                (60, "20240101-00:00:00"), (38, "0.1"), (40, "1"),
                                (99, "1.05")]), index=1)
    rej = (await until(lambda: got("8", lambda m: m.get(150) == "8"), "the duplicate's reject"))
    assert rej[0].get(103) == "6"
    await venue.step()
    assert len(got("8", lambda m: m.get(150) == "F")) == 1
    # neither side found anything to reject in the other's messages
    no_rejects(app)
    assert not got("3") and not got("j"), [m.fields for m in got("3") + got("j")]
    # and both engines agree on the numbers of each session
    for i, sub in enumerate(("QUOTE", "TRADE")):
        ours = next(s for s in venue.sessions.values() if s.id.sender_sub_id == sub)
        await until(lambda: (qf.next_target_seq(i) == ours.next_sender_seq  # noqa: B023
                             and qf.next_sender_seq(i) == ours.next_target_seq),  # noqa: B023
                    f"{sub} sequence numbers to agree")
