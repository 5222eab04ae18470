"""Ranking metrics: rank of a held-out positive, Recall@K, MRR, and graded relevance metrics.

Ranks are *counted*, not sorted: the rank of a positive is one plus the number of
candidates that beat it, which needs one comparison per candidate instead of a sort,
and handles the two protocols of the paper the same way:

- random index: candidates are N random entities (the positive is added if absent);
- full catalogue, filtered: candidates are every entity except the query's *other*
  positives: the rank over the whole catalogue minus the positives that beat it
  (:func:`beats_from`), so the filter costs a few lookups, not a masked copy.

A candidate ``j`` beats the positive ``p`` when ``s_j > s_p``, or ``s_j == s_p`` and
``j`` comes first in the catalogue's order (entity ids ascending). That tie-break is
the CrowdFlower benchmark's (``product_id`` ascending) and makes ties deterministic for
scorers with many equal scores (BM25 gives 0 to every entity sharing no token).

The relevance metrics (query Recall@K, graded nDCG@K, query-bootstrap intervals) follow
the definitions of ``shared/data/crowdflower/README.md``; they are hand-written because
they are a few lines of numpy each and must match that README exactly, including its
tie-break and its choice of denominators.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from omnisearchsage.evaluation.config import EvalConfig

_D = EvalConfig()  # block sizes default to the evaluation's


def count_ranks(
    scores: torch.Tensor,
    rows: torch.Tensor,
    pos_scores: torch.Tensor,
    pos_order: torch.Tensor,
    cand_order: torch.Tensor,
    max_block_scores: int = _D.max_block_scores,
) -> torch.Tensor:
    """1-based rank of each positive among the candidates of its query row.

    ============  ==========  ==================================================
    argument      shape       meaning
    ============  ==========  ==================================================
    scores        [c, n]      query rows × candidates
    rows          [m]         row of ``scores`` each positive belongs to
    pos_scores    [m]         score of each positive
    pos_order     [m]         catalogue position of each positive (tie-break)
    cand_order    [n]         catalogue position of each candidate, ascending
    ============  ==========  ==================================================

    Counting is two passes over a positive's row: ``> s`` (summed) and ``== s``, whose
    few hits (usually just the positive itself) are resolved by catalogue position. The
    positive itself is never counted, even when it is among the candidates and a
    different summation order gave it a score one ulp above ``pos_scores``. Positives
    are processed in slices so at most ``max_block_scores`` scores are copied at once.
    """
    n = scores.shape[1]
    ranks = torch.ones(len(rows), dtype=torch.int64)
    if n == 0:
        return ranks
    step = max(1, max_block_scores // n)
    one_per_row = len(rows) == scores.shape[0] and bool(torch.equal(rows, torch.arange(len(rows))))
    for start in range(0, len(rows), step):
        sl = slice(start, start + step)
        # One positive per row, in row order (the usual case): slice instead of gathering a copy.
        cand = scores[sl] if one_per_row else scores[rows[sl]]
        s = pos_scores[sl]
        order = pos_order[sl]
        beats = (cand > s[:, None]).sum(dim=1)
        i, j = (cand == s[:, None]).nonzero(as_tuple=True)
        lower = cand_order[j] < order[i]
        beats += torch.bincount(i[lower], minlength=len(cand))
        # The positive's own column, if it is a candidate, must not count as beating it.
        own = torch.searchsorted(cand_order, order).clamp(max=n - 1)
        present = cand_order[own] == order
        own_score = cand[torch.arange(len(cand)), own]
        beats -= (present & (own_score > s)).long()
        ranks[sl] += beats
    return ranks


def beats_from(
    pair_rows: np.ndarray,
    pair_scores: np.ndarray,
    pair_cols: np.ndarray,
    other_rows: np.ndarray,
    other_scores: np.ndarray,
    other_cols: np.ndarray,
) -> np.ndarray:
    """Per pair: how many of the *other* entries of its row beat it (same tie-break as ranks).

    Used to filter a query's other positives out of a rank counted over the whole
    catalogue: ``rank_filtered = rank_full - beats_from(pairs, positives)``. Entries are
    matched to pairs by row with a sort + repeat (a vectorised join); the pair's own
    column among them is skipped. Cost: the sum over rows of pairs × entries.
    """
    order = np.argsort(other_rows, kind="stable")
    rows_f, s_f, c_f = other_rows[order], other_scores[order], other_cols[order]
    start = np.searchsorted(rows_f, pair_rows, "left")
    counts = np.searchsorted(rows_f, pair_rows, "right") - start
    pair_idx = np.repeat(np.arange(len(pair_rows)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    f_idx = np.repeat(start, counts) + offsets
    sp, cp, sf, cf = pair_scores[pair_idx], pair_cols[pair_idx], s_f[f_idx], c_f[f_idx]
    beats = ((sf > sp) | ((sf == sp) & (cf < cp))) & (cf != cp)
    return np.bincount(pair_idx, weights=beats, minlength=len(pair_rows)).astype(np.int64)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K (share of positives with rank <= K) for each K, and MRR, of 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return {**{f"recall@{k}": float("nan") for k in ks}, "mrr": float("nan")}
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


def rank_metric_exprs(rank_col: str, ks: Sequence[int], prefix: str = "") -> list[pl.Expr]:
    """The same metrics as :func:`rank_metrics`, as Polars aggregations over a rank column."""
    r = pl.col(rank_col)
    return [(r <= k).mean().alias(f"{prefix}recall@{k}") for k in ks] + [(1.0 / r).mean().alias(f"{prefix}mrr")]


# ---------------------------------------------------------------- graded relevance (CrowdFlower)
def query_recall_at_k(top_is_positive: np.ndarray, n_positives: np.ndarray, k: int) -> np.ndarray:
    """Per query: |top-k ∩ positives| / min(k, |positives|); NaN for a query without positives.

    ``top_is_positive`` is bool [queries, depth >= k]: whether the i-th ranked item is a positive.
    """
    hits = top_is_positive[:, :k].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_positives > 0, hits / np.minimum(k, n_positives), np.nan)


def ndcg_at_k(top_gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> np.ndarray:
    """Per query: DCG@k of the ranking over the ideal DCG@k of the query's own labels.

    ``top_gains`` [queries, depth >= k]: gain of each ranked item (0 when unlabelled);
    ``ideal_gains`` [queries, L]: the query's labelled gains, zero-padded, any order.
    Discount 1 / log2(rank + 1). Queries with ideal DCG 0 give NaN (the README averages
    over queries with ideal DCG > 0).
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (top_gains[:, :k] * discount[: top_gains[:, :k].shape[1]]).sum(axis=1)
    ideal = -np.sort(-ideal_gains, axis=1)[:, :k]
    idcg = (ideal * discount[: ideal.shape[1]]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


def bootstrap_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of sum(num)/sum(den) when *queries* are resampled with replacement.

    A per-pair metric (pair Recall@K) passes per-query hit counts and pair counts, so a
    resampled query brings all its pairs; a per-query metric passes the values and ones.
    Resampling is one multinomial draw of query multiplicities per sample, vectorised.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(num.size, np.full(num.size, 1.0 / num.size), size=samples)
    stats = (weights @ num) / np.maximum(weights @ den, 1e-12)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap_diff(
    numerators_a: np.ndarray,
    numerators_b: np.ndarray,
    denominators: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, float]:
    """Difference a − b of sum(num)/sum(den) over the same queries, and its paired percentile interval.

    Both systems are scored on each resample of the *same* queries, so the interval reflects
    how consistently one beats the other, not the spread of either alone (which is what two
    separate intervals would show). With a shared denominator, the resampled difference is
    the resampled ratio of the per-query differences: :func:`bootstrap_ci` on ``a − b``.
    """
    diff = np.asarray(numerators_a, dtype=np.float64) - np.asarray(numerators_b, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    lo, hi = bootstrap_ci(diff, den, samples, confidence, seed)
    return float(diff.sum() / max(den.sum(), 1e-12)), lo, hi
