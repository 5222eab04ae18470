"""Load test of ``omni serve`` on loopback, beside the query encoder called in-process.

What it does, in one run:

1. Takes an export (``--export DIR`` or a run name with ``-w WS``), or builds one:
   the tiny sample world → board titles + engaged queries → features → a short
   training run → ``omni export`` (captions are skipped: serving speed does not
   depend on them).
2. Baseline, in this process: the exported query encoder on one query per call
   (1 torch thread, every query unseen) – queries/s and latency; then the same
   encoder behind the service's cache (:class:`CachedEncoder`) on the same query
   stream as the load, which is the service minus HTTP.
3. Starts ``omni serve`` in a subprocess, warms its cache with the head queries,
   then runs a bounded closed-loop load (default 30 s, 32 connections) with a
   Zipf stream: a request picks a head query by Zipf rank; a share of requests
   (``--miss-rate``) appends a unique token, so it misses the cache and is encoded,
   the way the long tail of a real query log behaves. The load comes from ``wrk``
   (C, with a Lua script) when it is installed (``apt-get install wrk``), else
   from an asyncio httpx client (which costs far more CPU per request).
4. Reads requests/s, p50/p99/p99.9 latency and errors from the client, and cache
   hits and misses from the server's /metrics; sends SIGTERM and checks that the
   server drains and exits cleanly.

The target (issue #7) on 2 cores: >= 2,000 requests/s on /embed at 90% cache
hits, p99 < 20 ms, zero errors. The load generator and the server share the same
cores, so the figures are a floor for the server alone.

    python bench/serve.py                          # tiny world, built in a temp dir
    python bench/serve.py --export main -w demo    # an existing run's export
    python bench/serve.py --endpoint search --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from prometheus_client.parser import text_string_to_metric_families

from omnisearchsage.contract import ENGAGEMENTS, ExportLayout, Workspace
from omnisearchsage.serving.cache import CachedEncoder, QueryCache
from omnisearchsage.serving.launch import resolve_export


@dataclass(frozen=True)
class BenchConfig:
    """Shape of the load; the defaults are the issue's target conditions."""

    duration_s: float = 30.0
    warmup_s: float = 3.0
    connections: int = 32
    workers: int = 2
    endpoint: str = "embed"
    k: int = 10
    miss_rate: float = 0.10
    zipf_s: float = 1.1
    head_queries: int = 5000
    warm_passes: int = 8
    warm_batch: int = 256
    baseline_s: float = 5.0
    size: str = "tiny"
    train_steps: int = 10
    seed: int = 0
    start_timeout_s: float = 300.0
    target_rps: float = 2000.0
    target_p99_ms: float = 20.0


# ------------------------------------------------------------------ export and queries
def build_export(root: Path, cfg: BenchConfig) -> Path:
    """The sample world of ``cfg.size`` through every stage the export needs; returns the export dir."""
    from omnisearchsage.enrich.boards import build_board_titles
    from omnisearchsage.enrich.config import BoardsConfig, QueriesConfig
    from omnisearchsage.enrich.queries import build_engaged_queries
    from omnisearchsage.features.build import build_features
    from omnisearchsage.features.config import FeatureConfig
    from omnisearchsage.sample_data.generate import generate_world
    from omnisearchsage.trainer.config import TrainConfig
    from omnisearchsage.trainer.export import export_run
    from omnisearchsage.trainer.loop import train

    ws = Workspace(root)
    generate_world(root, cfg.size, cfg.seed)
    build_board_titles(ws, BoardsConfig())
    build_engaged_queries(ws, QueriesConfig())
    build_features(ws, FeatureConfig())
    train(ws, TrainConfig(steps=cfg.train_steps, checkpoint_every=cfg.train_steps), "bench")
    return export_run(ws, "bench")


