"""The rule-mask cache: each distinct condition (and session/weekday gate) of a population packed
once into bits over the whole feature table, and kept for the rest of the run.

Conditions repeat across the genomes of a population and across generations (a GA breeds
near-copies), so building a condition's mask once per run instead of once per genome is most of
what makes rule evaluation cheap. The cache is bound to one feature table (by identity: a new
table starts an empty cache), holds at most ``max_bytes`` of masks, and evicts the least recently
used ones first. Masks are pure functions of the table, so what is cached changes only speed,
never a result; the eviction order is itself deterministic for a given sequence of calls.

Keep one cache per process for a run: ``evaluate_trials`` callers pass it in, and each Ray
evaluation actor (workers/pool.py) holds its own across generations.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from itertools import compress

import numpy as np

from fitness import simulator_nb as k
from fitness.compile import Compiled
from fitness.errors import KernelInputError
from fitness.rules_nb import build_cond_masks, gate_mask

DEFAULT_MAX_BYTES = 128 << 20  # ~1,000 masks at 1M bars; 200,000 at 5k
_ALL_DAYS = 127


@dataclass(frozen=True)
class RuleMasks:
    """What the kernel reads: ``pool[row]`` is one packed mask; ``crow[g, rs, j]`` the row of
    slot j of rule set rs of genome g (-1 unused); ``grow[g]`` its gate's row (-1: always open)."""

    pool: np.ndarray  # uint64 [rows, ceil(n_bars / 64)]
    crow: np.ndarray  # int64 [n, 3, K_SLOTS]
    grow: np.ndarray  # int64 [n]


