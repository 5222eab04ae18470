"""How often the entity tower trains without each text field: one rule, decided from the data.

Some fields exist for the entities training sees and are missing for many the model must serve.
Engaged queries are the clear case: a training positive was engaged before the cutoff, so it has
them by construction, while an entity engaged only later (a new pin, most products of a relevance
set's test queries) has none. A tower that never trained without the field reads its absence as
something it never learned, and such entities rank near chance. DropoutNet (Volkovs et al., NeurIPS
2017) answers this by emptying the field in a share of training rows; the rule here sets that share
to the skew itself:

    p(field) = share of catalogue entities without the field − share of training positives without it

(the catalogue is every pin and product, as evaluation and serving read it; positives are the
entity tasks' training pairs). Kept when at least ``TrainConfig.field_dropout_min``, capped at
``field_dropout_max``, rounded to two decimals. A field as present in training as in the catalogue
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


def field_skew(data: TrainingData) -> dict[str, tuple[float, float]]:
    """Per entity-tower field: (share of catalogue entities without it, share of training positives
    without it), pins and products together; positives counted once per training pair."""
    fields = data.fields
    if not fields:
        return {}
    cat_empty, cat_rows = np.zeros(len(fields)), 0
    pos_empty, pos_rows = np.zeros(len(fields)), 0
    for kind in ("pin", "product"):
        cat = data.catalogues.get(kind)
        if cat is None:
            continue
        empty = (np.diff(cat.bags.bounds) == 0).reshape(cat.bags.fields, cat.bags.rows)  # [fields, rows]
        cat_empty += empty.sum(1)
        cat_rows += cat.bags.rows
        for task in data.tasks.values():
            if task.candidate == kind and not task.frozen:
                pos_empty += empty[:, task.cand_rows].sum(1)
                pos_rows += len(task.cand_rows)
    if not cat_rows or not pos_rows:
        return {}
    return {f: (float(c / cat_rows), float(p / pos_rows)) for f, c, p in zip(fields, cat_empty, pos_empty)}


def resolve_field_dropout(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with ``model.field_dropout`` decided (see the module doc); the decision is logged."""
    if cfg.model.field_dropout is not None:
        return cfg
    chosen: list[tuple[str, float]] = []
    for field, (catalogue, positives) in field_skew(data).items():
        p = round(min(catalogue - positives, cfg.field_dropout_max), 2)
        if p >= cfg.field_dropout_min:
            chosen.append((field, p))
            log.info("field dropout %s=%g: %.0f%% of the catalogue lacks it, %.0f%% of the training positives",
                     field, p, 100 * catalogue, 100 * positives)
    if not chosen:
        log.info("field dropout: none (no field is missing from the catalogue more often than from the "
                 "training positives by %g or more)", cfg.field_dropout_min)
    return replace(cfg, model=replace(cfg.model, field_dropout=tuple(chosen)))
