"""Features benchmarks, each against a named baseline measured in the same run.

    python bench/featurize.py throughput                 # 1M synthetic query/title texts
    python bench/featurize.py throughput --world WS      # texts of a generated world instead
    python bench/featurize.py vocab --world WS           # vocabulary build: time + peak memory
    python bench/featurize.py build --world WS           # the whole `omni features build`

Sections:

* ``throughput``: tokenise + map to ids, on the same N texts (default 1M), with
  :meth:`Featurizer.encode` (Polars path; vocabularies built from the same texts beforehand,
  not timed) against scikit-learn's ``HashingVectorizer`` set to word 1-2 grams plus
  ``char_wb`` 3-grams (a ``FeatureUnion``). Wall and CPU seconds are both reported: Polars
  uses every core, scikit-learn one. Target: at least as fast. Also the single-query latency of the Python path (p50 / p99).
* ``vocab``: validate + read the world's text, reduce to distinct texts, count and select the
  three vocabularies, in a fresh subprocess so its peak RSS is its own. Target on the large
  world (``omni sample --size large``): under 5 minutes on 2 cores, peak under 6 GB.
* ``build``: ``build_features`` end to end (vocabularies + all token tables), same protocol.

Requires the ``bench`` extra (scikit-learn, psutil).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import polars as pl

from omnisearchsage.contract import ENGAGEMENTS, PINS, PRODUCTS, Workspace
from omnisearchsage.features.config import FeatureConfig
from omnisearchsage.features.featurizer import Featurizer
from omnisearchsage.features.vocab import build_vocabularies

#: Synthetic texts: a Zipf vocabulary of random words, 1-12 words per text (queries and
#: titles), some capitalised words, punctuation, accents and CJK characters.
SYNTH_WORDS = 60_000
SYNTH_ZIPF = 1.15
CJK = "手机壳沙发客厅厨房装饰圣诞节礼物"


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` query/title-like strings, generated with NumPy + Polars in a few seconds."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz") + ["é", "ü", "ñ"])
    lengths = rng.integers(2, 11, size=SYNTH_WORDS)
    chars = rng.choice(letters, size=int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    vocab = np.array(["".join(w) for w in np.split(chars, cuts)], dtype=object)
    vocab[rng.choice(SYNTH_WORDS, 300, replace=False)] = [
        CJK[i % len(CJK)] + CJK[(i * 7 + 3) % len(CJK)] for i in range(300)]
    per_text = np.where(rng.random(n) < 0.5, rng.integers(1, 5, n), rng.integers(4, 13, n))
    ranks = (rng.zipf(SYNTH_ZIPF, size=int(per_text.sum())) - 1) % SYNTH_WORDS
    words = pl.Series(vocab[ranks].tolist())
    words = pl.select(
        pl.when(pl.lit(pl.Series(rng.random(words.len()) < 0.1))).then(words.str.to_titlecase())
        .when(pl.lit(pl.Series(rng.random(words.len()) < 0.05))).then(words + ",")
        .otherwise(words)
    ).to_series()
    row = np.repeat(np.arange(n), per_text)
    frame = pl.DataFrame({"row": row, "w": words}).group_by("row", maintain_order=True).agg(pl.col("w").str.join(" "))
    return frame.get_column("w").to_list()


def world_texts(ws: Workspace, n: int) -> list[str]:
    """Pin and product titles/descriptions and queries of a world, cycled to ``n`` texts."""
    parts = []
    for schema in (PINS, PRODUCTS):
        if ws.has(schema):
            lf = pl.scan_parquet(ws.path(schema))
            parts += [lf.select(text=pl.col(c)) for c in ("title", "description")]
    parts.append(pl.scan_parquet(ws.path(ENGAGEMENTS)).select(text=pl.col("query")).head(n))
    texts = pl.concat(parts).drop_nulls().head(n).collect().get_column("text")
    reps = -(-n // texts.len())
    return pl.concat([texts] * reps).head(n).to_list()


def _throughput(args: argparse.Namespace) -> None:
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.pipeline import FeatureUnion

    t = time.perf_counter()
    texts = world_texts(Workspace(args.world), args.texts) if args.world else synthetic_texts(args.texts)
    source = f"world {args.world}" if args.world else "synthetic"
    print(f"{len(texts):,} texts ({source}, mean {np.mean([len(x) for x in texts[:100_000]]):.0f} chars), "
          f"made in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs")

    cfg = FeatureConfig()
    t = time.perf_counter()
    corpus = pl.DataFrame({"text": texts}).group_by("text").agg(weight=pl.len())
    vocabs, stats = build_vocabularies(corpus, cfg)
    feat = Featurizer(vocabs, cfg)
    print(f"vocabularies from the same texts (not timed below): {time.perf_counter() - t:.1f} s; "
          + ", ".join(f"{k} {stats[k]['size']:,}" for k in vocabs) + f"; OOV rate {stats['oov_rate']:.2%}")

    # Wall and CPU seconds (all threads of this process): on a shared machine the CPU figure
    # is the fair one, the wall figure includes waiting for a core.
    results: dict[str, tuple[float, float]] = {}
    t, c = time.perf_counter(), time.process_time()
    ids, _ = feat.encode(texts)
    results["omni Featurizer.encode (Polars path)"] = (time.perf_counter() - t, time.process_time() - c)
    union = FeatureUnion([
        ("word", HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=2**20,
                                   alternate_sign=False, norm=None)),
        ("char", HashingVectorizer(analyzer="char_wb", ngram_range=(3, 3), n_features=2**18,
                                   alternate_sign=False, norm=None)),
    ])
    t, c = time.perf_counter(), time.process_time()
    matrix = union.transform(texts)
    results["sklearn HashingVectorizer word(1,2) + char_wb(3,3)"] = (time.perf_counter() - t, time.process_time() - c)
    base_wall, base_cpu = results["sklearn HashingVectorizer word(1,2) + char_wb(3,3)"]
    print(f"\n{'method':<52}{'wall s':>8}{'CPU s':>8}{'texts/s (wall)':>16}{'speed-up wall / CPU':>22}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<52}{wall:>8.1f}{cpu:>8.1f}{len(texts) / wall:>16,.0f}"
              f"{base_wall / wall:>14.2f}x / {base_cpu / cpu:.2f}x")
    print(f"omni: {ids.size:,} token ids ({ids.size / len(texts):.1f} per text); "
          f"sklearn: {int(matrix.sum()):,} n-gram occurrences, {matrix.nnz:,} non-zeros")

    sample = texts[: args.latency_queries]
    feat.encode(sample[:1])  # builds the lookup dicts once
    lat = []
    for q in sample:
        t = time.perf_counter()
        feat.encode([q])
        lat.append(time.perf_counter() - t)
    lat_us = np.array(lat) * 1e6
    print(f"single query (Python path): p50 {np.percentile(lat_us, 50):.0f} us, "
          f"p99 {np.percentile(lat_us, 99):.0f} us over {len(sample):,} queries")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _vocab_child(ws: Workspace) -> dict[str, Any]:
    from omnisearchsage.features.sources import load_sources, training_corpus
    from omnisearchsage.split import TimeSplit

    cfg = FeatureConfig()
    out: dict[str, Any] = {}
    t0 = t = time.perf_counter()
    sources = load_sources(ws, cfg, TimeSplit.for_workspace(ws))
    out["validate_and_read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    corpus = training_corpus(sources)
    out["distinct_texts_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, stats = build_vocabularies(corpus, cfg)
    out["count_and_select_s"] = time.perf_counter() - t
    out["total_s"] = time.perf_counter() - t0
    out["entities"] = sources.pins.height + sources.products.height
    out["queries"] = sources.queries.height
    out["distinct_texts"] = corpus.height
    out["sizes"] = {k: stats[k]["size"] for k in ("unigram", "bigram", "char_trigram")}
    out["coverage"] = {k: round(stats[k]["coverage"], 4) for k in ("unigram", "bigram", "char_trigram")}
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


def _build_child(ws: Workspace) -> dict[str, Any]:
    from omnisearchsage.features.build import build_features

    t = time.perf_counter()
    m = build_features(ws, FeatureConfig())
    return {"total_s": time.perf_counter() - t, "rows": {k: v["rows"] for k, v in m["tables"].items()},
            "vocab_sizes": m["vocab_sizes"], "oov_rate": m["oov_rate"], "peak_rss_gb": _peak_rss_gb()}


def _in_subprocess(section: str, world: str) -> None:
    proc = subprocess.run([sys.executable, __file__, f"_{section}", "--world", world],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{section} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{section} on {world}:")
    for k, v in res.items():
        print(f"  {k:<22} {v:.1f}" if isinstance(v, float) else f"  {k:<22} {v}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="section", required=True)
    tp = sub.add_parser("throughput", help="encode throughput vs HashingVectorizer")
    tp.add_argument("--texts", type=int, default=1_000_000, help="number of texts")
    tp.add_argument("--world", help="take texts from this workspace instead of synthesising them")
    tp.add_argument("--latency-queries", type=int, default=2_000, help="single queries timed")
    for name in ("vocab", "build", "_vocab", "_build"):
        sp = sub.add_parser(name, help=None if name.startswith("_") else f"{name} time + peak memory")
        sp.add_argument("--world", required=True, help="workspace (e.g. from `omni sample --size large`)")
    args = p.parse_args()
    if args.section == "throughput":
        _throughput(args)
    elif args.section in ("vocab", "build"):
        _in_subprocess(args.section, args.world)
    else:
        child = _vocab_child if args.section == "_vocab" else _build_child
        print(json.dumps(child(Workspace(args.world))))


if __name__ == "__main__":
    main()
