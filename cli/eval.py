"""``omni eval``, ``omni report`` and ``omni import relevance``: measuring a run, on sample or real data."""
from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from omnisearchsage.cli.common import WorkspaceOpt, workspace
from omnisearchsage.evaluation.config import BASELINES, EvalConfig
from omnisearchsage.importers.config import RelevanceImportConfig
from omnisearchsage.orchestration.config import AblationConfig

_E, _A, _I = EvalConfig(), AblationConfig(), RelevanceImportConfig()
import_app = typer.Typer(help="Turn an external data set into a workspace.", no_args_is_help=True)


def results_tables(results: dict[str, Any]) -> list[Table]:
    """The report's tables (headline beside the paper, relevance metrics, ablations) as rich tables."""
    from omnisearchsage.evaluation.report import fmt, tables

    out = []
    for title, header, rows, note in tables(results, detail=False):
        table = Table(title=title, box=box.SIMPLE_HEAD, caption=note or None)
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(fmt(v) for v in row))
        out.append(table)
    return out


def print_results(results: dict[str, Any]) -> None:
    """Render the tables to text and echo them (so they go where typer's output goes)."""
    console = Console(file=io.StringIO(), width=shutil.get_terminal_size((100, 24)).columns)
    for table in results_tables(results):
        console.print(table)
    typer.echo(console.file.getvalue())


def eval_cmd(
    run: Annotated[str, typer.Argument(help="Run name (runs/RUN/export must exist: `omni export RUN`).")],
    ablations: Annotated[bool, typer.Option("--ablations", help="Also train variant models and write the "
                                            "paper's Tables 3-6 (eval/ablations.md).")] = False,
    index_size: Annotated[int, typer.Option(help="Random entities each pair is ranked against (paper: 1.5M; "
                                            "capped at the catalogue).", min=1)] = _E.index_size,
    max_pairs: Annotated[int, typer.Option(help="Held-out pairs per evaluation set (paper: 80k).",
                                           min=1)] = _E.max_pairs_per_set,
    topk_out: Annotated[Path | None, typer.Option(help="Write the top products per test query to this CSV "
                                                     "(query, product_id, score).")] = None,
    topk: Annotated[int, typer.Option(help="Depth of the --topk-out lists.", min=1)] = _E.topk,
    baselines: Annotated[str, typer.Option(help=f"Comma-separated baselines ({', '.join(BASELINES)}), "
                                           "or 'none'.")] = ",".join(_E.baselines),
    ann: Annotated[bool, typer.Option(help="Report approximate-search recall against exact search (the "
                                      "--ann-libraries that are installed).")] = True,
    ann_libraries: Annotated[str, typer.Option(help="Comma-separated: faiss, usearch, or auto (the index "
                                                "`omni serve --index auto` builds).")] = ",".join(_E.ann),
    ablation_steps: Annotated[int | None, typer.Option(help="Training steps per ablation variant "
                                                       "(default: the run's own).", min=1)] = _A.steps,
    ablation_batch_size: Annotated[int | None, typer.Option(help="Pairs per step per ablation variant "
                                                            "(default: the run's own).", min=1)] = _A.batch_size,
    retrain: Annotated[bool, typer.Option("--retrain", help="Retrain ablation variants that already have an "
                                          "export.")] = False,
    ablation_tables: Annotated[str, typer.Option(help="Comma-separated paper tables --ablations computes "
                                                 "(3, 4, 5, 6); fewer tables train fewer variants.")]
    = ",".join(map(str, _A.tables)),
    ablation_seeds: Annotated[int, typer.Option(help="Training seeds per ablation variant; every figure is "
                                                "the mean over them (less noise from initialisation).",
                                                min=1)] = _A.seeds,
    ablation_jobs: Annotated[int, typer.Option(help="Ablation variants trained at once, each in its own "
                                               "process (up to the cores).", min=1)] = _A.jobs,
    seed: Annotated[int, typer.Option(help="Seed of the random index, sampling and bootstrap.")] = _E.seed,
    ws: WorkspaceOpt = None,
) -> None:
    """Recall@1/10/100 and MRR of RUN per task, action and language, beside BM25 and the paper.

    Held-out pairs come from the test window of the time split. Writes runs/RUN/eval/results.json;
    on a workspace made by `omni import relevance` it also reports that set's metrics
    (pair and query Recall@10, nDCG@10) beside its reference figures.
    """
    from omnisearchsage.evaluation.run import evaluate_run
    from omnisearchsage.orchestration.ablations import Ablations

    chosen = () if baselines.strip() == "none" else tuple(b.strip() for b in baselines.split(",") if b.strip())
    unknown = [b for b in chosen if b not in BASELINES]
    if unknown:
        raise typer.BadParameter(f"unknown baseline(s) {', '.join(unknown)}", param_hint="--baselines")
    libraries = tuple(a.strip() for a in ann_libraries.split(",") if a.strip())
    if bad := [a for a in libraries if a not in ("auto", "faiss", "usearch")]:
        raise typer.BadParameter(f"unknown ANN library(ies) {', '.join(bad)}", param_hint="--ann-libraries")
    cfg = EvalConfig(index_size=index_size, max_pairs_per_set=max_pairs, topk=topk, baselines=chosen,
                     ann=libraries if ann else (),
                     seed=seed)
    tables = tuple(t.strip() for t in ablation_tables.split(",") if t.strip())
    if not tables or any(t not in ("3", "4", "5", "6") for t in tables):
        raise typer.BadParameter(f"{ablation_tables!r}: choose among 3, 4, 5, 6", param_hint="--ablation-tables")
    extra = [Ablations(run, replace(_A, steps=ablation_steps, batch_size=ablation_batch_size, retrain=retrain,
                                    tables=tuple(sorted({int(t) for t in tables})), seeds=ablation_seeds,
                                    jobs=ablation_jobs))] if ablations else []
    w = workspace(ws)
    results = evaluate_run(w, run, cfg, topk_out, extra=extra)
    print_results(results)
    typer.echo(f"wrote {w.run(run).results}")
    if topk_out is not None:
        typer.echo(f"wrote {topk_out}")


