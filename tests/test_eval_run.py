"""``evaluate`` on the tiny world with fake models: both protocols rank exactly as defined,
every task / language / baseline is reported, and the report renders offline."""
from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from omnisearchsage.atomic import write_json
from omnisearchsage.contract import ENGAGEMENTS, PINS, PRODUCTS, TRUTH_PINS, TRUTH_QUERIES, Workspace
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import EmbeddingModel, evaluate, load_heldout
from omnisearchsage.evaluation.report import write_report
from omnisearchsage.features.text import normalize
from omnisearchsage.split import TimeSplit

DIM = 264  # > the tiny world's 256-d legacy embeddings, so the compat prefix exists


def unit(text: str, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def encode(texts: Sequence[str]) -> np.ndarray:
    return np.stack([unit(t) for t in texts]) if texts else np.empty((0, DIM), np.float32)


def fake_model(ws: Workspace, constant: bool = False, oracle: bool = False) -> EmbeddingModel:
    """Random (or all-equal) embeddings for every pin and product, 50 training queries as query index.
    ``oracle``: a query of the test window embeds as one of its engaged pins, so the model ranks that pin
    first and beats the random and constant ones whatever the world (those two can tie on a tiny one)."""
    first: dict[str, str] = {}
    if oracle:
        pins = load_heldout(ws, TimeSplit.for_workspace(ws)).filter(pl.col("entity_type") == "pin")
        first = dict(pins.group_by("query").agg(pl.col("entity_id").min()).iter_rows())
    ents = {}
    for schema, col, kind in ((PINS, "pin_id", "pin"), (PRODUCTS, "product_id", "product")):
        ids = np.asarray(sorted(pl.read_parquet(ws.path(schema))[col].to_list()), dtype=object)
        emb = np.tile(unit("same"), (len(ids), 1)) if constant else encode(list(ids))
        ents[kind] = (ids, emb)
    queries = sorted(pl.read_parquet(ws.path(ENGAGEMENTS))["query"].unique().to_list())[:50]
    ents["query"] = (np.asarray(queries, dtype=object), encode(queries))
    enc = ((lambda texts: np.tile(unit("same"), (len(texts), 1))) if constant
           else (lambda texts: encode([first.get(t, t) for t in texts])))
    return EmbeddingModel("fake", enc, ents, legacy_dims={"pin": 256, "product": 256})


@pytest.fixture(scope="module")
def random_eval(tiny_ws):
    cfg = EvalConfig(index_size=60, ann=(), baselines=("bm25-text", "random"), min_lang_pairs=5)
    return evaluate(tiny_ws, fake_model(tiny_ws), cfg)


def test_every_task_is_evaluated_with_baselines_and_languages(random_eval):
    results, ev = random_eval
    assert set(results["sets"]) == {"query-pin", "query-product", "query-query", "compat-pin", "compat-product"}
    systems = {(r["system"], r["task"]) for r in results["rows"]}
    assert ("bm25-text", "query-pin") in systems and ("random", "query-query") in systems
    assert not any(s != "model" for s, t in systems if t.startswith("compat-"))  # compat is the model's
    langs = {r["lang"] for r in results["rows"] if r["task"] == "query-pin"}
    assert "all" in langs and "en" in langs
    actions = {r["action"] for r in results["rows"] if r["task"] == "query-pin"}
    assert {"save", "long_click", "click", "all"} <= actions
    # Random index of 60 entities: no positive can rank below 61.
    assert results["sets"]["query-pin"]["index_size"] == 60
    assert ev.ranked[("model", "query-pin")]["rank_random"].max() <= 61


def test_heldout_pairs_are_exactly_the_test_window(tiny_ws):
    split = TimeSplit.for_workspace(tiny_ws)
    heldout = load_heldout(tiny_ws, split)
    raw = pl.read_parquet(tiny_ws.path(ENGAGEMENTS))
    test = raw.filter((pl.col("ts") >= split.test_start) & (pl.col("ts") < split.test_end))
    assert len(heldout) == len(test.unique(["query", "entity_type", "entity_id", "action"]))
    train_only = set(raw.filter(pl.col("ts") < split.train_end)["query"]) - set(test["query"])
    assert not train_only & set(heldout["query"])


def test_all_ties_rank_by_id_under_both_protocols(tiny_ws):
    cfg = EvalConfig(ann=(), baselines=())
    _, ev = evaluate(tiny_ws, fake_model(tiny_ws, constant=True), cfg)
    ranked = ev.ranked[("model", "query-pin")]
    ids = ev.tasks["query-pin"].ids.astype(str)
    # Every score ties: a pin is beaten by exactly the pins with a smaller id (col = id order) ...
    assert (ranked["rank_random"] == ranked["col"] + 1).all()
    # ... except, in the filtered protocol, the query's other test positives.
    positives = pl.DataFrame({"qrow": ev.tasks["query-pin"].filter_qrow, "other": ev.tasks["query-pin"].filter_col})
    expected = (ranked.select("qrow", "col").unique().join(positives, on="qrow")
                .group_by("qrow", "col").agg((pl.col("other") < pl.col("col")).sum().alias("skipped")))
    check = ranked.join(expected, on=["qrow", "col"])
    assert (check["rank_full"] == check["col"] + 1 - check["skipped"]).all()
    assert len(ids) == len(pl.read_parquet(tiny_ws.path(PINS)))


def test_report_is_self_contained_html_and_markdown(random_eval, tiny_ws_copy):
    results, _ = random_eval
    ws = tiny_ws_copy
    write_json({**results, "run": "r"}, ws.eval_dir("r") / "results.json")
    (ws.run_dir("r") / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 5.0 / s, "query-pin/loss": 4.0 / s}) for s in (1, 2, 3)) + "\n")
    page = write_report(ws, "r").read_text(encoding="utf-8")
    assert page.count("<svg") >= 3  # loss, Recall@K curves, per-language bars
    assert "Training loss per task" in page and "query-pin/loss" in page
    # Nothing fetched from elsewhere: no src/href, no URL but the SVG namespace.
    assert not re.search(r"\b(src|href)=", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) <= {"http://www.w3.org/2000/svg"}
    md = (ws.eval_dir("r") / "report.md").read_text(encoding="utf-8")
    assert "| query-pin / save |" in md and "Training loss" in md


