"""The two towers: one entity tower for pins and products, one query tower.

Entity tower (paper section 3.2)::

    per text field f:  e_f = HashEmbeddingBag(token ids of f)          [token_dim]
    text             = sum_f w_f * e_f                                  w: one learned weight per field
    x                = concat(text, legacy pin emb, has_pin, legacy product emb, has_product,
                              visual emb, has_visual)
    dense            = MLP(x)  (+ R(legacy of the anchor kind) when anchored)  [dim]
    entity           = L2( [ L2(dense) ; lexical(title ids) ] )          [dim + lexical_buckets]

The legacy slots are zeros with a 0 flag when an entity has no legacy embedding (the paper
concatenates PinSage and ItemSage the same way). Query tower: either the same n-gram machinery
(``NgramQueryTower``: hash bag over the query's token ids, MLP) or a pretrained transformer from a
local directory (``TransformerQueryTower``: CLS or mean pooling, then a linear head; the paper uses
multilingual DistilBERT this way), followed by the same ``[L2(dense) ; lexical(query ids)]``.

Compatibility: when the model trains the compat tasks (queries scored against the frozen legacy
embeddings), the query tower has a second output, ``compat = L2(compat_head(x))``, as wide as the
legacy embeddings. The n-gram tower's ``x`` is its hash bag, and the head an MLP of the main one's
shape (``compat_from="bag"``): the two outputs share the token table and nothing above it, so the main
tasks cannot bend the compat output's hidden layer (trained jointly, a shared hidden layer left compat
behind compat trained alone: README, *Ablations*, Table 6); with ``"body"`` it is the main MLP's last
hidden layer. The transformer's ``x`` is its pooled output. The main tasks and their Matryoshka prefixes
never touch the head. ``forward`` returns the main output only; ``forward_with_compat`` both.

Two additions to the paper's towers, both for small training sets (see ``anchor.py`` and
``lexical.py``): the lexical channel, shared by both towers, and anchoring, where ``R`` and the
transformer's head are identity-initialised residuals so the model starts as a pretrained
encoder's zero-shot retrieval.

Every module has an ``extra_repr`` so ``print(model)`` reads as a spec of the architecture.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omnisearchsage.errors import OmniError
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.hash_embedding import HashEmbeddingBag, bag_sizes
from omnisearchsage.model.lexical import LexicalChannel, bag_rows


def mlp(*dims: int) -> nn.Sequential:
    """Linear -> ReLU -> LayerNorm per hidden layer, then a final Linear (as the paper's code)."""
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU(), nn.LayerNorm(d_out)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class ResidualLinear(nn.Module):
    """``x + x @ delta``: the identity plus a learned correction that starts at zero.

    Weight decay on ``delta`` pulls the map back to the identity, i.e. towards the pretrained space
    it is applied to, which is the regulariser a model needs when it has few queries to learn from.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_features = dim
        self.delta = nn.Parameter(torch.zeros(dim, dim))

    def extra_repr(self) -> str:
        return f"dim={self.out_features}, init=identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x @ self.delta


def compat_head(cfg: ModelConfig, body_dim: int, compat_dim: int, residual: bool = False,
                hidden: tuple[int, ...] = ()) -> nn.Module | None:
    """The compat tasks' own output map from what the query tower gives it (None: ``compat_dim`` 0 or
    the head is off): the body, or the n-gram tower's bag with ``hidden`` layers of its own.

    With ``residual`` (the main head is an identity-initialised residual: an anchored transformer,
    whose legacy embeddings are that encoder's own space) it is one too where the widths allow, so the
    compat output starts as the encoder's zero-shot vector; otherwise an MLP with ``hidden`` and then
    ``compat_hidden`` layers."""
    if not (cfg.compat_head and compat_dim):
        return None
    if residual and body_dim == compat_dim and not (hidden or cfg.compat_hidden):
        return ResidualLinear(compat_dim)
    return mlp(body_dim, *hidden, *cfg.compat_hidden, compat_dim)


def compat_output(head: nn.Module | None, body: torch.Tensor) -> torch.Tensor | None:
    """``L2(head(body))``, the compat tasks' query vectors (None without a head); no lexical part, as the
    legacy embeddings have none."""
    return None if head is None else F.normalize(head(body), dim=-1)


def with_lexical(dense: torch.Tensor, lexical: torch.Tensor | None) -> torch.Tensor:
    """The tower output: ``L2([L2(dense) ; lexical])`` (``lexical`` is already ``beta * L2(...)``)."""
    dense = F.normalize(dense, dim=-1)
    if lexical is None:
        return dense
    return F.normalize(torch.cat([dense, lexical.to(dense.dtype)], dim=1), dim=-1)


class EntityTower(nn.Module):
    """Pins and products -> L2-normalised vectors, from token bags + dense features.

    ``forward(ids, offsets, dense)``: ``ids``/``offsets`` hold ``n * len(fields)`` bags in
    row-major order (entity 0's fields, then entity 1's, ...), ``dense`` float [n, dense_dim]
    (the legacy slots; width 0 when legacy embeddings are not used). With no text fields (the
    paper's "continuous features only" row) the MLP reads the dense features alone.

    ``anchor``: the ``(offset, dim)`` slot of the dense input that is added to the MLP's output
    through a :class:`ResidualLinear` (the MLP's last layer then starts at zero, so the tower starts
    as that legacy embedding); with ``entity_mlp`` off the tower is that residual alone. ``lexical``: the channel shared with the query tower, fed the ids of
    ``lexical_fields``.
    """

    def __init__(self, cfg: ModelConfig, num_ids: int, fields: Sequence[str], dense_dim: int,
                 anchor: tuple[int, int] | None = None, lexical: LexicalChannel | None = None) -> None:
        super().__init__()
        self.fields, self.dense_dim, self.anchor = tuple(fields), dense_dim, anchor
        self.bag, self.mlp = None, None
        if cfg.entity_mlp:
            if self.fields:
                self.bag = HashEmbeddingBag(num_ids, cfg.hash_rows, cfg.token_dim, cfg.hash_probes, cfg.hash_seed)
                self.field_weights = nn.Parameter(torch.ones(len(self.fields)))
                drop = dict(cfg.field_dropout or ())  # None (unresolved "auto"): none
                # Not saved with the weights: a training-time knob, read from the config.
                self.register_buffer("field_drop", torch.tensor([float(drop.get(f, 0.0)) for f in self.fields]),
                                     persistent=False)
                self.presence_dropout = cfg.presence_dropout
                # Per entity kind (index into the trainer's kinds): distinct field-presence patterns
                # [patterns, fields] and their cumulative catalogue shares; set by set_presence_patterns.
                self.presence: list[tuple[torch.Tensor, torch.Tensor]] = []
            self.field_presence = bool(self.fields) and cfg.field_presence
            text_dim = cfg.token_dim + len(self.fields) * self.field_presence if self.fields else 0
            self.mlp = mlp(text_dim + dense_dim, *cfg.entity_hidden, cfg.dim)
        if anchor is not None:
            if anchor[1] != cfg.dim:
                raise OmniError(f"anchored legacy embeddings have {anchor[1]} dims; the model has {cfg.dim}")
            self.residual = ResidualLinear(cfg.dim)
            if self.mlp is not None:  # the MLP starts at zero: the tower starts as the legacy embedding
                nn.init.zeros_(self.mlp[-1].weight)
                nn.init.zeros_(self.mlp[-1].bias)
        self.lexical = lexical
        self.lexical_fields = torch.tensor([i for i, f in enumerate(self.fields) if f in cfg.lexical_fields],
                                           dtype=torch.long)
        self.out_dim = cfg.dim + (lexical.buckets if lexical is not None else 0)

    def set_presence_patterns(self, per_kind: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """The catalogue's field presence for ``presence_dropout``: per entity kind (in the order of the
        ``kinds`` that :meth:`forward` receives), distinct presence patterns (bool [patterns, fields]) and
        how many catalogue entities have each. Training-only state: never saved with the weights."""
        self.presence = [(torch.as_tensor(p, dtype=torch.float32),
                          torch.as_tensor(np.cumsum(c) / np.sum(c), dtype=torch.float32)) for p, c in per_kind]

    def _presence_keep(self, kinds: torch.Tensor, n: int) -> torch.Tensor:
        """[n, fields] 1/0: a ``presence_dropout`` share of rows keep only the fields of a catalogue
        entity of their kind, drawn by the catalogue's pattern shares; the other rows keep every field."""
        keep = torch.ones(n, len(self.fields), device=kinds.device)
        chosen = torch.rand(n, device=kinds.device) < self.presence_dropout
        draw = torch.rand(n, device=kinds.device)
        for k, (patterns, cum) in enumerate(self.presence):  # tiny tensors: moved to the batch's device
            rows = chosen & (kinds == k)
            idx = torch.searchsorted(cum.to(kinds.device), draw[rows], right=True).clamp(max=len(cum) - 1)
            keep[rows] = patterns.to(kinds.device)[idx]
        return keep

    def extra_repr(self) -> str:
        return (f"fields={list(self.fields)}, dense_dim={self.dense_dim}, anchor={self.anchor}, "
                f"lexical_fields={[self.fields[i] for i in self.lexical_fields]}, output=L2 ({self.out_dim})")

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, dense: torch.Tensor,
                kinds: torch.Tensor | None = None) -> torch.Tensor:
        """``kinds``: each row's entity kind (an index into the presence patterns), given by the trainer
        so ``presence_dropout`` draws a pattern of the row's own kind; serving never passes it."""
        n = dense.shape[0]
        out = None
        if self.mlp is not None:
            parts = [dense]
            if self.bag is not None:
                per_field = self.bag(ids, offsets).view(n, len(self.fields), self.bag.dim)
                present = (bag_sizes(offsets, ids.numel()) > 0).view(n, len(self.fields)).to(per_field.dtype)
                if self.training and bool(self.field_drop.any()):  # an emptied bag is a zero vector
                    present = present * (torch.rand(n, len(self.fields), device=per_field.device) >= self.field_drop)
                if self.training and self.presence_dropout and self.presence and kinds is not None:
                    present = present * self._presence_keep(kinds, n)
                per_field = per_field * present.unsqueeze(-1)
                text = (per_field * self.field_weights.unsqueeze(-1)).sum(1)
                parts = [text, present, dense.to(text.dtype)] if self.field_presence else [text, dense.to(text.dtype)]
            out = self.mlp(torch.cat(parts, dim=1))
        if self.anchor is not None:
            start, dim = self.anchor
            anchored = self.residual(dense[:, start : start + dim])
            out = anchored if out is None else out + anchored.to(out.dtype)
        lexical = None
        if self.lexical is not None and len(self.lexical_fields):
            bag = bag_rows(offsets, ids.numel())
            wanted = torch.isin(bag % len(self.fields), self.lexical_fields.to(bag.device))
            lexical = self.lexical(ids[wanted], bag[wanted] // len(self.fields), n)
        elif self.lexical is not None:  # no lexical field is read: the channel is all zeros
            lexical = out.new_zeros(n, self.lexical.buckets)
        return with_lexical(out, lexical)


class NgramQueryTower(nn.Module):
    """Query token ids (the features' tokenizers) -> hash bag -> MLP -> L2. No pretrained weights.

    ``forward(ids, offsets)``: one bag per query, as :class:`HashEmbeddingBag`. With ``compat_dim``
    the compat output reads the bag through an MLP of its own (``compat_from="bag"``, the default: the
    outputs share the token table), or the MLP's last hidden layer (``"body"``, both outputs share it).
    """

    kind = "ngram"

    def __init__(self, cfg: ModelConfig, num_ids: int, lexical: LexicalChannel | None = None,
                 compat_dim: int = 0) -> None:
        super().__init__()
        self.bag = HashEmbeddingBag(num_ids, cfg.hash_rows, cfg.token_dim, cfg.hash_probes, cfg.hash_seed + 1)
        self.mlp = mlp(cfg.token_dim, *cfg.query_hidden, cfg.dim)
        if cfg.compat_from not in ("bag", "body"):  # an export's config is not validated: say it here
            raise OmniError(f"compat_from {cfg.compat_from!r}: choose bag or body")
        self.compat_from_bag = cfg.compat_from == "bag"
        if self.compat_from_bag:  # its own MLP of the main one's shape, on the bag
            self.compat = compat_head(cfg, cfg.token_dim, compat_dim, hidden=cfg.query_hidden)
        else:
            self.compat = compat_head(cfg, cfg.query_hidden[-1] if cfg.query_hidden else cfg.token_dim, compat_dim)
        self.compat_dim = compat_dim if self.compat is not None else 0
        self.lexical = lexical
        self.out_dim = cfg.dim + (lexical.buckets if lexical is not None else 0)

    def extra_repr(self) -> str:
        return f"output=L2 ({self.out_dim}), compat=L2 ({self.compat_dim or 'none'})"

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self._main(ids, offsets, self.mlp[:-1](self.bag(ids, offsets)))

    def forward_with_compat(self, ids: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The main output and the compat output (None without a compat head), from one body pass."""
        bag = self.bag(ids, offsets)
        body = self.mlp[:-1](bag)
        return self._main(ids, offsets, body), compat_output(self.compat, bag if self.compat_from_bag else body)

    def _main(self, ids: torch.Tensor, offsets: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        lexical = None if self.lexical is None else self.lexical(ids, bag_rows(offsets, ids.numel()), len(offsets))
        return with_lexical(self.mlp[-1](body), lexical)


class TransformerQueryTower(nn.Module):
    """A Hugging Face encoder from a local directory -> CLS or mean pooling -> head -> L2.

    ``forward(input_ids, attention_mask[, ids, offsets])`` takes what :meth:`tokenize` returns (plus
    the features' token ids for the lexical channel). The tokenizer is loaded from the same
    directory and is not a module: it is saved beside the weights by the export. The head is a
    fresh Linear, or with ``query_head="residual"`` the identity plus a learned correction.
    """

    kind = "transformer"

    def __init__(self, cfg: ModelConfig, path: str | Path, lexical: LexicalChannel | None = None,
                 compat_dim: int = 0) -> None:
        # Imported here: transformers is heavy and the n-gram tower does not need it.
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.source, self.pooling, self.max_tokens = str(path), cfg.pooling, cfg.max_query_tokens
        self.transformer = AutoModel.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        hidden = self.transformer.config.hidden_size
        if cfg.query_head == "residual":
            if hidden != cfg.dim:
                raise OmniError(f"{path}: query_head residual needs dim = the encoder's width {hidden}, not {cfg.dim}")
            self.head: nn.Module = ResidualLinear(hidden)
        else:
            self.head = nn.Linear(hidden, cfg.dim)
        self.compat = compat_head(cfg, hidden, compat_dim, residual=cfg.query_head == "residual")
        self.compat_dim = compat_dim if self.compat is not None else 0
        self.lexical = lexical
        self.out_dim = cfg.dim + (lexical.buckets if lexical is not None else 0)

    def extra_repr(self) -> str:
        return (f"source={self.source!r}, pooling={self.pooling}, max_tokens={self.max_tokens}, "
                f"output=L2 ({self.out_dim}), compat=L2 ({self.compat_dim or 'none'})")

    def tokenize(self, texts: Sequence[str], max_tokens: int | None = None) -> dict[str, torch.Tensor]:
        """Padded ``input_ids`` and ``attention_mask`` for already-normalised texts (at most
        ``max_tokens`` each; default: the query length)."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens or self.max_tokens,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.inference_mode()
    def text_vectors(self, texts: Sequence[str], max_tokens: int, batch_size: int) -> np.ndarray:
        """float32 [n, hidden]: the body's L2-normalised pooled output of entity texts, what an entity
        tower with ``ModelConfig.entity_text`` reads in its anchor slot. Texts are batched by length
        (padding is most of the cost of short titles)."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.transformer.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            pooled = self.pool(**self.tokenize([texts[i] for i in rows], max_tokens))
            out[rows] = F.normalize(pooled.float(), dim=-1).numpy()
        return out

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The body's pooled output, before the head: float [n, hidden]."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._pooled(hidden, attention_mask)

    def _pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    @property
    def layers(self) -> nn.ModuleList | None:
        """The body's stacked layers when it is a BERT-style encoder (embeddings + encoder.layer), else
        None: only such a body can be run in two parts (:meth:`lower_layers`, :meth:`pool_upper`)."""
        encoder = getattr(self.transformer, "encoder", None)
        layers = getattr(encoder, "layer", None)
        return layers if hasattr(self.transformer, "embeddings") and isinstance(layers, nn.ModuleList) else None

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.transformer.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    def lower_layers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: int) -> torch.Tensor:
        """Hidden states after the embeddings and the first ``layers`` layers: float [n, tokens, hidden]."""
        return self._run_layers(self.transformer.embeddings(input_ids=input_ids), attention_mask, 0, layers)

    def pool_upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """:meth:`pool` from the hidden states :meth:`lower_layers` returned for ``start`` layers."""
        return self._pooled(self._run_layers(hidden, attention_mask, start, None), attention_mask)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                ids: torch.Tensor | None = None, offsets: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None) -> torch.Tensor:
        """From tokens, or from ``pooled`` outputs computed once by a frozen body (training)."""
        pooled = self._pooled_input(input_ids, attention_mask, pooled)
        return self._main(ids, offsets, pooled)

    def forward_with_compat(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                            ids: torch.Tensor | None = None, offsets: torch.Tensor | None = None,
                            pooled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The main output and the compat output (None without a compat head), from one body pass."""
        pooled = self._pooled_input(input_ids, attention_mask, pooled)
        return self._main(ids, offsets, pooled), compat_output(self.compat, pooled)

    def _pooled_input(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
                      pooled: torch.Tensor | None) -> torch.Tensor:
        if pooled is not None:
            return pooled
        if input_ids is None or attention_mask is None:
            raise OmniError("pass input_ids and attention_mask (or pooled outputs)")
        return self.pool(input_ids, attention_mask)

    def _main(self, ids: torch.Tensor | None, offsets: torch.Tensor | None, pooled: torch.Tensor) -> torch.Tensor:
        lexical = None
        if self.lexical is not None:
            if ids is None or offsets is None:
                raise OmniError("this query tower has a lexical channel: pass the features' token ids too")
            lexical = self.lexical(ids, bag_rows(offsets, ids.numel()), len(offsets))
        return with_lexical(self.head(pooled), lexical)


QueryTower = NgramQueryTower | TransformerQueryTower


def build_query_tower(cfg: ModelConfig, num_ids: int, lexical: LexicalChannel | None = None,
                      compat_dim: int = 0) -> QueryTower:
    """The tower ``cfg.query_encoder`` names: "ngram", or a transformer directory ("auto" must have
    been resolved by ``anchor.resolve_query_encoder``); ``compat_dim``: the compat head's width (0: none)."""
    if cfg.query_encoder == "ngram":
        return NgramQueryTower(cfg, num_ids, lexical, compat_dim)
    if not (Path(cfg.query_encoder) / "config.json").is_file():
        raise OmniError(f"{cfg.query_encoder}: not a Hugging Face model directory (no config.json); "
                        "give --query-encoder auto, ngram or a local model directory")
    return TransformerQueryTower(cfg, cfg.query_encoder, lexical, compat_dim)


@dataclass
class ModelSpec:
    """What the data decides about the model: the token id space, the text fields the entity tower
    reads, where each kind's legacy embedding sits in its dense input ``{kind: (offset, dim)}`` and
    the visual embedding under ``"visual"`` (each slot is followed by a presence flag), and the id
    ranges the lexical channel reads (the unigram vocabulary and its OOV buckets), and the width of the
    query tower's compat head (the widest legacy embedding a compat task scores; 0: no head, as in
    exports written before it, whose compat tasks scored the main output's prefix). Saved in the
    run's config.json and the export."""

    num_ids: int
    fields: tuple[str, ...]
    dense_layout: dict[str, tuple[int, int]]
    lexical_ranges: tuple[tuple[int, int], ...] = ()
    compat_dim: int = 0

    @property
    def dense_dim(self) -> int:
        return sum(dim + 1 for _, dim in self.dense_layout.values())

    def anchor_slot(self, cfg: ModelConfig) -> tuple[int, int] | None:
        """The dense slot of ``cfg.anchor_kind``'s legacy embedding, or None (no anchoring)."""
        if cfg.anchor_kind is None:
            return None
        if cfg.anchor_kind not in self.dense_layout:
            raise OmniError(f"anchor_kind {cfg.anchor_kind!r} has no legacy embeddings in this workspace")
        return self.dense_layout[cfg.anchor_kind]

    def to_json(self) -> dict[str, Any]:
        return {"num_ids": self.num_ids, "fields": list(self.fields),
                "dense_layout": {k: list(v) for k, v in self.dense_layout.items()},
                "lexical_ranges": [list(r) for r in self.lexical_ranges], "compat_dim": self.compat_dim}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(d["num_ids"], tuple(d["fields"]), {k: (v[0], v[1]) for k, v in d["dense_layout"].items()},
                   tuple((a, b) for a, b in d.get("lexical_ranges", [])), d.get("compat_dim", 0))


def lexical_channel(cfg: ModelConfig, spec: ModelSpec, idf: torch.Tensor | None = None) -> LexicalChannel | None:
    """The shared lexical channel ``cfg`` asks for (None with 0 buckets)."""
    if not cfg.lexical_buckets:  # 0, or None (= 0 unless anchoring resolved it)
        return None
    return LexicalChannel(spec.num_ids, cfg.lexical_buckets, spec.lexical_ranges, cfg.lexical_beta,
                          cfg.hash_seed + 2, idf)


def entity_tower(cfg: ModelConfig, spec: ModelSpec, lexical: LexicalChannel | None) -> EntityTower:
    return EntityTower(cfg, spec.num_ids, spec.fields, spec.dense_dim, spec.anchor_slot(cfg), lexical)


class TwoTowerModel(nn.Module):
    """The trained model: a query tower and an entity tower sharing one lexical channel. (The compat
    tasks' candidate towers are the frozen legacy embeddings themselves: data, not modules; their query
    side is the query tower's compat output when ``spec.compat_dim``.)

    ``idf``: initial lexical token weights (the export loads trained ones instead)."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec, idf: torch.Tensor | None = None) -> None:
        super().__init__()
        lexical = lexical_channel(cfg, spec, idf)
        self.query = build_query_tower(cfg, spec.num_ids, lexical, spec.compat_dim)
        self.entity = entity_tower(cfg, spec, lexical)

    @property
    def out_dim(self) -> int:
        return self.entity.out_dim
