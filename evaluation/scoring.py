"""Scorers (query rows × candidate columns) and the two ranking protocols over them.

A :class:`Scorer` scores a fixed list of queries against a fixed candidate list whose
order is the catalogue's (entity ids ascending, the tie-break). The model, the BM25
baselines and the random baseline are all scorers, so every system is ranked by the
same code on the same pairs:

- :func:`rank_pairs` gives each held-out (query row, candidate column) pair its rank
  (a) among N random candidates plus itself and (b) among all candidates except the
  query's other positives;
- :func:`topk_lists` gives each query its top-k candidates (ties: lower column first).

Scores are produced one block of query rows at a time, sized so a block holds at most
``max_block_scores`` floats, which bounds memory whatever the catalogue size.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.metrics import beats_from, count_ranks
from omnisearchsage.search.index import stable_topk

_D = EvalConfig()  # block sizes default to the evaluation's


class Scorer(Protocol):
    """Scores for a fixed list of queries against a fixed, catalogue-ordered candidate list."""

    @property
    def n_candidates(self) -> int: ...

    def block(self, rows: np.ndarray) -> torch.Tensor:
        """float32 scores [len(rows), n_candidates] of the given query rows."""
        ...


class EmbeddingScorer:
    """Inner product of L2-normalised query and candidate embeddings (cosine similarity)."""

    def __init__(self, queries: np.ndarray, candidates: np.ndarray) -> None:
        self.queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        self.candidates = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32))

    @property
    def n_candidates(self) -> int:
        return self.candidates.shape[0]

    def block(self, rows: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return self.queries[torch.from_numpy(rows)] @ self.candidates.T


class RandomScorer:
    """Uniform random scores, seeded per query row so a row scores the same in every block."""

    def __init__(self, n_candidates: int, seed: int) -> None:
        self._n = n_candidates
        self.seed = seed

    @property
    def n_candidates(self) -> int:
        return self._n

    def block(self, rows: np.ndarray) -> torch.Tensor:
        # One generator per row (not per block) keeps a row's scores independent of how
        # rows are grouped into blocks; the per-row loop is over a block's few rows.
        gens = (torch.Generator().manual_seed(self.seed * 1_000_003 + int(r)) for r in rows)
        return torch.stack([torch.rand(self._n, generator=g) for g in gens]) if len(rows) else torch.empty(0, self._n)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def block_rows(n_candidates: int, chunk_size: int, max_block_scores: int) -> int:
    """Query rows per block so a block holds at most ``max_block_scores`` scores."""
    return max(1, min(chunk_size, max_block_scores // max(n_candidates, 1)))


def rank_pairs(
    scorer: Scorer,
    qrow: np.ndarray,
    col: np.ndarray,
    filter_qrow: np.ndarray,
    filter_col: np.ndarray,
    index_cols: np.ndarray | None,
    chunk_size: int = _D.chunk_size,
    max_block_scores: int = _D.max_block_scores,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the pairs ``(qrow[i], col[i])`` under both protocols.

    Returns ``(rank_random, rank_full)``, int64, 1-based, in the input order:

    - ``rank_random``: among the candidates ``index_cols`` (sorted column numbers; ``None``
      = all candidates) plus the positive itself;
    - ``rank_full``: among all candidates except the entries ``(filter_qrow, filter_col)``,
      the queries' positives; a pair's own positive is among them and is not counted.
    """
    n = scorer.n_candidates
    rank_random = np.ones(len(qrow), dtype=np.int64)
    rank_full = np.ones(len(qrow), dtype=np.int64)
    if len(qrow) == 0:
        return rank_random, rank_full
    order = np.argsort(qrow, kind="stable")
    qs, cs = qrow[order], col[order].astype(np.int64)
    forder = np.argsort(filter_qrow, kind="stable")
    fq, fc = filter_qrow[forder], filter_col[forder].astype(np.int64)
    all_cols = torch.arange(n)
    idx_t = None if index_cols is None else torch.from_numpy(np.asarray(index_cols, dtype=np.int64))
    rows_all = np.unique(qs)
    step = block_rows(n, chunk_size, max_block_scores)
    for start in range(0, len(rows_all), step):
        rows = rows_all[start : start + step]
        scores = scorer.block(rows)
        lo, hi = np.searchsorted(qs, rows[0], "left"), np.searchsorted(qs, rows[-1], "right")
        local = np.searchsorted(rows, qs[lo:hi])
        local_t, pcol = torch.from_numpy(local), torch.from_numpy(cs[lo:hi])
        pos = scores[local_t, pcol]
        r_all = count_ranks(scores, local_t, pos, pcol, all_cols, max_block_scores)
        if idx_t is None:
            r_a = r_all
        else:
            r_a = count_ranks(scores[:, idx_t], local_t, pos, pcol, idx_t, max_block_scores)
        # Protocol (b): the rank over every candidate minus the query's other positives above it.
        flo, fhi = np.searchsorted(fq, rows[0], "left"), np.searchsorted(fq, rows[-1], "right")
        keep = np.isin(fq[flo:fhi], rows)  # filter entries of queries that have no pair here
        f_local, f_col = np.searchsorted(rows, fq[flo:fhi][keep]), fc[flo:fhi][keep]
        f_scores = scores[torch.from_numpy(f_local), torch.from_numpy(f_col)].numpy()
        r_b = r_all.numpy() - beats_from(local, pos.numpy(), cs[lo:hi], f_local, f_scores, f_col)
        rank_random[order[lo:hi]] = r_a.numpy()
        rank_full[order[lo:hi]] = r_b
    return rank_random, rank_full


def topk_lists(
    scorer: Scorer, rows: np.ndarray, k: int, chunk_size: int = _D.chunk_size, max_block_scores: int = _D.max_block_scores
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` candidate columns and scores per query row, ties broken by column ascending."""
    k = min(k, scorer.n_candidates)
    cols = np.empty((len(rows), k), dtype=np.int64)
    vals = np.empty((len(rows), k), dtype=np.float32)
    step = block_rows(scorer.n_candidates, chunk_size, max_block_scores)
    for start in range(0, len(rows), step):
        values, top = stable_topk(scorer.block(rows[start : start + step]), k)
        cols[start : start + len(top)] = top.numpy()
        vals[start : start + len(top)] = values.numpy()
    return cols, vals
