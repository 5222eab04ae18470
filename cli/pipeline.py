"""``omni pipeline``: the README's main job, every stage on one workspace."""
from __future__ import annotations

from typing import Annotated

import typer

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.orchestration.config import AblationConfig

_A = AblationConfig()


def pipeline(
    ws: WorkspaceOpt = None,
    size: Annotated[str, typer.Option(help="Sample world generated when the workspace has no raw data: "
                                           "tiny, small, medium or large.")] = "small",
    seed: Annotated[int, typer.Option(help="Seed of the generated world.")] = 0,
    run: Annotated[str, typer.Option("--run", help="Name of the training run under runs/.")] = "main",
    steps: Annotated[int | None, typer.Option(help="Training steps (default: the trainer's).")] = None,
    finetune_seconds: Annotated[float | None, typer.Option(
        help="Time cap for fine-tuning the captioner, which otherwise stops at its step count (default: the "
             "fine-tuner's cap).")] = None,
    visual_model: Annotated[str | None, typer.Option(
        help="Image model of the visual-embedding stage: a local Hugging Face vision model folder (default: "
             "the bundled EfficientNet-Lite0; the stage is skipped when it is not installed).")] = None,
    ablations: Annotated[bool, typer.Option(help="Also train and evaluate the paper's ablation models "
                                                 "(Tables 3-6); adds several training runs.")] = False,
    ablation_seeds: Annotated[int, typer.Option(help="With --ablations: training seeds per variant, every "
                                                "figure the mean over them.", min=1)] = _A.seeds,
    ablation_jobs: Annotated[int, typer.Option(help="With --ablations: variants trained at once, each in its "
                                               "own process (up to the cores).", min=1)] = _A.jobs,
    redo: Annotated[bool, typer.Option(help="Re-run stages whose outputs already exist.")] = False,
) -> None:
    """Run every stage on one workspace (the main job), generating a sample world if it is empty.

    Order: validate, enrich (board titles, engaged queries, captioner fine-tune, captions, visual
    embeddings), features, train --tasks all, export, eval, report.

    Stages whose outputs exist are skipped unless --redo, so an interrupted pipeline resumes.
    """
    from omnisearchsage.cli.eval import print_results
    from omnisearchsage.orchestration.pipeline import PipelineConfig, StageResult, run_pipeline

    w = workspace(ws)

    def report(res: StageResult) -> None:
        typer.echo(f"[{'skip' if res.skipped else ' ok '}] {res.name}")

    cfg = PipelineConfig(size=size, seed=seed, run_name=run, train_steps=steps,
                         finetune_seconds=finetune_seconds, visual_model=visual_model, ablations=ablations,
                         ablation=AblationConfig(seeds=ablation_seeds, jobs=ablation_jobs), skip_existing=not redo)
    results = run_pipeline(w.root, cfg, on_stage=report)
    evaluation = next(r for r in results if r.name == "eval").stats
    print_results(evaluation)
    typer.echo(f"report: {w.eval_dir(run) / 'report.html'}")
