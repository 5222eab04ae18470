"""Exact maximum-inner-product search over an entity embedding matrix.

Embeddings are L2-normalised, so inner product is cosine similarity. Search runs
in query chunks (``chunk_size`` rows at a time) so memory stays at
``chunk_size × n_entities`` scores however many queries there are; ``torch.topk``
does the selection. Used by evaluation and by the service.
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
                top = torch.topk(s, k, dim=1, sorted=True)
                scores[start : start + len(s)] = top.values.numpy()
                indices[start : start + len(s)] = top.indices.numpy()
        return SearchResult(scores, indices)
