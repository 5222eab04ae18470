"""The two towers: one entity tower for pins and products, one query tower.

Entity tower (paper section 3.2)::

    per text field f:  e_f = HashEmbeddingBag(token ids of f)          [token_dim]
    text             = sum_f w_f * e_f                                  w: one learned weight per field
    x                = concat(text, legacy pin emb, has_pin, legacy product emb, has_product)
    entity           = L2( MLP(x) )                                      [dim]

The legacy slots are zeros with a 0 flag when an entity has no legacy embedding (the paper
concatenates PinSage and ItemSage the same way). Query tower: either the same n-gram machinery
(``NgramQueryTower``: hash bag over the query's token ids, MLP, L2) or a pretrained transformer
from a local directory (``TransformerQueryTower``: CLS or mean pooling, a linear map, L2; the paper
uses multilingual DistilBERT this way).

Every module has an ``extra_repr`` so ``print(model)`` reads as a spec of the architecture.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from omnisearchsage.errors import OmniError
from omnisearchsage.trainer.config import ModelConfig
from omnisearchsage.trainer.hash_embedding import HashEmbeddingBag


def mlp(*dims: int) -> nn.Sequential:
    """Linear -> ReLU -> LayerNorm per hidden layer, then a final Linear (as the paper's code)."""
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU(), nn.LayerNorm(d_out)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class EntityTower(nn.Module):
    """Pins and products -> L2-normalised ``dim`` vectors, from token bags + dense features.

    ``forward(ids, offsets, dense)``: ``ids``/``offsets`` hold ``n * len(fields)`` bags in
    row-major order (entity 0's fields, then entity 1's, ...), ``dense`` float [n, dense_dim]
    (the legacy slots; width 0 when legacy embeddings are not used).
    """

    def __init__(self, cfg: ModelConfig, num_ids: int, fields: Sequence[str], dense_dim: int) -> None:
        super().__init__()
        self.fields, self.dense_dim = tuple(fields), dense_dim
        self.bag = HashEmbeddingBag(num_ids, cfg.hash_rows, cfg.token_dim, cfg.hash_probes, cfg.hash_seed)
        self.field_weights = nn.Parameter(torch.ones(len(self.fields)))
        self.mlp = mlp(cfg.token_dim + dense_dim, *cfg.entity_hidden, cfg.dim)

    def extra_repr(self) -> str:
        return f"fields={list(self.fields)}, dense_dim={self.dense_dim}, output=L2"

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        per_field = self.bag(ids, offsets).view(-1, len(self.fields), self.bag.dim)
        text = (per_field * self.field_weights.unsqueeze(-1)).sum(1)
        return F.normalize(self.mlp(torch.cat([text, dense.to(text.dtype)], dim=1)), dim=-1)


class NgramQueryTower(nn.Module):
    """Query token ids (the features' tokenizers) -> hash bag -> MLP -> L2. No pretrained weights.

    ``forward(ids, offsets)``: one bag per query, as :class:`HashEmbeddingBag`.
    """

    kind = "ngram"

    def __init__(self, cfg: ModelConfig, num_ids: int) -> None:
        super().__init__()
        self.bag = HashEmbeddingBag(num_ids, cfg.hash_rows, cfg.token_dim, cfg.hash_probes, cfg.hash_seed + 1)
        self.mlp = mlp(cfg.token_dim, *cfg.query_hidden, cfg.dim)

    def extra_repr(self) -> str:
        return "output=L2"

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.bag(ids, offsets)), dim=-1)


class TransformerQueryTower(nn.Module):
    """A Hugging Face encoder from a local directory -> CLS or mean pooling -> Linear -> L2.

    ``forward(input_ids, attention_mask)`` takes what :meth:`tokenize` returns. The tokenizer is
    loaded from the same directory and is not a module: it is saved beside the weights by the export.
    """

    kind = "transformer"

    def __init__(self, cfg: ModelConfig, path: str | Path) -> None:
        # Imported here: transformers is heavy and the n-gram tower does not need it.
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.source, self.pooling, self.max_tokens = str(path), cfg.pooling, cfg.max_query_tokens
        self.transformer = AutoModel.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.head = nn.Linear(self.transformer.config.hidden_size, cfg.dim)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, pooling={self.pooling}, max_tokens={self.max_tokens}, output=L2"

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded ``input_ids`` and ``attention_mask`` for already-normalised texts."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(self.head(pooled), dim=-1)


QueryTower = NgramQueryTower | TransformerQueryTower


def build_query_tower(cfg: ModelConfig, num_ids: int) -> QueryTower:
    """The tower ``cfg.query_encoder`` names: "ngram", or a transformer directory."""
    if cfg.query_encoder == "ngram":
        return NgramQueryTower(cfg, num_ids)
    if not (Path(cfg.query_encoder) / "config.json").is_file():
        raise OmniError(f"{cfg.query_encoder}: not a Hugging Face model directory (no config.json); "
                        "give --query-encoder ngram or a local model directory")
    return TransformerQueryTower(cfg, cfg.query_encoder)


@dataclass
class ModelSpec:
    """What the data decides about the model: the token id space, the text fields the entity tower
    reads, and where each kind's legacy embedding sits in its dense input ``{kind: (offset, dim)}``
    (each slot is followed by a presence flag). Saved in the run's config.json and the export."""

    num_ids: int
    fields: tuple[str, ...]
    dense_layout: dict[str, tuple[int, int]]

    @property
    def dense_dim(self) -> int:
        return sum(dim + 1 for _, dim in self.dense_layout.values())

    def to_json(self) -> dict[str, Any]:
        return {"num_ids": self.num_ids, "fields": list(self.fields),
                "dense_layout": {k: list(v) for k, v in self.dense_layout.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(d["num_ids"], tuple(d["fields"]), {k: (v[0], v[1]) for k, v in d["dense_layout"].items()})


class TwoTowerModel(nn.Module):
    """The trained model: a query tower and an entity tower. (The compat tasks' candidate towers
    are the frozen legacy embeddings themselves: data, not modules.)"""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec) -> None:
        super().__init__()
        self.query = build_query_tower(cfg, spec.num_ids)
        self.entity = EntityTower(cfg, spec.num_ids, spec.fields, spec.dense_dim)
