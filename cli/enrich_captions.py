"""``omni enrich captions`` and ``omni enrich finetune-captioner`` (BLIP image captions).

Registered on the ``enrich`` sub-app by :func:`register`, which ``cli/enrich.py`` calls.
The stage modules are imported inside the commands: torch and transformers take
seconds to import, and ``omni --help`` or the other commands should not pay that.
"""

from __future__ import annotations

import json
from pathlib import Path
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
from omnisearchsage.contract import CAPTION_ERRORS
from omnisearchsage.enrich.config import CaptionConfig, FinetuneConfig


def _pct(share: float) -> str:
    return f"{share:.1%}"


def echo_captions(stats: dict[str, Any]) -> None:
    """Counts, coverage per entity type, error reasons and speed of a captions run."""
    echo_image_stage(stats, "captions", "captioned", CAPTION_ERRORS.relpath)


def captions(
    workspace_dir: WorkspaceOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="BLIP captioner: a local directory or a hub name. Default: the workspace's "
            "models/captioner from `omni enrich finetune-captioner`.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per generate() call.")] = CaptionConfig.batch_size,
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest caption, in tokens.")
    ] = CaptionConfig.max_new_tokens,
    num_beams: Annotated[int, typer.Option(help="Beam-search width (1: greedy).")] = CaptionConfig.num_beams,
    precision: PrecisionOpt = CaptionConfig.precision,
    workers: WorkersOpt = CaptionConfig.num_workers,
    shard_size: ShardSizeOpt = CaptionConfig.shard_size,
    max_image_pixels: MaxPixelsOpt = CaptionConfig.max_image_pixels,
    max_image_bytes: MaxBytesOpt = CaptionConfig.max_image_bytes,
) -> None:
    """Caption every pin and product image with BLIP (enrich/captions.parquet, enrich/caption_errors.parquet).

    Each distinct image (by content hash) is captioned once. Resumable: rerun after an
    interruption and only unfinished images are captioned. Bad images (missing,
    corrupt, not an image, too large) are listed in caption_errors, never fatal.
    Run under `accelerate launch` to split the images over several GPUs.
    """
    from omnisearchsage.enrich.captions import caption_workspace
    from omnisearchsage.enrich.image_stage import process_state

    cfg = CaptionConfig(
        model=model,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        precision=precision,
        num_workers=workers,
        shard_size=shard_size,
        max_image_pixels=max_image_pixels,
        max_image_bytes=max_image_bytes,
    )
    stats = caption_workspace(workspace(workspace_dir), cfg)
    if process_state().is_main_process:  # under a multi-process launch, one report
        echo_captions(stats)


def finetune_captioner(
    workspace_dir: WorkspaceOpt = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="BLIP to fine-tune (local directory or hub name). Default: a small "
            "BLIP built from a config, trained from scratch.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to save it. Default: WS/models/captioner.", show_default=False)
    ] = None,
    seconds: Annotated[
        float, typer.Option(help="Time cap of the training loop, in seconds (--steps decides first unless "
                                 "the machine is slow).")
    ] = FinetuneConfig.time_budget_s,
    steps: Annotated[int, typer.Option(help="Most optimizer steps.")] = FinetuneConfig.steps,
    lr: Annotated[
        float, typer.Option(help="Peak learning rate (use ~2e-5 with --base-model).")
    ] = FinetuneConfig.lr,
    batch_size: Annotated[
        int, typer.Option(help="(image, text) pairs per step.")
    ] = FinetuneConfig.batch_size,
    holdout: Annotated[
        float, typer.Option(help="Share of images held apart to measure caption quality.")
    ] = FinetuneConfig.holdout_fraction,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, the initialisation and the batch order.")
    ] = FinetuneConfig.seed,
    image_size: Annotated[
        int, typer.Option(help="Small BLIP only: input image side in pixels.")
    ] = FinetuneConfig.image_size,
    hidden: Annotated[
        int, typer.Option(help="Small BLIP only: hidden size of the vision and text towers.")
    ] = FinetuneConfig.vision_hidden,
    layers: Annotated[
        int, typer.Option(help="Small BLIP only: transformer layers of the vision and text towers.")
    ] = FinetuneConfig.vision_layers,
) -> None:
    """Fine-tune a BLIP captioner on pins' (image, alt_text) pairs, offline; report held-out quality.

    Writes model, processor and tokenizer to WS/models/captioner (or --out), which
    `omni enrich captions` then uses by default, with the figures in finetune.json.
    """
    from omnisearchsage.enrich.finetune import METRICS_FILE
    from omnisearchsage.enrich.finetune import finetune_captioner as run

    cfg = FinetuneConfig(
        base_model=base_model,
        time_budget_s=seconds,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        holdout_fraction=holdout,
        seed=seed,
        image_size=image_size,
        vision_hidden=hidden,
        text_hidden=hidden,
        vision_layers=layers,
        text_layers=layers,
    )
    path = run(workspace(workspace_dir), cfg, out)
    m = json.loads((path / METRICS_FILE).read_text())
    typer.echo(
        f"captioner: {path} ({m['parameters']:,} parameters, "
        f"{m['steps']} steps in {m['train_seconds']:.0f}s, "
        f"loss {m['first_loss']:.2f} -> {m['final_loss']:.2f})"
    )
    quality = (
        f"word-overlap F1 {m['word_overlap_f1']:.3f} "
        f"(image-blind baseline {m['baseline_word_overlap_f1']:.3f})"
    )
    if "topic_hit_rate" in m:
        quality += (
            f", topic named in {_pct(m['topic_hit_rate'])} of captions "
            f"(baseline {_pct(m['baseline_topic_hit_rate'])})"
        )
    typer.echo(f"held-out quality on {m['heldout_images']:,} images: {quality}")


def register(enrich_app: typer.Typer) -> None:
    """Add ``captions`` and ``finetune-captioner`` to the ``omni enrich`` sub-app."""
    enrich_app.command("captions")(captions)
    enrich_app.command("finetune-captioner")(finetune_captioner)
