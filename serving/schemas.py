"""Request bodies of the service and the checks a query passes before it reaches the encoder."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from omnisearchsage.serving.config import ServeConfig
from omnisearchsage.serving.errors import ApiError


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


def check_query(q: str, field: str, cfg: ServeConfig) -> None:
    """Refuse what the encoder should never see: oversize or not UTF-8-encodable. (Empty queries are
    refused after normalisation, which the cache does once: see ``app.py``.)"""
    try:
        size = len(q.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") survives JSON parsing but is not text
        raise ApiError(422, "invalid_query", f"{field} is not valid Unicode text") from None
    if size > cfg.max_query_bytes:
        raise ApiError(
            422, "query_too_long", f"{field} is {size} bytes in UTF-8; the limit is {cfg.max_query_bytes}"
        )
