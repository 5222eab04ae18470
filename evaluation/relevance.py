"""Graded-relevance metrics on a workspace imported with ``omni import relevance``.

Definitions are those of ``shared/data/crowdflower/README.md``, on the *test* queries
only, each ranking the full product catalogue (ties: ``product_id`` ascending):

- pair Recall@K, filtered (K = 10, 100): each (test query, positive product) pair is
  ranked among all products except the query's other positives; hit if rank <= K;
  averaged over pairs;
- query Recall@10: |top-10 ∩ positives| / min(10, |positives|), averaged over queries
  with at least one positive;
- nDCG@10: gain = label − the lowest label of the set (unlabelled: 0), discount
  1 / log2(rank + 1), ideal DCG from the query's own labels; averaged over queries with
  ideal DCG > 0;
- confidence intervals: percentile intervals over query-bootstrap resamples.

Systems: the model (query embedding vs product embeddings), its compatibility prefix
vs legacy product embeddings, the BM25 baselines, random, and, when the importer
embedded products with a sentence encoder, that encoder zero-shot on the queries
(the README's "MiniLM zero-shot" reference when the bundled all-MiniLM-L6-v2 was used).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import RELEVANCE_LABELS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.baselines import BaselineScorers
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import MODEL, Evaluation, legacy_candidates
from omnisearchsage.evaluation.metrics import bootstrap_ci, ndcg_at_k, query_recall_at_k
from omnisearchsage.evaluation.paper import RELEVANCE_REFERENCES
from omnisearchsage.evaluation.scoring import EmbeddingScorer, Scorer, rank_pairs, topk_lists
from omnisearchsage.features.text import normalize

log = logging.getLogger(__name__)

#: Cut-offs of the README: pair Recall@10 and @100, query Recall@10, nDCG@10.
PAIR_KS = (10, 100)
LIST_K = 10
COMPAT = "model-compat"
ZERO_SHOT = "legacy-zero-shot"


def relevance_meta(ws: Workspace) -> dict[str, Any]:
    """What the importer recorded (dataset name, positive threshold, label range, embedder)."""
    return json.loads(ws.relevance_meta.read_text(encoding="utf-8")) if ws.relevance_meta.exists() else {}


def test_labels(ws: Workspace, product_ids: np.ndarray) -> tuple[pl.DataFrame, list[str], list[str]]:
    """Test-split labels with ``qrow``, ``col`` and ``gain``; the normalised and raw test queries.

    One row per *raw* test query: those with a positive count in the pair and query recalls,
    every one with a graded label above the lowest in nDCG (the README averages it over
    queries with ideal DCG > 0, positive or not). Two raw queries that normalise alike
    ("Red Shoes", "red shoes") stay two test queries with their own labels, as the data
    set's evaluator matches the query string exactly; they share the normalised text the
    systems read, so they get the same ranking.
    """
    labels = pl.read_parquet(ws.path(RELEVANCE_LABELS))
    label_min = float(labels["label"].min())
    test = labels.filter(pl.col("split") == "test")
    raw = test["query"].unique().sort()
    qmap = pl.DataFrame({"query": raw, "qrow": np.arange(len(raw), dtype=np.int64)})
    cand = pl.DataFrame({"product_id": product_ids.astype(str), "col": np.arange(len(product_ids), dtype=np.int64)})
    test = test.join(qmap, on="query", how="inner")
    known = test.join(cand, on="product_id", how="inner")
    if len(known) < len(test):
        log.warning("%d labelled test pairs name products the model has no embedding for; they count as misses",
                    len(test) - len(known))
    known = known.with_columns(gain=pl.col("label") - label_min)
    raw_queries = raw.to_list()
    return (known.select("qrow", "col", "label", "gain", "positive"), [normalize(q) for q in raw_queries],
            raw_queries)


def list_metrics(
    labels: pl.DataFrame, n_queries: int, top_cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: positives count, query Recall@10 and nDCG@10 of the ranked lists ``top_cols``."""
    k = top_cols.shape[1]
    long = pl.DataFrame({
        "qrow": np.repeat(np.arange(n_queries, dtype=np.int64), k),
        "pos": np.tile(np.arange(k), n_queries),
        "col": top_cols.ravel(),
    })
    hit = long.join(labels, on=["qrow", "col"], how="left").sort("qrow", "pos")
    top_gain = hit["gain"].fill_null(0.0).to_numpy().reshape(n_queries, k)
    top_pos = hit["positive"].fill_null(False).to_numpy().reshape(n_queries, k)
    n_pos = np.bincount(labels.filter("positive")["qrow"].to_numpy(), minlength=n_queries)
    ideal = np.zeros((n_queries, LIST_K))
    ranked = labels.sort(["qrow", "gain"], descending=[False, True]).with_columns(
        pos=pl.int_range(pl.len()).over("qrow")).filter(pl.col("pos") < LIST_K)
    ideal[ranked["qrow"].to_numpy(), ranked["pos"].to_numpy()] = ranked["gain"].to_numpy()
    return n_pos, query_recall_at_k(top_pos, n_pos, LIST_K), ndcg_at_k(top_gain, ideal, LIST_K)


