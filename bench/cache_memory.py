"""Bytes per query-cache entry, measured with tracemalloc over many inserts.

    python bench/cache_memory.py [--entries 100000] [--dims 256,512]

Inserts ``entries`` distinct query texts (10-30 characters, like the query log's) with one
float32 vector each through ``QueryCache.put_many`` (the service's path) and reports the Python
heap growth per entry (tracemalloc) and the resident-memory growth (the allocator's overhead
included), beside the baseline of the same vectors held in one plain list (the data alone, with
numpy's per-array header). Run one dim per process: RSS is measured for the cache, which runs first.
"""
from __future__ import annotations

import argparse
import gc
import os
import tracemalloc

import numpy as np

from omnisearchsage.serving.cache import QueryCache


def _texts(n: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    lengths = rng.integers(10, 31, n)
    return [f"{i} " + "".join(rng.choice(letters, k)) for i, k in enumerate(lengths)]


def _rss() -> int:
    """Resident set size in bytes (Linux), which adds the allocator's own overhead to tracemalloc's count."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(fill) -> tuple[int, int]:
    """(Python heap growth, RSS growth) while ``fill`` builds what it returns."""
    gc.collect()
    rss = _rss()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = fill()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    grown = _rss() - rss
    del kept
    return after - before, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", default="256,512")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    texts = _texts(args.entries, rng)
    for dim in (int(d) for d in args.dims.split(",")):
        vectors = rng.standard_normal((args.entries, dim)).astype(np.float32)

        def cache(vectors: np.ndarray = vectors) -> QueryCache:
            c = QueryCache(args.entries, 30 * 86400)
            for start in range(0, args.entries, 256):  # the service inserts a batch's misses at once
                c.put_many("v1", texts[start:start + 256], vectors[start:start + 256])
            return c

        def baseline(vectors: np.ndarray = vectors) -> list[np.ndarray]:
            return [row.copy() for row in vectors]

        n = args.entries
        (heap, rss), (data, _) = _measure(cache), _measure(baseline)
        print(f"dim {dim}: QueryCache {heap / n:,.0f} B/entry heap, {rss / n:,.0f} B/entry RSS "
              f"({rss / 2**20:,.0f} MiB RSS for {n:,}); baseline: the vectors alone as numpy rows "
              f"{data / n:,.0f} B/entry heap")


if __name__ == "__main__":
    main()
