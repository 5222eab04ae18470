"""The exported query encoder as an ONNX graph, and an onnxruntime runner that serves it.

``export_query_onnx(export_dir)`` writes ``query_encoder/query_encoder.onnx`` inside an
``omni export`` folder, beside the files the graph's inputs are made with
(``featurizer/`` for the n-gram tower and the lexical channel, ``hf/`` for a transformer's
tokenizer), so the folder stays the one self-contained artefact::

    export/query_encoder/query_encoder.onnx     inputs → "embedding" float32 [n, dim] (L2-normalised)
                                                       (+ "compat" [n, compat_dim] with a compat head)
                         featurizer/            text → ids, offsets
                         hf/                    text → input_ids, attention_mask (transformer tower)

Graph inputs (int64; only those the tower reads are present):

* ``ids`` [total] and ``offsets`` [n]: every query's feature token ids back to back and
  where each query starts (``nn.EmbeddingBag`` layout; :meth:`Featurizer.encode`'s output);
* ``input_ids`` and ``attention_mask`` [n, tokens]: the tokenizer's padded output.

The torch towers pool bags with ``torch.unique`` + ``embedding_bag`` and filter ids with
boolean masks, which ONNX exporters translate poorly or not at all. The wrappers below
compute the same function with plain ops: each id's bag comes from a cumulative sum over
the offsets, token vectors are built per id and summed per bag by a one-hot matrix
product, the lexical channel's few values are scatter-added (ScatterElements, opset 16+),
and ids it ignores are weighted 0 rather than removed. They reuse the tower's own
modules and weights, so nothing is copied or re-initialised. Summation order differs from
torch's, hence a tolerance (1e-5) rather than bit equality.

:class:`OnnxQueryEncoder` is the serving side: ``encode(texts)`` normalises, featurizes /
tokenizes exactly as :class:`~omnisearchsage.trainer.export.QueryEncoder` does and runs the
graph with onnxruntime (no torch at inference).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import ExportLayout
from omnisearchsage.errors import OmniError
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize
from omnisearchsage.model.hash_embedding import HashEmbeddingBag
from omnisearchsage.model.lexical import LexicalChannel
from omnisearchsage.model.towers import NgramQueryTower, TransformerQueryTower, compat_output, with_lexical

log = logging.getLogger(__name__)

#: The graph's file name, inside ``export/query_encoder/``.
ONNX_FILE = ExportLayout.QUERY_ONNX
#: ScatterElements with reduction="add" needs opset 16; 17 is onnxruntime's long-supported default.
OPSET = 17
_PRIME = (1 << 31) - 1  # as hash_embedding.py and lexical.py


def bag_of_ids(ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The bag each id belongs to, int64 [len(ids)], from offsets (empty bags allowed).

    One mark per bag at its start (an offset equal to ``len(ids)``, a trailing empty bag,
    lands on the extra slot); the running count of marks minus one is the bag index.
    """
    marks = torch.zeros_like(torch.cat([ids, ids[:1].new_zeros(1)]))
    marks = marks.scatter_add(0, offsets, torch.ones_like(offsets))
    return marks[: ids.shape[0]].cumsum(0) - 1


def _bag_sum(values: torch.Tensor, rows: torch.Tensor, bags: int) -> torch.Tensor:
    """Sums of the rows of ``values`` [n, d] into ``bags`` rows, row ``i`` going to ``rows[i]``.

    A product with the [bags, n] one-hot matrix of ``rows``: one GEMM, which onnxruntime runs
    several times faster than a ScatterElements of n x d values (its scatter is element by element).
    """
    one_hot = rows.unsqueeze(0) == torch.arange(bags, device=rows.device).unsqueeze(1)
    return one_hot.to(values.dtype) @ values


