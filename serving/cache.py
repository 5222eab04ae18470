"""Query-embedding cache: normalised query text → embedding, with a TTL and a size cap.

The paper serves its query embedding behind a cache with a 30-day TTL: head
queries repeat, so most requests never reach the encoder. Two rules make the cache
safe to run in front of a model that gets re-exported:

* the key is ``(model_version, normalised text)``, so vectors of one model are
  never served for another, even if one process held both;
* a batch encodes each distinct missed query once, however often it repeats.

Storage is ``cachetools.TTLCache`` (maintained; per-entry expiry plus LRU eviction
when full, with an injectable timer that tests replace by a fake clock). TTLCache
is not thread-safe, and the service encodes misses in a worker thread while the
event loop serves hits, so every access goes through one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cachetools import TTLCache


class QueryEncoder(Protocol):
    """What the service needs of an encoder (``model.io.load_query_encoder`` returns one).

    The encoder owns normalisation: the cache keys by ``normalize(text)`` and encodes those keys with
    ``encode_normalized``, so a query is normalised once on its way through the service."""

    version: str
    dim: int

    def normalize(self, text: str) -> str:
        """The text as the encoder tokenises it (NFKC, case-fold, whitespace)."""
        ...

    def encode_normalized(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim], rows L2-normalised, for texts already normalised."""
        ...


class QueryCache:
    """Thread-safe TTL + LRU map from ``(model_version, normalised text)`` to a vector."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        # Vectors are kept as bytes: one allocation per entry instead of a numpy array's two, which
        # saves the array header and the allocator's per-block overhead (README: cache memory).
        self._data: TTLCache[tuple[str, str], bytes] = TTLCache(
            maxsize=max_entries, ttl=ttl_s, timer=clock
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)

    def get_many(self, version: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text (``None`` where absent or expired); hits become most recent."""
        with self._lock:
            found = [self._data.get((version, t)) for t in texts]
        return [None if v is None else np.frombuffer(v, dtype=np.float32) for v in found]

    def put_many(self, version: str, texts: Sequence[str], vectors: Sequence[np.ndarray]) -> None:
        """Store one float32 vector per text; each entry's TTL starts now."""
        rows = [np.asarray(v, dtype=np.float32).tobytes() for v in vectors]
        with self._lock:
            for t, v in zip(texts, rows):
                self._data[(version, t)] = v


@dataclass(frozen=True)
class Lookup:
    """A batch after the cache: texts normalised, vectors found, distinct texts still to encode."""

    texts: list[str]
    found: dict[str, np.ndarray]
    missing: list[str]

    @property
    def hits(self) -> int:
        """Queries of the batch served from the cache (duplicates each count)."""
        return sum(t in self.found for t in self.texts)


class CachedEncoder:
    """An encoder behind a :class:`QueryCache`, split in two steps for an async server.

    :meth:`lookup` is cheap and runs on the event loop; :meth:`fill` runs the
    encoder (slow, releases the GIL inside torch) and belongs in a worker thread.
    :meth:`embed` does both for synchronous callers.
    """

    def __init__(self, encoder: QueryEncoder, cache: QueryCache) -> None:
        self.encoder = encoder
        self.cache = cache

    @property
    def version(self) -> str:
        return self.encoder.version

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def lookup(self, queries: Sequence[str]) -> Lookup:
        """Normalise ``queries`` and look each up; ``missing`` lists each absent text once."""
        texts = [self.encoder.normalize(q) for q in queries]
        distinct = list(dict.fromkeys(texts))
        cached = self.cache.get_many(self.version, distinct)
        found = {t: v for t, v in zip(distinct, cached) if v is not None}
        return Lookup(texts, found, [t for t, v in zip(distinct, cached) if v is None])

    def fill(self, lookup: Lookup) -> np.ndarray:
        """Encode ``lookup.missing`` in one call, cache them, and return all vectors in query order."""
        found = dict(lookup.found)
        if lookup.missing:
            encoded = np.asarray(self.encoder.encode_normalized(lookup.missing), dtype=np.float32)
            self.cache.put_many(self.version, lookup.missing, encoded)  # copied: the batch is not kept alive
            found.update(zip(lookup.missing, encoded))
        if not lookup.texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in lookup.texts])

    def embed(self, queries: Sequence[str]) -> np.ndarray:
        """float32 [len(queries), dim]: cached where possible, each distinct miss encoded once."""
        return self.fill(self.lookup(queries))
