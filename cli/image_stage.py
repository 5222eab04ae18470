"""Options and the report shared by the per-image ``omni enrich`` commands (captions, visual).

Both commands run the same machinery (:mod:`omnisearchsage.enrich.image_stage`), so they
take the same decoding, sharding and precision options and print the same kind of report.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

PrecisionOpt = Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")]
WorkersOpt = Annotated[
    int, typer.Option(help="DataLoader processes decoding images while the model runs (0: decode inline).")
]
ShardSizeOpt = Annotated[int, typer.Option(help="Images per results shard: the most work a kill can lose.")]
MaxPixelsOpt = Annotated[
    int, typer.Option(help="Larger images are recorded as errors (decompression-bomb guard).")
]
MaxBytesOpt = Annotated[
    int, typer.Option(help="Larger image files are recorded as errors, never read (bytes).")
]


def echo_image_stage(stats: dict[str, Any], title: str, done_key: str, errors_file: str) -> None:
    """Counts, coverage per entity type, error reasons and speed of a per-image stage run."""
    per_kind = ", ".join(
        f"{kind}s {stats[done_key][kind]:,}/{stats['entities'][kind]:,} ({stats['coverage'][kind]:.1%})"
        for kind in stats["entities"]
    )
    typer.echo(f"{title}: {stats['unique_images']:,} unique images; coverage: {per_kind}")
    rate = f" at {stats['images_per_s']:,.1f} img/s" if stats["images_per_s"] else ""
    typer.echo(f"{done_key} this run: {stats[f'{done_key}_this_run']:,} images in {stats['seconds']:.1f}s{rate}")
    if stats["error_reasons"]:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in stats["error_reasons"].items())
        typer.echo(f"errors ({errors_file}): {reasons}")
