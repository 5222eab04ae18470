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

import atexit
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnisearchsage.contract import Workspace
from omnisearchsage.errors import OmniError
from omnisearchsage.features.text import has_words
from omnisearchsage.retrieval.ann import VectorIndex, build_index, recall_at_k, resolve_backend
from omnisearchsage.retrieval.cache import CachedEncoder, QueryCache, QueryEncoder
from omnisearchsage.retrieval.index import ExactIndex
from omnisearchsage.retrieval.limits import BodyLimit, uvicorn_limits
from omnisearchsage.retrieval.serve_config import ServeConfig
from omnisearchsage.trainer.export import EMBEDDING_FILES, MANIFEST, load_embeddings, load_query_encoder

log = logging.getLogger(__name__)

#: Environment through which ``run_server`` hands the export and config to uvicorn's
#: worker processes (they import :func:`app_from_env`, so nothing is pickled).
ENV_EXPORT = "OMNI_SERVE_EXPORT"
ENV_CONFIG = "OMNI_SERVE_CONFIG"
#: prometheus_client's switch into multiprocess mode; ``run_server`` sets it for several workers.
ENV_PROMETHEUS_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Export layout beside ``trainer.export``'s MANIFEST and EMBEDDING_FILES (under embeddings/).
QUERY_ENCODER_DIR = "query_encoder"
EMBEDDINGS_DIR = "embeddings"
_MANIFEST_KEYS = ("model_version", "dim", "entity_types")

#: Paths with their own metric label; anything else is counted as "other" so that
#: scanners probing random URLs cannot blow up label cardinality.
ENDPOINTS = ("/embed", "/search", "/healthz", "/metrics")


# ------------------------------------------------------------------ errors
class ApiError(Exception):
    """A request the service refuses: becomes ``{"error": {...}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def _json(payload: Any, status: int = 200) -> Response:
    # orjson writes float32 numpy arrays directly, several times faster than json + tolist().
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    """The one error shape every 4xx/5xx of the service has."""
    return _json({"error": {"code": code, "message": message, "details": details or []}}, status)


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


async def _on_api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    # Replaces FastAPI's default 422 body. "input" is left out: it can be a 1 MiB string.
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    details = [
        {"loc": _loc(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "request body is not valid JSON", details)
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        # FastAPI only parses a body declared as JSON (`curl -d` declares a form by default).
        return error_response(
            415,
            "unsupported_media_type",
            f"send the body as JSON with Content-Type: application/json, not {content_type!r}",
        )
    first = details[0] if details else {"loc": "body", "message": "invalid request"}
    return error_response(422, "invalid_request", f"{first['loc']}: {first['message']}", details)


async def _on_http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


# ------------------------------------------------------------------ request bodies
class EmbedRequest(BaseModel):
    """POST /embed body. Strict: a number where a string belongs is an error, not coerced."""

    model_config = ConfigDict(strict=True, extra="forbid")
    queries: list[str]


class SearchRequest(BaseModel):
    """POST /search body; ``k`` and ``entity_types`` default to the config's ``default_k`` and all types."""

    model_config = ConfigDict(strict=True, extra="forbid")
    query: str
    k: int | None = None
    entity_types: list[str] | None = None


