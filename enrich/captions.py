"""BLIP captions for every pin and product image, resumable and multi-device.

``caption_workspace`` runs in four steps (the shared machinery is in
:mod:`omnisearchsage.enrich.image_stage`):

1. **Plan** (main process): every entity's ``image_path`` is hashed (SHA-256 of
   the bytes), so an image shared by several pins or products — or stored twice
   under different names — is captioned once. Unreadable paths become errors here.
2. **Caption** (every process): the unique images not captioned yet are split
   between processes (``accelerate launch`` on several GPUs, or one CPU process);
   a torch ``DataLoader`` decodes them in worker processes while the model runs
   batched ``generate``. Results are written in shards of ``shard_size`` images.
3. **Merge** (main process): finished shards are joined back to the entities and
   written atomically as ``enrich/captions.parquet`` and
   ``enrich/caption_errors.parquet``.
4. **Stats**: coverage (share of pins and products with a caption) and speed.

Resumption. Results are keyed by image hash, not by position, under
``enrich/.captions_work/`` (see :class:`CaptionWork`): a rerun reads every
finished shard and captions only the images none of them holds, so after a
``kill -9`` at most the shard in flight is redone, and each image is captioned
exactly once across the runs. The work folder is also a cache: a later run with
new images captions only those. It is cleared when the model or the generation
settings change, because captions made under other settings must not be mixed in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import polars as pl
import torch
from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipProcessor
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from omnisearchsage.atomic import write_parquet
from omnisearchsage.contract import CAPTION_ERRORS, CAPTIONS, Workspace
from omnisearchsage.enrich.config import CaptionConfig
from omnisearchsage.enrich.image_stage import (
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

_RESULT_SCHEMA = {"sha256": pl.Utf8, "caption": pl.Utf8, "error": pl.Utf8}
_EMPTY_CAPTION = "the model generated an empty caption"


# ---------------------------------------------------------------- model
def load_processor(ref: str | os.PathLike[str]) -> BlipProcessor:
    """The BLIP processor with the PIL image processor and the model's own tokenizer.

    Built from its parts rather than ``BlipProcessor.from_pretrained`` because in
    transformers 5 that picks the torchvision image processor whenever torchvision
    is installed; the PIL one needs no extra dependency and is picklable into
    DataLoader workers.
    """
    return BlipProcessor(
        image_processor=BlipImageProcessorPil.from_pretrained(ref),
        tokenizer=AutoTokenizer.from_pretrained(ref),
    )


def load_captioner(
    ref: str | os.PathLike[str], device: torch.device, dtype: torch.dtype
) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    """Load a BLIP captioner (local directory or hub name) in eval mode on ``device``."""
    try:
        processor = load_processor(ref)
        model = BlipForConditionalGeneration.from_pretrained(ref, dtype=dtype)
    except (OSError, ValueError) as e:
        raise OmniError(f"cannot load the captioner {str(ref)!r}: {e}".splitlines()[0]) from e
    return model.to(device).eval(), processor


def resolve_model(ws: Workspace, model: str | None) -> str:
    """The model to use: ``model`` as given, else the workspace's fine-tuned captioner."""
    if model is not None:
        return model
    default = ws.model_dir("captioner")
    if not (default / "config.json").exists():
        raise OmniError(
            f"no captioner at {default}: pass --model PATH_OR_HUB_NAME "
            "or run `omni enrich finetune-captioner`"
        )
    return str(default)


def generate_captions(
    model: BlipForConditionalGeneration,
    processor: BlipProcessor,
    pixel_values: torch.Tensor,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    num_beams: int = 1,
) -> list[str]:
    """Captions for one batch of preprocessed images (batched ``generate``)."""
    with torch.inference_mode():
        ids = model.generate(
            pixel_values=pixel_values.to(model.device, model.dtype),
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            num_beams=num_beams,
        )
    return [c.strip() for c in processor.batch_decode(ids, skip_special_tokens=True)]


class _PixelValues:
    """A BLIP image processor as a picklable batch preprocessing (images -> pixel_values)."""

    def __init__(self, image_processor: BlipImageProcessorPil) -> None:
        self.image_processor = image_processor

    def __call__(self, images: list) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


class CaptionWork(ShardedResults):
    """The captions' work folder, ``enrich/.captions_work/``: ``(sha256, caption, error)`` shards."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, _RESULT_SCHEMA)


# ---------------------------------------------------------------- the stage
def caption_workspace(ws: Workspace, cfg: CaptionConfig) -> dict[str, Any]:
    """Caption every pin and product image of ``ws``; write CAPTIONS and CAPTION_ERRORS.

    Safe to interrupt and rerun (see the module docstring). Under ``accelerate
    launch`` every process calls this; images are split between them and the
    main process merges. Returns stats: counts and coverage per entity type,
    unique images, images captioned in this run, images/s.
    """
    require_images(ws)
    ref = resolve_model(ws, cfg.model)
    device = process_state().device
    dtype = resolve_dtype(cfg.precision, device)
    model, processor = load_captioner(ref, device, dtype)
    settings = {
        "model": model_fingerprint(ref),
        "max_new_tokens": cfg.max_new_tokens,
        "min_new_tokens": cfg.min_new_tokens,
        "num_beams": cfg.num_beams,
        "dtype": str(dtype),
        "max_image_pixels": cfg.max_image_pixels,
        "max_image_bytes": cfg.max_image_bytes,
    }

    def run_model(pixel_values: torch.Tensor) -> list[tuple[str | None, str | None]]:
        captions = generate_captions(
            model, processor, pixel_values, cfg.max_new_tokens, cfg.min_new_tokens, cfg.num_beams
        )
        return [(c or None, None if c else _EMPTY_CAPTION) for c in captions]

    def process(items: list[tuple[str, str]], writer: ShardWriter) -> None:
        preprocess = _PixelValues(processor.image_processor)
        side = image_side(processor.image_processor)
        process_images(items, ws.root, preprocess, side, cfg, run_model, writer, "captions")

    name = model_name(ws, ref)
    run = run_image_stage(
        ws,
        CaptionWork(ws.captions_work),
        settings,
        cfg,
        process,
        lambda plan, results: _merge(ws, plan, results, name),
        f"captioning ({str(dtype).removeprefix('torch.')})",
    )
    stats = caption_stats(ws)
    stats.update(
        model=ref, captioned_this_run=run.processed, seconds=run.seconds, images_per_s=run.images_per_s
    )
    return stats


def _merge(ws: Workspace, plan: pl.DataFrame, results: pl.DataFrame, model: str) -> None:
    """Join finished results to the entities; write both outputs atomically."""
    joined = join_results(plan, results)
    captions = (
        joined.filter(pl.col("caption").is_not_null())
        .select(
            "entity_type",
            "entity_id",
            pl.col("sha256").alias("image_sha256"),
            "caption",
            pl.lit(model).alias("model"),
        )
        .sort("entity_type", "entity_id")
    )
    errors = error_rows(joined, "caption", "not captioned")
    write_parquet(captions.cast(CAPTIONS.polars_schema), ws.path(CAPTIONS))
    write_parquet(errors.cast(CAPTION_ERRORS.polars_schema), ws.path(CAPTION_ERRORS))


def caption_stats(ws: Workspace) -> dict[str, Any]:
    """Counts and coverage (share of all pins / products with a caption) from the outputs."""
    return coverage_stats(ws, CAPTIONS, CAPTION_ERRORS, "captioned")
