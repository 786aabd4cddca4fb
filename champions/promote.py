"""``emp promote``: turn an eligible candidate of a judged run into a signed champion bundle, in
one audited step.

Refused, before anything is written: a run without a gate report, a report edited since the
gates wrote it (its sha256), a candidate the report does not mark eligible, a history that
changed since the run was evolved or judged, and a hold-out read more than once (unless the
user accepts the peeking with a reason, which the bundle and the audit log record).

Then, in this order (each step safe to repeat if a later one fails):

1. the bundle: the candidate with everything needed to trade it elsewhere (``champions.bundle``),
   including the tables' and the kernel's state after the judged history, signed;
2. the bundle file under ``$EMP_HOME/champions/<symbol>/bundles/<sha256>.json`` (immutable);
3. an MLflow model version whose artifact is the bundle (logged to the run);
4. the registry: the champion's state change and its audit row (``champions.registry``);
5. the stage's pointer (``current.json`` for live, ``paper.json`` for paper), swapped atomically;
6. the MLflow alias (``champion`` for live, ``paper`` for paper) moved to the new version.

Live comes only after paper (``go_live``): a candidate not in ``paper`` is refused ("promote to
paper first"), and one in paper goes live only with a passing paper check of ITS bundle in the
executor's state store (``live.paper``: at least ``min_days`` trading days of paper results
within tolerance of the bundle replayed on the same bars). What goes live is that very bundle
(same sha256, no rebuild): what was checked on paper is what trades. The check's figures go
into the audit event's reason and the MLflow version's tags. A refusal writes nothing.
Rollback to a previous live champion is not gated (it was live).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from champions import mlflow_models
from champions.bundle import (
    Bundle,
    code_identity,
    encode,
    read_bundle,
    versions,
)
from champions.keys import default_private_key, key_id, load_private_key
from champions.lifecycle import leave_stage, load_bundle
from champions.pointer import Pointer, champions_root, sha256_hex, store_bundle, write_pointer
from champions.registry import Champion, Registry, default_url, who
from champions.snapshot import state_after
from core.digest import tables_digests
from core.errors import EmpError
from core.jsonio import read_json
from fitness.tables import origin_of
from gates.judge import REPORT_SHA, RunContext, load_run, resolve_run_id
from genome.codec import from_json

if TYPE_CHECKING:  # live.paper is imported on the live path only
    from live.paper import PaperCheck, PaperPolicy

STAGES = ("paper", "live")
Progress = Callable[[str], None]


class PromoteError(EmpError, ValueError):
    """A promotion refused; the message says why and what would allow it."""


def _quiet(message: str) -> None:
    return None


@dataclass(frozen=True)
class Promotion:
    champion: Champion
    bundle_path: Path
    sha256: str
    pointer: Pointer
    model_version: str | None  # the MLflow model version (None with log_mlflow=False)
    warnings: tuple[str, ...]
    paper: PaperCheck | None = None  # the paper check a promotion to live passed


def read_report(run_dir: Path) -> tuple[dict[str, Any], str]:
    """The run's gate report and its sha256, checked against the one the gates recorded."""
    gates = run_dir / "gates"
    path = gates / "report.json"
    if not path.exists():
        raise PromoteError(f"run {run_dir.name} has no gate report ({path}); judge it first: "
                           f"emp gates {run_dir.name}")
    data = path.read_bytes()
    sha = sha256_hex(data)
    try:
        recorded = (gates / REPORT_SHA).read_text().split()[0]
    except (OSError, IndexError):
        raise PromoteError(f"{gates / REPORT_SHA}: missing or empty: this report was written by "
                           f"an older EMP or damaged; judge the run again: emp gates "
                           f"{run_dir.name}") from None
    if sha != recorded:
        raise PromoteError(f"{path}: sha256 {sha[:12]} no longer matches the {recorded[:12]} the "
                           f"gates recorded: the report was edited since it was written; judge "
                           f"the run again")
    return read_json(path, PromoteError), sha


def eligible_candidate(report: dict[str, Any], key: str) -> dict[str, Any]:
    """The report's entry for ``key`` (or a unique prefix of 6 digits or more), refused unless
    every gate passed."""
    found = [c for c in report["candidates"] if c["key"] == key
             or (len(key) >= 6 and c["key"].startswith(key))]  # the verdict table shows 10 digits
    if len(found) != 1:
        shown = ", ".join(report.get("eligible", [])) or "none"
        what = "matches several candidates" if found else "is not"
        raise PromoteError(f"candidate {key!r} {what} in run {report['run_id']}'s gate report "
                           f"(eligible there: {shown})")
    cand = found[0]
    failed = [g["name"] for g in cand["gates"] if not g["passed"]]
    if not cand["eligible"] or failed:
        raise PromoteError(f"candidate {key} (#{cand['rank']}) of run {report['run_id']} is not "
                           f"eligible: it failed {', '.join(failed) or 'the gates'}")
    return cand


