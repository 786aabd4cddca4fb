"""The champion bundle: one canonical JSON document that carries everything a live host needs to
trade a strategy exactly as the gates judged it, signed with Ed25519. No pickle.

The live executor imports this module: it must not load mlflow, ray, torch, optuna, deap or any
farm package (``tests/test_bundle.py`` checks ``sys.modules`` in a fresh interpreter).

Document (the file's bytes are ``canonical`` of it: sorted keys, no spaces, UTF-8)::

    {"format": "emp-champion-bundle", "version": 1,
     "body": {
       "strategy": {"key", "rules", "genome": <genome file document>},
       "market":   {"symbol", "timeframe", "meta": <SymbolMeta: costs, lot, calendar ...>},
       "config":   {"fitness": <SimConfig>, "volatility": <VolatilityConfig>},
       "history":  {"origin": {"index", "ts", "ts_ns"}, "first", "last", "n_bars",
                    "sha256" (the full history the gates judged), "periods": {...}},
       "gates":    {"report_sha256", "policy_sha256", "rank", "figures", "n_eff", "pbo",
                    "holdout_reads", "accepted_peeking": null | reason},
       "run":      {"run_id", "git_commit"},
       "code":     {"schema_version", "schema_digest", "catalogue_digest", "kernel_version"},
       "versions": {"emp", "python", "numpy", "numba", "arch", "scipy"},
       "snapshot": {"n_bars", "last_ts_ns", "tables" (base64 of fitness.tables snapshot bytes),
                    "tables_sha256", "kernel_from_bar", "kernel_state" (float64 as hex)},
       "created_at", "created_by"},
     "signature": {"alg": "ed25519", "key_id", "value" (base64)} | null}

The signature covers ``canonical({"format", "version", "body"})``. The reader refuses a file
that is not in canonical form, a bad or unknown signature, an unsigned bundle (unless allowed
explicitly), a gene schema or primitive catalogue that differs from this build's, and a kernel
version this build does not know.
"""

from __future__ import annotations

import base64
import binascii
import json
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from champions.keys import key_id
from champions.pointer import sha256_hex
from core.errors import EmpError
from fitness.config import SimConfig
from fitness.simulator_nb import KERNEL_VERSION, N_STATE
from fitness.tables import SnapshotError, TablesState, state_bytes, state_from_bytes
from genome import schema as S
from genome.catalogue import catalogue_digest, schema_digest
from genome.codec import GenomeError, from_json
from market.config import SymbolMeta, VolatilityConfig

BUNDLE_FORMAT = "emp-champion-bundle"
BUNDLE_VERSION = 1
KNOWN_KERNELS = frozenset({KERNEL_VERSION})
VERSIONED = ("numpy", "numba", "arch", "scipy")


class BundleError(EmpError, ValueError):
    """A bundle that must not be traded; the message says which file and why."""


