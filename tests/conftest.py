"""Shared fixtures: a fresh history store per test and small generated bar and tick sets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

from market.config import QualityConfig, SymbolMeta, preset_meta
from market.store import HistoryStore


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true",
                     help="also run tests marked slow (long real-data checks)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("EMP_SLOW_TESTS"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def store(tmp_path) -> HistoryStore:
    return HistoryStore(tmp_path / "history")


@pytest.fixture
def fx_meta() -> SymbolMeta:
    return preset_meta("fx")


@pytest.fixture
def quality() -> QualityConfig:
    return QualityConfig()


def make_daily_bars(n: int = 300, start: str = "2020-01-02", seed: int = 0) -> pd.DataFrame:
    """Business-day bars with consistent OHLC and volume."""
    rng = np.random.default_rng(seed)
    ts = pd.bdate_range(start, periods=n, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0, 0.3, n))
    return pd.DataFrame({
        "ts": ts, "open": open_, "high": np.maximum(open_, close) + wick,
        "low": np.minimum(open_, close) - wick, "close": close,
        "volume": rng.integers(1000, 5000, n).astype(float),
    })


def random_bars(n: int, seed: int, start_price: float = 1.1):
    """Hourly bars (24x7) with fat-tailed returns, a slow cycle and consistent OHLC."""
    from market.loader import Bars

    hour = 3_600_000_000_000
    rng = np.random.default_rng(seed)
    ts = np.int64(1_704_067_200_000_000_000) + np.arange(n, dtype=np.int64) * hour
    r = rng.standard_t(4, n) * 0.002 + 0.0003 * np.sin(np.arange(n) / 40)
    close = start_price * np.exp(np.cumsum(r))
    open_ = np.concatenate([[start_price], close[:-1]]) * np.exp(rng.normal(0, 0.0005, n))
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.0015, n)))
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.0015, n)))
    vol = rng.integers(50, 500, n).astype(float)
    return Bars(("X",), "1h", ts, open_[None], hi[None], lo[None], close[None], vol[None], None)


def ingest_generated(home, symbol: str, timeframe: str, close: np.ndarray, costs: dict,
                     seed: int, hourly: bool = False) -> None:
    """Ingest bars built on ``close`` (business days, or 24x7 hours) into ``home``'s store."""
    from configs.loader import parse_config
    from market.ingest import ingest_bars
    from market.readers import SourceRows
    from market.synthetic import ohlc_from_closes

    rng = np.random.default_rng(seed)
    n = close.size
    # highs and lows a continuous walk with the series' volatility could have traded
    open_, high, low, close = ohlc_from_closes(close, np.diff(np.log(close)).std(), rng)
    ts = (pd.date_range("2012-01-01", periods=n, freq="h", tz="UTC") if hourly
          else pd.bdate_range("1950-01-02", periods=n, tz="UTC"))
    frame = pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close,
                          "volume": rng.integers(100, 1000, n).astype(float)})
    meta = SymbolMeta(asset_class="crypto" if hourly else "equity", tick_size=0.01,
                      min_lot=0.001, calendar="always" if hourly else "business", costs=costs)
    cfg = parse_config({"home": str(home)}, "t")
    ingest_bars(HistoryStore(cfg.store_root()), symbol, timeframe,
                SourceRows(frame, np.arange(n)), meta,
                QualityConfig(severity={"absurd_return": "off", "gap": "off"}))


def planted_home(tmp_path, n: int = 3000, phi: float = 0.35, seed: int = 11):
    """Daily bars whose returns follow an AR(1) with φ = 0.35: yesterday's sign predicts today."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    eps = rng.normal(0, 0.01, n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + eps[t]
    ingest_generated(tmp_path, "PLANT", "1d", 100 * np.exp(np.cumsum(r)),
                     {"unit": "bps", "spread": 1.0, "commission": 0.5, "slippage": 1.0}, seed)
    return tmp_path


def roc1_genome(all_week: bool = False) -> np.ndarray:
    """LONG when ROC(1) > 0, SHORT when ROC(1) < 0, out after one bar: uses the roc(1) row only
    (the strategy an AR(1) series with positive φ rewards)."""
    from genome.ops import repair
    from genome.primitives import PRIMITIVE_IDS, PRIMITIVES
    from genome.schema import INDEX, N_GENES

    g = np.zeros(N_GENES)
    roc = PRIMITIVE_IDS["roc"]
    zero = (0.0 - PRIMITIVES[roc].thr_lo) / (PRIMITIVES[roc].thr_hi - PRIMITIVES[roc].thr_lo)
    for side, cmp in (("long", 0), ("short", 1)):
        g[INDEX[f"{side}.s0.on"]] = 1
        g[INDEX[f"{side}.s0.prim"]] = roc
        g[INDEX[f"{side}.s0.param"]] = 0
        g[INDEX[f"{side}.s0.cmp"]] = cmp
        g[INDEX[f"{side}.s0.thr"]] = zero
    for r in ("calm", "normal", "storm"):
        g[INDEX[f"regime.{r}"]] = 1
    days = ("mon", "tue", "wed", "thu", "fri") + (("sat", "sun") if all_week else ())
    for d in days:
        g[INDEX[f"session.{d}"]] = 1
    g[INDEX["risk.k_stop"]] = 8.0
    g[INDEX["risk.risk_pct"]] = 0.01
    g[INDEX["vol.blend_weight"]] = 0.5
    g[INDEX["vol.calm_below"]] = 0.02
    g[INDEX["vol.storm_above"]] = 0.8
    g[INDEX["risk.max_bars"]] = 1
    return repair(g)


def write_bar_csv(path, frame: pd.DataFrame) -> None:
    out = frame.copy()
    out["ts"] = pd.DatetimeIndex(out["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    out.rename(columns={"ts": "Date", "open": "Open", "high": "High", "low": "Low",
                        "close": "Close", "volume": "Volume"}).to_csv(path, index=False)


@pytest.fixture(scope="session")
def ray_cluster():
    """One small Ray (2 CPUs, embedded unless RAY_ADDRESS names a cluster) for the session.

    Ray is imported here, not at module level, so test runs that never ask for it never start it.
    """
    from workers import cluster

    info = cluster.connect(num_cpus=2)
    yield info
    cluster.shutdown()
