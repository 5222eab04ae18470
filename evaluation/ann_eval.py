"""Recall of approximate search (faiss, usearch HNSW) against exact search, on the model's indexes.

The paper serves from approximate indexes; what they lose is measured here on the
run's own pin and product embeddings and test queries: the share of exact search's
top-10 each library also returns, with build and search times beside exact search's.
The indexes are the service's (:mod:`~omnisearchsage.search.ann`), so the figure is
the one the service would see. Libraries that are not installed are skipped.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import Evaluation
from omnisearchsage.search.ann import IndexParams, build_index, recall_at_k, resolve_backend
from omnisearchsage.search.index import ExactIndex

log = logging.getLogger(__name__)

#: The top-k whose overlap with exact search is reported.
ANN_K = 10


def ann_recall(ev: Evaluation, cfg: EvalConfig) -> list[dict[str, Any]]:
    """One row per (library, entity type): recall@10 vs exact, build and search seconds."""
    libraries = list(dict.fromkeys(resolve_backend(lib) if lib == "auto" else lib for lib in cfg.ann))
    libraries = [lib for lib in libraries if _available(lib)]
    params = IndexParams(hnsw_m=cfg.hnsw_m, hnsw_ef_construction=cfg.hnsw_ef_construction,
                         hnsw_ef_search=cfg.hnsw_ef_search, exact_chunk_size=cfg.chunk_size)
    rows = []
    for task in ("query-pin", "query-product"):
        if task not in ev.tasks or not libraries:
            continue
        emb = ev.candidate_emb[task]
        probes = ev.query_embeddings(ev.tasks[task].queries[: cfg.ann_max_queries])
        exact = ExactIndex(emb, chunk_size=cfg.chunk_size)
        t0 = time.perf_counter()
        exact.search(probes, ANN_K)
        exact_s = time.perf_counter() - t0
        for lib in libraries:
            t0 = time.perf_counter()
            index = build_index(emb, lib, params)
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            index.search(probes, ANN_K)
            search_s = time.perf_counter() - t0
            rows.append({
                "library": lib, "entity_type": ev.tasks[task].entity_type, "candidates": len(emb),
                "queries": len(probes), f"recall_vs_exact@{ANN_K}": recall_at_k(index, exact, probes, ANN_K),
                "build_s": build_s, "search_s": search_s, "exact_search_s": exact_s,
            })
            log.info("%s on %s: recall vs exact %.3f", lib, task, rows[-1][f"recall_vs_exact@{ANN_K}"])
    return rows


def _available(library: str) -> bool:
    """Whether the service can build an index with ``library`` here (installed and known)."""
    try:
        return resolve_backend(library) == library and library != "exact"
    except OmniError:
        return False


class AnnRecall:
    """Evaluator: approximate-search recall against exact search (skipped when ``cfg.ann`` is empty)."""

    name = "ann"

    def __call__(self, ev: Evaluation) -> list[dict[str, Any]] | None:
        return ann_recall(ev, ev.cfg) if ev.cfg.ann else None
