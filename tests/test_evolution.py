"""Evolution: end to end on Ray, exact resume, the distinct-genome cache, the hold-out wall,
constraint-domination, islands, and MLflow contents read back through the client."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import planted_home, roc1_genome

from configs.loader import parse_config
from evolution import driver, ga
from evolution.data import research_data
from genome.ops import phenotype_key
from market.bootstrap import bootstrap
from market.store import HistoryStore

BASE = {
    "data": {"symbols": {"SP500": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1,
                                   "calendar": "nyse",
                                   "costs": {"unit": "bps", "spread": 1, "commission": 0.5,
                                             "slippage": 1}},
                         "NDX": {"asset_class": "index", "tick_size": 0.01, "min_lot": 0.1,
                                 "calendar": "nyse"}}},
    "volatility": {"window": 250, "refit_every": 500},
    "evolution": {"symbol": "SP500", "population": 16, "generations": 4, "folds": 2,
                  "seed": 3, "min_trades_per_year": 2, "plot_every": 2, "top_k": 2},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("evo-home")
    cfg = config(h)
    bootstrap(HistoryStore(cfg.store_root()), cfg.data.symbols, cfg.data.quality)
    return h


def config(home, **evolution):
    raw = {**BASE, "home": str(home), "evolution": {**BASE["evolution"], **evolution}}
    return parse_config(raw, "test")


class Counting(driver.LocalEvaluator):
    """Counts what really gets simulated, and remembers the data it was given."""

    def __init__(self, data, cfg):
        super().__init__(data, cfg)
        self.seen = 0
        self.batches: list[np.ndarray] = []

    def evaluate_trials(self, genomes):
        self.seen += len(genomes)
        self.batches.append(np.array(genomes))
        return super().evaluate_trials(genomes)


def test_resume_gives_exactly_the_uninterrupted_front(home):
    cfg = config(home, generations=5)
    data = research_data(cfg)
    whole = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data, progress=False)
    first = driver.run(cfg, stop_after=2, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                       progress=False)
    assert first.generation == 2
    resumed = driver.run(cfg, resume=first.run_id, evaluator=driver.LocalEvaluator(data, cfg),
                         data=data, progress=False)
    assert resumed.generation == 5 and resumed.run_id == first.run_id
    assert list(resumed.front["genome"]) == list(whole.front["genome"])
    assert resumed.trials == whole.trials


def test_each_distinct_genome_is_evaluated_once(home):
    cfg = config(home, generations=4)
    data = research_data(cfg)
    ev = Counting(data, cfg)
    result = driver.run(cfg, evaluator=ev, data=data, progress=False)
    keys = {phenotype_key(g) for batch in ev.batches for g in batch}
    assert ev.seen == len(keys) == result.trials
    # genomes already seen, and duplicates within a batch, are not simulated again
    state = driver.State(0, [], None, cache={})
    cls = ga.individual_class((1.0, -1.0, 1.0))
    genes = [np.asarray(g) for g in ev.batches[0][:5]]
    pop = [ga.make_individual(cls, g) for g in genes + genes]
    before = ev.seen
    assert driver.evaluate_individuals(pop, state, ev, cfg) == 5
    assert ev.seen - before == 5
    again = [ga.make_individual(cls, g) for g in genes]
    assert driver.evaluate_individuals(again, state, ev, cfg) == 0
    assert ev.seen - before == 5
    assert [i.fitness.values for i in again] == [i.fitness.values for i in pop[:5]]


def test_neither_oos_window_nor_holdout_reaches_evolution(home):
    cfg = config(home, holdout=0.25, folds=3, purge_bars=120)
    data = research_data(cfg)
    full = HistoryStore(cfg.store_root()).read_frame("SP500", "1d")
    assert data.holdout_start == round(len(full) * 0.75)
    oos_start, oos_end = (int(x) for x in data.oos[0])
    assert oos_end == data.holdout_start
    # the OOS window is the last of folds + 1 walk-forward blocks of the research period
    assert oos_start == 250 + 3 * (data.holdout_start - 250) // 4
    # evolution's bars stop a purge before the OOS window; its tables hold nothing more
    assert data.bars.n_bars == oos_start - 120
    assert data.bars.index()[-1] < full["ts"].iloc[oos_start]
    assert data.tables.features.n_bars == data.bars.n_bars
    # equal training folds, contiguous, covering [warmup, training end)
    assert data.segments[0, 0] == 250 and data.segments[-1, 1] == data.bars.n_bars
    assert (data.segments[1:, 0] == data.segments[:-1, 1]).all()
    assert np.ptp(np.diff(data.segments, axis=1)) <= 1


def test_constraint_domination():
    cls = ga.individual_class((1.0, -1.0))
    a, b = ga.make_individual(cls, np.zeros(3)), ga.make_individual(cls, np.zeros(3))
    a.fitness.values, b.fitness.values = (0.1, 0.5), (2.0, 0.1)  # b is better on both
    a.fitness.violation, b.fitness.violation = 0.0, 0.3           # but b breaks the constraint
    assert a.fitness.dominates(b.fitness) and not b.fitness.dominates(a.fitness)
    b.fitness.violation = 0.0
    assert b.fitness.dominates(a.fitness)


def test_islands_with_migration_and_a_non_default_objective(home):
    objectives = [{"name": "sortino", "metric": "sortino", "agg": "mean", "direction": "max",
                   "ref": -2.0},
                  {"name": "worst_dd", "metric": "max_drawdown", "agg": "max", "direction": "min",
                   "ref": 1.0}]
    cfg = config(home, islands=2, migration_interval=1, migrants=2, generations=2,
                 objectives=objectives)
    data = research_data(cfg)
    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    assert {"sortino", "worst_dd", "weighted", "rules"} <= set(result.front.columns)
    assert not result.front.empty


@pytest.mark.usefixtures("ray_cluster")
def test_end_to_end_on_ray_with_mlflow_contents(home):
    from mlflow.tracking import MlflowClient

    from core.tracking import default_tracking_uri

    cfg = config(home, generations=3)
    result = driver.run(cfg, progress=False)
    assert result.generation == 3 and not result.interrupted
    client = MlflowClient(default_tracking_uri(cfg.home))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["evolution.population"] == "16"
    assert "data.sha256" in run.data.params
    for key in ("sharpe_best", "max_drawdown_best", "hypervolume", "trials", "diversity",
                "front_size", "evaluations_per_s", "generation_seconds"):
        steps = [m.step for m in client.get_metric_history(result.run_id, key)]
        assert steps == [0, 1, 2, 3], key
    trials = client.get_metric_history(result.run_id, "trials")
    assert trials[-1].value == result.trials
    arts = {a.path for a in client.list_artifacts(result.run_id, "fronts")}
    assert "fronts/gen_0003.parquet" in arts
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "plots/pareto_gen_0002.png" in plots and "plots/pareto_gen_0003.png" in plots
    best = {a.path for a in client.list_artifacts(result.run_id, "best/rank_1")}
    if not result.front[result.front["violation"] == 0].empty:
        assert {"best/rank_1/genome.json", "best/rank_1/equity.png"} <= best
    assert (result.run_dir / "checkpoint.json").exists()
    saved = parse_config(__import__("json").loads((result.run_dir / "config.json").read_text()), "x")
    assert saved.evolution == cfg.evolution


def test_evolution_finds_a_planted_pattern(tmp_path):
    """Within the default budget (population 100, 30 generations) the best in-sample Sharpe
    comes within a margin of the planted strategy's Sharpe on the same folds."""
    from fitness.metrics import METRIC_INDEX
    from fitness.simulator import evaluate

    home = planted_home(tmp_path)
    cfg = parse_config({"home": str(home), "volatility": {"window": 250, "refit_every": 500},
                        "evolution": {"symbol": "PLANT", "folds": 2, "seed": 5,
                                      "min_trades_per_year": 10}}, "t")
    data = research_data(cfg)
    planted = evaluate(roc1_genome()[None], data.tables, data.bars, data.segments, data.meta,
                       cfg.fitness)[0, :, METRIC_INDEX["sharpe"]].mean()
    assert planted > 2.0, "the planted pattern should be strongly profitable"
    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    best = result.front["sharpe"].max()
    assert best >= planted - 1.0, (best, planted)


