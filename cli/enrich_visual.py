"""``omni enrich visual`` (one image embedding per pin and product).

Registered on the ``enrich`` sub-app by :func:`register`, which ``cli/enrich.py`` calls.
The stage module is imported inside the command: torch takes seconds to import, and
``omni --help`` or the other commands should not pay that.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.enrich.config import BUNDLED_BACKBONE, VisualConfig


def echo_visual(stats: dict[str, Any]) -> None:
    """Counts, coverage per entity type, error reasons and speed of a visual-embedding run."""
    per_kind = ", ".join(
        f"{kind}s {stats['embedded'][kind]:,}/{stats['entities'][kind]:,} ({stats['coverage'][kind]:.1%})"
        for kind in stats["entities"]
    )
    typer.echo(
        f"visual embeddings ({stats['model']}, {stats['dim'] or 0}-d): {stats['unique_images']:,} unique images; "
        f"coverage: {per_kind}"
    )
    rate = f" at {stats['images_per_s']:,.1f} img/s" if stats["images_per_s"] else ""
    typer.echo(f"embedded this run: {stats['embedded_this_run']:,} images in {stats['seconds']:.1f}s{rate}")
    if stats["error_reasons"]:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in stats["error_reasons"].items())
        typer.echo(f"errors (enrich/visual_errors.parquet): {reasons}")


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
    precision: Annotated[
        str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")
    ] = VisualConfig.precision,
    workers: Annotated[
        int,
        typer.Option(help="DataLoader processes decoding images while the model runs (0: decode inline)."),
    ] = VisualConfig.num_workers,
    shard_size: Annotated[
        int, typer.Option(help="Images per results shard: the most work a kill can lose.")
    ] = VisualConfig.shard_size,
    max_image_pixels: Annotated[
        int, typer.Option(help="Larger images are recorded as errors (decompression-bomb guard).")
    ] = VisualConfig.max_image_pixels,
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
    )
    stats = embed_workspace(workspace(workspace_dir), cfg)
    if process_state().is_main_process:  # under a multi-process launch, one report
        echo_visual(stats)


def register(enrich_app: typer.Typer) -> None:
    """Add ``visual`` to the ``omni enrich`` sub-app."""
    enrich_app.command("visual")(visual)
