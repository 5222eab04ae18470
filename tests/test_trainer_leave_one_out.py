"""Leave-one-out engaged queries: a training positive reads its entity's engaged queries without the
pair's own query exactly when that query engaged the entity only once before the cutoff, negatives and
the catalogue keep the full field, and switching it off restores the features table's bags."""
from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import ENGAGED_QUERIES, ENGAGEMENTS, Workspace
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries, effective_cutoff
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize_expr
from omnisearchsage.model.inputs import TokenBags
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import TrainingData, load_training_data
from omnisearchsage.trainer.field_dropout import field_skew
from omnisearchsage.trainer.loop import read_run_config
from omnisearchsage.validate import read_table

CFG = TrainConfig(batch_size=64, steps=1)


@pytest.fixture(scope="module")
def enriched(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Featurizer]:
    ws = Workspace(tmp_path_factory.mktemp("loo") / "ws")
    shutil.copytree(tiny_ws.root, ws.root)
    build_engaged_queries(ws)
    build_features(ws, FeatureConfig())
    return ws, Featurizer.load(ws.features)


def _bag(bags: TokenBags, b: int) -> list[int]:
    return bags.values[bags.bounds[b]:bags.bounds[b + 1]].tolist()


def _events(ws: Workspace, kind: str) -> dict[tuple[str, str], int]:
    """Independent oracle: engagements of each (entity, normalised query) in the engaged-query window,
    counted from the raw log."""
    cutoff = effective_cutoff(ws, QueriesConfig())
    start = datetime(cutoff.year, cutoff.month, cutoff.day)
    counts = (read_table(ws, ENGAGEMENTS)
              .filter((pl.col("entity_type") == kind) & (pl.col("ts") < start)
                      & (pl.col("ts") >= start - timedelta(days=QueriesConfig().window_days)))
              .group_by("entity_id", query=normalize_expr(pl.col("query"))).agg(n=pl.len()).collect())
    return {(e, q): n for e, q, n in counts.iter_rows()}


@pytest.mark.parametrize("kind,task", [("pin", "query-pin"), ("product", "query-product")])
def test_a_positive_loses_its_query_only_when_it_was_that_querys_single_engagement(enriched, kind, task):
    ws, featurizer = enriched
    data = load_training_data(ws, CFG, featurizer)
    off = load_training_data(ws, replace(CFG, engaged_queries_leave_one_out=False), featurizer)
    field, t = data.left_out_field, data.tasks[task]
    assert field is not None and t.positive_bags is not None
    lists = {e: q for e, q in read_table(ws, ENGAGED_QUERIES).filter(pl.col("entity_type") == kind)
             .select("entity_id", "queries").collect().iter_rows()}
    events = _events(ws, kind)
    cat, queries, bags = data.catalogues[kind], data.catalogues["query"].keys, data.catalogues[kind].bags
    field_bag = field * cat.bags.rows
    losing = leaks = 0
    for qr, cr, b in zip(t.query_rows, t.cand_rows, t.positive_bags):
        e, q = cat.keys[int(cr)], queries[int(qr)]
        own = lists.get(e) or []
        leaks += q in own  # the leak itself: a training positive finds its own query there
        if q in own and events[(e, q)] == 1:
            losing += 1
            kept = pl.Series([[x for x in own if x != q]], dtype=pl.List(pl.Utf8))
            assert _bag(bags, int(b)) == featurizer.encode_field(kept).to_list()[0]
        else:
            assert b == -1  # another engagement of the entity by the query: what a future pair could see
        plain = off.catalogues[kind].bags
        assert _bag(bags, field_bag + int(cr)) == _bag(plain, field_bag + int(cr))  # the entity's own bag untouched
    assert leaks > 0.95 * t.pairs and 0 < losing < t.pairs


def test_batches_give_positives_the_left_out_field_and_negatives_the_full_one(enriched):
    ws, featurizer = enriched
    data = load_training_data(ws, CFG, featurizer)
    off = load_training_data(ws, replace(CFG, engaged_queries_leave_one_out=False), featurizer)
    assert off.left_out_field is None and all(t.positive_bags is None for t in off.tasks.values())
    samples = data.sample(0)
    s = samples["query-pin"]
    assert (s.pos_bags >= 0).any() and (s.pos_bags == -1).any()
    rows = np.concatenate([s.pos_rows, s.neg_rows])
    fields = len(data.fields)
    override = np.full((len(rows), fields), -1)
    override[: len(s.pos_rows), data.left_out_field] = s.pos_bags
    expected = data.catalogues["pin"].bags.gather(rows, override)
    plain = off.catalogues["pin"].bags.gather(rows)
    got = data.entity_inputs([("pin", rows)], [data._positive_override(s, len(rows))])
    assert got["ids"].tolist() == expected[0].tolist() and got["offsets"].tolist() == expected[1].tolist()
    assert got["ids"].tolist() != plain[0].tolist()
    # Without leave-one-out the same sample reads the features table's bags.
    unchanged = off.entity_inputs([("pin", rows)], [off._positive_override(off.sample(0)["query-pin"], len(rows))])
    assert unchanged["ids"].tolist() == plain[0].tolist()


def test_field_dropout_counts_positives_left_without_engaged_queries(enriched):
    """A positive whose only engaged query is its pair's own reads the field empty: the positives lack
    it more often, so the rule's skew (catalogue minus positives) shrinks."""
    ws, featurizer = enriched
    data = load_training_data(ws, CFG, featurizer)
    off = load_training_data(ws, replace(CFG, engaged_queries_leave_one_out=False), featurizer)
    emptied = _emptied(data)
    assert emptied > 0
    positives = sum(t.pairs for t in data.tasks.values() if not t.frozen and t.candidate != "query")
    drop = field_skew(off)["engaged_queries"] - field_skew(data)["engaged_queries"]
    assert drop == pytest.approx(emptied / positives)


def _emptied(data: TrainingData) -> int:
    out = 0
    for t in data.tasks.values():
        if t.positive_bags is None:
            continue
        sizes = np.diff(data.catalogues[t.candidate].bags.bounds)
        chosen = t.positive_bags[t.positive_bags >= 0]
        out += int((sizes[chosen] == 0).sum())
    return out


def test_gather_override_reads_the_named_bags():
    table = TokenBags(np.array([1, 2, 3, 4], np.int32), np.array([0, 1, 2, 3, 4]), rows=2, fields=2)
    bags = table.with_extra(TokenBags.from_offsets(np.array([5]), np.array([0])))
    assert bags.sizes().tolist() == [1, 1, 1, 1]  # the table's own bags only
    # bags 0, 1: field 0 of rows 0, 1; bags 2, 3: field 1; bag 4: the extra bag (id 5).
    ids, offsets = bags.gather(np.array([1, 0]), np.array([[-1, 4], [-1, -1]]))
    assert ids.tolist() == [2, 5, 1, 3] and offsets.tolist() == [0, 1, 2, 3]


def test_the_cli_switch_reaches_the_run_config(enriched):
    """`omni train --no-leave-one-out` is recorded in the run's config (a resume or a comparison reads it
    back); the default is on."""
    ws, _ = enriched
    for name, flags, expected in (("on", [], True), ("off", ["--no-leave-one-out"], False)):
        result = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--name", name, "--steps", "1",
                                          "--batch-size", "32", "--no-visual", *flags])
        assert result.exit_code == 0, result.output
        config = read_run_config(ws.run_dir(name))["config"]
        assert config["engaged_queries_leave_one_out"] is expected
