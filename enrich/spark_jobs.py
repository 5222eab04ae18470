"""Board titles and engaged queries on Spark: the DuckDB stages' SQL, run by another engine.

Each function mirrors its DuckDB twin step for step (same SQL constants, same
parameters, same validation, same stats) and writes the same tables, so a workspace
enriched on a cluster and one enriched on a laptop are interchangeable, including as
``--previous`` for each other's incremental runs. See :mod:`omnisearchsage.enrich.spark`
for how the SQL is rendered and where the dialects differ.
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from omnisearchsage.contract import (
    BOARD_PINS,
    BOARD_TITLES,
    BOARDS,
    ENGAGED_QUERIES,
    ENGAGED_QUERY_COUNTS,
    ENGAGEMENTS,
    PINS,
    PRODUCTS,
    Workspace,
)
from omnisearchsage.enrich import boards, queries
from omnisearchsage.enrich.config import BoardsConfig, QueriesConfig
from omnisearchsage.enrich.spark import register_sources, run_sql, write_single_parquet
from omnisearchsage.errors import OmniError
from omnisearchsage.validate import validate_workspace

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def build_board_titles_spark(ws: Workspace, spark: SparkSession, cfg: BoardsConfig | None = None) -> dict[str, Any]:
    """:func:`~omnisearchsage.enrich.boards.build_board_titles` on Spark (same table, same stats).

    ``cfg.memory_limit`` and ``cfg.threads`` are DuckDB's and are ignored: Spark's
    resources come from the session.
    """
    cfg = cfg or BoardsConfig()
    if not (ws.has(BOARDS) and ws.has(BOARD_PINS)):  # nothing to aggregate: the empty table as DuckDB writes it
        return boards.build_board_titles(ws, cfg)
    started = time.perf_counter()
    validate_workspace(ws, tables=[t.name for t in (PINS, BOARDS, BOARD_PINS) if ws.has(t)])
    register_sources(spark, {"boards": ws.path(BOARDS), "board_pins": ws.path(BOARD_PINS)})
    run_sql(spark, boards.TITLE_MAP_SQL)
    titles = run_sql(
        spark,
        boards.BOARD_TITLES_SQL,
        {"k": cfg.max_titles, "w_freq": cfg.frequency_weight, "w_prev": cfg.prevalence_weight},
    )
    write_single_parquet(titles, ws.path(BOARD_TITLES))
    stats = boards._stats(ws)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def previous_range(path: Path) -> tuple[date, date]:
    """The days an earlier counts table covers (pyarrow's reading of DuckDB's ``_previous_range``)."""
    try:
        meta = pq.read_metadata(path).metadata or {}
        columns = set(pq.read_schema(path).names)
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise OmniError(f"{path}: unreadable counts table ({e})") from e
    meta = {k.decode(): v.decode() for k, v in meta.items()}
    missing = [c.name for c in ENGAGED_QUERY_COUNTS.columns if c.name not in columns]
    if missing or queries.META_START not in meta or queries.META_CUTOFF not in meta:
        what = f"column {missing[0]!r}" if missing else f"metadata {queries.META_START!r}/{queries.META_CUTOFF!r}"
        raise OmniError(f"{path}: not an engaged-query counts table (missing {what})")
    return date.fromisoformat(meta[queries.META_START]), date.fromisoformat(meta[queries.META_CUTOFF])


def build_engaged_queries_spark(
    ws: Workspace, spark: SparkSession, cfg: QueriesConfig | None = None, previous: Path | None = None
) -> dict[str, Any]:
    """:func:`~omnisearchsage.enrich.queries.build_engaged_queries` on Spark, incremental merge included.

    The counts table is written first (with its window as key-value metadata), then read
    back and ranked, as the DuckDB engine ranks its temporary counts table.
    ``cfg.memory_limit`` and ``cfg.threads`` are DuckDB's and are ignored.
    """
    cfg = cfg or QueriesConfig()
    started = time.perf_counter()
    validate_workspace(ws, tables=[t.name for t in (ENGAGEMENTS, PINS, PRODUCTS) if ws.has(t)])
    cutoff = queries.effective_cutoff(ws, cfg)
    start = cutoff - timedelta(days=cfg.window_days)
    counts_path, out = ws.path(ENGAGED_QUERY_COUNTS), ws.path(ENGAGED_QUERIES)
    prev_start = prev_cutoff = start
    sources = [queries.RAW_COUNTS_SQL]
    params: dict[str, Any] = {}
    register_sources(spark, {"engagements": ws.path(ENGAGEMENTS)})
    if previous is not None:
        previous = queries.resolve_previous(previous)
        prev_start, prev_cutoff = previous_range(previous)
        log.info("merging counts for [%s, %s) from %s", prev_start, prev_cutoff, previous)
        # Read before the new counts replace it (write_single_parquet renames only once complete).
        register_sources(spark, {"previous": previous})
        sources.append(queries.PREVIOUS_COUNTS_SQL)
        params |= {"start_day": start, "cutoff_day": cutoff, "prev_start_day": prev_start,
                   "prev_cutoff_day": prev_cutoff}
    params |= {
        "start": queries._midnight(start),
        "cutoff": queries._midnight(cutoff),
        "prev_start": queries._midnight(prev_start),
        "prev_cutoff": queries._midnight(prev_cutoff),
    }
    run_sql(spark, queries.QUERY_MAP_SQL, params)
    counts = run_sql(spark, " UNION ALL ".join(f"({s})" for s in sources), params)
    write_single_parquet(
        counts, counts_path, metadata=queries.counts_metadata(cfg, start, cutoff)
    )
    spark.read.parquet(str(counts_path)).createOrReplaceTempView("counts")
    sql, top_params = queries.top_queries_sql(cfg)
    write_single_parquet(run_sql(spark, sql, {"k": cfg.top_k, **top_params}), out)
    events = spark.sql("SELECT sum(n) FROM counts").collect()[0][0]
    stats = queries._stats(ws)
    stats |= {
        "cutoff": cutoff.isoformat(),
        "window_start": start.isoformat(),
        "incremental": previous is not None,
        "events": int(events or 0),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return stats
