"""``omni enrich``: board titles, engaged queries and captions for every pin and product.

Board titles and engaged queries live here; the caption commands are added by
:mod:`omnisearchsage.cli.enrich_captions` and ``visual`` by :mod:`omnisearchsage.cli.enrich_visual`
(``register``).
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from omnisearchsage.cli.common import WorkspaceOpt, parse_numbers, workspace
from omnisearchsage.cli.engine import (
    EnrichEngineOpt,
    SparkConfOpt,
    SparkDriverMemoryOpt,
    SparkMasterOpt,
    maybe_spark,
)
from omnisearchsage.cli.enrich_captions import echo_captions
from omnisearchsage.cli.enrich_captions import register as register_captions
from omnisearchsage.cli.enrich_visual import register as register_visual
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import (
    BoardsConfig,
    CaptionConfig,
    QueriesConfig,
    parse_window,
)
from omnisearchsage.enrich.queries import build_engaged_queries

enrich_app = typer.Typer(
    name="enrich",
    help="Enrich pins and products with board titles, engaged queries, image captions and visual embeddings.",
    no_args_is_help=True,
)

MaxTitlesOpt = Annotated[int, typer.Option(help="Board titles kept per pin.")]
CutoffOpt = Annotated[
    datetime | None,
    typer.Option(
        formats=["%Y-%m-%d"],
        metavar="DATE",
        help="Only events before this date count. Default: the workspace's time-split cutoff, floored to its day.",
        show_default=False,
    ),
]
WindowOpt = Annotated[str, typer.Option(help="How far back from the cutoff events count, e.g. 730d, 104w, 2y.")]
PreviousOpt = Annotated[
    Path | None,
    typer.Option(
        help="Merge into an earlier run: its engaged_query_counts.parquet, or the workspace holding it. "
        "Only the days it does not cover are read from the raw log.",
        show_default=False,
    ),
]
WeightOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--weight",
        metavar="ACTION=WEIGHT",
        help="ACTION=WEIGHT, repeatable; overrides that action's default weight ("
        + " ".join(f"{a}={w:g}" for a, w in QueriesConfig().action_weights.items())
        + ").",
        show_default=False,
    ),
]
UnknownWeightOpt = Annotated[float, typer.Option(help="Weight of actions no --weight or default names.")]
TopKOpt = Annotated[int, typer.Option(help="Engaged queries kept per pin or product.")]
MemoryOpt = Annotated[str, typer.Option(help="DuckDB memory limit; it spills to disk beyond it (duckdb engine).")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="DuckDB threads (duckdb engine). Default: all cores.", show_default=False)
]


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def echo_boards(stats: dict[str, Any]) -> None:
    """One line: how many catalogue pins got board titles."""
    typer.echo(
        f"board titles: {stats['pins_with_titles']:,} pins, {stats['titles']:,} titles; "
        f"coverage: pins {_pct(stats['coverage']['pin'])}"
    )


def echo_queries(stats: dict[str, Any]) -> None:
    """One line: the window used and the share of pins and products with engaged queries."""
    mode = "incremental" if stats["incremental"] else "full"
    typer.echo(
        f"engaged queries ({mode}, [{stats['window_start']}, {stats['cutoff']}), {stats['events']:,} events): "
        f"{stats['entities']['pin']:,} pins, {stats['entities']['product']:,} products; coverage: "
        f"pins {_pct(stats['coverage']['pin'])}, products {_pct(stats['coverage']['product'])}"
    )


def _queries_config(
    cutoff: datetime | None,
    window: str,
    weight: list[str] | None,
    unknown_weight: float,
    top_k: int,
    memory_limit: str,
    threads: int | None,
) -> QueriesConfig:
    defaults = QueriesConfig()
    return replace(
        defaults,
        cutoff=cutoff.date() if cutoff else None,
        window_days=parse_window(window),
        action_weights=defaults.action_weights | parse_numbers(weight or [], "--weight", "ACTION=NUMBER, e.g. save=3"),
        unknown_action_weight=unknown_weight,
        top_k=top_k,
        memory_limit=memory_limit,
        threads=threads,
    )


@enrich_app.command("boards")
def boards(
    workspace_dir: WorkspaceOpt = None,
    max_titles: MaxTitlesOpt = BoardsConfig.max_titles,
    frequency_weight: Annotated[
        float, typer.Option(help="Score weight of a title's share of the pin's boards.")
    ] = BoardsConfig.frequency_weight,
    prevalence_weight: Annotated[
        float, typer.Option(help="Score weight of how common the title's words are among the pin's boards.")
    ] = BoardsConfig.prevalence_weight,
    memory_limit: MemoryOpt = BoardsConfig.memory_limit,
    threads: ThreadsOpt = None,
    engine: EnrichEngineOpt = "duckdb",
    spark_master: SparkMasterOpt = None,
    spark_conf: SparkConfOpt = None,
    spark_driver_memory: SparkDriverMemoryOpt = None,
) -> None:
    """Rank each pin's normalised board titles and keep the best (enrich/board_titles.parquet)."""
    cfg = BoardsConfig(
        max_titles=max_titles,
        frequency_weight=frequency_weight,
        prevalence_weight=prevalence_weight,
        memory_limit=memory_limit,
        threads=threads,
    )
    ws = workspace(workspace_dir)
    with maybe_spark(engine, "duckdb", spark_master, spark_conf, spark_driver_memory) as spark:
        if spark is None:
            echo_boards(build_board_titles(ws, cfg))
        else:
            from omnisearchsage.enrich.spark_jobs import build_board_titles_spark

            echo_boards(build_board_titles_spark(ws, spark, cfg))


