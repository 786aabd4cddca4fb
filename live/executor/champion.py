"""The champion the executor trades: pointer -> verified bundle -> live tables and live step.

Decisions:
- **First start** (no strategy state in the state store): the bundle's kernel state is kept
  for its rule memory (the t-1 rule values crossings need, the last bar index) but the account
  part is reset (``flatten``): flat, no pending order, cash = the account's equity. The broker
  account holds no position of the backtest, so trading the backtest's open position would
  mean entering at a price nobody got; the first entry waits for the strategy's next signal.
- **Sizing equity.** The kernel sizes from its own state record (cash + marked position),
  seeded at the first start with the equity the venue reports (CollateralReport; the config's
  ``account_equity`` only when the venue sends none) and then advanced by the kernel's fill and
  cost model. The paper venue fills exactly as that model does, so the two stay equal to the
  bit. A real broker's slippage, fees, financing and partial fills make this shadow equity
  drift from the broker's: the executor polls the venue's equity after every bar (metrics
  ``emp_equity``, ``emp_sizing_equity``, ``emp_equity_divergence_ratio``) and re-bases the
  shadow equity on the broker's when they differ by more than ``equity_resync``: the kernel's
  cash moves by the difference, its position, entry and stop levels stay. The backtest's
  equity, by contrast, is simulated from the start capital with the bundle's cost model.
- **Refits** of the GARCH family: on a refit bar the decision needs only the fit of the
  genome's own variant (the kernel reads that one variance row), so that one is fitted before
  deciding and the other two after the bar's orders are sent (``finish_refits``); both
  through ``fit`` (the executor's ``live.executor.refits.RefitWorker``, a worker process).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from champions.bundle import Bundle, BundleError, read_bundle
from champions.pointer import (
    SHA256_RULE,
    Pointer,
    PointerError,
    bundle_name,
    champion_dir,
    read_pointer,
    read_regular,
    resolve,
    sha256_hex,
)
from fitness import simulator_nb as k
from fitness.live import Decision, LiveStrategy
from fitness.simulator import new_state
from fitness.tables import LiveTables, TablesState
from genome.features import N_ROWS, NAMES, FeatureTable
from genome.primitives import PRIMITIVES
from live.executor.errors import ChampionError
from market.ginn import GinnError, sidecar_path
from market.ginn_vol import GinnModel
from market.volatility import FITTED_VARIANTS, GARCH_VARIANTS, RefitJob, RefitResult, run_refit

Fit = Callable[[RefitJob], RefitResult]


def layout_table() -> FeatureTable:
    """A feature table with the catalogue's layout and no bars: all ``compile_genomes`` reads
    (a genome only indexes rows), so the live side needs no history to compile one."""
    grid_len = np.array([len(p.grid) for p in PRIMITIVES], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(grid_len)[:-1]]).astype(np.int64)
    return FeatureTable(np.empty((N_ROWS, 0)), offsets, grid_len, tuple(NAMES))


@dataclass(frozen=True)
class Champion:
    """A verified bundle and the pointer it came from (None: loaded by its sha256 from the
    bundle store, as a restart or a rollback does for a champion the pointer no longer names)."""

    pointer: Pointer | None
    bundle: Bundle
    path: Path

    @property
    def sha256(self) -> str:
        return self.bundle.sha256


def load_champion(root: Path, symbol: str, stage: str, trusted: dict[str, Ed25519PublicKey],
                  *, allow_unsigned: bool = False) -> Champion:
    """Pointer -> bundle (hash, canonical form, Ed25519 signature, code digests), or a
    ChampionError naming the file and the reason."""
    try:
        pointer = read_pointer(champion_dir(root, symbol), stage)
        path, data = resolve(pointer)
        bundle = read_bundle(data, trusted, allow_unsigned=allow_unsigned, where=str(path))
    except (PointerError, BundleError) as exc:
        raise ChampionError(str(exc)) from None
    _check_loaded(bundle, symbol, path)
    return Champion(pointer, bundle, path)


def load_champion_sha(root: Path, symbol: str, sha256: str,
                      trusted: dict[str, Ed25519PublicKey], *, allow_unsigned: bool = False
                      ) -> Champion:
    """The stored bundle ``<root>/<symbol>/bundles/<sha256>.json`` verified like a pointer's
    (hash, canonical form, signature, digests): a champion the state store names (restart,
    rollback) that the pointer may no longer name."""
    try:
        if not SHA256_RULE.fullmatch(str(sha256)):
            raise PointerError(f"champion sha256 {sha256!r} is not 64 lowercase hex digits")
        path = champion_dir(root, symbol) / bundle_name(sha256)
        data = read_regular(path, PointerError, "bundle")
        if sha256_hex(data) != sha256:
            raise PointerError(f"bundle {path} does not hash to its name: altered on disk")
        bundle = read_bundle(data, trusted, allow_unsigned=allow_unsigned, where=str(path))
    except (PointerError, BundleError) as exc:
        raise ChampionError(str(exc)) from None
    _check_loaded(bundle, symbol, path)
    return Champion(None, bundle, path)


def _check_loaded(bundle: Bundle, symbol: str, path: Path) -> None:
    if bundle.symbol != symbol:
        raise ChampionError(f"{path}: bundle is for {bundle.symbol}, the pointer for {symbol}")
    # a bundle without a state snapshot is started from the history store (live.executor.history)


def flatten(kernel_state: np.ndarray, equity: float) -> np.ndarray:
    """The bundle's kernel state with its account part reset: flat, nothing pending, ``equity``
    in cash; the rule memory (ST_HAS_PREV, ST_LAST_BAR, ST_PREV_VALUES) kept."""
    out = np.array(kernel_state, dtype=np.float64)
    out[:k.ST_HAS_PREV] = new_state(equity)[:k.ST_HAS_PREV]
    return out


def adopt(kernel_state: np.ndarray, held: np.ndarray) -> np.ndarray:
    """``kernel_state`` (a warmed-up champion's: its rule memory) holding the account part of
    ``held`` (the champion it replaces: position, entry, stop and take-profit levels, bars held,
    the order pending for the next open, cash), so the position is kept and sizing continues
    from the same equity. The entry bar is moved into the new state's bar numbering (two
    bundles' tables may start at different origins)."""
    out = np.array(kernel_state, dtype=np.float64)
    out[:k.ST_HAS_PREV] = held[:k.ST_HAS_PREV]
    if held[k.ST_ENTRY_BAR] >= 0:
        out[k.ST_ENTRY_BAR] = held[k.ST_ENTRY_BAR] - held[k.ST_LAST_BAR] + out[k.ST_LAST_BAR]
    return out


def find_ginn_model(root: Path, symbol: str, timeframe: str, sha256: str,
                    max_age_hours: float) -> GinnModel:
    """The GINN model ``sha256`` (the one a champion's tables were built with) among the
    exported models ``<root>/<symbol>/<timeframe>/*.npz``, verified and no older than
    ``max_age_hours``; GinnError naming the reason (absent, altered, stale)."""
    folder = Path(root) / symbol / timeframe
    for npz in sorted(folder.glob("*.npz")):
        try:
            meta = json.loads(sidecar_path(npz).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("sha256") == sha256:
            return GinnModel.load(npz, max_age_hours=max_age_hours)
    raise GinnError(f"GINN model {sha256[:12]} (the champion's) is not among the models in "
                    f"{folder}")


class Runner:
    """One champion's live tables and live step, advanced one bar at a time. ``ginn``: the
    GINN model its tables were built with (None or another: the ginn row is garch11's)."""

    def __init__(self, champion: Champion, tables: TablesState, kernel_state: np.ndarray,
                 ginn: GinnModel | None = None) -> None:
        b = champion.bundle
        self.champion = champion
        self.tables = LiveTables(tables, ginn=ginn)
        self.strategy = LiveStrategy(b.genome, layout_table(), b.meta, tables.bars_per_year,
                                     b.sim, kernel_state)
        fp, ip = self.strategy.comp.fp[0], self.strategy.comp.ip[0]
        self.tp_mult = float(fp[k.P_TP_MULT])
        self.use_tp = int(ip[k.I_USE_TP]) == 1
        self.trailing = int(ip[k.I_TRAIL]) == 1
        # a refit bar's fits: still to do (a snapshot may be pending: all of them) and done
        self._jobs: dict[str, RefitJob] = {j.variant: j for j in self.tables.due_refits()}
        self._done: dict[str, RefitResult] = {}

    @property
    def last_ts(self) -> int:
        """Open time (UTC ns) of the last bar stepped."""
        return int(self.tables.state().features.tail["ts"][-1])

    @property
    def variant(self) -> str:
        """The genome's GARCH-family variant: the one variance row its decisions read."""
        return GARCH_VARIANTS[int(self.strategy.comp.ip[0][k.I_VARIANT])]

    def step(self, ts: int, o: float, h: float, lo: float, c: float, v: float,
             fit: Fit = run_refit) -> Decision:
        """Bar ``ts`` closed: extend the tables and take the kernel's decision. On a refit bar
        only the genome's variant is fitted first; ``finish_refits`` does the rest."""
        self.finish_refits(fit)
        t = self.tables.n_bars
        col = self.tables.step(ts, o, h, lo, c, v)
        variance = col.variance
        if self.tables.pending:
            self._jobs = {j.variant: j for j in self.tables.due_refits()}
            self._done = {}
            for v in self.tables.fits_for(self.variant):
                if v in self._jobs:
                    self._done[v] = fit(self._jobs.pop(v))
            variance = self.tables.preview_refits(list(self._done.values()))
        return self.strategy.step(t, o, h, lo, c, col.features, variance, col.rv, col.hour,
                                  col.weekday)

    def drop_ginn(self) -> None:
        """Continue without the GINN model: the ginn row is garch11's from the next bar on."""
        self.finish_refits()
        self.tables = LiveTables(self.tables.state(), ginn=None)

    def refit_jobs(self) -> list[RefitJob]:
        """The fits a pending refit bar still waits for (none: nothing pending)."""
        return list(self._jobs.values()) if self.tables.pending else []

    def finish_refits(self, fit: Fit = run_refit,
                      results: list[RefitResult] | None = None) -> None:
        """Complete a pending refit bar: ``results`` of ``refit_jobs`` (fitted here with
        ``fit`` when not given). A no-op when nothing is pending."""
        if not self.tables.pending:
            return
        got = results if results is not None else [fit(j) for j in self._jobs.values()]
        done = {**self._done, **{r.variant: r for r in got}}
        self.tables.apply_refits([done[v] for v in FITTED_VARIANTS])
        self._jobs, self._done = {}, {}

    def entry_fields(self, d: Decision) -> tuple[float, float | None, bool]:
        """(stop distance, take-profit distance or None, trailing) of an order that opens."""
        tp = self.tp_mult * d.entry_dist if self.use_tp else None
        return d.entry_dist, tp, self.trailing