def test_relevance_set_is_the_on_topic_part_of_the_test_pins(random_eval, tiny_ws):
    results, ev = random_eval
    rel = ev.heldout.filter(pl.col("action") == "relevance")
    engaged = ev.heldout.filter((pl.col("entity_type") == "pin") & (pl.col("action") != "relevance"))
    assert 0 < len(rel) < engaged.unique(["query", "entity_id"]).height  # noise engagements are left out
    truth_q = pl.read_parquet(tiny_ws.path(TRUTH_QUERIES))
    truth_q = truth_q.with_columns(query=pl.Series([normalize(q) for q in truth_q["query"]])).unique("query")
    truth_p = pl.read_parquet(tiny_ws.path(TRUTH_PINS))
    checked = rel.join(truth_q, on="query").join(truth_p, left_on="entity_id", right_on="pin_id", suffix="_pin")
    assert len(checked) == len(rel) and (checked["topic"] == checked["topic_pin"]).all()
    assert any(h["paper_set"] == "pin relevance" for h in results["headline"])


def test_compat_sets_score_the_models_compat_vectors(tiny_ws):
    # A model with a compat head: the legacy indexes are ranked with its compat vectors (their
    # 256-d prefix), not with the main embedding's prefix.
    model = fake_model(tiny_ws)
    model.encode_compat = lambda texts: np.stack([unit("compat " + t, 300) for t in texts])
    _, ev = evaluate(tiny_ws, model, EvalConfig(index_size=60, ann=(), baselines=(), min_lang_pairs=5))
    data = ev.tasks["compat-pin"]
    scorer = ev.model_scorer(data, ev.candidate_emb["compat-pin"])
    expected = np.stack([unit("compat " + t, 300)[:256] for t in data.queries])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(scorer.queries.numpy(), expected, atol=1e-6)
    main = ev.model_scorer(ev.tasks["query-pin"], ev.candidate_emb["query-pin"])
    assert main.queries.shape[1] == DIM  # the main sets keep the main embedding


def test_ann_check_builds_the_served_index_by_default_and_each_named_library_on_request(tiny_ws):
    """``auto`` reports the one index ``omni serve --index auto`` builds (each HNSW build is a pass over the
    catalogue); naming libraries reports each installed one once."""
    from omnisearchsage.evaluation.ann_eval import AnnRecall
    from omnisearchsage.search.ann import resolve_backend

    served = resolve_backend("auto")
    results, _ = evaluate(tiny_ws, fake_model(tiny_ws), EvalConfig(baselines=()), [AnnRecall()])
    rows = results["ann"]
    assert {r["library"] for r in rows} == ({served} if served != "exact" else set())
    assert all(0.0 <= r["recall_vs_exact@10"] <= 1.0 for r in rows)
    both, _ = evaluate(tiny_ws, fake_model(tiny_ws), EvalConfig(baselines=(), ann=("faiss", "usearch", "auto")),
                       [AnnRecall()])
    libs = [r["library"] for r in both["ann"] if r["entity_type"] == "pin"]
    assert sorted(libs) == ["faiss", "usearch"]  # the test extra installs both; auto is one of them
