"""Genome operators, codec, decoder and CLI: every operator must yield a valid genome."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emp_cli.main import build_parser, main
from genome import codec, ops
from genome import schema as S
from genome.decode import describe, describe_dict

ROOT = Path(__file__).resolve().parents[1]
SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=60, deadline=None)
ANY_FLOATS = arrays(np.float64, S.N_GENES, elements=st.floats(allow_nan=True, allow_infinity=True))


def rng_of(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def near_valid(rng: np.random.Generator) -> np.ndarray:
    """Raw vectors around the bounds (out of range, fractional, NaN): repair's daily diet."""
    g = ops.LO + rng.uniform(-0.5, 1.5, S.N_GENES) * ops.SPAN
    g[rng.random(S.N_GENES) < 0.05] = np.nan
    return g


def build(genes: dict[str, float]) -> np.ndarray:
    """A genome with every slot off and sane defaults, then ``genes`` by name."""
    g = ops.LO.copy()
    g[ops.WEEKDAY_IDX[:5]] = 1
    g[S.INDEX["regime.normal"]] = 1
    g[S.CALM_BELOW], g[S.STORM_ABOVE] = 0.08, 0.18
    for name, v in genes.items():
        g[S.INDEX[name]] = v
    assert ops.validate(g) == [], ops.validate(g)
    return g


# ---- sampling, validation, repair -------------------------------------------------------------

@FAST
@given(SEEDS, st.floats(0, 1))
def test_random_genomes_are_valid(seed, p_on):
    g = ops.random_genome(rng_of(seed), p_on)
    assert g.dtype == np.float64 and g.shape == (S.N_GENES,)
    assert ops.validate(g) == []


@FAST
@given(ANY_FLOATS)
def test_repair_makes_any_vector_valid_and_is_idempotent(x):
    r = ops.repair(x)
    assert ops.validate(r) == []
    assert np.array_equal(ops.repair(r), r)


@FAST
@given(SEEDS)
def test_repair_near_valid_and_leaves_valid_genomes_alone(seed):
    rng = rng_of(seed)
    r = ops.repair(near_valid(rng))
    assert ops.validate(r) == [] and np.array_equal(ops.repair(r), r)
    g = ops.random_genome(rng)
    assert np.array_equal(ops.repair(g), g)


def test_validate_names_each_problem():
    assert ops.validate(np.zeros(3)) == [f"genome: shape (3,), expected ({S.N_GENES},)"]
    g = build({"long.s0.on": 1})
    bad = g.copy()
    bad[S.K_STOP] = np.nan
    bad[S.INDEX["risk.max_bars"]] = 1000
    bad[S.INDEX["long.s0.param"]] = 2.5
    msgs = ops.validate(bad)
    assert any(m.startswith("risk.k_stop: NaN") for m in msgs)
    assert any(m.startswith("risk.max_bars:") and "outside" in m for m in msgs)
    assert any(m.startswith("long.s0.param:") and "whole" in m for m in msgs)

    rsi = {"long.s0.on": 1, "long.s0.prim": 2, "long.s0.param": 8}  # RSI grid has 8 entries
    contradictions = {
        "long.s0.param": rsi,
        "long.s0.param2": {"long.s0.on": 1, "long.s0.rhs": 1, "long.s0.param": 3,
                           "long.s0.param2": 3},
        "regime": {"regime.normal": 0},
        "session.mon": {f"session.{d}": 0 for d in S.WEEKDAYS},
        "long.s*.on": {"long.s0.on": 0},
        "vol.storm_above": {"vol.calm_below": 0.2, "vol.storm_above": 0.1},
    }
    base = build({"long.s0.on": 1})
    for gene, change in contradictions.items():
        bad = base.copy()
        for name, v in change.items():
            bad[S.INDEX[name]] = v
        msgs = ops.validate(bad)
        assert len(msgs) == 1 and msgs[0].startswith(gene), (gene, msgs)
        assert ops.validate(ops.repair(bad)) == []


def test_repair_rules():
    g = build({"long.s0.on": 1})
    g[S.INDEX["long.s0.on"]] = 0
    g[ops.REGIME_IDX] = 0
    g[ops.WEEKDAY_IDX] = 0
    g[S.CALM_BELOW], g[S.STORM_ABOVE] = 0.25, 0.10
    g[S.INDEX["short.s1.prim"]], g[S.INDEX["short.s1.param"]] = 2, 8  # RSI: 8 % 8 = 0
    g[S.INDEX["short.s1.rhs"]], g[S.INDEX["short.s1.param2"]] = 1, 0  # then param2 == param
    r = ops.repair(g)
    assert r[S.INDEX["long.s0.on"]] == 1
    assert r[ops.REGIME_IDX].tolist() == [0, 1, 0]
    assert r[ops.WEEKDAY_IDX].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert (r[S.CALM_BELOW], r[S.STORM_ABOVE]) == (0.10, 0.25)
    assert r[S.INDEX["short.s1.param"]] == 0 and r[S.INDEX["short.s1.rhs"]] == 0
    g[S.CALM_BELOW], g[S.STORM_ABOVE] = 0.30, 0.30  # equal: storm lifted by the gap
    r = ops.repair(g)
    assert r[S.STORM_ABOVE] - r[S.CALM_BELOW] >= ops.REGIME_GAP - 1e-12