class MaskCache:
    """Packed condition and gate masks over one table, bounded by ``max_bytes`` (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise KernelInputError(f"MaskCache max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pool = np.empty((0, 0), np.uint64)
        self._rows: OrderedDict[bytes, int] = OrderedDict()
        self._free: list[int] = []
        self.built = 0  # masks built over the cache's life (tests and benchmarks read it)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return int(self._pool.nbytes)

    def masks(self, comp: Compiled, F: np.ndarray, hour: np.ndarray,
              weekday: np.ndarray) -> RuleMasks:
        """The masks of every condition and gate of ``comp`` over ``F`` (built where missing)."""
        n_bars = F.shape[1]
        if hour.shape[0] != n_bars or weekday.shape[0] != n_bars:
            raise KernelInputError(f"hour/weekday have {hour.shape[0]}/{weekday.shape[0]} bars; the "
                             f"feature table has {n_bars}")
        t = self._table
        if t is None or t[0] is not F or t[1] is not hour or t[2] is not weekday:
            self._reset(F, hour, weekday)
        n_words = (n_bars + 63) >> 6
        n, _, n_slots, _ = comp.slots.shape
        active = np.arange(n_slots)[None, None, :] < comp.n_active[:, :, None]
        lhs = comp.slots[..., k.SLOT_LHS][active]
        rhs = comp.slots[..., k.SLOT_RHS][active]
        cmp = comp.slots[..., k.SLOT_CMP][active]
        thr = np.where(rhs >= 0, 0.0, comp.thr[active])
        cond = np.stack([lhs, rhs, cmp, thr.view(np.int64)], axis=1)
        ses = comp.ip[:, [k.I_SES_START, k.I_SES_END, k.I_WEEKMASK]]
        gated = (ses[:, 0] != ses[:, 1]) | (ses[:, 2] != _ALL_DAYS)
        # gate keys: lhs = -1 sets them apart from conditions (lhs >= 0)
        gate = np.column_stack([np.full(int(gated.sum()), -1, np.int64), ses[gated]])
        all_keys = np.ascontiguousarray(np.concatenate([cond, gate]).reshape(-1, 4))
        uniq, first, inv = np.unique(all_keys.view(np.dtype((np.void, 32))).ravel(),
                                     return_index=True, return_inverse=True)
        inv = inv.reshape(-1)
        want_keys = all_keys[first]
        want = uniq.tolist()  # each key's 32 bytes: the dict key (cheaper to make than a tuple)
        cap = max(1, self.max_bytes // (8 * n_words))
        if len(want) > cap:  # one batch needs more than the budget: build it outside the cache
            pool = np.empty((len(want), n_words), np.uint64)
            rows = np.arange(len(want), dtype=np.int64)
            self._build(want_keys, rows, pool)
        else:
            rows = self._place(want, want_keys, cap, n_words)
            pool = self._pool
        crow = np.full(comp.slots.shape[:3], -1, np.int64)
        crow[active] = rows[inv[: lhs.shape[0]]]
        grow = np.full(n, -1, np.int64)
        grow[gated] = rows[inv[lhs.shape[0]:]]
        return RuleMasks(pool, crow, grow)

    def _reset(self, F: np.ndarray, hour: np.ndarray, weekday: np.ndarray) -> None:
        self._table = (F, hour, weekday)
        self._pool = np.empty((0, (F.shape[1] + 63) >> 6), np.uint64)
        self._rows.clear()
        self._free = []

    def _place(self, want: list[bytes], want_keys: np.ndarray, cap: int,
               n_words: int) -> np.ndarray:
        """Rows for ``want`` (all fit in ``cap``; ``want_keys`` the same keys as an int64
        [m, 4] array): reuse cached ones, evict LRU, build the rest."""
        rows = self._rows
        # C-level loops and array ops: ~10k keys a call (an SMA grid) cost milliseconds in
        # per-key Python
        cached = np.fromiter(map(rows.__contains__, want), np.bool_, len(want))
        if cached.all():  # a warm cache: nothing to place or build
            deque(map(rows.move_to_end, want), maxlen=0)
            return np.fromiter(map(rows.__getitem__, want), np.int64, len(want))
        missing = list(compress(want, (~cached).tolist())) if cached.any() else want
        have = self._pool.shape[0]
        short = len(missing) - len(self._free)
        if short > 0 and have < cap:  # grow geometrically up to the budget
            new = min(cap, max(have + short, 2 * have, 64))
            grown = np.empty((new, n_words), np.uint64)
            grown[:have] = self._pool
            self._pool = grown
            self._free.extend(range(new - 1, have - 1, -1))
        if len(self._free) < len(missing):
            needed = set(want)
            while len(self._free) < len(missing):
                key, row = next(kv for kv in rows.items() if kv[0] not in needed)
                del rows[key]
                self._free.append(row)
        cut = len(self._free) - len(missing)  # rows are taken from the end of the free list
        new_rows = np.array(self._free[cut:][::-1], np.int64)
        del self._free[cut:]
        rows.update(zip(missing, new_rows.tolist(), strict=True))
        self._build(want_keys[~cached], new_rows, self._pool)
        deque(map(rows.move_to_end, want), maxlen=0)
        return np.fromiter(map(rows.__getitem__, want), np.int64, len(want))

    def _build(self, keys: np.ndarray, rows: np.ndarray, pool: np.ndarray) -> None:
        """Masks of ``keys`` (int64 [m, 4]: conditions, then gates with lhs -1) into
        ``pool[rows]``."""
        assert self._table is not None
        F, hour, weekday = self._table
        is_cond = keys[:, 0] >= 0
        a = keys[is_cond]
        if a.shape[0]:
            build_cond_masks(F, np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(a[:, 1]),
                             np.ascontiguousarray(a[:, 3]).view(np.float64),
                             np.ascontiguousarray(a[:, 2]), rows[is_cond], pool)
        for i in np.flatnonzero(~is_cond).tolist():
            _, ses_start, ses_end, weekmask = keys[i].tolist()
            gate_mask(hour, weekday, ses_start, ses_end, weekmask, pool[rows[i]])
        self.built += keys.shape[0]
