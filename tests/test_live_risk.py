"""Risk limits: every limit blocks an opening order just past its boundary and allows it just
inside (hypothesis over equities, prices and quantities); reducing orders always pass; the
breaker trips on drawdown, VaR and a reject storm and reports the hard stop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from live.risk import Account, Breaker, OrderIntent, RiskError, RiskLimits, pre_trade

SYM = "EURUSD"
OVER, UNDER = 1 + 1e-6, 1 - 1e-6

equities = st.floats(1_000, 1e7)
prices = st.floats(0.5, 200)
vpus = st.floats(0.01, 2)


def _account(equity: float, price: float, vpu: float, **kw) -> Account:
    base = dict(equity=equity, day_start_equity=equity, peak_equity=equity, trades_today=0,
                positions={}, prices={SYM: price}, value_per_unit={SYM: vpu})
    return Account(**{**base, **kw})


def _buy(qty: float, price: float, stop: float | None = None, opens: bool = True,
         symbol: str = SYM) -> OrderIntent:
    return OrderIntent(symbol=symbol, side="buy", qty=qty, price=price,
                       stop=price * 0.99 if stop is None else stop, opens=opens)


def _only(violations: list[str], limit: str) -> str:
    assert len(violations) == 1, violations
    assert violations[0].startswith(f"{limit}:"), violations
    return violations[0]


def test_defaults_are_the_designs():
    lim = RiskLimits()
    assert (lim.max_position_frac, lim.max_leverage, lim.max_trades_per_day, lim.max_daily_loss,
            lim.breaker_drawdown, lim.hard_stop_drawdown, lim.var95_limit, lim.reject_storm,
            lim.reject_window_s, lim.allowed_symbols) == (0.25, 10, 50, 0.02, 0.08, 0.10, 0.05,
                                                          5, 60, [])
    with pytest.raises(ValidationError, match="hard_stop_drawdown"):
        RiskLimits(breaker_drawdown=0.2, hard_stop_drawdown=0.1)
    with pytest.raises(ValidationError, match="extra"):
        RiskLimits(max_positon_frac=0.3)


@settings(max_examples=200, deadline=None)
@given(equity=equities, price=prices, vpu=vpus, frac=st.floats(0.01, 0.9),
       lev=st.floats(1.0, 20.0))
def test_position_limit_at_its_boundary(equity, price, vpu, frac, lev):
    """The position limit is on margin: notional / max_leverage <= frac x equity."""
    lim = RiskLimits(max_position_frac=frac, max_leverage=lev)
    acct = _account(equity, price, vpu)
    at_limit = frac * lev * equity / (price * vpu)
    msg = _only(pre_trade(_buy(at_limit * OVER, price), acct, lim), "max_position_frac")
    assert SYM in msg and f"{frac * 100:.6g} %" in msg
    assert pre_trade(_buy(at_limit * UNDER, price), acct, lim) == []


@settings(max_examples=200, deadline=None)
@given(equity=equities, price=prices, vpu=vpus, lev=st.floats(0.5, 20),
       other_share=st.floats(0.0, 0.9), short=st.booleans())
def test_leverage_limit_at_its_boundary(equity, price, vpu, lev, other_share, short):
    lim = RiskLimits(max_position_frac=1e6, max_leverage=lev)
    other_notional = other_share * lev * equity
    other_units = other_notional / 1.25 * (-1 if short else 1)  # GBPUSD at 1.25, vpu 1
    acct = _account(equity, price, vpu, positions={"GBPUSD": other_units},
                    prices={SYM: price, "GBPUSD": 1.25},
                    value_per_unit={SYM: vpu, "GBPUSD": 1.0})
    room = (lev * equity - other_notional) / (price * vpu)
    msg = _only(pre_trade(_buy(room * OVER, price), acct, lim), "max_leverage")
    assert f"> {lev:g}×" in msg
    assert pre_trade(_buy(room * UNDER, price), acct, lim) == []


@given(n=st.integers(0, 500))
def test_trades_per_day_at_its_boundary(n):
    lim = RiskLimits(max_trades_per_day=n)
    acct = _account(100_000, 1.1, 1.0, trades_today=n)
    msg = _only(pre_trade(_buy(1000, 1.1), acct, lim), "max_trades_per_day")
    assert f"{n} trades today, limit {n}" in msg
    if n:
        assert pre_trade(_buy(1000, 1.1), _account(100_000, 1.1, 1.0, trades_today=n - 1),
                         lim) == []


@settings(max_examples=200, deadline=None)
@given(start=equities, loss=st.floats(0.001, 0.5))
def test_daily_loss_at_its_boundary(start, loss):
    lim = RiskLimits(max_daily_loss=loss, breaker_drawdown=0.9, hard_stop_drawdown=0.95)
    over = _account(start * (1 - loss * OVER), 1.1, 1.0, day_start_equity=start,
                    peak_equity=start)
    msg = _only(pre_trade(_buy(1, 1.1), over, lim), "max_daily_loss")
    assert f"{start:,.2f}" in msg
    under = _account(start * (1 - loss * UNDER), 1.1, 1.0, day_start_equity=start,
                     peak_equity=start)
    assert pre_trade(_buy(1, 1.1), under, lim) == []


@settings(max_examples=200, deadline=None)
@given(held=st.floats(1, 1e7), share=st.floats(0.0, 1.0), price=prices, long=st.booleans())
def test_a_reducing_order_is_never_blocked_but_by_symbol(held, share, price, long):
    units = held if long else -held
    wrecked = Account(equity=-5.0, day_start_equity=1e6, peak_equity=1e7, trades_today=10_000,
                      positions={SYM: units}, prices={SYM: price}, value_per_unit={SYM: 1.0})
    qty = max(held * share, 1e-9)
    intent = OrderIntent(symbol=SYM, side="sell" if long else "buy", qty=qty, price=price,
                         stop=None, opens=False)
    assert pre_trade(intent, wrecked, RiskLimits(max_trades_per_day=0)) == []
    msg = _only(pre_trade(intent, wrecked, RiskLimits(allowed_symbols=["GBPUSD"])),
                "allowed_symbols")
    assert "EURUSD is not an allowed symbol (allowed: GBPUSD)" in msg


def test_an_order_marked_reducing_that_adds_or_reverses_is_blocked():
    acct = _account(100_000, 1.1, 1.0, positions={SYM: 1000})
    adds = OrderIntent(symbol=SYM, side="buy", qty=10, price=1.1, stop=None, opens=False)
    flips = OrderIntent(symbol=SYM, side="sell", qty=1500, price=1.1, stop=None, opens=False)
    assert "from 1000 to 1010 units" in _only(pre_trade(adds, acct, RiskLimits()), "opens")
    assert "from 1000 to -500 units" in _only(pre_trade(flips, acct, RiskLimits()), "opens")


def test_an_opening_order_needs_a_stop_on_the_right_side():
    acct = _account(100_000, 1.1, 1.0)
    missing = OrderIntent(symbol=SYM, side="buy", qty=10, price=1.1, stop=None, opens=True)
    assert "carries no stop-loss" in _only(pre_trade(missing, acct, RiskLimits()), "stop")
    wrong = OrderIntent(symbol=SYM, side="sell", qty=10, price=1.1, stop=1.0, opens=True)
    assert "must lie above the price 1.1" in _only(pre_trade(wrong, acct, RiskLimits()), "stop")
    good = OrderIntent(symbol=SYM, side="sell", qty=10, price=1.1, stop=1.2, opens=True)
    assert pre_trade(good, acct, RiskLimits()) == []


def test_an_unknown_symbol_is_blocked():
    acct = _account(100_000, 1.1, 1.0)
    msg = pre_trade(_buy(10, 50.0, symbol="XAUUSD"), acct, RiskLimits())
    assert msg[0] == "allowed_symbols: XAUUSD is not an allowed symbol (allowed: EURUSD)"
    assert pre_trade(_buy(10, 1.1), acct, RiskLimits(allowed_symbols=[SYM])) == []


def test_bad_intents_are_risk_errors():
    for kw, what in [({"side": "long"}, "side"), ({"qty": 0.0}, "qty"),
                     ({"qty": float("nan")}, "qty"), ({"price": -1.0}, "price")]:
        args = dict(symbol=SYM, side="buy", qty=1.0, price=1.1, stop=1.0, opens=True) | kw
        with pytest.raises(RiskError, match=what):
            OrderIntent(**args)


# ---- breaker ---------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(peak=equities)
def test_breaker_trips_at_8_percent_drawdown_and_hard_stops_at_10(peak):
    lim = RiskLimits()
    b = Breaker(lim)

    def at(dd: float) -> Account:
        return _account(peak * (1 - dd), 1.1, 1.0, peak_equity=peak)

    assert b.check(at(0.08 * UNDER), None, 0.0) is None
    reason = b.check(at(0.08), None, 0.0)
    assert reason.startswith("breaker_drawdown: drawdown 8") and "≥ 8 %" in reason
    assert f"peak {peak:,.2f}" in reason and not b.hard
    assert b.check(at(0.10 * UNDER), None, 0.0).startswith("breaker_drawdown")
    hard = b.check(at(0.10), None, 0.0)
    assert hard.startswith("hard stop: drawdown 10") and "hard_stop_drawdown 10 %" in hard
    assert b.hard


@settings(max_examples=200, deadline=None)
@given(equity=equities, limit=st.floats(0.005, 0.5))
def test_breaker_trips_on_a_var_breach(equity, limit):
    b = Breaker(RiskLimits(var95_limit=limit))
    acct = _account(equity, 1.1, 1.0)
    assert b.check(acct, limit * equity * UNDER, 0.0) is None
    reason = b.check(acct, limit * equity * OVER, 0.0)
    assert reason.startswith("var95_limit: VaR95") and f"equity {equity:,.2f}" in reason
    assert b.check(acct, float("nan"), 0.0) is None  # not known yet
    assert "max_abs_correlation" in b.check(acct, None, 0.0, correlation=-0.71)
    assert b.check(acct, None, 0.0, correlation=0.69) is None


@given(n=st.integers(1, 20), window=st.floats(1, 600), t0=st.floats(0, 1e6))
def test_reject_storm_within_the_window_only(n, window, t0):
    lim = RiskLimits(reject_storm=n, reject_window_s=window)
    b = Breaker(lim)
    times = [t0 + window * i / n for i in range(n)]  # n rejects inside one window
    results = [b.on_reject(t) for t in times]
    assert all(r is None for r in results[:-1])
    assert results[-1].startswith(f"reject_storm: {n} order rejects within")
    assert f"limit {n} within {window:g} s" in results[-1]
    spread = Breaker(lim)  # the same n spread over more than the window never trips
    gap = window * 1.01 / max(n - 1, 1) + (window if n == 1 else 0)
    if n > 1:
        assert all(spread.on_reject(t0 + gap * i) is None for i in range(3 * n))


def test_reset_forgets_rejects():
    b = Breaker(RiskLimits(reject_storm=2))
    b.on_reject(0.0)
    b.reset()
    assert b.on_reject(1.0) is None
    assert b.on_reject(2.0) is not None
