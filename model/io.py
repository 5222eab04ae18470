"""The export format: write and read an exported model without the trainer.

An export folder (layout: :class:`omnisearchsage.contract.ExportLayout`) holds the two encoders as
safetensors + JSON configs beside their featurizer (and, for a transformer tower, its Hugging Face
folder), the entity embeddings as Parquet, and a manifest. Serving and evaluation need only
:func:`load_query_encoder`, :func:`load_entity_encoder` and :func:`load_embeddings`; the trainer's
export writes with :func:`save_query_tower`, :func:`save_entity_tower` and :func:`write_embeddings`.

Normalisation is owned here, at the one boundary where raw query text enters the model:
:meth:`QueryEncoder.encode` normalises once and hands the normalised text to the featurizer and
to the transformer's tokenizer; callers that already hold normalised text (the service's cache
keys) use :meth:`QueryEncoder.encode_normalized`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from omnisearchsage.atomic import write_json
from omnisearchsage.contract import LIST_FIELDS, ExportLayout
from omnisearchsage.errors import OmniError
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize
from omnisearchsage.model.config import ModelConfig, config_from_json
from omnisearchsage.model.inputs import VISUAL, Catalogue, TokenBags, entity_inputs, with_presence
from omnisearchsage.model.towers import (
    EntityTower,
    ModelSpec,
    NgramQueryTower,
    QueryTower,
    TransformerQueryTower,
    entity_tower,
    lexical_channel,
)
from omnisearchsage.text_encoders import ENCODED_FIELDS, encoder_text

#: Fields that hold several texts per entity (board titles, engaged queries); the others one text.
_FIELD_TYPES = {f: pl.List(pl.Utf8) for f in LIST_FIELDS}
_L = ExportLayout


# ---------------------------------------------------------------------------- loaded encoders
class QueryEncoder:
    """Query text -> float32 [n, dim] L2-normalised embeddings (normalises the text itself).

    :meth:`encode_compat` gives the vectors the compat tasks trained against the frozen legacy
    embeddings (their first legacy-width dims score a legacy index): the tower's compat head, or for a
    model without one (exported before it, or trained with ``compat_head`` off) the main output.
    """

    def __init__(self, tower: QueryTower, featurizer: Featurizer, version: str, batch_size: int) -> None:
        self.tower, self.featurizer, self.version, self.batch_size = tower.eval(), featurizer, version, batch_size
        self.dim = tower.out_dim
        #: Width of :meth:`encode_compat`'s vectors.
        self.compat_dim = tower.compat_dim or tower.out_dim

    def __repr__(self) -> str:
        return f"QueryEncoder(version={self.version!r}, dim={self.dim}, tower={type(self.tower).__name__})"

    #: The normalisation every query goes through before it is tokenised (NFKC, case-fold, spaces).
    normalize = staticmethod(normalize)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim] embeddings of raw query texts (normalised here, once)."""
        return self.encode_normalized([normalize(t) for t in texts])

    def encode_compat(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), compat_dim] compat vectors of raw query texts (L2-normalised; a legacy
        index of width w is scored with the first w dims, re-normalised)."""
        return self.encode_normalized([normalize(t) for t in texts], compat=True)

    @torch.inference_mode()
    def encode_normalized(self, texts: Sequence[str], compat: bool = False) -> np.ndarray:
        """:meth:`encode` (or with ``compat`` :meth:`encode_compat`) for texts already passed through
        :meth:`normalize`."""
        head = compat and self.tower.compat is not None
        out = np.empty((len(texts), self.compat_dim if compat else self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            # The n-gram tower's and the lexical channel's input.
            ids, offsets = self.featurizer.encode(chunk, normalized=True)
            inputs = {"ids": torch.from_numpy(ids), "offsets": torch.from_numpy(offsets)}
            if isinstance(self.tower, TransformerQueryTower):
                inputs |= self.tower.tokenize(chunk)
            emb = self.tower.forward_with_compat(**inputs)[1] if head else self.tower(**inputs)
            out[start : start + len(chunk)] = emb.float().numpy()
        return out


class EntityEncoder:
    """Pin or product text fields (+ legacy and visual embeddings) -> float32 [n, dim] L2-normalised
    embeddings."""

    def __init__(self, tower: EntityTower, featurizer: Featurizer, spec: ModelSpec, version: str,
                 batch_size: int, model_cfg: ModelConfig, text_body: TransformerQueryTower | None = None) -> None:
        self.tower, self.featurizer, self.spec = tower.eval(), featurizer, spec
        self.version, self.batch_size, self.model_cfg = version, batch_size, model_cfg
        #: With ``model_cfg.entity_text``: the fine-tuned body (the query tower's) that turns an entity's
        #: text into the vector its anchor slot reads.
        self.text_body = text_body
        if model_cfg.entity_text and text_body is None:
            raise OmniError("this entity tower reads its text through the query tower's body: pass text_body")
        self.dim = tower.out_dim

    def __repr__(self) -> str:
        return f"EntityEncoder(version={self.version!r}, dim={self.dim}, fields={list(self.spec.fields)})"

    def encode(self, kind: str, fields: Mapping[str, Sequence[Any]], legacy: np.ndarray | None = None,
               visual: np.ndarray | None = None) -> np.ndarray:
        """``fields``: text per field name (``str``, or a list of strings for board_titles and
        engaged_queries; missing fields are empty); ``legacy``: float32 [n, dim] with NaN rows
        (or None) where an entity has none; ``visual``: the same for the visual embeddings (from the
        image model the run was trained with: the export manifest's ``visual_model``). A model whose
        entity tower reads text through the fine-tuned body (``ModelConfig.entity_text``) computes that
        kind's slot from title and description itself and ignores ``legacy``."""
        sizes = [len(v) for v in (*fields.values(), legacy, visual) if v is not None]
        n = sizes[0] if sizes else 0
        if any(size != n for size in sizes):
            raise OmniError(f"encode: fields, legacy and visual hold different numbers of entities {sizes}")
        columns = [self.featurizer.encode_field(pl.Series(f, fields[f], dtype=_FIELD_TYPES.get(f, pl.Utf8))).to_arrow()
                   if f in fields else None for f in self.spec.fields]
        cat = Catalogue(kind, pl.Series([str(i) for i in range(n)]), TokenBags.from_lists(columns, n))
        if self.model_cfg.entity_text and kind == self.model_cfg.anchor_kind:
            present = {f: pl.Series(f, fields[f], dtype=pl.Utf8) for f in ENCODED_FIELDS if f in fields}
            frame = pl.DataFrame(present) if present else pl.DataFrame({"_": range(n)})
            texts = frame.select(encoder_text(frame.columns).alias("t"))["t"].to_list()
            cat.text_vectors = self.text_body.text_vectors(texts, self.model_cfg.entity_max_tokens, self.batch_size)
            cat.legacy, cat.has_legacy = cat.text_vectors, np.ones(n, dtype=bool)
        elif legacy is not None:
            cat.legacy, cat.has_legacy = with_presence(legacy)
        if visual is not None:
            cat.visual, cat.has_visual = with_presence(visual)
        return self.encode_catalogue(cat)

    @torch.inference_mode()
    def encode_catalogue(self, cat: Catalogue, rows: np.ndarray | None = None) -> np.ndarray:
        """Embeddings of the ``rows`` of ``cat`` (every row if None; the features tables' token ids)."""
        layout = self.spec.dense_layout
        if cat.kind in layout and cat.legacy is not None and cat.legacy_dim != layout[cat.kind][1]:
            raise OmniError(f"{cat.kind} legacy embeddings have {cat.legacy_dim} dims; the model was trained "
                            f"with {layout[cat.kind][1]}")
        if VISUAL in layout and cat.visual is not None and cat.visual_dim != layout[VISUAL][1]:
            raise OmniError(f"{cat.kind} visual embeddings have {cat.visual_dim} dims; the model was trained "
                            f"with {layout[VISUAL][1]}")
        rows = np.arange(len(cat)) if rows is None else rows
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.tower(
                **entity_inputs({cat.kind: cat}, layout, [(cat.kind, chunk)])).float().numpy()
        return out


# ---------------------------------------------------------------------------- loaders
def load_query_encoder(export_dir: str | Path) -> QueryEncoder:
    """The exported query tower, ready to ``encode(texts)``."""
    layout = ExportLayout(export_dir)
    return load_query_encoder_dir(layout.query_encoder, layout.read_manifest()["model_version"])


def load_query_encoder_dir(qdir: Path, version: str) -> QueryEncoder:
    """The query encoder saved in ``qdir`` by :func:`save_query_tower`, labelled ``version``."""
    cfg = json.loads((qdir / _L.ENCODER_CONFIG).read_text(encoding="utf-8"))
    model_cfg = config_from_json(ModelConfig, cfg["model"])
    spec = ModelSpec.from_json(cfg["spec"])  # an export from before the compat head: compat_dim 0, no head
    lexical = lexical_channel(model_cfg, spec)
    weights = load_file(str(qdir / _L.WEIGHTS))
    if cfg["kind"] == "transformer":
        # The body comes from hf/ (save_pretrained); model.safetensors holds the heads and the lexical channel.
        tower: QueryTower = TransformerQueryTower(model_cfg, qdir / _L.HF, lexical, spec.compat_dim)
        weights |= {f"transformer.{k}": v for k, v in tower.transformer.state_dict().items()}
    else:
        tower = NgramQueryTower(model_cfg, spec.num_ids, lexical, spec.compat_dim)
    try:
        tower.load_state_dict(weights)
    except RuntimeError as e:  # torch's message lists every key; one line names the file
        missing = sorted(set(tower.state_dict()) ^ set(weights))[:3]
        raise OmniError(f"{qdir / _L.WEIGHTS}: weights do not match {qdir / _L.ENCODER_CONFIG} (differing: "
                        f"{missing or 'tensor shapes'}); re-export the run with this version") from e
    return QueryEncoder(tower, Featurizer.load(qdir / _L.FEATURIZER), version, cfg["batch_size"])


def load_entity_encoder(export_dir: str | Path) -> EntityEncoder:
    """The exported entity tower, ready to ``encode(kind, fields, legacy)``."""
    layout = ExportLayout(export_dir)
    manifest, edir = layout.read_manifest(), layout.entity_encoder
    cfg = json.loads((edir / _L.ENCODER_CONFIG).read_text(encoding="utf-8"))
    spec, model_cfg = ModelSpec.from_json(cfg["spec"]), config_from_json(ModelConfig, cfg["model"])
    tower = entity_tower(model_cfg, spec, lexical_channel(model_cfg, spec))
    tower.load_state_dict(load_file(str(edir / _L.WEIGHTS)))
    body = None
    if model_cfg.entity_text:  # the fine-tuned body is the query tower's, saved once beside it
        body = load_query_encoder_dir(layout.query_encoder, manifest["model_version"]).tower
    return EntityEncoder(tower, Featurizer.load(edir / _L.FEATURIZER), spec, manifest["model_version"],
                         cfg["batch_size"], model_cfg, body)


def load_embeddings(export_dir: str | Path, entity_type: str) -> tuple[list[str], np.ndarray]:
    """Ids and float32 [n, dim] embeddings of one entity type ("pin", "product" or "query")."""
    layout = ExportLayout(export_dir)
    path = layout.embeddings(entity_type)
    if not path.exists():
        raise OmniError(f"{path}: missing; the run has no {entity_type} embeddings (run `omni export`)")
    frame = pl.read_parquet(path) if path.is_file() else _read_parts(path)
    matrix = frame.get_column("embedding").list.to_array(layout.read_manifest()["dim"]).to_numpy()
    return frame.get_column("id").to_list(), np.ascontiguousarray(matrix, dtype=np.float32)


def _read_parts(folder: Path) -> pl.DataFrame:
    """The shards ``omni embed`` wrote (``part-I-of-N.parquet``), in shard order; all N must be there."""
    parts = sorted(folder.glob("part-*-of-*.parquet"))
    counts = {p.stem.rsplit("-", 1)[1] for p in parts}
    if not parts or len(counts) != 1 or len(parts) != int(counts.pop()):
        raise OmniError(f"{folder}: {len(parts)} embedding shards, not a complete part-I-of-N set; "
                        "finish or rerun `omni embed` for the missing shards")
    return pl.concat([pl.read_parquet(p) for p in parts])


# ---------------------------------------------------------------------------- writers
def save_query_tower(tower: QueryTower, model_cfg: dict[str, Any], spec: ModelSpec, featurizer: Featurizer,
                     batch_size: int, out: Path) -> str:
    """Write the query encoder to ``out`` (``model_cfg``: the ModelConfig as JSON); returns a short hash
    of its weights (part of the model version)."""
    out.mkdir(parents=True)
    model_cfg = dict(model_cfg)
    weights = {k: v.contiguous() for k, v in tower.state_dict().items()}
    if isinstance(tower, TransformerQueryTower):
        tower.transformer.save_pretrained(out / _L.HF)
        tower.tokenizer.save_pretrained(out / _L.HF)
        model_cfg["query_encoder"] = _L.HF
        weights = {k: v for k, v in weights.items() if not k.startswith("transformer.")}
        kind = "transformer"
    else:
        kind = "ngram"
    save_file(weights, str(out / _L.WEIGHTS))
    featurizer.save(out / _L.FEATURIZER)
    write_json({"kind": kind, "model": model_cfg, "spec": spec.to_json(), "dim": tower.out_dim,
                "batch_size": batch_size}, out / _L.ENCODER_CONFIG)
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def save_entity_tower(tower: EntityTower, model_cfg: dict[str, Any], spec: ModelSpec, featurizer: Featurizer,
                      batch_size: int, out: Path) -> None:
    """Write the entity encoder to ``out``."""
    out.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(out / _L.WEIGHTS))
    featurizer.save(out / _L.FEATURIZER)
    write_json({"model": model_cfg, "spec": spec.to_json(), "dim": tower.out_dim, "batch_size": batch_size},
               out / _L.ENCODER_CONFIG)


def write_embeddings(layout: ExportLayout, entity_type: str, ids: pl.Series, emb: np.ndarray,
                     path: Path | None = None) -> None:
    """One entity type's embeddings, ``id`` + ``embedding`` (list[float32]), into the export folder
    (or into ``path``, one shard of them)."""
    path = path or layout.embeddings(entity_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame({"id": ids.cast(pl.Utf8), "embedding": pl.Series(emb).arr.to_list()})
    frame.write_parquet(path, compression="zstd")
