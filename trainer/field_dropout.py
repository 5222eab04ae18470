"""How often the entity tower trains without each text field: one rule, decided from the data.

Some fields exist for the entities training sees and are missing for many the model must serve.
Engaged queries are the clear case: a training positive was engaged before the cutoff, so it has
them by construction, while an entity engaged only later (a new pin, most products of a relevance
set's test queries) has none. A tower that never trained without the field reads its absence as
something it never learned, and such entities rank near chance. DropoutNet (Volkovs et al., NeurIPS
2017) answers this by emptying the field in a share of training rows; the rule here sets that share
to the skew itself:

    p(field) = share of catalogue entities without the field − share of training positives without it

(the catalogue is every pin or product, as evaluation and serving read it; positives are the entity
tasks' training pairs; taken per kind and averaged by the kinds' shares of the positives). Kept when at
least ``TrainConfig.field_dropout_min``, capped at ``field_dropout_max``, rounded to two decimals. A field as present in training as in the catalogue
(titles, captions, board titles on the sample world; every field of a relevance set without
``omni enrich queries``) gets none.

``ModelConfig.field_dropout`` None ("auto") is resolved here, once per run, before the run's config is
written (a resume or an export reads the decision back); an explicit value (``omni train
--field-dropout``, ``''`` for none) is never overridden.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import TrainingData

log = logging.getLogger(__name__)


def field_skew(data: TrainingData) -> dict[str, float]:
    """Per entity-tower field: the share of catalogue entities without it minus the share of training
    positives without it, taken per entity kind (pins and products differ in which fields they have
    and in their share of the pairs) and averaged over the kinds by their share of the positives, the
    rows the dropout acts on; positives counted once per training pair."""
    skew, weight = np.zeros(len(data.fields)), 0
    for kind in ("pin", "product"):
        cat = data.catalogues.get(kind)
        rows = [t.cand_rows for t in data.tasks.values() if t.candidate == kind and not t.frozen]
        if cat is None or not data.fields or not rows:
            continue
        positives = np.concatenate(rows)
        empty = (np.diff(cat.bags.bounds) == 0).reshape(cat.bags.fields, cat.bags.rows)  # [fields, rows]
        skew += len(positives) * (empty.mean(1) - empty[:, positives].mean(1))
        weight += len(positives)
    return {f: float(v / weight) for f, v in zip(data.fields, skew)} if weight else {}


def resolve_field_dropout(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with ``model.field_dropout`` decided (see the module doc); the decision is logged."""
    if cfg.model.field_dropout is not None:
        return cfg
    chosen: list[tuple[str, float]] = []
    for field, skew in field_skew(data).items():
        p = round(min(skew, cfg.field_dropout_max), 2)
        if p >= cfg.field_dropout_min:
            chosen.append((field, p))
            log.info("field dropout %s=%g: the catalogue lacks it %.0f points more often than the training "
                     "positives do", field, p, 100 * skew)
    if not chosen:
        log.info("field dropout: none (no field is missing from the catalogue more often than from the "
                 "training positives by %g or more)", cfg.field_dropout_min)
    return replace(cfg, model=replace(cfg.model, field_dropout=tuple(chosen)))
