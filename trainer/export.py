"""Export a trained run, and load what was exported, without the trainer's pickles.

``export_run(ws, name)`` writes ``runs/NAME/export/``::

    manifest.json                    model_version, dim, legacy_dim, created, split, tasks, entity_types
    query_encoder/  config.json      the tower's kind and ModelConfig, the id space
                    model.safetensors
                    featurizer/      vocabularies + manifest, as features/ has them (n-gram tower, lexical channel)
                    hf/              (transformer tower) save_pretrained model + tokenizer
    entity_encoder/ config.json, model.safetensors, featurizer/
    embeddings/{pins,products,queries}.parquet   id str, embedding list[float32] (L2-normalised)

Weights are safetensors and configs JSON, so a service needs only this module's loaders
(:func:`load_query_encoder`, :func:`load_entity_encoder`, :func:`load_embeddings`) and the tower
classes. The folder is assembled under a temporary name and renamed into place.

The exported query embeddings are computed by the loaded :class:`QueryEncoder` itself (text in,
vector out), so they are exactly what serving computes for the same text.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from omnisearchsage.atomic import atomic_path, write_json
from omnisearchsage.contract import FEATURE_QUERIES, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.build import encode_field
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.sources import LIST_FIELDS
from omnisearchsage.features.text import normalize
from omnisearchsage.trainer.config import ModelConfig, TrainConfig, config_from_json
from omnisearchsage.trainer.data import Catalogue, TokenBags, entity_inputs, load_entity_catalogue
from omnisearchsage.trainer.encoders import (
    EntityTower,
    ModelSpec,
    NgramQueryTower,
    QueryTower,
    TransformerQueryTower,
    TwoTowerModel,
    entity_tower,
    lexical_channel,
)
from omnisearchsage.trainer.loop import checkpoints, read_run_config

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Embedding files per entity type, under ``embeddings/``.
EMBEDDING_FILES = {"pin": "pins.parquet", "product": "products.parquet", "query": "queries.parquet"}
#: Fields that hold several texts per entity (board titles, engaged queries); the others one text.
_FIELD_TYPES = {f: pl.List(pl.Utf8) for f in LIST_FIELDS}
_ENCODER_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------- loaded encoders
class QueryEncoder:
    """Query text -> float32 [n, dim] L2-normalised embeddings (normalises the text itself)."""

    def __init__(self, tower: QueryTower, featurizer: Featurizer, version: str, batch_size: int) -> None:
        self.tower, self.featurizer, self.version, self.batch_size = tower.eval(), featurizer, version, batch_size
        self.dim = tower.out_dim

    def __repr__(self) -> str:
        return f"QueryEncoder(version={self.version!r}, dim={self.dim}, tower={type(self.tower).__name__})"

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [normalize(t) for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            ids, offsets = self.featurizer.encode(chunk)  # the n-gram tower's and the lexical channel's input
            inputs = {"ids": torch.from_numpy(ids), "offsets": torch.from_numpy(offsets)}
            if isinstance(self.tower, TransformerQueryTower):
                inputs |= self.tower.tokenize(chunk)
            emb = self.tower(**inputs)
            out[start : start + len(chunk)] = emb.float().numpy()
        return out


class EntityEncoder:
    """Pin or product text fields (+ legacy embedding) -> float32 [n, dim] L2-normalised embeddings."""

    def __init__(self, tower: EntityTower, featurizer: Featurizer, spec: ModelSpec, version: str,
                 batch_size: int) -> None:
        self.tower, self.featurizer, self.spec = tower.eval(), featurizer, spec
        self.version, self.batch_size = version, batch_size
        self.dim = tower.out_dim

    def __repr__(self) -> str:
        return f"EntityEncoder(version={self.version!r}, dim={self.dim}, fields={list(self.spec.fields)})"

    def encode(self, kind: str, fields: Mapping[str, Sequence[Any]], legacy: np.ndarray | None = None) -> np.ndarray:
        """``fields``: text per field name (``str``, or a list of strings for board_titles and
        engaged_queries; missing fields are empty); ``legacy``: float32 [n, dim] with NaN rows
        (or None) where an entity has none."""
        n = len(next(iter(fields.values()))) if fields else (0 if legacy is None else len(legacy))
        columns = [encode_field(self.featurizer, pl.Series(f, fields[f], dtype=_FIELD_TYPES.get(f, pl.Utf8))).to_arrow()
                   if f in fields else None for f in self.spec.fields]
        cat = Catalogue(kind, pl.Series([str(i) for i in range(n)]), TokenBags.from_lists(columns, n))
        if legacy is not None:
            cat.has_legacy = ~np.isnan(legacy).any(axis=1)
            cat.legacy = np.where(cat.has_legacy[:, None], legacy, 0.0).astype(np.float32)
        return self.encode_catalogue(cat)

    @torch.inference_mode()
    def encode_catalogue(self, cat: Catalogue) -> np.ndarray:
        """Embeddings of every row of ``cat`` (the features tables' token ids)."""
        layout = self.spec.dense_layout
        if cat.kind in layout and cat.legacy is not None and cat.legacy_dim != layout[cat.kind][1]:
            raise OmniError(f"{cat.kind} legacy embeddings have {cat.legacy_dim} dims; the model was trained "
                            f"with {layout[cat.kind][1]}")
        out = np.empty((len(cat), self.dim), dtype=np.float32)
        for start in range(0, len(cat), self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, len(cat)))
            out[rows] = self.tower(**entity_inputs({cat.kind: cat}, layout, [(cat.kind, rows)])).float().numpy()
        return out


