"""Engaged queries as a training positive saw them. ``pair`` (the default): the entity's engaged queries
ranked, by the enrich stage's recorded ranking, from the days before the pair's first engagement;
``leave_one_out``: those of the cutoff without the pair's own query exactly when that query engaged the
entity only once. Negatives and the catalogue keep the full field, and ``cutoff`` restores the features
table's bags."""
from __future__ import annotations

import shutil
from collections import defaultdict
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
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize_expr
from omnisearchsage.model.inputs import TokenBags
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import TaskPairs, TrainingData, load_training_data
from omnisearchsage.trainer.field_dropout import field_skew
from omnisearchsage.trainer.loop import read_run_config
from omnisearchsage.trainer.positive_queries import snapshot_days
from omnisearchsage.validate import read_table

LOO = TrainConfig(batch_size=64, steps=1)
PAIR = replace(LOO, engaged_queries_as_of="pair")
OFF = replace(PAIR, engaged_queries_as_of="cutoff")
#: Not the defaults: the point-in-time lists must rank as the stage that wrote the counts did.
RANKING = QueriesConfig(top_k=5, action_weights={"save": 1.0, "long_click": 4.0, "click": 2.0, "checkout": 0.5})


@pytest.fixture(scope="module")
def enriched(tiny_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Featurizer]:
    ws = Workspace(tmp_path_factory.mktemp("loo") / "ws")
    shutil.copytree(tiny_ws.root, ws.root)
    build_engaged_queries(ws, RANKING)
    build_features(ws, FeatureConfig())
    return ws, Featurizer.load(ws.features)


def _bag(bags: TokenBags, b: int) -> list[int]:
    return bags.values[bags.bounds[b]:bags.bounds[b + 1]].tolist()


def _window_events(ws: Workspace, kind: str) -> pl.DataFrame:
    """The raw log's events of the engaged-query window: entity, normalised query, action, day."""
    cutoff = effective_cutoff(ws, RANKING)
    start = datetime(cutoff.year, cutoff.month, cutoff.day)
    return (read_table(ws, ENGAGEMENTS)
            .filter((pl.col("entity_type") == kind) & (pl.col("ts") < start)
                    & (pl.col("ts") >= start - timedelta(days=RANKING.window_days)))
            .select("entity_id", "action", query=normalize_expr(pl.col("query")), day=pl.col("ts").dt.date())
            .filter(pl.col("query") != "").collect())


def _events(ws: Workspace, kind: str) -> dict[tuple[str, str], int]:
    """Independent oracle: engagements of each (entity, normalised query) in the engaged-query window,
    counted from the raw log."""
    counts = _window_events(ws, kind).group_by("entity_id", "query").agg(n=pl.len())
    return {(e, q): n for e, q, n in counts.iter_rows()}


def _as_of_oracle(ws: Workspace, kind: str) -> tuple[dict, dict]:
    """Independent oracle, in plain Python over the raw log: each (entity, query)'s first day, and a
    function of (entity, day) giving the top RANKING.top_k queries of the earlier days by weighted count
    (ties to the smaller query)."""
    first: dict[tuple[str, str], object] = {}
    by_entity: dict[str, list[tuple[object, str, str]]] = defaultdict(list)
    for e, action, q, day in _window_events(ws, kind).iter_rows():
        first[(e, q)] = min(first.get((e, q), day), day)
        by_entity[e].append((day, q, action))

    def top(e: str, day: object) -> list[str]:
        score: dict[str, float] = defaultdict(float)
        for d, q, action in by_entity[e]:
            if d < day:
                score[q] += RANKING.action_weights.get(action, RANKING.unknown_action_weight)
        ranked = sorted((q for q, s in score.items() if s > 0), key=lambda q: (-score[q], q))
        return ranked[: RANKING.top_k]

    return first, top


def _loaded(enriched: tuple[Workspace, Featurizer], cfg: TrainConfig,
            task: str) -> tuple[TrainingData, TrainingData, TaskPairs]:
    """The training data under ``cfg``, the same as of the cutoff, and ``cfg``'s task ``task``, whose
    positives must read a rewritten field."""
    ws, featurizer = enriched
    data = load_training_data(ws, cfg, featurizer)
    t = data.tasks[task]
    assert data.as_of_field is not None and t.positive_bags is not None
    return data, load_training_data(ws, OFF, featurizer), t


def _encode(featurizer: Featurizer, queries: list[str]) -> list[int]:
    return featurizer.encode_field(pl.Series([queries], dtype=pl.List(pl.Utf8))).to_list()[0]


