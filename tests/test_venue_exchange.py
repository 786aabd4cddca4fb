"""The venue's order and account logic, without a network: fills at the next open with the
symbol's costs, stops and targets inside the bar (against a plain reference), duplicates,
cancels, netting, and the order-level faults."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from live.venue.errors import OrderError
from live.venue.exchange import (
    CANCELED,
    FILLED,
    NEW,
    PARTIAL,
    REJECTED,
    CancelReject,
    Exchange,
    NewOrder,
)
from live.venue.faults import Faults
from live.venue.spec import SymbolSpec

SPEC = SymbolSpec("EURUSD", "1", lot_size=100_000, tick_size=1e-5, step=1000.0,
                  cost_frac=0.0, cost_abs=0.00005, value_per_unit=1.0, fin_bar=0.0,
                  half_spread_abs=0.00004)


def ex(**kw) -> Exchange:
    e = Exchange({"EURUSD": SPEC}, cash=100_000.0, **kw)
    e.on_bar("EURUSD", 0, 1.1, 1.1, 1.1, 1.1)
    return e


def buy(cl: str, units: float = 10_000.0, side: int = 1, **kw) -> NewOrder:
    kw.setdefault("stop_dist", 0.01)
    return NewOrder(cl, "EURUSD", side, units, **kw)


def test_market_order_fills_at_the_next_open_with_costs():
    e = ex()
    rep = e.submit(buy("a"))
    assert rep.exec_type == NEW and rep.order.leaves == 10_000
    assert e.on_bar("EURUSD", 1, 1.2, 1.21, 1.195, 1.205) != []
    o = e.find("a")
    assert o.status == FILLED and o.avg_px == 1.2 + 0.00005
    pos = e.positions["EURUSD"]
    assert pos.units == 10_000 and pos.stop == pytest.approx(1.2 + 0.00005 - 0.01)
    assert e.equity() == pytest.approx(100_000 + 10_000 * (1.205 - 1.20005))


def test_duplicate_clordid_is_rejected_and_never_filled_twice():
    e = ex()
    assert e.submit(buy("a")).exec_type == NEW
    dup = e.submit(buy("a"))
    assert dup.exec_type == REJECTED and dup.reject_reason == 6 and "duplicate" in dup.text
    reps = e.on_bar("EURUSD", 1, 1.2, 1.2, 1.2, 1.2)
    assert len(reps) == 1 and e.positions["EURUSD"].units == 10_000
    assert e.find("a").status == FILLED  # the original, not the duplicate's reject


def test_opening_without_a_stop_is_rejected_but_closing_needs_none():
    e = ex()
    rep = e.submit(NewOrder("a", "EURUSD", 1, 1000.0))
    assert rep.exec_type == REJECTED and "stop-loss" in rep.text
    e.submit(buy("b"))
    e.on_bar("EURUSD", 1, 1.1, 1.1, 1.1, 1.1)
    assert e.submit(NewOrder("c", "EURUSD", -1, 10_000.0)).exec_type == NEW
    assert e.submit(NewOrder("d", "EURUSD", -1, 1000.0)).exec_type == REJECTED  # would go short
    assert Exchange({"EURUSD": SPEC}, 1.0, require_stop=False).submit(
        NewOrder("x", "EURUSD", 1, 1000.0)).exec_type == NEW


@pytest.mark.parametrize("bad, words", [
    (dict(ord_type="2"), "market orders"),
    (dict(stop=1.2, stop_dist=None), "wrong side"),  # a buy's stop above the market
    (dict(stop=1.09, stop_dist=None, tp=1.05), "wrong side"),
    (dict(stop=1.090001, stop_dist=None), "tick grid"),
    (dict(stop=1.09), "both"),
    (dict(stop_dist=-1.0), "positive"),
])
def test_bad_orders_are_rejected_with_a_reason(bad, words):
    rep = ex().submit(buy("a", **bad))
    assert rep.exec_type == REJECTED and words in rep.text


def test_unknown_symbol():
    rep = ex().submit(NewOrder("a", "GBPUSD", 1, 1000.0, stop_dist=0.01))
    assert rep.exec_type == REJECTED and rep.reject_reason == 1


def test_cancel_before_the_fill_and_too_late_after():
    e = ex()
    e.submit(buy("a"))
    rep = e.cancel("a-cxl", "a")
    assert rep.exec_type == CANCELED and rep.order.cl_ord_id == "a-cxl"
    assert rep.orig_cl_ord_id == "a"
    assert e.on_bar("EURUSD", 1, 1.1, 1.1, 1.1, 1.1) == []
    e.submit(buy("b"))
    e.on_bar("EURUSD", 2, 1.1, 1.1, 1.1, 1.1)
    late = e.cancel("b-cxl", "b")
    assert isinstance(late, CancelReject) and late.reason == 0 and late.status == FILLED
    unknown = e.cancel("z-cxl", "z")
    assert isinstance(unknown, CancelReject) and unknown.reason == 1
    dup = e.cancel("a", "b")
    assert isinstance(dup, CancelReject) and dup.reason == 6


def test_reversal_closes_then_opens_at_one_price():
    e = ex()
    e.submit(buy("a", 10_000.0))
    e.on_bar("EURUSD", 1, 1.1, 1.1, 1.1, 1.1)
    e.submit(buy("b", 30_000.0, side=-1))
    (rep,) = e.on_bar("EURUSD", 2, 1.2, 1.2, 1.2, 1.2)
    pos = e.positions["EURUSD"]
    assert rep.last_px == 1.2 - 0.00005 and pos.units == -20_000
    assert pos.entry_px == rep.last_px and pos.stop == pytest.approx(rep.last_px + 0.01)
    assert pos.realized == pytest.approx(10_000 * ((1.2 - 0.00005) - (1.1 + 0.00005)))


def test_orders_due_at_one_open_fill_in_arrival_order_and_partial_close_keeps_the_stop():
    e = ex()
    e.submit(buy("a", 10_000.0, stop_dist=0.02))
    e.submit(NewOrder("b", "EURUSD", -1, 4000.0))  # reduces what "a" will open
    reps = e.on_bar("EURUSD", 1, 1.1, 1.1, 1.1, 1.1)
    assert [r.order.cl_ord_id for r in reps] == ["a", "b"]
    pos = e.positions["EURUSD"]
    assert pos.units == 6000 and pos.parent == "a"
    assert pos.stop == pytest.approx(1.1 + 0.00005 - 0.02)


def reference_exit(side, stop, tp, o, h, lo):
    """The design's rule, plainly: gap beyond the stop -> open; stop inside -> stop (first);
    then the same for the target."""
    if side > 0:
        if o <= stop:
            return o, "stop"
        if lo <= stop:
            return stop, "stop"
        if tp is not None and o >= tp:
            return o, "tp"
        if tp is not None and h >= tp:
            return tp, "tp"
        return None
    if o >= stop:
        return o, "stop"
    if h >= stop:
        return stop, "stop"
    if tp is not None and o <= tp:
        return o, "tp"
    if tp is not None and lo <= tp:
        return tp, "tp"
    return None


@settings(max_examples=200, deadline=None)
@given(side=st.sampled_from([1, -1]), stop_d=st.floats(0.001, 0.05), tp_d=st.none() |
       st.floats(0.001, 0.05), moves=st.lists(st.tuples(st.floats(-0.06, 0.06),
                                                        st.floats(0, 0.04), st.floats(0, 0.04),
                                                        st.floats(-0.03, 0.03)),
                                              min_size=1, max_size=6))
def test_stops_and_targets_follow_the_reference(side, stop_d, tp_d, moves):
    e = ex()
    e.submit(buy("a", side=side, stop_dist=stop_d, tp_dist=tp_d))
    px = SPEC.fill_price(1.1, side)
    stop, tp = px - side * stop_d, (None if tp_d is None else px + side * tp_d)
    expected = None
    for t, (go, up, down, gc) in enumerate(moves, start=1):
        o = 1.1 + go if t > 1 else 1.1
        h, lo = o + up, o - down
        c = min(h, max(lo, o + gc))
        reps = e.on_bar("EURUSD", t, o, h, lo, c)
        exit_ = reference_exit(side, stop, tp, o, h, lo)
        prot = [r for r in reps if r.protective]
        if exit_ is not None:
            raw, kind = exit_
            assert len(prot) == 1 and prot[0].last_px == SPEC.fill_price(raw, -side)
            assert prot[0].order.cl_ord_id == ("a-SL" if kind == "stop" else "a-TP")
            expected = kind
            break
        assert prot == []
    if expected is None:
        assert e.positions["EURUSD"].units == side * 10_000
    else:
        assert e.positions["EURUSD"].units == 0.0


def test_trailing_stop_moves_with_the_high():
    e = ex()
    e.submit(buy("a", stop_dist=0.01, trailing=True))
    e.on_bar("EURUSD", 1, 1.1, 1.13, 1.095, 1.12)
    stop = e.positions["EURUSD"].stop
    assert stop == 1.13 - 0.01  # the kernel's arithmetic: high - distance
    (rep,) = e.on_bar("EURUSD", 2, 1.125, 1.126, 1.11, 1.115)
    assert rep.protective and rep.last_px == SPEC.fill_price(stop, -1)


def test_faults_reject_delay_and_partial():
    f = Faults()
    e = ex(faults=f)
    f.reject_next(1)
    assert "fault" in e.submit(buy("a")).text
    assert e.submit(buy("b")).exec_type == NEW  # only the next one
    f.delay_fills(2)
    e.submit(buy("c"))
    f.delay_fills(0)
    assert [r.order.cl_ord_id for r in e.on_bar("EURUSD", 1, 1.1, 1.1, 1.1, 1.1)] == ["b"]
    assert e.on_bar("EURUSD", 2, 1.1, 1.1, 1.1, 1.1) == []
    assert [r.order.cl_ord_id for r in e.on_bar("EURUSD", 3, 1.1, 1.1, 1.1, 1.1)] == ["c"]
    f.partial_fills(0.3, orders=1)
    e.submit(buy("d", 10_000.0))
    (r1,) = e.on_bar("EURUSD", 4, 1.1, 1.1, 1.1, 1.1)
    assert r1.order.status == PARTIAL and r1.last_qty == 3000 and r1.order.leaves == 7000
    (r2,) = e.on_bar("EURUSD", 5, 1.1, 1.1, 1.1, 1.1)
    assert r2.order.status == FILLED and r2.last_qty == 7000
    assert f.partial_fraction is None  # used up
    with pytest.raises(ValueError, match="fraction"):
        f.partial_fills(1.5)


def test_financing_is_charged_at_each_close():
    spec = SymbolSpec("X", "9", 1.0, 0.01, 1.0, 0.0, 0.0, 1.0, fin_bar=0.001)
    e = Exchange({"X": spec}, cash=1000.0)
    e.on_bar("X", 0, 10.0, 10.0, 10.0, 10.0)
    e.submit(NewOrder("a", "X", 1, 10.0, stop_dist=1.0))
    e.on_bar("X", 1, 10.0, 10.0, 10.0, 10.0)
    assert e.cash == pytest.approx(1000.0 - 100.0 - 0.1)
    e.submit(NewOrder("b", "X", -1, 10.0))
    (_rep,) = e.on_bar("X", 2, 10.0, 10.0, 10.0, 10.0)
    assert e.positions["X"].realized == pytest.approx(-0.1)


def test_quantities_convert_lots_to_whole_steps():
    assert SPEC.units("0.07") == 7000.0 == 7 * 1000.0
    assert SPEC.lots(7000.0) == "0.07"
    for bad in ("0.0005", "-1", "x", "nan", "0"):
        with pytest.raises(OrderError):
            SPEC.units(bad)
    bid, ask = SPEC.quote(1.10003)
    assert bid <= 1.10003 - 0.00004 + 1e-12 and ask >= 1.10003 + 0.00004 - 1e-12
    assert SPEC.on_tick(bid) and SPEC.on_tick(ask)
