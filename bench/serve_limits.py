"""What the service's client limits cost per request: h11 with limits against uvicorn's httptools.

    python bench/serve_limits.py [--requests 2000] [--rounds 5]

Starts the app twice on loopback, over a fake 8-d encoder whose answers are all cached, so the
figure is the HTTP layer's: once with :func:`~omnisearchsage.serving.limits.uvicorn_limits`
(h11 protocol, header deadline, body middleware) as ``omni serve`` runs it, and once as before
this change (httptools, no limits; the baseline). One keep-alive client sends ``POST /embed``
requests one after another, alternating between the servers round by round so a busy machine
slows both alike, and the median latency per server is printed.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import numpy as np
import uvicorn

from omnisearchsage.serving.app import build_app
from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.limits import uvicorn_limits


class _Encoder:
    version, dim = "bench", 8

    def encode(self, texts):
        return np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]


def _start(cfg: ServeConfig, limited: bool) -> tuple[uvicorn.Server, str]:
    app = build_app(_Encoder(), {"pin": (["p0"], np.eye(8, dtype=np.float32)[:1])}, cfg)
    extra = uvicorn_limits(cfg) if limited else {"http": "httptools"}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           access_log=False, **extra))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return server, f"http://{host}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = ServeConfig()
    servers = {"httptools, no limits (baseline)": _start(cfg, False), "h11 + limits (omni serve)": _start(cfg, True)}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    body = {"queries": ["red dress"]}
    for _ in range(args.rounds):
        for name, (_, url) in servers.items():
            with httpx.Client(base_url=url) as client:
                client.post("/embed", json=body)  # warm the cache and the connection
                for _ in range(args.requests):
                    start = time.perf_counter()
                    client.post("/embed", json=body).raise_for_status()
                    latencies[name].append(time.perf_counter() - start)
    for name, values in latencies.items():
        print(f"{name}: median {statistics.median(values) * 1e3:.3f} ms, "
              f"p99 {np.percentile(values, 99) * 1e3:.3f} ms over {len(values):,} requests")
    for server, _ in servers.values():
        server.should_exit = True


if __name__ == "__main__":
    main()
