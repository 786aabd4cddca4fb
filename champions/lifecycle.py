"""After promotion: rollback, retirement, and reading champions back (show, diff).

Every state change goes through the registry (one audit row each), then the stage pointer,
then the MLflow alias, in that order, as ``emp promote`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from champions import mlflow_models
from champions.bundle import Bundle, read_bundle
from champions.keys import load_trusted_keys, trusted_key_sources
from champions.pointer import (
    PointerError,
    champions_root,
    read_pointer,
    remove_pointer,
    write_pointer,
)
from champions.registry import Champion, Registry, RegistryError, who
from genome.schema import GENES


@dataclass(frozen=True)
class Rollback:
    replaced: Champion   # the live champion rolled back (now retired)
    restored: Champion   # the previous live champion (live again)
    warnings: tuple[str, ...]


def load_bundle(home: Path, champ: Champion) -> Bundle:
    """The champion's bundle from the champions directory, verified with the farm's keys."""
    path = champions_root(home) / champ.bundle_path
    return read_bundle(path, load_trusted_keys(trusted_key_sources(home)))


def _point(home: Path, stage: str, champ: Champion, bundle: Bundle) -> None:
    write_pointer(champions_root(home), stage=stage, symbol=champ.symbol,
                  timeframe=champ.timeframe, sha256=champ.bundle_sha256, signature=bundle.signature, key_id=bundle.key_id,
                  champion_id=champ.id, run_id=champ.run_id, key=champ.key)


def _alias(home: Path, champ: Champion, stage: str, log_mlflow: bool) -> list[str]:
    if not log_mlflow:
        return []
    try:
        version = mlflow_models.version_of(home, champ.symbol, champ.timeframe,
                                           champ.bundle_sha256)
        if version is None:
            return [f"no MLflow model version holds bundle {champ.bundle_sha256[:12]}; the "
                    f"alias was not moved"]
        mlflow_models.set_alias(home, champ.symbol, champ.timeframe, stage, version)
    except Exception as exc:  # the change stands; only the MLflow view lags
        return [f"MLflow alias not moved ({type(exc).__name__})"]
    return []


def live_timeframe(reg: Registry, symbol: str, timeframe: str | None) -> str:
    if timeframe:
        return timeframe
    tfs = sorted({c.timeframe for c in reg.champions(symbol=symbol, state="live")})
    if len(tfs) != 1:
        raise RegistryError(f"{symbol} has live champions on {', '.join(tfs) or 'no timeframe'}; "
                           f"name one with --timeframe")
    return tfs[0]


def rollback(home: Path, symbol: str, timeframe: str | None, reason: str, *, registry_url: str,
             log_mlflow: bool = True) -> Rollback:
    """Put back the live champion that the current one replaced (one transaction, two audit
    rows), then the live pointer and the ``champion`` alias."""
    if not reason.strip():
        raise RegistryError("--reason is empty: say why the champion is rolled back (it is audited)")
    with Registry(registry_url) as reg:
        tf = live_timeframe(reg, symbol, timeframe)
        target = reg.rollback_target(symbol, tf)
        if target is None:
            raise RegistryError(f"{symbol}/{tf} has no earlier live champion to roll back to")
        bundle = load_bundle(home, target)  # before any change: a damaged bundle stops here
        replaced, restored = reg.rollback(symbol, tf, who=who(), reason=reason.strip())
    _point(home, "live", restored, bundle)
    return Rollback(replaced, restored, tuple(_alias(home, restored, "live", log_mlflow)))


def retire(home: Path, champion_id: int, reason: str, *, registry_url: str,
           log_mlflow: bool = True) -> Champion:
    """Retire a champion; if a stage pointer names it, that pointer is removed (the executor
    then holds no champion for the stage and opens nothing) and the alias dropped."""
    if not reason.strip():
        raise RegistryError("--reason is empty: say why the champion is retired (it is audited)")
    with Registry(registry_url) as reg:
        champ = reg.get(champion_id)
        stage = champ.state if champ.state in ("live", "paper") else None
        reg.transition(champ.id, "retired", action="retire", who=who(), reason=reason.strip())
        champ = reg.get(champ.id)
    if stage is not None:
        leave_stage(home, champ, stage, log_mlflow)
    return champ


def leave_stage(home: Path, champ: Champion, stage: str, log_mlflow: bool) -> None:
    """A champion no longer at ``stage``: the stage's pointer, if it names the champion, is
    removed, and so is the stage's MLflow alias if it names one of its versions."""
    try:
        pointer = read_pointer(champions_root(home) / champ.symbol, stage)
    except PointerError:
        pointer = None
    if pointer is not None and pointer.champion_id == champ.id:
        remove_pointer(pointer)
    if log_mlflow:
        mlflow_models.drop_alias(home, champ.symbol, champ.timeframe, stage, champ.run_id,
                                 champ.key)


def resolve_champion(home: Path, reg: Registry, ref: str) -> tuple[str, Bundle]:
    """A champion id, or a bundle file path: a label and the verified bundle."""
    if ref.isdigit():
        champ = reg.get(int(ref))
        return f"#{champ.id}", load_bundle(home, champ)
    path = Path(ref)
    if not path.is_file():
        raise RegistryError(f"{ref!r} is neither a champion id nor a bundle file")
    return str(path), read_bundle(path, load_trusted_keys(trusted_key_sources(home)))


def _flat(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k in sorted(node):
            yield from _flat(node[k], f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, node


SKIP = ("snapshot.tables", "snapshot.kernel_state", "strategy.genome")


def diff(a: Bundle, b: Bundle) -> list[str]:
    """Lines ``field: A -> B`` for every difference: genes by name, then the other fields
    (snapshots are compared by digest, not printed)."""
    out = [f"gene {g.name}: {x:g} -> {y:g}" for g, x, y in zip(GENES, a.genome, b.genome,
                                                                strict=True) if x != y]
    fa, fb = dict(_flat(a.body)), dict(_flat(b.body))
    for k in sorted(fa.keys() | fb.keys()):
        if k.startswith(SKIP):
            continue
        va, vb = fa.get(k, "(none)"), fb.get(k, "(none)")
        if va != vb:
            out.append(f"{k}: {json.dumps(va)} -> {json.dumps(vb)}")
    return out


def summary(b: Bundle) -> dict[str, Any]:
    """What ``emp champions show`` prints of a bundle."""
    body = b.body
    return {"sha256": b.sha256, "signed_by": b.key_id, "symbol": b.symbol,
            "timeframe": b.timeframe, "candidate": b.key, "rules": body["strategy"]["rules"],
            "run_id": body["run"]["run_id"], "git_commit": body["run"]["git_commit"],
            "history": {k: body["history"].get(k) for k in ("first", "last", "n_bars")},
            "origin": body["history"]["origin"], "gates": {
                k: body["gates"].get(k) for k in ("rank", "figures", "n_eff", "pbo",
                                                  "holdout_reads", "accepted_peeking")},
            "code": body["code"], "versions": body["versions"],
            "snapshot_bars": (body.get("snapshot") or {}).get("n_bars"),
            "created": f"{body['created_at']} by {body['created_by']}",
            "version_drift": b.version_drift()}
