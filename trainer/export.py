"""Export a trained run: the newest checkpoint's towers, written in the model's export format.

``export_run(ws, name)`` writes ``runs/NAME/export/`` (layout: :class:`omnisearchsage.contract.ExportLayout`,
format: :mod:`omnisearchsage.model.io`) and embeds the whole catalogue with the exported encoders.
The folder is assembled under a temporary name and renamed into place. The exported query
embeddings are computed by the loaded :class:`~omnisearchsage.model.io.QueryEncoder` itself (text
in, vector out), so they are exactly what serving computes for the same text.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file

from omnisearchsage.atomic import atomic_path, write_json
from omnisearchsage.contract import FEATURE_QUERIES, VISUAL_EMBEDDINGS, ExportLayout, RunLayout, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.inputs import VISUAL, Catalogue
from omnisearchsage.model.io import (
    EntityEncoder,
    load_entity_encoder,
    load_query_encoder,
    load_query_encoder_dir,
    save_entity_tower,
    save_query_tower,
    write_embeddings,
)
from omnisearchsage.model.towers import ModelSpec, TwoTowerModel
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import load_entity_catalogue
from omnisearchsage.trainer.loop import checkpoints, read_run_config, read_text_vectors
from omnisearchsage.trainer.visual import visual_model

log = logging.getLogger(__name__)


def load_trained_model(ws: Workspace, name: str) -> tuple[TwoTowerModel, dict[str, Any], int]:
    """The run's model with its newest checkpoint's weights, the run config, and the step."""
    run = ws.run(name)
    saved = read_run_config(run.root)
    cfg = TrainConfig.from_json(saved["config"])
    model = TwoTowerModel(cfg.model, ModelSpec.from_json(saved["spec"]))
    found = checkpoints(run.root)
    if not found:
        raise OmniError(f"{run.checkpoints}: no checkpoint; train the run first with `omni train --name {name}`")
    weights = load_file(str(found[-1] / RunLayout.CHECKPOINT_WEIGHTS))
    load_shared(model, {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    step = json.loads((found[-1] / RunLayout.CHECKPOINT_STATE).read_text(encoding="utf-8"))["step"]
    return model.eval(), saved, step


def load_shared(module: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict`` for weights saved by safetensors' ``save_model``, which stores a tensor shared
    by two modules (the lexical channel of both towers) under one of its names only."""
    state = module.state_dict()
    result = module.load_state_dict(weights, strict=False)
    loaded = {state[k].data_ptr() for k in weights}
    unfilled = [k for k in result.missing_keys if state[k].data_ptr() not in loaded]
    if unfilled or result.unexpected_keys:
        raise OmniError(f"checkpoint does not match the model: missing {unfilled[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]}; retrain the run")


def export_run(ws: Workspace, name: str, embeddings: bool = True) -> Path:
    """Write ``runs/NAME/export/`` from the run's newest checkpoint; returns the export dir.

    ``embeddings=False`` writes the encoders and the manifest only: the catalogue is then embedded by
    :func:`embed_catalogue` as a batch job of N processes (``omni embed``)."""
    model, saved, step = load_trained_model(ws, name)
    cfg, spec = TrainConfig.from_json(saved["config"]), ModelSpec.from_json(saved["spec"])
    featurizer = Featurizer.load(ws.features)
    if featurizer.num_ids != spec.num_ids:
        raise OmniError(f"{ws.features_manifest}: num_ids {featurizer.num_ids} differs from the run's "
                        f"{spec.num_ids}; the features were rebuilt after training: retrain the run")
    model_cfg, batch = cfg.to_json()["model"], cfg.export_batch_size
    visual = _reads_visual(ws, name, spec, saved.get("visual_model"))
    with atomic_path(ws.export_dir(name)) as tmp:
        out = ExportLayout(tmp)
        version = f"{name}@{step}-{save_query_tower(model.query, model_cfg, spec, featurizer, batch, out.query_encoder)}"
        save_entity_tower(model.entity, model_cfg, spec, featurizer, batch, out.entity_encoder)
        query_encoder = load_query_encoder_dir(out.query_encoder, version)  # as serving will load it
        entity_encoder = EntityEncoder(model.entity, featurizer, spec, version, batch, cfg.model,
                                       model.query if cfg.model.entity_text else None)
        written = []
        for kind in ("pin", "product"):
            cat = load_entity_catalogue(ws, kind, spec.fields, visual)
            if cat is not None:
                _with_text_vectors(ws, name, cfg.model, cat)
                if embeddings:
                    write_embeddings(out, kind, cat.keys, entity_encoder.encode_catalogue(cat))
                written.append(kind)
        if ws.has(FEATURE_QUERIES):
            if embeddings:
                texts = _query_texts(ws)
                write_embeddings(out, "query", texts, query_encoder.encode_normalized(texts.to_list()))
            written.append("query")
        legacy_dims = saved["legacy_dims"]
        write_json({
            "model_version": version,
            "run": name,
            "step": step,
            "dim": model.out_dim,
            "dense_dim": cfg.model.dim,
            "lexical_buckets": cfg.model.lexical_buckets,
            "legacy_dim": next(iter(set(legacy_dims.values()))) if len(set(legacy_dims.values())) == 1 else None,
            "legacy_dims": legacy_dims,
            "visual_model": saved.get("visual_model"),
            "visual_dim": spec.dense_layout[VISUAL][1] if visual else None,
            "query_encoder": "ngram" if cfg.model.query_encoder == "ngram" else "transformer",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "split": saved["split"],
            "tasks": list(saved["tasks"]),
            "entity_types": written,
        }, out.manifest)
    log.info("exported %s (%s) to %s", name, version, ws.export_dir(name))
    return ws.export_dir(name)


