"""Vocabulary token counts on Spark: the Polars tokenizer in every executor, the reduction in Spark.

:func:`count_tokens_spark` returns exactly what
:func:`~omnisearchsage.features.vocab.count_tokens` returns: each partition of the
corpus is tokenised by :func:`~omnisearchsage.features.text.token_frames` (the one
tokenizer every stage uses, so ids cannot drift between engines), reduced per batch,
and the partial counts are summed by a Spark ``groupBy``. Selecting the capped
vocabularies from the counts stays with :func:`~omnisearchsage.features.vocab.select_vocab`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from omnisearchsage.contract import VOCAB_KINDS
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.text import token_frames

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_PARTIAL = pa.schema([("kind", pa.string()), ("token", pa.string()), ("count", pa.int64())])


def _partial_counts(batches: Iterator[pa.RecordBatch], cfg: FeatureConfig) -> Iterator[pa.RecordBatch]:
    """Weighted token counts of each Arrow batch of ``(text, weight)``, one frame per batch."""
    for batch in batches:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        texts, weights = frame.get_column("text"), frame.get_column("weight").cast(pl.Int64)
        parts = [
            tokens.with_columns(weight=weights.gather(tokens.get_column("row")))
            .group_by("token")
            .agg(count=pl.col("weight").sum())
            .select(kind=pl.lit(kind), token="token", count="count")
            for kind, tokens in token_frames(texts, cfg).items()
        ]
        yield from pl.concat(parts).to_arrow().cast(_PARTIAL).to_batches()


def count_tokens_spark(spark: SparkSession, corpus: pl.DataFrame, cfg: FeatureConfig) -> dict[str, pl.DataFrame]:
    """:func:`~omnisearchsage.features.vocab.count_tokens` with Spark doing the work.

    ``corpus`` (distinct ``text`` with a ``weight``) is split into one partition per
    ``cfg.batch_rows`` texts, at least one per core Spark has; Arrow batches within a
    partition hold at most ``cfg.batch_rows`` texts, which bounds each worker's memory
    as the Polars engine's batches do.
    """
    from pyspark.sql import functions as F

    table = corpus.select(pl.col("text").cast(pl.Utf8), pl.col("weight").cast(pl.Int64)).to_arrow()
    partitions = max(spark.sparkContext.defaultParallelism, -(-corpus.height // cfg.batch_rows), 1)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.batch_rows))
    texts = spark.createDataFrame(table).repartition(partitions)
    counts = (
        texts.mapInArrow(lambda batches: _partial_counts(batches, cfg), "kind string, token string, count long")
        .groupBy("kind", "token")
        .agg(F.sum("count").alias("count"))
    )
    result = pl.from_arrow(counts.toArrow())
    assert isinstance(result, pl.DataFrame)
    log.info("spark counted %d distinct tokens over %d texts in %d partitions", result.height, corpus.height,
             partitions)
    return {
        kind: result.filter(pl.col("kind") == kind).select("token", pl.col("count").cast(pl.Int64))
        for kind in VOCAB_KINDS
    }