def _reads(bags: TokenBags, field: int, bag: int, row: int) -> list[int]:
    """The engaged-queries ids a candidate row reads: bag ``bag``, or its own (-1)."""
    return _bag(bags, int(bag) if bag >= 0 else field * bags.rows + int(row))


def test_snapshot_days_are_quantiles_of_the_pairs_days_from_the_earliest():
    days = np.array(["2026-01-05"] * 5 + ["2026-02-01", "2026-03-01", "2026-03-02"], dtype="datetime64[D]")
    got = snapshot_days(days[::-1], 4)
    assert got.tolist() == np.array(["2026-01-05", "2026-03-01"], dtype="datetime64[D]").tolist()  # days 0, 2, 4, 6
    assert snapshot_days(days, 100).tolist() == np.unique(days).tolist()  # at most one per distinct day


@pytest.mark.parametrize("kind,task", [("pin", "query-pin"), ("product", "query-product")])
def test_a_pair_reads_its_entity_as_of_the_last_snapshot_on_or_before_its_first_day(enriched, kind, task):
    ws, featurizer = enriched
    data, off, t = _loaded(enriched, PAIR, task)
    field = data.as_of_field
    assert t.as_of is not None
    first, top = _as_of_oracle(ws, kind)
    cat, queries, bags = data.catalogues[kind], data.catalogues["query"].keys, data.catalogues[kind].bags
    keys = [(cat.keys[int(c)], queries[int(q)]) for q, c in zip(t.query_rows, t.cand_rows)]
    days = snapshot_days(np.array([first[k] for k in set(keys) if k in first], dtype="datetime64[D]"),
                         PAIR.engaged_queries_snapshots)  # quantiles over the distinct pairs
    assert len(days) == PAIR.engaged_queries_snapshots
    empty = 0
    for (e, q), cr, b, w in zip(keys, t.cand_rows, t.positive_bags, t.as_of):
        # A pair the counts do not hold (the training window's last hours: the stage's cutoff is a
        # midnight) came after every counted day: it reads the last snapshot.
        day = np.datetime64(first[(e, q)]) if (e, q) in first else days[-1]
        assert w == np.searchsorted(days, day, side="right") - 1 >= 0
        expected = top(e, days[w].astype(object))
        assert q not in expected  # no pair reads its own engagement
        assert _reads(bags, field, b, cr) == _encode(featurizer, expected)
        empty += not expected
        plain = off.catalogues[kind].bags
        assert _bag(bags, field * bags.rows + int(cr)) == _bag(plain, field * bags.rows + int(cr))  # own bag untouched
    # An entity's first pairs find nothing, as a new entity's test pairs do.
    assert 0.05 * t.pairs < empty < 0.9 * t.pairs


def test_negatives_read_their_entity_as_of_one_of_the_steps_pairs(enriched):
    """Read as of the cutoff, a negative would carry every engaged query up to the cutoff while its pair's
    positive carries only the earlier ones: a long list would mark a negative."""
    ws, featurizer = enriched
    data = load_training_data(ws, PAIR, featurizer)
    first, top = _as_of_oracle(ws, "pin")
    t, snaps, cat = data.tasks["query-pin"], data.snapshots["pin"], data.catalogues["pin"]
    idx = np.arange(0, t.pairs, 97)
    neg = t.negative_pool[np.arange(0, len(t.negative_pool), 3)][:200]
    bags = data._cand_bags(t, idx, neg, None, (0, 1))
    assert len(bags) == len(idx) + len(neg) and bags[: len(idx)].tolist() == t.positive_bags[idx].tolist()
    keys = {(cat.keys[int(c)], data.catalogues["query"].keys[int(q)]) for q, c in zip(t.query_rows, t.cand_rows)}
    days = snapshot_days(np.array([first[k] for k in keys if k in first], dtype="datetime64[D]"),
                         PAIR.engaged_queries_snapshots)
    when = set(t.as_of[idx].tolist())
    sizes_as_of = sizes_cutoff = 0
    for row, bag in zip(neg, bags[len(idx):]):
        got = _reads(cat.bags, data.as_of_field, bag, row)
        assert any(got == _encode(featurizer, top(cat.keys[int(row)], days[w].astype(object))) for w in when)
        sizes_as_of += len(got)
        sizes_cutoff += len(_reads(cat.bags, data.as_of_field, -1, row))
    assert sizes_as_of < 0.8 * sizes_cutoff
    # Mined hard negatives read their pair's day; a missing one (-1) reads the pair's positive.
    hard = np.stack([neg[: len(idx)], np.full(len(idx), -1)], axis=1)
    with_hard = data._cand_bags(t, idx, neg, hard, (0, 1))[len(idx) + len(neg):].reshape(-1, 2)
    assert with_hard[:, 0].tolist() == snaps[t.as_of[idx], neg[: len(idx)]].tolist()
    assert with_hard[:, 1].tolist() == t.positive_bags[idx].tolist()


