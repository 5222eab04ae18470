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

With ``ModelConfig.presence_dropout`` q, a share q of the rows already keep only the fields of a random
catalogue entity of their kind (:func:`presence_patterns`), so a positive lacks a field with probability
``e_pos + q (1 - e_pos) e_cat`` (e: the shares without it); the rule then sets the per-field rate to
what that leaves of the skew, a smaller rate or none.

``ModelConfig.field_dropout`` None ("auto") is resolved here, once per run, before the run's config is
written (a resume or an export reads the decision back); an explicit value (``omni train
--field-dropout``, ``''`` for none) is never overridden.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import ENTITY_KINDS, TaskPairs, TrainingData

log = logging.getLogger(__name__)


def _empty(data: TrainingData, kind: str) -> np.ndarray:
    """bool [fields, entities]: which of the ``kind`` catalogue's field bags are empty."""
    bags = data.catalogues[kind].bags
    return (bags.sizes() == 0).reshape(bags.fields, bags.rows)


def presence_patterns(data: TrainingData) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per entity kind of :data:`ENTITY_KINDS` (the ``kinds`` the training batches carry): the distinct
    field-presence patterns of its catalogue (bool [patterns, fields]) and how many entities have each;
    for a kind the run has no catalogue of, the one pattern "every field" (its rows never occur)."""
    out = []
    for kind in ENTITY_KINDS:
        if kind not in data.catalogues or not data.fields:
            out.append((np.ones((1, len(data.fields)), bool), np.ones(1)))
            continue
        patterns, counts = np.unique(~_empty(data, kind).T, axis=0, return_counts=True)
        out.append((patterns, counts))
    return out


def _positives_empty(data: TrainingData, kind: str, tasks: list[TaskPairs], empty: np.ndarray) -> np.ndarray:
    """bool [fields, positives]: which fields the training positives of ``tasks`` read empty, their
    engaged queries as of the pair included (a pin's first pairs read none)."""
    out = empty[:, np.concatenate([t.cand_rows for t in tasks])]
    if data.as_of_field is not None and all(t.positive_bags is not None for t in tasks):
        bags = np.concatenate([t.positive_bags for t in tasks])
        chosen = bags >= 0
        sizes = np.diff(data.catalogues[kind].bags.bounds)  # every bag, the extra ones included
        out[data.as_of_field, chosen] = sizes[bags[chosen]] == 0
    return out


def field_skew(data: TrainingData, presence_dropout: float = 0.0) -> dict[str, float]:
    """Per entity-tower field: the share of catalogue entities without it minus the share of training
    positives without it (after ``presence_dropout``, see the module doc), taken per entity kind (pins
    and products differ in which fields they have and in their share of the pairs) and averaged over
    the kinds by their share of the positives, the rows the dropout acts on; positives counted once per
    training pair, as the batches show them (engaged queries as of the pair included)."""
    skew, weight = np.zeros(len(data.fields)), 0
    for kind in ENTITY_KINDS:
        cat = data.catalogues.get(kind)
        tasks = [t for t in data.tasks.values() if t.candidate == kind and not t.frozen]
        if cat is None or not data.fields or not tasks:
            continue
        positives = np.concatenate([t.cand_rows for t in tasks])
        empty = _empty(data, kind)
        e_cat, e_pos = empty.mean(1), _positives_empty(data, kind, tasks, empty).mean(1)
        e_pos = e_pos + presence_dropout * (1 - e_pos) * e_cat
        skew += len(positives) * (e_cat - e_pos)
        weight += len(positives)
    return {f: float(v / weight) for f, v in zip(data.fields, skew)} if weight else {}


def resolve_field_dropout(cfg: TrainConfig, data: TrainingData) -> TrainConfig:
    """``cfg`` with ``model.field_dropout`` decided (see the module doc); the decision is logged."""
    if cfg.model.field_dropout is not None:
        return cfg
    chosen: list[tuple[str, float]] = []
    for field, skew in field_skew(data, cfg.model.presence_dropout).items():
        p = round(min(skew, cfg.field_dropout_max), 2)
        if p >= cfg.field_dropout_min:
            chosen.append((field, p))
            log.info("field dropout %s=%g: the catalogue lacks it %.0f points more often than the training "
                     "positives do", field, p, 100 * skew)
    if not chosen:
        log.info("field dropout: none (no field is missing from the catalogue more often than from the "
                 "training positives by %g or more)", cfg.field_dropout_min)
    return replace(cfg, model=replace(cfg.model, field_dropout=tuple(chosen)))
