"""Enrichment benchmarks, side by side in one run; each section against a named baseline.

    python bench/enrich.py                 # every section
    python bench/enrich.py queries         # one section (see --help for each section's options)

Sections:

* ``queries``: engaged queries over a large engagement log (default 20M events),
  the DuckDB stage (:func:`build_engaged_queries`, which also writes the
  per-day counts table) against a plain pandas groupby computing the same top-20
  lists, plus DuckDB doing only pandas's work (no validation, no counts table).
  Each runs in its own subprocess so its wall time, CPU time and peak RSS are its
  own. Targets: at least 5x faster than pandas, under 4 GB.
* ``captions``: captions/s of batched BLIP ``generate`` against a one-image-at-a-time
  loop on the same model and images, on CPU, with the output length fixed
  (``min_new_tokens = max_new_tokens``) so both do the same work. Target: at least
  3x. Where CUDA is available, also images/s of a BLIP-base-sized model in fp16.

A section is a ``(add_arguments, run)`` pair in :data:`SECTIONS`; its options are
prefixed with the section name so sections never clash.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from omnisearchsage.contract import ENGAGED_QUERIES, ENGAGEMENTS, PINS, PRODUCTS, Workspace
from omnisearchsage.enrich.config import QueriesConfig
from omnisearchsage.enrich.duck import connect, copy_to_parquet
from omnisearchsage.enrich.queries import (
    QUERY_MAP_SQL,
    build_engaged_queries,
    effective_cutoff,
    top_queries_sql,
)
from omnisearchsage.features.text import normalize

GB = 1024**3


def peak_rss_bytes() -> int:
    """This process's peak resident set size: ``VmHWM`` of /proc/self/status (Linux).

    Not ``getrusage().ru_maxrss``: Linux carries the parent's peak across fork+exec,
    so a child of the process that generated the data would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (the benchmark measures memory on Linux only)")