def report_cmd(
    run: Annotated[str, typer.Argument(help="Run name (evaluate it first: `omni eval RUN`).")],
    ws: WorkspaceOpt = None,
) -> None:
    """Write runs/RUN/eval/report.html (self-contained, offline) and report.md: loss, Recall@K, tables."""
    from omnisearchsage.evaluation.report import write_report

    typer.echo(f"wrote {write_report(workspace(ws), run)}")


@import_app.command("relevance")
def import_relevance_cmd(
    products: Annotated[Path, typer.Option(help="CSV with product_id, title[, description, brand].")],
    train: Annotated[Path, typer.Option(help="CSV of labelled training pairs: query, product_id, label.")],
    test: Annotated[Path, typer.Option(help="CSV of labelled test pairs: query, product_id, label.")],
    out: Annotated[Path, typer.Option(help="Workspace folder to create.")],
    positive_min: Annotated[float, typer.Option(help="Smallest label that counts as relevant (becomes an "
                                                "engagement).")] = _I.positive_min,
    embed_model: Annotated[str, typer.Option(help="Sentence encoder for product legacy embeddings: auto (bundled "
                                             "all-MiniLM-L6-v2 if installed), none, or a model folder.")]
    = _I.embed_model,
    bf16: Annotated[bool, typer.Option(help="Embed in bf16 autocast where the CPU or GPU has native bf16 "
                                       "(--no-bf16: float32).")] = _I.embed_bf16,
    dataset: Annotated[str | None, typer.Option(help="Data set name (default: the products file's folder "
                                                   "name); picks reference figures.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace raw tables already in --out.")] = False,
) -> None:
    """A graded query→product relevance set (the CrowdFlower format) becomes a workspace.

    Products become the catalogue; positive pairs become engagements (train pairs in the
    training window, test pairs in the test window); every label is kept for nDCG.
    Then `omni features build`, `omni train`, `omni eval` run on it unchanged.
    """
    from omnisearchsage.importers.relevance import import_relevance

    cfg = replace(_I, positive_min=positive_min, embed_model=embed_model, embed_bf16=bf16, dataset=dataset,
                  force=force)
    stats = import_relevance(products, train, test, out, cfg)
    typer.echo(f"{out}: {stats['products']} products; train {stats['train_pairs']} pairs "
               f"({stats['train_positive_pairs']} positive, {stats['train_queries']} queries); test "
               f"{stats['test_pairs']} pairs ({stats['test_positive_pairs']} positive, {stats['test_queries']} "
               f"queries); legacy embedding: {stats['legacy_model'] or 'none'}")
