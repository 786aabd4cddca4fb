"""The venue application over FIX messages (QUOTE and TRADE routing, reports, market data,
faults, config errors). The engine's Session is not merged yet: a recording session that
implements the shared ``send`` API stands in; the end-to-end TCP tests come with the engine."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest

from live.fix.message import Message
from live.venue.app import QUOTE, TRADE, Venue
from live.venue.config import ScheduledFault, load_venue_config, parse_venue_config
from live.venue.errors import VenueConfigError
from live.venue.feed import Feed
from live.venue.spec import SymbolSpec

SPEC = SymbolSpec("EURUSD", "1", 100_000, 1e-5, 1000.0, 0.0, 0.00005, 1.0, 0.0,
                  half_spread_abs=0.00004)
SPX = SymbolSpec("SP500", "2", 1, 0.01, 0.1, 0.0001, 0.0, 1.0, 0.0, half_spread_frac=0.00005)


@dataclass
class SID:
    sender_sub_id: str


@dataclass
class Recorder:
    """Stands in for a logged-on ``live.fix.session.Session`` (send persists nothing here)."""

    id: SID
    logged_on: bool = True
    sent: list[Message] = field(default_factory=list)
    dropped: int = 0

    async def send(self, msg: Message) -> int:
        self.sent.append(msg)
        return len(self.sent)

    async def drop(self) -> None:
        self.dropped += 1
        self.logged_on = False


def feed(n: int, start: float, hour0: int = 0) -> Feed:
    ts = (np.int64(1_704_067_200) + (hour0 + np.arange(n)) * 3600) * 1_000_000_000
    o = start + 0.001 * np.arange(n)
    return Feed(ts, o, o + 0.002, o - 0.002, o + 0.001, np.full(n, 100.0))


def venue(**kw) -> tuple[Venue, Recorder, Recorder]:
    v = Venue({"EURUSD": SPEC, "SP500": SPX},
              {"EURUSD": feed(10, 1.1), "SP500": feed(5, 4000.0, hour0=2)}, cash=100_000.0, **kw)
    q, t = Recorder(SID("QUOTE")), Recorder(SID("TRADE"))
    asyncio.run(v.on_logon(q))
    asyncio.run(v.on_logon(t))
    return v, q, t


def send(v: Venue, s: Recorder, msg: Message) -> list[Message]:
    n = len(s.sent)
    asyncio.run(v.on_message(s, msg))
    return s.sent[n:]


def order(cl: str, qty: str = "0.1", side: str = "1", **tags: str) -> Message:
    m = Message("D", [(11, cl), (55, "1"), (54, side), (60, "20240101-00:00:00"), (38, qty),
                      (40, "1")], header={34: "5"})
    for k, val in tags.items():
        m.append(int(k.lstrip("t")), val)
    return m


def test_sessions_are_told_apart_by_subid_and_wrong_session_is_rejected():
    v, q, t = venue()
    assert v.sessions == {QUOTE: q, TRADE: t}
    (rej,) = send(v, q, order("a", t9001="0.01"))
    assert rej.msg_type == "j" and rej.get(380) == "3" and rej.get(45) == "5"
    (rej,) = send(v, t, Message("V", [(262, "m"), (263, "1")]))
    assert rej.msg_type == "j"
    (rej,) = send(v, t, Message("R", []))
    assert rej.msg_type == "j" and "not supported" in rej.get(58)


def test_order_new_fill_status_positions_and_mass_status():
    v, _, t = venue()
    asyncio.run(v.step())
    (new,) = send(v, t, order("a", t9001="0.01", t9002="0.02"))
    assert (new.get(150), new.get(39), new.get(38), new.get(151)) == ("0", "0", "0.1", "0.1")
    (ms,) = send(v, t, Message("AF", [(584, "m1"), (585, "7")]))
    assert ms.get(150) == "I" and ms.get(11) == "a" and ms.get(912) == "Y" and ms.get(911) == "1"
    asyncio.run(v.step())  # EURUSD bar 1 opens at 1.101
    fill = t.sent[-1]
    assert (fill.get(150), fill.get(39), fill.get(32), fill.get(14)) == ("F", "2", "0.1", "0.1")
    assert float(fill.get(31)) == 1.101 + 0.00005 == float(fill.get(6))
    (st,) = send(v, t, Message("H", [(11, "a"), (55, "1"), (54, "1"), (790, "s1")]))
    assert st.get(150) == "I" and st.get(39) == "2" and st.get(790) == "s1"
    ack, ap = send(v, t, Message("AN", [(710, "p1"), (724, "0"), (1, "1"), (581, "1")]))
    assert ack.msg_type == "AO" and ack.get(727) == "1" and ack.get(728) == "0"
    assert ap.msg_type == "AP" and ap.get(55) == "1" and ap.get(704) == "0.1"
    assert ap.get(705) == "0"
    (none,) = send(v, t, Message("AF", [(584, "m2"), (585, "7")]))
    assert none.get(911) == "0" and none.get(58) == "no open orders"


def test_duplicate_and_possresend_are_rejected_never_filled_twice():
    v, _, t = venue()
    send(v, t, order("a", t9001="0.01"))
    resend = order("a", t9001="0.01")
    resend.header[97] = "Y"
    (rej,) = send(v, t, resend)
    assert rej.get(150) == "8" and rej.get(103) == "6" and "duplicate" in rej.get(58)
    (rej,) = send(v, t, order("a", qty="bogus"))
    assert rej.get(103) == "6"
    asyncio.run(v.step())
    fills = [m for m in t.sent if m.get(150) == "F"]
    assert len(fills) == 1


def test_bad_orders_get_one_line_reasons():
    v, _, t = venue()
    (r,) = send(v, t, order("a"))
    assert r.get(39) == "8" and "stop-loss" in r.get(58)
    (r,) = send(v, t, Message("D", [(11, "b"), (55, "77"), (54, "1"), (38, "1"), (40, "1")]))
    assert r.get(103) == "1" and "unknown Symbol" in r.get(58)
    (r,) = send(v, t, order("c", qty="0.0001", t9001="0.01"))
    assert "volume step" in r.get(58)
    (r,) = send(v, t, order("d", t9001="0.01", t1="other"))
    assert "Account" in r.get(58)


def test_cancel_and_cancel_reject():
    v, _, t = venue()
    send(v, t, order("a", t9001="0.01"))
    (c,) = send(v, t, Message("F", [(41, "a"), (11, "a2"), (55, "1"), (54, "1")]))
    assert c.get(150) == "4" and c.get(41) == "a" and c.get(11) == "a2"
    (r,) = send(v, t, Message("F", [(41, "zz"), (11, "z2"), (55, "1"), (54, "1")]))
    assert r.msg_type == "9" and r.get(102) == "1"


def test_market_data_snapshot_refreshes_and_rejects():
    v, q, _ = venue()
    assert send(v, q, Message("V", [(262, "m1"), (263, "1"), (264, "1"), (267, "2"),
                                   (269, "0"), (269, "1"), (146, "1"), (55, "1")])) == []
    asyncio.run(v.step())  # first bar: the snapshot, with bid and offer around the close
    (w,) = q.sent
    assert w.msg_type == "W" and w.get_all(269) == ["0", "1"]
    bid, ask = (float(x) for x in w.get_all(270))
    assert bid < 1.101 < ask and ask - bid >= 0.00008 - 1e-12
    asyncio.run(v.step())
    x = q.sent[-1]
    assert x.msg_type == "X" and x.get(268) == "2" and x.get_all(279) == ["0", "0"]
    (y,) = send(v, q, Message("V", [(262, "m2"), (263, "0"), (146, "1"), (55, "2")]))
    assert y.msg_type == "Y" and y.get(281) is None and "no bar yet" in y.get(58)  # SP500
    (w1,) = send(v, q, Message("V", [(262, "m4"), (263, "0"), (146, "1"), (55, "1")]))
    assert w1.msg_type == "W" and "m4" not in v.subs  # snapshot only
    (y,) = send(v, q, Message("V", [(262, "m3"), (263, "1"), (146, "1"), (55, "99")]))
    assert y.msg_type == "Y" and y.get(281) == "0"
    (y,) = send(v, q, Message("V", [(262, "m1"), (263, "1"), (146, "1"), (55, "1")]))
    assert y.get(281) == "1"
    assert send(v, q, Message("V", [(262, "m1"), (263, "2")])) == []
    n = len(q.sent)
    asyncio.run(v.step())
    assert len(q.sent) == n  # unsubscribed


def test_full_subscription_sends_ohlc_volume_and_stale_fault_skips_refreshes():
    v, q, _ = venue()
    asyncio.run(v.step())
    (w,) = send(v, q, Message("V", [(262, "m"), (263, "1"), (146, "1"), (55, "1")]))
    assert w.get_all(269) == ["0", "1", "4", "7", "8", "5", "B"] and w.get(271) == "100"
    v.faults.stale_quotes(2)
    n = len(q.sent)
    asyncio.run(v.step())
    asyncio.run(v.step())
    assert len(q.sent) == n
    asyncio.run(v.step())
    assert q.sent[-1].msg_type == "X"


def test_two_calendars_step_on_the_union_of_timestamps():
    v, _, _ = venue()
    seen = [sorted(b.symbol for b in asyncio.run(v.step())) for _ in range(11)]
    assert seen[0] == ["EURUSD"] and seen[2] == ["EURUSD", "SP500"]
    assert seen[-1] == []  # history ends: EURUSD has 10 bars


def test_scheduled_faults_drop_the_link_and_reject():
    sched = [ScheduledFault(at_bar=1, action="drop_link", session="trade"),
             ScheduledFault(at_bar=1, action="reject_next", n=1)]
    v, _, t = venue(schedule=sched)
    asyncio.run(v.step())
    assert t.dropped == 0
    asyncio.run(v.step())
    assert t.dropped == 1 and v.dropped == ["trade"] and v.faults.rejects == 1
    asyncio.run(v.on_logout(t))
    assert TRADE not in v.sessions


def test_config_errors_are_one_line_and_name_the_key(tmp_path):
    good = load_venue_config("configs/venue.yaml")
    assert good.symbols["EURUSD"].id == 1 and good.trade_sub_id == "TRADE"
    with pytest.raises(VenueConfigError, match=r"symbols: broker ids \[1\]"):
        parse_venue_config({"symbols": {"A": {"id": 1, "lot_size": 1},
                                        "B": {"id": 1, "lot_size": 1}}})
    with pytest.raises(VenueConfigError, match=r"symbols\.A\.lot_size"):
        parse_venue_config({"symbols": {"A": {"id": 1, "lot_size": -1}}})
    with pytest.raises(VenueConfigError, match="localhost only"):
        parse_venue_config({"host": "0.0.0.0", "symbols": {"A": {"id": 1, "lot_size": 1}}})
    with pytest.raises(VenueConfigError, match="EMP_NO_SUCH_VAR"):
        parse_venue_config({"symbols": {"A": {"id": 1, "lot_size": 1}},
                            "comp_id": "${EMP_NO_SUCH_VAR}"})
    p = tmp_path / "v.yaml"
    p.write_text("symbols: [\n")
    with pytest.raises(VenueConfigError, match="not valid YAML"):
        load_venue_config(p)
    with pytest.raises(VenueConfigError, match="cannot read"):
        load_venue_config(tmp_path / "missing.yaml")
