"""The executor's Prometheus metrics, all prefixed ``emp_``, in a registry of their own.

A private ``CollectorRegistry`` (never prometheus-client's global one) lets two executors, or
a test and an executor, live in one process without "Duplicated timeseries" errors. Label
values are checked against what the executor was configured with (symbols, FIX sessions), so
a typo fails loudly instead of growing a new series, and cardinality stays bounded.

Units follow Prometheus conventions: ratios are 0..1 (``_ratio``), times are seconds,
money is the account currency. ``configs/ops/alerts.yml`` and
``configs/ops/grafana-dashboard.json`` use exactly these names (a test cross-checks them).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

from live.ops.errors import OpsConfigError

SESSIONS: tuple[str, ...] = ("QUOTE", "TRADE")
# the volatility engine's regimes (DESIGN.md: calm < 8 % <= normal <= 18 % < storm)
REGIMES: dict[str, int] = {"calm": 0, "normal": 1, "storm": 2}
SIDES: tuple[str, ...] = ("buy", "sell")
# bar close -> order on the wire: the target is p99 <= 2 ms, the alert fires at 100 ms, so the
# buckets resolve 0.1 ms .. 100 ms and say how far past it a slow bar went
LATENCY_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.25, 1.0)
# the classic text format, which every Prometheus parses and which ``generate_latest`` writes
# for these (legacy-valid) names; prometheus-client >= 0.22 labels it version=1.0.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def _finite(what: str, value: float) -> float:
    """A NaN or infinite gauge silences every alert comparing it: refuse it here."""
    v = float(value)
    if not math.isfinite(v):
        raise OpsConfigError(f"metrics: {what} must be a finite number, got {value!r}")
    return v


class Metrics:
    """Every metric of one executor; small typed methods update them.

    ``symbols`` and ``sessions`` fix the label values; per-symbol and per-session children
    are created up front (cheap updates on the bar path, and a "FIX session down" or "data
    stale" alert can fire before the first logon or quote). ``clock`` (monotonic seconds)
    is what data staleness is measured with; tests pass their own.
    """

    def __init__(self, symbols: Sequence[str], *, sessions: Sequence[str] = SESSIONS,
                 drawdown_limit: float = 0.08, stale_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, process: bool = True) -> None:
        self.symbols = self._names("symbol", symbols)
        self.sessions = self._names("session", sessions)
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        sym, ses = ("symbol",), ("session",)

        self._equity = Gauge("emp_equity", "Account equity the venue reports (portfolio "
                             "value), account currency", registry=r)
        self._sizing_equity = Gauge("emp_sizing_equity", "Equity the strategy sizes with (the "
                                    "kernel's cash + marked position), account currency",
                                    registry=r)
        self._divergence = Gauge("emp_equity_divergence_ratio", "(sizing equity - venue "
                                 "equity) / venue equity at the last collateral report",
                                 registry=r)
        self._drawdown = Gauge("emp_drawdown_ratio", "Drawdown from the equity high-water "
                               "mark, 0..1", registry=r)
        self._max_drawdown = Gauge("emp_max_drawdown_ratio", "Largest drawdown seen, 0..1",
                                   registry=r)
        self._drawdown_limit = Gauge("emp_drawdown_limit_ratio", "The circuit breaker's "
                                     "drawdown limit from config, 0..1", registry=r)
        self._position = Gauge("emp_position_units", "Signed position in units (short < 0)",
                               sym, registry=r)
        self._orders = Counter("emp_orders", "Orders sent to the venue", sym, registry=r)
        self._succeeded = Counter("emp_orders_succeeded", "Orders the venue accepted",
                                  sym, registry=r)
        self._rejected = Counter("emp_orders_rejected", "Orders the venue rejected",
                                 sym, registry=r)
        self._blocked = Counter("emp_orders_blocked", "Orders a pre-trade risk check "
                                "stopped before they left", ("symbol", "check"), registry=r)
        self._fills = Counter("emp_fills", "Fills (partial or full) received",
                              ("symbol", "side"), registry=r)
        self._filled_units = Counter("emp_filled_units", "Units filled", ("symbol", "side"),
                                     registry=r)
        self._signal = Histogram("emp_signal_duration_seconds", "Bar close to target "
                                 "position decided, every bar", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self._bar_to_order = Histogram("emp_bar_to_order_latency_seconds", "Bar close to "
                                       "NewOrderSingle on the wire", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self._session_up = Gauge("emp_fix_session_up", "FIX session state: 1 logged on, "
                                 "0 down", ses, registry=r)
        self._reconnects = Counter("emp_fix_reconnects", "FIX reconnects", ses, registry=r)
        self._breaker = Gauge("emp_breaker_open", "Circuit breaker: 1 open (halted), "
                              "0 closed", registry=r)
        self._trips = Counter("emp_breaker_trips", "Circuit breaker trips by reason",
                              ("reason",), registry=r)
        self._mismatch = Gauge("emp_reconciliation_mismatch", "Last reconciliation with the "
                               "venue: 1 mismatch (trading halted), 0 clean or not yet run",
                               registry=r)
        self._champion = Gauge("emp_champion_info", "The champion trading now (value 1, "
                               "the bundle's sha in the label)", ("sha",), registry=r)
        self._champion_at = Gauge("emp_champion_loaded_timestamp_seconds", "Unix time the "
                                  "current champion was swapped in (0: none)", registry=r)
        self._staleness = Gauge("emp_data_staleness_seconds", "Seconds since the last "
                                "quote (since start before the first one)", sym, registry=r)
        self._stale_limit = Gauge("emp_data_staleness_limit_seconds", "No new entries "
                                  "after this many seconds without a quote (config)",
                                  registry=r)
        self._market_open = Gauge("emp_market_open", "1 while the symbol's market is "
                                  "open (staleness alerts only then)", sym, registry=r)
        self._sigma = Gauge("emp_sigma_ann", "Blended annualised volatility estimate, "
                            "0..1 = 0..100 %", sym, registry=r)
        self._sigma_garch = Gauge("emp_sigma_garch_ann", "GARCH annualised volatility",
                                  sym, registry=r)
        self._sigma_rv = Gauge("emp_sigma_rv_ann", "Realised annualised volatility",
                               sym, registry=r)
        self._regime = Gauge("emp_regime", "Volatility regime: 0 calm, 1 normal, 2 storm",
                             sym, registry=r)
        self._var95 = Gauge("emp_var95_1d", "VaR(95 %, 1 day) of the position, account "
                            "currency", sym, registry=r)
        self._sizing = Gauge("emp_sizing_multiplier", "Volatility sizing multiplier, "
                             "0.3..1.0", sym, registry=r)
        self._ginn_fallback = Gauge("emp_ginn_fallback", "1 while the champion's GINN model is "
                                    "refused (absent, altered, stale) and its ginn row is "
                                    "GARCH(1,1)'s", sym, registry=r)
        self._quality = Gauge("emp_vol_quality", "Volatility estimate quality, 0..1 "
                              "(< 0.5: bars missing, sigma frozen)", sym, registry=r)
        if process:
            ProcessCollector(registry=r)  # process_resident_memory_bytes etc.

        self._drawdown_limit.set(_finite("drawdown_limit", drawdown_limit))
        self._stale_limit.set(_finite("stale_after_s", stale_after_s))
        self._max_dd = 0.0
        self._pos = {s: self._position.labels(s) for s in self.symbols}
        self._ord = {s: self._orders.labels(s) for s in self.symbols}
        self._ok = {s: self._succeeded.labels(s) for s in self.symbols}
        self._rej = {s: self._rejected.labels(s) for s in self.symbols}
        self._up = {s: self._session_up.labels(s) for s in self.sessions}
        self._rec = {s: self._reconnects.labels(s) for s in self.sessions}
        for s in self.sessions:
            self._up[s].set(0)
        started = clock()
        self._last_quote = dict.fromkeys(self.symbols, started)
        for s in self.symbols:
            self._staleness.labels(s).set_function(self._stale_fn(s))
            self._ginn_fallback.labels(s).set(0)
            self._market_open.labels(s).set(1)

    @staticmethod
    def _names(what: str, names: Iterable[str]) -> tuple[str, ...]:
        out = tuple(names)
        if not out or any(not isinstance(n, str) or not n or n != n.strip() for n in out):
            raise OpsConfigError(f"metrics: {what}s must be non-empty strings, got {out!r}")
        if len(set(out)) != len(out):
            raise OpsConfigError(f"metrics: duplicate {what} in {out!r}")
        return out

    def _stale_fn(self, symbol: str) -> Callable[[], float]:
        return lambda: max(0.0, self._clock() - self._last_quote[symbol])

    def _sym(self, symbol: str) -> str:
        if symbol not in self._last_quote:
            raise OpsConfigError(f"metrics: unknown symbol {symbol!r} "
                                 f"(configured: {', '.join(self.symbols)})")
        return symbol

    def _session(self, session: str) -> str:
        if session not in self._up:
            raise OpsConfigError(f"metrics: unknown FIX session {session!r} "
                                 f"(configured: {', '.join(self.sessions)})")
        return session

    @staticmethod
    def _reason(what: str, value: str) -> str:
        if not isinstance(value, str) or not _REASON.match(value):
            raise OpsConfigError(f"metrics: {what} must match {_REASON.pattern}, got {value!r}")
        return value

    # -- account -----------------------------------------------------------------------
    def set_equity(self, equity: float) -> None:
        """The account equity the venue reports."""
        self._equity.set(_finite("equity", equity))

    def set_sizing_equity(self, equity: float, divergence: float | None = None) -> None:
        """The equity the kernel sizes with, and its divergence from the venue's."""
        self._sizing_equity.set(_finite("sizing equity", equity))
        if divergence is not None:
            self._divergence.set(_finite("divergence", divergence))

    def set_drawdown(self, drawdown: float, max_drawdown: float | None = None) -> None:
        """Current drawdown (0..1); the max is kept here unless the executor passes its
        persisted one (which survives restarts)."""
        dd = _finite("drawdown", drawdown)
        if not 0.0 <= dd <= 1.0:
            raise OpsConfigError(f"metrics: drawdown must lie in [0, 1], got {drawdown!r}")
        self._max_dd = (max(self._max_dd, dd) if max_drawdown is None
                        else _finite("max_drawdown", max_drawdown))
        self._drawdown.set(dd)
        self._max_drawdown.set(self._max_dd)

    def set_position(self, symbol: str, units: float) -> None:
        """Signed position in units after a fill or reconciliation."""
        self._pos[self._sym(symbol)].set(_finite("position", units))

    # -- orders and fills -------------------------------------------------------------------
    def order_sent(self, symbol: str) -> None:
        """A NewOrderSingle left for the venue."""
        self._ord[self._sym(symbol)].inc()

    def order_succeeded(self, symbol: str) -> None:
        """The venue accepted an order (ExecutionReport New or a fill)."""
        self._ok[self._sym(symbol)].inc()

    def order_rejected(self, symbol: str) -> None:
        """The venue rejected an order (ExecutionReport Rejected or a business reject)."""
        self._rej[self._sym(symbol)].inc()

    def order_blocked(self, symbol: str, check: str) -> None:
        """A pre-trade risk ``check`` (e.g. ``leverage``) stopped an order before sending."""
        self._blocked.labels(self._sym(symbol), self._reason("check", check)).inc()

    def fill(self, symbol: str, side: str, units: float) -> None:
        """A partial or full fill of ``units`` (> 0) on ``side`` (buy or sell)."""
        if side not in SIDES:
            raise OpsConfigError(f"metrics: fill side must be buy or sell, got {side!r}")
        u = _finite("fill units", units)
        if u <= 0:
            raise OpsConfigError(f"metrics: fill units must be > 0, got {units!r}")
        self._fills.labels(self._sym(symbol), side).inc()
        self._filled_units.labels(symbol, side).inc(u)

    def observe_signal(self, seconds: float) -> None:
        """Bar close to target decided (every bar)."""
        self._signal.observe(self._duration(seconds))

    def observe_bar_to_order(self, seconds: float) -> None:
        """Bar close to NewOrderSingle on the wire (bars that trade)."""
        self._bar_to_order.observe(self._duration(seconds))

    @staticmethod
    def _duration(seconds: float) -> float:
        s = _finite("latency", seconds)
        if s < 0:
            raise OpsConfigError(f"metrics: latency must be >= 0 seconds, got {seconds!r}")
        return s

    # -- sessions, breaker, reconciliation, champion ----------------------------------
    def set_session(self, session: str, up: bool) -> None:
        """A FIX session logged on (True) or dropped (False)."""
        self._up[self._session(session)].set(1 if up else 0)

    def session_reconnected(self, session: str) -> None:
        """The initiator reconnected ``session`` after a drop."""
        self._rec[self._session(session)].inc()

    def set_breaker(self, is_open: bool) -> None:
        """Breaker state as persisted: open means halted (flattened, no new orders)."""
        self._breaker.set(1 if is_open else 0)

    def breaker_tripped(self, reason: str) -> None:
        """The breaker tripped for ``reason`` (e.g. ``drawdown``, ``var``, ``reject_storm``);
        also sets it open."""
        self._trips.labels(self._reason("reason", reason)).inc()
        self._breaker.set(1)

    def set_reconciled(self, clean: bool) -> None:
        """Outcome of the last reconciliation (start, reconnect, periodic)."""
        self._mismatch.set(0 if clean else 1)

    def set_champion(self, sha: str, *, loaded_at: float | None = None) -> None:
        """The champion now trading: its bundle sha (lowercase hex) replaces the old one."""
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise OpsConfigError(f"metrics: champion sha must be 7-64 lowercase hex digits, "
                                 f"got {sha!r}")
        self._champion.clear()
        self._champion.labels(sha).set(1)
        self._champion_at.set(time.time() if loaded_at is None else _finite("loaded_at",
                                                                            loaded_at))

    # -- market data and volatility ---------------------------------------------------------
    def quote_received(self, symbol: str, at: float | None = None) -> None:
        """A quote arrived (``at``: the metrics clock's time, now by default)."""
        self._last_quote[self._sym(symbol)] = self._clock() if at is None else at

    def set_market_open(self, symbol: str, is_open: bool) -> None:
        """The market calendar's view: staleness while closed is expected, not an alert."""
        self._market_open.labels(self._sym(symbol)).set(1 if is_open else 0)

    def set_ginn_fallback(self, symbol: str, fallback: bool) -> None:
        """Whether ``symbol``'s champion runs on the GARCH(1,1) fallback of its GINN row."""
        self._ginn_fallback.labels(self._sym(symbol)).set(1.0 if fallback else 0.0)

    def set_volatility(self, symbol: str, *, sigma_ann: float, regime: str,
                       var95_1d: float, sizing_multiplier: float,
                       sigma_garch_ann: float | None = None, sigma_rv_ann: float | None = None,
                       quality: float | None = None) -> None:
        """One volatility-engine record (DESIGN.md's output record) for ``symbol``."""
        s = self._sym(symbol)
        if regime not in REGIMES:
            raise OpsConfigError(f"metrics: regime must be one of {', '.join(REGIMES)}, "
                                 f"got {regime!r}")
        self._sigma.labels(s).set(_finite("sigma_ann", sigma_ann))
        self._regime.labels(s).set(REGIMES[regime])
        self._var95.labels(s).set(_finite("var95_1d", var95_1d))
        self._sizing.labels(s).set(_finite("sizing_multiplier", sizing_multiplier))
        if sigma_garch_ann is not None:
            self._sigma_garch.labels(s).set(_finite("sigma_garch_ann", sigma_garch_ann))
        if sigma_rv_ann is not None:
            self._sigma_rv.labels(s).set(_finite("sigma_rv_ann", sigma_rv_ann))
        if quality is not None:
            self._quality.labels(s).set(_finite("quality", quality))

    # -- exposition ------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The registry in Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
