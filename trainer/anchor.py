"""Start the model in a pretrained text encoder's space when the workspace's legacy embeddings live there.

The paper's model learns from hundreds of millions of engagements; a labelled relevance set such
as CrowdFlower has a few hundred queries, each judged against products no other query saw. Trained
from scratch on that, both towers memorise the training queries (pair Recall@10 0.02 on its test
queries, against 0.73 for MiniLM zero-shot). When the catalogue's legacy embeddings were computed
by a text encoder that is installed here, ``query_encoder="auto"`` anchors the model instead:

* the query tower is that encoder (same pooling), followed by an identity-initialised residual
  head (``query_head="residual"``), and ``dim`` becomes the encoder's width;
* the entity tower is the legacy embedding of ``anchor_kind`` through an identity-initialised
  residual, with the lexical channel; its MLP over text bags is off (``entity_mlp``), since a few
  hundred queries only teach it the training products;
* the residuals and the lexical weights learn at ``anchor_lr_scale`` times the rate;

* the lexical channel is on (``lexical_buckets`` None means 1,024 here, 0 otherwise);

so at step 0 the model *is* the encoder's zero-shot retrieval (plus the lexical channel), and
training moves it only as far as the data supports: weight decay pulls both residuals back to the
identity. Without such a record (the sample world's legacy embeddings come from no text encoder),
"auto" is the paper's n-gram query tower.

The record is ``raw/legacy_encoder.json`` (:data:`~omnisearchsage.contract.Workspace.legacy_encoder`)::

    {"kinds": ["product"], "model": "auto" | "/path/to/model", "pooling": "mean"}

where ``model`` is resolved as ``omni import relevance --embed-model`` resolves it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from omnisearchsage.contract import Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.text_encoders import encoder_pooling, resolve_embed_model
from omnisearchsage.trainer.config import TrainConfig

log = logging.getLogger(__name__)

AUTO = "auto"
#: Lexical buckets of an anchored model (``ModelConfig.lexical_buckets`` None). Fewer buckets collide more
#: words; the README (*Real data*) measures 256 against 1,024 on both relevance sets.
ANCHORED_LEXICAL_BUCKETS = 1024


def resolve_query_encoder(ws: Workspace, cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``query_encoder="auto"``, ``lexical_buckets=None`` and the compat defaults (None)
    replaced by what they mean for ``ws`` (see the module doc)."""
    cfg = _resolve_encoder(ws, cfg)
    # The compat head and the compat tasks' shared pairs untangle the compat space from the main one
    # (README, *Ablations*, Table 6). An anchored model's compat target is its encoder's own space,
    # where its main output starts and stays close (residual maps, weight-decayed to the identity):
    # there is no conflict to untangle, and its real-data figures are measured without them.
    anchored = cfg.model.query_head == "residual" and cfg.model.anchor_kind is not None
    if cfg.model.compat_head is None:
        cfg = replace(cfg, model=replace(cfg.model, compat_head=not anchored))
    if cfg.compat_shared_pairs is None:
        cfg = replace(cfg, compat_shared_pairs=not anchored)
    return cfg


def _resolve_encoder(ws: Workspace, cfg: TrainConfig) -> TrainConfig:
    """``query_encoder="auto"`` and ``lexical_buckets=None`` resolved for ``ws``."""
    anchored = _anchor(ws, cfg) if cfg.model.query_encoder == AUTO else None
    buckets = cfg.model.lexical_buckets
    if buckets is None:
        cfg = replace(cfg, model=replace(cfg.model, lexical_buckets=ANCHORED_LEXICAL_BUCKETS if anchored else 0))
    if cfg.model.query_encoder != AUTO:
        return cfg
    if anchored is None:
        return replace(cfg, model=replace(cfg.model, query_encoder="ngram"))
    kind, model_dir, width = anchored
    log.info("query encoder: %s (the encoder of the %s legacy embeddings), anchored in its %d-d space",
             model_dir, kind, width)
    cfg = cfg.with_dim(width)
    return replace(cfg, model=replace(cfg.model, query_encoder=str(model_dir), pooling=encoder_pooling(model_dir),
                                      query_head="residual", anchor_kind=kind,
                                      entity_mlp=False))


def _anchor(ws: Workspace, cfg: TrainConfig) -> tuple[str, Path, int] | None:
    """(kind, encoder directory, width) to anchor on, or None (with the reason logged)."""
    path = ws.legacy_encoder
    if not cfg.model.use_legacy or not path.exists():
        log.info("query encoder: ngram (%s)", "legacy embeddings are off" if not cfg.model.use_legacy
                 else f"{path} absent: the legacy embeddings come from no known text encoder")
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        kinds, spec = list(record["kinds"]), str(record["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise OmniError(f"{path}: not a legacy-encoder record ({e}); expected keys kinds and model") from e
    model_dir = resolve_embed_model(spec)
    if model_dir is None or not (model_dir / "config.json").exists():
        log.info("query encoder: ngram (%s names encoder %r, which is not installed here)", path, spec)
        return None
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    width = config.get("hidden_size") or config.get("dim")
    if not isinstance(width, int) or not kinds:
        raise OmniError(f"{model_dir / 'config.json'}: no hidden_size; cannot anchor on this encoder")
    return kinds[0], model_dir, width