# ---------------------------------------------------------------------------- loaders
def load_query_encoder(export_dir: str | Path) -> QueryEncoder:
    """The exported query tower, ready to ``encode(texts)``."""
    export_dir = Path(export_dir)
    return _load_query_encoder(export_dir / "query_encoder", _manifest(export_dir)["model_version"])


def _load_query_encoder(qdir: Path, version: str) -> QueryEncoder:
    cfg = json.loads((qdir / _ENCODER_CONFIG).read_text(encoding="utf-8"))
    model_cfg = config_from_json(ModelConfig, cfg["model"])
    lexical = lexical_channel(model_cfg, ModelSpec.from_json(cfg["spec"]))
    weights = load_file(str(qdir / _WEIGHTS))
    if cfg["kind"] == "transformer":
        # The body comes from hf/ (save_pretrained); model.safetensors holds the head and the lexical channel.
        tower: QueryTower = TransformerQueryTower(model_cfg, qdir / "hf", lexical)
        weights |= {f"transformer.{k}": v for k, v in tower.transformer.state_dict().items()}
    else:
        tower = NgramQueryTower(model_cfg, cfg["spec"]["num_ids"], lexical)
    tower.load_state_dict(weights)
    return QueryEncoder(tower, Featurizer.load(qdir / "featurizer"), version, cfg["batch_size"])


def load_entity_encoder(export_dir: str | Path) -> EntityEncoder:
    """The exported entity tower, ready to ``encode(kind, fields, legacy)``."""
    export_dir = Path(export_dir)
    manifest, edir = _manifest(export_dir), export_dir / "entity_encoder"
    cfg = json.loads((edir / _ENCODER_CONFIG).read_text(encoding="utf-8"))
    spec, model_cfg = ModelSpec.from_json(cfg["spec"]), config_from_json(ModelConfig, cfg["model"])
    tower = entity_tower(model_cfg, spec, lexical_channel(model_cfg, spec))
    tower.load_state_dict(load_file(str(edir / _WEIGHTS)))
    return EntityEncoder(tower, Featurizer.load(edir / "featurizer"), spec, manifest["model_version"],
                         cfg["batch_size"])


def load_embeddings(export_dir: str | Path, entity_type: str) -> tuple[list[str], np.ndarray]:
    """Ids and float32 [n, dim] embeddings of one entity type ("pin", "product" or "query")."""
    if entity_type not in EMBEDDING_FILES:
        raise OmniError(f"unknown entity type {entity_type!r}; choose one of {', '.join(EMBEDDING_FILES)}")
    path = Path(export_dir) / "embeddings" / EMBEDDING_FILES[entity_type]
    if not path.exists():
        raise OmniError(f"{path}: missing; the run has no {entity_type} embeddings (run `omni export`)")
    frame = pl.read_parquet(path)
    matrix = frame.get_column("embedding").list.to_array(_manifest(Path(export_dir))["dim"]).to_numpy()
    return frame.get_column("id").to_list(), np.ascontiguousarray(matrix, dtype=np.float32)


def _manifest(export_dir: Path) -> dict[str, Any]:
    path = export_dir / MANIFEST
    if not path.exists():
        raise OmniError(f"{path}: missing; export the run first with `omni export RUN`")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- export