def _reads_visual(ws: Workspace, name: str, spec: ModelSpec, trained_on: str | None) -> bool:
    """Whether run ``name``'s entity tower reads visual embeddings; OmniError when the workspace's were
    written by another image model than the one it was trained on (its weights mean nothing for them)."""
    if VISUAL not in spec.dense_layout:
        return False
    if visual_model(ws) != trained_on:
        raise OmniError(f"{ws.path(VISUAL_EMBEDDINGS)}: embeddings of {visual_model(ws)!r}, but run {name} was "
                        f"trained on those of {trained_on!r}; retrain the run (or re-embed with that model)")
    return True


def _with_text_vectors(ws: Workspace, name: str, model_cfg: ModelConfig, cat: Catalogue) -> None:
    """Give ``cat`` the run's fine-tuned text vectors when its entity tower reads them (the siamese
    stage computed them with the exported body: re-embedding the catalogue's text would repeat that)."""
    if model_cfg.entity_text and cat.kind == model_cfg.anchor_kind:
        cat.text_vectors = read_text_vectors(ws.run(name), cat.keys)


def _query_texts(ws: Workspace) -> pl.Series:
    """The query catalogue: the features table keys queries by their normalised text."""
    return pl.read_parquet(ws.path(FEATURE_QUERIES), columns=["query"]).get_column("query")


def embed_catalogue(ws: Workspace, name: str, shard: int = 0, num_shards: int = 1) -> list[Path]:
    """Embed shard ``shard`` of ``num_shards`` of every entity type the export lists, with the exported
    encoders, into ``embeddings/<type>.parquet/part-I-of-N.parquet``.

    Each process embeds a contiguous slice of the catalogue and writes its own file atomically, so N
    processes (``torchrun --nproc-per-node N``, several machines, or a scheduler's array job) need
    no coordination; readers take the folder as one dataset once all N parts exist.
    """
    if not 0 <= shard < num_shards:
        raise OmniError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    layout = ws.run(name).export
    manifest = layout.read_manifest()
    entity_encoder, query_encoder = load_entity_encoder(layout.root), load_query_encoder(layout.root)
    visual = _reads_visual(ws, name, entity_encoder.spec, manifest.get("visual_model"))
    written = []
    for kind in manifest["entity_types"]:
        if layout.embeddings(kind).is_file():
            raise OmniError(f"{layout.embeddings(kind)}: already embedded in one process by `omni export`; "
                            "export with --no-embeddings to embed in shards")
        if kind == "query":
            keys = _query_texts(ws)
        else:
            cat = load_entity_catalogue(ws, kind, entity_encoder.spec.fields, visual)
            if cat is not None:
                _with_text_vectors(ws, name, entity_encoder.model_cfg, cat)
            keys = cat.keys if cat is not None else pl.Series([], dtype=pl.Utf8)
        start, stop = len(keys) * shard // num_shards, len(keys) * (shard + 1) // num_shards
        rows = np.arange(start, stop)
        if kind == "query":
            emb = query_encoder.encode_normalized(keys.slice(start, stop - start).to_list())
        else:
            emb = entity_encoder.encode_catalogue(cat, rows) if cat is not None else np.zeros((0, manifest["dim"]),
                                                                                           np.float32)
        path = layout.embedding_part(kind, shard, num_shards)
        with atomic_path(path) as tmp:
            write_embeddings(layout, kind, keys.slice(start, stop - start), emb, tmp)
        written.append(path)
        log.info("embedded %s rows [%d, %d) of %d into %s", kind, start, stop, len(keys), path)
    return written