def canonical(obj: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def floats_hex(a: np.ndarray) -> list[str]:
    """float64 values as ``float.hex`` text: exact, and NaN-safe (JSON has no NaN)."""
    return [float(x).hex() for x in np.asarray(a, dtype=np.float64).ravel()]


def floats_of_hex(values: list[str]) -> np.ndarray:
    return np.array([float.fromhex(v) for v in values], dtype=np.float64)


def versions() -> dict[str, str]:
    """The versions that can change a genome's signals: numerics and the volatility fits."""
    out = {"python": platform.python_version()}
    for name in ("emp", *VERSIONED):
        try:
            out[name] = dist_version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def code_identity() -> dict[str, object]:
    """What the genome's numbers mean in this build (``genome.catalogue``) and the kernel."""
    return {"schema_version": S.SCHEMA_VERSION, "schema_digest": schema_digest(),
            "catalogue_digest": catalogue_digest(), "kernel_version": KERNEL_VERSION}


def encode(body: dict[str, Any], private: Ed25519PrivateKey | None) -> bytes:
    """The bundle file's bytes: ``body`` wrapped, signed with ``private`` (None: unsigned)."""
    doc: dict[str, Any] = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "body": body}
    signature = None
    if private is not None:
        signature = {"alg": "ed25519", "key_id": key_id(private.public_key()),
                     "value": base64.b64encode(private.sign(canonical(doc))).decode("ascii")}
    return canonical({**doc, "signature": signature})


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, its parts parsed into the objects the kernel takes."""

    body: dict[str, Any]
    sha256: str            # of the file's bytes (what pointers and the registry name)
    key_id: str | None     # who signed it (None: unsigned, allowed explicitly)
    signature: str | None  # base64, as in the file
    genome: np.ndarray
    meta: SymbolMeta
    sim: SimConfig
    vol: VolatilityConfig
    tables_state: TablesState | None  # the tables after the judged history (None: not saved)
    kernel_state: np.ndarray | None   # float64[N_STATE] after the judged history

    @property
    def symbol(self) -> str:
        return str(self.body["market"]["symbol"])

    @property
    def timeframe(self) -> str:
        return str(self.body["market"]["timeframe"])

    @property
    def key(self) -> str:
        return str(self.body["strategy"]["key"])

    def version_drift(self) -> list[str]:
        """Differences between the versions the bundle was judged with and this host's: not a
        refusal (the digests and the kernel version are), but worth a warning."""
        here = versions()
        saved = self.body.get("versions", {})
        return [f"{n} {saved.get(n)} -> {here[n]}" for n in VERSIONED
                if saved.get(n) not in (None, here[n])]


def _get(body: dict[str, Any], path: str, kind: type | tuple[type, ...], where: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BundleError(f"{where}: body.{path} is missing")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, kind):  # no field of a bundle is a bool
        raise BundleError(f"{where}: body.{path} has the wrong type ({type(node).__name__})")
    return node


def _parse(data: bytes, where: str) -> dict[str, Any]:
    def reject(name: str) -> None:
        raise BundleError(f"{where}: {name} is not allowed in a bundle")

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=reject)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: not a bundle: invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a champion bundle (format "
                          f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{where}: bundle version {doc.get('version')!r}; this build reads "
                          f"version {BUNDLE_VERSION}")
    extra = sorted(set(doc) - {"format", "version", "body", "signature"})
    if extra or not isinstance(doc.get("body"), dict):
        raise BundleError(f"{where}: malformed bundle (unknown keys {extra} or no body)")
    if canonical(doc) != data:
        raise BundleError(f"{where}: not in canonical form: the file was edited or damaged")
    return doc


def _verify(doc: dict[str, Any], trusted: dict[str, Ed25519PublicKey], allow_unsigned: bool,
            where: str) -> tuple[str | None, str | None]:
    sig = doc.get("signature")
    if sig is None:
        if not allow_unsigned:
            raise BundleError(f"{where}: the bundle is unsigned; refusing it (pass "
                              f"--allow-unsigned to trade an unsigned bundle knowingly)")
        return None, None
    if not isinstance(sig, dict) or sig.get("alg") != "ed25519" or not all(
            isinstance(sig.get(k), str) for k in ("key_id", "value")):
        raise BundleError(f"{where}: malformed signature block")
    kid = sig["key_id"]
    public = trusted.get(kid)
    if public is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise BundleError(f"{where}: signed by key {kid}, which is not trusted here "
                          f"(trusted keys: {known})")
    try:
        raw = base64.b64decode(sig["value"], validate=True)
        public.verify(raw, canonical({k: doc[k] for k in ("format", "version", "body")}))
    except (binascii.Error, InvalidSignature):
        raise BundleError(f"{where}: the signature does not verify with key {kid}: the bundle "
                          f"was altered or signed by another key") from None
    return kid, sig["value"]


def _check_code(body: dict[str, Any], where: str) -> None:
    kernel = _get(body, "code.kernel_version", int, where)
    if kernel not in KNOWN_KERNELS:
        raise BundleError(f"{where}: written by kernel version {kernel}; this build runs "
                          f"kernel version(s) {sorted(KNOWN_KERNELS)}: its trades could differ")
    here = code_identity()
    for name, what in (("schema_version", "gene schema version"),
                       ("schema_digest", "gene schema"),
                       ("catalogue_digest", "primitive catalogue")):
        saved = _get(body, f"code.{name}", (int, str), where)
        if saved != here[name]:
            raise BundleError(f"{where}: {what} differs from this build's ({str(saved)[:12]} != "
                              f"{str(here[name])[:12]}): the genome would mean another strategy")


def snapshot_section(tables: TablesState, kernel: np.ndarray, last_ts_ns: int,
                     kernel_from_bar: int) -> dict[str, Any]:
    """``body.snapshot``: the tables' state (snapshot bytes, base64) and the kernel's state
    record (hex floats) after the last judged bar; ``_snapshot`` reads it back."""
    raw = state_bytes(tables)
    return {"n_bars": int(tables.n_bars), "last_ts_ns": int(last_ts_ns),
            "tables": base64.b64encode(raw).decode("ascii"), "tables_sha256": sha256_hex(raw),
            "kernel_from_bar": int(kernel_from_bar), "kernel_state": floats_hex(kernel)}


def _snapshot(body: dict[str, Any], where: str) -> tuple[TablesState | None, np.ndarray | None]:
    snap = body.get("snapshot")
    if snap is None:
        return None, None
    tables_b64 = _get(body, "snapshot.tables", str, where)
    try:
        raw = base64.b64decode(tables_b64, validate=True)
    except binascii.Error:
        raise BundleError(f"{where}: body.snapshot.tables is not base64") from None
    if sha256_hex(raw) != _get(body, "snapshot.tables_sha256", str, where):
        raise BundleError(f"{where}: the tables snapshot does not match its sha256")
    try:
        tables = state_from_bytes(raw, f"{where}: body.snapshot.tables")
    except SnapshotError as exc:
        raise BundleError(str(exc)) from None
    hexes = _get(body, "snapshot.kernel_state", list, where)
    try:
        state = floats_of_hex(hexes)
    except (TypeError, ValueError):
        raise BundleError(f"{where}: body.snapshot.kernel_state holds a non-float") from None
    if state.shape != (N_STATE,):
        raise BundleError(f"{where}: body.snapshot.kernel_state has {state.size} values, the "
                          f"kernel's state record {N_STATE}")
    if tables.n_bars != _get(body, "snapshot.n_bars", int, where):
        raise BundleError(f"{where}: the tables snapshot covers {tables.n_bars} bars, the "
                          f"bundle says {snap.get('n_bars')}")
    return tables, state


def read_bundle(source: Path | bytes, trusted: dict[str, Ed25519PublicKey], *,
                allow_unsigned: bool = False, where: str | None = None) -> Bundle:
    """The verified bundle at ``source`` (a path or the file's bytes), or a BundleError naming
    the file and the reason: not canonical, signature bad or by an untrusted key, unsigned
    (unless ``allow_unsigned``), another schema or catalogue, an unknown kernel version, or a
    damaged part."""
    if isinstance(source, bytes):
        data, where = source, where or "bundle"
    else:
        where = where or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BundleError(f"{where}: unreadable ({exc.strerror})") from None
    doc = _parse(data, where)
    kid, sig = _verify(doc, trusted, allow_unsigned, where)
    body = doc["body"]
    _check_code(body, where)
    try:
        genome = from_json(json.dumps(_get(body, "strategy.genome", dict, where)))
        meta = SymbolMeta.model_validate(_get(body, "market.meta", dict, where))
        sim = SimConfig.model_validate(_get(body, "config.fitness", dict, where))
        vol = VolatilityConfig.model_validate(_get(body, "config.volatility", dict, where))
    except GenomeError as exc:
        raise BundleError(f"{where}: body.strategy.genome: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{where}: {loc}: {first['msg']}") from None
    for path in ("market.symbol", "market.timeframe", "strategy.key", "history.sha256",
                 "gates.report_sha256", "run.run_id"):
        _get(body, path, str, where)
    tables, state = _snapshot(body, where)
    return Bundle(body, sha256_hex(data), kid, sig, genome, meta, sim, vol, tables, state)
