"""The query-embedding service: endpoints, error shapes, cache behaviour and metrics.

Everything runs in-process through FastAPI's TestClient on a fake encoder (a
deterministic hash → random unit vector, which counts its calls) and random entity
embeddings, so no export and no socket is needed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from omnisearchsage.features.text import normalize
from omnisearchsage.search.ann import recall_at_k
from omnisearchsage.search.index import ExactIndex, SearchResult
from omnisearchsage.serving.app import build_app
from omnisearchsage.serving.cache import CachedEncoder, QueryCache
from omnisearchsage.serving.config import ServeConfig

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class FakeEncoder:
    """Deterministic per (version, text) vectors; records every batch it is asked to encode."""

    def __init__(self, version: str = "v1") -> None:
        self.version, self.dim = version, DIM
        self.calls: list[list[str]] = []

    def vector(self, text: str) -> np.ndarray:
        return _unit(np.random.default_rng(zlib.crc32(f"{self.version}\0{text}".encode())), 1)[0]

    normalize = staticmethod(normalize)

    def encode_normalized(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


PINS = ([f"pin{i}" for i in range(60)], _unit(np.random.default_rng(1), 60))
PRODUCTS = ([f"prod{i}" for i in range(40)], _unit(np.random.default_rng(2), 40))
CFG = ServeConfig(max_batch_queries=4, max_body_bytes=64 * 1024)


def _client(
    encoder: FakeEncoder | None = None, cfg: ServeConfig = CFG, clock: FakeClock | None = None
) -> TestClient:
    app = build_app(
        encoder or FakeEncoder(), {"pin": PINS, "product": PRODUCTS}, cfg, clock=clock or FakeClock()
    )
    return TestClient(app, raise_server_exceptions=False)


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(resp.text)
        for s in fam.samples
    }


# ------------------------------------------------------------------ endpoints
def test_embed_normalises_text_and_keeps_request_order() -> None:
    enc = FakeEncoder()
    body = _client(enc).post("/embed", json={"queries": ["Red  Shoes", "blue hat", "ＲＥＤ shoes"]}).json()
    emb = np.asarray(body["embeddings"], dtype=np.float32)
    assert body["model_version"] == "v1" and body["dim"] == DIM and emb.shape == (3, DIM)
    # Full-width and case variants normalise to the same text, hence the same cached vector.
    np.testing.assert_allclose(emb[0], enc.vector("red shoes"), rtol=1e-6)
    np.testing.assert_array_equal(emb[0], emb[2])
    np.testing.assert_allclose(emb[1], enc.vector("blue hat"), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_batch_encodes_each_distinct_miss_once_and_then_serves_from_cache() -> None:
    enc = FakeEncoder()
    client = _client(enc)
    client.post("/embed", json={"queries": ["lamp", "Lamp ", "rug", "LAMP"]})
    assert enc.calls == [["lamp", "rug"]]
    client.post("/embed", json={"queries": ["rug", "lamp"]})
    assert enc.calls == [["lamp", "rug"]]  # both hits: no second encoder call
    m = _metrics(client)
    assert m[("omni_cache_hits_total", ())] == 2
    assert m[("omni_cache_misses_total", ())] == 4
    assert m[("omni_encoded_queries_total", ())] == 2
    assert m[("omni_cache_entries", ())] == 2


def test_search_matches_exact_top_k_over_both_entity_types() -> None:
    enc = FakeEncoder()
    hits = _client(enc).post("/search", json={"query": "Garden Chair", "k": 7}).json()["hits"]
    q = enc.vector("garden chair")
    ids = PINS[0] + PRODUCTS[0]
    scores = np.concatenate([PINS[1], PRODUCTS[1]]) @ q
    top = np.argsort(-scores)[:7]
    assert [h["id"] for h in hits] == [ids[i] for i in top]
    assert [h["entity_type"] for h in hits] == ["pin" if i < 60 else "product" for i in top]
    np.testing.assert_allclose([h["score"] for h in hits], scores[top], rtol=1e-5)


def test_search_filters_entity_types_and_caps_k_at_catalogue_size() -> None:
    client = _client()
    products = client.post("/search", json={"query": "sofa", "k": 1000, "entity_types": ["product"]}).json()[
        "hits"
    ]
    assert len(products) == 40 and {h["entity_type"] for h in products} == {"product"}
    default_k = client.post("/search", json={"query": "sofa"}).json()["hits"]
    assert len(default_k) == CFG.default_k


def test_healthz_reports_model_and_index() -> None:
    body = _client().get("/healthz").json()
    assert body == {
        "status": "ok",
        "model_version": "v1",
        "dim": DIM,
        "index": {"backend": "exact", "entities": {"pin": 60, "product": 40}, "recall_at_k": {}},
    }


def test_metrics_count_requests_by_endpoint_and_status_with_latency_histogram() -> None:
    client = _client()
    client.post("/embed", json={"queries": ["a"]})
    client.post("/embed", json={"queries": [""]})
    client.get("/no/such/path")
    m = _metrics(client)
    assert m[("omni_requests_total", (("endpoint", "/embed"), ("status", "200")))] == 1
    assert m[("omni_requests_total", (("endpoint", "/embed"), ("status", "422")))] == 1
    assert m[("omni_requests_total", (("endpoint", "other"), ("status", "404")))] == 1
    assert m[("omni_request_duration_seconds_count", (("endpoint", "/embed"),))] == 2
    assert m[("omni_request_duration_seconds_bucket", (("endpoint", "/embed"), ("le", "+Inf")))] == 2
    assert m[("omni_model_info", (("dim", str(DIM)), ("version", "v1")))] == 1
    assert m[("omni_index_entities", (("backend", "exact"), ("entity_type", "pin")))] == 60
    assert not any(name == "omni_index_recall_at_k" for name, _ in m)  # exact search: nothing to measure


# ------------------------------------------------------------------ bad input
LONG = "é" * 513  # 513 characters but 1026 UTF-8 bytes: the limit is on bytes


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/embed", {"json": {"queries": [""]}}, 422, "empty_query"),
        ("/embed", {"json": {"queries": ["ok", " \t\u3000 "]}}, 422, "empty_query"),
        ("/embed", {"json": {"queries": [LONG]}}, 422, "query_too_long"),
        ("/embed", {"json": {"queries": [1]}}, 422, "invalid_request"),
        ("/embed", {"json": {"queries": [None]}}, 422, "invalid_request"),
        ("/embed", {"json": {"queries": "lamp"}}, 422, "invalid_request"),
        ("/embed", {"json": {}}, 422, "invalid_request"),
        ("/embed", {"json": {"queries": ["a"], "extra": 1}}, 422, "invalid_request"),
        ("/embed", {"json": ["a"]}, 422, "invalid_request"),
        ("/embed", {"json": {"queries": []}}, 422, "empty_batch"),
        ("/embed", {"json": {"queries": ["a", "b", "c", "d", "e"]}}, 422, "too_many_queries"),
        (
            "/embed",
            {"content": b'{"queries": ["a"', "headers": {"content-type": "application/json"}},
            400,
            "invalid_json",
        ),
        (
            "/embed",
            {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}},
            400,
            "bad_request",
        ),
        (
            "/embed",
            {"content": b'{"queries": ["\\ud800"]}', "headers": {"content-type": "application/json"}},
            422,
            "invalid_query",
        ),
        (
            "/embed",
            {"content": b"x" * (64 * 1024 + 1), "headers": {"content-type": "application/json"}},
            413,
            "body_too_large",
        ),
        (
            "/embed",
            {
                "content": b'{"queries": ["a"]}',
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
            "unsupported_media_type",
        ),
        ("/embed", {"content": b'{"queries": ["a"]}'}, 415, "unsupported_media_type"),
        ("/search", {"json": {"query": "a", "k": 0}}, 422, "k_out_of_range"),
        ("/search", {"json": {"query": "a", "k": 1001}}, 422, "k_out_of_range"),
        ("/search", {"json": {"query": "a", "k": "10"}}, 422, "invalid_request"),
        ("/search", {"json": {"query": "a", "k": True}}, 422, "invalid_request"),
        ("/search", {"json": {"query": "a", "k": 2.5}}, 422, "invalid_request"),
        ("/search", {"json": {"query": "a", "entity_types": ["board"]}}, 422, "unknown_entity_type"),
        ("/search", {"json": {"query": "a", "entity_types": []}}, 422, "unknown_entity_type"),
        ("/search", {"json": {"query": "   "}}, 422, "empty_query"),
        ("/search", {"json": {"query": ["a"]}}, 422, "invalid_request"),
        ("/search", {"json": {"query": LONG}}, 422, "query_too_long"),
    ],
)
def test_bad_input_gets_4xx_with_one_json_shape_and_never_reaches_the_encoder(
    path: str, kwargs: dict, status: int, code: str
) -> None:
    enc = FakeEncoder()
    resp = _client(enc).post(path, **kwargs)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and isinstance(err["details"], list)
    assert enc.calls == []


def test_unknown_route_and_wrong_method_use_the_same_error_shape() -> None:
    client = _client()
    assert client.get("/embed").json()["error"]["code"] == "method_not_allowed"
    assert client.get("/nope").json()["error"]["code"] == "not_found"


def test_a_query_of_exactly_the_byte_limit_is_accepted() -> None:
    resp = _client().post("/embed", json={"queries": ["é" * 512]})  # 1024 bytes
    assert resp.status_code == 200


# ------------------------------------------------------------------ cache
def test_cache_entry_expires_after_ttl_on_the_injected_clock() -> None:
    clock = FakeClock()
    enc = FakeEncoder()
    client = _client(enc, ServeConfig(cache_ttl_s=100.0), clock)
    client.post("/embed", json={"queries": ["vase"]})
    clock.now = 99.0
    client.post("/embed", json={"queries": ["vase"]})
    assert len(enc.calls) == 1
    clock.now = 100.5
    client.post("/embed", json={"queries": ["vase"]})
    assert enc.calls == [["vase"], ["vase"]]


def test_cache_evicts_least_recently_used_when_full() -> None:
    cache = QueryCache(max_entries=2, ttl_s=1e9, clock=FakeClock())
    v = np.zeros(DIM, dtype=np.float32)
    cache.put_many("v1", ["a", "b"], [v, v])
    assert cache.get_many("v1", ["a"])[0] is not None  # touch "a": "b" is now the oldest
    cache.put_many("v1", ["c"], [v])
    assert [x is not None for x in cache.get_many("v1", ["a", "b", "c"])] == [True, False, True]


def test_a_new_model_version_never_gets_the_old_versions_vectors() -> None:
    cache = QueryCache(max_entries=100, ttl_s=1e9)
    old, new = FakeEncoder("v1"), FakeEncoder("v2")
    first = CachedEncoder(old, cache).embed(["desk lamp"])[0]
    second = CachedEncoder(new, cache).embed(["desk lamp"])[0]
    assert new.calls == [["desk lamp"]]
    np.testing.assert_allclose(second, new.vector("desk lamp"), rtol=1e-6)
    assert not np.allclose(first, second)
    assert len(cache) == 2


def test_cached_encoder_normalises_like_the_features_stage() -> None:
    enc = FakeEncoder()
    CachedEncoder(enc, QueryCache(10, 1e9)).embed(["  Ｃafé\tAu LAIT "])
    assert enc.calls == [[normalize("  Ｃafé\tAu LAIT ")]] == [["café au lait"]]


# ------------------------------------------------------------------ approximate index
class _HalfRight:
    """An 'index' that returns the exact top-k's first half, then wrong entities."""

    def __init__(self, exact: ExactIndex, k: int) -> None:
        self.exact, self.k = exact, k

    def __len__(self) -> int:
        return len(self.exact)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        right = self.exact.search(queries, k)
        wrong = self.exact.search(-queries, k)  # the farthest entities
        idx = np.concatenate([right.indices[:, : k // 2], wrong.indices[:, : k - k // 2]], axis=1)
        return SearchResult(np.zeros_like(right.scores), idx)


def test_recall_at_k_counts_the_overlap_with_exact_search() -> None:
    exact = ExactIndex(PINS[1])
    assert recall_at_k(_HalfRight(exact, 10), exact, _unit(np.random.default_rng(3), 20), 10) == 0.5


@pytest.mark.parametrize("backend", ["faiss", "usearch"])
def test_approximate_backend_publishes_recall_and_answers_search(backend: str) -> None:
    client = _client(cfg=ServeConfig(index_backend=backend, recall_probe_queries=30))
    health = client.get("/healthz").json()["index"]
    assert health["backend"] == backend
    m = _metrics(client)
    for etype in ("pin", "product"):
        recall = m[("omni_index_recall_at_k", (("backend", backend), ("entity_type", etype), ("k", "10")))]
        assert recall == health["recall_at_k"][etype] and 0.9 <= recall <= 1.0
    hits = client.post("/search", json={"query": "mirror", "k": 5, "entity_types": ["pin"]}).json()["hits"]
    assert len(hits) == 5 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
