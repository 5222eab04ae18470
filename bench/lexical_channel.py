"""The lexical channel's settings, chosen on held-out *training* queries of a relevance workspace.

    python bench/lexical_channel.py WS [--offsets 0,1,2,3,5] [--buckets 1024] [--tokens unigram]
                                       [--share 0.2]

WS: a workspace imported with ``omni import relevance`` (MiniLM legacy embeddings) and ``omni features
build``. For a share of its training queries (``importers.relevance.held_out_queries``: the same ones
every run; the test queries are never read), it scores the anchored model as it starts, for every
combination of token weights ``idf + offset``, bucket count and token kinds (``--tokens`` takes
``;``-separated sets such as ``unigram;unigram,bigram``): the importer's MiniLM product embeddings and
MiniLM query embeddings (the dense part) beside the ``LexicalChannel`` module itself (``ModelConfig``
beta and seed), i.e. ``cos(dense) + beta^2 cos(lexical)``, with ``omni eval``'s relevance metrics. The
first combination is the baseline (by default: plain idf, 1,024 buckets, unigrams), measured in the
same run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import RELEVANCE_LABELS, Workspace
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.relevance import relevance_meta, score_system
from omnisearchsage.evaluation.scoring import EmbeddingScorer
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.text import normalize
from omnisearchsage.importers.relevance import held_out_queries
from omnisearchsage.model.config import ModelConfig
from omnisearchsage.model.inputs import TokenBags
from omnisearchsage.model.lexical import LexicalChannel, bag_rows
from omnisearchsage.text_encoders import encode_texts, resolve_embed_model
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import load_entity_catalogue, load_training_data
from omnisearchsage.trainer.loop import lexical_ranges


def channel_vectors(channel: LexicalChannel, bags: TokenBags, batch: int = 8192) -> np.ndarray:
    """The channel's output for every row of one-field ``bags``."""
    out = []
    with torch.no_grad():
        for start in range(0, bags.rows, batch):
            rows = np.arange(start, min(start + batch, bags.rows))
            ids, offsets = bags.gather(rows)
            ids_t, off_t = torch.from_numpy(ids), torch.from_numpy(offsets)
            out.append(channel(ids_t, bag_rows(off_t, ids_t.numel()), len(rows)).numpy())
    return np.vstack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--offsets", default="0,1,2,3,5")
    ap.add_argument("--buckets", default="1024", help="comma-separated bucket counts")
    ap.add_argument("--tokens", default="unigram", help="';'-separated token-kind sets, e.g. unigram;unigram,bigram")
    ap.add_argument("--share", type=float, default=0.2, help="share of the training queries held out")
    args = ap.parse_args()
    ws, cfg, model_cfg = Workspace(args.workspace), EvalConfig(), ModelConfig()
    featurizer = Featurizer.load(ws.features)
    data = load_training_data(ws, TrainConfig(), featurizer)
    cat = load_entity_catalogue(ws, "product", ("title",))
    ids = cat.keys.to_numpy()
    labels = pl.read_parquet(ws.path(RELEVANCE_LABELS)).filter(pl.col("split") == "train")
    raw = held_out_queries(labels["query"].unique().sort().to_list(), args.share)
    qmap = pl.DataFrame({"query": raw, "qrow": np.arange(len(raw), dtype=np.int64)})
    cand = pl.DataFrame({"product_id": ids.astype(str), "col": np.arange(len(ids), dtype=np.int64)})
    held = (labels.join(qmap, on="query").join(cand, on="product_id")
            .with_columns(gain=pl.col("label") - float(labels["label"].min()))
            .select("qrow", "col", "label", "gain", "positive"))
    queries = [normalize(q) for q in raw]
    encoder = resolve_embed_model(relevance_meta(ws).get("legacy_model_path") or "auto")
    dense_q, dense_p = encode_texts(encoder, queries), cat.legacy
    q_bags = TokenBags.from_offsets(*featurizer.encode(queries))
    print(f"{args.workspace}: {len(queries):,} held-out training queries, {int(held['positive'].sum()):,} positive "
          f"pairs, {len(ids):,} products; MiniLM + lexical channel (beta {model_cfg.lexical_beta}) as the "
          "anchored model starts; the first line is the baseline")
    grid = [(tuple(t.split(",")), int(b), float(o)) for t in args.tokens.split(";")
            for b in args.buckets.split(",") for o in args.offsets.split(",")]
    for tokens, buckets, offset in grid:
        ranges = lexical_ranges(featurizer, tokens)
        channel = LexicalChannel(featurizer.num_ids, buckets, ranges, model_cfg.lexical_beta,
                                 model_cfg.hash_seed + 2, data.lexical_idf(("title",), offset))
        q = np.hstack([dense_q, channel_vectors(channel, q_bags)])
        p = np.hstack([dense_p, channel_vectors(channel, cat.bags)])
        m = score_system(EmbeddingScorer(q.astype(np.float32), p.astype(np.float32)), held, len(queries), cfg)
        lo, hi = m["pair_recall@10_ci"]
        print(f"{'+'.join(tokens)}, {buckets} buckets, idf + {offset:g}: pair R@10 "
              f"{m['pair_recall@10']:.4f} [{lo:.3f}-{hi:.3f}]  pair R@100 {m['pair_recall@100']:.4f}  "
              f"nDCG@10 {m['ndcg@10']:.4f}", flush=True)


if __name__ == "__main__":
    main()
