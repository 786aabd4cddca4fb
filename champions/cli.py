"""``emp promote`` and ``emp champions keygen|list|show|diff|rollback|retire|publish|verify``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def _registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", metavar="URL", default=None,
                   help="registry database URL (default: $EMP_REGISTRY_URL, else "
                        "sqlite:///$EMP_HOME/champions/registry.db; PostgreSQL: "
                        "postgresql+psycopg://user@host/db, password from the URL or PGPASSWORD)")


def _mlflow_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mlflow", action="store_true",
                   help="leave MLflow alone (no model version, no alias)")


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    p = sub.add_parser(
        "promote", help="promote an eligible candidate of a judged run to paper or live",
        description="Turn candidate KEY of run RUN_ID into a champion, in one audited step. "
                    "Refused: a candidate the run's gate report does not mark eligible, a report "
                    "edited since `emp gates` wrote it, a history changed since the run was "
                    "judged, a hold-out read more than once (unless --accept-peeking). Done: "
                    "a bundle (one canonical JSON file: the genome, frozen symbol metadata and "
                    "costs, the simulation and volatility config, the history's origin and "
                    "fingerprint, the gate figures, the run, git commit and library versions, "
                    "the schema/catalogue digests and kernel version, the tables' and kernel's "
                    "state at the end of the judged history) signed with the farm's Ed25519 key; "
                    "a registry event (who, when, from, to, why); an MLflow model version with "
                    "alias 'paper' or 'champion'; and the stage's pointer "
                    "$EMP_HOME/champions/SYMBOL/{paper,current}.json swapped atomically. "
                    "Promoting to live retires the previous live champion of the symbol "
                    "(`emp champions rollback` restores it). Live only from paper: the paper "
                    "champion goes live (its own bundle) when the executor's state store "
                    "holds at least --paper-days trading days of its paper results within "
                    "tolerance of its bundle replayed on the same bars (targets, fills, "
                    "return); otherwise it is refused and nothing is written.")
    p.add_argument("run_id", metavar="RUN_ID", help="a judged run under $EMP_HOME/runs, or 'latest'")
    p.add_argument("--candidate", required=True, metavar="KEY",
                   help="the candidate's key, as `emp gates` lists it")
    p.add_argument("--to", required=True, choices=("paper", "live"), help="the stage")
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.add_argument("--accept-peeking", metavar="REASON", default=None,
                   help="promote although the run's hold-out was read more than once; the "
                        "reason is recorded in the bundle and the audit log")
    p.add_argument("--key", type=Path, default=None, metavar="PATH",
                   help="signing key (default: $EMP_SIGNING_KEY, else "
                        "$EMP_HOME/keys/emp-signing.key; create one with `emp champions keygen`)")
    _paper_args(p)
    _registry_arg(p)
    _mlflow_arg(p)
    add_config(p)  # type: ignore[operator]
    p.set_defaults(func=cmd_promote)

    c = sub.add_parser("champions", help="list, inspect, roll back, retire and publish champions",
                       description="The champions registry and the champion files. Every state "
                                   "change is an audit row (`show` lists them).")
    csub = c.add_subparsers(dest="champions_cmd", required=True, metavar="ACTION")
    k = csub.add_parser("keygen", help="create the farm's Ed25519 signing key pair",
                        description="Write NAME.key (private, mode 0600) and NAME.pub (public) "
                                    "into DIR (default $EMP_HOME/keys). Copy only the .pub to "
                                    "the live host; an existing key is never overwritten "
                                    "without --force.")
    k.add_argument("--dir", type=Path, default=None, help="directory (default $EMP_HOME/keys)")
    k.add_argument("--name", default="emp-signing", help="file name stem (default emp-signing)")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    k.set_defaults(func=cmd_keygen)

    ls = csub.add_parser("list", help="champions and their states",
                         description="One line per champion: id, symbol/timeframe, state, "
                                     "candidate, run, bundle sha256, last change.")
    ls.add_argument("--symbol", default=None, help="only this symbol")
    ls.add_argument("--state", default=None, choices=("eligible", "paper", "live", "retired"),
                    help="only champions in this state")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _registry_arg(ls)
    ls.set_defaults(func=cmd_list)

    sh = csub.add_parser("show", help="one champion: its bundle summary and audit trail",
                         description="The registry row, every audit event, and the bundle's "
                                     "summary (verified with the trusted keys).")
    sh.add_argument("champion", metavar="ID", help="champion id (from `emp champions list`)")
    sh.add_argument("--json", action="store_true", help="print JSON")
    _registry_arg(sh)
    sh.set_defaults(func=cmd_show)

    d = csub.add_parser("diff", help="what differs between two champions' bundles",
                        description="Genes by name, then every other field of the two bundles "
                                    "(A and B: champion ids or bundle files).")
    d.add_argument("a", metavar="A", help="champion id or bundle file")
    d.add_argument("b", metavar="B", help="champion id or bundle file")
    _registry_arg(d)
    d.set_defaults(func=cmd_diff)

    r = csub.add_parser("rollback", help="restore the previous live champion of a symbol",
                        description="Retire the live champion of SYMBOL and put back the one it "
                                    "replaced (two audit rows, one transaction); swap the live "
                                    "pointer back and move the MLflow alias 'champion'.")
    r.add_argument("symbol", metavar="SYMBOL", help="the symbol whose live champion goes back")
    r.add_argument("--timeframe", default=None, help="needed when SYMBOL is live on several")
    r.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    _registry_arg(r)
    _mlflow_arg(r)
    r.set_defaults(func=cmd_rollback)

    t = csub.add_parser("retire", help="retire a champion (its stage pointer is removed)",
                        description="Move champion ID to 'retired' (audited); if it is the "
                                    "live or paper champion, its pointer is removed, so the "
                                    "executor opens nothing new for the symbol, and the MLflow "
                                    "alias is dropped.")
    t.add_argument("champion", metavar="ID", type=int, help="champion id")
    t.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    _registry_arg(t)
    _mlflow_arg(t)
    t.set_defaults(func=cmd_retire)

    pb = csub.add_parser("publish", help="copy champions to the live host",
                         description="Copy each pointed-at bundle first and the pointers "
                                     "second to DEST (a local directory or an rsync/ssh "
                                     "destination user@host:path), so the live host never "
                                     "sees a pointer to a half-copied bundle. Only bundles and "
                                     "pointers are copied: never keys, .env or the registry.")
    pb.add_argument("dest", metavar="DEST",
                    help="the live host's champions directory: a local path or user@host:path")
    pb.add_argument("--symbol", action="append", default=None,
                    help="only this symbol (repeatable; default: all)")
    pb.set_defaults(func=cmd_publish)

    v = csub.add_parser("verify", help="verify a bundle file against the trusted keys",
                        description="Read a bundle as the live host does: signature by a "
                                    "trusted key ($EMP_TRUSTED_KEYS, else $EMP_HOME/keys), "
                                    "canonical form, schema/catalogue digests, kernel version. "
                                    "Exit 0 when it may be traded.")
    v.add_argument("bundle", type=Path, metavar="FILE", help="a bundle file")
    v.add_argument("--allow-unsigned", action="store_true",
                   help="accept an unsigned bundle (knowingly)")
    v.set_defaults(func=cmd_verify)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return n


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number >= 0")
    return v


def _positive(text: str) -> float:
    v = _tolerance(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return v


def _paper_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("paper gate (--to live)")
    g.add_argument("--paper-state", type=Path, default=None, metavar="PATH",
                   help="the paper executor's state store (default $EMP_HOME/live/state.db)")
    g.add_argument("--paper-days", type=_count, default=None, metavar="N",
                   help="trading days of paper results required (default 5)")
    g.add_argument("--paper-max-return-diff", type=_tolerance, default=None, metavar="X",
                   help="largest |paper - replay| return, a fraction (default 0.005)")
    g.add_argument("--paper-max-fill-bps", type=_tolerance, default=None, metavar="BPS",
                   help="largest fill price deviation from the replay, bps (default 5)")
    g.add_argument("--paper-max-unit-diff", type=_tolerance, default=None, metavar="LOTS",
                   help="largest target or fill units difference, lots (default 0.01)")
    g.add_argument("--paper-lot-size", type=_positive, default=None, metavar="UNITS",
                   help="units per lot, as the live config's symbols.SYMBOL.lot_size "
                        "(default: 100 volume steps)")


def _paper_policy(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The PaperPolicy of the flags given (None: every default)."""
    given = {name: getattr(args, flag) for name, flag in (
        ("min_days", "paper_days"), ("max_return_diff", "paper_max_return_diff"),
        ("max_fill_bps", "paper_max_fill_bps"), ("max_unit_diff_lots", "paper_max_unit_diff"),
        ("lot_size", "paper_lot_size")) if getattr(args, flag) is not None}
    if not given:
        return None
    from live.paper import PaperPolicy

    return PaperPolicy(**given)


