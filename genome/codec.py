"""Genome files: JSON with named genes and a sha256 of their canonical form. No pickle.

A file reads ``{"schema_version": 1, "genes": {name: value, ...}, "sha256": hex}``. The hash
covers the canonical JSON of ``{"genes", "schema_version"}`` (sorted keys, compact separators,
int/cat genes as JSON ints, continuous genes as shortest-round-trip floats), so a hand edit or a
corrupted copy is caught, and floats come back bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from core.errors import EmpError
from genome import schema as S
from genome.ops import validate


class GenomeError(EmpError, ValueError):
    """A genome file or genome that cannot be used; the message names the problem."""


def _values(g: np.ndarray) -> dict[str, int | float]:
    return {gene.name: float(v) if gene.kind == "cont" else int(v)
            for gene, v in zip(S.GENES, g, strict=True)}


def _digest(genes: dict[str, int | float], version: int) -> str:
    canon = json.dumps({"genes": genes, "schema_version": version}, sort_keys=True,
                       separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canon.encode()).hexdigest()


def to_json(g: Any) -> str:
    """The file text of a valid genome (genes in schema order, one per line)."""
    problems = validate(g)
    if problems:
        raise GenomeError("invalid genome: " + "; ".join(problems))
    genes = _values(np.asarray(g, dtype=np.float64))
    doc = {"schema_version": S.SCHEMA_VERSION, "genes": genes,
           "sha256": _digest(genes, S.SCHEMA_VERSION)}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def _reject_constant(name: str) -> float:
    raise GenomeError(f"{name} is not allowed in a genome file")


def _few(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "")


def from_json(text: str) -> np.ndarray:
    """Parse, check version, names, hash and validity; the genome or a GenomeError."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise GenomeError(f"not a genome file: invalid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise GenomeError("not a genome file: expected a JSON object")
    extra = sorted(set(doc) - {"schema_version", "genes", "sha256"})
    missing = sorted({"schema_version", "genes", "sha256"} - set(doc))
    if extra or missing:
        raise GenomeError(f"not a genome file: missing keys {missing}, unknown keys {extra}")
    version = doc["schema_version"]
    if version != S.SCHEMA_VERSION or isinstance(version, bool):
        raise GenomeError(f"schema_version {version!r} is not supported (this build reads "
                          f"version {S.SCHEMA_VERSION})")
    raw = doc["genes"]
    if not isinstance(raw, dict):
        raise GenomeError("genes: expected an object of name: value")
    missing = [g.name for g in S.GENES if g.name not in raw]
    unknown = sorted(set(raw) - set(S.INDEX))
    if missing:
        raise GenomeError(f"missing genes: {_few(missing)}")
    if unknown:
        raise GenomeError(f"unknown genes: {_few(unknown)}")
    genes: dict[str, int | float] = {}
    for gene in S.GENES:
        v = raw[gene.name]
        if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) > 1e300:
            raise GenomeError(f"{gene.name}: {v!r} is not a finite number in range")
        if gene.kind == "cont":
            genes[gene.name] = float(v)
        elif float(v).is_integer():
            genes[gene.name] = int(v)
        else:
            raise GenomeError(f"{gene.name}: {v!r} is not a whole number")
    want = _digest(genes, version)
    if doc["sha256"] != want:
        raise GenomeError(f"sha256 mismatch: the file says {str(doc['sha256'])[:16]}…, its genes "
                          f"hash to {want[:16]}… (edited or corrupted)")
    g = np.array([genes[gene.name] for gene in S.GENES], dtype=np.float64)
    problems = validate(g)
    if problems:
        raise GenomeError("invalid genome: " + "; ".join(problems))
    return g