def _scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``values`` [n] summed into ``size`` slots by ``index`` (few values, many slots: a scatter)."""
    return values.new_zeros(size).scatter_add(0, index, values)


def hash_bag(bag: HashEmbeddingBag, ids: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """:meth:`HashEmbeddingBag.forward` without ``unique`` / ``embedding_bag``."""
    pooled = _bag_sum(bag.token_vectors(ids), rows, offsets.shape[0])
    counts = _bag_sum(torch.ones_like(ids, dtype=pooled.dtype).unsqueeze(1), rows, offsets.shape[0])
    return bag.norm(pooled) * (counts > 0).to(pooled.dtype)


def lexical(channel: LexicalChannel, ids: torch.Tensor, rows: torch.Tensor, bags: int) -> torch.Tensor:
    """:meth:`LexicalChannel.forward` with ignored ids weighted 0 instead of filtered out."""
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for start, end in channel.ranges:
        keep = keep | ((ids >= start) & (ids < end))
    hashed = (ids.unsqueeze(-1) * channel.hash_a + channel.hash_b) % _PRIME
    bucket, sign = hashed[:, 0] % channel.buckets, (hashed[:, 1] % 2) * 2 - 1
    weight = channel.token_weight.dtype
    values = F.embedding(ids, channel.token_weight.unsqueeze(1)).squeeze(1) * sign.to(weight) * keep.to(weight)
    flat = _scatter_sum(values, rows * channel.buckets + bucket, bags * channel.buckets)
    return channel.beta * F.normalize(flat.view(-1, channel.buckets), dim=-1)


class NgramGraph(nn.Module):
    """``(ids, offsets) -> embedding``: :class:`NgramQueryTower` in ONNX-exportable ops."""

    input_names = ("ids", "offsets")

    def __init__(self, tower: NgramQueryTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        rows = bag_of_ids(ids, offsets)
        lex = None if self.tower.lexical is None else lexical(self.tower.lexical, ids, rows, offsets.shape[0])
        bag = hash_bag(self.tower.bag, ids, offsets, rows)
        body = self.tower.mlp[:-1](bag)
        return _outputs(self.tower, with_lexical(self.tower.mlp[-1](body), lex),
                        bag if self.tower.compat_from_bag else body)


def _outputs(tower: NgramQueryTower | TransformerQueryTower, main: torch.Tensor,
             compat_in: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The graph's outputs: "embedding", and "compat" (the head on ``compat_in``) when the tower has a compat head."""
    compat = compat_output(tower.compat, compat_in)
    return main if compat is None else (main, compat)


class TransformerGraph(nn.Module):
    """``(input_ids, attention_mask[, ids, offsets]) -> embedding``: :class:`TransformerQueryTower`."""

    def __init__(self, tower: TransformerQueryTower) -> None:
        super().__init__()
        self.tower = tower
        self.input_names = ("input_ids", "attention_mask") + (("ids", "offsets") if tower.lexical else ())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: torch.Tensor | None = None,
                offsets: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled = self.tower.pool(input_ids, attention_mask)
        lex = None
        if self.tower.lexical is not None and ids is not None and offsets is not None:
            lex = lexical(self.tower.lexical, ids, bag_of_ids(ids, offsets), offsets.shape[0])
        return _outputs(self.tower, with_lexical(self.tower.head(pooled), lex), pooled)


#: Queries traced to build the graph (shapes are dynamic: any batch and length runs).
_EXAMPLE = ("artistic iphone 6s case", "", "vegan dinner ideas for two", "xyzzy")