def head_queries(export_dir: Path, n: int) -> list[str]:
    """Distinct query texts, most frequent first: the workspace's query log if there, else the export's."""
    ws = Workspace(export_dir.parent.parent.parent)
    if ws.has(ENGAGEMENTS):
        df = (
            pl.scan_parquet(ws.path(ENGAGEMENTS))
            .group_by("query")
            .len()
            .sort(["len", "query"], descending=[True, False])
            .head(n)
            .collect()
        )
        return df["query"].to_list()
    return (
        pl.read_parquet(ExportLayout(export_dir).embeddings("query"), columns=["id"])["id"]
        .head(n)
        .to_list()
    )


def zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def query_stream(heads: list[str], cfg: BenchConfig, n: int, tag: str) -> list[str]:
    """``n`` queries: Zipf-drawn heads, a ``miss_rate`` share made unique (cache misses)."""
    rng = np.random.default_rng(cfg.seed)
    picks = rng.choice(len(heads), size=n, p=zipf_weights(len(heads), cfg.zipf_s))
    miss = rng.random(n) < cfg.miss_rate
    return [f"{heads[i]} {tag}{j}" if m else heads[i] for j, (i, m) in enumerate(zip(picks, miss))]


# ------------------------------------------------------------------ in-process baseline
def percentiles_ms(lat_s: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(lat_s) * 1e3
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def baseline(export_dir: Path, heads: list[str], cfg: BenchConfig) -> dict[str, dict[str, float]]:
    """The exported encoder called directly, one query per call; then behind the cache."""
    import torch

    from omnisearchsage.model.io import load_query_encoder

    torch.set_num_threads(1)
    encoder = load_query_encoder(export_dir)
    out = {}
    for name, embed in (
        ("encoder, 1 query/call, all unseen", encoder.encode),
        ("cached encoder, same stream as the load", CachedEncoder(encoder, QueryCache(10**7, 1e9)).embed),
    ):
        stream = query_stream(heads, cfg, 200_000, "b")
        if name.startswith("encoder"):
            stream = [f"{q} u{i}" for i, q in enumerate(stream)]
        else:  # warm exactly as the service is warmed
            embed(heads)
        lat, end, i = [], time.perf_counter() + cfg.baseline_s, 0
        while time.perf_counter() < end and i < len(stream):
            t = time.perf_counter()
            embed([stream[i]])
            lat.append(time.perf_counter() - t)
            i += 1
        out[name] = {"qps": len(lat) / sum(lat), **percentiles_ms(lat)}
    return out


# ------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(export_dir: Path, port: int, cfg: BenchConfig, log: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-c",
        "from omnisearchsage.cli.app import main; main()",
        "--quiet",
        "serve",
        str(export_dir),
        "--port",
        str(port),
        "--workers",
        str(cfg.workers),
        "--cache-size",
        str(10**6),
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    import httpx

    deadline = time.monotonic() + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"omni serve exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"omni serve did not answer /healthz within {cfg.start_timeout_s} s")


def warm(base: str, heads: list[str], cfg: BenchConfig) -> None:
    """POST every head query, over a fresh connection per batch so every worker sees most batches."""
    import httpx

    for _ in range(cfg.warm_passes):
        for i in range(0, len(heads), cfg.warm_batch):
            with httpx.Client(base_url=base, timeout=60) as c:
                c.post("/embed", json={"queries": heads[i : i + cfg.warm_batch]}).raise_for_status()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


# ------------------------------------------------------------------ load generators
WRK_LUA = r"""
local heads = { %(heads)s }
local cdf = {}
local total = 0
for i = 1, #heads do total = total + 1 / (i ^ %(s)f); cdf[i] = total end
for i = 1, #heads do cdf[i] = cdf[i] / total end
local miss_rate, counter, tid = %(miss)f, 0, "0"
local headers = { ["Content-Type"] = "application/json" }
local next_id = 0
function setup(thread) next_id = next_id + 1; thread:set("tid", tostring(next_id)) end
function init(args) math.randomseed(%(seed)d + tonumber(tid)) end
local function pick()
  local u, lo, hi = math.random(), 1, #heads
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return heads[lo]
end
request = function()
  local q = pick()
  if math.random() < miss_rate then counter = counter + 1; q = q .. " m" .. tid .. "_" .. counter end
  return wrk.format("POST", "/%(endpoint)s", headers, %(body)s)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_s": %%f, "p50_ms": %%f, "p99_ms": %%f, "p999_ms": %%f, ' ..
    '"max_ms": %%f, "errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency:percentile(99.9) / 1e3, latency.max / 1e3, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_script(heads: list[str], cfg: BenchConfig, seed: int) -> str:
    # JSON-escaped (ASCII) texts inside Lua long strings [=[...]=], with enough "=" that no text closes one.
    texts = [json.dumps(h)[1:-1] for h in heads]
    level = next(n for n in range(1, 100) if not any(f"]{'=' * n}]" in t for t in texts)) * "="
    escaped = ", ".join(f"[{level}[{t}]{level}]" for t in texts)
    body = (
        "'{\"queries\": [\"' .. q .. '\"]}'"
        if cfg.endpoint == "embed"
        else f'\'{{"query": "\' .. q .. \'", "k": {cfg.k}}}\''
    )
    return WRK_LUA % {
        "heads": escaped,
        "s": cfg.zipf_s,
        "miss": cfg.miss_rate,
        "seed": seed,
        "endpoint": cfg.endpoint,
        "body": body,
    }


def run_wrk(base: str, heads: list[str], cfg: BenchConfig, duration_s: float, seed: int, tmp: Path) -> dict:
    script = tmp / f"load-{seed}.lua"
    script.write_text(lua_script(heads, cfg, seed))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{cfg.connections}",
            f"-d{duration_s:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    res = json.loads(line[len("BENCH ") :])
    res["errors"] = sum(res["errors"].values())
    return res


async def _httpx_load(base: str, heads: list[str], cfg: BenchConfig, duration_s: float, seed: int) -> dict:
    import httpx

    stream = query_stream(heads, replace(cfg, seed=seed), 2_000_000, f"m{seed}_")
    lat: list[float] = []
    errors = 0
    cursor = iter(stream)
    deadline = time.perf_counter() + duration_s

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            q = next(cursor)
            body = {"queries": [q]} if cfg.endpoint == "embed" else {"query": q, "k": cfg.k}
            t = time.perf_counter()
            try:
                ok = (await c.post(f"/{cfg.endpoint}", json=body)).status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t)
            errors += not ok

    limits = httpx.Limits(max_connections=cfg.connections, max_keepalive_connections=cfg.connections)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as c:
        await asyncio.gather(*(client(c) for _ in range(cfg.connections)))
    a = np.asarray(lat) * 1e3
    return {
        "requests": len(lat),
        "duration_s": time.perf_counter() - start,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "p999_ms": float(np.percentile(a, 99.9)),
        "max_ms": float(a.max()),
        "errors": errors,
    }


def run_load(base: str, heads: list[str], cfg: BenchConfig, duration_s: float, seed: int, tmp: Path) -> dict:
    if shutil.which("wrk"):
        return {"client": "wrk", **run_wrk(base, heads, cfg, duration_s, seed, tmp)}
    return {"client": "httpx (no wrk)", **asyncio.run(_httpx_load(base, heads, cfg, duration_s, seed))}


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the server: the uvicorn parent and all its workers."""
    proc = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in (proc, *proc.children(recursive=True)))


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the wrk runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def delta(after: dict, before: dict, name: str) -> float:
    return sum(v - before.get(key, 0.0) for key, v in after.items() if key[0] == name)


