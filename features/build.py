"""``omni features build``: vocabularies and per-entity token-id tables for one workspace.

Steps: validate the inputs; read entity text and training-window queries
(:mod:`~omnisearchsage.features.sources`); count and select the three vocabularies
(:mod:`~omnisearchsage.features.vocab`); encode every field of every pin, product and
training query with the resulting :class:`~omnisearchsage.features.featurizer.Featurizer`;
write ``features/`` with its manifest.

The whole ``features/`` folder is assembled under a temporary name and renamed into place,
so an interrupted build leaves the previous build intact, never a new vocabulary next to old
tables. Tables are written in row groups of ``batch_rows`` entities, so the large world's
tables never sit in memory whole.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import (
    FEATURE_PINS,
    FEATURE_PRODUCTS,
    FEATURE_QUERIES,
    PIN_FIELDS,
    PRODUCT_FIELDS,
    QUERY_FIELDS,
    TableSchema,
    Workspace,
)
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.featurizer import Featurizer, id_lists
from omnisearchsage.features.sources import load_sources, training_corpus
from omnisearchsage.features.vocab import TokenCounter, build_vocabularies
from omnisearchsage.progress import progress_bar
from omnisearchsage.split import TimeSplit

log = logging.getLogger(__name__)

_TABLES: dict[str, tuple[TableSchema, tuple[str, ...]]] = {
    "pins": (FEATURE_PINS, PIN_FIELDS),
    "products": (FEATURE_PRODUCTS, PRODUCT_FIELDS),
    "queries": (FEATURE_QUERIES, QUERY_FIELDS),
}


def build_features(ws: Workspace, cfg: FeatureConfig | None = None, counter: TokenCounter | None = None
                   ) -> dict[str, Any]:
    """Build ``ws/features`` and return its manifest (config, id space and the build's stats).

    ``counter`` counts the vocabulary tokens (default: Polars in this process; see
    :func:`~omnisearchsage.features.vocab.build_vocabularies`)."""
    cfg = cfg or FeatureConfig()
    split = TimeSplit.for_workspace(ws)
    sources = load_sources(ws, cfg, split)
    corpus = training_corpus(sources)
    log.info("counting tokens over %d distinct training-window texts", corpus.height)
    vocabs, vocab_stats = build_vocabularies(corpus, cfg, counter)
    featurizer = Featurizer(vocabs, cfg)
    frames = {
        "pins": sources.pins,
        "products": sources.products,
        "queries": sources.queries.select("query", text="query"),
    }
    table_stats = {}
    with atomic_path(ws.features) as tmp:
        for name in cfg.tables:
            schema, fields = _TABLES[name]
            table_stats[name] = _write_table(featurizer, frames[name], schema, fields,
                                             tmp / schema.relpath.removeprefix("features/"))
        featurizer.info = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "split": split.to_json(),
            "corpus_texts": corpus.height,
            "vocab": {k: v for k, v in vocab_stats.items() if k != "oov_rate"},
            "coverage": {k: v["coverage"] for k, v in vocab_stats.items() if k != "oov_rate"},
            "oov_rate": vocab_stats["oov_rate"],
            "tables": table_stats,
            "notes": sources.notes,
        }
        featurizer.save(tmp)
    return featurizer.manifest()


def _write_table(featurizer: Featurizer, frame: pl.DataFrame, schema: TableSchema,
                 fields: tuple[str, ...], path: Path) -> dict[str, Any]:
    """Encode ``frame`` field by field and stream it to ``path``; return rows and field coverage.

    Fields absent from ``frame`` (not selected, or no such input) are written as empty lists,
    so every table always has its contract columns.
    """
    id_col = schema.key[0]
    batch = featurizer.cfg.batch_rows
    non_empty = dict.fromkeys(fields, 0)
    writer: pq.ParquetWriter | None = None
    with progress_bar(frame.height, f"features {schema.name}", "row") as bar:
        for start in range(0, max(frame.height, 1), batch):
            chunk = frame.slice(start, batch)
            columns = [chunk.get_column(id_col).cast(pl.Utf8)]
            for name in fields:
                if name in chunk.columns:
                    ids = featurizer.encode_field(chunk.get_column(name))
                else:
                    ids = id_lists(np.empty(0, np.int64), np.zeros(chunk.height, np.int64))
                non_empty[name] += int((ids.list.len() > 0).sum())
                columns.append(ids.alias(name))
            table = pl.DataFrame(columns).to_arrow()
            if writer is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
            bar.advance(chunk.height)
    if writer is not None:
        writer.close()
    rows = frame.height
    log.info("features/%s.parquet: %d rows", schema.name, rows)
    return {"rows": rows, "field_coverage": {f: (n / rows if rows else 0.0) for f, n in non_empty.items()}}
