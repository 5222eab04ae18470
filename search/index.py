"""Exact maximum-inner-product search over an entity embedding matrix.

Embeddings are L2-normalised, so inner product is cosine similarity. Search runs
in query chunks (``chunk_size`` rows at a time) so memory stays at
``chunk_size × n_entities`` scores however many queries there are; ``torch.topk``
does the selection and :func:`stable_topk` makes its ties deterministic (lower index
first), which evaluation relies on for reproducible rankings. Used by evaluation and by
the service.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SearchResult:
    """Top-k per query: ``scores`` float32 [n, k] descending, ``indices`` int64 [n, k] into the index."""

    scores: np.ndarray
    indices: np.ndarray


def stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` per row, sorted by score descending and, among equal scores, index ascending.

    ``torch.topk`` gives no order among ties and may cut a run of ties at the k-th place
    arbitrarily. Rows where a tie straddles the cut (more than ``k`` scores >= the k-th)
    are re-selected with a stable full sort; that is rare for embeddings and common for
    sparse scorers (many BM25 zeros), so only those rows pay for the sort. Within the
    top-k, equal scores are then reordered by index.
    """
    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1, sorted=True)
    if k == 0:
        return values, indices
    straddle = (scores >= values[:, -1:]).sum(dim=1) > k
    if straddle.any():
        rows = straddle.nonzero().squeeze(1)
        order = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :k]
        indices[rows] = order
        values[rows] = torch.gather(scores[rows], 1, order)
    # Sort each row by (score desc, index asc): first by index, then stably by score.
    by_index = torch.sort(indices, dim=1).indices
    indices = torch.gather(indices, 1, by_index)
    values = torch.gather(values, 1, by_index)
    by_score = torch.sort(values, dim=1, descending=True, stable=True).indices
    return torch.gather(values, 1, by_score), torch.gather(indices, 1, by_score)


class ExactIndex:
    """Brute-force inner-product top-k; ties keep the lower index first (stable)."""

    def __init__(self, embeddings: np.ndarray, chunk_size: int = 1024) -> None:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-d, got shape {embeddings.shape}")
        self.matrix = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-``k`` entities per query row (``k`` is capped at the index size)."""
        k = min(k, len(self))
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        indices = np.empty((q.shape[0], k), dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, q.shape[0], self.chunk_size):
                s = q[start : start + self.chunk_size] @ self.matrix.T
                values, top = stable_topk(s, k)
                scores[start : start + len(s)] = values.numpy()
                indices[start : start + len(s)] = top.numpy()
        return SearchResult(scores, indices)
