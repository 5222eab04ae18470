"""Ranking metrics against hand-computed examples: ties, filtered positives, random index,
the CrowdFlower definitions (query Recall@K, graded nDCG, bootstrap), stable top-k."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnisearchsage.evaluation.metrics import (
    bootstrap_ci,
    count_ranks,
    ndcg_at_k,
    paired_bootstrap_diff,
    query_recall_at_k,
    rank_metrics,
)
from omnisearchsage.evaluation.scoring import EmbeddingScorer, RandomScorer, rank_pairs, topk_lists
from omnisearchsage.search.index import ExactIndex, stable_topk


class MatrixScorer:
    """A scorer over a fixed score matrix (rows = queries)."""

    def __init__(self, scores: list[list[float]]) -> None:
        self.scores = torch.tensor(scores, dtype=torch.float32)

    @property
    def n_candidates(self) -> int:
        return self.scores.shape[1]

    def block(self, rows: np.ndarray) -> torch.Tensor:
        return self.scores[torch.from_numpy(rows)]


ROW = [0.9, 0.5, 0.7, 0.5, 0.1]


def test_tie_goes_to_the_lower_catalogue_position():
    s = MatrixScorer([ROW])
    q = np.array([0, 0]), np.array([3, 1])
    r_a, _ = rank_pairs(s, *q, np.array([0]), np.array([1]), None)
    # col 3 (0.5): beaten by 0.9, 0.7 and by col 1's equal 0.5 (lower id) -> 4; col 1: only 0.9, 0.7 -> 3.
    assert r_a.tolist() == [4, 3]


def test_full_protocol_excludes_the_query_s_other_positives_only():
    s = MatrixScorer([ROW, ROW])
    # Query 0 has positives {0, 1, 3}; query 1 has only {1}: its ranking keeps cols 0 and 3.
    qrow, col = np.array([0, 1]), np.array([1, 1])
    fq, fc = np.array([0, 0, 0, 1]), np.array([0, 1, 3, 1])
    r_a, r_b = rank_pairs(s, qrow, col, fq, fc, None)
    assert r_b.tolist() == [2, 3]  # query 0: only 0.7 beats; query 1: 0.9 and 0.7
    assert r_a.tolist() == [3, 3]  # unfiltered: the random-index protocol never filters


def test_random_index_ranks_among_the_index_plus_the_positive():
    s = MatrixScorer([ROW, ROW])
    index = np.array([2, 4])  # scores 0.7, 0.1
    r_a, _ = rank_pairs(s, np.array([0, 1, 0]), np.array([1, 0, 2]), np.array([0]), np.array([1]), index)
    # col 1 (0.5) is beaten by 0.7 only; col 0 (0.9) by nobody; col 2 is in the index: never beats itself.
    assert r_a.tolist() == [2, 1, 1]


def test_a_positive_never_beats_itself_through_rounding():
    scores = torch.tensor([[0.3, 0.50000006, 0.2]])
    # Its own column holds a score one ulp above the positive's (another summation order).
    r = count_ranks(scores, torch.tensor([0]), torch.tensor([0.5]), torch.tensor([1]), torch.arange(3))
    assert r.tolist() == [1]


def test_chunked_ranks_equal_a_naive_loop():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(17, 8)).astype(np.float32)
    e = rng.normal(size=(40, 8)).astype(np.float32)
    e[5] = e[7]  # an exact tie between two candidates
    qrow = rng.integers(0, 17, 60)
    col = rng.integers(0, 40, 60)
    pairs = np.unique(np.stack([qrow, col], 1), axis=0)
    qrow, col = pairs[:, 0], pairs[:, 1]
    index = np.sort(rng.choice(40, 25, replace=False))
    r_a, r_b = rank_pairs(EmbeddingScorer(q, e), qrow, col, qrow, col, index, chunk_size=3, max_block_scores=50)
    s = torch.from_numpy(q) @ torch.from_numpy(e).T

    def beats(r: int, c: int, j: int) -> bool:
        p = s[r, c].item()
        return s[r, j].item() > p or (s[r, j].item() == p and j < c)

    for i, (r, c) in enumerate(zip(qrow, col)):
        others = set(col[qrow == r].tolist())
        assert r_a[i] == 1 + sum(beats(r, c, j) for j in index if j != c)
        assert r_b[i] == 1 + sum(beats(r, c, j) for j in range(40) if j not in others)


def test_rank_metrics_by_hand():
    m = rank_metrics(np.array([1, 3, 12, 150]), (1, 10, 100))
    assert m["recall@1"] == 0.25 and m["recall@10"] == 0.5 and m["recall@100"] == 0.75
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 150) / 4)


def test_stable_topk_breaks_ties_by_index_and_never_cuts_a_tie_arbitrarily():
    s = torch.tensor([[1.0, 2.0, 2.0, 0.0, 2.0, 1.0], [0.0] * 6, [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    values, idx = stable_topk(s, 4)
    assert idx.tolist() == [[1, 2, 4, 0], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert values[0].tolist() == [2.0, 2.0, 2.0, 1.0]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert ExactIndex(emb).search(np.array([[1.0, 0.0]], dtype=np.float32), 2).indices.tolist() == [[0, 2]]


def test_topk_lists_of_a_constant_scorer_are_the_first_ids():
    cols, _ = topk_lists(MatrixScorer([[0.0] * 7, [1.0] * 7]), np.array([0, 1]), 3)
    assert cols.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_query_recall_divides_by_min_of_k_and_positives():
    top = np.array([[True, False, True], [True, False, False]])
    got = query_recall_at_k(top, np.array([5, 1]), 3)
    assert got.tolist() == [2 / 3, 1.0]


def test_ndcg_with_graded_gains_and_unlabelled_zero():
    # Ranked gains 3, 0 (unlabelled), 1; the query's own labels have gains 3, 1, 0.
    got = ndcg_at_k(np.array([[3.0, 0.0, 1.0]]), np.array([[0.0, 1.0, 3.0]]), 3)
    dcg = 3 + 0 / math.log2(3) + 1 / math.log2(4)
    idcg = 3 + 1 / math.log2(3)
    assert got[0] == pytest.approx(dcg / idcg)
    assert np.isnan(ndcg_at_k(np.array([[1.0, 0.0, 0.0]]), np.zeros((1, 3)), 3))[0]


def test_bootstrap_resamples_queries_not_pairs():
    # Every query has the same hit rate: any resample gives it, so the interval collapses.
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), 200, 0.95, 0)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    # Different rates: the interval is inside [min, max] of the per-query rates and not degenerate.
    lo, hi = bootstrap_ci(np.array([0.0, 10.0]), np.array([10.0, 10.0]), 500, 0.95, 0)
    assert 0.0 <= lo < 0.5 < hi <= 1.0


def test_random_scorer_is_the_same_in_any_block_grouping():
    s = RandomScorer(9, seed=4)
    together = s.block(np.array([2, 5]))
    assert torch.equal(together[1], s.block(np.array([5]))[0])


def test_paired_bootstrap_separates_a_consistent_small_lead_that_separate_intervals_cannot():
    # 200 queries of 1-3 positive pairs; system a finds one more pair than b on every 10th query
    # and otherwise the same pairs, so a - b > 0 on every resample although the two systems'
    # own intervals overlap widely (the queries vary far more than the systems differ).
    rng = np.random.default_rng(1)
    n_pos = rng.integers(1, 4, size=200).astype(float)
    hits_b = np.floor(n_pos * rng.random(200))
    hits_a = hits_b + ((np.arange(200) % 10 == 0) & (hits_b < n_pos))
    diff, lo, hi = paired_bootstrap_diff(hits_a, hits_b, n_pos, 500, 0.95, 0)
    assert diff == pytest.approx((hits_a.sum() - hits_b.sum()) / n_pos.sum())
    assert 0 < lo <= diff <= hi
    a_lo, _ = bootstrap_ci(hits_a, n_pos, 500, 0.95, 0)
    _, b_hi = bootstrap_ci(hits_b, n_pos, 500, 0.95, 0)
    assert a_lo < b_hi  # separately, the intervals overlap
    # A system against itself differs by exactly 0 on every resample.
    assert paired_bootstrap_diff(hits_a, hits_a, n_pos, 100, 0.95, 0) == (0.0, 0.0, 0.0)
