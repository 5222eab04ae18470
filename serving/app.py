"""The query-embedding service behind ``omni serve``: FastAPI on uvicorn.

A request's path is the paper's: query text → normalised → cache (TTL, keyed by
model version) → encoder for the misses → top-k from the entity index.

Endpoints:

* ``POST /embed``  ``{"queries": [str, ...]}`` → ``{"model_version", "dim", "embeddings"}``
* ``POST /search`` ``{"query": str, "k": int, "entity_types": ["pin", "product"]}`` →
  ``{"model_version", "hits": [{"id", "entity_type", "score"}, ...]}``, best first
* ``GET /healthz`` → model version, index backend and sizes
* ``GET /metrics`` → Prometheus text: requests by endpoint and status, a latency
  histogram, cache hits/misses/size, model version, index size and (approximate
  index only) its recall@k against exact search measured at start-up

Bad input gets a 4xx with one JSON shape, never a 500::

    {"error": {"code": "query_too_long", "message": "...", "details": [...]}}

The app holds no state but its cache and read-only model, so workers and replicas
scale out behind a load balancer. uvicorn drains in-flight requests on SIGTERM
(``graceful_shutdown_s``).

Cache hits are answered on the event loop. Encoding many misses, or searching a
large index, runs in the thread pool so a slow request does not stall the hits
queued behind it; small ones stay on the loop, where they cost less than the
hand-off to a thread (``inline_encode_max``, ``inline_search_max_entities``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import has_words
from omnisearchsage.serving.cache import CachedEncoder, QueryCache, QueryEncoder
from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.entity_index import EntityIndex
from omnisearchsage.serving.errors import ApiError, json_response, register_error_handlers
from omnisearchsage.serving.limits import BodyLimit
from omnisearchsage.serving.metrics import Instrument, ServiceMetrics
from omnisearchsage.serving.schemas import EmbedRequest, SearchRequest, check_query


def build_app(
    encoder: QueryEncoder,
    entities: Mapping[str, tuple[Sequence[str], np.ndarray]],
    cfg: ServeConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    probes: np.ndarray | None = None,
) -> FastAPI:
    """The service over an encoder and entity embeddings already in memory.

    ``entities`` maps an entity type to ``(ids, embeddings float32 [n, dim])``;
    ``clock`` drives cache expiry (tests pass a fake one); ``probes`` are query
    vectors for measuring an approximate index's recall (entity vectors if None).
    """
    cfg = cfg or ServeConfig()
    for etype, (ids, emb) in entities.items():
        if emb.ndim != 2 or emb.shape[1] != encoder.dim or len(ids) != len(emb):
            raise OmniError(
                f"{etype} embeddings have shape {emb.shape} for {len(ids)} ids; "
                f"the query encoder has dim {encoder.dim}"
            )
    cached = CachedEncoder(encoder, QueryCache(cfg.cache_max_entries, cfg.cache_ttl_s, clock=clock))
    index = EntityIndex(entities, cfg, probes)
    metrics = ServiceMetrics(cfg)
    metrics.model.labels(encoder.version, str(encoder.dim)).set(1)
    for etype, n in index.sizes().items():
        metrics.index_entities.labels(etype, index.backend).set(n)
    for etype, r in index.recall.items():
        metrics.index_recall.labels(etype, index.backend, str(cfg.recall_k)).set(r)

    app = FastAPI(
        title="omni serve",
        summary="OmniSearchSage query embeddings and entity search.",
        version=encoder.version,
    )
    register_error_handlers(app)
    app.add_middleware(BodyLimit, max_body_bytes=cfg.max_body_bytes, body_timeout_s=cfg.body_timeout_s)
    app.add_middleware(Instrument, metrics=metrics)  # outermost: refused bodies are counted too
    app.state.cached_encoder, app.state.index, app.state.metrics = cached, index, metrics

    async def vectors(queries: Sequence[str], fields: Sequence[str]) -> np.ndarray:
        lookup = cached.lookup(queries)  # normalises each query, once
        empty = next((f for f, t in zip(fields, lookup.texts) if not has_words(t, normalized=True)), None)
        if empty is not None:
            raise ApiError(422, "empty_query", f"{empty} has no word (empty, or only whitespace, punctuation, "
                                               "NUL or zero-width characters)")
        hits = lookup.hits
        metrics.cache_hits.inc(hits)
        if not lookup.missing:
            return cached.fill(lookup)
        metrics.cache_misses.inc(len(lookup.texts) - hits)
        metrics.encoded.inc(len(lookup.missing))
        if len(lookup.missing) <= cfg.inline_encode_max:
            emb = cached.fill(lookup)
        else:
            emb = await run_in_threadpool(cached.fill, lookup)
        metrics.cache_entries.set(len(cached.cache))
        return emb

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> Response:
        """Embed a batch of queries: one L2-normalised vector per query, in request order."""
        if not body.queries:
            raise ApiError(422, "empty_batch", "queries must hold at least one query")
        if len(body.queries) > cfg.max_batch_queries:
            raise ApiError(
                422,
                "too_many_queries",
                f"{len(body.queries)} queries in one request; the limit is {cfg.max_batch_queries}",
            )
        fields = [f"queries[{i}]" for i in range(len(body.queries))]
        for q, field in zip(body.queries, fields):
            check_query(q, field, cfg)
        emb = await vectors(body.queries, fields)
        return json_response({"model_version": encoder.version, "dim": encoder.dim, "embeddings": emb})

    @app.post("/search")
    async def search(body: SearchRequest) -> Response:
        """Top-k entities (pins and/or products) for one query, best first, with inner-product scores."""
        check_query(body.query, "query", cfg)
        k = cfg.default_k if body.k is None else body.k
        if not 1 <= k <= cfg.max_k:
            raise ApiError(422, "k_out_of_range", f"k must be between 1 and {cfg.max_k}, got {k}")
        types = index.entity_types if body.entity_types is None else tuple(dict.fromkeys(body.entity_types))
        unknown = [t for t in types if t not in index.entity_types]
        if unknown or not types:
            raise ApiError(
                422,
                "unknown_entity_type",
                f"entity_types {list(unknown or types)} not served; choose from {list(index.entity_types)}",
            )
        vec = (await vectors([body.query], ["query"]))[0]
        if sum(index.sizes()[t] for t in types) <= cfg.inline_search_max_entities:
            hits = index.search(vec, k, types)
        else:
            hits = await run_in_threadpool(index.search, vec, k, types)
        return json_response({"model_version": encoder.version, "hits": [h._asdict() for h in hits]})

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness and what is loaded: model version, dim, index backend and size per entity type."""
        return json_response(
            {
                "status": "ok",
                "model_version": encoder.version,
                "dim": encoder.dim,
                "index": {"backend": index.backend, "entities": index.sizes(), "recall_at_k": index.recall},
            }
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text exposition (all workers' metrics when there are several)."""
        metrics.cache_entries.set(len(cached.cache))  # drops expired entries from the count
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
