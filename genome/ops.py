"""Operations on numpy genomes: sampling, validation, repair, crossover, mutation, keys, distance.

Every operator returns a new genome that passes ``validate`` (it ends with ``repair``), so the
evolution loop never evaluates an invalid strategy. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed reproduces a run.

Repair rules (``repair``), in order:

1. NaN → the gene's lower bound; clip every gene to its bounds; round int/cat genes.
2. ``param`` and ``param2`` are reduced modulo the slot primitive's grid length (canonical form).
3. A slot with ``rhs = param2`` whose ``param2 == param`` compares a feature with itself: it
   becomes a threshold slot (``rhs = 0``).
4. Every regime off → ``regime.normal = follow``.
5. No weekday on → Monday to Friday on.
6. No enabled slot in the long nor in the short rule set (nothing could ever open) → long slot 0
   is enabled.
7. ``calm_below >= storm_above`` → the two swap (then re-clipped); ``storm_above`` is raised to
   at least ``calm_below + REGIME_GAP`` so the normal regime is never empty.
8. ``-0.0`` → ``0.0`` so equal genomes serialise and hash alike.

With a ``BarContext`` (``genome.context``: the hours and weekdays at which the dataset's bars
open), genes that cannot act on it are neutralised as well, so evolution spends no trials on
them and genomes that differ only there are one behaviour:

9. Weekdays on which no bar opens (Saturday and Sunday on NYSE) → off. No trading weekday on →
   every trading weekday on.
10. Where bars do not open at every hour, the session window is narrowed to the bar hours it
    contains (start = the first, end = the
    last + 1). A window holding every bar hour, or none (nothing could ever trade), → all day
    (start = end = 0). On daily bars that is always all day.
11. A ``sess`` slot whose session masks are constant on the context (daily bars) is a constant
    condition: always or never true. AND with a never-true slot, or OR without any other slot
    that can be true, → the rule set is off (every slot disabled); an always-true slot is
    dropped from an AND and makes an OR always true. A rule set that is always true keeps one
    canonical always-true slot in its slot 0 (printed "always").
12. No entry slot left → long slot 0 on (rule 6), made the canonical always-true slot if it
    is itself a constant ``sess`` slot.

Take-profit beyond the stop's opposite side needs no rule: tp_mult's lower bound (0.5) keeps it
on the profit side of the entry. A genome of the wrong length cannot be repaired (ValueError).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from genome import schema as S
from genome.context import BarContext
from genome.primitives import PRIMITIVE_IDS, PRIMITIVES

REGIME_GAP = 0.01  # minimum annualised σ̂ gap between calm_below and storm_above

LO = np.array([g.lo for g in S.GENES], dtype=np.float64)
HI = np.array([g.hi for g in S.GENES], dtype=np.float64)
SPAN = HI - LO
IS_CONT = np.array([g.kind == "cont" for g in S.GENES])
IS_CAT = np.array([g.kind == "cat" for g in S.GENES])
IS_WHOLE = ~IS_CONT
NAMES = tuple(g.name for g in S.GENES)
GRID_LEN = np.array([len(p.grid) for p in PRIMITIVES], dtype=np.int64)

_SLOTS = np.array([S.slot_offset(r, k) for r in range(len(S.RULE_SETS)) for k in range(S.K_SLOTS)])
SLOT_ON = _SLOTS
SLOT_PRIM = _SLOTS + 1
SLOT_PARAM = _SLOTS + 2
SLOT_CMP = _SLOTS + 3
SLOT_RHS = _SLOTS + 4
SLOT_THR = _SLOTS + 5
SLOT_PARAM2 = _SLOTS + 6
_PRIM_OF_PARAM = {int(p): int(p) - 1 for p in SLOT_PARAM} | {int(p): int(p) - 5 for p in SLOT_PARAM2}
_HOUR_GENES = {S.SESSION_START, S.SESSION_END}
REGIME_IDX = np.arange(S.REGIME0, S.REGIME0 + len(S.REGIMES))
WEEKDAY_IDX = np.arange(S.WEEKDAY0, S.WEEKDAY0 + len(S.WEEKDAYS))
_ENTRY_ON = SLOT_ON[: 2 * S.K_SLOTS]  # long and short slots

# crossover units: whole sections, and within rule sets whole slots
SECTION_IDX: dict[str, np.ndarray] = {
    sec: np.array([i for i, g in enumerate(S.GENES) if g.section == sec]) for sec in S.SECTIONS}
SLOT_IDX: dict[str, list[np.ndarray]] = {
    rs: [np.arange(S.slot_offset(r, k), S.slot_offset(r, k) + S.SLOT_WIDTH)
         for k in range(S.K_SLOTS)]
    for r, rs in enumerate(S.RULE_SETS)}


def _as_genome(g: Any) -> np.ndarray:
    arr = np.asarray(g, dtype=np.float64)
    if arr.shape != (S.N_GENES,):
        raise ValueError(f"genome: shape {arr.shape}, expected ({S.N_GENES},)")
    return arr


# ---- sampling, validation, repair -------------------------------------------------------------

def random_genome(rng: np.random.Generator, p_slot_on: float = 0.35,
                  context: BarContext | None = None) -> np.ndarray:
    """A uniform random genome; slots on with ``p_slot_on``, params drawn inside their grid;
    repaired for ``context`` when given."""
    g = LO + rng.random(S.N_GENES) * SPAN
    g[IS_WHOLE] = rng.integers(LO[IS_WHOLE].astype(np.int64), HI[IS_WHOLE].astype(np.int64) + 1)
    g[SLOT_ON] = rng.random(SLOT_ON.size) < p_slot_on
    lens = GRID_LEN[g[SLOT_PRIM].astype(np.int64)]
    g[SLOT_PARAM] = rng.integers(0, lens)
    g[SLOT_PARAM2] = rng.integers(0, lens)
    g[WEEKDAY_IDX] = rng.random(WEEKDAY_IDX.size) < 0.85  # mostly trading days
    if rng.random() < 0.5:  # half the population trades all day
        g[S.SESSION_END] = g[S.SESSION_START]
    return repair(g, context)


def validate(g: Any) -> list[str]:
    """Every problem of ``g``, each naming the gene; an empty list means valid."""
    try:
        arr = np.asarray(g, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return [f"genome: not numeric ({exc})"]
    if arr.shape != (S.N_GENES,):
        return [f"genome: shape {arr.shape}, expected ({S.N_GENES},)"]
    problems: list[str] = []
    for i in np.flatnonzero(np.isnan(arr)):
        problems.append(f"{NAMES[i]}: NaN")
    ok = ~np.isnan(arr)
    for i in np.flatnonzero(ok & ((arr < LO) | (arr > HI))):
        problems.append(f"{NAMES[i]}: {float(arr[i])!r} outside [{LO[i]:g}, {HI[i]:g}]")
    for i in np.flatnonzero(ok & IS_WHOLE & (arr != np.round(arr))):
        problems.append(f"{NAMES[i]}: {float(arr[i])!r} is not a whole number")
    if problems:  # contradictions need sane genes to be judged
        return problems
    for pr, pa, rhs, pa2 in zip(SLOT_PRIM, SLOT_PARAM, SLOT_RHS, SLOT_PARAM2, strict=True):
        prim = PRIMITIVES[int(arr[pr])]
        for idx in (pa, pa2):
            if arr[idx] >= len(prim.grid):
                problems.append(f"{NAMES[idx]}: {int(arr[idx])} beyond the {prim.name} grid "
                                f"(length {len(prim.grid)})")
        if arr[rhs] == 1 and arr[pa2] == arr[pa]:
            problems.append(f"{NAMES[pa2]}: equals {NAMES[pa]} with rhs=param2 "
                            f"(compares the feature with itself)")
    if not arr[REGIME_IDX].any():
        problems.append("regime.*: every regime is off, nothing could ever trade")
    if not arr[WEEKDAY_IDX].any():
        problems.append("session.mon..sun: no weekday on, nothing could ever trade")
    if not arr[_ENTRY_ON].any():
        problems.append("long.s*.on/short.s*.on: no enabled entry slot, nothing could ever open")
    calm, storm = arr[S.CALM_BELOW], arr[S.STORM_ABOVE]
    if storm < calm + REGIME_GAP:
        problems.append(f"vol.storm_above: {float(storm)!r} not above vol.calm_below {float(calm)!r} "
                        f"by at least {REGIME_GAP}")
    return problems


def repair(g: Any, context: BarContext | None = None) -> np.ndarray:
    """A new valid genome close to ``g`` (rules in the module docstring); idempotent.

    ``context``: neutralise the genes that cannot act on bars opening at those hours and
    weekdays (rules 9-12); None leaves them as they are."""
    out = _as_genome(g).copy()
    nan = np.isnan(out)
    out[nan] = LO[nan]
    np.clip(out, LO, HI, out=out)
    out[IS_WHOLE] = np.round(out[IS_WHOLE])
    lens = GRID_LEN[out[SLOT_PRIM].astype(np.int64)]
    out[SLOT_PARAM] = out[SLOT_PARAM] % lens
    out[SLOT_PARAM2] = out[SLOT_PARAM2] % lens
    self_cmp = (out[SLOT_RHS] == 1) & (out[SLOT_PARAM2] == out[SLOT_PARAM])
    out[SLOT_RHS[self_cmp]] = 0
    if not out[REGIME_IDX].any():
        out[S.REGIME0 + S.REGIMES.index("normal")] = 1
    if not out[WEEKDAY_IDX].any():
        out[WEEKDAY_IDX[:5]] = 1
    if not out[_ENTRY_ON].any():
        out[S.slot_offset(0, 0)] = 1
    calm, storm = out[S.CALM_BELOW], out[S.STORM_ABOVE]
    if calm >= storm:
        calm = min(max(storm, LO[S.CALM_BELOW]), HI[S.CALM_BELOW])
        storm = min(max(out[S.CALM_BELOW], LO[S.STORM_ABOVE]), HI[S.STORM_ABOVE])
    if storm < calm + REGIME_GAP:  # calm <= 0.30, so calm + gap always fits storm's bounds
        storm = calm + REGIME_GAP
    out[S.CALM_BELOW], out[S.STORM_ABOVE] = calm, storm
    if context is not None and not context.trivial:
        _neutralise(out, context)
    out[out == 0] = 0.0  # no -0.0
    return out


# ---- genes that cannot act on a context (rules 9-12) --------------------------------------------

SESS = PRIMITIVE_IDS["sess"]


def _window(out: np.ndarray, ctx: BarContext) -> None:
    """Rule 10: the session window narrowed to the context's hours inside it (bars at every
    hour: nothing to narrow)."""
    if len(ctx.hours) == 24:
        return
    start, end = int(out[S.SESSION_START]), int(out[S.SESSION_END])
    inside = ctx.in_window(start, end)
    if inside == ctx.hours or not inside:
        out[S.SESSION_START] = out[S.SESSION_END] = 0
        return
    ordered = sorted(inside, key=lambda h: (h - start) % 24)  # in the window's own order
    out[S.SESSION_START], out[S.SESSION_END] = ordered[0], (ordered[-1] + 1) % 24


def constant_truth(g: np.ndarray, on: int, values: tuple[float | None, ...]) -> bool | None:
    """The constant truth of the slot whose ``on`` gene is at ``on`` when its feature is a
    session mask that does not vary on the context (``BarContext.session_values``); None when
    it can vary (any other primitive, or a session that does)."""
    if int(g[on + 1]) != SESS:
        return None
    x = values[int(g[on + 2])]
    y = values[int(g[on + 6])] if int(g[on + 4]) == 1 else float(g[on + 5])  # thr: 0..1 as is
    if x is None or y is None:
        return None
    cmp_ = int(g[on + 3])
    return x > y if cmp_ == 0 else x < y if cmp_ == 1 else False  # a constant never crosses


def rule_set_truth(g: np.ndarray, r: int, values: tuple[float | None, ...]) -> bool | None:
    """Rule set ``r`` on the context: True when always true, False when never (no slot on
    included), None when it depends on the bar."""
    ons = [S.slot_offset(r, k) for k in range(S.K_SLOTS) if g[S.slot_offset(r, k)] == 1]
    if not ons:
        return False
    truth = [constant_truth(g, on, values) for on in ons]
    if g[S.slot_offset(r, 0) - 1] == 0 or len(ons) == 1:  # AND
        return False if False in truth else True if all(truth) else None
    return True if True in truth else False if all(t is False for t in truth) else None


def _always_slot(out: np.ndarray, on: int, values: tuple[float | None, ...]) -> None:
    """Rule 11's canonical always-true slot at ``on``: ``sess(k) > 0`` for the first session k
    that is 1 on every bar, else ``sess(k) < 1`` for the first that is 0 on every bar."""
    k = next(i for i, v in enumerate(values) if v is not None)
    inside = values[k] == 1.0
    out[on: on + S.SLOT_WIDTH] = (1, SESS, k, 0 if inside else 1, 0, 0.0 if inside else 1.0, 0)


def _simplify(out: np.ndarray, r: int, values: tuple[float | None, ...]) -> None:
    """Rule 11 for rule set ``r``."""
    ons = [S.slot_offset(r, k) for k in range(S.K_SLOTS) if out[S.slot_offset(r, k)] == 1]
    truth = {on: constant_truth(out, on, values) for on in ons}
    if not any(t is not None for t in truth.values()):
        return
    is_and = out[S.slot_offset(r, 0) - 1] == 0 or len(ons) == 1
    decided = (False in truth.values()) if is_and else (True in truth.values())
    if decided:  # AND with a never-true slot: never; OR with an always-true slot: always
        for on in ons:
            out[on] = 0
        if not is_and:
            _always_slot(out, S.slot_offset(r, 0), values)
        return
    keep = [on for on in ons if truth[on] is None]
    for on in ons:
        if truth[on] is not None:
            out[on] = 0
    if is_and and not keep:  # every slot was always true
        _always_slot(out, S.slot_offset(r, 0), values)


def _neutralise(out: np.ndarray, ctx: BarContext) -> None:
    """Rules 9-12 on a genome that already passed rules 1-8 (in place)."""
    closed = [i for i in range(7) if i not in ctx.weekdays]
    out[WEEKDAY_IDX[closed]] = 0
    if not out[WEEKDAY_IDX].any():
        out[WEEKDAY_IDX[sorted(ctx.weekdays)]] = 1
    _window(out, ctx)
    values = ctx.session_values()
    if all(v is None for v in values):
        return
    for r in range(len(S.RULE_SETS)):
        _simplify(out, r, values)
    if not out[_ENTRY_ON].any():  # rule 12
        on = S.slot_offset(0, 0)
        out[on] = 1
        if constant_truth(out, on, values) is not None:
            _always_slot(out, on, values)


# ---- crossover and mutation -------------------------------------------------------------------

def cx_uniform(a: Any, b: Any, rng: np.random.Generator, indpb: float = 0.5,
               context: BarContext | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gene-wise uniform crossover: each gene swaps with probability ``indpb``."""
    a, b = _as_genome(a), _as_genome(b)
    mask = rng.random(S.N_GENES) < indpb
    return repair(np.where(mask, b, a), context), repair(np.where(mask, a, b), context)


