"""Leave-one-out engaged queries: a training positive does not read the engagement it stands for.

An entity's engaged queries are the queries of its engagements before the cutoff, and a training pair
``(q, e)`` is one of those engagements, so ``q`` is among ``e``'s engaged queries by construction: on
every training positive, whatever the log. A pair of the future finds its query there only if the same
query engaged the same entity before (about half the settled pins' test pairs on the sample world), and
a new entity has no engaged queries at all. A tower trained on the leaky field learns that "the query
is among the entity's engaged queries" all but decides a match; at evaluation it ranks every settled
entity whose engaged queries repeat the query above entities without them, and pushes new ones out of
the top results (README, *Evaluate*). This is target leakage, and the cure is target encoding's:
leave the example's own event out. For the pair ``(q, e)`` the entity tower reads ``e``'s engaged
queries without ``q``, unless the counts they were ranked from (``enrich/engaged_query_counts.parquet``)
hold another engagement of ``e`` by ``q``: what the pair would have seen had its engagement happened
after the cutoff.

Only the positive side of a pair changes; the same entity as a negative or in the exported index
reads its full engaged queries, as serving does. The reduced field is encoded with the run's
featurizer, exactly as ``omni features build`` encodes the full one.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from omnisearchsage.contract import ENGAGED_QUERIES, ENGAGED_QUERY_COUNTS, Workspace
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.inputs import Catalogue, TokenBags
from omnisearchsage.validate import read_table

if TYPE_CHECKING:  # data.py imports this module
    from omnisearchsage.trainer.data import TaskPairs

log = logging.getLogger(__name__)

#: The entity field this module rewrites.
FIELD = "engaged_queries"


def pairs_losing_query(ws: Workspace, kind: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """The distinct ``(entity_id, query)`` of ``pairs`` whose query is among the entity's engaged queries
    only through one engagement, with ``kept``: the entity's engaged queries without it, in rank order."""
    lists = (read_table(ws, ENGAGED_QUERIES).filter(pl.col("entity_type") == kind)
             .select("entity_id", "queries"))
    counts = (read_table(ws, ENGAGED_QUERY_COUNTS).filter(pl.col("entity_type") == kind)
              .group_by("entity_id", "query").agg(n=pl.col("n").sum()))
    losing = (pairs.lazy().select("entity_id", "query").unique()
              .join(lists, on="entity_id", how="inner")
              .filter(pl.col("queries").list.contains(pl.col("query")))
              .join(counts, on=["entity_id", "query"], how="left")
              .filter(pl.col("n").fill_null(0) <= 1)
              .sort("entity_id", "query")
              .with_row_index("k"))
    kept = (losing.select("k", "query", "queries").explode("queries")
            .filter(pl.col("queries") != pl.col("query"))
            .group_by("k").agg(kept=pl.col("queries")))
    return (losing.join(kept, on="k", how="left")
            .select("entity_id", "query", pl.col("kept").fill_null([]).cast(pl.List(pl.Utf8)))
            .collect())


def leave_one_out(ws: Workspace, featurizer: Featurizer, catalogues: dict[str, Catalogue],
                  tasks: list[TaskPairs], fields: tuple[str, ...]) -> int | None:
    """Give the positives of ``tasks`` (pin and product tasks) their left-out engaged queries: appends one
    extra bag per distinct (entity, query) that loses its query to the catalogue's bags
    (:meth:`TokenBags.with_extra`) and sets each task's ``positive_bags``. Returns the index of
    :data:`FIELD` in ``fields``, or None (nothing changed) when the run reads no engaged queries or the
    workspace has no counts."""
    if FIELD not in fields or not (ws.has(ENGAGED_QUERIES) and ws.has(ENGAGED_QUERY_COUNTS)):
        return None
    queries = catalogues["query"].keys
    for kind in sorted({t.candidate for t in tasks}):
        cat = catalogues[kind]
        frames = {t.name: pl.DataFrame({"entity_id": cat.keys.gather(t.cand_rows), "query": queries.gather(t.query_rows)})
                  for t in tasks if t.candidate == kind}
        losing = pairs_losing_query(ws, kind, pl.concat(frames.values()))
        first = len(cat.bags.bounds) - 1
        cat.bags = cat.bags.with_extra(
            TokenBags.from_lists([featurizer.encode_field(losing.get_column("kept")).to_arrow()], losing.height))
        index = losing.select("entity_id", "query", bag=first + pl.int_range(losing.height, dtype=pl.Int64))
        for t in tasks:
            if t.candidate != kind:
                continue
            bag = frames[t.name].join(index, on=["entity_id", "query"], how="left", maintain_order="left")
            t.positive_bags = bag.get_column("bag").fill_null(-1).to_numpy().astype(np.int64)
            log.info("task %s: %d of %d pairs read their %s's engaged queries without their own query "
                     "(its only engagement of the %s before the cutoff)", t.name,
                     int((t.positive_bags >= 0).sum()), t.pairs, kind, kind)
    return fields.index(FIELD)
