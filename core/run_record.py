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
    weighted fitness) and ``violation`` (0 = feasible); ``trials_file`` and ``npz_sha256``:
    the trials file's name and sha256; ``sha256``: of the document itself. Non-finite numbers are written as the text ``"nan"``, ``"inf"`` or
    ``"-inf"``.

``trials-<sha>.npz``
    Arrays by name: ``keys`` (``U64`` [n], every distinct genome evaluated, in the run's trial
    cache order), ``metrics`` (float64 [n, folds, M], their per-fold kernel metrics),
    ``sketches`` (float32 [n, B], each trial's net returns on B evenly spaced training bars:
    what the gates cluster to count independent trials) and ``population`` (float64
    [P, N_GENES], the final population's distinct phenotypes, first occurrence first, islands in
    order). A later version may add arrays: readers take the ones they need by name and ignore
    the others.

The arrays are written to ``trials-<sha>.npz`` (named by their sha256), atomically; then
``front.json`` is replaced (one atomic rename) by the document naming that file
(``trials_file``) and its sha256 (``npz_sha256``), with a sha256 over the document's own
canonical form (``sha256``). Until that rename ``front.json`` still names the previous npz,
which is kept until a newer record is complete: a crash at any moment leaves the previous
record whole, and a torn, tampered or hand-edited pair is refused instead of judged. Version 1
records (``trials.npz``, no document digest) are still read. No pickle: ``np.savez``, loaded
with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write_bytes, fsync_dir
from core.errors import EmpError
from core.integrity import digest
from core.jsonio import read_json, write_json

VERSION = 2
FRONT_FILE = "front.json"
TRIALS_FILE = "trials.npz"  # version 1 records
_TRIALS = re.compile(r"trials-[0-9a-f]{16}\.npz")
ARRAYS = ("keys", "metrics", "sketches", "population")  # every record has these


class RecordError(EmpError, RuntimeError):
    """A run record is missing, torn, or of another version."""


@dataclass(frozen=True)
class RunRecord:
    front: dict[str, Any]          # front.json, as parsed
    arrays: dict[str, np.ndarray]  # trials.npz, by name


def write(run_dir: Path, front: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``trials-<sha>.npz`` (every array of ``arrays``), then switch ``front.json`` to it
    (``front`` plus the version, the npz's name and sha256, and the document's digest); keep the
    previous npz, delete older ones."""
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise ValueError(f"run record arrays missing: {missing}")
    for name, arr in arrays.items():
        if np.asarray(arr).dtype.hasobject:
            raise ValueError(f"run record array {name!r}: object arrays would need pickle")
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    np.savez(buf, **{name: np.asarray(arr) for name, arr in arrays.items()})
    blob = buf.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    name = f"trials-{sha[:16]}.npz"
    previous = _named_npz(run_dir)
    atomic_write_bytes(run_dir / name, blob)
    doc = {"version": VERSION, **front, "trials_file": name, "npz_sha256": sha}
    doc["sha256"] = digest(doc)
    write_json(run_dir / FRONT_FILE, doc)
    for old in run_dir.glob("trials-*.npz"):
        if old.name not in (name, previous) and _TRIALS.fullmatch(old.name):
            old.unlink(missing_ok=True)
    fsync_dir(run_dir)


def _named_npz(run_dir: Path) -> str | None:
    """The npz ``front.json`` names now (None when there is none or it is unreadable)."""
    try:
        doc = json.loads((Path(run_dir) / FRONT_FILE).read_bytes())
        name = doc.get("trials_file", TRIALS_FILE if doc.get("version") == 1 else None)
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and (_TRIALS.fullmatch(name)
                                              or name == TRIALS_FILE) else None


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / FRONT_FILE).exists()


def read(run_dir: Path) -> RunRecord:
    """The record of ``run_dir``, checked: the version known, the document's digest, the npz
    the one ``front.json`` names and hashes, every required array present."""
    front_path = Path(run_dir) / FRONT_FILE
    if not exists(run_dir):
        raise RecordError(f"{run_dir}: no run record ({FRONT_FILE}); it is written with every "
                          f"checkpoint of an evolution")
    front = read_json(front_path, RecordError)
    version = front.get("version") if isinstance(front, dict) else None
    if version not in (1, VERSION):
        raise RecordError(f"{front_path}: run record version {version} != {VERSION}")
    if version == VERSION and digest({k: v for k, v in front.items() if k != "sha256"}) \
            != front.get("sha256"):
        raise RecordError(f"{front_path}: its contents do not match its sha256 (edited)")
    name = _named_npz(run_dir)
    if name is None:
        raise RecordError(f"{front_path}: names no valid trials file")
    npz_path = Path(run_dir) / name
    try:
        blob = npz_path.read_bytes()
    except OSError as exc:
        raise RecordError(f"{npz_path}: named by {FRONT_FILE} but unreadable: "
                          f"{exc.strerror}") from None
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
