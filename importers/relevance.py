"""``omni import relevance``: a graded query→product relevance set becomes a workspace.

Input, in the format of ``shared/data/crowdflower`` (UTF-8 CSV with a header):

- ``products.csv``: ``product_id``, ``title`` and optionally ``description``, ``brand``;
- ``train.csv`` and ``test.csv``: ``query``, ``product_id``, ``label`` (numeric grade).

Output (``WS/raw/``): ``products.parquet`` (the catalogue, with a sentence-encoder
``legacy_embedding`` when one is available), ``engagements.parquet`` (one engagement
per *positive* pair, ``label >= positive_min``: train pairs inside the training window,
test pairs inside the test window of the default time split), ``relevance_labels.parquet``
(every label of both files, for nDCG) and ``relevance.json`` (how it was imported).
After that, ``omni features build``, ``omni train`` and ``omni eval`` run unchanged.

Every file is checked before anything is written; a problem is one :class:`OmniError`
naming the file, the column and up to three rows (CSV line numbers, header = line 1).
Duplicate (query, product) rows are merged to the median label, as the CrowdFlower
README does.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from omnisearchsage.atomic import write_json, write_parquet
from omnisearchsage.contract import ENGAGEMENTS, PRODUCTS, RELEVANCE_LABELS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.importers.config import RelevanceImportConfig
from omnisearchsage.split import TimeSplit
from omnisearchsage.text_encoders import (
    EMBED_AUTO,
    encode_texts,
    encoder_pooling,
    encoder_text,
    resolve_embed_model,
)
from omnisearchsage.validate import not_regular

log = logging.getLogger(__name__)

PRODUCT_COLUMNS = ("product_id", "title")
OPTIONAL_PRODUCT_COLUMNS = ("description", "brand")
PAIR_COLUMNS = ("query", "product_id", "label")
#: Offending rows quoted in an error message.
_MAX_ROWS = 3
#: CSV line of data row 0 (line 1 is the header).
_FIRST_LINE = 2


def held_out_queries(queries: list[str], share: float) -> list[str]:
    """A fixed ``share`` of training ``queries`` held out for choosing settings without the test set.

    Picked by an MD5 of the lower-cased text (salted, so never the test split's rule): the same queries
    every run and on every machine, and a query's case variants fall on the same side.
    ``bench/lexical_channel.py`` scores them in place; ``bench/holdout_split.py`` writes them out as
    the test file of a validation workspace.
    """
    cut = int(share * 1000)
    return [q for q in queries if int(hashlib.md5(("holdout:" + q.lower()).encode()).hexdigest(), 16) % 1000 < cut]


def _rows(frame: pl.DataFrame, mask: pl.Expr, column: str) -> str:
    """``line N ('value')`` for the first offending rows, for an error message."""
    bad = frame.with_row_index("line", offset=_FIRST_LINE).filter(mask).head(_MAX_ROWS)
    return ", ".join(f"line {line} ({value!r})" for line, value in zip(bad["line"], bad[column]))


def read_csv(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """The CSV as strings (nothing inferred), with its required columns checked."""
    if (why := not_regular(path)) is not None:  # a FIFO or a device would block or never end
        raise OmniError(f"{path}: {'file not found' if why == 'missing' else why}")
    try:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
    except (pl.exceptions.ComputeError, UnicodeDecodeError, pl.exceptions.NoDataError) as e:
        raise OmniError(f"{path}: not a readable UTF-8 CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise OmniError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    return frame.with_columns(pl.col(pl.Utf8).str.strip_chars())


def read_products(path: Path) -> pl.DataFrame:
    """Products with non-empty unique ids; empty text becomes null."""
    frame = read_csv(path, PRODUCT_COLUMNS)
    empty = pl.col("product_id").fill_null("") == ""
    if frame.select(empty.any()).item():
        raise OmniError(f"{path}: column product_id is empty at {_rows(frame, empty, 'product_id')}")
    dup = pl.col("product_id").is_duplicated()
    if frame.select(dup.any()).item():
        raise OmniError(f"{path}: column product_id has duplicates at {_rows(frame, dup, 'product_id')}")
    text_cols = [c for c in ("title", *OPTIONAL_PRODUCT_COLUMNS) if c in frame.columns]
    return frame.select(
        "product_id", *(pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in text_cols)
    )


def read_pairs(path: Path, product_ids: pl.Series) -> pl.DataFrame:
    """(query, product_id, label float) with every check; duplicates merged to the median label."""
    frame = read_csv(path, PAIR_COLUMNS)
    empty = pl.col("query").fill_null("") == ""
    if frame.select(empty.any()).item():
        raise OmniError(f"{path}: column query is empty at {_rows(frame, empty, 'query')}")
    label = pl.col("label").cast(pl.Float64, strict=False)
    bad = label.is_null() | label.is_nan() | label.is_infinite()
    if frame.select(bad.any()).item():
        raise OmniError(f"{path}: column label is not a number at {_rows(frame, bad, 'label')}")
    unknown = ~pl.col("product_id").is_in(product_ids.implode())
    if frame.select(unknown.any()).item():
        raise OmniError(f"{path}: column product_id names products not in products.csv at "
                        f"{_rows(frame, unknown, 'product_id')}")
    pairs = frame.select("query", "product_id", label.alias("label"))
    merged = pairs.group_by("query", "product_id", maintain_order=True).agg(pl.col("label").median())
    if len(merged) < len(pairs):
        log.info("%s: %d duplicate (query, product_id) rows merged to their median label",
                 path, len(pairs) - len(merged))
    return merged


def engagements(labels: pl.DataFrame, split: TimeSplit, cfg: RelevanceImportConfig) -> pl.DataFrame:
    """One engagement per positive pair, timestamped inside its split's window.

    Test pairs sit one microsecond before the test window's end, so the split
    ``TimeSplit.for_workspace`` derives from the last engagement is exactly ``split``.
    Train pairs get one timestamp per query, spread (by the query's rank in sort order)
    over the ``train_spread_days`` before the cutoff, so they look like logs of different days.
    """
    day = pl.col("query").rank("dense").cast(pl.Int64) % cfg.train_spread_days
    train_ts = pl.lit(split.train_end - timedelta(days=cfg.train_spread_days)) + pl.duration(days=day)
    test_ts = pl.lit(split.test_end - timedelta(microseconds=1))
    return labels.filter("positive").select(
        pl.when(pl.col("split") == "test").then(test_ts).otherwise(train_ts).cast(ENGAGEMENTS.column("ts").dtype)
        .alias("ts"),
        "query",
        pl.lit("product").alias("entity_type"),
        pl.col("product_id").alias("entity_id"),
        pl.lit(cfg.action).alias("action"),
        pl.lit(None, pl.Utf8).alias("lang"),
    ).sort("ts", "query", "entity_id")


def import_relevance(
    products_csv: Path, train_csv: Path, test_csv: Path, out: Path, cfg: RelevanceImportConfig
) -> dict[str, Any]:
    """Build workspace ``out`` from a relevance set; returns counts (also in raw/relevance.json)."""
    ws = Workspace(out)
    existing = [t.relpath for t in (PRODUCTS, ENGAGEMENTS, RELEVANCE_LABELS) if ws.has(t)]
    if existing and not cfg.force:
        raise OmniError(f"{out}: already has {', '.join(existing)}; pass --force to replace them")
    products = read_products(products_csv)
    train = read_pairs(train_csv, products["product_id"]).with_columns(split=pl.lit("train"))
    test = read_pairs(test_csv, products["product_id"]).with_columns(split=pl.lit("test"))
    labels = pl.concat([train, test]).with_columns(positive=pl.col("label") >= cfg.positive_min)
    both = labels.group_by("query").agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)
    if len(both):
        raise OmniError(f"{test_csv}: column query repeats train queries (e.g. {both['query'].head(_MAX_ROWS).to_list()}); "
                        "a relevance split must be by query")
    if not labels.filter((pl.col("split") == "test") & pl.col("positive")).height:
        raise OmniError(f"{test_csv}: column label has no value >= {cfg.positive_min} (--positive-min); "
                        "nothing to evaluate")
    split = TimeSplit.from_test_end(cfg.test_end, cfg.split)
    model_dir = resolve_embed_model(cfg.embed_model)
    if model_dir is not None:
        texts = products.select(encoder_text(products.columns).alias("text"))["text"].to_list()
        emb = encode_texts(model_dir, texts, cfg.embed_max_tokens, cfg.embed_batch_size, cfg.embed_bf16)
        products = products.with_columns(pl.Series("legacy_embedding", emb, dtype=PRODUCTS.column(
            "legacy_embedding").dtype))
    events = engagements(labels, split, cfg)
    dataset = cfg.dataset or products_csv.resolve().parent.name
    stats = {
        "dataset": dataset,
        "products": len(products),
        "positive_min": cfg.positive_min,
        "label_min": float(labels["label"].min()),
        "label_max": float(labels["label"].max()),
        "legacy_model": None if model_dir is None else model_dir.name,
        "legacy_model_path": None if model_dir is None else str(model_dir),
        "split": split.to_json(),
        "import_config": {k: v for k, v in asdict(cfg).items() if k != "split"},
        **{f"{name}_{what}": n for name, part in (("train", train), ("test", test))
           for what, n in (("pairs", len(part)), ("queries", part["query"].n_unique()),
                           ("positive_pairs", int((part["label"] >= cfg.positive_min).sum())))},
    }
    schema = PRODUCTS.polars_schema
    write_parquet(products.select(pl.col(c).cast(schema[c]) for c in products.columns), ws.path(PRODUCTS))
    write_parquet(events, ws.path(ENGAGEMENTS))
    split.record(ws, cfg.split, split.test_end - timedelta(microseconds=1))  # the test pairs sit there
    write_parquet(labels.select(c.name for c in RELEVANCE_LABELS.columns), ws.path(RELEVANCE_LABELS))
    write_json(stats, ws.relevance_meta)
    if model_dir is None:
        ws.legacy_encoder.unlink(missing_ok=True)
    else:  # lets `omni train` query the products' embedding space with the same encoder (trainer/anchor.py)
        spec = cfg.embed_model if cfg.embed_model == EMBED_AUTO else str(model_dir.resolve())
        write_json({"kinds": ["product"], "model": spec, "pooling": encoder_pooling(model_dir)}, ws.legacy_encoder)
    log.info("imported %s: %d products, %d engagements", dataset, len(products), len(events))
    return stats
