"""Engaged queries: the queries people used to find a pin or product, its best description.

Per pin and per product, the top queries by an engagement score
``sum(action_weight * count)`` over the events in ``[cutoff - window, cutoff)``.
The cutoff keeps evaluation honest: test-window queries never reach features.

The per-(entity, query, action, day) counts behind the ranking are kept in
``enrich/engaged_query_counts.parquet``. An incremental run (``previous=``)
takes the days it needs from an earlier counts table and reads only the raw
events that table does not cover, so it equals a full recomputation exactly
(the paper merges new logs into the previous top 20; keeping counts rather than
the top 20 is what makes the merge exact and lets the window slide).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from omnisearchsage.contract import (
    ENGAGED_QUERIES,
    ENGAGED_QUERY_COUNTS,
    ENGAGEMENTS,
    PINS,
    PRODUCTS,
    Workspace,
)
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.duck import NORMALIZE_FN, connect, copy_to_parquet, read_metadata
from omnisearchsage.errors import OmniError
from omnisearchsage.split import TimeSplit
from omnisearchsage.validate import validate_workspace

log = logging.getLogger(__name__)

#: Parquet key-value metadata of the counts table: the half-open day range it covers, and the ranking
#: (top_k, action weights) the engaged queries were ranked by, so that a later reader of the counts
#: (:func:`engaged_queries_on`) ranks them exactly as this stage did.
META_START, META_CUTOFF, META_RANKING = "window_start", "cutoff", "ranking"

#: Raw events the run must read: in the window and not covered by previous counts
#: ([$prev_start, $prev_cutoff) is empty on a full run).
_RAW_EVENTS = """
FROM read_parquet($engagements)
WHERE entity_type IN ('pin', 'product')
  AND ts >= $start AND ts < $cutoff
  AND NOT (ts >= $prev_start AND ts < $prev_cutoff)
"""

#: Each distinct raw query of those events once, with its normalised form (the UDF runs in
#: Python, so it must see distinct values, not 20M events).
QUERY_MAP_SQL = f"""
CREATE TEMP TABLE query_map AS
SELECT query AS raw, {NORMALIZE_FN}(query) AS query
FROM (SELECT DISTINCT query {_RAW_EVENTS})
"""

#: New per-(entity, normalised query, action, day) counts from the raw log; queries that
#: normalise to "" are dropped.
RAW_COUNTS_SQL = f"""
SELECT e.entity_type, e.entity_id, m.query, e.action, CAST(e.ts AS DATE) AS day, count(*) AS n
FROM (SELECT entity_type, entity_id, query, action, ts {_RAW_EVENTS}) e
JOIN query_map m ON m.raw = e.query
WHERE m.query <> ''
GROUP BY ALL
"""

#: Counts carried over from an earlier run: the days of the new window it covers.
PREVIOUS_COUNTS_SQL = """
SELECT entity_type, entity_id, query, action, day, n
FROM read_parquet($previous)
WHERE day >= $start_day AND day < $cutoff_day AND day >= $prev_start_day AND day < $prev_cutoff_day
"""

#: Top $k queries per key from a counts table: {by} is the key (an entity, or an entity as of a day), {counts}
#: the table. {sums} is one integer column per weighted action plus one for all other actions; {score}
#: adds weight * count in a fixed order, so the float score (and its ties) never depend on the engine's
#: summation order. Ties on score go to the lexicographically smaller query.
TOP_QUERIES_SQL = """
WITH per_query AS (
    SELECT {by}, query, {sums}
    FROM {counts}
    GROUP BY {by}, query
),
ranked AS (
    SELECT {by}, query, score,
        row_number() OVER (PARTITION BY {by} ORDER BY score DESC, query ASC) AS rank
    FROM (SELECT {by}, query, {score} AS score FROM per_query)
    WHERE score > 0
)
SELECT {by}, list(query ORDER BY rank) AS queries, list(score ORDER BY rank) AS scores
FROM ranked
WHERE rank <= $k
GROUP BY {by}
ORDER BY {by}
"""

#: Each (entity, query) of the registered ``pairs`` with the day of its first engagement in the counts
#: table (pairs the counts do not hold are left out).
FIRST_DAYS_SQL = """
SELECT p.entity_id, p.query, min(c.day) AS day
FROM pairs p JOIN read_parquet($counts) c
  ON c.entity_type = $kind AND c.entity_id = p.entity_id AND c.query = p.query
