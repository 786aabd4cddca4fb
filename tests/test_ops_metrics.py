"""live/ops/metrics.py: names, types and values as Prometheus parses them, label checks,
and one registry per Metrics (two executors in one process do not clash)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from live.ops.errors import OpsConfigError
from live.ops.metrics import LATENCY_BUCKETS, Metrics

SHA = "0123abcd" * 8

# family name -> type, as the text format declares it: the metrics
EXPECTED_TYPES = {
    "emp_equity": "gauge", "emp_drawdown_ratio": "gauge", "emp_max_drawdown_ratio": "gauge",
    "emp_drawdown_limit_ratio": "gauge", "emp_position_units": "gauge",
    "emp_orders": "counter", "emp_orders_succeeded": "counter",
    "emp_orders_rejected": "counter", "emp_orders_blocked": "counter", "emp_fills": "counter",
    "emp_filled_units": "counter", "emp_signal_duration_seconds": "histogram",
    "emp_bar_to_order_latency_seconds": "histogram", "emp_fix_session_up": "gauge",
    "emp_fix_reconnects": "counter", "emp_breaker_open": "gauge",
    "emp_breaker_trips": "counter", "emp_reconciliation_mismatch": "gauge",
    "emp_champion_info": "gauge", "emp_champion_loaded_timestamp_seconds": "gauge",
    "emp_data_staleness_seconds": "gauge", "emp_data_staleness_limit_seconds": "gauge",
    "emp_market_open": "gauge", "emp_sigma_ann": "gauge", "emp_sigma_garch_ann": "gauge",
    "emp_sigma_rv_ann": "gauge", "emp_regime": "gauge", "emp_var95_1d": "gauge",
    "emp_sizing_multiplier": "gauge", "emp_vol_quality": "gauge",
    "emp_sizing_equity": "gauge", "emp_equity_divergence_ratio": "gauge",
    "emp_ginn_fallback": "gauge",
}


class FakeClock:
    """A monotonic clock the test moves by hand (data staleness without sleeping)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exercised(clock: FakeClock | None = None) -> Metrics:
    """Every update method called once, so every labelled family has a sample."""
    m = Metrics(["EURUSD", "GBPUSD"], clock=clock or FakeClock())
    m.set_equity(10_250.5)
    m.set_sizing_equity(10_240.0, (10_240.0 - 10_250.5) / 10_250.5)
    m.set_drawdown(0.03)
    m.set_position("EURUSD", -12_000)
    m.order_sent("EURUSD")
    m.order_sent("EURUSD")
    m.order_succeeded("EURUSD")
    m.order_rejected("EURUSD")
    m.order_blocked("GBPUSD", "leverage")
    m.fill("EURUSD", "sell", 12_000)
    m.observe_signal(0.0004)
    m.observe_bar_to_order(0.0015)
    m.set_session("QUOTE", True)
    m.session_reconnected("TRADE")
    m.breaker_tripped("reject_storm")
    m.set_reconciled(False)
    m.set_champion(SHA, loaded_at=1_700_000_000.0)
    m.quote_received("EURUSD")
    m.set_market_open("GBPUSD", False)
    m.set_ginn_fallback("EURUSD", True)
    m.set_volatility("EURUSD", sigma_ann=0.09, regime="storm", var95_1d=310.0,
                     sizing_multiplier=0.7, sigma_garch_ann=0.08, sigma_rv_ann=0.1,
                     quality=0.4)
    return m


def parse(m: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}


