"""The service's entity index: one vector index per entity type, searched together."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from omnisearchsage.errors import OmniError
from omnisearchsage.search.ann import VectorIndex, build_index, recall_at_k, resolve_backend
from omnisearchsage.search.index import ExactIndex
from omnisearchsage.serving.config import ServeConfig

log = logging.getLogger(__name__)


class Hit(NamedTuple):
    """One search result: entity id, its type and its inner-product score with the query."""

    id: str
    entity_type: str
    score: float


class EntityIndex:
    """One index per entity type; a search over several types merges their top-k by score."""

    def __init__(
        self,
        entities: Mapping[str, tuple[Sequence[str], np.ndarray]],
        cfg: ServeConfig,
        probes: np.ndarray | None = None,
    ) -> None:
        if not entities:
            raise OmniError(
                f"nothing to serve: the export has none of the entity types {list(cfg.index_entity_types)}"
            )
        self.backend = resolve_backend(cfg.index_backend)
        self.ids: dict[str, np.ndarray] = {}
        self.indexes: dict[str, VectorIndex] = {}
        #: recall@k of the approximate index against exact search, per type (empty for exact).
        self.recall: dict[str, float] = {}
        rng = np.random.default_rng(cfg.seed)
        for etype, (ids, emb) in entities.items():
            # Parquet-backed arrays are read-only, and torch warns on wrapping those: copy once here.
            emb = np.require(emb, dtype=np.float32, requirements=["C", "W"])
            self.ids[etype] = np.asarray(ids, dtype=object)
            self.indexes[etype] = build_index(emb, self.backend, cfg)
            if self.backend != "exact" and len(emb):
                sample = probes if probes is not None else emb
                pick = rng.choice(len(sample), size=min(cfg.recall_probe_queries, len(sample)), replace=False)
                exact = ExactIndex(emb, chunk_size=cfg.exact_chunk_size)
                self.recall[etype] = recall_at_k(self.indexes[etype], exact, sample[pick], cfg.recall_k)
                log.info(
                    "%s index over %d %ss: recall@%d vs exact = %.4f",
                    self.backend,
                    len(emb),
                    etype,
                    cfg.recall_k,
                    self.recall[etype],
                )

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(self.ids)

    def sizes(self) -> dict[str, int]:
        return {t: len(ix) for t, ix in self.indexes.items()}

    def search(self, vector: np.ndarray, k: int, entity_types: Sequence[str]) -> list[Hit]:
        """Top-``k`` over ``entity_types`` for one query vector, best first."""
        ids, types, scores = [], [], []
        for etype in entity_types:
            res = self.indexes[etype].search(vector[None, :], k)
            keep = res.indices[0] >= 0
            ids.append(self.ids[etype][res.indices[0][keep]])
            types.append(np.full(int(keep.sum()), etype, dtype=object))
            scores.append(res.scores[0][keep])
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")[:k]
        return [
            Hit(i, t, s)
            for i, t, s in zip(
                np.concatenate(ids)[order], np.concatenate(types)[order], all_scores[order].tolist()
            )
        ]