class Interrupting(driver.LocalEvaluator):
    """Raises KeyboardInterrupt on its n-th call, as Ctrl-C (or ``ray job stop``) would."""

    def __init__(self, data, cfg, at_call: int):
        super().__init__(data, cfg)
        self.calls, self.at_call = 0, at_call

    def evaluate_trials(self, genomes):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return super().evaluate_trials(genomes)


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_finishes_the_run(home):
    from mlflow.tracking import MlflowClient

    from core.tracking import default_tracking_uri

    cfg = config(home, generations=4, seed=9)
    data = research_data(cfg)
    stopped = driver.run(cfg, evaluator=Interrupting(data, cfg, at_call=3), data=data,
                         progress=False)
    assert stopped.interrupted and stopped.generation == 1  # generation 2 was cut short
    client = MlflowClient(default_tracking_uri(cfg.home))
    assert client.get_run(stopped.run_id).info.status == "KILLED"
    resumed = driver.run(cfg, resume=stopped.run_id, evaluator=driver.LocalEvaluator(data, cfg),
                         data=data, progress=False)
    whole = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data, progress=False)
    assert resumed.generation == 4
    assert list(resumed.front["genome"]) == list(whole.front["genome"])
    assert client.get_run(stopped.run_id).info.status == "FINISHED"


