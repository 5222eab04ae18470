"""Whether a pretrained query body is fine-tuned or frozen: one rule, decided from the data.

A pretrained transformer query tower (``query_encoder`` a model directory, or "auto" anchored on
the legacy embeddings' encoder) has ~22M body parameters. A relevance set with a few hundred
training queries (CrowdFlower: 206) cannot teach them anything but those queries: the frozen body
plus the residual head generalises to new queries as well as the zero-shot encoder does. With
thousands of queries (Home Depot: 7,525) fine-tuning the body is what sentence-transformers'
recipes do (``siamese.py`` runs that recipe on both sides), and it moves the query space and the
entities' text vectors towards the catalogue's language together.

``TrainConfig.pretrained_lr_scale`` None ("auto") is resolved here, once per run, before the run's
config is written (so a resume or an export reads the decision back, never re-decides it):

* frozen (scale 0) when the training pairs hold fewer than ``fine_tune_min_queries`` distinct
  queries, or when the query tower is the n-gram tower (it has no pretrained body);
* ``fine_tune_lr_scale`` otherwise.

An explicit ``pretrained_lr_scale`` (``omni train --pretrained-lr-scale``) is never overridden. A
fine-tuned body sets ``ModelConfig.entity_text``: the siamese stage needs the entities' text in the
encoder's space, which only an anchored model has, so an explicit scale on a model that is not
anchored is an error and "auto" freezes such a body.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from omnisearchsage.errors import OmniError
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import TrainingData

log = logging.getLogger(__name__)


def fine_tune_scale(cfg: TrainConfig, training_queries: int) -> float:
    """The body's learning-rate scale for a transformer query tower trained on ``training_queries``
    distinct queries: ``cfg.pretrained_lr_scale`` when set, else the rule of the module doc."""
    if cfg.pretrained_lr_scale is not None:
        return cfg.pretrained_lr_scale
    return cfg.fine_tune_lr_scale if training_queries >= cfg.fine_tune_min_queries else 0.0


def training_queries(data: TrainingData) -> int:
    """Distinct queries on the query side of the training pairs (every task's)."""
    rows = [t.query_rows for t in data.tasks.values()]
    return len(np.unique(np.concatenate(rows))) if rows else 0


def resolve_fine_tuning(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with ``pretrained_lr_scale`` decided (see the module doc); the decision is logged."""
    if cfg.model.query_encoder == "ngram":
        return replace(cfg, pretrained_lr_scale=cfg.pretrained_lr_scale or 0.0)
    n = training_queries(data)
    scale = fine_tune_scale(cfg, n)
    if cfg.pretrained_lr_scale is not None:
        how = "set by pretrained_lr_scale"
    else:
        how = (f"{n:,} training queries {'>=' if scale else '<'} fine_tune_min_queries "
               f"{cfg.fine_tune_min_queries:,}")
    if scale and cfg.model.anchor_kind is None:
        if cfg.pretrained_lr_scale is not None:
            raise OmniError("--pretrained-lr-scale > 0 fine-tunes the body in the siamese stage, which needs "
                            "an anchored model (--query-encoder auto on a workspace whose legacy embeddings "
                            "a text encoder computed); pass 0 to train with the body frozen")
        scale, how = 0.0, f"{how}, but the model is not anchored: no entity text in the encoder's space"
    log.info("query body: %s (%s)", f"fine-tuned at {scale:g} x lr in the siamese stage" if scale else "frozen", how)
    return replace(cfg, pretrained_lr_scale=scale, model=replace(cfg.model, entity_text=bool(scale)))
