"""Spark (local mode) against the single-machine engines, on one world, side by side.

    omni sample --size large --out /tmp/large          # 20M engagements
    python bench/spark_vs_duckdb.py /tmp/large          # queries, boards, vocab
    python bench/spark_vs_duckdb.py /tmp/large --stages queries --spark-master 'local[2]'

Per stage, each engine runs in its own fresh process (Spark's includes its JVM and
Python workers) on a private workspace whose ``raw/`` links to the world's. Reported:

* ``wall s``: the whole process, Spark's JVM start included (what a user waits for);
* ``stage s``: the stage function alone, after the session is up;
* ``peak RSS``: the largest sum of resident memory over the process tree, sampled
  every 0.1 s with psutil (DuckDB and Polars run in one process; Spark adds a JVM and
  Python UDF workers, which ``getrusage`` of the parent would not see).

The baseline is the default engine (DuckDB for enrich, Polars for vocabulary counts).
After both run, their outputs are compared (sorted) and the result printed: the figures
are only worth reading if the tables are identical. On one machine Spark is expected to
lose; the ratio says by how much its generality costs there.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from omnisearchsage.contract import (
    BOARD_TITLES,
    ENGAGED_QUERIES,
    ENGAGED_QUERY_COUNTS,
    VOCAB_KINDS,
    Workspace,
)

GB = 1024**3
STAGES = ("queries", "boards", "vocab")
BASELINE = {"queries": "duckdb", "boards": "duckdb", "vocab": "polars"}
_SORT = {
    ENGAGED_QUERIES.name: ["entity_type", "entity_id"],
    ENGAGED_QUERY_COUNTS.name: ["entity_type", "entity_id", "query", "action", "day"],
    BOARD_TITLES.name: ["pin_id"],
}


def child(stage: str, engine: str, root: Path, master: str, driver_memory: str) -> dict[str, Any]:
    """Run one stage with one engine in this process; return its timings and a summary of the result."""
    ws = Workspace(root)
    spark, started = None, time.perf_counter()
    if engine == "spark":
        from omnisearchsage.enrich.spark import SparkConfig, get_session

        spark = get_session(SparkConfig(master=master, driver_memory=driver_memory))
    session_s = time.perf_counter() - started
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if stage == "queries":
        from omnisearchsage.enrich.queries import build_engaged_queries
        from omnisearchsage.enrich.spark_jobs import build_engaged_queries_spark

        stats = build_engaged_queries_spark(ws, spark) if spark else build_engaged_queries(ws)
        result = {"events": stats["events"]}
    elif stage == "boards":
        from omnisearchsage.enrich.boards import build_board_titles
        from omnisearchsage.enrich.spark_jobs import build_board_titles_spark

        stats = build_board_titles_spark(ws, spark) if spark else build_board_titles(ws)
        result = {"titles": stats["titles"]}
    else:
        from omnisearchsage.features.config import FeatureConfig
        from omnisearchsage.features.sources import load_sources, training_corpus
        from omnisearchsage.features.spark_vocab import count_tokens_spark
        from omnisearchsage.features.vocab import count_tokens
        from omnisearchsage.split import TimeSplit

        cfg = FeatureConfig()
        corpus = training_corpus(load_sources(ws, cfg, TimeSplit.for_workspace(ws)))
        corpus_s = time.perf_counter() - started
        started = time.perf_counter()
        counts = count_tokens_spark(spark, corpus, cfg) if spark else count_tokens(corpus, cfg)
        (ws.root / "counts").mkdir(exist_ok=True)
        for kind, frame in counts.items():
            frame.sort("token").write_parquet(ws.root / "counts" / f"{kind}.parquet")
        result = {"texts": corpus.height, "corpus_s": round(corpus_s, 2)}
    result |= {"session_s": round(session_s, 2), "stage_s": round(time.perf_counter() - started, 2)}
    if spark is not None:
        spark.stop()
    return result


def measure(stage: str, engine: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; sample the process tree's memory while it runs."""
    cmd = [sys.executable, __file__, "--child", stage, engine, str(root), args.spark_master, args.spark_driver_memory]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):  # a worker exited between listing and reading: skip this sample
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"{stage}/{engine} failed (exit {proc.returncode}); rerun the child by hand: {' '.join(cmd)}")
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": round(wall, 2), "peak_gb": round(peak / GB, 2)}


def scratch_workspace(world: Path, scratch: Path, engine: str) -> Path:
    """A workspace per side (``local`` or ``spark``): links to the world's inputs, its own enrich/ and
    features/ (so the vocabulary stage reads each side's own enrichment)."""
    root = scratch / _side(engine)
    root.mkdir(parents=True, exist_ok=True)
    for entry in world.iterdir():
        if entry.name not in ("enrich", "features") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry.resolve())
    return root


def _side(engine: str) -> str:
    return "spark" if engine == "spark" else "local"


def identical(stage: str, a: Path, b: Path) -> bool:
    """Whether two engines' outputs of ``stage`` are the same tables once sorted."""
    if stage == "vocab":
        paths = [Path("counts") / f"{k}.parquet" for k in VOCAB_KINDS]
        return all(pl.read_parquet(a / p).equals(pl.read_parquet(b / p)) for p in paths)
    tables = [BOARD_TITLES] if stage == "boards" else [ENGAGED_QUERIES, ENGAGED_QUERY_COUNTS]
    return all(
        pl.read_parquet(Workspace(a).path(t)).sort(_SORT[t.name]).equals(
            pl.read_parquet(Workspace(b).path(t)).sort(_SORT[t.name]))
        for t in tables
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        stage, engine, root, master, memory = argv[1:6]
        print(json.dumps(child(stage, engine, Path(root), master, memory)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("world", type=Path, help="A sample world (omni sample --size large) or any raw workspace.")
    p.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated, from {', '.join(STAGES)}.")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/omni-bench-spark"),
                   help="Where each engine's workspace is written.")
    p.add_argument("--spark-master", default="local[*]", help="Spark master for the Spark runs.")
    p.add_argument("--spark-driver-memory", default="3g",
                   help="Spark driver heap (local mode: the whole job; DuckDB's default limit is 3GB).")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    print(f"world {args.world}, {psutil.cpu_count()} cores, spark {args.spark_master}")
    print(f"{'stage':8} {'engine':7} {'wall s':>8} {'stage s':>8} {'session s':>9} {'peak RSS GB':>11}  vs baseline")
    for stage in stages:
        rows = {}
        for engine in (BASELINE[stage], "spark"):
            root = scratch_workspace(args.world, args.scratch, engine)
            rows[engine] = measure(stage, engine, root, args)
            base = rows[BASELINE[stage]]
            r = rows[engine]
            ratio = "baseline" if engine == BASELINE[stage] else (
                f"{r['wall_s'] / base['wall_s']:.1f}x wall, {r['stage_s'] / base['stage_s']:.1f}x stage, "
                f"{r['peak_gb'] / base['peak_gb']:.1f}x memory")
            print(f"{stage:8} {engine:7} {r['wall_s']:8.1f} {r['stage_s']:8.1f} {r['session_s']:9.1f} "
                  f"{r['peak_gb']:11.2f}  {ratio}", flush=True)
        same = identical(stage, args.scratch / "local", args.scratch / "spark")
        print(f"{stage:8} outputs identical (sorted): {same}; {json.dumps(rows)}", flush=True)


if __name__ == "__main__":
    main()
