"""Engaged queries as a training positive saw them: no pair reads its own future.

An entity's engaged queries are ranked from its engagements before the cutoff, and a training pair
``(q, e)`` is one of those engagements, so ``q`` is among ``e``'s engaged queries by construction: on
every training positive, whatever the log. A pair of the future finds its query there only if the same
query engaged the same entity before, and a new entity has no engaged queries at all. A tower trained
on the leaky field learns that "the query is among the entity's engaged queries" all but decides a
match; at evaluation it ranks every settled entity whose engaged queries repeat the query above entities
without them, and pushes new ones out of the top results (README, *Evaluate*). This is target leakage.
``TrainConfig.engaged_queries_as_of`` chooses what the positive of ``(q, e)`` reads instead:

``leave_one_out`` (the default)
    ``e``'s engaged queries as of the cutoff without ``q``, unless the counts hold another engagement of
    ``e`` by ``q``: what the pair would have seen had it happened after the cutoff (target encoding's
    leave-one-out). Every positive of a settled entity still reads its whole history, later queries
    included, so none looks like a new entity; negatives read the features table's field.
``pair``
    ``e``'s engaged queries as they were when the pair happened: point-in-time features, as a feature store
    serves a training row. They are ranked from the counts of the days before a snapshot day
    (``enrich.queries.engaged_queries_on``); the snapshot days are ``TrainConfig.engaged_queries_snapshots``
    quantiles of the days the training pairs first happened, and a pair reads the last snapshot on or
    before its own first day, so it never finds its own query unless that query engaged the entity on an
    earlier day. An entity's first pairs find none, as a new entity's test pairs do. The negatives a step
    scores against its pairs are read as of those pairs too (each as of one of the step's pairs, drawn at
    random): were they read as of the cutoff, a long engaged-queries list would mark a negative, and the
    towers would learn to bury the settled entities that have one (measured: README, *Evaluate*).
    Consistent in time, it is not the default: on the sample world new pins still lose to settled ones
    under it, and settled pins gain less from their engaged queries than with ``leave_one_out``.
``cutoff``
    the features table as it is (leaky; for comparison).

Only training reads these views; the exported index reads the full field, as serving does. A changed
field is an extra bag of the catalogue's (:meth:`TokenBags.with_extra`), one per distinct list, encoded
with the run's featurizer exactly as ``omni features build`` encodes the full one.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from omnisearchsage.contract import ENGAGED_QUERIES, ENGAGED_QUERY_COUNTS, Workspace
from omnisearchsage.enrich.queries import engaged_queries_on, first_engaged
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.model.inputs import Catalogue, TokenBags
from omnisearchsage.validate import read_table

if TYPE_CHECKING:  # data.py imports this module
    from omnisearchsage.trainer.data import TaskPairs

log = logging.getLogger(__name__)

#: The entity field this module rewrites.
FIELD = "engaged_queries"


def _lists(ws: Workspace, kind: str) -> pl.LazyFrame:
    """Each entity's engaged queries as of the cutoff (the features table's field, before encoding)."""
    return (read_table(ws, ENGAGED_QUERIES).filter(pl.col("entity_type") == kind)
            .select("entity_id", "queries"))


def pairs_losing_query(ws: Workspace, kind: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """``leave_one_out``: the distinct ``(entity_id, query)`` of ``pairs`` whose query is among the entity's
    engaged queries only through one engagement, with ``kept``, the entity's engaged queries without it
    in rank order."""
    counts = (read_table(ws, ENGAGED_QUERY_COUNTS).filter(pl.col("entity_type") == kind)
              .group_by("entity_id", "query").agg(n=pl.col("n").sum()))
    losing = (pairs.lazy().select("entity_id", "query").unique()
              .join(_lists(ws, kind), on="entity_id", how="inner")
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


def snapshot_days(first_days: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` distinct snapshot days (datetime64[D], sorted): the ``i / k`` quantiles of the pairs'
    first days, the earliest of them first, so every pair has a snapshot on or before its day."""
    days = np.sort(first_days.astype("datetime64[D]").astype(np.int64))
    return np.unique(days[(np.arange(k) * len(days)) // k]).astype("datetime64[D]")


def _snapshots(ws: Workspace, featurizer: Featurizer, cat: Catalogue, days: np.ndarray) -> np.ndarray:
    """int64 [days, rows]: the bag each catalogue entity reads on each snapshot day (-1: its own, the list
    as of the cutoff), appending the other lists to ``cat.bags`` (one bag per distinct list of an
    entity, and one empty bag for every entity with none yet)."""
    own = _lists(ws, cat.kind).collect()
    index = pl.DataFrame({"entity_id": cat.keys, "row": np.arange(len(cat.keys), dtype=np.int64)})
    day_index = pl.DataFrame({"day": days.tolist(), "k": np.arange(len(days), dtype=np.int64)},
                             schema={"day": pl.Date, "k": pl.Int64})
    lists = (engaged_queries_on(ws, cat.kind, days.tolist())
             .join(own, on="entity_id", how="left", suffix="_cutoff")
             .join(index, on="entity_id", how="inner").join(day_index, on="day", how="inner")
             .with_columns(same=(pl.col("queries") == pl.col("queries_cutoff")).fill_null(False)))
    # One bag per run of equal lists of an entity (an entity unengaged between two snapshot days keeps its list).
    changed = lists.filter(~pl.col("same")).sort("row", "k")
    version = (pl.col("queries") != pl.col("queries").shift(1).over("row")).fill_null(True).cum_sum().over("row")
    changed = changed.with_columns(version=version)
    distinct = changed.unique(["row", "version"], maintain_order=True)
    first = len(cat.bags.bounds) - 1  # the empty bag; the distinct lists follow it
    encoded = featurizer.encode_field(pl.concat([pl.Series([[]], dtype=pl.List(pl.Utf8)),
                                                 distinct.get_column("queries")])).to_arrow()
    cat.bags = cat.bags.with_extra(TokenBags.from_lists([encoded], distinct.height + 1))
    bag = changed.join(distinct.select("row", "version", bag=first + 1 + pl.int_range(distinct.height, dtype=pl.Int64)),
                       on=["row", "version"], how="left", maintain_order="left")
    out = np.full((len(days), len(cat.keys)), -1, dtype=np.int64)
    # An entity with engaged queries at the cutoff had none on the days before its first engagement.
    out[:, own.join(index, on="entity_id", how="inner").get_column("row").to_numpy()] = first
    same = lists.filter("same")
    out[same.get_column("k").to_numpy(), same.get_column("row").to_numpy()] = -1
    out[bag.get_column("k").to_numpy(), bag.get_column("row").to_numpy()] = bag.get_column("bag").to_numpy()
    return out


def _pair_frames(cat: Catalogue, queries: pl.Series, tasks: list[TaskPairs]) -> list[pl.DataFrame]:
    """Each task's pairs as (entity_id, query), in its pair order."""
    return [pl.DataFrame({"entity_id": cat.keys.gather(t.cand_rows), "query": queries.gather(t.query_rows)})
            for t in tasks]


def as_of_pairs(ws: Workspace, featurizer: Featurizer, cat: Catalogue, tasks: list[TaskPairs],
                queries: pl.Series, k: int, field: int) -> np.ndarray:
    """``pair``: set each task's ``as_of`` (the snapshot each pair reads) and ``positive_bags``, and return
    the catalogue's snapshots (int64 [days, rows], :func:`_snapshots`)."""
    frames = _pair_frames(cat, queries, tasks)
    first = first_engaged(ws, cat.kind, pl.concat(frames))
    if first.height == 0:
        return np.full((1, len(cat.keys)), -1, dtype=np.int64)
    days = snapshot_days(first.get_column("day").to_numpy(), k)
    snaps = _snapshots(ws, featurizer, cat, days)
    for t, frame in zip(tasks, frames):
        day = frame.join(first, on=["entity_id", "query"], how="left", maintain_order="left").get_column("day")
        # A pair the counts do not hold came after their last day: it reads the last snapshot.
        pos = np.searchsorted(days, day.to_numpy().astype("datetime64[D]"), side="right") - 1
        t.as_of = np.where(day.is_null().to_numpy(), len(days) - 1, pos).astype(np.int64)
        t.positive_bags = snaps[t.as_of, t.cand_rows]
        log.info("task %s: pairs read their %s's engaged queries as of %d snapshot days from %s to %s; "
                 "%d of %d positives find none", t.name, cat.kind, len(days), days[0], days[-1],
                 int(_empty_bags(cat, t.positive_bags, t.cand_rows, field).sum()), t.pairs)
    return snaps


def _empty_bags(cat: Catalogue, bags: np.ndarray, rows: np.ndarray, field: int) -> np.ndarray:
    """bool per pair: the engaged-queries bag it reads (``bags``, -1: the entity's own, field ``field``
    of its row) is empty."""
    sizes = np.diff(cat.bags.bounds)
    return sizes[np.where(bags >= 0, bags, cat.bags.rows * field + rows)] == 0


def leave_one_out(ws: Workspace, featurizer: Featurizer, cat: Catalogue, tasks: list[TaskPairs],
                  queries: pl.Series) -> None:
    """``leave_one_out``: set each task's ``positive_bags`` (:func:`pairs_losing_query`)."""
    frames = _pair_frames(cat, queries, tasks)
    changed = pairs_losing_query(ws, cat.kind, pl.concat(frames))
    first = len(cat.bags.bounds) - 1
    cat.bags = cat.bags.with_extra(
        TokenBags.from_lists([featurizer.encode_field(changed.get_column("kept")).to_arrow()], changed.height))
    index = changed.select("entity_id", "query", row=first + pl.int_range(changed.height, dtype=pl.Int64))
    for t, frame in zip(tasks, frames):
        bag = frame.join(index, on=["entity_id", "query"], how="left", maintain_order="left")
        t.positive_bags = bag.get_column("row").fill_null(-1).to_numpy().astype(np.int64)
        log.info("task %s: %d of %d pairs read their %s's engaged queries as of the cutoff without their "
                 "own query", t.name, int((t.positive_bags >= 0).sum()), t.pairs, cat.kind)


def positive_queries(ws: Workspace, featurizer: Featurizer, catalogues: dict[str, Catalogue],
                     tasks: list[TaskPairs], fields: tuple[str, ...], view: str,
                     snapshots: int) -> tuple[int | None, dict[str, np.ndarray]]:
    """Give the pin and product ``tasks`` the engaged queries ``view`` says (module doc): appends the
    changed lists to the catalogues' bags and sets each task's ``positive_bags`` (and, for ``pair``, its
    ``as_of``). Returns the index of :data:`FIELD` in ``fields`` and, for ``pair``, each kind's snapshots
    (int64 [days, rows], the bag an entity reads on each snapshot day); (None, {}) when nothing changes:
    ``cutoff``, a run that reads no engaged queries, or a workspace without the counts."""
    if view == "cutoff" or FIELD not in fields or not (ws.has(ENGAGED_QUERIES) and ws.has(ENGAGED_QUERY_COUNTS)):
        return None, {}
    field, queries, out = fields.index(FIELD), catalogues["query"].keys, {}
    for kind in sorted({t.candidate for t in tasks}):
        cat, own = catalogues[kind], [t for t in tasks if t.candidate == kind]
        if view == "pair":
            out[kind] = as_of_pairs(ws, featurizer, cat, own, queries, snapshots, field)
        else:
            leave_one_out(ws, featurizer, cat, own, queries)
    return field, out
