"""Baselines ranked on the same pairs as the model: BM25 over entity text, and random.

- ``bm25-title``: BM25 over the entity's title only (the CrowdFlower README's strongest
  reference);
- ``bm25-text``: over the raw entity text (pins: title + description; products: title +
  description + brand), i.e. token-based retrieval without any enrichment;
- ``bm25-text+queries``: the same plus the entity's engaged queries
  (``enrich/engaged_queries.parquet``, built with the time split's cutoff, so no test query);
- ``random``: uniform random scores; Recall@K is K / candidates in expectation.

BM25 is `bm25s <https://github.com/xhluca/bm25s>`_ (Lucene variant, k1 = 1.5, b = 0.75)
over lower-case ``\\w+`` tokens of the normalised text, without stop words or stemming,
which is how the CrowdFlower README computed its reference figures. For the query→query
task the candidates are query strings: only ``bm25-text`` applies (over the query text).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import bm25s
import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import ENGAGED_QUERIES, PINS, PRODUCTS, Workspace
from omnisearchsage.evaluation.scoring import RandomScorer, Scorer
from omnisearchsage.features.text import normalize
from omnisearchsage.validate import read_table

log = logging.getLogger(__name__)
# bm25s logs every index build at DEBUG on its own handler; one line per baseline is noise here.
logging.getLogger("bm25s").setLevel(logging.WARNING)

#: The regular expression the CrowdFlower reference BM25 tokenised with (lower-case ``\w+``).
TOKEN_PATTERN = r"(?u)\b\w+\b"
#: Raw text columns per entity type and BM25 variant (engaged queries are added separately).
TEXT_FIELDS = {
    "pin": {"bm25-title": ("title",), "bm25-text": ("title", "description")},
    "product": {"bm25-title": ("title",), "bm25-text": ("title", "description", "brand")},
}
_SCHEMAS = {"pin": (PINS, "pin_id"), "product": (PRODUCTS, "product_id")}


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Normalised (NFKC, case-folded) texts split into ``\\w+`` tokens."""
    return bm25s.tokenize(
        [normalize(t) for t in texts],
        lower=True,
        token_pattern=TOKEN_PATTERN,
        stopwords=None,
        return_ids=False,
        show_progress=False,
    )


class BM25Scorer:
    """BM25 scores of each query against every document, one query row at a time."""

    def __init__(self, queries: Sequence[str], documents: Sequence[str]) -> None:
        self.model = bm25s.BM25()
        self.model.index(tokenize(documents), show_progress=False)
        self.query_tokens = tokenize(queries)
        self._n = len(documents)

    @property
    def n_candidates(self) -> int:
        return self._n

    def block(self, rows: np.ndarray) -> torch.Tensor:
        # bm25s scores one query per call (a sparse column sum); a query with no token
        # (empty after normalisation) scores 0 everywhere.
        out = np.zeros((len(rows), self._n), dtype=np.float32)
        for i, r in enumerate(rows):
            if self.query_tokens[r]:
                out[i] = self.model.get_scores(self.query_tokens[r])
        return torch.from_numpy(out)


def entity_texts(ws: Workspace, entity_type: str, ids: Sequence[str], variant: str) -> list[str]:
    """The text BM25 ``variant`` indexes for each of ``ids`` (a missing field is empty)."""
    schema, id_col = _SCHEMAS[entity_type]
    base = "bm25-text" if variant == "bm25-text+queries" else variant
    fields = TEXT_FIELDS[entity_type][base]
    text = pl.concat_str([pl.col(f).fill_null("") for f in fields], separator=" ")
    frame = read_table(ws, schema).select(pl.col(id_col).alias("id"), text.alias("text"))
    if variant == "bm25-text+queries" and ws.has(ENGAGED_QUERIES):
        queries = (
            pl.scan_parquet(ws.path(ENGAGED_QUERIES))
            .filter(pl.col("entity_type") == entity_type)
            .select(pl.col("entity_id").alias("id"), pl.col("queries").list.join(" ").alias("eq"))
        )
        frame = frame.join(queries, on="id", how="left").select(
            "id", pl.concat_str([pl.col("text"), pl.col("eq").fill_null("")], separator=" ").alias("text")
        )
    wanted = pl.LazyFrame({"id": list(ids)}, schema={"id": pl.Utf8})
    return wanted.join(frame, on="id", how="left", maintain_order="left").collect()["text"].fill_null("").to_list()


class BaselineScorers:
    """The baselines' scorers of one candidate set and one query list, each built once.

    Two BM25 variants that index the very same text share one scorer, so its index is built and its
    rankings computed once: a catalogue whose products have a title and nothing else (Home Depot)
    makes ``bm25-text`` identical to ``bm25-title``, and each of them costs a pass over every query.
    """

    def __init__(self, ws: Workspace, entity_type: str, queries: Sequence[str], ids: Sequence[str],
                 seed: int) -> None:
        self.ws, self.entity_type, self.queries, self.ids, self.seed = ws, entity_type, queries, ids, seed
        self._by_text: dict[tuple[str, ...], BM25Scorer] = {}

    def get(self, name: str) -> Scorer | None:
        """The scorer of baseline ``name``; ``None`` where it does not apply.

        ``bm25-text+queries`` needs the engaged-queries table and is skipped without it; for
        query candidates only ``bm25-text`` and ``random`` apply.
        """
        if name == "random":
            return RandomScorer(len(self.ids), self.seed)
        if self.entity_type == "query":
            return BM25Scorer(self.queries, self.ids) if name == "bm25-text" else None
        if name == "bm25-text+queries" and not self.ws.has(ENGAGED_QUERIES):
            log.info("baseline %s skipped: %s is missing", name, self.ws.path(ENGAGED_QUERIES))
            return None
        texts = entity_texts(self.ws, self.entity_type, self.ids, name)
        key = tuple(" ".join(t.split()) for t in texts)  # empty fields only add spaces, which BM25 ignores
        if key in self._by_text:
            log.info("baseline %s indexes the same text as another BM25 variant: scored once", name)
        else:
            self._by_text[key] = BM25Scorer(self.queries, texts)
        return self._by_text[key]


def baseline_scorer(
    ws: Workspace, name: str, entity_type: str, queries: Sequence[str], ids: Sequence[str], seed: int
) -> Scorer | None:
    """The scorer of one baseline ``name`` over candidates ``ids`` (:meth:`BaselineScorers.get`)."""
    return BaselineScorers(ws, entity_type, queries, ids, seed).get(name)