def pair_hits_per_query(scorer: Scorer, labels: pl.DataFrame, n_queries: int, cfg: EvalConfig
                        ) -> dict[int, np.ndarray]:
    """Per K of :data:`PAIR_KS`: each query's positive pairs ranked <= K (filtered), [n_queries].

    Summed over queries and divided by the positive pairs, this is pair Recall@K; kept per
    query so two systems can be compared on the same query resamples (a paired bootstrap).
    """
    pos = labels.filter("positive")
    qrow, col = pos["qrow"].to_numpy(), pos["col"].to_numpy()
    _, rank = rank_pairs(scorer, qrow, col, qrow, col, None, cfg.chunk_size, cfg.max_block_scores)
    return {k: np.bincount(qrow, weights=(rank <= k).astype(float), minlength=n_queries) for k in PAIR_KS}


def score_system(scorer: Scorer, labels: pl.DataFrame, n_queries: int, cfg: EvalConfig) -> dict[str, Any]:
    """The README's metrics (with bootstrap intervals) of one system."""
    pair_hits = pair_hits_per_query(scorer, labels, n_queries, cfg)
    top_cols, _ = topk_lists(scorer, np.arange(n_queries), max(LIST_K, cfg.topk), cfg.chunk_size,
                             cfg.max_block_scores)
    n_pos, q_recall, ndcg = list_metrics(labels, n_queries, top_cols)
    out: dict[str, Any] = {}
    ones = np.ones(n_queries)
    valid = n_pos > 0  # the pair and query recalls resample the queries with a positive
    for k, hits in pair_hits.items():
        out[f"pair_recall@{k}"] = float(hits.sum() / max(n_pos.sum(), 1))
        out[f"pair_recall@{k}_ci"] = bootstrap_ci(hits[valid], n_pos[valid], cfg.bootstrap_samples,
                                                  cfg.confidence, cfg.seed)
    out[f"query_recall@{LIST_K}"] = float(q_recall[valid].mean())
    out[f"query_recall@{LIST_K}_ci"] = bootstrap_ci(q_recall[valid], ones[valid], cfg.bootstrap_samples,
                                                   cfg.confidence, cfg.seed)
    has_ideal = ~np.isnan(ndcg)
    out[f"ndcg@{LIST_K}"] = float(ndcg[has_ideal].mean())
    out[f"ndcg@{LIST_K}_ci"] = bootstrap_ci(ndcg[has_ideal], ones[has_ideal], cfg.bootstrap_samples,
                                           cfg.confidence, cfg.seed)
    return out


