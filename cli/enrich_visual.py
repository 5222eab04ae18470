"""``omni enrich visual`` (one image embedding per pin and product).

Registered on the ``enrich`` sub-app by :func:`register`, which ``cli/enrich.py`` calls.
The stage module is imported inside the command: torch takes seconds to import, and
``omni --help`` or the other commands should not pay that.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.cli.image_stage import (
    MaxBytesOpt,
    MaxPixelsOpt,
    PrecisionOpt,
    ShardSizeOpt,
    WorkersOpt,
    echo_image_stage,
)
from omnisearchsage.contract import VISUAL_ERRORS
from omnisearchsage.enrich.config import BUNDLED_BACKBONE, VisualConfig


def echo_visual(stats: dict[str, Any]) -> None:
    """Counts, coverage per entity type, error reasons and speed of a visual-embedding run."""
    title = f"visual embeddings ({stats['model']}, {stats['dim'] or 0}-d)"
    echo_image_stage(stats, title, "embedded", VISUAL_ERRORS.relpath)


def visual(
    workspace_dir: WorkspaceOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Image model: {BUNDLED_BACKBONE} (the bundled ImageNet EfficientNet-Lite0, 1280-d) or a "
            "local Hugging Face vision model folder (CLIP, SigLIP, DINOv2, ViT...). "
            f"Default: {BUNDLED_BACKBONE}.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = VisualConfig.batch_size,
    precision: PrecisionOpt = VisualConfig.precision,
    workers: WorkersOpt = VisualConfig.num_workers,
    shard_size: ShardSizeOpt = VisualConfig.shard_size,
    max_image_pixels: MaxPixelsOpt = VisualConfig.max_image_pixels,
    max_image_bytes: MaxBytesOpt = VisualConfig.max_image_bytes,
) -> None:
    """Embed every pin and product image (enrich/visual_embeddings.parquet, enrich/visual_errors.parquet).

    Each distinct image (by content hash) is embedded once; an entity with several
    images gets the mean of their L2-normalised embeddings. Resumable: rerun after an
    interruption and only unfinished images are embedded. Bad images (missing, corrupt,
    not an image, too large) are listed in visual_errors, never fatal. Run under
    `accelerate launch` to split the images over several GPUs.
    """
    from omnisearchsage.enrich.image_stage import process_state
    from omnisearchsage.enrich.visual import embed_workspace

    cfg = VisualConfig(
        model=model,
        batch_size=batch_size,
        precision=precision,
        num_workers=workers,
        shard_size=shard_size,
        max_image_pixels=max_image_pixels,
        max_image_bytes=max_image_bytes,
    )
    stats = embed_workspace(workspace(workspace_dir), cfg)
    if process_state().is_main_process:  # under a multi-process launch, one report
        echo_visual(stats)


def register(enrich_app: typer.Typer) -> None:
    """Add ``visual`` to the ``omni enrich`` sub-app."""
    enrich_app.command("visual")(visual)
