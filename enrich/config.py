"""Knobs of the enrichment stage, one dataclass per step, defaults that run.

Board titles and engaged queries are DuckDB aggregations over the raw tables;
their configs carry the paper's sizes (top 10 titles, top 20 queries over a
2-year window) and the engine's resource limits, so the same code streams a
20M-row engagement log on a laptop and a larger one on a server.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date

from omnisearchsage.errors import OmniError


def _default_action_weights() -> dict[str, float]:
    # A save, add-to-cart or checkout says more about a query's intent than a click.
    return {"save": 3.0, "long_click": 2.0, "click": 1.0, "add_to_cart": 3.0, "checkout": 4.0}


@dataclass(frozen=True)
class BoardsConfig:
    """How board titles become a pin's ``board_titles`` field.

    ``score = frequency_weight * freq / n + prevalence_weight * mean_word_share``
    (exact definition in :func:`omnisearchsage.enrich.boards.build_board_titles`).
    """

    max_titles: int = 10  # the paper keeps up to 10 unique titles per pin
    frequency_weight: float = 1.0
    prevalence_weight: float = 1.0
    memory_limit: str = "3GB"  # DuckDB spills to disk beyond this
    threads: int | None = None  # None: DuckDB's default (all cores)

    def __post_init__(self) -> None:
        if self.max_titles < 1:
            raise OmniError(f"max_titles must be at least 1, got {self.max_titles}")
        for w in (self.frequency_weight, self.prevalence_weight):
            if not (math.isfinite(w) and w >= 0):
                raise OmniError(f"board-title score weights must be finite and >= 0, got {w}")


@dataclass(frozen=True)
class QueriesConfig:
    """How engagements become a pin's or product's ``engaged_queries`` field.

    Only events in ``[cutoff - window_days, cutoff)`` count. ``cutoff`` is a
    date (midnight): counts are kept per day so that an incremental run can
    slide the window exactly; ``None`` means the workspace's time-split cutoff
    (``TimeSplit.for_workspace(ws).cutoff``) floored to its day, which can only
    drop events, never admit one at or after the split's cutoff.
    """

    top_k: int = 20  # queries kept per entity (the paper's top 20)
    window_days: int = 730  # the paper: a 2-year window beat shorter ones
    cutoff: date | None = None
    action_weights: dict[str, float] = field(default_factory=_default_action_weights)
    unknown_action_weight: float = 0.0  # actions not in action_weights
    memory_limit: str = "3GB"  # DuckDB spills to disk beyond this
    threads: int | None = None  # None: DuckDB's default (all cores)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise OmniError(f"top_k must be at least 1, got {self.top_k}")
        if self.window_days < 1:
            raise OmniError(f"window must be at least 1 day, got {self.window_days}")
        weights = {**self.action_weights, "(unknown actions)": self.unknown_action_weight}
        bad = {a: w for a, w in weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise OmniError(f"action weights must be finite and >= 0, got {bad}")


_WINDOW = re.compile(r"^\s*(\d+)\s*([dwy]?)\s*$")
_DAYS_PER_UNIT = {"": 1, "d": 1, "w": 7, "y": 365}


def parse_window(text: str) -> int:
    """``"730d"``, ``"104w"``, ``"2y"`` or ``"730"`` → days (a year is 365 days)."""
    m = _WINDOW.match(text.lower())
    if not m:
        raise OmniError(f"--window: {text!r} is not a duration like 730d, 104w or 2y")
    return int(m.group(1)) * _DAYS_PER_UNIT[m.group(2)]


# ---------------------------------------------------------------- per-image stages
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ImageRunConfig:
    """The knobs every per-image stage shares (captions, visual embeddings) and their checks.

    ``precision="auto"`` is bf16 on a GPU that supports it, else fp16 on a GPU, else fp32 on CPU.
    Shards of ``shard_size`` images are the unit of resumption: a kill loses at most one.
    """

    batch_size: int = 32  # images per forward pass / generate() call
    precision: str = "auto"
    num_workers: int = 1  # DataLoader processes decoding images while the model runs
    prefetch_batches: int = 2  # batches each worker decodes ahead
    shard_size: int = 512  # images per results shard
    max_image_pixels: int = 64_000_000  # decompression-bomb guard (a 48 MP photo passes)
    #: Bytes read per image at most: a larger file becomes an error row, never a huge read.
    max_image_bytes: int = 64 * 2**20
    hash_threads: int = 4  # threads hashing image files (I/O bound)

    def _check_run(self, what: str, **at_least_one: int) -> None:
        if self.precision not in _PRECISIONS:
            raise OmniError(f"precision must be one of {', '.join(_PRECISIONS)}, got {self.precision!r}")
        sizes = {"batch_size": self.batch_size, "prefetch_batches": self.prefetch_batches,
                 "shard_size": self.shard_size, "max_image_pixels": self.max_image_pixels,
                 "max_image_bytes": self.max_image_bytes, "hash_threads": self.hash_threads, **at_least_one}
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad:
            raise OmniError(f"{what} options must be at least 1, got {bad}")
        if self.num_workers < 0:
            raise OmniError(f"num_workers must be at least 0, got {self.num_workers}")


@dataclass(frozen=True)
class CaptionConfig(ImageRunConfig):
    """How ``omni enrich captions`` runs BLIP over every pin and product image.

    ``model`` is a local directory or a hub name; ``None`` means the workspace's
    fine-tuned captioner (``models/captioner``).
    """

    model: str | None = None
    max_new_tokens: int = 20
    min_new_tokens: int = 0  # set equal to max_new_tokens to fix the output length (benchmarks)
    num_beams: int = 1

    def __post_init__(self) -> None:
        self._check_run("caption", max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise OmniError(
                f"need 0 <= min_new_tokens <= max_new_tokens, got min_new_tokens={self.min_new_tokens}, "
                f"max_new_tokens={self.max_new_tokens}"
            )


# ---------------------------------------------------------------- visual embeddings
#: ``VisualConfig.model`` value naming the bundled backbone (also the default).
BUNDLED_BACKBONE = "efficientnet-lite0"


@dataclass(frozen=True)
class VisualConfig(ImageRunConfig):
    """How ``omni enrich visual`` embeds every pin and product image.

    ``model`` is ``None`` or ``"efficientnet-lite0"`` for the bundled EfficientNet-Lite0
    (ImageNet weights from the ``visual`` extra), or a local Hugging Face vision model
    folder (CLIP, SigLIP, DINOv2, ViT...).
    """

    model: str | None = None
    batch_size: int = 64
    shard_size: int = 1024

    def __post_init__(self) -> None:
        self._check_run("visual")


@dataclass(frozen=True)
class FinetuneConfig:
    """How ``omni enrich finetune-captioner`` trains a BLIP on (image, alt text) pairs.

    With ``base_model=None`` a small BLIP is built from a config (sizes below) with
    a WordPiece tokenizer trained on the alt texts, small enough to learn the
    sample world's images in minutes on 2 CPU cores; with a local directory or hub
    name the pretrained model and its processor are fine-tuned instead (use a
    smaller ``lr`` then, e.g. 2e-5). Training stops at ``steps`` or after
    ``time_budget_s`` seconds, whichever comes first. By default the steps decide, so a seed
    gives the same captioner on a busy machine as on an idle one (time-budgeted, a run sharing
    its cores trains fewer steps and captions worse; README, *Captions*); the time budget only
    caps a very slow machine.
    """

    base_model: str | None = None
    time_budget_s: float = 900.0
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up, then cosine decay over `steps` or the time budget
    grad_clip: float = 1.0  # max gradient norm
    hflip_prob: float = 0.5  # share of training images mirrored left-right (augmentation)
    batch_size: int = 32
    max_images: int = 10_000  # distinct images used (seeded sample); held in memory as fp16 pixels
    holdout_fraction: float = 0.1  # images held apart to measure caption quality
    max_holdout: int = 200  # held-out images captioned for the quality figure
    seed: int = 0
    max_text_tokens: int = 32  # alt texts are truncated to this many tokens
    eval_max_new_tokens: int = 20
    max_image_pixels: int = 64_000_000
    # The small BLIP (used when base_model is None).
    image_size: int = 64
    patch_size: int = 16  # 16 patches of 64 px: 4x cheaper than 8 px patches, so more steps per budget
    vision_hidden: int = 192
    vision_layers: int = 3
    text_hidden: int = 192
    text_layers: int = 3
    attention_heads: int = 4
    mlp_ratio: int = 4  # feed-forward width = mlp_ratio * hidden
    text_max_positions: int = 128  # longest caption the decoder can produce
    vocab_size: int = 2000  # WordPiece vocabulary trained on the alt texts

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise OmniError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.time_budget_s <= 0 or self.lr <= 0:
            raise OmniError(f"time_budget_s and lr must be > 0, got {self.time_budget_s}, {self.lr}")
        positive = {
            "steps": self.steps, "warmup_steps": self.warmup_steps, "batch_size": self.batch_size,
            "max_holdout": self.max_holdout,
            "max_images": self.max_images,
            "max_text_tokens": self.max_text_tokens, "eval_max_new_tokens": self.eval_max_new_tokens,
            "image_size": self.image_size, "patch_size": self.patch_size, "vision_layers": self.vision_layers,
            "text_layers": self.text_layers, "attention_heads": self.attention_heads,
            "mlp_ratio": self.mlp_ratio,
            "text_max_positions": self.text_max_positions,
        }
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise OmniError(f"fine-tune options must be at least 1, got {bad}")
        if self.image_size % self.patch_size or self.vision_hidden % self.attention_heads \
                or self.text_hidden % self.attention_heads:
            raise OmniError("image_size must be a multiple of patch_size, and the hidden sizes multiples of "
                            "attention_heads")
