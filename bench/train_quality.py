"""Does the trainer learn? Recall@10 of held-out pairs for a run's export, beside BM25, in one run.

    python bench/train_quality.py WORKSPACE RUN [--index-size 10000] [--seed 0]

Held-out pairs are the distinct (normalised query, engaged entity) of the time split's *test
window* (query->pin: save / long click; query->product: click / add to cart / checkout), which
training never saw. Each pair is ranked two ways:

- against a random index: ``--index-size`` random entities of its type (capped at the catalogue,
  the positive excluded) plus the positive (the paper's protocol, with 1.5M there);
- against the full catalogue, minus the query's other test-window positives.

Rank = entities scoring above the positive + half the ties (BM25 gives many zero scores).
Baseline, scored on the same pairs and candidates: BM25 (bm25s, as ``omni eval``'s
``bm25-text+queries``) over the entity's raw text plus its engaged queries (training window).
``omni eval`` is the full evaluation (per action, per language, compat tasks, ablations); this
script is the trainer's own quick check.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import ENGAGEMENTS, Workspace
from omnisearchsage.evaluation.baselines import BM25Scorer, entity_texts
from omnisearchsage.features.text import normalize_expr
from omnisearchsage.model.io import load_embeddings, load_query_encoder
from omnisearchsage.split import TimeSplit
from omnisearchsage.validate import read_table

ACTIONS = {"pin": ("save", "long_click"), "product": ("click", "add_to_cart", "checkout")}
K = 10


def heldout_pairs(ws: Workspace, kind: str, ids: list[str]) -> pl.DataFrame:
    """Distinct test-window (query, entity row) pairs of ``kind`` whose entity is in the export."""
    split = TimeSplit.for_workspace(ws)
    index = pl.DataFrame({"entity_id": ids, "row": np.arange(len(ids))})
    return (
        read_table(ws, ENGAGEMENTS)
        .filter((pl.col("entity_type") == kind) & pl.col("action").is_in(list(ACTIONS[kind]))
                & (pl.col("ts") >= split.test_start) & (pl.col("ts") < split.test_end))
        .select(query=normalize_expr(pl.col("query")), entity_id="entity_id")
        .unique()
        .collect()
        .join(index, on="entity_id")
        .sort("query", "row")
    )


def ranks(scores: torch.Tensor, q_rows: np.ndarray, e_rows: np.ndarray, index: np.ndarray,
          positives: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each pair's positive against the random index and against the full catalogue."""
    s_pos = scores[q_rows, e_rows].unsqueeze(1)
    rows = scores[q_rows]
    above, ties = (rows > s_pos).float(), (rows == s_pos).float()
    full = above.sum(1) + (ties.sum(1) - 1) / 2  # minus the positive itself
    in_index = torch.from_numpy(index)
    idx_mask = torch.ones(len(q_rows), len(index), dtype=torch.bool)
    idx_mask[torch.from_numpy(e_rows)[:, None] == in_index[None, :]] = False  # the positive is added once
    rnd = (above[:, in_index] * idx_mask).sum(1) + (ties[:, in_index] * idx_mask).sum(1) / 2
    # Other test positives of the same query do not count against the full-catalogue rank.
    for i, (q, e) in enumerate(zip(q_rows, e_rows)):
        others = positives[q][positives[q] != e]
        full[i] -= (rows[i, others] > s_pos[i, 0]).float().sum() + (rows[i, others] == s_pos[i, 0]).float().sum() / 2
    return rnd.numpy(), full.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace")
    ap.add_argument("run")
    ap.add_argument("--index-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    export = ws.export_dir(args.run)
    encoder = load_query_encoder(export)
    print(f"run {args.run} ({encoder.version}); Recall@{K} of held-out test-window pairs")
    print(f"{'task':<15}{'pairs':>7}{'index':>8}   {'model':>7}{'BM25':>7}{'random':>8}   "
          f"{'model(full)':>12}{'BM25(full)':>11}")
    for kind in ("pin", "product"):
        ids, emb = load_embeddings(export, kind)
        pairs = heldout_pairs(ws, kind, ids)
        if pairs.height == 0:
            continue
        queries = pairs.get_column("query").unique(maintain_order=True).to_list()
        q_of = {q: i for i, q in enumerate(queries)}
        q_rows = np.array([q_of[q] for q in pairs.get_column("query").to_list()])
        e_rows = pairs.get_column("row").to_numpy().copy()  # writable: it indexes tensors
        positives = {q: e_rows[q_rows == q] for q in np.unique(q_rows)}
        n_index = min(args.index_size, len(ids) - 1)
        index = np.random.default_rng(args.seed).choice(len(ids), n_index, replace=False)

        t0 = time.perf_counter()
        model_scores = torch.from_numpy(encoder.encode(queries)) @ torch.from_numpy(emb.copy()).T
        m_rnd, m_full = ranks(model_scores, q_rows, e_rows, index, positives)
        t_model = time.perf_counter() - t0
        bm25 = BM25Scorer(queries, entity_texts(ws, kind, ids, "bm25-text+queries"))
        b_rnd, b_full = ranks(bm25.block(np.arange(len(queries))), q_rows, e_rows, index, positives)
        print(f"query-{kind:<9}{pairs.height:>7}{n_index + 1:>8}   {np.mean(m_rnd < K):>7.3f}{np.mean(b_rnd < K):>7.3f}"
              f"{K / (n_index + 1):>8.4f}   {np.mean(m_full < K):>12.3f}{np.mean(b_full < K):>11.3f}"
              f"   (model scored in {t_model:.1f}s)")


if __name__ == "__main__":
    main()
