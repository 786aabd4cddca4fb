"""The run record: what a run leaves for the gates, readable without DEAP, Ray or the GA.

The GA driver writes it with every checkpoint, from the same state, into the run directory:

``front.json``
    ``version``; ``generation`` (of the state written) and ``generations`` (the run's target);
    ``objectives``: ``[{"name", "direction"}]`` in the run's order; ``trials``: distinct genomes
    evaluated; ``front``: one entry per final-front strategy in the order the gates judge them
    (best weighted fitness first, one entry per distinct strategy), each with
    ``phenotype_key`` (the full sha256 of the evaluated behaviour), ``key`` (its first 16
    characters), ``genome`` (the genome file's JSON object, as ``genome.codec.to_json`` writes
    it), ``rules`` (readable text), ``objectives`` (name -> value), ``weighted`` (the seeds'
    weighted fitness) and ``violation`` (0 = feasible); ``npz_sha256``: the sha256 of
    ``trials.npz``. Non-finite numbers are written as the text ``"nan"``, ``"inf"`` or
    ``"-inf"``.

``trials.npz``
    Arrays by name: ``keys`` (``U64`` [n], every distinct genome evaluated, in the run's trial
    cache order), ``metrics`` (float64 [n, folds, M], their per-fold kernel metrics),
    ``sketches`` (float32 [n, B], each trial's net returns on B evenly spaced training bars:
    what the gates cluster to count independent trials) and ``population`` (float64
    [P, N_GENES], the final population's distinct phenotypes, first occurrence first, islands in
    order). A later version may add arrays: readers take the ones they need by name and ignore
    the others.

Both are written atomically, the npz first; the JSON names the npz's sha256, so a torn or
tampered pair is refused instead of judged. No pickle: ``np.savez``, loaded with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes
from core.errors import EmpError
from core.jsonio import read_json, write_json

VERSION = 1
FRONT_FILE = "front.json"
TRIALS_FILE = "trials.npz"
ARRAYS = ("keys", "metrics", "sketches", "population")  # every record has these


class RecordError(EmpError, RuntimeError):
    """A run record is missing, torn, or of another version."""


@dataclass(frozen=True)
class RunRecord:
    front: dict[str, Any]          # front.json, as parsed
    arrays: dict[str, np.ndarray]  # trials.npz, by name


def write(run_dir: Path, front: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``trials.npz`` (every array of ``arrays``) and then ``front.json`` (``front`` plus
    the version and the npz's sha256)."""
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"run record arrays missing: {missing}")
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise ValueError(f"run record array {name!r}: object arrays would need pickle")
    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(arr) for name, arr in arrays.items()})
    blob = buf.getvalue()
    atomic_write_bytes(Path(run_dir) / TRIALS_FILE, blob)
    write_json(Path(run_dir) / FRONT_FILE, {"version": VERSION, **front,
                                            "npz_sha256": hashlib.sha256(blob).hexdigest()})


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / FRONT_FILE).exists() and (Path(run_dir) / TRIALS_FILE).exists()


def read(run_dir: Path) -> RunRecord:
    """The record of ``run_dir``, checked: both files present, the version known, the npz the
    one ``front.json`` names, every required array present."""
    front_path, npz_path = Path(run_dir) / FRONT_FILE, Path(run_dir) / TRIALS_FILE
    if not exists(run_dir):
        raise RecordError(f"{run_dir}: no run record ({FRONT_FILE} and {TRIALS_FILE}); they are "
                          f"written with every checkpoint of an evolution")
    front = read_json(front_path, RecordError)
    if not isinstance(front, dict) or front.get("version") != VERSION:
        version = front.get("version") if isinstance(front, dict) else None
        raise RecordError(f"{front_path}: run record version {version} != {VERSION}")
    blob = npz_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != front.get("npz_sha256"):
        raise RecordError(f"{npz_path}: does not match {FRONT_FILE} (torn or edited)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except ValueError as exc:
        raise RecordError(f"{npz_path}: unreadable: {exc}") from None
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise RecordError(f"{npz_path}: arrays missing: {missing}")
    return RunRecord(front, arrays)
