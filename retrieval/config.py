"""Every knob of evaluation (``omni eval``, ``omni report``) and of the ablations, in one place.

The defaults are the paper's protocol: each held-out (query, engaged entity) pair of the
test window is ranked against an index of 1.5M random entities (capped at the catalogue)
and against the full catalogue without the query's other positives; Recall@1/10/100 and
MRR; at most 80k pairs per evaluation set.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: Baselines ``omni eval`` can score beside the model (see ``retrieval/baselines.py``).
BASELINES = ("bm25-title", "bm25-text", "bm25-text+queries", "random")


@dataclass(frozen=True)
class AblationConfig:
    """Training budget of the variant models ``omni eval --ablations`` trains.

    Every variant is trained with the same budget as the unified reference it is compared
    with, so the tables compare features and tasks, not step counts. ``None`` keeps the
    run's own value, and with both ``None`` the run itself is the unified reference (on
    the small world a variant then trains in about as long as the run did: ~2.5 min on
    2 idle cores); smaller budgets are quicker but under-trained models blur the effects.
    """

    #: Optimiser steps per variant model; ``None``: the run's own.
    steps: int | None = None
    #: Pairs per step per variant model; ``None``: the run's own.
    batch_size: int | None = None
    #: Paper tables to reproduce, any of 3, 4, 5, 6.
    tables: tuple[int, ...] = (3, 4, 5, 6)
    #: Retrain a variant even if ``runs/<run>--<variant>/export`` already exists.
    retrain: bool = False


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
    #: Approximate-search libraries whose recall against exact search is reported when
    #: installed (``faiss``, ``usearch``); others are skipped silently.
    ann: tuple[str, ...] = ("faiss", "usearch")
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
    #: Train variant models and write the paper's Tables 3-6.
    ablations: bool = False
    ablation: AblationConfig = field(default_factory=AblationConfig)