@pytest.mark.parametrize("kind,task", [("pin", "query-pin"), ("product", "query-product")])
def test_leave_one_out_loses_the_query_only_when_it_was_that_querys_single_engagement(enriched, kind, task):
    ws, featurizer = enriched
    data, off, t = _loaded(enriched, LOO, task)
    field = data.as_of_field
    assert t.as_of is None
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
    assert leaks > 0.4 * t.pairs and 0 < losing < t.pairs  # the leak: about half the positives find their own query


def test_batches_give_every_candidate_row_its_view(enriched):
    ws, featurizer = enriched
    data = load_training_data(ws, PAIR, featurizer)
    off = load_training_data(ws, OFF, featurizer)
    assert off.as_of_field is None and all(t.positive_bags is None for t in off.tasks.values())
    samples = data.sample(0)
    s = samples["query-pin"]
    assert (s.cand_bags >= 0).any() and len(s.cand_bags) == len(s.pos_rows) + len(s.neg_rows)
    rows = np.concatenate([s.pos_rows, s.neg_rows])
    fields = len(data.fields)
    override = np.full((len(rows), fields), -1)
    override[:, data.as_of_field] = s.cand_bags
    expected = data.catalogues["pin"].bags.gather(rows, override)
    plain = off.catalogues["pin"].bags.gather(rows)
    got = data.entity_inputs([("pin", rows)], [data._override(s, len(rows))])
    assert got["ids"].tolist() == expected[0].tolist() and got["offsets"].tolist() == expected[1].tolist()
    assert got["ids"].tolist() != plain[0].tolist()
    # As of the cutoff the same sample reads the features table's bags.
    unchanged = off.entity_inputs([("pin", rows)], [off._override(off.sample(0)["query-pin"], len(rows))])
    assert unchanged["ids"].tolist() == plain[0].tolist()


@pytest.mark.parametrize("cfg", [PAIR, LOO], ids=["pair", "leave_one_out"])
def test_field_dropout_counts_positives_left_without_engaged_queries(enriched, cfg):
    """A positive that read its entity's engaged queries before any other query engaged it (pair), or
    whose only engaged query is its pair's own (leave_one_out), reads the field empty: the positives
    lack it more often, so the rule's skew (catalogue minus positives) shrinks."""
    ws, featurizer = enriched
    data = load_training_data(ws, cfg, featurizer)
    off = load_training_data(ws, OFF, featurizer)
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


def test_the_cli_option_reaches_the_run_config(enriched):
    """`omni train --engaged-queries-as-of VIEW` is recorded in the run's config (a resume or a comparison
    reads it back); the default is pair; a view no run knows is refused."""
    ws, _ = enriched
    for name, flags, expected in (("dflt", [], ("leave_one_out", 16)),
                                  ("pair", ["--engaged-queries-as-of", "pair", "--engaged-queries-snapshots", "5"],
                                   ("pair", 5))):
        result = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--name", name, "--steps", "1",
                                          "--batch-size", "32", "--no-visual", *flags])
        assert result.exit_code == 0, result.output
        config = read_run_config(ws.run_dir(name))["config"]
        assert (config["engaged_queries_as_of"], config["engaged_queries_snapshots"]) == expected
    bad = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--name", "bad", "--steps", "1",
                                   "--engaged-queries-as-of", "today"])
    assert isinstance(bad.exception, OmniError) and "engaged_queries_as_of 'today'" in str(bad.exception)


@pytest.mark.parametrize("recorded,view", [({"engaged_queries_leave_one_out": True}, "leave_one_out"),
                                           ({"engaged_queries_leave_one_out": False}, "cutoff"),
                                           ({}, "cutoff")])
def test_an_earlier_runs_config_reads_back_as_what_it_trained(recorded, view):
    """Runs before this option recorded a bool (or, before leave-one-out, nothing): a resume or an
    ablation must read back the view they trained with, not today's default."""
    data = {k: v for k, v in PAIR.to_json().items() if k != "engaged_queries_as_of"} | recorded
    assert TrainConfig.from_json(data).engaged_queries_as_of == view
