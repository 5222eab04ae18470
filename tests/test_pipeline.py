"""``omni pipeline`` end to end on the tiny world: every stage's outputs, then a resume."""
from __future__ import annotations

import json
from pathlib import Path

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
    Workspace,
)

FAST = ["--size", "tiny", "--steps", "5", "--finetune-seconds", "3"]


def test_pipeline_runs_every_stage_then_resumes_without_redoing_work(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    runner = CliRunner()

    first = runner.invoke(app, ["-q", "pipeline", "-w", str(ws.root), *FAST])
    assert first.exit_code == 0, first.output
    for table in (*RAW_TABLES, BOARD_TITLES, ENGAGED_QUERIES, CAPTIONS, FEATURE_PINS, FEATURE_PRODUCTS,
                  FEATURE_QUERIES):
        assert ws.has(table), table.relpath
    export = ws.export_dir("main")
    assert (export / "manifest.json").exists()
    results = json.loads((ws.eval_dir("main") / "results.json").read_text())
    assert results["run"] == "main" and results["headline"], "the headline table feeds the printout"
    assert (ws.eval_dir("main") / "report.html").exists()
    assert "query-pin" in first.output and "BM25" in first.output
    assert first.output.count("[ ok ]") == 11

    # A second run finds every output and only re-evaluates (validate, eval and report always run).
    trained_at = (ws.run_dir("main") / "summary.json").stat().st_mtime_ns
    second = runner.invoke(app, ["-q", "pipeline", "-w", str(ws.root), *FAST])
    assert second.exit_code == 0, second.output
    assert second.output.count("[skip]") == 8
    assert (ws.run_dir("main") / "summary.json").stat().st_mtime_ns == trained_at