def _url(args: argparse.Namespace, cfg: EmpConfig) -> str:
    from champions.registry import default_url

    return args.registry or default_url(cfg.home)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cmd_promote(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.promote import promote
    from core.secrets import mask_uri

    res = promote(cfg.home, args.run_id, args.candidate, args.to, args.reason,
                  accept_peeking=args.accept_peeking, signing_key=args.key,
                  registry_url=_url(args, cfg), log_mlflow=not args.no_mlflow,
                  paper_state=args.paper_state, paper_policy=_paper_policy(args),
                  progress=_say)
    c = res.champion
    print(f"champion #{c.id} {c.symbol}/{c.timeframe} candidate {c.key} is now {c.state}")
    print(f"bundle:  {res.bundle_path} (sha256 {res.sha256[:16]}, signed by "
          f"{res.pointer.key_id})")
    print(f"pointer: {res.pointer.path}")
    print(f"registry: {mask_uri(_url(args, cfg))}")
    if res.paper is not None:
        print(f"paper gate: {res.paper.summary()}")
    if res.model_version is not None:
        from champions.mlflow_models import ALIASES, model_name

        print(f"MLflow: models:/{model_name(c.symbol, c.timeframe)}@{ALIASES[args.to]} "
              f"(version {res.model_version})")
    for w in res.warnings:
        print(f"emp promote: warning: {w}", file=sys.stderr)
    return 0


def cmd_keygen(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.keys import keygen, keys_dir

    priv, pub, kid = keygen(args.dir or keys_dir(cfg.home), args.name, force=args.force)
    print(f"key id {kid}\nprivate: {priv} (0600: keep it on this machine)\n"
          f"public:  {pub} (copy to the live host's trusted keys)")
    return 0


def _row(c) -> dict:  # type: ignore[no-untyped-def]
    return {"id": c.id, "symbol": c.symbol, "timeframe": c.timeframe, "state": c.state,
            "key": c.key, "run_id": c.run_id, "bundle_sha256": c.bundle_sha256,
            "bundle_path": c.bundle_path, "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat()}


def cmd_list(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.registry import Registry

    with Registry(_url(args, cfg)) as reg:
        rows = reg.champions(symbol=args.symbol, state=args.state)
    if args.json:
        print(json.dumps([_row(c) for c in rows], indent=1))
        return 0
    if not rows:
        print("no champions")
        return 0
    print(f"{'id':>4}  {'symbol/tf':<14} {'state':<8} {'candidate':<17} {'run':<10} "
          f"{'bundle':<12} updated")
    for c in rows:
        print(f"{c.id:>4}  {c.symbol + '/' + c.timeframe:<14} {c.state:<8} {c.key:<17} "
              f"{c.run_id[:8]:<10} {c.bundle_sha256[:12]:<12} "
              f"{c.updated_at.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0


def cmd_show(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.lifecycle import load_bundle, summary
    from champions.registry import Registry, RegistryError

    if not args.champion.isdigit():
        raise RegistryError(f"{args.champion!r}: a champion id is a number (see `emp champions "
                            f"list`)")
    with Registry(_url(args, cfg)) as reg:
        champ = reg.get(int(args.champion))
        events = reg.events(champion_id=champ.id)
    bundle = summary(load_bundle(cfg.home, champ))
    evs = [{"at": e.at.isoformat(), "who": e.who, "action": e.action, "from": e.from_state,
            "to": e.to_state, "reason": e.reason, "bundle_sha256": e.bundle_sha256}
           for e in events]
    if args.json:
        print(json.dumps({"champion": _row(champ), "events": evs, "bundle": bundle}, indent=1))
        return 0
    print(f"champion #{champ.id} {champ.symbol}/{champ.timeframe}: {champ.state}")
    print(f"  candidate {champ.key} of run {champ.run_id}: {bundle['rules']}")
    print(f"  bundle {champ.bundle_path} signed by {bundle['signed_by']}, "
          f"created {bundle['created']}")
    g = bundle["gates"]
    figs = {k: f"{v:.3f}" if isinstance(v, float) else str(v)
            for k, v in {**g["figures"], "pbo": g["pbo"]}.items()}
    print(f"  gates: rank {g['rank']}, OOS Sharpe {figs.get('oos_sharpe')}, DSR "
          f"{figs.get('dsr')}, hold-out Sharpe {figs.get('holdout_sharpe')}, N_eff {g['n_eff']}, "
          f"PBO {figs['pbo']}, hold-out reads {g['holdout_reads']}"
          + (f", peeking accepted: {g['accepted_peeking']}" if g["accepted_peeking"] else ""))
    h = bundle["history"]
    print(f"  history {h['first']} .. {h['last']} ({h['n_bars']} bars), snapshot after "
          f"{bundle['snapshot_bars']} bars; git {bundle['git_commit'][:12]}")
    for line in bundle["version_drift"]:
        print(f"  version drift: {line}")
    print("  events:")
    for e in evs:
        print(f"    {e['at']}  {e['who']:<20} {e['action']:<9} {e['from'] or '-':>8} -> "
              f"{e['to']:<8} {e['reason']}")
    return 0


def cmd_diff(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.lifecycle import diff, resolve_champion
    from champions.registry import Registry

    with Registry(_url(args, cfg)) as reg:
        la, a = resolve_champion(cfg.home, reg, args.a)
        lb, b = resolve_champion(cfg.home, reg, args.b)
    lines = diff(a, b)
    print(f"{la} -> {lb}: {len(lines)} difference(s)" if lines else f"{la} and {lb}: identical")
    for line in lines:
        print(f"  {line}")
    return 0


def cmd_rollback(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.lifecycle import rollback

    res = rollback(cfg.home, args.symbol, args.timeframe, args.reason,
                   registry_url=_url(args, cfg), log_mlflow=not args.no_mlflow)
    print(f"rolled back {args.symbol}: #{res.replaced.id} ({res.replaced.key}) retired, "
          f"#{res.restored.id} ({res.restored.key}) live again")
    for w in res.warnings:
        print(f"emp champions rollback: warning: {w}", file=sys.stderr)
    return 0


def cmd_retire(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.lifecycle import retire

    c = retire(cfg.home, args.champion, args.reason, registry_url=_url(args, cfg),
               log_mlflow=not args.no_mlflow)
    print(f"champion #{c.id} {c.symbol}/{c.timeframe} ({c.key}) retired")
    return 0


def cmd_publish(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.pointer import champions_root
    from champions.publish import publish

    for line in publish(champions_root(cfg.home), args.dest, args.symbol):
        print(line)
    return 0


def cmd_verify(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from champions.bundle import read_bundle
    from champions.keys import load_trusted_keys, trusted_key_sources

    b = read_bundle(args.bundle, load_trusted_keys(trusted_key_sources(cfg.home)),
                    allow_unsigned=args.allow_unsigned)
    print(f"{args.bundle}: OK: {b.symbol}/{b.timeframe} candidate {b.key}, sha256 "
          f"{b.sha256[:16]}, signed by {b.key_id or 'nobody (unsigned, allowed)'}")
    for line in b.version_drift():
        print(f"warning: version drift {line}", file=sys.stderr)
    return 0
