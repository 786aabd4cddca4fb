"""``emp genome …``: print the gene schema, show a genome file's rules, write a random genome."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genome import schema as S
from genome.codec import GenomeError, from_json, to_json

if TYPE_CHECKING:  # the config model imports every package's section
    from configs.models import EmpConfig


def register(sub: argparse._SubParsersAction, add_config: object) -> None:
    gen = sub.add_parser("genome", help="inspect, show and create strategy genomes",
                         description="A genome is a fixed-length vector of named genes that "
                                     "encodes one trading strategy. Genome files are JSON with "
                                     "a sha256 of their genes.")
    gsub = gen.add_subparsers(dest="genome_cmd", required=True, metavar="COMMAND")

    sch = gsub.add_parser("schema", help="list every gene: index, name, kind, bounds, section",
                          description=f"Print the schema v{S.SCHEMA_VERSION} gene table "
                                      f"({S.N_GENES} genes): index, name, kind (cont, int or "
                                      f"cat), bounds or choices, section and meaning.")
    sch.set_defaults(func=cmd_schema)

    show = gsub.add_parser("show", help="validate a genome file and print its rules",
                           description="Load GENOME.json (schema version, gene names, sha256 "
                                       "and bounds are checked; exit status 2 when any fails) "
                                       "and print its rules section by section.")
    show.add_argument("file", type=Path, metavar="GENOME.json", help="genome file to show")
    show.set_defaults(func=cmd_show)

    rnd = gsub.add_parser("random", help="write a valid random genome as JSON",
                          description="Draw a random valid genome and write it as JSON to --out "
                                      "(atomically) or to stdout. The seed used is printed to "
                                      "stderr so the genome can be drawn again.")
    rnd.add_argument("--seed", type=int, default=None,
                     help="random seed >= 0 (default: fresh entropy)")
    rnd.add_argument("--out", type=Path, default=None, metavar="FILE",
                     help="file to write (default: print to stdout)")
    rnd.add_argument("--p-slot-on", type=float, default=0.35,
                     help="probability that a condition slot is enabled (default 0.35)")
    rnd.set_defaults(func=cmd_random)


def _bounds(g: S.Gene) -> str:
    return f"[{g.lo:g}, {g.hi:g}]" if g.kind == "cont" else f"{int(g.lo)}..{int(g.hi)}"


def cmd_schema(args: argparse.Namespace, cfg: EmpConfig) -> int:
    print(f"genome schema v{S.SCHEMA_VERSION}: {S.N_GENES} genes, {S.K_SLOTS} slots per rule set")
    print(f"{'idx':>3}  {'name':<18} {'kind':<4}  {'section':<7}  {'bounds':<13} doc [choices]")
    for i, g in enumerate(S.GENES):
        choices = f" [{', '.join(f'{k}: {c}' for k, c in enumerate(g.choices))}]" if g.choices else ""
        print(f"{i:>3}  {g.name:<18} {g.kind:<4}  {g.section:<7}  {_bounds(g):<13} {g.doc}{choices}")
    return 0


def load_genome(path: Path) -> np.ndarray:
    """Read and check a genome file; every failure is a GenomeError naming the file."""
    try:
        return from_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GenomeError(f"{path}: cannot read ({exc})") from None
    except GenomeError as exc:
        raise GenomeError(f"{path}: {exc}") from None


def cmd_show(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from genome.decode import describe_dict
    from genome.ops import phenotype_key

    g = load_genome(args.file)
    print(f"{args.file}: valid genome (schema v{S.SCHEMA_VERSION}), "
          f"phenotype {phenotype_key(g)[:16]}")
    for section, text in describe_dict(g).items():
        print(f"  {section:<8} {text}")
    return 0


def cmd_random(args: argparse.Namespace, cfg: EmpConfig) -> int:
    from core.atomic import atomic_write_bytes
    from genome.ops import random_genome

    if not 0.0 <= args.p_slot_on <= 1.0:
        raise GenomeError(f"--p-slot-on {args.p_slot_on} is not a probability")
    if args.seed is not None and args.seed < 0:
        raise GenomeError(f"--seed {args.seed}: a seed is a whole number >= 0")
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy)
    text = to_json(random_genome(np.random.default_rng(seed), args.p_slot_on))
    print(f"seed {seed}", file=sys.stderr)
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {args.out}")
    return 0
