"""Checkpoints: everything needed to continue a run exactly, as an npz of arrays plus a JSON
pointer that names it.

Each generation's arrays go to their own file, ``checkpoint-gNNNNNN-<sha>.npz``; then
``checkpoint.json`` is replaced (one atomic rename) by a document naming that file, its
sha256, the generation, the RNG states and the counters, with a sha256 over the document's own
canonical form. Until that rename the pointer still names the previous generation's npz, which
is kept (with the one before it) until a newer generation is complete, so a crash at any
moment leaves the last good generation resumable. The document is validated field by field
against a schema before use; an edited generation or RNG state fails its digest. No pickle:
arrays go through ``np.savez`` and are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.atomic import atomic_write_bytes, fsync_dir
from core.errors import EmpError
from core.integrity import digest, pause_for_test
from core.jsonio import write_json

VERSION = 3
POINTER = "checkpoint.json"
_NPZ = re.compile(r"checkpoint-g\d{6}-[0-9a-f]{12}\.npz")
_HEX64 = r"^[0-9a-f]{64}$"


class CheckpointError(EmpError, RuntimeError):
    """A checkpoint is missing, torn, edited or does not match the run."""


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


# ---- the schema of checkpoint.json ------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Pcg64State(_Model):
    state: int = Field(ge=0, lt=2**128)
    inc: int = Field(ge=0, lt=2**128)


class _NumpyRng(_Model):
    bit_generator: Literal["PCG64"]
    state: _Pcg64State
    has_uint32: int = Field(ge=0, le=1)
    uinteger: int = Field(ge=0, lt=2**32)


_MtWords = Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]],
                    Field(min_length=625, max_length=625)]


class _Pointer(_Model):
    version: Literal[3]
    generation: int = Field(ge=0)
    config_digest: str = Field(pattern=_HEX64)
    trials: int = Field(ge=0)
    evaluations: int = Field(ge=0)
    numpy_rng: _NumpyRng
    # random.getstate(): (version 3, 624 words + the index, gauss_next)
    python_rng: tuple[Literal[3], _MtWords, float | None]
    islands: int = Field(ge=1)
    npz: str = Field(pattern=r"^checkpoint-g\d{6}-[0-9a-f]{12}\.npz$")
    npz_sha256: str = Field(pattern=_HEX64)
    sha256: str = Field(pattern=_HEX64)


def _schema_error(path: Path, exc: ValidationError) -> CheckpointError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(document)"
    return CheckpointError(f"{path}: invalid checkpoint: {where}: {first['msg']} "
                           f"({exc.error_count()} problem(s)); it was edited or damaged")


# ---- save / load --------------------------------------------------------------------------------

def _arrays(snap: Snapshot) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"cache_keys": snap.cache_keys.astype("U64"),
                                     "cache_metrics": snap.cache_metrics,
                                     "cache_sketches": snap.cache_sketches}
    for i, isl in enumerate(snap.islands):
        for name, arr in isl.items():
            arrays[f"island{i}_{name}"] = arr
    for name, arr in snap.hof.items():
        arrays[f"hof_{name}"] = arr
    return arrays


def current_npz(run_dir: Path) -> str | None:
    """The npz file the pointer names now (None when there is none or it is unreadable)."""
    try:
        name = json.loads((Path(run_dir) / POINTER).read_bytes()).get("npz")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and _NPZ.fullmatch(name) else None


def save(run_dir: Path, snap: Snapshot) -> None:
    """Write this generation's npz, then switch the pointer to it (one atomic rename); keep the
    previous generation's npz and delete older ones."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    np.savez(buf, **_arrays(snap))
    blob = buf.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    name = f"checkpoint-g{snap.generation:06d}-{sha[:12]}.npz"
    previous = current_npz(run_dir)
    atomic_write_bytes(run_dir / name, blob)
    pause_for_test(f"checkpoint:{snap.generation}")  # a crash here must lose nothing
    meta: dict[str, Any] = {
        "version": VERSION, "generation": snap.generation, "config_digest": snap.config_digest,
        "trials": snap.trials, "evaluations": snap.evaluations, "numpy_rng": snap.numpy_rng,
        "python_rng": snap.python_rng, "islands": len(snap.islands), "npz": name,
        "npz_sha256": sha}
    meta["sha256"] = digest(meta)
    write_json(run_dir / POINTER, meta, indent=1)
    keep = {name, previous}
    for old in run_dir.glob("checkpoint-g*.npz"):
        if old.name not in keep and _NPZ.fullmatch(old.name):
            old.unlink(missing_ok=True)
    fsync_dir(run_dir)


