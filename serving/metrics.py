"""Prometheus metrics of the service, and the ASGI middleware that counts, times and bounds requests."""
from __future__ import annotations

import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnisearchsage.serving.config import ServeConfig

#: prometheus_client's switch into multiprocess mode; ``run_server`` sets it for several workers.
ENV_PROMETHEUS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: Paths with their own metric label; anything else is counted as "other" so that
#: scanners probing random URLs cannot blow up label cardinality.
ENDPOINTS = ("/embed", "/search", "/healthz", "/metrics")


def multiprocess_metrics() -> bool:
    """True in a worker started by ``run_server(workers > 1)``: metrics then live in shared files."""
    return bool(os.environ.get(ENV_PROMETHEUS_DIR))


class ServiceMetrics:
    """Prometheus metrics of one app.

    One worker: the metrics sit in a registry of the app's own (so several apps in
    one process, as in tests, never clash). Several workers: prometheus_client's
    multiprocess mode, where every worker writes its values to files in
    ``$PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker sums them all, so
    ``/metrics`` describes the whole server whichever worker answers it.
    """

    def __init__(self, cfg: ServeConfig) -> None:
        self.multiprocess = multiprocess_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        # In multiprocess mode values are read back from files; registering them too would export twice.
        r = None if self.multiprocess else self.registry
        self.requests = Counter(
            "omni_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "omni_request_duration_seconds",
            "Request latency in the server, seconds.",
            ["endpoint"],
            buckets=cfg.latency_buckets_s,
            registry=r,
        )
        self.cache_hits = Counter("omni_cache_hits", "Queries answered from the cache.", registry=r)
        self.cache_misses = Counter("omni_cache_misses", "Queries not in the cache.", registry=r)
        self.encoded = Counter(
            "omni_encoded_queries", "Distinct queries run through the encoder.", registry=r
        )
        self.cache_entries = Gauge(
            "omni_cache_entries",
            "Queries in the cache (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        # A gauge rather than prometheus_client.Info, which multiprocess mode does not support.
        self.model = Gauge(
            "omni_model_info",
            "The served model (value 1).",
            ["version", "dim"],
            registry=r,
            multiprocess_mode="max",
        )
        self.index_entities = Gauge(
            "omni_index_entities",
            "Entities in the search index.",
            ["entity_type", "backend"],
            registry=r,
            multiprocess_mode="max",
        )
        self.index_recall = Gauge(
            "omni_index_recall_at_k",
            "Approximate index recall@k against exact search, measured at start-up.",
            ["entity_type", "backend", "k"],
            registry=r,
            multiprocess_mode="min",
        )
        # Bound children per endpoint: .labels() costs a dict lookup plus locking per call.
        self._latency = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self._latency[endpoint].observe(seconds)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class Instrument:
    """Pure ASGI middleware: counts and times every request (body limits: ``limits.py``).

    Pure ASGI rather than ``BaseHTTPMiddleware``: the latter adds a task and a
    stream per request, a measurable cost at thousands of requests per second.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - start)
