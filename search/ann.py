"""Approximate nearest-neighbour backends for the service's entity index.

Exact search (:class:`~omnisearchsage.search.index.ExactIndex`) is the default
and the reference. When a catalogue is large enough that a full matrix product
per query is too slow, an HNSW graph from faiss or usearch answers instead; both
are optional imports. An approximate index trades recall for speed, so the
service measures that trade at start-up with :func:`recall_at_k` against exact
search and publishes it in ``/metrics``.

Every backend returns :class:`SearchResult` with inner-product scores, highest
first; where a graph search finds fewer than ``k`` entities the tail is padded
with index ``-1`` (score ``-inf``), which callers drop.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from omnisearchsage.errors import OmniError
from omnisearchsage.search.index import ExactIndex, SearchResult

log = logging.getLogger(__name__)

#: Approximate backends in the order ``auto`` tries them, with the module each needs.
_APPROX = (("faiss", "faiss"), ("usearch", "usearch.index"))
_PIP_NAMES = {"faiss": "faiss-cpu", "usearch": "usearch"}


@dataclass(frozen=True)
class IndexParams:
    """HNSW graph and search sizes, and the exact index's query chunk. The service's and the
    evaluation's configs carry the same fields, so either can be passed where this is expected."""

    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    exact_chunk_size: int = 256


class VectorIndex(Protocol):
    """Top-k inner-product search over a fixed matrix of L2-normalised rows."""

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> SearchResult: ...


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # parent package missing (usearch for usearch.index)
        return False


def resolve_backend(name: str) -> str:
    """The backend ``name`` stands for: ``auto`` → first installed approximate one, else ``exact``.

    Naming an approximate backend that is not installed is a user error.
    """
    if name == "auto":
        return next((b for b, mod in _APPROX if _installed(mod)), "exact")
    module = dict(_APPROX).get(name)
    if module is not None and not _installed(module):
        raise OmniError(
            f"index backend {name!r} is not installed: pip install {_PIP_NAMES[name]} (or use --index exact)"
        )
    return name


class FaissHNSW:
    """faiss ``IndexHNSWFlat`` with inner-product metric; the beam is widened to ``k`` per search."""

    def __init__(self, embeddings: np.ndarray, cfg: IndexParams) -> None:
        import faiss

        self._faiss = faiss
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._index = faiss.IndexHNSWFlat(x.shape[1], cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = cfg.hnsw_ef_construction
        self._index.add(x)
        self._ef = cfg.hnsw_ef_search

    def __len__(self) -> int:
        return self._index.ntotal

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        k = min(k, len(self))
        params = self._faiss.SearchParametersHNSW(efSearch=max(self._ef, k))
        scores, indices = self._index.search(
            np.ascontiguousarray(queries, dtype=np.float32), k, params=params
        )
        return SearchResult(
            np.where(indices >= 0, scores, -np.inf).astype(np.float32), indices.astype(np.int64)
        )


class USearchHNSW:
    """usearch ``Index`` with inner-product metric (its distance is ``1 - score``)."""

    def __init__(self, embeddings: np.ndarray, cfg: IndexParams) -> None:
        from usearch.index import Index

        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._index = Index(
            ndim=x.shape[1],
            metric="ip",
            dtype="f32",
            connectivity=cfg.hnsw_m,
            expansion_add=cfg.hnsw_ef_construction,
            expansion_search=cfg.hnsw_ef_search,
        )
        self._index.add(np.arange(len(x), dtype=np.uint64), x)

    def __len__(self) -> int:
        return len(self._index)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        k = min(k, len(self))
        n = len(queries)
        m = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k, threads=1)
        keys = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 1:  # usearch answers one query with a flat `Matches` holding only what it found
            found = len(m.keys)
            keys[0, :found], scores[0, :found] = m.keys, 1.0 - m.distances
            return SearchResult(scores, keys)
        valid = np.arange(k)[None, :] < np.asarray(m.counts)[:, None]
        keys[valid] = np.asarray(m.keys, dtype=np.int64)[valid]
        scores[valid] = 1.0 - np.asarray(m.distances, dtype=np.float32)[valid]
        return SearchResult(scores, keys)


def build_index(embeddings: np.ndarray, backend: str, cfg: IndexParams) -> VectorIndex:
    """An index of ``backend`` (already resolved, see :func:`resolve_backend`) over ``embeddings``."""
    if backend == "exact":
        return ExactIndex(embeddings, chunk_size=cfg.exact_chunk_size)
    if backend == "faiss":
        return FaissHNSW(embeddings, cfg)
    if backend == "usearch":
        return USearchHNSW(embeddings, cfg)
    raise ValueError(f"unknown index backend {backend!r}")


def recall_at_k(index: VectorIndex, exact: ExactIndex, probes: np.ndarray, k: int) -> float:
    """Mean fraction of exact search's top-``k`` that ``index`` also returns in its top-``k``."""
    k = min(k, len(exact))
    truth = exact.search(probes, k).indices
    got = index.search(probes, k).indices
    # Row-wise set intersection, vectorised: compare every (got, truth) pair of the row.
    overlap = (got[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(overlap.mean() / k)