def generation_of(run_dir: Path) -> int:
    """The generation of the (validated) checkpoint, without reading its arrays."""
    return _pointer(Path(run_dir))[0].generation


def load_digest(run_dir: Path) -> str:
    """The config digest of the (validated) checkpoint, without reading its arrays."""
    return _pointer(Path(run_dir))[0].config_digest


def _pointer(run_dir: Path) -> tuple[_Pointer, Path]:
    path = run_dir / POINTER
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (the run stopped before "
                              f"its first generation was complete)")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not JSON ({exc}); it was edited or damaged") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{path}: invalid checkpoint: not a JSON object")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc.get('version')!r}; this EMP "
                              f"resumes version {VERSION} only")
    try:
        meta = _Pointer.model_validate_json(raw)
    except ValidationError as exc:
        raise _schema_error(path, exc) from None
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if digest(body) != meta.sha256:
        raise CheckpointError(f"{path}: its contents do not match its sha256: the file was "
                              f"edited (generation {doc.get('generation')}); refusing to resume "
                              f"from a changed checkpoint")
    return meta, path


def _shaped(npz: Path, arrays: dict[str, np.ndarray], name: str, ndim: int, kind: str,
            rows: int | None) -> np.ndarray:
    if name not in arrays:
        raise CheckpointError(f"{npz}: array {name!r} missing")
    arr = arrays[name]
    if arr.ndim != ndim or arr.dtype.kind not in kind or (rows is not None
                                                         and arr.shape[0] != rows):
        raise CheckpointError(f"{npz}: array {name!r} has shape {arr.shape} and dtype "
                              f"{arr.dtype}, which this checkpoint cannot hold")
    return arr


def load(run_dir: Path) -> Snapshot:
    """The validated snapshot the pointer names: schema, digest, the npz's sha256 and every
    array's shape are checked; any failure is a ``CheckpointError`` naming what is wrong."""
    run_dir = Path(run_dir)
    meta, path = _pointer(run_dir)
    npz = run_dir / meta.npz
    try:
        blob = npz.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{npz}: named by {path} but unreadable: {exc.strerror}") from None
    if hashlib.sha256(blob).hexdigest() != meta.npz_sha256:
        raise CheckpointError(f"{npz}: does not match {POINTER} (torn or edited)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{npz}: unreadable: {exc}") from None
    keys = _shaped(npz, arrays, "cache_keys", 1, "U", meta.trials)
    metrics = _shaped(npz, arrays, "cache_metrics", 3, "f", meta.trials)
    sketches = _shaped(npz, arrays, "cache_sketches", 2, "f", meta.trials)
    islands = []
    for i in range(meta.islands):
        genes = _shaped(npz, arrays, f"island{i}_genes", 2, "f", None)
        islands.append({"genes": genes, **{
            n: _shaped(npz, arrays, f"island{i}_{n}", d, "f", genes.shape[0])
            for n, d in (("values", 2), ("violation", 1), ("crowding", 1))}})
    hof_genes = _shaped(npz, arrays, "hof_genes", 2, "f", None)
    hof = {"genes": hof_genes,
           "values": _shaped(npz, arrays, "hof_values", 2, "f", hof_genes.shape[0]),
           "violation": _shaped(npz, arrays, "hof_violation", 1, "f", hof_genes.shape[0])}
    return Snapshot(meta.generation, meta.config_digest, meta.trials, meta.evaluations,
                    meta.numpy_rng.model_dump(), [meta.python_rng[0], meta.python_rng[1],
                                                  meta.python_rng[2]],
                    islands, hof, keys, metrics, sketches)