def holdout_reads(run_dir: Path) -> list[dict[str, Any]]:
    """Every gate pass that read this run's hold-out (``runs/<id>/gates/holdout_reads.json``)."""
    path = run_dir / "gates" / "holdout_reads.json"
    doc = read_json(path, PromoteError) if path.exists() else []
    return doc if isinstance(doc, list) else []


def check_peeking(run_dir: Path, accept_peeking: str | None) -> int:
    reads = holdout_reads(run_dir)
    if len(reads) > 1 and not (accept_peeking or "").strip():
        when = ", ".join(str(r.get("time", "?")) for r in reads[:5])
        raise PromoteError(
            f"the hold-out of run {run_dir.name} was read {len(reads)} times ({when}): after the "
            f"first look it no longer tests the candidate out of sample. To promote anyway, "
            f"give --accept-peeking \"REASON\" (recorded in the bundle and the audit log)")
    return len(reads)


def check_history(ctx: RunContext, report: dict[str, Any]) -> None:
    """The history now in the store is the one the gates judged (``load_run`` has already
    compared the periods with the ones the run was evolved on)."""
    judged = report.get("history_sha256")
    if judged is None:
        raise PromoteError(f"run {ctx.run_id}'s gate report does not record the history it "
                           f"judged (written by an older EMP); judge it again: emp gates "
                           f"{ctx.run_id}")
    now = ctx.bars.fingerprint()
    if now != judged:
        raise PromoteError(f"the history of {report['symbol']}/{report['timeframe']} changed "
                           f"since run {ctx.run_id} was judged (sha256 {judged[:12]} -> "
                           f"{now[:12]}); judge it again on the current history")


def snapshot(ctx: RunContext, genome: np.ndarray) -> dict[str, Any]:
    """The tables' and the kernel's state after the last judged bar, so the live executor
    continues from there instead of replaying years: the kernel runs from the first training
    bar to the end of the history, leaving its last position open (live semantics)."""
    start = int(ctx.layout.segments[0, 0])
    tables, section = state_after(genome, ctx.bars, ctx.meta, ctx.cfg.fitness,
                                  ctx.cfg.volatility, start)
    if tables_digests(tables) != tables_digests(ctx.tables):
        raise PromoteError(f"run {ctx.run_id}: the tables rebuilt for the snapshot differ from "
                           f"the judged ones (another arch, BLAS or CPU?); promote where the run "
                           f"was judged")
    return section


def build_body(ctx: RunContext, report: dict[str, Any], report_sha: str,
               cand: dict[str, Any], *, reads: int, accept_peeking: str | None,
               git_commit: str, by: str, progress: Progress = _quiet) -> dict[str, Any]:
    genome = from_json(json.dumps(cand["genome"]))
    idx = ctx.bars.index()
    data_json = ctx.run_dir / "data.json"
    evolved = read_json(data_json, PromoteError) if data_json.exists() else {}
    progress("building the tables' and the kernel's state at the end of the judged history")
    snap = snapshot(ctx, genome)
    return {
        "strategy": {"key": cand["key"], "rules": cand["rules"], "genome": cand["genome"]},
        "market": {"symbol": report["symbol"], "timeframe": report["timeframe"],
                   "meta": ctx.meta.model_dump(mode="json")},
        "config": {"fitness": ctx.cfg.fitness.model_dump(mode="json"),
                   "volatility": ctx.cfg.volatility.model_dump(mode="json")},
        "history": {"origin": origin_of(ctx.bars).to_json(), "first": str(idx[0]),
                    "last": str(idx[-1]), "n_bars": int(ctx.bars.n_bars),
                    "sha256": report["history_sha256"], "periods": report["periods"],
                    "evolved": {k: v for k, v in evolved.items() if k.endswith("sha256")}},
        "gates": {"report_sha256": report_sha, "policy_sha256": report["policy_sha256"],
                  "rank": cand["rank"], "figures": cand["figures"],
                  "n_eff": report["trial_count"]["effective"], "pbo": report["pbo"],
                  "trials": report["trials"], "holdout_reads": reads,
                  "accepted_peeking": (accept_peeking or None) if reads > 1 else None},
        "run": {"run_id": ctx.run_id, "git_commit": git_commit},
        "code": code_identity(),
        "versions": versions(),
        "snapshot": snap,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": by,
    }


