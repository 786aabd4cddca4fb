"""DEAP NSGA-II with constraint-domination, numpy-array individuals, islands and migration.

Constraint-domination (Deb): a genome with a smaller constraint violation dominates one with a
larger violation; between equal violations (both feasible, typically) Pareto dominance on the
objectives decides. It is built into the fitness's ``dominates``, so DEAP's non-dominated
sorting, crowding and ``selTournamentDCD`` all respect it without any penalty term.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

import numpy as np
from deap import base, creator, tools


class ConstrainedFitness(base.Fitness):
    """DEAP fitness with a constraint violation (0 = feasible) consulted first."""

    weights: tuple[float, ...] = ()

    def __init__(self, values: tuple[float, ...] = ()) -> None:
        super().__init__(values)
        self.violation = 0.0

    def dominates(self, other: ConstrainedFitness, obj: slice = slice(None)) -> bool:  # type: ignore[override]
        if self.violation != other.violation:
            return self.violation < other.violation
        return super().dominates(other, obj)

    def __deepcopy__(self, memo: dict) -> ConstrainedFitness:
        copy_ = super().__deepcopy__(memo)
        copy_.violation = self.violation
        if hasattr(self, "crowding_dist"):
            copy_.crowding_dist = self.crowding_dist
        return copy_


def individual_class(weights: tuple[float, ...]) -> type:
    """A numpy-array individual class whose fitness has these weights (one per objective set)."""
    tag = "_".join("p" if w > 0 else "m" for w in weights)
    fit_name, ind_name = f"EMPFitness_{tag}", f"EMPIndividual_{tag}"
    if not hasattr(creator, fit_name):
        creator.create(fit_name, ConstrainedFitness, weights=weights)
        creator.create(ind_name, np.ndarray, fitness=getattr(creator, fit_name))
    return getattr(creator, ind_name)


def make_individual(cls: type, genes: np.ndarray) -> np.ndarray:
    return cls(np.array(genes, dtype=np.float64))  # DEAP's ndarray individuals copy the input


def variation(pop: list, cxpb: float, mate: Callable, mutate: Callable,
              rng: np.random.Generator) -> list:
    """Tournament (dominance, then crowding) parents, pairwise crossover, per-gene mutation."""
    parents = tools.selTournamentDCD(pop, len(pop))
    offspring = [copy.deepcopy(p) for p in parents]
    for i in range(0, len(offspring) - 1, 2):
        if rng.random() < cxpb:
            mate(offspring[i], offspring[i + 1])
    for child in offspring:
        mutate(child)
    return offspring


def select(pop: list, k: int) -> list:
    """NSGA-II environmental selection (assigns crowding distances used by the tournament)."""
    return tools.selNSGA2(pop, k)


def migrate(islands: list[list], k: int) -> None:
    """Ring migration: the k best of island i join island i+1, which then reselects its size."""
    if len(islands) < 2:
        return
    emigrants = [[copy.deepcopy(ind) for ind in tools.selNSGA2(isl, k)] for isl in islands]
    for i in range(len(islands)):
        target = (i + 1) % len(islands)
        islands[target] = select(islands[target] + emigrants[i], len(islands[target]))


def pareto_front(individuals: list) -> list:
    """First non-dominated front under constraint-domination (duplicates removed)."""
    if not individuals:
        return []
    front = tools.sortNondominated(individuals, len(individuals), first_front_only=True)[0]
    seen: set[bytes] = set()
    out = []
    for ind in front:
        key = np.asarray(ind).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(ind)
    return out


def python_random_state() -> list:
    """``random.getstate()`` as JSON-able lists (DEAP's tournament uses the global ``random``)."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_python_random_state(state: list) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))