def cx_section(a: Any, b: Any, rng: np.random.Generator,
               context: BarContext | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Semantic crossover: swap whole sections, or within a rule set whole slots, so building
    blocks (a complete condition, a whole risk profile) survive recombination."""
    a, b = _as_genome(a), _as_genome(b)
    units: list[np.ndarray] = []
    swap: list[bool] = []
    for sec in S.SECTIONS:
        whole = bool(rng.random() < 0.5)
        units.append(SECTION_IDX[sec])
        swap.append(whole)
        if sec in SLOT_IDX and not whole:
            for idx in SLOT_IDX[sec]:
                units.append(idx)
                swap.append(bool(rng.random() < 0.5))
    # A child must differ from both parents: some differing gene swaps and some stays. Units
    # whose genes are equal in both parents change nothing, so judge by the differing ones.
    differs = [bool(np.any(a[idx] != b[idx])) for idx in units]
    moved = [i for i, (s, d) in enumerate(zip(swap, differs, strict=True)) if s and d]
    if not moved and any(differs):
        swap[int(rng.choice(np.flatnonzero(differs)))] = True
    elif moved and not np.any((a != b) & ~_mask(units, swap)):
        swap[int(rng.choice(moved))] = False
    mask = _mask(units, swap)
    return repair(np.where(mask, b, a), context), repair(np.where(mask, a, b), context)


def _mask(units: list[np.ndarray], swap: list[bool]) -> np.ndarray:
    mask = np.zeros(S.N_GENES, dtype=bool)
    for idx, s in zip(units, swap, strict=True):
        if s:
            mask[idx] = True
    return mask


def mutate(g: Any, rng: np.random.Generator, indpb: float = 0.1,
           sigma: float = 0.1, context: BarContext | None = None) -> np.ndarray:
    """Each gene mutates with probability ``indpb``: continuous genes take a Gaussian step of
    ``sigma`` × range; categorical genes (slot ``on`` included, which thereby toggles) resample
    a different choice; integer genes step ±1 (a Gaussian-sized step on wide ranges such as
    max_bars, wrapping for session hours) or, half the time, resample."""
    out = _as_genome(g).copy()
    for i in np.flatnonzero(rng.random(S.N_GENES) < indpb):
        cur = out[i]
        if IS_CONT[i]:
            out[i] = cur + rng.normal(0.0, sigma * SPAN[i])
            continue
        if i in _PRIM_OF_PARAM:  # param genes live inside the slot primitive's grid
            prim = int(np.clip(np.round(out[_PRIM_OF_PARAM[i]]), 0, len(PRIMITIVES) - 1))
            lo, hi = 0, int(GRID_LEN[prim]) - 1
        else:
            lo, hi = int(LO[i]), int(HI[i])
        if hi <= lo:
            continue
        if IS_CAT[i] or rng.random() < 0.5:  # resample a value different from the current one
            v = int(rng.integers(lo, hi))
            out[i] = v + 1 if v >= cur else v
            continue
        step = max(1, round(abs(rng.normal(0.0, sigma * (hi - lo)))))
        step *= 1 if rng.random() < 0.5 else -1
        if i in _HOUR_GENES:
            out[i] = (cur + step) % 24
        else:
            new = cur + step
            out[i] = new if lo <= new <= hi else min(max(cur - step, lo), hi)
    return repair(out, context)


class DeapOps(NamedTuple):
    """In-place operators with DEAP's signatures, for ``toolbox.register``."""
    mate: Callable[[Any, Any], tuple[Any, Any]]
    mutate: Callable[[Any], tuple[Any]]


def _invalidate(ind: Any) -> None:
    fit = getattr(ind, "fitness", None)
    if fit is not None and fit.valid:
        del fit.values


def deap_toolbox_ops(rng: np.random.Generator, *, p_semantic: float = 0.5,
                     cx_indpb: float = 0.5, mut_indpb: float = 0.1,
                     sigma: float = 0.1, context: BarContext | None = None) -> DeapOps:
    """``mate`` (semantic crossover with probability ``p_semantic``, else uniform) and ``mutate``
    that overwrite numpy-array individuals (e.g. ``creator.Individual`` based on np.ndarray) in
    place and invalidate their fitness; deap itself is not needed here. Children are repaired
    for ``context`` (see ``repair``)."""

    def mate(ind1: Any, ind2: Any) -> tuple[Any, Any]:
        if rng.random() < p_semantic:
            c1, c2 = cx_section(ind1, ind2, rng, context)
        else:
            c1, c2 = cx_uniform(ind1, ind2, rng, cx_indpb, context)
        ind1[:], ind2[:] = c1, c2
        _invalidate(ind1)
        _invalidate(ind2)
        return ind1, ind2

    def mutate_(ind: Any) -> tuple[Any]:
        ind[:] = mutate(ind, rng, mut_indpb, sigma, context)
        _invalidate(ind)
        return (ind,)

    return DeapOps(mate, mutate_)


# ---- identity and diversity -------------------------------------------------------------------

def _slot_key(g: np.ndarray, on: int) -> list[Any]:
    prim, param, cmp_, rhs = (int(x) for x in g[on + 1: on + 5])
    if rhs == 0:
        return [prim, param, cmp_, "thr", float(g[on + 5])]
    param2 = int(g[on + 6])
    if param > param2:  # A > B ≡ B < A, A crosses above B ≡ B crosses below A
        param, param2, cmp_ = param2, param, cmp_ ^ 1
    return [prim, param, cmp_, "p2", param2]


def phenotype_key(g: Any, context: BarContext | None = None) -> str:
    """sha256 of the behaviour-relevant genes of ``repair(g, context)`` (the genome that is
    evaluated; with a context, genes that cannot act on it are neutralised first, so genomes
    that differ only there share a key).

    Dropped: disabled slots, a slot's unused thr or param2, tp_mult without take-profit,
    max_bars without the time exit, session hours when start == end, and the logic of a rule
    set with fewer than two distinct enabled slots. Enabled slots are sorted and de-duplicated
    (AND/OR commute and are idempotent), and param2 slots are written with the lower grid index
    on the left, so equivalent genomes share the evaluation cache."""
    r = repair(g, context)
    doc: dict[str, Any] = {"v": S.SCHEMA_VERSION}
    for k, rs in enumerate(S.RULE_SETS):
        slots = sorted({json.dumps(_slot_key(r, on)) for on in SLOT_ON[k * S.K_SLOTS:
                                                                       (k + 1) * S.K_SLOTS]
                        if r[on] == 1})
        doc[rs] = [int(r[S.slot_offset(k, 0) - 1]) if len(slots) >= 2 else None, slots]
    doc["regime"] = r[REGIME_IDX].tolist()
    start, end = int(r[S.SESSION_START]), int(r[S.SESSION_END])
    doc["session"] = [None if start == end else [start, end], r[WEEKDAY_IDX].tolist()]
    risk = r[S.K_STOP: S.RISK_PCT + 1].tolist()
    if not r[S.USE_TP]:
        risk[S.TP_MULT - S.K_STOP] = None
    if not r[S.USE_MAX_BARS]:
        risk[S.MAX_BARS - S.K_STOP] = None
    doc["risk"] = risk
    doc["vol"] = r[S.BLEND_W: S.STORM_ABOVE + 1].tolist()
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def genotype_distance(a: Any, b: Any) -> float:
    """Mean per-gene distance in [0, 1]: |Δ|/range for numeric genes, 0/1 for categorical."""
    a, b = _as_genome(a), _as_genome(b)
    d = np.where(IS_CAT, (a != b).astype(np.float64), np.abs(a - b) / SPAN)
    return float(np.clip(d, 0.0, 1.0).mean())
