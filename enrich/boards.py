"""Board titles: each pin's best board titles, the paper's strongest single text feature.

A pin saved to many boards is described by what people called those boards.
Titles are normalised (so "Dinner Ideas" and "dinner  ideas" are one title),
deduplicated per pin, and ranked so the titles that both recur for the pin and
share words with its other titles come first (the paper: "frequency and word
prevalence; ties prefer more words, then longer titles").
"""
from __future__ import annotations

import logging
import time
from typing import Any

import polars as pl

from omnisearchsage.atomic import write_parquet
from omnisearchsage.contract import BOARD_PINS, BOARD_TITLES, BOARDS, PINS, Workspace
from omnisearchsage.enrich.config import BoardsConfig
from omnisearchsage.enrich.duck import NORMALIZE_FN, connect, copy_to_parquet
from omnisearchsage.validate import validate_workspace

log = logging.getLogger(__name__)

#: Each distinct raw board title once, with its normalised form (the UDF runs in Python,
#: so it sees every distinct title once rather than every board or every save).
TITLE_MAP_SQL = f"""
CREATE TEMP TABLE title_map AS
SELECT title AS raw, {NORMALIZE_FN}(title) AS title
FROM (SELECT DISTINCT title FROM read_parquet($boards))
"""

#: Per pin, its normalised board titles ranked by score (see build_board_titles), top $k.
#: saves:           one row per distinct (pin, board) whose title is non-empty after normalisation
#: freq:            boards per (pin, title)
#: pin_title_words: one row per (pin, title, distinct word of the title), with df = the pin's
#:                  boards whose title has that word (a window, not a join on word alone: a
#:                  common word would pair every pin's row with every title that has it)
#: scored:          per (pin, title): freq, sum of its words' df, its word count, n = the pin's boards
#: ranked:          score, then more words, then more characters, then the title itself
BOARD_TITLES_SQL = """
WITH saves AS (
    SELECT DISTINCT bp.pin_id, bp.board_id, m.title
    FROM read_parquet($board_pins) bp
    JOIN read_parquet($boards) b USING (board_id)
    JOIN title_map m ON m.raw = b.title
    WHERE m.title <> ''
),
freq AS (SELECT pin_id, title, count(*) AS freq FROM saves GROUP BY pin_id, title),
title_words AS (
    SELECT DISTINCT title, word
    FROM (SELECT title, unnest(string_split(title, ' ')) AS word FROM (SELECT DISTINCT title FROM freq))
),
pin_title_words AS (
    SELECT f.pin_id, f.title, f.freq, sum(f.freq) OVER (PARTITION BY f.pin_id, w.word) AS df
    FROM freq f JOIN title_words w USING (title)
),
scored AS (
    SELECT pin_id, title, freq, df_sum, n_words, sum(freq) OVER (PARTITION BY pin_id) AS n
    FROM (
        SELECT pin_id, title, any_value(freq) AS freq, sum(df) AS df_sum, count(*) AS n_words
        FROM pin_title_words
        GROUP BY pin_id, title
    )
),
ranked AS (
    SELECT pin_id, title,
        row_number() OVER (
            PARTITION BY pin_id
            ORDER BY $w_freq * CAST(freq AS DOUBLE) / CAST(n AS DOUBLE)
                     + $w_prev * CAST(df_sum AS DOUBLE) / CAST(n_words * n AS DOUBLE) DESC,
                     n_words DESC, length(title) DESC, title ASC
        ) AS rank
    FROM scored
)
SELECT pin_id, list(title ORDER BY rank) AS titles
FROM ranked
WHERE rank <= $k
GROUP BY pin_id
ORDER BY pin_id
"""


def build_board_titles(ws: Workspace, cfg: BoardsConfig | None = None) -> dict[str, Any]:
    """Write ``enrich/board_titles.parquet``: per pin, up to ``cfg.max_titles`` ranked titles.

    For a pin, let ``n`` be the number of distinct boards it is on whose title is
    non-empty after :func:`~omnisearchsage.features.text.normalize`; ``freq(t)`` the
    number of those boards whose normalised title is ``t``; ``df(w)`` the number of
    those boards whose title contains word ``w`` (words split on the single spaces
    normalisation leaves). A title ``t`` with distinct words ``W(t)`` scores::

        score(t) = frequency_weight * freq(t) / n
                 + prevalence_weight * sum(df(w) for w in W(t)) / (|W(t)| * n)

    i.e. the title's share of the pin's boards plus the mean share of boards that
    contain each of its words, both in (0, 1]. A rare title made of the pin's
    common words ("easy dinner" among many "dinner" boards) thus beats an equally
    rare off-topic one. Ties go to more words, then more characters, then the
    lexicographically smaller title, so the output is deterministic.

    A workspace without boards (a products-only catalogue) gets an empty table.
    Returns stats, ``coverage["pin"]`` being the share of catalogue pins with at
    least one title (``None`` without a pins table). ``cfg`` defaults to ``BoardsConfig()``.
    """
    cfg = cfg or BoardsConfig()
    started = time.perf_counter()
    out = ws.path(BOARD_TITLES)
    present = [t.name for t in (PINS, BOARDS, BOARD_PINS) if ws.has(t)]
    validate_workspace(ws, tables=present)
    if not (ws.has(BOARDS) and ws.has(BOARD_PINS)):
        log.info("no boards or board_pins table in %s: writing an empty %s", ws.raw, out.name)
        write_parquet(pl.DataFrame(schema=BOARD_TITLES.polars_schema), out)
    else:
        params = {"boards": str(ws.path(BOARDS)), "board_pins": str(ws.path(BOARD_PINS))}
        with connect(ws.enrich, cfg.memory_limit, cfg.threads) as con:
            con.execute(TITLE_MAP_SQL, {"boards": params["boards"]})
            copy_to_parquet(
                con,
                BOARD_TITLES_SQL,
                out,
                {**params, "k": cfg.max_titles, "w_freq": cfg.frequency_weight, "w_prev": cfg.prevalence_weight},
            )
    stats = _stats(ws)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    log.debug("board titles: %s", stats)
    return stats


def _stats(ws: Workspace) -> dict[str, Any]:
    """Coverage and size figures of the table just written."""
    titles = pl.scan_parquet(ws.path(BOARD_TITLES))
    summary = titles.select(
        pl.len().alias("pins_with_titles"), pl.col("titles").list.len().sum().alias("titles")
    ).collect()
    stats: dict[str, Any] = {
        "pins_with_titles": int(summary["pins_with_titles"][0]),
        "titles": int(summary["titles"][0] or 0),
        "coverage": {"pin": None},
    }
    if ws.has(PINS):
        pins = pl.scan_parquet(ws.path(PINS)).select("pin_id")
        n_pins = pins.select(pl.len()).collect().item()
        covered = pins.join(titles.select("pin_id"), on="pin_id", how="semi").select(pl.len()).collect().item()
        stats["pins"] = n_pins
        stats["coverage"]["pin"] = covered / n_pins if n_pins else 0.0
    return stats
