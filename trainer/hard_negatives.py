"""Hard negatives: per task, the catalogue entities the current model ranks near a training query
that are not its positives.

Random and in-batch negatives are mostly easy: once a model separates product categories they
contribute almost no gradient. Hard negatives are the products a query's nearest neighbours hold
(the same category, another size or brand), which is what the ranking at the top of the list has
to get right. Every ``refresh_every`` steps the loop embeds the whole candidate catalogue and every
training query with the model as it is, and for each training pair keeps ``per_pair`` of the
query's ``candidates`` nearest entities (best first) that are

* not a positive of that query (any of its training pairs), and
* not within the false-negative guard: a candidate scoring above ``pos - relative_margin * |pos|``
  (``pos``: the pair's positive's score) is probably an unlabelled positive, and pushing it away
  teaches the model to rank relevant products down (NV-Retriever's TopK-PercPos; the same rule as
  sentence-transformers' ``mine_hard_negatives(relative_margin=...)``; GISTEmbed masks in-batch
  candidates the same way with a guide model).

At step 0 the model is the anchored encoder's zero-shot retrieval plus the lexical channel (a
BM25-like term), so the first mining is that hybrid's. Mining reads the model, so a resumed run
mines again at its first step: its hard negatives can differ from the uninterrupted run's until
the next refresh.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from omnisearchsage.model.inputs import entity_inputs
from omnisearchsage.model.towers import TwoTowerModel
from omnisearchsage.trainer.config import HardNegativeConfig
from omnisearchsage.trainer.data import TaskPairs, TrainingData
from omnisearchsage.trainer.loss import pair_key

log = logging.getLogger(__name__)

#: Rows scored against the catalogue at once while mining (bounds the [rows, catalogue] score block).
SCORE_CHUNK = 1024


def select_hard_negatives(query_rows: np.ndarray, pos_scores: np.ndarray, cand_rows: np.ndarray,
                          cand_scores: np.ndarray, positive_keys: np.ndarray, cfg: HardNegativeConfig) -> np.ndarray:
    """Per training pair, ``cfg.per_pair`` negatives among its query's candidates, best scoring first.

    ``query_rows`` / ``pos_scores``: [pairs]; ``cand_rows`` / ``cand_scores``: [pairs, K], each row
    sorted by descending score; ``positive_keys``: sorted ``pair_key(query, entity)`` of every
    training pair of the task. Returns int64 [pairs, per_pair], -1 where fewer candidates qualify.
    """
    keys = pair_key(torch.from_numpy(query_rows).unsqueeze(1), torch.from_numpy(cand_rows)).numpy()
    found = np.searchsorted(positive_keys, keys).clip(max=len(positive_keys) - 1)
    known_positive = positive_keys[found] == keys
    guarded = cand_scores > (pos_scores - cfg.relative_margin * np.abs(pos_scores))[:, None]
    ok = ~known_positive & ~guarded
    order = np.argsort(~ok, axis=1, kind="stable")[:, : cfg.per_pair]  # qualifying ones first, in score order
    chosen = np.take_along_axis(cand_rows, order, axis=1)
    return np.where(np.take_along_axis(ok, order, axis=1), chosen, -1).astype(np.int64)


@torch.no_grad()
def mine_task(model: TwoTowerModel, data: TrainingData, task: TaskPairs, cfg: HardNegativeConfig,
              tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None, batch_size: int) -> np.ndarray:
    """Hard negatives of every pair of ``task`` from ``model``'s current embeddings: int64 [pairs, per_pair]."""
    cat = data.catalogues[task.candidate]
    entities = torch.cat([
        model.entity(**entity_inputs(data.catalogues, data.dense_layout, [(task.candidate, rows)]))
        for rows in np.array_split(np.arange(len(cat)), max(1, -(-len(cat) // batch_size)))]).float()
    queries, inverse = np.unique(task.query_rows, return_inverse=True)
    q = torch.cat([model.query(**data.query_inputs(rows, tokenize))
                   for rows in np.array_split(queries, max(1, -(-len(queries) // batch_size)))]).float()
    return mine_from_vectors(q, entities, inverse, task.query_rows, task.cand_rows, cfg, task.negative_pool)


def mine_from_vectors(queries: torch.Tensor, entities: torch.Tensor, vector_rows: np.ndarray,
                      query_rows: np.ndarray, cand_rows: np.ndarray, cfg: HardNegativeConfig,
                      pool: np.ndarray | None = None) -> np.ndarray:
    """Hard negatives of every pair from given vectors: int64 [pairs, per_pair] entity rows, -1 where
    fewer qualify (:func:`select_hard_negatives` over each query's ``cfg.candidates`` nearest entities).
    ``queries`` [distinct queries, d] and ``entities`` [catalogue, d]; pair i is (``query_rows[i]``,
    ``cand_rows[i]``) and its query's vector is ``queries[vector_rows[i]]``. The loop mines from the
    model's towers, the siamese stage from its untuned encoder. ``pool``: the entity rows negatives may
    come from (the task's negative pool; None: every row)."""
    searched = entities if pool is None else entities[torch.from_numpy(pool)]
    k = min(cfg.candidates, len(searched))
    top_scores, top_rows = [], []
    for start in range(0, len(queries), SCORE_CHUNK):
        s, r = (queries[start : start + SCORE_CHUNK] @ searched.T).topk(k, dim=1)
        top_scores.append(s)
        top_rows.append(r)
    scores, rows = torch.cat(top_scores).numpy(), torch.cat(top_rows).numpy().astype(np.int64)
    if pool is not None:
        rows = pool[rows]
    pos_scores = (queries[torch.from_numpy(vector_rows)] * entities[torch.from_numpy(cand_rows)]).sum(1).numpy()
    positives = np.sort(pair_key(torch.from_numpy(query_rows), torch.from_numpy(cand_rows)).numpy())
    return select_hard_negatives(query_rows, pos_scores, rows[vector_rows], scores[vector_rows], positives, cfg)


def mine(model: TwoTowerModel, data: TrainingData, cfg: HardNegativeConfig,
         tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]] | None, batch_size: int, step: int) -> None:
    """Refresh ``data.hard_rows`` for every pin / product task that learns its candidates' tower."""
    was_training = model.training
    model.eval()
    try:
        for name, task in data.tasks.items():
            if task.frozen or task.candidate not in ("pin", "product"):
                continue
            hard = mine_task(model, data, task, cfg, tokenize, batch_size)
            data.hard_rows[name] = hard
            log.info("step %d: mined hard negatives for %s (%.1f per pair after the guard)",
                     step, name, float((hard >= 0).sum(1).mean()))
    finally:
        model.train(was_training)
