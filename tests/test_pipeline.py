"""``omni pipeline`` end to end on the tiny world: every stage's outputs, then a resume, then the
visual stage skipped for want of an image model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import (
    BOARD_TITLES,
    CAPTIONS,
    ENGAGED_QUERIES,
    FEATURE_PINS,
    FEATURE_PRODUCTS,
    FEATURE_QUERIES,
    RAW_TABLES,
    VISUAL_EMBEDDINGS,
    Workspace,
)
from omnisearchsage.enrich import visual
from omnisearchsage.errors import OmniError

from .tiny_models import tiny_vit

FAST = ["--size", "tiny", "--steps", "5", "--finetune-seconds", "3"]


def test_pipeline_runs_every_stage_then_resumes_without_redoing_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path / "ws")
    runner = CliRunner()
    vit = str(tiny_vit(tmp_path / "vit"))  # the bundled EfficientNet-Lite0 is slow on CPU

    first = runner.invoke(app, ["-q", "pipeline", "-w", str(ws.root), *FAST, "--visual-model", vit])
    assert first.exit_code == 0, first.output
    for table in (*RAW_TABLES, BOARD_TITLES, ENGAGED_QUERIES, CAPTIONS, VISUAL_EMBEDDINGS, FEATURE_PINS,
                  FEATURE_PRODUCTS, FEATURE_QUERIES):
        assert ws.has(table), table.relpath
    export = ws.export_dir("main")
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["visual_model"] == str(Path(vit).resolve())  # the run read the stage's embeddings
    results = json.loads((ws.eval_dir("main") / "results.json").read_text())
    assert results["run"] == "main" and results["headline"], "the headline table feeds the printout"
    assert (ws.eval_dir("main") / "report.html").exists()
    assert "query-pin" in first.output and "BM25" in first.output
    assert first.output.count("[ ok ]") == 12 and "[ ok ] enrich visual" in first.output

    # A second run finds every output and only re-evaluates (validate, eval and report always run).
    trained_at = (ws.run_dir("main") / "summary.json").stat().st_mtime_ns
    second = runner.invoke(app, ["-q", "pipeline", "-w", str(ws.root), *FAST, "--visual-model", vit])
    assert second.exit_code == 0, second.output
    assert second.output.count("[skip]") == 9
    assert (ws.run_dir("main") / "summary.json").stat().st_mtime_ns == trained_at

    # No image model installed and none given: the stage is skipped with a reason, not an error.
    ws.path(VISUAL_EMBEDDINGS).unlink()
    monkeypatch.setattr(visual, "lite0_available", lambda: False)
    third = runner.invoke(app, ["-q", "pipeline", "-w", str(ws.root), *FAST])
    assert third.exit_code == 0, third.output
    assert "[skip] enrich visual" in third.output and not ws.has(VISUAL_EMBEDDINGS)
    assert "enrich visual skipped: no image model" in third.output  # the warning says why


def test_pipeline_hands_ablation_seeds_and_jobs_to_the_ablations(monkeypatch, tmp_path: Path) -> None:
    """`omni pipeline --ablations --ablation-seeds 2 --ablation-jobs 2` reaches the ablation config."""
    import omnisearchsage.orchestration.pipeline as pipeline_module

    seen = {}

    def fake_run_pipeline(root, cfg, on_stage=None):
        seen["cfg"] = cfg
        raise OmniError("stop here")

    monkeypatch.setattr(pipeline_module, "run_pipeline", fake_run_pipeline)
    CliRunner().invoke(app, ["pipeline", "-w", str(tmp_path), "--ablations", "--ablation-seeds", "2",
                             "--ablation-jobs", "2"])
    cfg = seen["cfg"]
    assert cfg.ablations and (cfg.ablation.seeds, cfg.ablation.jobs) == (2, 2)