def test_python_m_evolution_entry_point(home, tmp_path):
    """The Ray job entry point runs a whole (tiny, in-process) evolution and says where to look."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cfg_file = tmp_path / "tiny.yaml"
    raw = {**BASE, "home": str(home), "evolution": {**BASE["evolution"], "generations": 1}}
    cfg_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "evolution", "run", str(cfg_file), "--local",
                           "--no-progress"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final Pareto front" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    assert "generation 1/1" in proc.stdout


def test_the_run_record_holds_the_checkpoints_front_and_trials(home):
    """``front.json`` + ``trials.npz`` (written with every checkpoint) hold exactly the front
    the checkpoint gives through DEAP (same rows, same order) and the checkpoint's trials."""
    import json

    from core import run_record
    from evolution import checkpoint as ckpt
    from evolution.objectives import deap_weights
    from genome.codec import from_json
    from genome.context import context_for

    cfg = config(home, generations=3, islands=2, migration_interval=2)
    data = research_data(cfg)
    result = driver.run(cfg, evaluator=driver.LocalEvaluator(data, cfg), data=data,
                        progress=False)
    rec = run_record.read(result.run_dir)
    snap = ckpt.load(result.run_dir)
    cls = ga.individual_class(deap_weights(cfg.evolution.objectives))
    front = ga.pareto_front(driver.restore_individuals(cls, snap.hof))
    cache = {str(k): snap.cache_metrics[i] for i, k in enumerate(snap.cache_keys)}
    bar_ctx = context_for(data.bars.timeframe, data.meta.calendar)  # as the driver's rules
    df = driver.front_frame(front, driver.State(snap.generation, [], None, cache), cfg, bar_ctx)
    df = df.drop_duplicates("key", ignore_index=True)
    entries = rec.front["front"]
    assert len(entries) == len(df) > 0
    names = [s.name for s in cfg.evolution.objectives]
    for entry, (_, row) in zip(entries, df.iterrows(), strict=True):
        assert entry["key"] == row["key"] and entry["rules"] == row["rules"]
        assert entry["genome"] == json.loads(row["genome"])
        assert entry["phenotype_key"] == phenotype_key(from_json(row["genome"]))
        assert entry["phenotype_key"][:16] == entry["key"]
        assert entry["weighted"] == row["weighted"] and entry["violation"] == row["violation"]
        assert [entry["objectives"][n] for n in names] == [row[n] for n in names]
    assert list(result.front.drop_duplicates("key")["genome"]) == list(df["genome"])
    assert rec.front["generation"] == snap.generation == 3
    assert rec.front["generations"] == 3 and rec.front["trials"] == result.trials
    assert rec.front["objectives"] == [{"name": s.name, "direction": s.direction}
                                       for s in cfg.evolution.objectives]
    assert (rec.arrays["keys"] == snap.cache_keys).all()
    assert np.array_equal(rec.arrays["metrics"], snap.cache_metrics)
    distinct: dict[str, np.ndarray] = {}
    for isl in snap.islands:
        for g in isl["genes"]:
            distinct.setdefault(phenotype_key(g), g)
    assert np.array_equal(rec.arrays["population"], np.stack(list(distinct.values())))
    assert rec.arrays["population"].dtype == np.float64


def test_a_torn_or_foreign_run_record_is_refused(tmp_path):
    from core import run_record

    arrays = {"keys": np.array(["a" * 64], dtype="U64"), "metrics": np.zeros((1, 2, 3)),
              "population": np.zeros((1, 4)), "sketches": np.ones((1, 8), dtype=np.float32)}
    run_record.write(tmp_path, {"generation": 1, "front": []}, arrays)
    rec = run_record.read(tmp_path)
    assert rec.front["version"] == run_record.VERSION and rec.front["generation"] == 1
    assert set(rec.arrays) == set(arrays) and rec.arrays["sketches"].dtype == np.float32
    with pytest.raises(ValueError, match="missing"):
        run_record.write(tmp_path, {}, {"keys": arrays["keys"]})
    with pytest.raises(ValueError, match="pickle"):
        run_record.write(tmp_path, {}, {**arrays, "bad": np.array([{}], dtype=object)})
    npz = tmp_path / rec.front["trials_file"]
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(run_record.RecordError, match="torn or edited"):
        run_record.read(tmp_path)
    run_record.write(tmp_path, {"generation": 1, "front": []}, arrays)
    front = tmp_path / run_record.FRONT_FILE
    front.write_text(front.read_text().replace('"version": 2', '"version": 99'))
    with pytest.raises(run_record.RecordError, match="version 99"):
        run_record.read(tmp_path)
    # an edit that still parses (the generation the gates check) fails the document's digest
    run_record.write(tmp_path, {"generation": 1, "front": []}, arrays)
    front.write_text(front.read_text().replace('"generation": 1', '"generation": 30'))
    with pytest.raises(run_record.RecordError, match="edited"):
        run_record.read(tmp_path)
    front.unlink()
    with pytest.raises(run_record.RecordError, match="no run record"):
        run_record.read(tmp_path)