# ------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = BenchConfig()
    p.add_argument("--export", help="export dir, or a run name in --workspace; default: build the tiny world")
    p.add_argument("-w", "--workspace", type=Path, help="workspace holding the run named by --export")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds of measured load")
    p.add_argument("--connections", type=int, default=d.connections)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--endpoint", choices=("embed", "search"), default=d.endpoint)
    p.add_argument(
        "--miss-rate", type=float, default=d.miss_rate, help="share of requests that are unique queries"
    )
    p.add_argument("--size", default=d.size, help="sample world to build when no --export")
    a = p.parse_args()
    cfg = BenchConfig(
        duration_s=a.duration,
        connections=a.connections,
        workers=a.workers,
        endpoint=a.endpoint,
        miss_rate=a.miss_rate,
        size=a.size,
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="omni-bench-serve-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        if a.export:
            export_dir = resolve_export(a.export, Workspace.resolve(a.workspace))
            built = f"export {export_dir}"
        else:
            export_dir = build_export(tmp / "ws", cfg)
            built = (
                f"built the {cfg.size} world + {cfg.train_steps}-step run in {time.perf_counter() - t0:.0f} s"
            )
        heads = head_queries(export_dir, cfg.head_queries)
        print(
            f"{built}; {len(heads)} head queries; cores={os.cpu_count()}, "
            f"load average at start={os.getloadavg()[0]:.2f}"
        )

        base_res = baseline(export_dir, heads, cfg)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(export_dir, port, cfg, tmp / "server.log")
        try:
            warm(base, heads, cfg)
            run_load(base, heads, cfg, cfg.warmup_s, cfg.seed + 1, tmp)
            before = scrape(base)
            cpu0, client0, self0 = server_cpu_s(proc.pid), children_cpu_s(), time.process_time()
            load = run_load(base, heads, cfg, cfg.duration_s, cfg.seed + 2, tmp)
            cpu_s, self_s = server_cpu_s(proc.pid) - cpu0, time.process_time() - self0
            client_s = children_cpu_s() - client0 + (self_s if load["client"].startswith("httpx") else 0.0)
            after = scrape(base)
        finally:
            t_stop = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
            stop_s = time.perf_counter() - t_stop
    hits, misses = (
        delta(after, before, "omni_cache_hits_total"),
        delta(after, before, "omni_cache_misses_total"),
    )
    server_errors = sum(
        v - before.get(key, 0.0)
        for key, v in after.items()
        if key[0] == "omni_requests_total" and not dict(key[1])["status"].startswith("2")
    )
    rps = load["requests"] / load["duration_s"]

    print(
        f"\n/{cfg.endpoint} over HTTP: {cfg.workers} workers, {cfg.connections} connections, "
        f"{cfg.duration_s:g} s, load from {load['client']} on the same cores"
    )
    print(
        f"  requests/s {rps:,.0f}   p50 {load['p50_ms']:.2f} ms   p99 {load['p99_ms']:.2f} ms   "
        f"p99.9 {load['p999_ms']:.2f} ms   max {load['max_ms']:.1f} ms"
    )
    print(
        f"  cache hit rate {hits / max(hits + misses, 1):.1%} ({hits:,.0f} hits, {misses:,.0f} misses)   "
        f"errors: client {load['errors']}, server non-2xx {server_errors:.0f}"
    )
    served = load["requests"]
    print(
        f"  CPU per request: server {cpu_s / served * 1e6:.0f} µs (all workers), load generator "
        f"{client_s / served * 1e6:.0f} µs → the server alone on {os.cpu_count()} dedicated cores "
        f"≈ {os.cpu_count() * served / cpu_s:,.0f} req/s"
    )
    print(f"  SIGTERM → exit code {rc} after {stop_s:.1f} s")
    print("in-process baseline (1 torch thread):")
    for name, r in base_res.items():
        print(f"  {name:42s} {r['qps']:>9,.0f} queries/s   p50 {r['p50']:.3f} ms   p99 {r['p99']:.3f} ms")
    ok = rps >= cfg.target_rps and load["p99_ms"] < cfg.target_p99_ms and load["errors"] == 0 == server_errors
    print(
        f"target (>= {cfg.target_rps:,.0f} req/s, p99 < {cfg.target_p99_ms:g} ms, 0 errors): "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