def promote(home: Path, run_id: str, key: str, to: str, reason: str, *,
            accept_peeking: str | None = None, signing_key: Path | None = None,
            registry_url: str | None = None, log_mlflow: bool = True,
            paper_state: Path | None = None, paper_policy: PaperPolicy | None = None,
            progress: Progress = _quiet) -> Promotion:
    """Promote candidate ``key`` of run ``run_id`` to ``to`` (paper or live); see the module
    docstring for what is refused and what is written. ``paper_state``/``paper_policy``: the
    state store and the tolerances of the paper check a promotion to live needs (default
    ``$EMP_HOME/live/state.db``, ``PaperPolicy()``)."""
    if to not in STAGES:
        raise PromoteError(f"--to {to!r}: must be one of {', '.join(STAGES)}")
    if not reason.strip():
        raise PromoteError("--reason is empty: say why this champion is promoted (it is audited)")
    home = Path(home)
    run_id = resolve_run_id(home, run_id)
    run_dir = home / "runs" / run_id
    report, report_sha = read_report(run_dir)
    cand = eligible_candidate(report, key)
    key = cand["key"]
    reads = check_peeking(run_dir, accept_peeking)
    private = load_private_key(signing_key or default_private_key(home))
    if to == "live":
        return go_live(home, run_id, key, reason, registry_url=registry_url,
                       paper_state=paper_state, policy=paper_policy, log_mlflow=log_mlflow,
                       progress=progress)
    by = who()
    progress(f"loading run {run_id} and its history")
    ctx = load_run(home, run_id, progress=progress)
    check_history(ctx, report)
    git_commit = mlflow_models.run_commit(home, run_id) if log_mlflow else "unknown"
    body = build_body(ctx, report, report_sha, cand, reads=reads, accept_peeking=accept_peeking,
                      git_commit=git_commit, by=by, progress=progress)
    data = encode(body, private)
    bundle = read_bundle(data, {key_id(private.public_key()): private.public_key()}, where="new bundle")
    root = champions_root(home)
    path, sha = store_bundle(root, report["symbol"], data)
    assert sha == bundle.sha256
    version = None
    if log_mlflow:
        progress("registering the bundle as an MLflow model version")
        version = mlflow_models.register(home, run_id, path, bundle)
    audit_reason = reason.strip()
    if body["gates"]["accepted_peeking"]:
        audit_reason += f" [hold-out read {reads} times, accepted: {accept_peeking}]"
    rel = str(path.relative_to(root))
    with Registry(registry_url or default_url(home)) as reg:
        champ = reg.register(key=key, symbol=report["symbol"], timeframe=report["timeframe"],
                             run_id=run_id, bundle_sha256=sha, bundle_path=rel, who=by,
                             reason=f"eligible in gate report {report_sha[:12]}")
        before = champ.state
        reg.transition(champ.id, to, action="promote", who=by, reason=audit_reason,
                       bundle_sha256=sha, bundle_path=rel)
        champ = reg.get(champ.id)
    pointer = write_pointer(root, stage=to, symbol=report["symbol"],
                            timeframe=report["timeframe"], sha256=sha,
                            signature=bundle.signature, key_id=bundle.key_id,
                            champion_id=champ.id, run_id=run_id, key=key)
    warnings = []
    if before in STAGES:  # paper -> live (or back): the stage it left no longer names it
        leave_stage(home, champ, before, log_mlflow)
    if version is not None:
        try:
            mlflow_models.set_alias(home, report["symbol"], report["timeframe"], to, version)
        except Exception as exc:  # the promotion stands; only the MLflow view lags
            warnings.append(f"MLflow alias not moved ({type(exc).__name__}); the registry and "
                            f"the pointer are updated")
    return Promotion(champ, path, sha, pointer, version, tuple(warnings))


def default_paper_state(home: Path) -> Path:
    """The executor's state store by default (``emp live``'s ``state_path``)."""
    return Path(home) / "live" / "state.db"


def _not_paper(champ: Champion | None, run_id: str, key: str, min_days: int) -> PromoteError:
    state = "not promoted yet" if champ is None else f"{champ.state} (#{champ.id})"
    if champ is not None and champ.state == "live":
        return PromoteError(f"candidate {key} of run {run_id} is already live (#{champ.id})")
    return PromoteError(f"candidate {key} of run {run_id} is {state}, not paper: promote to "
                        f"paper first (emp promote {run_id} --candidate {key} --to paper), "
                        f"let `emp live` trade it for {min_days} paper days, then to live")


