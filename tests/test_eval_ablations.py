"""Ablation plumbing: variant configs ablate exactly one thing under one budget, and the
tables put the paper's figures beside ours (training is replaced by fake models here;
the real run is ``omni eval RUN --ablations``)."""
from __future__ import annotations

import pytest

from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import evaluate
from omnisearchsage.orchestration import ablations
from omnisearchsage.orchestration.ablations import (
    COMPAT_ONLY,
    NO_CAPTIONS,
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
    assert variant_config(base, SINGLE_TASK["query-product"], cfg).tasks == ("query-product",)
    assert variant_config(base, COMPAT_ONLY, cfg).tasks == ("compat-pin", "compat-product")
    unified = variant_config(base, UNIFIED, cfg)
    assert unified.model == base.model and unified.steps == 40
    # Each variant is trained once even when several tables need it; the reference comes first.
    names = [v.name for v in variants_for((3, 4, 5, 6))]
    assert names[0] == "unified" and len(names) == len(set(names)) == 9


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
        return run_ablations(tiny_ws, "r", cfg, main)


def test_tables_hold_paper_figures_beside_ours(tables):
    t3, t4, t5, t6 = (tables["tables"][k] for k in ("3", "4", "5", "6"))
    save = next(r for r in t3["rows"] if r[0] == "pin save")
    assert save[1:3] == [0.51, 0.66]  # paper: without -> with captions
    assert save[5] > 0 and save[3] is not None and save[4] is not None  # pairs of text-less pins exist
    assert [r[0] for r in t4["rows"]] == [label for label, _ in TABLE4_VARIANTS]
    assert t4["rows"][0][1] == 0.43 and t4["rows"][0][2] is None  # refused variant: no figure of ours
    query = next(r for r in t5["rows"] if r[0] == "query click")
    assert query[1:3] == [0.73, 0.78]
    assert {r[0] for r in t6["rows"]} >= {"pin save", "product long click"}
    assert "continuous-only" in tables["errors"]


def test_markdown_has_one_table_per_paper_table_and_names_refused_variants(tables):
    md = ablation_markdown(tables)
    assert md.count("## Table") == 4
    assert "| pin save | 0.510 | 0.660 |" in md
    assert "`continuous-only` could not be trained" in md
