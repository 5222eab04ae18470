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


def _f(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return str(v)


def _with_ci(value: float, ci: Any) -> str:
    """``0.737 (0.65–0.81)``: the figure and its bootstrap interval, short enough for one cell."""
    return _f(value) if not ci else f"{value:.3f} ({ci[0]:.2f}–{ci[1]:.2f})"


def _paper(h: dict[str, Any]) -> str:
    if h["paper_omnisearchsage"] is None:
        return "–"
    return f"{_f(h['paper_searchsage'])}→{_f(h['paper_omnisearchsage'])}"


def results_tables(results: dict[str, Any]) -> list[Table]:
    """The headline table (paper figures beside ours), relevance metrics and ablation tables."""
    head = Table(title="Recall@10 of the model beside BM25 and the paper", box=box.SIMPLE_HEAD,
                 caption="rnd: among N random entities + the positive (paper protocol); filt: whole catalogue "
                         "without the query's other positives; paper: SearchSage→OmniSearchSage on the paper's "
                         "set beside ours (pin save, pin long click; product save ↔ add_to_cart, product long "
                         "click ↔ click; query click); compat rows: Table 6, trained alone→jointly.")
    for col in ("set", "pairs", "rnd", "filt", "BM25", "paper"):
        head.add_column(col, justify="left" if col == "set" else "right", no_wrap=True)
    for h in results.get("headline", []):
        head.add_row(f"{h['task']}/{h['action']}", str(h["pairs"]), _f(h["model_random"]), _f(h["model_full"]),
                     _f(h["bm25_random"]), _paper(h))
    out = [head]
    rel = results.get("relevance")
    if rel:
        metrics = ("pair_recall@10", "pair_recall@100", "query_recall@10", "ndcg@10")
        table = Table(title=f"{rel.get('dataset')}: {rel['test_queries']} test queries, "
                            f"{rel['positive_pairs']} positive pairs", box=box.SIMPLE_HEAD,
                      caption="pair R@K filtered, query R@10, nDCG@10 as the data set's README defines them; "
                              "(95% query-bootstrap interval; all in results.json); README rows: its reference "
                              "figures")
        table.add_column("system", no_wrap=True)
        for m in ("pair R@10", "pair R@100", "query R@10", "nDCG@10"):
            table.add_column(m, justify="right", no_wrap=True)
        for name, m in rel["systems"].items():
            # Intervals for the two figures the data set's README judges systems by.
            table.add_row(name, *(_with_ci(m[k], m.get(f"{k}_ci")) if k in ("pair_recall@10", "ndcg@10")
                                  else _f(m[k]) for k in metrics))
        for name, m in rel.get("references", {}).items():
            table.add_row(name, *(_f(m.get(k)) for k in metrics))
        out.append(table)
    for t in results.get("ablations", {}).get("tables", {}).values():
        table = Table(title=t["title"], box=box.SIMPLE_HEAD)
        for c in t["columns"]:
            table.add_column(c, justify="right")
        for row in t["rows"]:
            table.add_row(*(_f(v) for v in row))
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
    ann: Annotated[bool, typer.Option(help="Report faiss / usearch recall against exact search when "
                                      "installed.")] = True,
    ablation_steps: Annotated[int | None, typer.Option(help="Training steps per ablation variant "
                                                       "(default: the run's own).", min=1)] = _A.steps,
    ablation_batch_size: Annotated[int | None, typer.Option(help="Pairs per step per ablation variant "
                                                            "(default: the run's own).", min=1)] = _A.batch_size,
    retrain: Annotated[bool, typer.Option("--retrain", help="Retrain ablation variants that already have an "
                                          "export.")] = False,
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
    cfg = EvalConfig(index_size=index_size, max_pairs_per_set=max_pairs, topk=topk, baselines=chosen,
                     ann=_E.ann if ann else (), seed=seed)
    extra = [Ablations(run, replace(_A, steps=ablation_steps, batch_size=ablation_batch_size, retrain=retrain))] \
        if ablations else []
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

    cfg = replace(_I, positive_min=positive_min, embed_model=embed_model, dataset=dataset, force=force)
    stats = import_relevance(products, train, test, out, cfg)
    typer.echo(f"{out}: {stats['products']} products; train {stats['train_pairs']} pairs "
               f"({stats['train_positive_pairs']} positive, {stats['train_queries']} queries); test "
               f"{stats['test_pairs']} pairs ({stats['test_positive_pairs']} positive, {stats['test_queries']} "
               f"queries); legacy embedding: {stats['legacy_model'] or 'none'}")