def paper_gate(champ: Champion, bundle: Bundle, state_path: Path,
               policy: PaperPolicy) -> PaperCheck:
    """The champion's paper record in ``state_path`` checked against its bundle; a
    PromoteError naming the store, the champion and the reason unless it passes."""
    from live.paper import PaperError, compare_paper, paper_record
    from live.state import StateError

    who_ = f"champion #{champ.id} ({champ.bundle_sha256[:12]})"
    try:
        check = compare_paper(paper_record(state_path, champ.symbol, champ.bundle_sha256),
                              bundle, policy)
    except (PaperError, StateError) as exc:
        raise PromoteError(f"paper gate refused {who_}: {exc}") from None
    if not check.ok:
        more = f" (+{len(check.reasons) - 2} more)" if len(check.reasons) > 2 else ""
        raise PromoteError(f"paper gate refused {who_} on state store {state_path}: "
                           f"{'; '.join(check.reasons[:2])}{more}")
    return check


def go_live(home: Path, run_id: str, key: str, reason: str, *, registry_url: str | None = None,
            paper_state: Path | None = None, policy: PaperPolicy | None = None,
            log_mlflow: bool = True, progress: Progress = _quiet) -> Promotion:
    """Paper -> live for candidate ``key`` of run ``run_id`` (already resolved and checked
    eligible by ``promote``): refused unless it is the paper champion and its paper record
    passes ``paper_gate``; then its own bundle goes live (registry, pointer, alias)."""
    from live.paper import PaperPolicy

    policy = policy or PaperPolicy()
    home = Path(home)
    url = registry_url or default_url(home)
    with Registry(url) as reg:
        champ = reg.find(run_id, key)
    if champ is None or champ.state != "paper":
        raise _not_paper(champ, run_id, key, policy.min_days)
    bundle = load_bundle(home, champ)  # verified with the trusted keys, as the executor does
    state_path = Path(paper_state) if paper_state is not None else default_paper_state(home)
    progress(f"checking the paper record of champion #{champ.id} in {state_path}")
    check = paper_gate(champ, bundle, state_path, policy)
    root = champions_root(home)
    path = root / champ.bundle_path
    version = None
    if log_mlflow:
        version = (mlflow_models.version_of(home, champ.symbol, champ.timeframe,
                                            champ.bundle_sha256)
                   or mlflow_models.register(home, run_id, path, bundle))
    audit = f"{reason.strip()} [paper gate passed on {state_path}: {check.summary()}]"
    with Registry(url) as reg:
        reg.transition(champ.id, "live", action="promote", who=who(), reason=audit,
                       expected_state="paper")
        champ = reg.get(champ.id)
    pointer = write_pointer(root, stage="live", symbol=champ.symbol, timeframe=champ.timeframe,
                            sha256=champ.bundle_sha256, signature=bundle.signature,
                            key_id=bundle.key_id, champion_id=champ.id, run_id=run_id, key=key)
    leave_stage(home, champ, "paper", log_mlflow)
    warnings = []
    if version is not None:
        try:
            _tag_paper(home, champ, version, check, state_path)
            mlflow_models.set_alias(home, champ.symbol, champ.timeframe, "live", version)
        except Exception as exc:  # the promotion stands; only the MLflow view lags
            warnings.append(f"MLflow alias or tags not set ({type(exc).__name__}); the registry "
                            f"and the pointer are updated")
    return Promotion(champ, path, champ.bundle_sha256, pointer, version, tuple(warnings), check)


def _tag_paper(home: Path, champ: Champion, version: str, check: PaperCheck,
               state_path: Path) -> None:
    """The paper check's figures on the model version (the MLflow view of the audit)."""
    from mlflow import MlflowClient

    from core.tracking import default_tracking_uri

    uri = default_tracking_uri(home)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = mlflow_models.model_name(champ.symbol, champ.timeframe)
    for tag, value in {"paper_days": check.days, "paper_bars": check.bars,
                       "paper_fills": check.trades, "paper_return": f"{check.paper_return:.6g}",
                       "paper_return_diff": f"{check.return_diff:.6g}",
                       "paper_max_fill_bps": f"{check.max_fill_bps:.4g}",
                       "paper_state": str(state_path)}.items():
        client.set_model_version_tag(name, version, tag, str(value))