def export_query_onnx(export_dir: str | Path) -> Path:
    """Write ``query_encoder/query_encoder.onnx`` into an ``omni export`` folder; returns its path.

    The tower is loaded from the folder (as serving loads it), wrapped in its exportable
    form, traced with the TorchScript exporter (``dynamo=False``: it needs no extra
    package, and the wrappers avoid the ops it cannot translate), and written atomically.
    """
    from omnisearchsage.model.io import load_query_encoder

    encoder = load_query_encoder(export_dir)
    tower = encoder.tower
    graph: nn.Module = NgramGraph(tower) if isinstance(tower, NgramQueryTower) else TransformerGraph(tower)
    texts = [normalize(t) for t in _EXAMPLE]
    ids, offsets = encoder.featurizer.encode(texts)
    example = {"ids": torch.from_numpy(ids).long(), "offsets": torch.from_numpy(offsets).long()}
    if isinstance(tower, TransformerQueryTower):
        example |= tower.tokenize(texts)
    names = list(graph.input_names)
    outputs = ["embedding"] + (["compat"] if tower.compat is not None else [])
    dynamic = {"ids": {0: "tokens"}, "offsets": {0: "queries"}, "input_ids": {0: "queries", 1: "length"},
               "attention_mask": {0: "queries", 1: "length"}, "embedding": {0: "queries"},
               "compat": {0: "queries"}}
    path = ExportLayout(export_dir).query_encoder / ONNX_FILE
    with atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            graph.eval(), tuple(example[n] for n in names), str(tmp), dynamo=False,
            input_names=names, output_names=outputs, opset_version=OPSET,
            dynamic_axes={k: v for k, v in dynamic.items() if k in (*names, *outputs)},
        )
    log.info("wrote %s (%s tower, inputs %s)", path, type(tower).__name__, ", ".join(names))
    return path


class OnnxQueryEncoder:
    """Query text -> float32 [n, dim] L2-normalised embeddings with onnxruntime (no torch at inference);
    :meth:`encode_compat` as :meth:`QueryEncoder.encode_compat` (the graph's "compat" output, or for a
    tower without a compat head its "embedding").

    Reads an export folder holding ``query_encoder/query_encoder.onnx`` (``omni export RUN --onnx``).
    ``threads``: onnxruntime's intra-op threads (None: its default, every core).
    """

    def __init__(self, export_dir: str | Path, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise OmniError("serving from ONNX needs onnxruntime: pip install 'omnisearchsage[onnx]'") from e
        qdir = ExportLayout(export_dir).query_encoder
        if not (qdir / ONNX_FILE).is_file():
            raise OmniError(f"{qdir / ONNX_FILE}: missing; export with `omni export RUN --onnx`")
        cfg = json.loads((qdir / ExportLayout.ENCODER_CONFIG).read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(qdir / ONNX_FILE), options, providers=list(providers))
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.featurizer = Featurizer.load(qdir / ExportLayout.FEATURIZER)
        self.tokenizer: Any = None
        if cfg["kind"] == "transformer":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(qdir / ExportLayout.HF)
        self.max_tokens = cfg["model"]["max_query_tokens"]
        self.dim, self.batch_size = cfg["dim"], cfg["batch_size"]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.compat_dim = int(cfg["spec"]["compat_dim"]) if "compat" in self.outputs else self.dim

    def __repr__(self) -> str:
        return f"OnnxQueryEncoder(dim={self.dim}, inputs={sorted(self.inputs)})"

    def feeds(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph inputs for already-normalised ``texts``."""
        out: dict[str, np.ndarray] = {}
        if self.inputs & {"ids", "offsets"}:
            ids, offsets = self.featurizer.encode(list(texts))
            out |= {"ids": ids.astype(np.int64), "offsets": offsets.astype(np.int64)}
        if self.tokenizer is not None:
            enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="np")
            out |= {"input_ids": enc["input_ids"].astype(np.int64),
                    "attention_mask": enc["attention_mask"].astype(np.int64)}
        return {k: v for k, v in out.items() if k in self.inputs}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, "embedding", self.dim)

    def encode_compat(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [n, compat_dim]: the vectors the compat tasks trained against the legacy embeddings."""
        return self._run(texts, "compat", self.compat_dim) if "compat" in self.outputs else self.encode(texts)

    def _run(self, texts: Sequence[str], output: str, dim: int) -> np.ndarray:
        texts = [normalize(t) for t in texts]
        out = np.empty((len(texts), dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            out[start : start + len(chunk)] = self.session.run([output], self.feeds(chunk))[0]
        return out
