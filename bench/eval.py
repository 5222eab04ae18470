"""Evaluation benchmark: Recall@10 of many queries against a large index on CPU, time and memory.

    python bench/eval.py                                  # 100k queries x 2M entities x 256-d
    python bench/eval.py --queries 2000 --entities 2000000 # a shorter run on a busy machine

Data: random L2-normalised entity embeddings; each query is its positive entity's
embedding plus Gaussian noise (``--noise``), renormalised, so Recall@10 is neither 0
nor 1. Every method computes the same Recall@10 of the same (query, positive) pairs
(full index, unfiltered):

* ``omni rank_pairs``: the evaluation's path (:func:`rank_pairs`): one matrix product per
  block of queries, the positive's rank *counted* (one comparison per candidate), both
  protocols (random index = the full index here, and filtered);
* ``omni ExactIndex``: chunked matrix product + ``torch.topk`` (+ tie fix), hit if the
  positive is in the top 10;
* baseline ``numpy argsort``: full score matrix + ``np.argsort`` per query row, on a slice of
  ``--naive-queries`` queries (a full run would take hours), extrapolated per query;
* baseline ``faiss IndexFlatIP`` (exact, BLAS) when faiss is installed.

Each method's peak RSS above the data (sampled every 5 ms) is reported beside its time.
Requires the ``bench`` extra (psutil).
"""
from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import torch

from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.scoring import EmbeddingScorer, rank_pairs
from omnisearchsage.search.index import ExactIndex

MB = 1024**2
K = 10


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory of this process above its level at entry, in MiB, while the block runs.

    A thread samples RSS every 5 ms; the result is filled into the yielded dict on exit.
    """
    proc, stop, out = psutil.Process(), threading.Event(), {"extra_mb": 0.0}
    start = proc.memory_info().rss
    peak = [start]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["extra_mb"] = (peak[0] - start) / MB


def make_data(n_queries: int, n_entities: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    entities = rng.standard_normal((n_entities, dim), dtype=np.float32)
    entities /= np.linalg.norm(entities, axis=1, keepdims=True)
    positives = rng.integers(0, n_entities, n_queries)
    queries = entities[positives] + noise * rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return entities, queries, positives


def measure(name: str, fn: Callable[[], float], n_queries: int) -> dict[str, Any]:
    with peak_rss() as mem:
        t0 = time.perf_counter()
        recall = fn()
        seconds = time.perf_counter() - t0
    row = {"method": name, "queries": n_queries, "recall@10": recall, "seconds": seconds,
           "queries_per_s": n_queries / seconds, "peak_extra_mb": mem["extra_mb"]}
    print(f"{name:<28} {n_queries:>8} {recall:>9.4f} {seconds:>9.1f} {row['queries_per_s']:>10.1f} "
          f"{mem['extra_mb']:>10.0f}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--entities", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--noise", type=float, default=3.0, help="query noise scale (higher: lower recall)")
    ap.add_argument("--naive-queries", type=int, default=64, help="queries of the numpy argsort baseline")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--max-block-scores", type=int, default=EvalConfig.max_block_scores)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    entities, queries, positives = make_data(args.queries, args.entities, args.dim, args.noise, args.seed)
    print(f"data: {args.queries} queries x {args.entities} entities x {args.dim}-d "
          f"({entities.nbytes / MB:.0f} MiB index) in {time.perf_counter() - t0:.1f}s; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<28} {'queries':>8} {'recall@10':>9} {'seconds':>9} {'queries/s':>10} {'peak+MiB':>10}")
    qrow = np.arange(args.queries)

    def omni_rank() -> float:
        r_a, _ = rank_pairs(EmbeddingScorer(queries, entities), qrow, positives, qrow, positives, None,
                            args.chunk_size, args.max_block_scores)
        return float(np.mean(r_a <= K))

    def omni_topk() -> float:
        top = ExactIndex(entities, chunk_size=args.chunk_size).search(queries, K).indices
        return float(np.mean((top == positives[:, None]).any(axis=1)))

    n_naive = min(args.naive_queries, args.queries)

    def numpy_argsort() -> float:
        scores = queries[:n_naive] @ entities.T
        top = np.argsort(-scores, axis=1)[:, :K]
        return float(np.mean((top == positives[:n_naive, None]).any(axis=1)))

    rows = [measure("omni rank_pairs (eval path)", omni_rank, args.queries),
            measure("omni ExactIndex top-10", omni_topk, args.queries),
            measure("baseline numpy argsort", numpy_argsort, n_naive)]
    try:
        import faiss
    except ImportError:
        print("faiss not installed: no faiss baseline")
    else:
        def faiss_flat() -> float:
            index = faiss.IndexFlatIP(args.dim)
            index.add(entities)
            _, top = index.search(queries, K)
            return float(np.mean((top == positives[:, None]).any(axis=1)))

        rows.append(measure("baseline faiss IndexFlatIP", faiss_flat, args.queries))
    ours = rows[0]["queries_per_s"]
    for r in rows[2:]:
        print(f"omni rank_pairs vs {r['method']}: {ours / r['queries_per_s']:.1f}x queries/s")
    full = args.queries / ours
    print(f"omni rank_pairs at this rate: {full:.0f}s for {args.queries} queries; "
          f"{100_000 / ours / 60:.1f} min for 100k queries")


if __name__ == "__main__":
    main()