GROUP BY ALL
ORDER BY p.entity_id, p.query
"""
#: The counts of every entity of ``$kind`` before each of the registered ``days``: what its engaged queries
#: were ranked from on that morning.
COUNTS_BEFORE_SQL = """
CREATE TEMP TABLE counts_before AS
SELECT c.entity_type, c.entity_id, d.as_of, c.query, c.action, c.n
FROM days d JOIN read_parquet($counts) c ON c.entity_type = $kind AND c.day < d.as_of
"""


def effective_cutoff(ws: Workspace, cfg: QueriesConfig) -> date:
    """``cfg.cutoff``, else the workspace's time-split cutoff floored to its day.

    A cutoff past the split's is allowed (features for serving after evaluation)
    but logged as a warning: test-window queries then reach the features.
    """
    split_cutoff = TimeSplit.for_workspace(ws).cutoff
    if cfg.cutoff is None:
        return split_cutoff.date()
    if _midnight(cfg.cutoff) > split_cutoff:
        log.warning("cutoff %s is after the time split's cutoff %s: test-window engagements will reach "
                    "the engaged-query features, so evaluation on this workspace is no longer honest",
                    cfg.cutoff, split_cutoff)
    return cfg.cutoff


def score_terms(cfg: QueriesConfig) -> list[tuple[str | None, float]]:
    """(action, weight) in scoring order; ``None`` stands for every unlisted action.

    The score of a query is ``w_1 * c_1 + w_2 * c_2 + ...`` evaluated left to right in
    this order (actions sorted by name, unlisted actions last).
    """
    return [*sorted(cfg.action_weights.items()), (None, cfg.unknown_action_weight)]


def top_queries_sql(cfg: QueriesConfig, by: str = "entity_type, entity_id",
                    counts: str = "counts") -> tuple[str, dict[str, Any]]:
    """:data:`TOP_QUERIES_SQL` for ``cfg``'s weights, ranking per ``by`` over table ``counts``, with its
    parameters (bar ``$k``)."""
    terms = score_terms(cfg)
    params: dict[str, Any] = {}
    sums, score = [], []
    known = [f"$a{i}" for i, (action, _) in enumerate(terms) if action is not None]
    for i, (action, weight) in enumerate(terms):
        if action is not None:
            params[f"a{i}"] = action
            cond = f"action = $a{i}"
        else:
            cond = f"action NOT IN ({', '.join(known)})" if known else "TRUE"
        params[f"w{i}"] = weight
        sums.append(f"coalesce(sum(n) FILTER (WHERE {cond}), 0) AS c{i}")
        score.append(f"CAST(c{i} AS DOUBLE) * $w{i}")
    return TOP_QUERIES_SQL.format(by=by, counts=counts, sums=", ".join(sums), score=" + ".join(score)), params


def counts_metadata(cfg: QueriesConfig, start: date, cutoff: date) -> dict[str, str]:
    """The counts table's key-value metadata: its day range and ``cfg``'s ranking."""
    ranking = {"top_k": cfg.top_k, "action_weights": cfg.action_weights,
               "unknown_action_weight": cfg.unknown_action_weight}
    return {META_START: start.isoformat(), META_CUTOFF: cutoff.isoformat(),
            META_RANKING: json.dumps(ranking, sort_keys=True)}


def first_engaged(ws: Workspace, kind: str, pairs: pl.DataFrame) -> pl.DataFrame:
    """The day each distinct ``(entity_id, query)`` of ``pairs`` (pins or products, as ``kind`` says) first
    engaged in the counts table, as ``day``; pairs the table does not hold are left out."""
    path = ws.path(ENGAGED_QUERY_COUNTS)
    cfg = QueriesConfig()
    with connect(ws.enrich, cfg.memory_limit, cfg.threads) as con:
        con.register("pairs", pairs.select("entity_id", "query").unique().to_arrow())
        return con.sql(FIRST_DAYS_SQL, params={"counts": str(path), "kind": kind}).pl()


def engaged_queries_on(ws: Workspace, kind: str, days: Sequence[date]) -> pl.DataFrame:
    """Every ``kind`` entity's engaged queries on the morning of each of ``days``, as this stage would
    have ranked them then from the counts of every earlier day: ``entity_id``, ``day``, ``queries``, for
    the (entity, day) with at least one. The ranking is the one recorded in the counts table
    (:func:`counts_metadata`; a table written before it was recorded ranks by the defaults)."""
    path, cfg = ws.path(ENGAGED_QUERY_COUNTS), QueriesConfig()
    with connect(ws.enrich, cfg.memory_limit, cfg.threads) as con:
        meta = read_metadata(con, path)
        if META_RANKING in meta:
            cfg = QueriesConfig(**json.loads(meta[META_RANKING]))
        con.register("days", pl.DataFrame({"as_of": list(days)}, schema={"as_of": pl.Date}).to_arrow())
        con.execute(COUNTS_BEFORE_SQL, {"counts": str(path), "kind": kind})
        sql, params = top_queries_sql(cfg, "entity_type, entity_id, as_of", "counts_before")
        return con.sql(f"SELECT entity_id, as_of AS day, queries FROM ({sql})",
                       params={"k": cfg.top_k, **params}).pl()


def resolve_previous(path: Path) -> Path:
    """The earlier counts table ``--previous`` names: the file itself, the one in a workspace
    or enrich folder, or the one beside an engaged_queries.parquet."""
    name = Path(ENGAGED_QUERY_COUNTS.relpath).name
    if path.is_dir():
        candidates = [path / ENGAGED_QUERY_COUNTS.relpath, path / name]
    elif path.name == Path(ENGAGED_QUERIES.relpath).name:
        candidates = [path.with_name(name)]
    else:
        candidates = [path]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise OmniError(f"{path}: no {name} there (--previous needs the counts an earlier `omni enrich queries` wrote)")
    return found


def _previous_range(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[date, date]:
    """The [window_start, cutoff) days an earlier counts table covers, after checking its columns."""
    try:
        meta = read_metadata(con, path)
        columns = dict(con.execute("SELECT name, type FROM parquet_schema($p)", {"p": str(path)}).fetchall())
    except duckdb.Error as e:
        raise OmniError(f"{path}: unreadable counts table ({e})") from e
    missing = [c.name for c in ENGAGED_QUERY_COUNTS.columns if c.name not in columns]
    if missing or META_START not in meta or META_CUTOFF not in meta:
        what = f"column {missing[0]!r}" if missing else f"metadata {META_START!r}/{META_CUTOFF!r}"
        raise OmniError(f"{path}: not an engaged-query counts table (missing {what})")
    return date.fromisoformat(meta[META_START]), date.fromisoformat(meta[META_CUTOFF])


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def build_engaged_queries(
    ws: Workspace, cfg: QueriesConfig | None = None, previous: Path | None = None
) -> dict[str, Any]:
    """Write ``enrich/engaged_queries.parquet`` (and the counts it is ranked from).

    Events count when ``entity_type`` is pin or product and ``cutoff - window_days
    <= ts < cutoff`` (``cutoff`` a date, i.e. midnight; the start is inclusive, an
    event exactly at the cutoff is not used). Queries are normalised with
    :func:`~omnisearchsage.features.text.normalize`; those that normalise to "" are
    dropped. A query's score for an entity is ``sum(weight[action] * count)``
    (:func:`score_terms`; unlisted actions weigh ``unknown_action_weight``); queries
    scoring 0 are dropped; the top ``top_k`` are kept, ties to the smaller query.

    With ``previous`` (an earlier counts table, see :func:`resolve_previous`) the days
    it covers come from it and only the rest of the window is read from the raw
    log: new logs are merged in and days that left the window are dropped. The
    result equals a full recomputation over the raw log for every day the earlier
    table does not cover, and over the earlier table's counts for those it does.

    Returns stats; ``coverage[t]`` is the share of catalogue pins / products with at
    least one engaged query (``None`` without that catalogue table). ``cfg`` defaults
    to ``QueriesConfig()``.
    """
    cfg = cfg or QueriesConfig()
    started = time.perf_counter()
    present = [t.name for t in (ENGAGEMENTS, PINS, PRODUCTS) if ws.has(t)]
    validate_workspace(ws, tables=present)
    cutoff = effective_cutoff(ws, cfg)
    start = cutoff - timedelta(days=cfg.window_days)
    counts_path, out = ws.path(ENGAGED_QUERY_COUNTS), ws.path(ENGAGED_QUERIES)
    with connect(ws.enrich, cfg.memory_limit, cfg.threads) as con:
        prev_start = prev_cutoff = start  # a full run: no day comes from earlier counts
        sources = [RAW_COUNTS_SQL]
        params: dict[str, Any] = {"engagements": str(ws.path(ENGAGEMENTS))}
        if previous is not None:
            previous = resolve_previous(previous)
            prev_start, prev_cutoff = _previous_range(con, previous)
            log.info("merging counts for [%s, %s) from %s", prev_start, prev_cutoff, previous)
            # previous may be the very file about to be replaced: safe, the new one is
            # written to a temporary name and renamed only once complete.
            sources.append(PREVIOUS_COUNTS_SQL)
            params |= {
                "previous": str(previous),
                "start_day": start,
                "cutoff_day": cutoff,
                "prev_start_day": prev_start,
                "prev_cutoff_day": prev_cutoff,
            }
        window = {
            "start": _midnight(start),
            "cutoff": _midnight(cutoff),
            "prev_start": _midnight(prev_start),
            "prev_cutoff": _midnight(prev_cutoff),
        }
        con.execute(QUERY_MAP_SQL, {"engagements": params["engagements"], **window})
        # A temp table (spilled to disk past the memory limit): written out, then ranked,
        # without decoding the Parquet again.
        con.execute("CREATE TEMP TABLE counts AS " + " UNION ALL ".join(f"({s})" for s in sources), params | window)
        copy_to_parquet(
            con,
            "SELECT * FROM counts",
            counts_path,
            metadata=counts_metadata(cfg, start, cutoff),
        )
        sql, top_params = top_queries_sql(cfg)
        copy_to_parquet(con, sql, out, {"k": cfg.top_k, **top_params})
        events = con.execute("SELECT sum(n) FROM counts").fetchall()[0][0]
    stats = _stats(ws)
    stats |= {
        "cutoff": cutoff.isoformat(),
        "window_start": start.isoformat(),
        "incremental": previous is not None,
        "events": int(events or 0),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.debug("engaged queries: %s", stats)
    return stats


def _stats(ws: Workspace) -> dict[str, Any]:
    """Per entity type: entities with queries, and coverage of the catalogue."""
    table = pl.scan_parquet(ws.path(ENGAGED_QUERIES))
    stats: dict[str, Any] = {"entities": {}, "coverage": {}}
    for entity_type, schema in (("pin", PINS), ("product", PRODUCTS)):
        ids = table.filter(pl.col("entity_type") == entity_type).select(pl.col("entity_id").alias(schema.key[0]))
        stats["entities"][entity_type] = ids.select(pl.len()).collect().item()
        if not ws.has(schema):
            stats["coverage"][entity_type] = None
            continue
        catalogue = pl.scan_parquet(ws.path(schema)).select(schema.key[0])
        n = catalogue.select(pl.len()).collect().item()
        covered = catalogue.join(ids, on=schema.key[0], how="semi").select(pl.len()).collect().item()
        stats["coverage"][entity_type] = covered / n if n else 0.0
    return stats
