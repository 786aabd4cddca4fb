"""From per-fold kernel metrics to objective vectors, the trade constraint and the seeds'
weighted fitness. Pure numpy."""

from __future__ import annotations

import numpy as np

from evolution.config import EvolutionConfig, ObjectiveSpec
from fitness.metrics import METRIC_INDEX

# The seeds' weights (return 0.4, risk 0.3, drawdown 0.2, stability 0.1). The scalar is reported
# and breaks ties; selection itself is NSGA-II on the separate objectives.
WEIGHTS = {"annual_return": 0.4, "volatility": -0.3, "max_drawdown": -0.2, "stability": 0.1}

_AGG = {"mean": np.mean, "min": np.min, "max": np.max}


def objective_values(metrics: np.ndarray, specs: list[ObjectiveSpec]) -> np.ndarray:
    """``metrics[n, folds, M]`` -> ``[n, n_objectives]`` in the metrics' own units."""
    cols = [_AGG[s.agg](metrics[:, :, METRIC_INDEX[s.metric]], axis=1) for s in specs]
    return np.stack(cols, axis=1)


def deap_weights(specs: list[ObjectiveSpec]) -> tuple[float, ...]:
    return tuple(1.0 if s.direction == "max" else -1.0 for s in specs)


def violation(metrics: np.ndarray, cfg: EvolutionConfig) -> np.ndarray:
    """How far each genome is below the minimum trades per year (0 = feasible), relative."""
    if cfg.min_trades_per_year <= 0:
        return np.zeros(metrics.shape[0])
    tpy = metrics[:, :, METRIC_INDEX["trades_per_year"]].mean(axis=1)
    return np.maximum(0.0, cfg.min_trades_per_year - tpy) / cfg.min_trades_per_year


def weighted_fitness(metrics: np.ndarray) -> np.ndarray:
    """0.4·annual return − 0.3·volatility − 0.2·max drawdown + 0.1·stability (fold means;
    drawdown is the worst fold)."""
    out = np.zeros(metrics.shape[0])
    for name, w in WEIGHTS.items():
        col = metrics[:, :, METRIC_INDEX[name]]
        out += w * (col.max(axis=1) if name == "max_drawdown" else col.mean(axis=1))
    return out


def hypervolume(points: np.ndarray, specs: list[ObjectiveSpec]) -> float:
    """Hypervolume of ``points`` (objective units) against each objective's fixed ``ref``.

    Points are turned into minimisation and measured exactly with ``moocore`` (the library DEAP
    uses); a point no better than the reference in some objective adds nothing.
    """
    import moocore

    if points.size == 0:
        return 0.0
    sign = np.array([-1.0 if s.direction == "max" else 1.0 for s in specs])
    ref = np.array([s.ref for s in specs]) * sign
    pts = points * sign
    pts = pts[(pts < ref).all(axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(np.ascontiguousarray(pts, dtype=np.float64), ref=ref))
