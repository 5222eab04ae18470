"""The text the features stage reads: entity fields and training-window queries.

Entities (pins, products) are the catalogue, read whole; their enrich fields (captions,
board titles, engaged queries) come from ``enrich/`` when present and are empty otherwise.
Queries come from the engagement log, restricted to the training window
``[train_start, cutoff)`` of :class:`~omnisearchsage.split.TimeSplit`: a query typed only in
the test window must never reach a vocabulary or the queries table, or evaluation would see
its own answers. Enrich outputs are trusted to respect the same cutoff (the enrich stage
computes engaged queries up to it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import polars as pl

from omnisearchsage.contract import (
    BOARD_TITLES,
    CAPTIONS,
    ENGAGED_QUERIES,
    ENGAGEMENTS,
    LIST_FIELDS,
    PINS,
    PRODUCTS,
    TableSchema,
    Workspace,
)
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.text import has_words_expr, normalize_expr
from omnisearchsage.split import TimeSplit
from omnisearchsage.validate import read_table, validate_workspace

log = logging.getLogger(__name__)


@dataclass
class Sources:
    """Collected inputs: one frame per entity kind (id + one column per field) and queries."""

    pins: pl.DataFrame
    products: pl.DataFrame
    #: ``query`` (normalised, non-empty, unique) and ``weight`` (training-window occurrences).
    queries: pl.DataFrame
    #: Inputs that were absent, in words, for the manifest and the log.
    notes: list[str] = field(default_factory=list)


#: Enrich tables feeding entity fields, and how each becomes ``(<id>, <field>)`` for one entity type.
_ENRICH = {
    "caption": CAPTIONS,
    "board_titles": BOARD_TITLES,
    "engaged_queries": ENGAGED_QUERIES,
}


#: Columns of each enrich table this stage reads.
_READ_COLUMNS = {
    CAPTIONS.name: ("entity_type", "entity_id", "caption"),
    BOARD_TITLES.name: ("pin_id", "titles"),
    ENGAGED_QUERIES.name: ("entity_type", "entity_id", "queries"),
}


def _only(table: TableSchema, columns: tuple[str, ...]) -> TableSchema:
    return replace(table, columns=tuple(c for c in table.columns if c.name in columns))


def _enrich_field(table: pl.LazyFrame, name: str, id_col: str, entity_type: str) -> pl.LazyFrame:
    if name == "board_titles":  # pins only, keyed by pin_id
        return table.select(id_col, pl.col("titles").alias(name))
    value = "caption" if name == "caption" else "queries"
    return table.filter(pl.col("entity_type") == entity_type).select(
        pl.col("entity_id").alias(id_col), pl.col(value).alias(name))


def _entity_frame(ws: Workspace, schema: TableSchema, entity_type: str, fields: tuple[str, ...]) -> pl.DataFrame:
    """``<id>`` plus every field of ``fields`` (null where the entity has no such text)."""
    id_col = schema.key[0]
    if not ws.has(schema):
        return pl.DataFrame(schema={id_col: pl.Utf8, **{f: _dtype(f) for f in fields}})
    lf = read_table(ws, schema).select(id_col, *(f for f in fields if f not in _ENRICH))
    for name in fields:
        if name not in _ENRICH:
            continue
        if ws.has(_ENRICH[name]):
            lf = lf.join(_enrich_field(read_table(ws, _ENRICH[name]), name, id_col, entity_type),
                         on=id_col, how="left", maintain_order="left")
        else:
            lf = lf.with_columns(pl.lit(None, dtype=_dtype(name)).alias(name))
    return lf.select(id_col, *fields).collect()


def _dtype(name: str) -> pl.DataType:
    return pl.List(pl.Utf8) if name in LIST_FIELDS else pl.Utf8()


def training_queries(ws: Workspace, split: TimeSplit) -> pl.DataFrame:
    """Distinct normalised queries of the training window with their occurrence counts.

    A query occurs once per engagement it was typed in, and once per click on it as a
    related query (``entity_type = 'query'``, whose ``entity_id`` is the query text).
    """
    window = read_table(ws, ENGAGEMENTS).filter(
        (pl.col("ts") >= split.train_start) & (pl.col("ts") < split.train_end)
    )
    typed = window.select(text=pl.col("query"))
    related = window.filter(pl.col("entity_type") == "query").select(text=pl.col("entity_id"))
    counted = (
        pl.concat([typed, related])
        .group_by("text")
        .agg(weight=pl.len())
        .select(query=normalize_expr(pl.col("text")), weight="weight")
        .with_columns(usable=has_words_expr(pl.col("query")))
        .collect(engine="streaming")
    )
    empty = counted.filter(~pl.col("usable")).get_column("weight").sum()
    if empty:
        log.warning("%s: column query: %d training-window occurrences of queries without a word (empty, "
                    "whitespace, NUL, zero-width or punctuation only) left out of the queries table",
                    ENGAGEMENTS.relpath, empty)
    queries = (counted.lazy().filter("usable").group_by("query").agg(pl.col("weight").sum().cast(pl.Int64))
               .sort("query").collect())
    if queries.height == 0:
        log.warning("%s: no query in the training window [%s, %s): the queries table is empty",
                    ENGAGEMENTS.relpath, f"{split.train_start:%Y-%m-%d}", f"{split.train_end:%Y-%m-%d}")
    return queries


def load_sources(ws: Workspace, cfg: FeatureConfig, split: TimeSplit) -> Sources:
    """Validate the inputs, then read them. Nothing is written."""
    validate_workspace(ws)
    # Only the columns read here are checked (scores, image hashes ... are other stages' business).
    present = [_only(t, _READ_COLUMNS[t.name]) for t in _ENRICH.values() if ws.has(t)]
    if present:
        validate_workspace(ws, tables=present)
    pin_fields = cfg.pin_fields if "pins" in cfg.tables else ()
    product_fields = cfg.product_fields if "products" in cfg.tables else ()
    notes = [f"{t.relpath} absent: no {t.name} rows" for t in (PINS, PRODUCTS) if not ws.has(t)]
    notes += [f"{table.relpath} absent: {name} fields are empty" for name, table in _ENRICH.items()
              if not ws.has(table) and name in pin_fields + product_fields]
    pins = _entity_frame(ws, PINS, "pin", pin_fields)
    products = _entity_frame(ws, PRODUCTS, "product", product_fields)
    queries = training_queries(ws, split) if "queries" in cfg.tables else pl.DataFrame(
        schema={"query": pl.Utf8, "weight": pl.Int64})
    for note in notes:
        log.info(note)
    return Sources(pins, products, queries, notes)


def training_corpus(sources: Sources) -> pl.DataFrame:
    """Every text the vocabularies are counted on, as distinct ``text`` with a ``weight``.

    Entity fields count once per entity (a list field once per element); queries count once
    per training-window occurrence. Identical texts are merged, so each is tokenised once.
    """
    parts = [sources.queries.lazy().select(text="query", weight="weight")]
    for frame in (sources.pins, sources.products):
        for name in frame.columns[1:]:
            texts = frame.lazy().select(text=pl.col(name))
            if name in LIST_FIELDS:
                texts = texts.explode("text")
            parts.append(texts.drop_nulls("text").select("text", weight=pl.lit(1, dtype=pl.Int64)))
    return (
        pl.concat(parts)
        .group_by("text")
        .agg(pl.col("weight").sum())
        .collect(engine="streaming")
    )
