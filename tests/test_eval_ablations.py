"""Ablation plumbing: variant configs ablate exactly one thing under one budget, and the
tables put the paper's figures beside ours (training is replaced by fake models here;
the real run is ``omni eval RUN --ablations``)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from omnisearchsage.contract import TRUTH_PINS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import evaluate
from omnisearchsage.evaluation.report import fmt
from omnisearchsage.model.io import load_embeddings
from omnisearchsage.orchestration import ablations
from omnisearchsage.orchestration.ablations import (
    COMPAT_ONLY,
    NO_CAPTIONS,
    NO_VISUAL,
    SINGLE_TASK,
    TABLE4_VARIANTS,
    UNIFIED,
    ablation_markdown,
    pins_by_age,
    run_ablations,
    variant_config,
    variants_for,
)
from omnisearchsage.orchestration.config import AblationConfig
from omnisearchsage.split import TimeSplit
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.loop import CONFIG, read_run_config

from .test_eval_run import fake_model


def test_variant_configs_change_one_thing_and_share_the_budget():
    base = TrainConfig(steps=5000, batch_size=1024)
    cfg = AblationConfig(steps=40, batch_size=64)
    no_cap = variant_config(base, NO_CAPTIONS, cfg)
    assert "caption" not in no_cap.model.entity_fields
    assert set(no_cap.model.entity_fields) == set(base.model.entity_fields) - {"caption"}
    assert (no_cap.steps, no_cap.batch_size, no_cap.tasks) == (40, 64, base.tasks)
    continuous = variant_config(base, TABLE4_VARIANTS[0][1], cfg)
    assert continuous.model.entity_fields == () and continuous.model.use_legacy
    # Visual embeddings: only the last Table 4 step (the unified reference) reads them.
    assert base.model.use_visual and not no_cap.model.use_visual and not continuous.model.use_visual
    no_visual = variant_config(base, NO_VISUAL, cfg)
    assert no_visual.model == replace(base.model, use_visual=False)
    assert [variant_config(base, v, cfg).model.use_visual for _, v in TABLE4_VARIANTS] == [False] * 4 + [True]
    assert variant_config(base, SINGLE_TASK["query-product"], cfg).tasks == ("query-product",)
    assert variant_config(base, COMPAT_ONLY, cfg).tasks == ("compat-pin", "compat-product")
    # The run's decided field dropout carries over for the fields a variant still reads.
    dropped = replace(base, model=replace(base.model, field_dropout=(("engaged_queries", 0.3), ("caption", 0.1))))
    assert variant_config(dropped, NO_CAPTIONS, cfg).model.field_dropout == (("engaged_queries", 0.3),)
    assert variant_config(dropped, TABLE4_VARIANTS[1][1], cfg).model.field_dropout == (("caption", 0.1),)
    variant_config(dropped, TABLE4_VARIANTS[1][1], cfg).validate()
    # Tables 5 and 6: every single-task and the compat-only reference train with the run's whole
    # batch (the unified model must match each task alone at its best budget), or the ablation budget's.
    full = TrainConfig()
    own = AblationConfig()
    for variant in (*SINGLE_TASK.values(), COMPAT_ONLY):
        assert variant_config(full, variant, own).batch_size == full.batch_size
        assert variant_config(full, variant, cfg).batch_size == cfg.batch_size
    # Compat alone splits its batch as the joint run's compat tasks split what they score (own share
    # plus the shared retrieval pairs: 4 + 8 and 8 + 4), not by its own shares alone (4 : 8).
    run_tasks = ("query-pin", "query-product", "query-query", "compat-pin", "compat-product")
    joint = replace(full, compat_shared_pairs=True)
    alone = variant_config(joint, COMPAT_ONLY, own, run_tasks)
    assert alone.task_shares["compat-pin"] == alone.task_shares["compat-product"] == 12
    unshared = variant_config(replace(full, compat_shared_pairs=False), COMPAT_ONLY, own, run_tasks)
    assert (unshared.task_shares["compat-pin"], unshared.task_shares["compat-product"]) == (4, 8)
    assert variant_config(joint, SINGLE_TASK["query-pin"], own, run_tasks).task_shares == full.task_shares
    unified = variant_config(base, UNIFIED, cfg)
    assert unified.model == base.model and unified.steps == 40
    # Each variant is trained once even when several tables need it; the reference comes first.
    names = [v.name for v in variants_for((3, 4, 5, 6))]
    assert names[0] == "unified" and len(names) == len(set(names)) == 10
    # A run without a visual slot is itself the no-visual model: that variant is not trained.
    assert [v.name for v in variants_for((3, 4, 5, 6), visual=False)] == [n for n in names if n != "no-visual"]


#: With ``coded``, every cell of ours is the index of the model it was computed from in this list.
MODELS = ["run", "unified", "no-visual", "no-captions", "continuous-only", "text", "text+boards"]


def _ablate(tiny_ws, visual: bool, coded: bool = False):
    """The tables with fake models (the run and unified/only-query-pin rank well, every other variant
    badly, continuous-only is refused) and the variants trained."""
    good, bad = fake_model(tiny_ws), fake_model(tiny_ws, constant=True)
    trained: list[str] = []

    def fake_train(ws, run, variant, base, cfg, seed=0):
        trained.append(variant.name)
        if variant.name == "continuous-only":
            raise OmniError("entity_fields: choose a non-empty subset")
        return replace(good if variant.name in ("unified", "only-query-pin") else bad, version=variant.name)

    def coded_recall(ev, task, action, ids=None):
        return (None, 0) if ev is None else (MODELS.index(ev[0].model.version), 1)

    def coded_difference(a, b, task, action, cfg, ids=None):
        """(model of a, model of b, pins the difference is taken on; 0: all)."""
        if a is None or b is None:
            return None
        return MODELS.index(a[0].model.version), MODELS.index(b[0].model.version), len(ids) if ids else 0

    cfg = EvalConfig(ann=(), baselines=())
    _, main = evaluate(tiny_ws, replace(good, version="run"), cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablations, "train_variant", fake_train)
        mp.setattr(ablations, "base_config", lambda ws, run: TrainConfig())
        mp.setattr(ablations, "run_uses_visual", lambda ws, run: visual)
        if coded:
            mp.setattr(ablations, "recall", coded_recall)
            mp.setattr(ablations, "difference", coded_difference)
        return run_ablations(tiny_ws, "r", cfg, main, AblationConfig(tables=(3, 4))), trained


@pytest.fixture(scope="module")
def tables(tiny_ws):
    good, bad = fake_model(tiny_ws), fake_model(tiny_ws, constant=True)

    def fake_train(ws, run, variant, base, cfg, seed=0):
        if variant.name == "continuous-only":
            raise OmniError("entity_fields: choose a non-empty subset")
        return good if variant.name in ("unified", "only-query-pin") else bad

    cfg = EvalConfig(ann=(), baselines=())
    _, main = evaluate(tiny_ws, good, cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablations, "train_variant", fake_train)
        mp.setattr(ablations, "base_config", lambda ws, run: TrainConfig())
        mp.setattr(ablations, "run_uses_visual", lambda ws, run: True)
        return run_ablations(tiny_ws, "r", cfg, main)


def test_tables_hold_paper_figures_beside_ours(tables):
    t3, t4, t5, t6 = (tables["tables"][k] for k in ("3", "4", "5", "6"))
    save = next(r for r in t3["rows"] if r[0] == "pin save")
    assert save[1:3] == [0.51, 0.66]  # paper: without -> with captions
    assert save[6] > 0 and None not in save[3:6]  # pairs of text-less pins exist
    assert [r[0] for r in t4["rows"]] == [label for label, _ in TABLE4_VARIANTS]
    assert t4["rows"][0][1] == 0.43 and t4["rows"][0][2] is None  # refused variant: no figure of ours
    assert t4["rows"][-1][0] == "+ visual" and t4["rows"][-1][1] is None  # no paper figure
    query = next(r for r in t5["rows"] if r[0] == "query click")
    assert query[1:3] == [0.73, 0.78]
    assert {r[0] for r in t6["rows"]} >= {"pin save", "product long click"}
    assert "continuous-only" in tables["errors"]


def test_markdown_has_one_table_per_paper_table_and_names_refused_variants(tables):
    md = ablation_markdown(tables)
    assert md.count("## Table") == 4 and "## By pin age" in md
    assert "| pin save | 0.510 | 0.660 |" in md
    assert "`continuous-only` could not be trained" in md


def _ours(row: list) -> list:
    """Table 4 cells of ours (they alternate with the paper's after the label)."""
    return row[2::2]


def test_visual_columns_come_from_the_right_models(tiny_ws):
    tables, trained = _ablate(tiny_ws, visual=True, coded=True)
    assert "no-visual" in trained and "unified" not in trained  # the run itself is the unified model
    save = next(r for r in tables["tables"]["3"]["rows"] if r[0] == "pin save")
    # without captions (and visual) -> with captions (no visual) -> with captions + visual (the run)
    assert [MODELS[i] for i in save[3:6]] == ["no-captions", "no-visual", "run"]
    rows = tables["tables"]["4"]["rows"]
    assert [r[0] for r in rows][-2:] == ["+ engaged queries", "+ visual"]
    assert [MODELS[_ours(r)[0]] if _ours(r)[0] is not None else None for r in rows] == [
        None, "text", "text+boards", "no-visual", "run"]


def test_table4_by_pin_age_takes_each_step_on_new_and_settled_pins(tiny_ws):
    """Engaged queries can lift settled pins and cost new ones: the by-age table shows each step on
    each group, from the same two models as the whole-set step."""
    tables, _ = _ablate(tiny_ws, visual=True, coded=True)
    new, settled = pins_by_age(tiny_ws, TimeSplit.for_workspace(tiny_ws).train_end)
    truth = pl.read_parquet(tiny_ws.path(TRUTH_PINS))
    assert new == set(truth.filter("fresh")["pin_id"])  # created after the cutoff: the world's fresh pins
    assert new.isdisjoint(settled) and len(new | settled) == truth.height
    age = tables["tables"]["4-age"]
    assert [r[0] for r in age["rows"]] == ["pairs"] + [label for label, _ in TABLE4_VARIANTS[1:]]
    eq = next(r for r in age["rows"] if r[0] == "+ engaged queries")
    # Per set (save, long click, relevance): new pins, then settled ones; no-visual over text+boards.
    step = MODELS.index("no-visual"), MODELS.index("text+boards")
    assert eq[1:] == [(*step, n) for _ in range(3) for n in (len(new), len(settled))]
    whole = next(r for r in tables["tables"]["4"]["rows"] if r[0] == "+ engaged queries")
    assert whole[-3:] == [(*step, 0)] * 3


def test_table4_by_pin_age_pairs_partition_each_set(tables):
    age, t5 = tables["tables"]["4-age"], {r[0]: r[5] for r in tables["tables"]["5"]["rows"]}
    pairs = age["rows"][0]
    for i, paper in enumerate(("pin save", "pin long click", "pin relevance")):
        assert pairs[1 + 2 * i] > 0 and pairs[2 + 2 * i] > 0
        assert pairs[1 + 2 * i] + pairs[2 + 2 * i] == t5[paper]


def test_a_run_without_visual_slot_is_the_no_visual_model(tiny_ws):
    tables, trained = _ablate(tiny_ws, visual=False, coded=True)
    assert "no-visual" not in trained
    save = next(r for r in tables["tables"]["3"]["rows"] if r[0] == "pin save")
    assert save[4:6] == [MODELS.index("run"), None]  # "with captions" is the run itself; "+ visual" empty
    last = tables["tables"]["4"]["rows"][-1]
    assert last[0] == "+ visual" and all(c is None for c in last[1:])


def test_each_comparison_carries_a_paired_query_bootstrap_interval(tables, tiny_ws):
    t3, t4, t5, t6 = (tables["tables"][k] for k in ("3", "4", "5", "6"))
    # Table 5, query-pin: the unified model and only-query-pin are the same good model: no difference.
    pin = next(r for r in t5["rows"] if r[0] == "pin save")
    assert t5["columns"][-1].startswith("Δ") and pin[-1] == (0.0, 0.0, 0.0)
    # Query click: the unified model against a constant only-query-query model (both at chance on the
    # tiny world, so no sign is asserted here; test_eval_metrics checks that the paired interval separates
    # a consistent lead): the difference is the cells' difference and lies in a non-empty interval.
    query = next(r for r in t5["rows"] if r[0] == "query click")
    d, lo, hi = query[-1]
    assert d == pytest.approx(query[4] - query[3]) and lo <= d <= hi and lo < hi
    assert t6["columns"][-1] == "Δ jointly [CI]" and all(r[-1] is not None for r in t6["rows"])
    # Table 4: the first row has nothing before it; a refused variant leaves its step empty.
    assert t4["rows"][0][-3:] == [None] * 3 and t4["rows"][1][-3:] == [None] * 3
    assert t4["rows"][2][-1] is not None
    # Table 3 compares on the text-less pins only, as its figures do.
    row = next(r for r in t3["rows"] if r[0] == "pin save")
    assert row[-2][0] == pytest.approx(row[4] - row[3])
    assert "| +0.000 [+0.000, +0.000] |" in ablation_markdown(tables)


def test_a_difference_needs_the_same_pairs_and_reads_as_a_cell_after_a_json_round_trip(tiny_ws, caplog):
    """Two variants scored on other pairs (an export reused from another catalogue) get no difference,
    with a warning; matching query counts are not enough, the (query, entity) pairs must be equal."""
    good = fake_model(tiny_ws)
    cfg = EvalConfig(ann=(), baselines=())
    _, a = evaluate(tiny_ws, good, cfg)
    key = next(iter(a.ranked))
    task, action = key[1], a.ranked[key]["action"][0]
    assert ablations.difference([a], [a], task, action, cfg) == (0.0, 0.0, 0.0)
    for change in (lambda f: f.head(len(f) // 2), lambda f: f.with_columns(pl.col("entity_id") + "x")):
        _, b = evaluate(tiny_ws, good, cfg)
        b.ranked[key] = change(b.ranked[key])
        assert ablations.difference([a], [b], task, action, cfg) is None
    assert "different" in caplog.text
    assert fmt(json.loads(json.dumps((0.02, -0.004, 0.048)))) == "+0.020 [-0.004, +0.048]"


def test_a_variant_trained_by_an_older_version_is_reused_unless_its_config_changed(tmp_path, monkeypatch):
    """A config stored before a field existed compares at that field's default (which keeps the old
    behaviour), so upgrading does not retrain every variant; a real change, or ``retrain``, does."""
    ws, base = Workspace(tmp_path), TrainConfig()
    trained: list[str] = []
    monkeypatch.setattr(ablations, "train", lambda ws, cfg, name, overwrite: trained.append(name))
    monkeypatch.setattr(ablations, "export_run", lambda ws, name: None)
    monkeypatch.setattr(ablations.EmbeddingModel, "from_export", staticmethod(lambda root: root))
    run_tasks = {"query-pin": {"pairs": 10**6, "batch_size": 352}, "compat-pin": {"pairs": 10**6, "batch_size": 352}}
    # compat-only's run stopped where max_epochs cut it: 4 epochs of 100 pairs at 352 a step = 2 steps.
    cut = {"compat-pin": {"pairs": 100, "batch_size": 352}}
    for name, variant, tasks in (("r", UNIFIED, run_tasks), ("r--abl-no-captions", NO_CAPTIONS, run_tasks),
                                 ("r--abl-compat-only", COMPAT_ONLY, cut)):
        cfg = variant_config(base, variant, AblationConfig(), tuple(run_tasks))
        if tasks is cut:
            cfg = replace(cfg, steps=2, warmup_steps=1)  # as the trainer's limit_steps stores it
        stored = json.loads(json.dumps(cfg.to_json()))
        del stored["fine_tune_hard_negatives"]  # written before the option existed (its default: what it did)
        run = ws.run_dir(name)
        run.mkdir(parents=True)
        (run / CONFIG).write_text(json.dumps({"config": stored, "tasks": tasks}), encoding="utf-8")
        ws.run(name).export.root.mkdir(parents=True)
        ws.run(name).export.manifest.write_text("{}", encoding="utf-8")
    ablations.train_variant(ws, "r", NO_CAPTIONS, base, AblationConfig())
    # A run max_epochs stopped early is the training asked for, not a stale one retrained at every eval.
    ablations.train_variant(ws, "r", COMPAT_ONLY, base, AblationConfig())
    assert trained == []
    ablations.train_variant(ws, "r", NO_CAPTIONS, base, AblationConfig(retrain=True))
    assert trained == ["r--abl-no-captions"]
    ablations.train_variant(ws, "r", NO_CAPTIONS, replace(base, steps=base.steps + 1), AblationConfig())
    assert trained == ["r--abl-no-captions"] * 2
    # An option whose default changed behaviour: a config without it was trained the old way.
    stored = json.loads((ws.run_dir("r--abl-no-captions") / CONFIG).read_text(encoding="utf-8"))
    del stored["config"]["model"]["compat_from"]
    (ws.run_dir("r--abl-no-captions") / CONFIG).write_text(json.dumps(stored), encoding="utf-8")
    assert TrainConfig.from_json(stored["config"]).model.compat_from == "body"
    ablations.train_variant(ws, "r", NO_CAPTIONS, base, AblationConfig())
    assert trained == ["r--abl-no-captions"] * 3
    # A key this version does not know (a config of another version): trained afresh, not refused.
    stored["config"]["model"]["no_such_option"] = 1
    (ws.run_dir("r--abl-no-captions") / CONFIG).write_text(json.dumps(stored), encoding="utf-8")
    ablations.train_variant(ws, "r", NO_CAPTIONS, base, AblationConfig())
    assert trained == ["r--abl-no-captions"] * 4


def test_with_two_seeds_every_figure_is_the_mean_over_the_seeds(tiny_ws):
    """``seeds=2``: every variant is trained twice (the run itself is the unified model's first seed),
    and each cell, and each difference, is the mean over the two models."""
    good, bad = fake_model(tiny_ws, oracle=True), fake_model(tiny_ws, constant=True)
    trained: list[tuple[str, int]] = []

    def fake_train(ws, run, variant, base, cfg, seed=0):
        trained.append((variant.name, seed))
        return good if seed == 0 else bad

    cfg = EvalConfig(ann=(), baselines=())
    _, main = evaluate(tiny_ws, good, cfg)
    _, weak = evaluate(tiny_ws, bad, cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablations, "train_variant", fake_train)
        mp.setattr(ablations, "base_config", lambda ws, run: TrainConfig())
        mp.setattr(ablations, "run_uses_visual", lambda ws, run: True)
        tables = run_ablations(tiny_ws, "r", cfg, main, AblationConfig(tables=(5, 6), seeds=2))
    assert ("unified", 1) in trained and ("unified", 0) not in trained
    assert sorted(s for name, s in trained if name == "compat-only") == [0, 1]
    strong, poor = (ablations.recall([e], "query-pin", "save")[0] for e in (main, weak))
    assert strong > poor  # else the mean below could not tell one seed from two
    row = next(r for r in tables["tables"]["5"]["rows"] if r[0] == "pin save")
    assert row[3] == pytest.approx((strong + poor) / 2) and row[4] == pytest.approx((strong + poor) / 2)
    assert row[-1][0] == pytest.approx(0.0)
    assert "each figure the mean of 2 training seeds" in ablation_markdown(tables)


def test_variants_trained_in_parallel_processes_match_those_trained_in_process(two_step_run):
    """``jobs=2`` trains in spawned processes: each seed gets its own run and training seed, nothing is
    left to train afterwards, and a variant so trained is the model this process trains for it."""
    ws = two_step_run
    base = ablations.base_config(ws, "r")
    cfg = AblationConfig(tables=(3,), seeds=2, jobs=2)
    ablations._train_in_parallel(ws, "r", [(NO_CAPTIONS, 0), (NO_CAPTIONS, 1)], base, cfg)
    names = ["r--abl-no-captions", "r--abl-no-captions--seed1"]
    assert [read_run_config(ws.run_dir(n))["config"]["seed"] for n in names] == [base.seed, base.seed + 1]
    assert all(ablations._pending(ws, "r", NO_CAPTIONS, base, cfg, s) is None for s in (0, 1))
    spawned = [load_embeddings(ws.run(n).export.root, "pin")[1] for n in names]
    assert not np.allclose(spawned[0], spawned[1])  # another seed, another model
    ablations.train_variant(ws, "r", NO_CAPTIONS, base, replace(cfg, retrain=True, jobs=1), seed=1)
    np.testing.assert_allclose(load_embeddings(ws.run(names[1]).export.root, "pin")[1], spawned[1], atol=1e-6)


def test_ablation_seeds_and_jobs_must_be_positive():
    with pytest.raises(OmniError, match="both must be >= 1"):
        AblationConfig(seeds=0)