def run_child(*args: str) -> dict[str, Any]:
    """Run this script's hidden ``_child`` entry in a fresh interpreter; return its JSON report."""
    proc = subprocess.run(
        [sys.executable, __file__, "_child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- (a) engaged queries
def synthetic_engagements(ws: Workspace, rows: int, pins: int, products: int, seed: int = 0) -> None:
    """A large raw workspace with numpy: Zipf-popular entities, each with its own related queries.

    Used when no large sample world is given. Queries come in several spellings
    (case, spacing) so normalisation matters; a share of events are query→query
    clicks and unknown actions, which the stage must skip or weigh 0.
    """
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:05d}" for i in range(20_000)])
    n_queries = 400_000
    a, b = rng.integers(0, len(words), n_queries), rng.integers(0, len(words), n_queries)
    base = pl.Series(words[a]) + " " + pl.Series(words[b])
    spelled = pl.concat([base, base.str.to_uppercase(), base.str.replace(" ", "  ")])
    ws.raw.mkdir(parents=True, exist_ok=True)
    pl.select(pin_id="p" + pl.int_range(pins).cast(pl.Utf8)).write_parquet(ws.path(PINS))
    pl.select(product_id="x" + pl.int_range(products).cast(pl.Utf8)).write_parquet(ws.path(PRODUCTS))

    kind = rng.choice(np.array([0, 1, 2]), rows, p=[0.75, 0.2, 0.05])  # pin, product, query
    popular = np.minimum(rng.zipf(1.2, rows) - 1, 10**9)
    entity = np.where(kind == 0, popular % pins, popular % products)
    # Each entity draws from ~50 related queries, popular ones more often.
    query = (entity * 7919 + np.minimum(rng.zipf(1.5, rows), 50)) % n_queries
    spelling = rng.choice(np.array([0, 1, 2]), rows, p=[0.8, 0.1, 0.1])
    actions = np.array(["click", "long_click", "save", "add_to_cart", "checkout", "share"])
    action = rng.choice(len(actions), rows, p=[0.45, 0.2, 0.2, 0.05, 0.02, 0.08])
    start = np.datetime64("2024-11-01T00:00:00", "us")
    ts = start + rng.integers(0, 730 * 86_400 * 10**6, rows).astype("timedelta64[us]")
    # A query→query event's entity is the related query's text.
    entity_id = pl.Series(np.array(["p", "x", ""])[kind]) + pl.Series(entity).cast(pl.Utf8)
    related = spelled.gather((query * 13 + 1) % n_queries)
    df = pl.DataFrame(
        {
            "ts": ts,
            "query": spelled.gather(query + n_queries * spelling),
            "entity_type": pl.Series(np.array(["pin", "product", "query"])[kind]),
            "entity_id": pl.select(pl.when(pl.Series(kind == 2)).then(related).otherwise(entity_id)).to_series(),
            "action": pl.Series(actions[action]),
            "lang": pl.Series([None] * rows, dtype=pl.Utf8),
        }
    )
    df.write_parquet(ws.path(ENGAGEMENTS), row_group_size=1_000_000)


def pandas_engaged_queries(ws: Workspace, cfg: QueriesConfig, out: Path) -> None:
    """The baseline: the same top-k lists with a plain pandas groupby (no counts table)."""
    import pandas as pd

    assert cfg.cutoff is not None
    cutoff = pd.Timestamp(cfg.cutoff)
    start = cutoff - pd.Timedelta(days=cfg.window_days)
    df = pd.read_parquet(ws.path(ENGAGEMENTS), columns=["ts", "query", "entity_type", "entity_id", "action"])
    df = df[df["entity_type"].isin(["pin", "product"]) & (df["ts"] >= start) & (df["ts"] < cutoff)]
    distinct = df["query"].unique()
    df["query"] = df["query"].map(dict(zip(distinct, map(normalize, distinct))))
    df = df[df["query"] != ""]
    df["weight"] = df["action"].map(cfg.action_weights).fillna(cfg.unknown_action_weight)
    scores = df.groupby(["entity_type", "entity_id", "query"])["weight"].sum().rename("score").reset_index()
    scores = scores[scores["score"] > 0].sort_values(
        ["entity_type", "entity_id", "score", "query"], ascending=[True, True, False, True]
    )
    top = scores.groupby(["entity_type", "entity_id"]).head(cfg.top_k)
    lists = top.groupby(["entity_type", "entity_id"]).agg(queries=("query", list), scores=("score", list))
    lists.reset_index().to_parquet(out)


#: The same-work DuckDB variant: per (entity, query, action) counts, no per-day state.
_TOTALS_SQL = """
CREATE TEMP TABLE counts AS
SELECT e.entity_type, e.entity_id, m.query, e.action, count(*) AS n
FROM read_parquet($engagements) e JOIN query_map m ON m.raw = e.query
WHERE e.entity_type IN ('pin', 'product') AND e.ts >= $start AND e.ts < $cutoff AND m.query <> ''
GROUP BY ALL
"""


def duckdb_top_only(ws: Workspace, cfg: QueriesConfig, out: Path) -> None:
    """DuckDB doing exactly the baseline's work: the stage's SQL minus validation and per-day counts."""
    assert cfg.cutoff is not None
    end = datetime(cfg.cutoff.year, cfg.cutoff.month, cfg.cutoff.day)
    start = end - timedelta(days=cfg.window_days)
    window = {"engagements": str(ws.path(ENGAGEMENTS)), "start": start, "cutoff": end}
    with connect(ws.enrich, cfg.memory_limit, cfg.threads) as con:
        con.execute(QUERY_MAP_SQL, window | {"prev_start": start, "prev_cutoff": start})
        con.execute(_TOTALS_SQL, window)
        sql, params = top_queries_sql(cfg)
        copy_to_parquet(con, sql, out, {"k": cfg.top_k, **params})


#: Engines the ``queries`` section measures, each in its own subprocess.
ENGINES: dict[str, str] = {
    "duckdb": "the stage, build_engaged_queries: validation + per-day counts table + top-k",
    "duckdb-top-only": "DuckDB, same work as pandas: top-k lists only",
    "pandas": "plain pandas groupby: top-k lists only",
}


def child(args: list[str]) -> None:
    """``_child ENGINE WS CUTOFF MEMORY_LIMIT THREADS OUT``: one measured run, JSON on stdout."""
    engine, root, cutoff, memory_limit, threads, out = args
    ws = Workspace(root)
    cfg = QueriesConfig(
        cutoff=date.fromisoformat(cutoff), memory_limit=memory_limit, threads=int(threads) if threads else None
    )
    started, cpu = time.perf_counter(), time.process_time()
    if engine == "duckdb":
        build_engaged_queries(ws, cfg)
    elif engine == "duckdb-top-only":
        duckdb_top_only(ws, cfg, Path(out))
    else:
        pandas_engaged_queries(ws, cfg, Path(out))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss": peak_rss_bytes()}))


def queries_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("queries: engaged queries, DuckDB vs pandas")
    g.add_argument("--queries-workspace", type=Path, help="A large world (omni sample --size large). "
                   "Default: generate a synthetic one under --queries-scratch.")
    g.add_argument("--queries-scratch", type=Path, default=Path("/tmp/omni-bench-enrich"),
                   help="Where the synthetic world is generated (reused when present).")
    g.add_argument("--queries-rows", type=int, default=20_000_000, help="Synthetic engagements.")
    g.add_argument("--queries-pins", type=int, default=2_000_000, help="Synthetic pins.")
    g.add_argument("--queries-products", type=int, default=200_000, help="Synthetic products.")
    g.add_argument("--queries-memory-limit", default=QueriesConfig.memory_limit, help="DuckDB memory limit.")
    g.add_argument("--queries-threads", type=int, help="DuckDB threads (default: all cores).")
    g.add_argument("--queries-skip-pandas", action="store_true", help="Time DuckDB only.")


def queries_run(args: argparse.Namespace) -> None:
    ws = Workspace(args.queries_workspace or args.queries_scratch / f"rows-{args.queries_rows}")
    if not ws.has(ENGAGEMENTS):
        t = time.perf_counter()
        synthetic_engagements(ws, args.queries_rows, args.queries_pins, args.queries_products)
        print(f"generated {args.queries_rows:,} engagements in {ws.root} ({time.perf_counter() - t:.0f} s)")
    rows = pl.scan_parquet(ws.path(ENGAGEMENTS)).select(pl.len()).collect().item()
    cutoff = effective_cutoff(ws, QueriesConfig()).isoformat()
    threads = str(args.queries_threads or "")
    print(f"engaged queries over {rows:,} engagements, cutoff {cutoff}, window 730 days")
    engines = [e for e in ENGINES if not (args.queries_skip_pandas and e == "pandas")]
    results, outputs = {}, {}
    for engine in engines:
        outputs[engine] = ws.path(ENGAGED_QUERIES) if engine == "duckdb" else ws.enrich / f"bench.{engine}.parquet"
        memory = args.queries_memory_limit if engine.startswith("duckdb") else ""
        results[engine] = run_child(engine, str(ws.root), cutoff, memory, threads, str(outputs[engine]))
        r = results[engine]
        print(f"  {engine:<16} {r['seconds']:7.1f} s wall {r['cpu_seconds']:7.1f} s CPU  "
              f"peak RSS {r['peak_rss'] / GB:5.2f} GB   ({ENGINES[engine]})")
    duck = results["duckdb"]
    print(f"  stage peak RSS < 4 GB: {'yes' if duck['peak_rss'] < 4 * GB else 'NO'}")
    reference = pl.read_parquet(outputs["duckdb"]).select("entity_type", "entity_id", "queries")
    for engine in engines[1:]:
        same = reference.sort("entity_type", "entity_id").equals(
            pl.read_parquet(outputs[engine]).select(reference.columns).sort("entity_type", "entity_id")
        )
        print(f"  {engine}: same top-{QueriesConfig.top_k} lists as the stage for {reference.height:,} entities: {same}")
    if "pandas" in results:
        base = results["pandas"]
        for engine in ("duckdb", "duckdb-top-only"):
            wall, cpu = base["seconds"] / results[engine]["seconds"], base["cpu_seconds"] / results[engine]["cpu_seconds"]
            verdict = "met" if wall >= 5 else "NOT met"
            print(f"  {engine} vs pandas: {wall:.1f}x faster (wall; target >= 5x {verdict}), {cpu:.1f}x less CPU")


# ---------------------------------------------------------------- (b) captions
def _bench_blip(size: str, seed: int) -> tuple[Any, Any]:
    """A randomly initialised BLIP: ``small`` is the fine-tuner's default captioner, ``base`` BLIP-base's
    shapes (ViT-B/16 at 384 px, BERT-base decoder). Random weights time the same as trained ones."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    from omnisearchsage.enrich.config import FinetuneConfig
    from omnisearchsage.enrich.finetune import build_small_blip

    texts = [f"a {c} {s} on a {b} background" for c in ("red", "blue", "green") for s in ("circle", "star")
             for b in ("white", "black")]
    model, processor = build_small_blip(texts, FinetuneConfig(seed=seed))
    if size == "base":
        torch.manual_seed(seed)
        text = model.config.text_config
        model = BlipForConditionalGeneration(BlipConfig(text_config={
            "vocab_size": text.vocab_size, "bos_token_id": text.bos_token_id, "sep_token_id": text.sep_token_id,
            "eos_token_id": text.eos_token_id, "pad_token_id": text.pad_token_id}))
        processor.image_processor.size = {"height": 384, "width": 384}
    return model.eval(), processor


def _captions_per_s(model: Any, processor: Any, pixels: Any, batch_size: int, tokens: int) -> float:
    """Images/s of :func:`generate_captions` in batches of ``batch_size``, output fixed at ``tokens``."""
    from omnisearchsage.enrich.captions import generate_captions

    generate_captions(model, processor, pixels[:batch_size], tokens, tokens)  # warm-up
    started = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        generate_captions(model, processor, pixels[i:i + batch_size], tokens, tokens)
    return len(pixels) / (time.perf_counter() - started)


def captions_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("captions: batched BLIP generate vs one image at a time")
    g.add_argument("--captions-size", choices=["small", "base"], default="small",
                   help="small: the fine-tuner's default captioner; base: BLIP-base shapes (slow on CPU).")
    g.add_argument("--captions-images", type=int, default=256, help="Images captioned per measurement.")
    g.add_argument("--captions-batch-size", type=int, default=32, help="Images per batched generate().")
    g.add_argument("--captions-tokens", type=int, default=20,
                   help="Caption length in tokens (min_new_tokens = max_new_tokens: both loops do equal work).")
    g.add_argument("--captions-gpu-images", type=int, default=2048,
                   help="Images for the GPU figure (BLIP-base in fp16), when CUDA is available.")


def captions_run(args: argparse.Namespace) -> None:
    import torch
    from PIL import Image

    model, processor = _bench_blip(args.captions_size, seed=0)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
              for _ in range(args.captions_images)]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"BLIP-{args.captions_size} ({n_params / 1e6:.1f}M parameters) on CPU "
          f"({torch.get_num_threads()} threads), {len(pixels)} images, {args.captions_tokens} tokens each")
    single = _captions_per_s(model, processor, pixels, 1, args.captions_tokens)
    batched = _captions_per_s(model, processor, pixels, args.captions_batch_size, args.captions_tokens)
    print(f"  one image at a time   {single:8.1f} captions/s")
    print(f"  batches of {args.captions_batch_size:<4}       {batched:8.1f} captions/s")
    speedup = batched / single
    print(f"  speed-up of batching: {speedup:.1f}x (target >= 3x: {'met' if speedup >= 3 else 'NOT met'})")
    if not torch.cuda.is_available():
        print("  GPU: no CUDA device here, so no fp16 BLIP-base figure")
        return
    model, processor = _bench_blip("base", seed=0)
    model = model.to("cuda", torch.float16)
    pixels = processor.image_processor(images=images[:1], return_tensors="pt")["pixel_values"]
    pixels = pixels.repeat(args.captions_gpu_images, 1, 1, 1)
    rate = _captions_per_s(model, processor, pixels, args.captions_batch_size * 4, args.captions_tokens)
    print(f"  GPU {torch.cuda.get_device_name()}: BLIP-base fp16, batches of {args.captions_batch_size * 4}: "
          f"{rate:,.1f} captions/s")


#: name -> (add its options, run it); run in this order when no section is named.
SECTIONS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]] = {
    "queries": (queries_arguments, queries_run),
    "captions": (captions_arguments, captions_run),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        child(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"Sections to run: {', '.join(SECTIONS)} (default: all).")
    for add_arguments, _ in SECTIONS.values():
        add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in args.sections or list(SECTIONS):
        print(f"== {name} ({datetime.now():%Y-%m-%d %H:%M})")
        SECTIONS[name][1](args)


if __name__ == "__main__":
    main()