@enrich_app.command("queries")
def queries(
    workspace_dir: WorkspaceOpt = None,
    cutoff: CutoffOpt = None,
    window: WindowOpt = f"{QueriesConfig.window_days}d",
    previous: PreviousOpt = None,
    weight: WeightOpt = None,
    unknown_weight: UnknownWeightOpt = QueriesConfig.unknown_action_weight,
    top_k: TopKOpt = QueriesConfig.top_k,
    memory_limit: MemoryOpt = QueriesConfig.memory_limit,
    threads: ThreadsOpt = None,
    engine: EnrichEngineOpt = "duckdb",
    spark_master: SparkMasterOpt = None,
    spark_conf: SparkConfOpt = None,
    spark_driver_memory: SparkDriverMemoryOpt = None,
) -> None:
    """Top engaged queries per pin and product over [cutoff - window, cutoff) (enrich/engaged_queries.parquet).

    Also writes enrich/engaged_query_counts.parquet, the per-day counts a later
    `--previous` run merges new logs into.
    """
    cfg = _queries_config(cutoff, window, weight, unknown_weight, top_k, memory_limit, threads)
    ws = workspace(workspace_dir)
    with maybe_spark(engine, "duckdb", spark_master, spark_conf, spark_driver_memory) as spark:
        if spark is None:
            echo_queries(build_engaged_queries(ws, cfg, previous))
        else:
            from omnisearchsage.enrich.spark_jobs import build_engaged_queries_spark

            echo_queries(build_engaged_queries_spark(ws, spark, cfg, previous))


@enrich_app.command("all")
def all_(
    workspace_dir: WorkspaceOpt = None,
    cutoff: CutoffOpt = None,
    window: WindowOpt = f"{QueriesConfig.window_days}d",
    model: Annotated[
        str | None,
        typer.Option(
            help="BLIP captioner (local directory or hub name). Default: WS/models/captioner if it exists; "
            "without either, captions are skipped.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Board titles, engaged queries and captions with default settings, printing each one's coverage.

    Captions run only with --model or a fine-tuned WS/models/captioner (see
    `omni enrich finetune-captioner`); the other stages need no model.
    """
    ws = workspace(workspace_dir)
    cfg = replace(QueriesConfig(), cutoff=cutoff.date() if cutoff else None, window_days=parse_window(window))
    echo_boards(build_board_titles(ws, BoardsConfig()))
    echo_queries(build_engaged_queries(ws, cfg))
    captioner = ws.model_dir("captioner")
    if model is None and not captioner.exists():
        typer.echo(f"captions: skipped (no --model and no {captioner}; run `omni enrich finetune-captioner`)")
        return
    typer.echo(f"captions with {model or captioner} ({'--model' if model else 'the fine-tuned captioner'})")
    from omnisearchsage.enrich.captions import caption_workspace  # imports torch: only when captioning

    echo_captions(caption_workspace(ws, CaptionConfig(model=model)))


register_captions(enrich_app)
register_visual(enrich_app)
