"""Write a validation copy of a relevance data set: a share of its training queries become the test file.

    python bench/holdout_split.py DATA_DIR OUT_DIR [--share 0.2]

DATA_DIR holds ``products.csv``, ``train.csv`` and ``test.csv`` (the ``omni import relevance`` format).
OUT_DIR gets ``products.csv`` (a copy), ``train.csv`` (the training rows of every query not held out)
and ``test.csv`` (every training row of the held-out queries, ``importers.relevance.held_out_queries``:
the same queries ``bench/lexical_channel.py`` scores). The data set's own test file is never read,
so settings compared on the imported copy (``omni import relevance --products OUT/products.csv
--train OUT/train.csv --test OUT/test.csv ...``) are chosen without looking at the test set.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import polars as pl

from omnisearchsage.importers.relevance import PAIR_COLUMNS, held_out_queries, read_csv

log = logging.getLogger("holdout_split")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--share", type=float, default=0.2, help="share of the training queries held out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = read_csv(args.data / "train.csv", PAIR_COLUMNS)
    held = pl.Series("query", held_out_queries(train["query"].unique().sort().to_list(), args.share))
    is_held = pl.col("query").is_in(held.implode())
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.data / "products.csv", args.out / "products.csv")
    train.filter(~is_held).write_csv(args.out / "train.csv")
    train.filter(is_held).write_csv(args.out / "test.csv")
    log.info("%s: %d training queries kept, %d held out as test.csv (%d rows)", args.out,
             train["query"].n_unique() - held.len(), held.len(), train.filter(is_held).height)


if __name__ == "__main__":
    main()
