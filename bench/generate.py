"""Benchmark the synthetic world generator: rows/s and peak memory per size.

Each size runs in a fresh subprocess so its peak RSS is its own. Two baselines are measured in
the same run, on the same machine:

* **naive per-row Python**: the obvious generator – a Python loop that draws one engagement at a
  time (Zipf query, topic-matched pin, action, timestamp) into a list of dicts, then writes it –
  over a 10k-row slice, on the generated world's own pools. It is what the vectorised generator
  replaces.
* **pyarrow write only**: re-writing the generated engagements table with ``pq.write_table``;
  the I/O floor no generator can beat.

Usage::

    python bench/generate.py                  # tiny, small, medium
    python bench/generate.py tiny small large # large: ~2M pins, 20M engagements (minutes)
"""
from __future__ import annotations

import argparse
import bisect
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from omnisearchsage.contract import ENGAGEMENTS, RAW_TABLES, TRUTH_PINS, TRUTH_QUERIES, Workspace

NAIVE_ROWS = 10_000


def _child(size: str, seed: int, out: str) -> None:
    """Generate one world and print its stats and own peak RSS as JSON (run in a subprocess)."""
    from omnisearchsage.sample_data.generate import generate_world

    t0 = time.perf_counter()
    stats = generate_world(out, size, seed)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stats": stats.as_dict(), "seconds": seconds, "peak_mb": peak_mb}))


def naive_engagements(ws: Workspace, n: int, seed: int = 0) -> float:
    """Rows/s of a per-row Python engagement generator on ``ws``'s query and pin pools."""
    rng = random.Random(seed)
    queries = pl.read_parquet(ws.path(TRUTH_QUERIES)).select("query", "topic").rows()
    pins_by_topic: dict[str, list[str]] = {}
    for pin_id, topic in pl.read_parquet(ws.path(TRUTH_PINS)).select("pin_id", "topic").iter_rows():
        pins_by_topic.setdefault(topic, []).append(pin_id)
    cum = []
    total = 0.0
    for rank in range(1, len(queries) + 1):
        total += rank ** -0.9
        cum.append(total)
    topics = list(pins_by_topic)
    end = datetime(2026, 11, 1)
    t0 = time.perf_counter()
    rows = []
    for _ in range(n):
        query, topic = queries[bisect.bisect(cum, rng.random() * total)]
        if rng.random() > 0.9:
            topic = rng.choice(topics)
        pins = pins_by_topic.get(topic) or pins_by_topic[rng.choice(topics)]
        rows.append({
            "ts": end - timedelta(seconds=rng.random() * 730 * 86400),
            "query": query, "entity_type": "pin", "entity_id": rng.choice(pins),
            "action": rng.choices(("save", "long_click", "click"), (0.25, 0.25, 0.5))[0], "lang": "en",
        })
    with tempfile.TemporaryDirectory() as tmp:
        pl.DataFrame(rows).write_parquet(Path(tmp) / "e.parquet")
    return n / (time.perf_counter() - t0)


def write_only(ws: Workspace) -> float:
    """Rows/s of writing the generated engagements with pyarrow alone (zstd, like the generator)."""
    table = pq.read_table(ws.path(ENGAGEMENTS))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pq.write_table(table, Path(tmp) / "e.parquet", compression="zstd")
        return table.num_rows / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", default=["tiny", "small", "medium"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return
    header = (f"{'size':<7}{'pins':>10}{'engagements':>13}{'rows':>12}{'images':>8}{'seconds':>9}"
              f"{'rows/s':>12}{'eng rows/s':>12}{'peak MB':>9}{'naive rows/s':>14}{'write-only rows/s':>19}")
    print(header)
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ws"
            proc = subprocess.run([sys.executable, __file__, "--child", size, str(args.seed), str(out)],
                                  check=True, capture_output=True, text=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            ws = Workspace(out)
            rows = sum(pq.read_metadata(ws.path(t)).num_rows for t in RAW_TABLES)
            stats = res["stats"]
            naive = naive_engagements(ws, NAIVE_ROWS)
            floor = write_only(ws)
            print(f"  phases (s): {stats['phase_seconds']}", file=sys.stderr)
            print(f"{size:<7}{stats['pins']:>10,}{stats['engagements']:>13,}{rows:>12,}{stats['image_files']:>8,}"
                  f"{res['seconds']:>9.1f}{rows / res['seconds']:>12,.0f}"
                  f"{stats['engagements'] / stats['phase_seconds']['engagements']:>12,.0f}{res['peak_mb']:>9,.0f}"
                  f"{naive:>14,.0f}{floor:>19,.0f}", flush=True)
    print("rows/s: all raw rows over the whole run (images included); eng rows/s: the engagements phase alone; "
          f"naive rows/s: per-row Python engagement generator over {NAIVE_ROWS:,} rows on the same world; "
          "write-only rows/s: pyarrow re-writing the engagements table (the I/O floor).")


if __name__ == "__main__":
    main()