def value(families: dict, sample: str, **labels: str) -> float:
    """The one sample called ``sample`` whose labels include ``labels``."""
    family = next(f for f in families.values() if any(s.name == sample for s in f.samples))
    hits = [s.value for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (sample, labels, hits)
    return hits[0]


def test_every_metric_has_its_name_and_type() -> None:
    fams = parse(exercised())
    # the 0.0.4 text format has no "created" type: the parser reads *_created as gauges
    emp = {n: f.type for n, f in fams.items()
           if n.startswith("emp_") and not n.endswith("_created")}
    assert emp == EXPECTED_TYPES
    assert "process_resident_memory_bytes" in fams  # RSS, for the MemoryMax alert


def test_values_after_updates() -> None:
    clock = FakeClock()
    m = exercised(clock)
    clock.now += 42.5
    f = parse(m)
    assert value(f, "emp_equity") == 10_250.5
    assert value(f, "emp_sizing_equity") == 10_240.0
    assert value(f, "emp_equity_divergence_ratio") == (10_240.0 - 10_250.5) / 10_250.5
    assert value(f, "emp_drawdown_ratio") == 0.03
    assert value(f, "emp_drawdown_limit_ratio") == 0.08
    assert value(f, "emp_position_units", symbol="EURUSD") == -12_000
    assert value(f, "emp_position_units", symbol="GBPUSD") == 0
    assert value(f, "emp_orders_total", symbol="EURUSD") == 2
    assert value(f, "emp_orders_succeeded_total", symbol="EURUSD") == 1
    assert value(f, "emp_orders_rejected_total", symbol="EURUSD") == 1
    assert value(f, "emp_orders_blocked_total", symbol="GBPUSD", check="leverage") == 1
    assert value(f, "emp_fills_total", symbol="EURUSD", side="sell") == 1
    assert value(f, "emp_filled_units_total", symbol="EURUSD", side="sell") == 12_000
    assert value(f, "emp_bar_to_order_latency_seconds_count") == 1
    assert value(f, "emp_bar_to_order_latency_seconds_bucket", le="0.001") == 0
    assert value(f, "emp_bar_to_order_latency_seconds_bucket", le="0.002") == 1
    assert value(f, "emp_signal_duration_seconds_bucket", le="0.0005") == 1
    assert value(f, "emp_fix_session_up", session="QUOTE") == 1
    assert value(f, "emp_fix_session_up", session="TRADE") == 0  # down until logged on
    assert value(f, "emp_fix_reconnects_total", session="TRADE") == 1
    assert value(f, "emp_breaker_open") == 1
    assert value(f, "emp_breaker_trips_total", reason="reject_storm") == 1
    assert value(f, "emp_reconciliation_mismatch") == 1
    assert value(f, "emp_champion_info", sha=SHA) == 1
    assert value(f, "emp_champion_loaded_timestamp_seconds") == 1_700_000_000.0
    # staleness is measured at scrape time: 42.5 s since start (GBPUSD, no quote yet) and
    # since the EURUSD quote
    assert value(f, "emp_data_staleness_seconds", symbol="EURUSD") == 42.5
    assert value(f, "emp_data_staleness_seconds", symbol="GBPUSD") == 42.5
    assert value(f, "emp_market_open", symbol="GBPUSD") == 0
    assert value(f, "emp_regime", symbol="EURUSD") == 2
    assert value(f, "emp_var95_1d", symbol="EURUSD") == 310.0
    assert value(f, "emp_sizing_multiplier", symbol="EURUSD") == 0.7
    assert value(f, "emp_vol_quality", symbol="EURUSD") == 0.4
    m.quote_received("GBPUSD")
    clock.now += 1.0
    assert value(parse(m), "emp_data_staleness_seconds", symbol="GBPUSD") == 1.0


def test_latency_buckets_resolve_a_tenth_of_a_millisecond_to_100_ms() -> None:
    assert LATENCY_BUCKETS[0] == 0.0001 and 0.1 in LATENCY_BUCKETS
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_champion_swap_replaces_the_sha_and_breaker_closes() -> None:
    m = exercised()
    m.set_champion("fedcba9", loaded_at=1_700_000_100.0)
    m.set_breaker(False)
    m.set_reconciled(True)
    f = parse(m)
    shas = [s.labels["sha"] for s in f["emp_champion_info"].samples]
    assert shas == ["fedcba9"]
    assert value(f, "emp_breaker_open") == 0
    assert value(f, "emp_reconciliation_mismatch") == 0


def test_max_drawdown_is_kept_unless_the_executor_passes_its_own() -> None:
    m = Metrics(["EURUSD"], process=False)
    m.set_drawdown(0.05)
    m.set_drawdown(0.01)
    assert value(parse(m), "emp_max_drawdown_ratio") == 0.05
    m.set_drawdown(0.01, max_drawdown=0.07)  # persisted across a restart
    assert value(parse(m), "emp_max_drawdown_ratio") == 0.07


def test_two_metrics_in_one_process_do_not_clash_nor_touch_the_global_registry() -> None:
    a, b = Metrics(["EURUSD"]), Metrics(["EURUSD"])
    a.set_equity(1.0)
    b.set_equity(2.0)
    assert value(parse(a), "emp_equity") == 1.0
    assert value(parse(b), "emp_equity") == 2.0
    assert REGISTRY.get_sample_value("emp_equity") is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.set_position("USDJPY", 1), "unknown symbol 'USDJPY' (configured: EURUSD)"),
    (lambda m: m.set_session("PRICE", True), "unknown FIX session 'PRICE'"),
    (lambda m: m.set_equity(math.nan), "equity must be a finite number"),
    (lambda m: m.set_drawdown(1.5), "drawdown must lie in [0, 1]"),
    (lambda m: m.fill("EURUSD", "long", 1), "fill side must be buy or sell"),
    (lambda m: m.fill("EURUSD", "buy", 0), "fill units must be > 0"),
    (lambda m: m.observe_bar_to_order(-0.001), "latency must be >= 0"),
    (lambda m: m.order_blocked("EURUSD", "Bad Check!"), "check must match"),
    (lambda m: m.breaker_tripped(""), "reason must match"),
    (lambda m: m.set_champion("not-a-sha"), "champion sha must be 7-64 lowercase hex"),
    (lambda m: m.set_volatility("EURUSD", sigma_ann=0.1, regime="wild", var95_1d=1.0,
                                sizing_multiplier=1.0), "regime must be one of calm"),
])
def test_bad_input_is_a_one_line_ops_error(call, message) -> None:
    m = Metrics(["EURUSD"], process=False)
    with pytest.raises(OpsConfigError, match=r"^metrics: ") as err:
        call(m)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("symbols", [[], ["EURUSD", "EURUSD"], [""], [" EURUSD"]])
def test_bad_symbol_lists_are_refused(symbols) -> None:
    with pytest.raises(OpsConfigError, match="symbol"):
        Metrics(symbols)
