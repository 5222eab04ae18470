"""Ablation plumbing: variant configs ablate exactly one thing under one budget, and the
tables put the paper's figures beside ours (training is replaced by fake models here;
the real run is ``omni eval RUN --ablations``)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import evaluate
from omnisearchsage.orchestration import ablations
from omnisearchsage.orchestration.ablations import (
    COMPAT_ONLY,
    NO_CAPTIONS,
    NO_VISUAL,
    SINGLE_TASK,
    TABLE4_VARIANTS,
    UNIFIED,
    ablation_markdown,
    run_ablations,
    variant_config,
    variants_for,
)
from omnisearchsage.orchestration.config import AblationConfig
from omnisearchsage.trainer.config import TrainConfig

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
    # Table 5: a single-task model sees its task's pairs per step in the unified model, no more;
    # Table 6's compat-only reference keeps the whole batch.
    run_tasks = ("query-pin", "query-product", "query-query", "compat-pin", "compat-product")
    full = TrainConfig()  # 704 pairs, shares 8 : 4 : 4 : 4 : 2
    own = AblationConfig()
    assert variant_config(full, SINGLE_TASK["query-pin"], own, run_tasks).batch_size == 256
    assert variant_config(full, SINGLE_TASK["query-query"], own, run_tasks).batch_size == 128
    assert variant_config(full, SINGLE_TASK["query-query"], cfg, run_tasks).batch_size == 12  # 64 * 4 / 22
    assert variant_config(full, COMPAT_ONLY, own, run_tasks).batch_size == 704
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

    def fake_train(ws, run, variant, base, cfg):
        trained.append(variant.name)
        if variant.name == "continuous-only":
            raise OmniError("entity_fields: choose a non-empty subset")
        return replace(good if variant.name in ("unified", "only-query-pin") else bad, version=variant.name)

    def coded_recall(ev, task, action, ids=None):
        return (None, 0) if ev is None else (MODELS.index(ev.model.version), 1)

    cfg = EvalConfig(ann=(), baselines=())
    _, main = evaluate(tiny_ws, replace(good, version="run"), cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablations, "train_variant", fake_train)
        mp.setattr(ablations, "base_config", lambda ws, run: TrainConfig())
        mp.setattr(ablations, "run_uses_visual", lambda ws, run: visual)
        if coded:
            mp.setattr(ablations, "recall", coded_recall)
        return run_ablations(tiny_ws, "r", cfg, main, AblationConfig(tables=(3, 4))), trained


@pytest.fixture(scope="module")
def tables(tiny_ws):
    good, bad = fake_model(tiny_ws), fake_model(tiny_ws, constant=True)

    def fake_train(ws, run, variant, base, cfg):
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
    assert md.count("## Table") == 4
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


def test_a_run_without_visual_slot_is_the_no_visual_model(tiny_ws):
    tables, trained = _ablate(tiny_ws, visual=False, coded=True)
    assert "no-visual" not in trained
    save = next(r for r in tables["tables"]["3"]["rows"] if r[0] == "pin save")
    assert save[4:6] == [MODELS.index("run"), None]  # "with captions" is the run itself; "+ visual" empty
    last = tables["tables"]["4"]["rows"][-1]
    assert last[0] == "+ visual" and all(c is None for c in last[1:])
