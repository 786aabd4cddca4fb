"""Checkpoints: everything needed to continue a run exactly, as JSON plus an npz of arrays.

Written after every generation, atomically (temp file, fsync, rename), npz first; the JSON
names the npz's sha256, so a torn or tampered pair is detected instead of silently resumed.
No pickle: arrays go through ``np.savez`` and are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from core.jsonio import read_json, write_json

VERSION = 2


class CheckpointError(EmpError, RuntimeError):
    """A checkpoint is missing, torn or does not match the run."""


@dataclass
class Snapshot:
    generation: int
    config_digest: str
    trials: int
    evaluations: int
    numpy_rng: dict[str, Any]
    python_rng: list
    islands: list[dict[str, np.ndarray]]  # genes, values, violation, crowding per island
    hof: dict[str, np.ndarray]           # genes, values, violation
    cache_keys: np.ndarray               # str [n]
    cache_metrics: np.ndarray            # float64 [n, folds, M]
    cache_sketches: np.ndarray           # float32 [n, B] per-trial return sketches


def save(run_dir: Path, snap: Snapshot) -> None:
    arrays: dict[str, np.ndarray] = {"cache_keys": snap.cache_keys.astype("U64"),
                                     "cache_metrics": snap.cache_metrics,
                                     "cache_sketches": snap.cache_sketches}
    for i, isl in enumerate(snap.islands):
        for name, arr in isl.items():
            arrays[f"island{i}_{name}"] = arr
    for name, arr in snap.hof.items():
        arrays[f"hof_{name}"] = arr
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    atomic_write_bytes(run_dir / "checkpoint.npz", blob)
    meta = {
        "version": VERSION, "generation": snap.generation, "config_digest": snap.config_digest,
        "trials": snap.trials, "evaluations": snap.evaluations, "numpy_rng": snap.numpy_rng,
        "python_rng": snap.python_rng, "islands": len(snap.islands),
        "npz_sha256": hashlib.sha256(blob).hexdigest(),
    }
    write_json(run_dir / "checkpoint.json", meta)


def load(run_dir: Path) -> Snapshot:
    meta_path, npz_path = run_dir / "checkpoint.json", run_dir / "checkpoint.npz"
    if not meta_path.exists() or not npz_path.exists():
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    meta = read_json(meta_path, CheckpointError)
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: checkpoint version {meta.get('version')} != {VERSION}")
    blob = npz_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["npz_sha256"]:
        raise CheckpointError(f"{npz_path}: does not match checkpoint.json (torn or edited)")
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    islands = []
    for i in range(meta["islands"]):
        islands.append({n: arrays[f"island{i}_{n}"] for n in ("genes", "values", "violation",
                                                               "crowding")})
    hof = {n: arrays[f"hof_{n}"] for n in ("genes", "values", "violation")}
    return Snapshot(meta["generation"], meta["config_digest"], meta["trials"],
                    meta["evaluations"], meta["numpy_rng"], meta["python_rng"], islands, hof,
                    arrays["cache_keys"], arrays["cache_metrics"], arrays["cache_sketches"])