# ---- crossover and mutation -------------------------------------------------------------------

@FAST
@given(SEEDS, st.floats(0, 1), st.booleans())
def test_crossover_always_valid(seed, indpb, raw):
    rng = rng_of(seed)
    if raw:
        a, b = ops.repair(near_valid(rng)), ops.repair(near_valid(rng))
    else:
        a, b = ops.random_genome(rng), ops.random_genome(rng)
    a0, b0 = a.copy(), b.copy()
    for c in (*ops.cx_uniform(a, b, rng, indpb), *ops.cx_section(a, b, rng)):
        assert ops.validate(c) == []
    assert np.array_equal(a, a0) and np.array_equal(b, b0)  # parents untouched


@FAST
@given(SEEDS)
def test_section_crossover_moves_whole_slots_and_sections(seed):
    rng = rng_of(seed)
    a, b = ops.random_genome(rng, 1.0), ops.random_genome(rng, 1.0)
    c1, c2 = ops.cx_section(a, b, rng)
    assert not (np.array_equal(c1, a) or np.array_equal(c1, b))
    assert np.all(((c1 == a) & (c2 == b)) | ((c1 == b) & (c2 == a)))  # genes swap, never blend
    for rs in S.RULE_SETS:
        for idx in ops.SLOT_IDX[rs]:  # each slot comes whole from one parent (all slots on)
            assert np.array_equal(c1[idx], a[idx]) or np.array_equal(c1[idx], b[idx])
    for sec in ("risk", "vol"):
        idx = ops.SECTION_IDX[sec]
        assert np.array_equal(c1[idx], a[idx]) or np.array_equal(c1[idx], b[idx])


@FAST
@given(SEEDS, st.floats(0, 1), st.floats(0, 2))
def test_mutation_always_valid(seed, indpb, sigma):
    rng = rng_of(seed)
    g = ops.random_genome(rng)
    g0 = g.copy()
    m = ops.mutate(g, rng, indpb, sigma)
    assert ops.validate(m) == [] and np.array_equal(g, g0)


def test_mutation_changes_genes_and_toggles_slots():
    rng = rng_of(7)
    g = ops.random_genome(rng)
    changed = np.zeros(S.N_GENES, dtype=bool)
    for _ in range(200):
        changed |= ops.mutate(g, rng, 0.1) != g
    assert changed[ops.SLOT_ON].all() and changed.mean() > 0.9


def test_deap_adapters_with_creator_numpy_individuals():
    from deap import algorithms, base, creator

    if not hasattr(creator, "GenomeTestInd"):
        creator.create("GenomeTestFit", base.Fitness, weights=(1.0,))
        creator.create("GenomeTestInd", np.ndarray, fitness=creator.GenomeTestFit)
    rng = rng_of(3)
    dops = ops.deap_toolbox_ops(rng)
    tb = base.Toolbox()
    tb.register("mate", dops.mate)
    tb.register("mutate", dops.mutate)
    pop = [creator.GenomeTestInd(ops.random_genome(rng)) for _ in range(20)]
    for ind in pop:
        ind.fitness.values = (1.0,)
    before = [p.copy() for p in pop]
    off = algorithms.varAnd(pop, tb, cxpb=0.8, mutpb=0.5)
    assert all(isinstance(o, creator.GenomeTestInd) and ops.validate(o) == [] for o in off)
    assert any(not o.fitness.valid for o in off)
    assert all(np.array_equal(p, q) for p, q in zip(pop, before, strict=True))
    a, b = pop[0], pop[1]
    ra, rb = tb.mate(a, b)
    assert ra is a and rb is b and not a.fitness.valid
    (rm,) = tb.mutate(a)
    assert rm is a and ops.validate(a) == []


# ---- identity and diversity -------------------------------------------------------------------

def dead_mask(g: np.ndarray) -> np.ndarray:
    """Genes that cannot change behaviour, written independently of ops.phenotype_key."""
    dead = np.zeros(S.N_GENES, dtype=bool)
    for r in range(len(S.RULE_SETS)):
        n_on = 0
        for k in range(S.K_SLOTS):
            on = S.slot_offset(r, k)
            if g[on] == 0:
                dead[on + 1: on + 7] = True
                continue
            n_on += 1
            dead[on + 6 if g[on + 4] == 0 else on + 5] = True
        dead[S.slot_offset(r, 0) - 1] = n_on < 2
    dead[S.TP_MULT] = g[S.USE_TP] == 0
    dead[S.MAX_BARS] = g[S.USE_MAX_BARS] == 0
    return dead


