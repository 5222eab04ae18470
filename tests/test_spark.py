"""The Spark engine writes what the DuckDB / Polars engines write, on the tiny world.

One local Spark session serves the whole module (starting one takes seconds), so the
checks are few and each covers a whole stage.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from omnisearchsage.cli.app import app
from omnisearchsage.contract import (
    BOARD_TITLES,
    ENGAGED_QUERIES,
    ENGAGED_QUERY_COUNTS,
    VOCAB_KINDS,
    TableSchema,
    Workspace,
)
from omnisearchsage.enrich.boards import build_board_titles
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.queries import build_engaged_queries
from omnisearchsage.enrich.spark import SparkConfig, get_session
from omnisearchsage.enrich.spark_jobs import build_engaged_queries_spark
from omnisearchsage.features.build import build_features
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.sources import load_sources, training_corpus
from omnisearchsage.features.spark_vocab import count_tokens_spark
from omnisearchsage.features.vocab import count_tokens
from omnisearchsage.split import TimeSplit

_SORT = {
    BOARD_TITLES.name: ["pin_id"],
    ENGAGED_QUERIES.name: ["entity_type", "entity_id"],
    ENGAGED_QUERY_COUNTS.name: ["entity_type", "entity_id", "query", "action", "day"],
}


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    session = get_session(SparkConfig(master="local[2]", shuffle_partitions=4))
    yield session
    session.stop()


def _copy(ws: Workspace, dst: Path) -> Workspace:
    shutil.copytree(ws.root, dst)
    return Workspace(dst)


def _same_table(a: Workspace, b: Workspace, table: TableSchema) -> None:
    x, y = (pl.read_parquet(w.path(table)).sort(_SORT[table.name]) for w in (a, b))
    assert x.height > 0
    assert x.schema == y.schema
    assert x.equals(y), f"{table.name} differs between engines"


def test_enrichment_identical_across_engines_incremental_included(spark, tiny_ws: Workspace, tmp_path: Path) -> None:
    on_spark, on_duck = _copy(tiny_ws, tmp_path / "spark"), _copy(tiny_ws, tmp_path / "duck")
    # Board titles through the CLI (it reuses the module's running session and leaves it running).
    result = CliRunner().invoke(app, ["enrich", "boards", "-w", str(on_spark.root), "--engine", "spark"])
    assert result.exit_code == 0, result.output
    duck_stats = build_board_titles(on_duck)
    assert f"{duck_stats['pins_with_titles']:,} pins" in result.output
    _same_table(on_spark, on_duck, BOARD_TITLES)

    cutoff = TimeSplit.for_workspace(tiny_ws).cutoff.date()
    # A one-year window ending a month early, then the same window slid to the cutoff with
    # each engine merging into the *other* engine's counts (their metadata must interoperate).
    early = QueriesConfig(cutoff=cutoff - timedelta(days=30), window_days=365, unknown_action_weight=0.5)
    first_spark = build_engaged_queries_spark(on_spark, spark, early)
    first_duck = build_engaged_queries(on_duck, early)
    assert first_spark["events"] == first_duck["events"] > 0
    for table in (ENGAGED_QUERY_COUNTS, ENGAGED_QUERIES):
        _same_table(on_spark, on_duck, table)
    prev_spark, prev_duck = tmp_path / "prev_spark.parquet", tmp_path / "prev_duck.parquet"
    shutil.copy(on_spark.path(ENGAGED_QUERY_COUNTS), prev_spark)
    shutil.copy(on_duck.path(ENGAGED_QUERY_COUNTS), prev_duck)

    late = replace(early, cutoff=cutoff, top_k=5)
    merged_spark = build_engaged_queries_spark(on_spark, spark, late, previous=prev_duck)
    merged_duck = build_engaged_queries(on_duck, late, previous=prev_spark)
    assert merged_spark["incremental"] and _without_time(merged_spark) == _without_time(merged_duck)
    for table in (ENGAGED_QUERY_COUNTS, ENGAGED_QUERIES):
        _same_table(on_spark, on_duck, table)
    # Both engines record the ranking beside the window (a point-in-time reader ranks as they did).
    meta = [pq.read_metadata(w.path(ENGAGED_QUERY_COUNTS)).metadata for w in (on_spark, on_duck)]
    assert meta[0][b"ranking"] == meta[1][b"ranking"] and json.loads(meta[0][b"ranking"])["top_k"] == 5
    # The merge took the new month from the raw log: the window moved.
    days = pl.read_parquet(on_spark.path(ENGAGED_QUERY_COUNTS)).get_column("day")
    assert days.max() >= cutoff - timedelta(days=30) > days.min()


def test_vocabulary_counts_and_tables_identical(spark, tiny_ws: Workspace, tmp_path: Path) -> None:
    cfg = FeatureConfig(batch_rows=700)  # several batches per partition
    corpus = training_corpus(load_sources(tiny_ws, cfg, TimeSplit.for_workspace(tiny_ws)))
    polars_counts, spark_counts = count_tokens(corpus, cfg), count_tokens_spark(spark, corpus, cfg)
    for kind, counts in polars_counts.items():
        assert counts.height > 0
        assert counts.sort("token").equals(spark_counts[kind].sort("token")), kind

    # End to end through the CLI: the vocabularies (ids included) match the Polars build.
    ws = _copy(tiny_ws, tmp_path / "ws")
    result = CliRunner().invoke(app, ["features", "build", "-w", str(ws.root), "--engine", "spark",
                                      "--batch-rows", "700"])
    assert result.exit_code == 0, result.output
    ref = _copy(tiny_ws, tmp_path / "ref")
    reference = build_features(ref, cfg)
    for kind in VOCAB_KINDS:
        assert pl.read_parquet(ws.vocab_path(kind)).equals(pl.read_parquet(ref.vocab_path(kind))), kind
    assert json.loads((ws.features / "manifest.json").read_text())["vocab"] == reference["vocab"]


def _without_time(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "seconds"}