def load_trained_model(ws: Workspace, name: str) -> tuple[TwoTowerModel, dict[str, Any], int]:
    """The run's model with its newest checkpoint's weights, the run config, and the step."""
    run = ws.run_dir(name)
    saved = read_run_config(run)
    cfg = TrainConfig.from_json(saved["config"])
    model = TwoTowerModel(cfg.model, ModelSpec.from_json(saved["spec"]))
    found = checkpoints(run)
    if not found:
        raise OmniError(f"{run / 'checkpoints'}: no checkpoint; train the run first with `omni train --name {name}`")
    weights = load_file(str(found[-1] / _WEIGHTS))
    load_shared(model, {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    step = json.loads((found[-1] / "state.json").read_text(encoding="utf-8"))["step"]
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


def export_run(ws: Workspace, name: str) -> Path:
    """Write ``runs/NAME/export/`` from the run's newest checkpoint; returns the export dir."""
    model, saved, step = load_trained_model(ws, name)
    cfg, spec = TrainConfig.from_json(saved["config"]), ModelSpec.from_json(saved["spec"])
    featurizer = Featurizer.load(ws.features)
    if featurizer.num_ids != spec.num_ids:
        raise OmniError(f"{ws.features_manifest}: num_ids {featurizer.num_ids} differs from the run's "
                        f"{spec.num_ids}; the features were rebuilt after training: retrain the run")
    with atomic_path(ws.export_dir(name)) as tmp:
        version = f"{name}@{step}-{_save_query_tower(model.query, cfg, spec, featurizer, tmp / 'query_encoder')}"
        _save_entity_tower(model.entity, cfg, spec, featurizer, tmp / "entity_encoder")
        query_encoder = _load_query_encoder(tmp / "query_encoder", version)  # as serving will load it
        entity_encoder = EntityEncoder(model.entity, featurizer, spec, version, cfg.export_batch_size)
        written = []
        for kind in ("pin", "product"):
            cat = load_entity_catalogue(ws, kind, spec.fields)
            if cat is not None:
                _write_embeddings(cat.keys, entity_encoder.encode_catalogue(cat), tmp, kind)
                written.append(kind)
        if ws.has(FEATURE_QUERIES):
            texts = pl.read_parquet(ws.path(FEATURE_QUERIES), columns=["query"]).get_column("query")
            _write_embeddings(texts, query_encoder.encode(texts.to_list()), tmp, "query")
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
            "query_encoder": "ngram" if cfg.model.query_encoder == "ngram" else "transformer",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "split": saved["split"],
            "tasks": list(saved["tasks"]),
            "entity_types": written,
        }, tmp / MANIFEST)
    log.info("exported %s (%s) to %s", name, version, ws.export_dir(name))
    return ws.export_dir(name)


def _save_query_tower(tower: QueryTower, cfg: TrainConfig, spec: ModelSpec, featurizer: Featurizer,
                      out: Path) -> str:
    """Write the query encoder; returns a short hash of its weights (part of the model version)."""
    out.mkdir(parents=True)
    model_cfg = cfg.to_json()["model"]
    weights = {k: v.contiguous() for k, v in tower.state_dict().items()}
    if isinstance(tower, TransformerQueryTower):
        tower.transformer.save_pretrained(out / "hf")
        tower.tokenizer.save_pretrained(out / "hf")
        model_cfg["query_encoder"] = "hf"
        weights = {k: v for k, v in weights.items() if not k.startswith("transformer.")}
        kind = "transformer"
    else:
        kind = "ngram"
    save_file(weights, str(out / _WEIGHTS))
    featurizer.save(out / "featurizer")
    write_json({"kind": kind, "model": model_cfg, "spec": spec.to_json(), "dim": tower.out_dim,
                "batch_size": cfg.export_batch_size}, out / _ENCODER_CONFIG)
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _save_entity_tower(tower: EntityTower, cfg: TrainConfig, spec: ModelSpec, featurizer: Featurizer,
                       out: Path) -> None:
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(out / _WEIGHTS))
    featurizer.save(out / "featurizer")
    write_json({"model": cfg.to_json()["model"], "spec": spec.to_json(), "dim": tower.out_dim,
                "batch_size": cfg.export_batch_size}, out / _ENCODER_CONFIG)


def _write_embeddings(ids: pl.Series, emb: np.ndarray, out: Path, kind: str) -> None:
    frame = pl.DataFrame({"id": ids.cast(pl.Utf8), "embedding": pl.Series(emb).arr.to_list()})
    frame.write_parquet(_mkparent(out / "embeddings" / EMBEDDING_FILES[kind]), compression="zstd")


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
