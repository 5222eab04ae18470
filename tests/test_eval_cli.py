"""``omni eval`` / ``omni report`` end to end through the CLI on a real (two-step) export of the tiny world."""
from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.errors import OmniError


@pytest.fixture(scope="module")
def trained(two_step_run):
    return two_step_run


def test_eval_prints_paper_beside_ours_and_writes_results_and_topk(trained, tmp_path):
    out = tmp_path / "top.csv"
    res = CliRunner().invoke(app, ["eval", "r", "-w", str(trained.root), "--no-ann", "--baselines", "random",
                                   "--topk-out", str(out), "--topk", "20"])
    assert res.exit_code == 0, res.output
    assert "beside BM25 and the paper" in res.output and "0.390→0.650" in res.output  # pin save
    results = json.loads((trained.eval_dir("r") / "results.json").read_text())
    assert results["model_version"].startswith("r@2")
    assert {r["system"] for r in results["rows"]} == {"model", "random"}
    top = pl.read_csv(out)
    assert top.columns == ["query", "product_id", "score"]
    per_query = top.group_by("query").len()["len"]
    assert (per_query == 20).all() and len(per_query) == results["sets"]["query-product"]["queries"]
    # Scores come sorted within each query (ties: product_id ascending).
    assert top.group_by("query", maintain_order=True).agg((pl.col("score").diff() <= 0).all())["score"].all()


def test_report_command_writes_html_after_eval(trained):
    res = CliRunner().invoke(app, ["report", "r", "-w", str(trained.root)])
    assert res.exit_code == 0, res.output
    assert (trained.eval_dir("r") / "report.html").stat().st_size > 1000


def test_eval_of_a_run_without_export_says_what_to_run(trained):
    res = CliRunner().invoke(app, ["eval", "nope", "-w", str(trained.root)])
    assert isinstance(res.exception, OmniError) and "omni export" in str(res.exception)


def test_ablation_tables_option_picks_the_tables_and_refuses_unknown_ones(monkeypatch, tmp_path) -> None:
    """`--ablation-tables 4,3` hands the ablations exactly tables (3, 4); an unknown table is a usage error
    before anything runs."""
    import omnisearchsage.evaluation.run as run_module

    seen = {}

    def fake_evaluate_run(ws, run, cfg, topk_out, extra=()):
        seen["tables"], seen["seeds"], seen["jobs"] = extra[0].cfg.tables, extra[0].cfg.seeds, extra[0].cfg.jobs
        raise OmniError("stop here")

    monkeypatch.setattr(run_module, "evaluate_run", fake_evaluate_run)
    result = CliRunner().invoke(app, ["eval", "r", "-w", str(tmp_path), "--ablations", "--ablation-tables", "4,3"])
    assert seen == {"tables": (3, 4), "seeds": 1, "jobs": 1} and isinstance(result.exception, OmniError)
    result = CliRunner().invoke(app, ["eval", "r", "-w", str(tmp_path), "--ablations", "--ablation-seeds", "3",
                                      "--ablation-jobs", "2"])
    assert (seen["seeds"], seen["jobs"]) == (3, 2)
    result = CliRunner().invoke(app, ["eval", "r", "-w", str(tmp_path), "--ablations", "--ablation-seeds", "0"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["eval", "r", "-w", str(tmp_path), "--ablations", "--ablation-tables", "3,7"])
    assert result.exit_code == 2 and "choose among 3, 4, 5, 6" in result.output
