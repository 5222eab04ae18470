"""Recall@10 on pins created after the cutoff against the others, with and without text, model beside BM25.

    python bench/new_pins.py WORKSPACE RUN [RUN ...]

Pins created after the training cutoff (``truth/pins.parquet`` column ``fresh``; ``created_at`` in the
catalogue) have no training engagement, hence no engaged queries, and make up about a third of the
sample world's test pairs. This splits every query→pin evaluation set (random-index protocol, the
evaluation's own ranks) into new and settled pins, each into pins with a title or description and pins
with neither (the paper's Table 3 set), for each run's export and for the BM25 baselines (``bm25-text``:
the pin's own text; ``bm25-text+queries``: plus its engaged queries) on the same pairs. Each cell has its
pairs and a 95% interval from resampling queries (``metrics.bootstrap_ci``). With the default run and its
``--abl-no-captions`` variant, the cells bound what captions can add to Table 3 (README, *Evaluate*).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import polars as pl

from omnisearchsage.contract import TRUTH_PINS, Workspace
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import MODEL, EmbeddingModel, evaluate
from omnisearchsage.evaluation.metrics import bootstrap_ci
from omnisearchsage.orchestration.ablations import no_text_pins
from omnisearchsage.validate import read_table

K = 10
BASELINES = ("bm25-text", "bm25-text+queries")


def breakdown(ranked: pl.DataFrame, pins: pl.DataFrame, cfg: EvalConfig) -> pl.DataFrame:
    """Per (action, new/settled, with/without text): pairs and Recall@K with its query-bootstrap interval.

    ``pins``: ``pin_id``, ``fresh`` and ``untitled`` (Table 3's pins: neither title nor description)."""
    joined = ranked.join(pins, left_on="entity_id", right_on="pin_id", how="inner")
    rows = []
    for (action, is_new, untitled), part in joined.group_by("action", "fresh", "untitled"):
        per_query = part.group_by("query").agg(hits=(pl.col("rank_random") <= K).sum(), pairs=pl.len())
        low, high = bootstrap_ci(per_query["hits"].to_numpy(), per_query["pairs"].to_numpy(),
                                 cfg.bootstrap_samples, cfg.confidence, cfg.seed)
        rows.append({"action": action, "pins": "new" if is_new else "settled",
                     "text": "no text" if untitled else "text", "pairs": part.height,
                     "recall": float((part["rank_random"] <= K).mean()), "low": low, "high": high})
    return pl.DataFrame(rows).sort("action", "pins", "text", descending=[False, False, True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    untitled = list(no_text_pins(ws))  # Table 3's set, as the ablations define it
    pins = (read_table(ws, TRUTH_PINS).select("pin_id", "fresh", untitled=pl.col("pin_id").is_in(untitled))
            .collect())
    for i, run in enumerate(args.runs):
        cfg = replace(EvalConfig(), baselines=BASELINES if i == 0 else (), ann=())
        ev = evaluate(ws, EmbeddingModel.from_export(ws.run(run).export.root), cfg)[1]
        systems = [(run, MODEL)] + ([(b, b) for b in BASELINES] if i == 0 else [])
        for label, system in systems:
            table = breakdown(ev.ranked[(system, "query-pin")], pins, cfg)
            print(f"\n{label}: query→pin Recall@{K} (random index), new vs settled pins, with vs without text")
            for r in table.iter_rows(named=True):
                print(f"  {r['action']:<11} {r['pins']:<8} {r['text']:<8} {r['recall']:.3f} "
                      f"[{r['low']:.3f}–{r['high']:.3f}]  ({r['pairs']} pairs)")


if __name__ == "__main__":
    main()