def _check_query(q: str, field: str, cfg: ServeConfig) -> None:
    """Refuse what the encoder should never see: oversize, not UTF-8-encodable, or without a word to encode."""
    try:
        size = len(q.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") survives JSON parsing but is not text
        raise ApiError(422, "invalid_query", f"{field} is not valid Unicode text") from None
    if size > cfg.max_query_bytes:
        raise ApiError(
            422, "query_too_long", f"{field} is {size} bytes in UTF-8; the limit is {cfg.max_query_bytes}"
        )
    if not has_words(q):
        raise ApiError(422, "empty_query", f"{field} has no word (empty, or only whitespace, punctuation, "
                                           "NUL or zero-width characters)")


# ------------------------------------------------------------------ metrics
def _multiprocess_metrics() -> bool:
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
        self.multiprocess = _multiprocess_metrics()
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


class _Instrument:
    """Pure ASGI middleware: counts and times every request (body limits: ``retrieval/limits.py``).

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


# ------------------------------------------------------------------ entity index
class Hit(NamedTuple):
    """One search result: entity id, its type and its inner-product score with the query."""

    id: str
    entity_type: str
    score: float


class EntityIndex:
    """One index per entity type; a search over several types merges their top-k by score."""

    def __init__(
        self,
        entities: Mapping[str, tuple[Sequence[str], np.ndarray]],
        cfg: ServeConfig,
        probes: np.ndarray | None = None,
    ) -> None:
        if not entities:
            raise OmniError(
                f"nothing to serve: the export has none of the entity types {list(cfg.index_entity_types)}"
            )
        self.backend = resolve_backend(cfg.index_backend)
        self.ids: dict[str, np.ndarray] = {}
        self.indexes: dict[str, VectorIndex] = {}
        #: recall@k of the approximate index against exact search, per type (empty for exact).
        self.recall: dict[str, float] = {}
        rng = np.random.default_rng(cfg.seed)
        for etype, (ids, emb) in entities.items():
            # Parquet-backed arrays are read-only, and torch warns on wrapping those: copy once here.
            emb = np.require(emb, dtype=np.float32, requirements=["C", "W"])
            self.ids[etype] = np.asarray(ids, dtype=object)
            self.indexes[etype] = build_index(emb, self.backend, cfg)
            if self.backend != "exact" and len(emb):
                sample = probes if probes is not None else emb
                pick = rng.choice(len(sample), size=min(cfg.recall_probe_queries, len(sample)), replace=False)
                exact = ExactIndex(emb, chunk_size=cfg.exact_chunk_size)
                self.recall[etype] = recall_at_k(self.indexes[etype], exact, sample[pick], cfg.recall_k)
                log.info(
                    "%s index over %d %ss: recall@%d vs exact = %.4f",
                    self.backend,
                    len(emb),
                    etype,
                    cfg.recall_k,
                    self.recall[etype],
                )

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(self.ids)

    def sizes(self) -> dict[str, int]:
        return {t: len(ix) for t, ix in self.indexes.items()}

    def search(self, vector: np.ndarray, k: int, entity_types: Sequence[str]) -> list[Hit]:
        """Top-``k`` over ``entity_types`` for one query vector, best first."""
        ids, types, scores = [], [], []
        for etype in entity_types:
            res = self.indexes[etype].search(vector[None, :], k)
            keep = res.indices[0] >= 0
            ids.append(self.ids[etype][res.indices[0][keep]])
            types.append(np.full(int(keep.sum()), etype, dtype=object))
            scores.append(res.scores[0][keep])
        all_scores = np.concatenate(scores)
        order = np.argsort(-all_scores, kind="stable")[:k]
        return [
            Hit(i, t, s)
            for i, t, s in zip(
                np.concatenate(ids)[order], np.concatenate(types)[order], all_scores[order].tolist()
            )
        ]


# ------------------------------------------------------------------ the app
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
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(BodyLimit, max_body_bytes=cfg.max_body_bytes, body_timeout_s=cfg.body_timeout_s)
    app.add_middleware(_Instrument, metrics=metrics)  # outermost: refused bodies are counted too
    app.state.cached_encoder, app.state.index, app.state.metrics = cached, index, metrics

    async def vectors(queries: Sequence[str]) -> np.ndarray:
        lookup = cached.lookup(queries)
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
        for i, q in enumerate(body.queries):
            _check_query(q, f"queries[{i}]", cfg)
        emb = await vectors(body.queries)
        return _json({"model_version": encoder.version, "dim": encoder.dim, "embeddings": emb})

    @app.post("/search")
    async def search(body: SearchRequest) -> Response:
        """Top-k entities (pins and/or products) for one query, best first, with inner-product scores."""
        _check_query(body.query, "query", cfg)
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
        vec = (await vectors([body.query]))[0]
        if sum(index.sizes()[t] for t in types) <= cfg.inline_search_max_entities:
            hits = index.search(vec, k, types)
        else:
            hits = await run_in_threadpool(index.search, vec, k, types)
        return _json({"model_version": encoder.version, "hits": [h._asdict() for h in hits]})

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness and what is loaded: model version, dim, index backend and size per entity type."""
        return _json(
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


# ------------------------------------------------------------------ from an export
def check_export(export_dir: Path) -> dict[str, Any]:
    """Read and check an export's manifest and files; raise one-line OmniError if anything is missing."""
    manifest_path = export_dir / MANIFEST
    if not export_dir.is_dir():
        raise OmniError(f"no export at {export_dir}: run `omni train` then `omni export` first")
    if not manifest_path.is_file():
        raise OmniError(f"{manifest_path} is missing: the export is incomplete, rerun `omni export`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OmniError(f"{manifest_path} is not readable JSON: {e}") from None
    absent = [k for k in _MANIFEST_KEYS if k not in manifest]
    if absent:
        raise OmniError(f"{manifest_path} lacks {absent}: the export is incomplete, rerun `omni export`")
    needed = [export_dir / QUERY_ENCODER_DIR] + [
        export_dir / EMBEDDINGS_DIR / EMBEDDING_FILES[t]
        for t in manifest["entity_types"]
        if t in EMBEDDING_FILES
    ]
    missing = [str(p.relative_to(export_dir)) for p in needed if not p.exists()]
    if missing:
        raise OmniError(f"export {export_dir} is incomplete, missing {missing[:3]}: rerun `omni export`")
    return manifest


def resolve_export(target: str, ws: Workspace) -> Path:
    """``target`` as an export folder, else as a run name: ``WS/runs/NAME/export``.

    A folder holding a manifest wins; a run of that name wins over any other folder
    (a run called ``bench`` beside a ``bench/`` directory); a plain folder is last, so
    that :func:`check_export` can say what it lacks.
    """
    path, named = Path(target), ws.export_dir(target)
    if (path / MANIFEST).is_file():
        return path
    if named.exists():
        return named
    if path.exists():
        return path
    raise OmniError(
        f"no export at {path} nor at {named} (run {target!r} in workspace {ws.root}): "
        "run `omni train` then `omni export` first"
    )


def create_app(export_dir: Path, cfg: ServeConfig | None = None) -> FastAPI:
    """The service over an export folder (``runs/NAME/export``) written by ``omni export``."""
    cfg = cfg or ServeConfig()
    manifest = check_export(export_dir)
    encoder = load_query_encoder(export_dir)  # its version is the manifest's model_version
    entities = {
        t: load_embeddings(export_dir, t) for t in cfg.index_entity_types if t in manifest["entity_types"]
    }
    probes = None
    if resolve_backend(cfg.index_backend) != "exact" and "query" in manifest["entity_types"]:
        probes = load_embeddings(export_dir, "query")[1]
    log.info(
        "serving %s (dim %d) over %s",
        encoder.version,
        encoder.dim,
        {t: len(ids) for t, (ids, _) in entities.items()},
    )
    return build_app(encoder, entities, cfg, probes=probes)


def configure_threads(cfg: ServeConfig) -> None:
    """Pin torch (and faiss, when it is the index) to ``cfg.torch_threads`` threads in this worker process."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    if resolve_backend(cfg.index_backend) == "faiss":
        import faiss

        faiss.omp_set_num_threads(cfg.torch_threads)


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: export and config come from the environment."""
    cfg = ServeConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(os.environ[ENV_CONFIG]).items()}
    )
    configure_threads(cfg)
    if _multiprocess_metrics():
        # This worker's live gauges (cache size) must stop counting once it exits.
        atexit.register(multiprocess.mark_process_dead, os.getpid())
    return create_app(Path(os.environ[ENV_EXPORT]), cfg)


def run_server(export_dir: Path, cfg: ServeConfig) -> None:
    """Serve ``export_dir`` with uvicorn until SIGINT/SIGTERM, which drains in-flight requests first.

    One worker loads the app here, so a bad export fails before the port opens;
    several workers each load it through :func:`app_from_env`.
    """
    import uvicorn

    check_export(export_dir)
    common: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "access_log": False,
        "timeout_graceful_shutdown": cfg.graceful_shutdown_s,
        **uvicorn_limits(cfg),
    }
    if cfg.workers == 1:
        configure_threads(cfg)
        uvicorn.run(create_app(export_dir, cfg), **common)
        return
    os.environ[ENV_EXPORT] = str(export_dir.resolve())
    os.environ[ENV_CONFIG] = json.dumps(asdict(cfg))
    # Workers are spawned, so they import prometheus_client after this is set and run in its
    # multiprocess mode. A directory the user set is theirs to wipe between runs; ours is fresh.
    own_dir = None if os.environ.get(ENV_PROMETHEUS_DIR) else tempfile.mkdtemp(prefix="omni-metrics-")
    if own_dir:
        os.environ[ENV_PROMETHEUS_DIR] = own_dir
    try:
        uvicorn.run(
            f"{__name__}:app_from_env",
            factory=True,
            workers=cfg.workers,
            timeout_worker_healthcheck=cfg.worker_healthcheck_s,
            **common,
        )
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
