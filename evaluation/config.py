"""Every knob of evaluation (``omni eval``, ``omni report``), in one place.

The defaults are the paper's protocol: each held-out (query, engaged entity) pair of the
test window is ranked against an index of 1.5M random entities (capped at the catalogue)
and against the full catalogue without the query's other positives; Recall@1/10/100 and
MRR; at most 80k pairs per evaluation set.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Baselines ``omni eval`` can score beside the model (see ``baselines.py``).
BASELINES = ("bm25-title", "bm25-text", "bm25-text+queries", "random")


@dataclass(frozen=True)
class EvalConfig:
    """Protocol sizes, metrics and what else to measure beside the model."""

    #: Size of the random-entity index each pair is ranked against [paper: 1.5M],
    #: capped at the catalogue of the pair's entity type.
    index_size: int = 1_500_000
    #: Cut-offs of Recall@K; MRR is always reported.
    ks: tuple[int, ...] = (1, 10, 100)
    #: Cut-offs of the Recall@K curves in the report (random-index protocol, every system).
    curve_ks: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    #: Seed of the random index, pair subsampling, random baseline and bootstrap.
    seed: int = 0
    #: Query rows scored per block in exact search.
    chunk_size: int = 256
    #: Upper bound on scores held at once (query rows × candidates): 2^26 float32 scores are
    #: 256 MiB; with the comparison masks a block stays under ~700 MiB, and blocks are large
    #: enough (32 query rows against 2M entities) for an efficient matrix product.
    max_block_scores: int = 1 << 26
    #: Held-out pairs per evaluation set (task × action), sampled with ``seed`` [paper: 80k].
    max_pairs_per_set: int = 80_000
    #: Languages to break results down by; empty = every language with enough pairs.
    languages: tuple[str, ...] = ()
    #: A language gets its own row only with at least this many pairs (noise otherwise).
    min_lang_pairs: int = 20
    #: Baselines scored on the same pairs (any of :data:`BASELINES`).
    baselines: tuple[str, ...] = BASELINES
    #: Approximate-search libraries whose recall against exact search is reported when installed
    #: (``faiss``, ``usearch``; others are skipped silently). ``auto``: the one ``omni serve --index
    #: auto`` would build, the index a user serves; each library is a full HNSW build over the
    #: catalogue, which on a wide anchored embedding is most of an eval's time.
    ann: tuple[str, ...] = ("auto",)
    #: HNSW graph degree and beam widths for the approximate indexes.
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    #: At most this many distinct test queries go through the approximate indexes.
    ann_max_queries: int = 5_000
    #: Query-bootstrap resamples for confidence intervals of the relevance metrics.
    bootstrap_samples: int = 1_000
    #: Two-sided confidence level of those intervals.
    confidence: float = 0.95
    #: Depth of the per-query ranked lists ``--topk-out`` writes (and relevance metrics use).
    topk: int = 100