def _systems(ev: Evaluation, queries: list[str], ids: np.ndarray, emb: np.ndarray) -> dict[str, Scorer]:
    """Every system that ranks the product catalogue ``ids`` for ``queries``."""
    q = ev.query_embeddings(queries)
    systems: dict[str, Scorer] = {MODEL: EmbeddingScorer(q, emb)}
    legacy = legacy_candidates(ev.ws, "product")
    legacy_ok = legacy is not None and len(legacy[0]) == len(ids) and bool(np.all(legacy[0] == ids))
    compat_dim = ev.model.compat_dim("product")
    if legacy_ok and compat_dim:
        systems[COMPAT] = EmbeddingScorer(ev.compat_embeddings(queries, "product"), legacy[1])
    model_path = relevance_meta(ev.ws).get("legacy_model_path")
    if legacy_ok and model_path and Path(model_path).exists():
        from omnisearchsage.text_encoders import encode_texts

        systems[ZERO_SHOT] = EmbeddingScorer(encode_texts(Path(model_path), queries), legacy[1])
    baselines = BaselineScorers(ev.ws, "product", queries, ids, ev.cfg.seed)
    for name in ev.cfg.baselines:
        scorer = baselines.get(name)
        if scorer is not None:
            systems[name] = scorer
    return systems


def evaluate_relevance(ev: Evaluation) -> dict[str, Any]:
    """The README's metrics for every system, beside the data set's reference figures."""
    if "product" not in ev.model.entities:
        raise OmniError(f"{ev.ws.path(RELEVANCE_LABELS)}: a relevance set needs product embeddings, "
                        "and the export has none")
    ids, emb = ev.model.entities["product"]
    labels, queries, _ = test_labels(ev.ws, ids)
    meta = relevance_meta(ev.ws)
    systems, scored = {}, {}  # one scoring per distinct scorer (BM25 variants over the same text share one)
    for name, scorer in _systems(ev, queries, ids, emb).items():
        if id(scorer) not in scored:
            scored[id(scorer)] = score_system(scorer, labels, len(queries), ev.cfg)
        systems[name] = scored[id(scorer)]
    return {
        "dataset": meta.get("dataset"),
        "test_queries": len(queries),
        "test_queries_with_positive": int(labels.filter("positive")["qrow"].n_unique()),
        "positive_pairs": int(labels["positive"].sum()),
        "candidates": len(ids),
        "systems": systems,
        "references": RELEVANCE_REFERENCES.get(str(meta.get("dataset", "")).lower(), {}),
    }


def write_topk(ev: Evaluation, path: Path) -> Path:
    """Top-``cfg.topk`` products of the model per test query as CSV: query, product_id, score.

    The test queries are every test query of the relevance set on an imported workspace,
    else the test-window queries of the query→product pairs.
    """
    if "product" not in ev.model.entities:
        raise OmniError("--topk-out writes products, and the export has no product embeddings")
    ids, emb = ev.model.entities["product"]
    if ev.ws.has(RELEVANCE_LABELS):
        _, queries, raw = test_labels(ev.ws, ids)
    elif "query-product" in ev.tasks:
        queries = raw = ev.tasks["query-product"].queries
    else:
        raise OmniError("--topk-out: no test queries with product engagements in this workspace")
    cols, scores = topk_lists(EmbeddingScorer(ev.query_embeddings(queries), emb), np.arange(len(queries)),
                              ev.cfg.topk, ev.cfg.chunk_size, ev.cfg.max_block_scores)
    k = cols.shape[1]
    frame = pl.DataFrame({
        "query": np.repeat(np.asarray(raw, dtype=object), k).astype(str),
        "product_id": ids[cols.ravel()].astype(str),
        "score": scores.ravel(),
    })
    with atomic_path(path) as tmp:
        frame.write_csv(tmp, quote_style="necessary")
    return path


class RelevanceMetrics:
    """Evaluator: the relevance set's metrics, on workspaces made by ``omni import relevance``."""

    name = "relevance"

    def __call__(self, ev: Evaluation) -> dict[str, Any] | None:
        return evaluate_relevance(ev) if ev.ws.has(RELEVANCE_LABELS) else None


class TopKWriter:
    """Evaluator: the model's top products per test query, written to ``path`` as CSV."""

    name = "topk_out"

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, ev: Evaluation) -> str:
        return str(write_topk(ev, self.path))