@FAST
@given(SEEDS)
def test_phenotype_key_ignores_dead_genes(seed):
    rng = rng_of(seed)
    g, other = ops.random_genome(rng), ops.random_genome(rng)
    dead = dead_mask(g)
    h = np.where(dead, other, g)
    if g[S.SESSION_START] == g[S.SESSION_END]:
        h[S.SESSION_START] = h[S.SESSION_END] = other[S.SESSION_START]
    h = ops.repair(h)  # repairs only touch dead genes here (e.g. a disabled slot's param)
    live = ~dead
    live[[S.SESSION_START, S.SESSION_END]] = False
    assert np.array_equal(h[live], g[live]) and not np.array_equal(h, g)
    assert ops.phenotype_key(h) == ops.phenotype_key(g)


@FAST
@given(SEEDS)
def test_phenotype_key_changes_with_live_genes(seed):
    rng = rng_of(seed)
    g = ops.random_genome(rng)
    key = ops.phenotype_key(g)
    for gene, v in (("risk.k_stop", 8.0 if g[S.K_STOP] != 8.0 else 0.5),
                    ("risk.risk_pct", 0.001 if g[S.RISK_PCT] != 0.001 else 0.01),
                    ("session.sun", 1 - g[S.INDEX["session.sun"]])):
        h = g.copy()
        h[S.INDEX[gene]] = v
        if ops.validate(h) == []:
            assert ops.phenotype_key(h) != key, gene


def test_phenotype_key_slot_order_and_mirrored_comparisons():
    cond_a = {"prim": 2, "param": 5, "cmp": 1, "thr": 0.3}
    cond_b = {"prim": 0, "param": 2, "cmp": 2, "rhs": 1, "param2": 6}
    mirror_b = {"prim": 0, "param": 6, "cmp": 3, "rhs": 1, "param2": 2}

    def with_slots(*conds):
        genes = {}
        for k, c in enumerate(conds):
            genes[f"long.s{k}.on"] = 1
            genes.update({f"long.s{k}.{f}": v for f, v in c.items()})
        return build(genes)

    key = ops.phenotype_key(with_slots(cond_a, cond_b))
    assert ops.phenotype_key(with_slots(cond_b, cond_a)) == key
    assert ops.phenotype_key(with_slots(cond_a, mirror_b)) == key
    assert ops.phenotype_key(with_slots(cond_a, cond_a)) == ops.phenotype_key(with_slots(cond_a))
    g = with_slots(cond_a, cond_b)
    g[S.INDEX["long.s0.thr"]] = 0.31  # a live threshold
    assert ops.phenotype_key(g) != key


@FAST
@given(SEEDS)
def test_genotype_distance(seed):
    rng = rng_of(seed)
    a, b = ops.random_genome(rng), ops.random_genome(rng)
    d = ops.genotype_distance(a, b)
    assert 0.0 < d <= 1.0 and d == ops.genotype_distance(b, a)
    assert ops.genotype_distance(a, a) == 0.0


# ---- codec ------------------------------------------------------------------------------------

@FAST
@given(SEEDS)
def test_json_round_trips_exactly(seed):
    g = ops.random_genome(rng_of(seed))
    text = codec.to_json(g)
    back = codec.from_json(text)
    assert np.array_equal(back, g) and codec.to_json(back) == text
    doc = json.loads(text)
    assert doc["schema_version"] == S.SCHEMA_VERSION and list(doc["genes"]) == list(S.INDEX)
    assert isinstance(doc["genes"]["long.s0.prim"], int)


def _edited(text: str, edit) -> str:
    doc = json.loads(text)
    edit(doc)
    return json.dumps(doc)


