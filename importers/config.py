"""Knobs of ``omni import relevance``: how labelled pairs become a workspace."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from omnisearchsage.split import SplitConfig
from omnisearchsage.text_encoders import EMBED_AUTO


@dataclass(frozen=True)
class RelevanceImportConfig:
    """How a graded relevance set (products + labelled train/test pairs) becomes a workspace.

    Positive pairs (``label >= positive_min``) become engagements: train pairs inside the
    training window, test pairs inside the test window of the split that
    ``TimeSplit.for_workspace`` will find (its test window ends at ``test_end``), so the
    stages after the import treat them like logs. Every label is also kept for nDCG.
    """

    #: Smallest label that counts as relevant (CrowdFlower: 4 = fully satisfies).
    positive_min: float = 4.0
    #: Action recorded for a positive pair; it must be one the trainer learns from
    #: (TrainConfig.product_actions) and that engaged-query scoring weighs.
    action: str = "click"
    #: End (exclusive) of the test window the test pairs are placed in.
    test_end: datetime = datetime(2026, 11, 1)
    #: The split the pairs are placed by; recorded in raw/split.json, which every later stage reads.
    split: SplitConfig = field(default_factory=SplitConfig)
    #: Days before the cutoff over which train pairs are spread (one timestamp per query),
    #: all well inside the engaged-query window.
    train_spread_days: int = 60
    #: Sentence encoder whose product embeddings become ``legacy_embedding`` (the paper feeds
    #: precomputed embeddings to the entity tower): ``auto``, ``none`` or a model directory.
    embed_model: str = EMBED_AUTO
    #: Tokens of title + description the encoder reads (the README's MiniLM reference: 128).
    embed_max_tokens: int = 128
    embed_batch_size: int = 64
    #: Embed in bf16 autocast where the hardware has native bf16 (``text_encoders.bf16_autocast``).
    embed_bf16: bool = True
    #: Data set name recorded in raw/relevance.json; selects reference figures in reports.
    #: ``None``: the name of the folder holding products.csv.
    dataset: str | None = None
    #: Replace raw tables that already exist in the output workspace.
    force: bool = False
