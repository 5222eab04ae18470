"""Every knob of the query-embedding service (``omni serve``), in one dataclass.

The defaults run a single worker on loopback with the paper's 30-day cache TTL.
Limits on input (query bytes, batch size, ``k``) are part of the service's
contract: a request over any of them gets a 4xx JSON error, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Index backends ``omni serve --index`` accepts. ``auto`` takes the first approximate
#: library that is installed (faiss, then usearch) and falls back to exact search.
INDEX_BACKENDS = ("exact", "faiss", "usearch", "auto")

_DAY_S = 24 * 3600


@dataclass(frozen=True)
class ServeConfig:
    """Service settings; ``omni serve`` options override the matching fields."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: uvicorn worker processes. The app is stateless apart from its cache, so workers
    #: (and replicas behind a load balancer) scale out; each keeps its own cache.
    workers: int = 1
    #: Seconds a cached query embedding stays valid [paper: 30 days].
    cache_ttl_s: float = 30 * _DAY_S
    #: Most cached queries per worker; least recently used go first. An entry costs its vector
    #: (4 bytes a dimension) plus Python and allocator overhead: README "Cache" has the measured
    #: bytes per entry (``bench/cache_memory.py``).
    cache_max_entries: int = 100_000
    #: Longest query accepted, in UTF-8 bytes (before normalisation).
    max_query_bytes: int = 1024
    #: Most queries in one POST /embed.
    max_batch_queries: int = 256
    #: Largest request body accepted (413 above it), whatever the transfer encoding: counted as
    #: it arrives, never read past. JSON escapes can make a 1 KiB query 6 KiB on the wire, so this
    #: is generous.
    max_body_bytes: int = 2 * 1024 * 1024
    #: Seconds a request body may take to arrive in full (408 after); see ``limits.py``.
    body_timeout_s: float = 10.0
    #: Largest request line + headers, bytes (400 above it).
    max_header_bytes: int = 16 * 1024
    #: Seconds a connection may take to send a request's line and headers (closed after).
    header_timeout_s: float = 10.0
    #: Seconds an idle keep-alive connection stays open.
    keep_alive_s: float = 5.0
    #: ``k`` of POST /search when the request does not give one, and the most allowed.
    default_k: int = 10
    max_k: int = 1000
    #: Entity types the search index holds (those the export has); ``query`` may be added.
    index_entity_types: tuple[str, ...] = ("pin", "product")
    #: One of :data:`INDEX_BACKENDS`.
    index_backend: str = "exact"
    #: Query rows per matrix product in exact search (memory = rows × entities scores).
    exact_chunk_size: int = 1024
    #: HNSW graph degree, build-time and search-time beam widths (faiss and usearch).
    #: A search's beam is widened to ``k`` when ``k`` is larger, so it can return k hits.
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    #: Probe queries used at start-up to measure an approximate index's recall@k against
    #: exact search (query embeddings from the export when it has them, else entity vectors).
    recall_probe_queries: int = 500
    recall_k: int = 10
    #: Seed for sampling the recall probes, so start-up figures are reproducible.
    seed: int = 0
    #: Seconds uvicorn waits for in-flight requests after SIGTERM before closing them.
    graceful_shutdown_s: float = 30.0
    #: Requests with at most this many cache misses encode them on the event loop; more go
    #: to the thread pool so the loop keeps answering hits meanwhile. Handing work to a
    #: thread costs a GIL hand-off (up to Python's 5 ms switch interval under load), far
    #: more than encoding a few queries, so small misses stay inline.
    inline_encode_max: int = 4
    #: Searches over at most this many entities (summed over the requested types) run on
    #: the event loop (about 1 ms of matrix product at 256-d); larger ones in the pool.
    inline_search_max_entities: int = 20_000
    #: Seconds a worker may take to answer uvicorn's health ping. A worker's start-up imports
    #: torch and loads the export, which on a busy machine outlasts uvicorn's 5 s default, and
    #: uvicorn would then kill and restart the worker forever.
    worker_healthcheck_s: int = 120
    #: torch intra-op threads per worker: the service scales by processes, and one
    #: thread each keeps workers from fighting over cores.
    torch_threads: int = 1
    #: Request-latency histogram buckets, seconds (fine below 20 ms, where the target is).
    latency_buckets_s: tuple[float, ...] = (
        0.0005,
        0.001,
        0.002,
        0.003,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
    )

    def __post_init__(self) -> None:
        if self.index_backend not in INDEX_BACKENDS:
            raise ValueError(f"index_backend must be one of {INDEX_BACKENDS}, got {self.index_backend!r}")
        for name in (
            "workers",
            "cache_max_entries",
            "max_query_bytes",
            "max_batch_queries",
            "max_k",
            "default_k",
            "recall_k",
            "torch_threads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_body_bytes", "max_header_bytes", "body_timeout_s", "header_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cache_ttl_s <= 0:
            raise ValueError(f"cache_ttl_s must be > 0, got {self.cache_ttl_s}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