def test_from_json_refuses_bad_files():
    g = ops.random_genome(rng_of(1))
    text = codec.to_json(g)

    def rehash(doc):
        doc["sha256"] = codec._digest(doc["genes"], doc["schema_version"])

    def set_gene(name, v, fix_hash=False):
        def edit(doc):
            doc["genes"][name] = v
            if fix_hash:
                rehash(doc)
        return edit

    cases = {
        "sha256 mismatch": set_gene("risk.k_stop", g[S.K_STOP] + 0.001),
        "schema_version 2": lambda d: d.update(schema_version=2),
        "missing genes: vol.storm_above": lambda d: d["genes"].pop("vol.storm_above"),
        "unknown genes: risk.leverage": set_gene("risk.leverage", 1),
        "risk.k_stop: 99.0 outside": set_gene("risk.k_stop", 99.0, fix_hash=True),
        "long.s0.cmp: 1.5 is not a whole number": set_gene("long.s0.cmp", 1.5, fix_hash=True),
        "missing keys ['sha256']": lambda d: d.pop("sha256"),
    }
    for expected, edit in cases.items():
        with pytest.raises(ValueError, match=re.escape(expected)):
            codec.from_json(_edited(text, edit))
    for junk in ("", "[1, 2]", text.replace(repr(float(g[S.K_STOP])), "NaN", 1)):
        with pytest.raises(codec.GenomeError):
            codec.from_json(junk)
    bad = g.copy()
    bad[S.K_STOP] = 100.0
    with pytest.raises(codec.GenomeError, match=r"risk\.k_stop"):
        codec.to_json(bad)


# ---- decoder ----------------------------------------------------------------------------------

EXAMPLE = {
    # LONG: RSI(14) < 30 AND SMA(200) < close
    "long.s0.on": 1, "long.s0.prim": 2, "long.s0.param": 5, "long.s0.cmp": 1,
    "long.s0.thr": 25 / 90,
    "long.s1.on": 1, "long.s1.prim": 0, "long.s1.param": 8, "long.s1.cmp": 1, "long.s1.thr": 0.5,
    # SHORT: SMA(10) crosses above SMA(50) OR SMA(50) > close×1.012
    "short.logic": 1,
    "short.s0.on": 1, "short.s0.prim": 0, "short.s0.param": 2, "short.s0.cmp": 2,
    "short.s0.rhs": 1, "short.s0.param2": 6,
    "short.s2.on": 1, "short.s2.prim": 0, "short.s2.param": 6, "short.s2.cmp": 0,
    "short.s2.thr": 0.62,
    # EXIT: in London session
    "exit.s3.on": 1, "exit.s3.prim": 14, "exit.s3.param": 1, "exit.s3.cmp": 0, "exit.s3.thr": 0.5,
    "regime.calm": 1, "regime.normal": 1, "regime.storm": 0,
    "session.start_hour": 7, "session.end_hour": 16,
    "risk.k_stop": 1.3, "risk.use_tp": 1, "risk.tp_mult": 2.0, "risk.trail": 1,
    "risk.use_max_bars": 1, "risk.max_bars": 20, "risk.risk_pct": 0.005,
    "vol.blend_weight": 0.7, "vol.rv_window": 2, "vol.garch_variant": 2,
}


def test_describe_hand_built_genome():
    text = describe(build(EXAMPLE))
    assert text == (
        "LONG when RSI(14) < 30.0 AND SMA(200) < close; "
        "SHORT when SMA(10) crosses above SMA(50) OR SMA(50) > close×1.012; "
        "EXIT when in London session; regimes calm:follow normal:follow storm:off; "
        "session 07-16 UTC Mon-Fri; stop 1.3σ; TP 2.0×stop; trail; max 20 bars; risk 0.50%; "
        "vol: 0.70·gjr + 0.30·RV(20), calm<8% storm>18%")
    parts = describe_dict(build(EXAMPLE))
    assert list(parts) == list(S.SECTIONS) and parts["exit"] == "EXIT when in London session"
    plain = describe(build({"long.s0.on": 1}))
    assert "SHORT never" in plain and "no EXIT rule" in plain and "no TP" in plain


@FAST
@given(SEEDS)
def test_describe_any_valid_genome(seed):
    parts = describe_dict(ops.random_genome(rng_of(seed)))
    assert parts["long"].startswith("LONG") and parts["vol"].startswith("vol: ")


# ---- CLI --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [("genome",), ("genome", "schema"), ("genome", "show"),
                                  ("genome", "random")])
def test_genome_help(path, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*path, "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: emp")


def test_cli_random_show_schema(tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["genome", "random", "--seed", "5", "--out", str(out)]) == 0
    assert np.array_equal(codec.from_json(out.read_text()), ops.random_genome(rng_of(5)))
    capsys.readouterr()
    assert main(["genome", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "valid genome" in shown and "LONG" in shown and "regimes" in shown

    assert main(["genome", "random", "--seed", "5"]) == 0
    assert capsys.readouterr().out == out.read_text()

    assert main(["genome", "schema"]) == 0
    table = capsys.readouterr().out
    assert all(g.name in table for g in S.GENES)

    doc = json.loads(out.read_text())
    doc["genes"]["risk.k_stop"] = 7.5
    out.write_text(json.dumps(doc))
    assert main(["genome", "show", str(out)]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main(["genome", "show", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_genome_package_imports_no_heavy_deps():
    code = ("import sys, genome.ops, genome.codec, genome.decode, genome.cli; "
            "bad = {'ray', 'torch', 'mlflow', 'deap'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
